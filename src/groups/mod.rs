//! `Groups`: many Raft groups on one node, driven by one shared tick loop.
//!
//! - **Cost follows activity.** Only awake groups are ticked; an idle group (everything committed,
//!   applied and replicated) hibernates: it costs no CPU per tick, sends nothing, and keeps only its
//!   durable-state summary in memory.
//! - **One batch per peer.** Every cycle drains into one [`NodeBatch`] per destination node. The
//!   heartbeats of all groups this node leads travel as (group, term, commit) tuples in it, on shared
//!   interval boundaries, and so do their answers.
//! - **Node-level liveness.** At every heartbeat interval each peer gets a batch, even an empty one. A
//!   peer silent for `node_timeout_ticks`, or one that restarted, wakes exactly the hibernating groups
//!   that followed a leader there, a bounded number per tick, each with its replicas ranked so that one
//!   of them campaigns first: one election per group, no storm.
//! - **One write per cycle.** [`GroupsReady`] carries the writes of every group for one storage batch
//!   and one sync, with the same durability split as a single core's `Ready`.
//!
//! A single group is a `Groups` of one.

pub mod batch;
pub mod ready;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::config::ValidConfig;
use crate::core::{MembershipChange, RaftCore};
use crate::error::Error;
use crate::message::Message;
use crate::ready::ReadId;
use crate::storage::LogView;
use crate::types::{Index, LogId, RaftTypeConfig, Role, Term};

pub use self::batch::{GroupHeartbeat, GroupHeartbeatResponse, GroupMessage, NodeBatch};
pub use self::ready::{GroupApply, GroupWrite, GroupsPersisted, GroupsReady};

/// Settings of the Multi-Raft driver (the per-group Raft settings are in [`Config`](crate::Config)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
pub struct GroupsConfig {
    /// A follower hibernates after this many quiet ticks; keep it below the election timeout so that a
    /// follower is asleep before its leader stops sending heartbeats.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub follower_hibernate_ticks: u32,
    /// A leader hibernates after this many quiet ticks; keep it above `follower_hibernate_ticks`.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub leader_hibernate_ticks: u32,
    /// A peer node silent for this many ticks is considered down. At least 3 heartbeat intervals
    /// (`Config::heartbeat_ticks`): liveness batches go out once per interval.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub node_timeout_ticks: u32,
    /// At most this many hibernating groups are woken per tick after a node failure.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub max_wakes_per_tick: usize,
    /// Hibernation can be switched off (every group ticks every tick, as in a plain Raft library).
    pub hibernation: bool,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            follower_hibernate_ticks: 4,
            leader_hibernate_ticks: 12,
            node_timeout_ticks: 10,
            max_wakes_per_tick: 512,
            hibernation: true,
        }
    }
}

/// Errors of [`Groups`].
#[derive(Debug, thiserror::Error)]
pub enum GroupsError<C: RaftTypeConfig> {
    /// A batch came from a node that is not a registered peer.
    #[error("batch from unknown node {node:?}")]
    UnknownNode { node: C::NodeId },
    /// A batch addressed to another node.
    #[error("batch addressed to node {to:?}, this is {this:?}")]
    Misaddressed { to: C::NodeId, this: C::NodeId },
    /// A message for a group this node does not host (and the replica policy declined to create it).
    #[error("message for unknown group {group:?} from {from:?}")]
    UnknownGroup { group: C::GroupId, from: C::NodeId },
    /// A batch from an earlier life of a peer (its incarnation is below the one already seen), e.g. one
    /// that sat in a dead process's socket. Dropped whole: Raft tolerates the loss, and taking it for a
    /// restart would wake every group led on that node.
    #[error("batch from node {node:?} of incarnation {incarnation}, older than {current}")]
    StaleIncarnation {
        node: C::NodeId,
        incarnation: u64,
        current: u64,
    },
    #[error("group {group:?} already exists")]
    GroupExists { group: C::GroupId },
    #[error("no group {group:?} on this node")]
    GroupNotFound { group: C::GroupId },
    /// An error of one group's core.
    #[error("group {group:?}: {error}")]
    Group { group: C::GroupId, error: Error<C> },
    /// `advance` was given a token that does not belong to the outstanding GroupsReady.
    #[error("advance called with a token that does not belong to the outstanding GroupsReady")]
    StaleAdvance,
    #[error(transparent)]
    Config(#[from] crate::error::ConfigError),
}

/// Decides whether a message for a group this node does not host may create an uninitialised replica
/// (which a snapshot or the log then fills, TiKV style). Returns the new replica's log view, or `None` to
/// refuse.
pub type ReplicaPolicy<C, S> = Box<
    dyn FnMut(<C as RaftTypeConfig>::GroupId, <C as RaftTypeConfig>::NodeId) -> Option<S> + Send,
>;

/// Counters describing the driver, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupsStats {
    pub groups: usize,
    pub awake: usize,
    pub hibernating: usize,
    /// Groups woken because their leader's node went down or restarted.
    pub woken_by_liveness: u64,
    /// Batches sent (all kinds) and batches that carried heartbeats or liveness only.
    pub batches_sent: u64,
}

struct Slot<C: RaftTypeConfig, S: LogView<C>> {
    group: C::GroupId,
    core: RaftCore<C, S>,
    /// Position in `awake`, or `None` while hibernating.
    awake_pos: Option<usize>,
    quiet_ticks: u32,
    dirty: bool,
}

/// A hibernating group to wake because its leader's node failed.
#[derive(Debug, Clone, Copy)]
struct PendingWake {
    slot: usize,
    /// The replica's term when the failure was detected: a replica that has seen an election since then
    /// follows that election instead.
    term: Term,
    /// The earliest tick at which this replica may campaign, or `None` to campaign as soon as it is
    /// released (the first-ranked survivor).
    campaign_at: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct PeerState {
    last_heard: u64,
    incarnation: Option<u64>,
    down: bool,
}

/// Many Raft groups on one node. See the [module documentation](self).
pub struct Groups<C: RaftTypeConfig, S: LogView<C>> {
    node: C::NodeId,
    incarnation: u64,
    raft_config: ValidConfig,
    config: GroupsConfig,
    seed: u64,
    now: u64,
    /// Boxed, so that the array's spare capacity costs a pointer per group, not a whole slot.
    slots: Vec<Option<Box<Slot<C, S>>>>,
    free_slots: Vec<usize>,
    index: HashMap<C::GroupId, usize>,
    awake: Vec<usize>,
    dirty: Vec<usize>,
    /// Groups to wake after a node failure, released a few per tick.
    wake_queue: VecDeque<PendingWake>,
    peers: BTreeMap<C::NodeId, PeerState>,
    replica_policy: Option<ReplicaPolicy<C, S>>,
    outstanding: Option<u64>,
    next_ready_id: u64,
    /// A heartbeat interval began: every peer gets a batch in the next ready.
    liveness_due: bool,
    stats: GroupsStats,
}

impl<C: RaftTypeConfig, S: LogView<C>> Groups<C, S> {
    /// A driver for node `node`. `incarnation` must grow at every start of the process (a persisted
    /// restart counter, or the start time), so that peers can tell a restart from a short silence, and a
    /// late batch of an earlier life from a restart. `seed` drives the
    /// election jitter of every group (each group mixes in its id).
    pub fn new(
        node: C::NodeId,
        incarnation: u64,
        raft_config: ValidConfig,
        config: GroupsConfig,
        seed: u64,
    ) -> Result<Self, GroupsError<C>> {
        config
            .validate()
            .map_err(|e| crate::error::ConfigError::new("groups", e.to_string()))?;
        if config.node_timeout_ticks < 3 * raft_config.heartbeat_ticks {
            // Liveness batches go out once per heartbeat interval: a shorter timeout would declare a live
            // node down after one delayed batch and wake every group it leads.
            return Err(crate::error::ConfigError::new(
                "node_timeout_ticks",
                "must be at least 3 heartbeat intervals (3 * heartbeat_ticks)".to_string(),
            )
            .into());
        }
        if raft_config.read_mode == crate::config::ReadMode::Lease
            && config.node_timeout_ticks < raft_config.election_timeout_min_ticks
        {
            // A node declared down has its groups' leaders forgotten at once; a leader there may still
            // hold a read lease for an election timeout after its last heartbeat.
            return Err(crate::error::ConfigError::new(
                "node_timeout_ticks",
                "must be at least election_timeout_min_ticks with lease reads".to_string(),
            )
            .into());
        }
        Ok(Groups {
            node,
            incarnation,
            raft_config,
            config,
            seed,
            now: 0,
            slots: Vec::new(),
            free_slots: Vec::new(),
            index: HashMap::new(),
            awake: Vec::new(),
            dirty: Vec::new(),
            wake_queue: VecDeque::new(),
            peers: BTreeMap::new(),
            replica_policy: None,
            outstanding: None,
            next_ready_id: 1,
            liveness_due: false,
            stats: GroupsStats::default(),
        })
    }

    pub fn node_id(&self) -> C::NodeId {
        self.node
    }

    /// Registers a peer node: batches from it are accepted, and it receives a liveness heartbeat every
    /// interval.
    pub fn add_peer(&mut self, node: C::NodeId) {
        if node != self.node {
            let now = self.now;
            self.peers.entry(node).or_insert(PeerState {
                last_heard: now,
                incarnation: None,
                down: false,
            });
        }
    }

    pub fn remove_peer(&mut self, node: C::NodeId) {
        self.peers.remove(&node);
    }

    /// Allows messages for unknown groups to create uninitialised replicas; see [`ReplicaPolicy`].
    pub fn set_replica_policy(&mut self, policy: ReplicaPolicy<C, S>) {
        self.replica_policy = Some(policy);
    }

    /// Creates a replica of `group` over its log view. `applied` is what its state machine has applied.
    pub fn create_group(
        &mut self,
        group: C::GroupId,
        storage: S,
        applied: Index,
    ) -> Result<(), GroupsError<C>> {
        if self.index.contains_key(&group) {
            return Err(GroupsError::GroupExists { group });
        }
        let seed = self.group_seed(group);
        let core = RaftCore::new(self.node, self.raft_config.clone(), storage, applied, seed)
            .map_err(|error| GroupsError::Group { group, error })?
            .with_external_heartbeats();
        let slot = Box::new(Slot {
            group,
            core,
            awake_pos: None,
            quiet_ticks: 0,
            dirty: false,
        });
        let idx = match self.free_slots.pop() {
            Some(idx) => {
                self.slots[idx] = Some(slot);
                idx
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index.insert(group, idx);
        self.stats.groups += 1;
        // A new replica does not know its leader yet: it ticks until it hears from one.
        self.wake_slot(idx);
        Ok(())
    }

    /// Removes the replica of `group` from this node (its storage is the caller's to delete).
    pub fn remove_group(&mut self, group: C::GroupId) -> Result<RaftCore<C, S>, GroupsError<C>> {
        let idx = self
            .index
            .remove(&group)
            .ok_or(GroupsError::GroupNotFound { group })?;
        self.sleep_slot(idx);
        self.wake_queue.retain(|w| w.slot != idx);
        self.dirty.retain(|i| *i != idx);
        let slot = self.slots[idx]
            .take()
            .ok_or(GroupsError::GroupNotFound { group })?;
        self.free_slots.push(idx);
        self.stats.groups -= 1;
        Ok(slot.core)
    }

    fn group_seed(&self, group: C::GroupId) -> u64 {
        // DefaultHasher::new() uses fixed keys: the same ids always mix in the same value. The node id is
        // mixed in too, so that replicas of one group never share election timeouts even when every
        // node was given the same seed.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.node.hash(&mut hasher);
        group.hash(&mut hasher);
        self.seed ^ hasher.finish()
    }

    pub fn contains(&self, group: C::GroupId) -> bool {
        self.index.contains_key(&group)
    }

    /// The core of `group`, for status and inspection.
    pub fn core(&self, group: C::GroupId) -> Option<&RaftCore<C, S>> {
        let idx = *self.index.get(&group)?;
        self.slots[idx].as_ref().map(|s| &s.core)
    }

    /// The ids of every hosted group, in no particular order.
    pub fn group_ids(&self) -> impl Iterator<Item = C::GroupId> + '_ {
        self.index.keys().copied()
    }

    pub fn is_hibernating(&self, group: C::GroupId) -> Option<bool> {
        let idx = *self.index.get(&group)?;
        self.slots[idx].as_ref().map(|s| s.awake_pos.is_none())
    }

    pub fn stats(&self) -> GroupsStats {
        GroupsStats {
            awake: self.awake.len(),
            hibernating: self.stats.groups - self.awake.len(),
            ..self.stats
        }
    }

    /// The current tick.
    pub fn now(&self) -> u64 {
        self.now
    }

    // ----- awake set -----

    fn wake_slot(&mut self, idx: usize) {
        let Some(slot) = self.slots[idx].as_mut() else {
            return;
        };
        // Waking is a sign of activity: the quiet period starts again.
        slot.quiet_ticks = 0;
        if slot.awake_pos.is_some() {
            return;
        }
        if let Err(error) = slot.core.wake() {
            tracing::warn!(group = ?slot.group, %error, "waking a group failed");
        }
        slot.awake_pos = Some(self.awake.len());
        self.awake.push(idx);
    }

    fn sleep_slot(&mut self, idx: usize) {
        let Some(pos) = self.slots[idx].as_mut().and_then(|s| s.awake_pos.take()) else {
            return;
        };
        if let Some(slot) = self.slots[idx].as_mut() {
            slot.core.hibernate();
        }
        self.awake.swap_remove(pos);
        if let Some(&moved) = self.awake.get(pos) {
            if let Some(slot) = self.slots[moved].as_mut() {
                slot.awake_pos = Some(pos);
            }
        }
    }

    fn mark_dirty(&mut self, idx: usize) {
        if let Some(slot) = self.slots[idx].as_mut() {
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    fn slot_of(&mut self, group: C::GroupId) -> Result<usize, GroupsError<C>> {
        self.index
            .get(&group)
            .copied()
            .ok_or(GroupsError::GroupNotFound { group })
    }

    /// Runs `f` on an awake `group` and marks it for the next ready.
    fn with_group<T>(
        &mut self,
        group: C::GroupId,
        f: impl FnOnce(&mut RaftCore<C, S>) -> Result<T, Error<C>>,
    ) -> Result<T, GroupsError<C>> {
        let idx = self.slot_of(group)?;
        if let Some(slot) = self.slots[idx].as_ref() {
            if slot.awake_pos.is_none() && !slot.core.is_leader() {
                // Only a leader acts on client requests. Waking a follower alone (its leader sleeps on)
                // would let its election timer run out and depose a healthy leader; a router with a
                // stale leader guess must not cost an election.
                return Err(GroupsError::Group {
                    group,
                    error: Error::NotLeader {
                        leader: slot.core.leader(),
                    },
                });
            }
        }
        self.wake_slot(idx);
        self.mark_dirty(idx);
        let slot = self.slots[idx]
            .as_mut()
            .ok_or(GroupsError::GroupNotFound { group })?;
        let _span = tracing::debug_span!("group", node = ?self.node, ?group).entered();
        f(&mut slot.core).map_err(|error| GroupsError::Group { group, error })
    }

    // ----- input -----

    /// Advances every awake group by one tick, sends heartbeats on interval boundaries, hibernates quiet
    /// groups and acts on node failures. Cost: proportional to the awake groups.
    pub fn tick(&mut self) -> Result<(), GroupsError<C>> {
        self.now += 1;
        self.check_peers();
        self.release_wakes()?;
        let heartbeat_now = self.now % u64::from(self.raft_config.heartbeat_ticks) == 0;
        self.liveness_due |= heartbeat_now;
        let mut pos = 0;
        while pos < self.awake.len() {
            let idx = self.awake[pos];
            let Some(slot) = self.slots[idx].as_mut() else {
                pos += 1;
                continue;
            };
            let group = slot.group;
            let span = tracing::debug_span!("group", node = ?self.node, ?group);
            span.in_scope(|| slot.core.tick())
                .map_err(|error| GroupsError::Group { group, error })?;
            let limit = if slot.core.role() == Role::Leader {
                self.config.leader_hibernate_ticks
            } else {
                self.config.follower_hibernate_ticks
            };
            // Quiet is a matter of state: a token still carrying this group's heartbeat (while another
            // group's write syncs) must not keep it awake. Going to sleep needs full quiescence.
            let quiet = self.config.hibernation && slot.core.is_settled();
            if quiet {
                slot.quiet_ticks = slot.quiet_ticks.saturating_add(1);
            } else {
                slot.quiet_ticks = 0;
            }
            let asleep = quiet
                && slot.quiet_ticks >= limit
                && slot.core.is_quiescent()
                && self.leader_node_alive(idx);
            self.mark_dirty(idx);
            if asleep {
                self.sleep_slot(idx); // swaps another awake group into `pos`
            } else {
                if heartbeat_now {
                    if let Some(slot) = self.slots[idx].as_mut() {
                        slot.core.heartbeat();
                    }
                }
                pos += 1;
            }
        }
        Ok(())
    }

    /// A follower may only sleep while its leader's node is alive: liveness is what wakes it otherwise.
    fn leader_node_alive(&self, idx: usize) -> bool {
        let Some(slot) = self.slots[idx].as_ref() else {
            return false;
        };
        match slot.core.leader() {
            Some(leader) if leader == self.node => true,
            Some(leader) => self.peers.get(&leader).is_some_and(|p| !p.down),
            None => false,
        }
    }

    fn check_peers(&mut self) {
        let timeout = u64::from(self.config.node_timeout_ticks);
        let now = self.now;
        let newly_down: Vec<C::NodeId> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| !p.down && now.saturating_sub(p.last_heard) > timeout)
            .map(|(id, p)| {
                p.down = true;
                *id
            })
            .collect();
        for node in newly_down {
            tracing::info!(node = ?self.node, peer = ?node, "peer node is down");
            self.on_leader_node_lost(node);
        }
    }

    /// Every replica that followed a leader on `node` forgets it at once (so that it grants the vote of
    /// a survivor that campaigns), and the hibernating ones are queued for a wake. A rare event, so a scan
    /// of the groups is fine; ticks never scan.
    ///
    /// The surviving voters of a group are ranked by id: the first campaigns as soon as its wake is
    /// released, the next only if that failed: a full election timeout (randomised, so at most
    /// `election_timeout_max_ticks`, plus one minimum for the round trips) after every first-ranked wake
    /// is out. The survivors drain their queues side by side; without the drain in the delay a
    /// lower-ranked replica released early on its node could campaign beside a first-ranked one released
    /// late on another: a split vote and a second election.
    fn on_leader_node_lost(&mut self, node: C::NodeId) {
        let rank_gap = u64::from(self.raft_config.election_timeout_min_ticks)
            + u64::from(self.raft_config.election_timeout_max_ticks);
        let mut orphans = Vec::new();
        for (idx, slot) in self.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            if slot.core.is_leader() || slot.core.leader() != Some(node) {
                continue;
            }
            let membership = slot.core.membership();
            let rank = membership
                .voters
                .iter()
                .chain(membership.outgoing_voters.iter())
                .copied()
                .filter(|id| *id != node)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .position(|id| id == self.node)
                .unwrap_or(0) as u64;
            orphans.push((idx, rank, slot.awake_pos.is_some()));
        }
        let per_tick = self.config.max_wakes_per_tick.max(1);
        let asleep = orphans.iter().filter(|(_, _, awake)| !awake).count();
        let drain = (self.wake_queue.len() + asleep).div_ceil(per_tick) as u64;
        let now = self.now;
        for (idx, rank, awake) in orphans {
            let campaign_at = (rank > 0).then(|| now + drain + rank * rank_gap);
            let after = campaign_at.map_or(1, |at| at - now);
            let Some(slot) = self.slots[idx].as_mut() else {
                continue;
            };
            // An awake replica's timer runs: set it now. A sleeping one's is frozen; its release sets it
            // again, but forgetting the leader (and its lease) must not wait for that.
            slot.core
                .leader_lost(u32::try_from(after).unwrap_or(u32::MAX));
            if !awake {
                self.wake_queue.push_back(PendingWake {
                    slot: idx,
                    term: slot.core.term(),
                    campaign_at,
                });
            }
        }
    }

    fn release_wakes(&mut self) -> Result<(), GroupsError<C>> {
        for _ in 0..self.config.max_wakes_per_tick {
            let Some(wake) = self.wake_queue.pop_front() else {
                break;
            };
            let idx = wake.slot;
            let Some(slot) = self.slots[idx].as_mut() else {
                continue;
            };
            let untouched = slot.core.term() == wake.term
                && slot.core.leader().is_none()
                && slot.core.role() == Role::Follower;
            if !untouched {
                // Since the failure it took part in an election (a vote request woke it) or heard of a
                // new leader: it follows that, and must not start a competing campaign.
                continue;
            }
            let after = wake
                .campaign_at
                .map_or(1, |at| at.saturating_sub(self.now).max(1));
            slot.core
                .leader_lost(u32::try_from(after).unwrap_or(u32::MAX));
            self.stats.woken_by_liveness += 1;
            self.wake_slot(idx);
            self.mark_dirty(idx);
        }
        Ok(())
    }

    /// Delivers a batch from a peer. Messages for groups are handed to their cores; a message a core
    /// rejects does not stop the others: the rejections come back as the `Ok` value. A batch from an
    /// unknown node, or for another node, is refused whole.
    pub fn step(&mut self, batch: NodeBatch<C>) -> Result<Vec<GroupsError<C>>, GroupsError<C>> {
        if batch.to != self.node {
            return Err(GroupsError::Misaddressed {
                to: batch.to,
                this: self.node,
            });
        }
        let from = batch.from;
        let now = self.now;
        let Some(peer) = self.peers.get_mut(&from) else {
            return Err(GroupsError::UnknownNode { node: from });
        };
        if let Some(current) = peer.incarnation.filter(|i| *i > batch.incarnation) {
            tracing::debug!(node = ?self.node, peer = ?from, incarnation = batch.incarnation, current, "dropped a batch of an earlier life of the peer");
            return Err(GroupsError::StaleIncarnation {
                node: from,
                incarnation: batch.incarnation,
                current,
            });
        }
        peer.last_heard = now;
        let restarted = peer.incarnation.is_some_and(|i| i < batch.incarnation);
        let came_back = peer.down;
        peer.incarnation = Some(batch.incarnation);
        peer.down = false;
        if restarted {
            tracing::info!(node = ?self.node, peer = ?from, "peer node restarted");
            self.on_peer_restarted(from);
        } else if came_back {
            tracing::info!(node = ?self.node, peer = ?from, "peer node is back");
            // Its replicas may have woken and campaigned while it was cut off: tell them who leads.
            self.heartbeat_groups_led_here_with(from);
        }
        let mut rejected = Vec::new();
        for (group, message) in batch.into_messages() {
            if let Err(e) = self.step_one(from, group, message) {
                rejected.push(e);
            }
        }
        Ok(rejected)
    }

    /// A restarted peer lost its volatile state: groups led there need an election, and groups led here
    /// with a replica there should tell it who leads. Nobody else is woken.
    fn on_peer_restarted(&mut self, node: C::NodeId) {
        self.on_leader_node_lost(node);
        self.heartbeat_groups_led_here_with(node);
    }

    /// Wakes the hibernating groups led here that have a replica on `node`, and heartbeats them.
    fn heartbeat_groups_led_here_with(&mut self, node: C::NodeId) {
        let led_here: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(idx, slot)| {
                let slot = slot.as_ref()?;
                let relevant = slot.awake_pos.is_none()
                    && slot.core.is_leader()
                    && slot.core.membership().contains(node);
                relevant.then_some(idx)
            })
            .collect();
        for idx in led_here {
            self.wake_slot(idx);
            if let Some(slot) = self.slots[idx].as_mut() {
                slot.core.heartbeat();
            }
            self.mark_dirty(idx);
        }
    }

    fn step_one(
        &mut self,
        from: C::NodeId,
        group: C::GroupId,
        message: Message<C>,
    ) -> Result<(), GroupsError<C>> {
        let idx = match self.index.get(&group) {
            Some(idx) => *idx,
            None => self.create_uninitialised(group, from)?,
        };
        self.mark_dirty(idx);
        // A member campaigning lost its leader: a hibernating replica must wake and let its lease run out
        // (its clock is frozen while it sleeps, so it would ignore the candidate forever), and a
        // hibernating leader must wake to heartbeat it back in line.
        // (A delayed copy from a finished election, at or below the replica's term, need not wake it.)
        let campaign = matches!(message.rpc, crate::message::Rpc::VoteRequest(_))
            && self.slots[idx]
                .as_ref()
                .is_some_and(|s| message.term > s.core.term());
        if campaign {
            self.wake_slot(idx);
        }
        let Some(slot) = self.slots[idx].as_mut() else {
            return Err(GroupsError::GroupNotFound { group });
        };
        // Spans cost a level check when tracing is off; they give every core log its node and group.
        let _span = tracing::debug_span!("group", node = ?self.node, ?group).entered();
        let result = slot
            .core
            .step(from, message)
            .map_err(|error| GroupsError::Group { group, error });
        // A hibernating replica answers a heartbeat that brings nothing new without waking up; anything
        // that unsettles it (new entries, a new term, an election) wakes it.
        if slot.awake_pos.is_none() && !slot.core.is_settled() {
            self.wake_slot(idx);
        }
        result
    }

    fn create_uninitialised(
        &mut self,
        group: C::GroupId,
        from: C::NodeId,
    ) -> Result<usize, GroupsError<C>> {
        let view = self
            .replica_policy
            .as_mut()
            .and_then(|policy| policy(group, from))
            .ok_or(GroupsError::UnknownGroup { group, from })?;
        tracing::debug!(node = ?self.node, ?group, ?from, "creating an uninitialised replica");
        self.create_group(group, view, 0)?;
        self.slot_of(group)
    }

    /// Proposes a command to `group` (which must be led here).
    pub fn propose(&mut self, group: C::GroupId, data: C::Data) -> Result<LogId, GroupsError<C>> {
        self.with_group(group, |core| core.propose(data))
    }

    /// Proposes several commands to `group` at once.
    pub fn propose_batch(
        &mut self,
        group: C::GroupId,
        data: impl IntoIterator<Item = C::Data>,
    ) -> Result<(LogId, LogId), GroupsError<C>> {
        self.with_group(group, |core| core.propose_batch(data))
    }

    /// Starts a linearizable read on `group`.
    pub fn read_index(&mut self, group: C::GroupId) -> Result<ReadId, GroupsError<C>> {
        self.with_group(group, |core| core.read_index())
    }

    pub fn change_membership(
        &mut self,
        group: C::GroupId,
        change: MembershipChange<C>,
    ) -> Result<LogId, GroupsError<C>> {
        self.with_group(group, |core| core.change_membership(change))
    }

    pub fn transfer_leadership(
        &mut self,
        group: C::GroupId,
        target: C::NodeId,
    ) -> Result<(), GroupsError<C>> {
        self.with_group(group, |core| core.transfer_leadership(target))
    }

    /// The transport could not reach `node`: awake groups stop streaming to it optimistically.
    pub fn report_unreachable(&mut self, node: C::NodeId) {
        for &idx in &self.awake {
            if let Some(slot) = self.slots[idx].as_mut() {
                slot.core.report_unreachable(node);
            }
        }
    }

    // ----- output -----

    /// Collects the work of every group touched since the last cycle. `None` if there is none, or while
    /// the previous `GroupsReady` has not been advanced.
    pub fn ready(&mut self) -> Result<Option<GroupsReady<C>>, GroupsError<C>> {
        if self.outstanding.is_some() {
            return Ok(None);
        }
        // Sized for the touched groups up front: growing these vectors by doubling was a visible share of
        // a busy cycle's time (every doubling copies what was gathered so far).
        let touched = self.dirty.len();
        let mut batches: Vec<NodeBatch<C>> = Vec::with_capacity(self.peers.len());
        let mut writes = Vec::with_capacity(touched);
        let mut must_sync = false;
        let mut soft_states = Vec::new();
        let mut tokens = Vec::with_capacity(touched);
        for idx in std::mem::take(&mut self.dirty) {
            let Some(slot) = self.slots[idx].as_mut() else {
                continue;
            };
            slot.dirty = false;
            let group = slot.group;
            let Some(mut ready) = slot
                .core
                .ready()
                .map_err(|error| GroupsError::Group { group, error })?
            else {
                continue;
            };
            for envelope in ready.take_messages() {
                let batch = batch_for(&mut batches, self.node, envelope.to, self.incarnation);
                if batch.messages.capacity() == 0 {
                    batch.messages.reserve(touched);
                }
                batch.push(group, envelope.message);
            }
            must_sync |= ready.must_sync();
            if let Some(soft) = ready.soft_state() {
                soft_states.push((group, *soft));
            }
            let group_writes = ready.take_writes();
            if !group_writes.is_empty() {
                writes.push(GroupWrite {
                    group,
                    writes: group_writes,
                });
            }
            tokens.push((idx, group, ready.persisted()));
        }
        if std::mem::take(&mut self.liveness_due) {
            // Node-level liveness: every peer hears from us once per interval, whatever the groups do.
            let peers: Vec<C::NodeId> = self.peers.keys().copied().collect();
            for peer in peers {
                batch_for(&mut batches, self.node, peer, self.incarnation);
            }
        }
        if batches.is_empty() && writes.is_empty() && tokens.is_empty() {
            return Ok(None);
        }
        self.stats.batches_sent += batches.len() as u64;
        let id = self.next_ready_id;
        self.next_ready_id += 1;
        self.outstanding = Some(id);
        Ok(Some(GroupsReady {
            batches,
            writes,
            must_sync,
            soft_states,
            tokens,
            id,
            from: self.node,
            incarnation: self.incarnation,
        }))
    }

    /// Hands back the token of the outstanding `GroupsReady` once its writes are durable and its entries
    /// applied.
    pub fn advance(&mut self, persisted: GroupsPersisted<C>) -> Result<(), GroupsError<C>> {
        if self.outstanding != Some(persisted.id) {
            return Err(GroupsError::StaleAdvance);
        }
        self.outstanding = None;
        for (idx, group, token) in persisted.tokens {
            let Some(slot) = self.slots[idx].as_mut() else {
                continue; // removed meanwhile
            };
            if slot.group != group {
                continue; // the slot was reused by another group
            }
            slot.core
                .advance(token)
                .map_err(|error| GroupsError::Group { group, error })?;
            self.mark_dirty(idx);
            self.maybe_sleep(idx);
        }
        Ok(())
    }

    /// Puts a group that has been quiet long enough to sleep, if it is fully quiescent now (at tick time
    /// its token may have been outstanding).
    fn maybe_sleep(&mut self, idx: usize) {
        let Some(slot) = self.slots[idx].as_ref() else {
            return;
        };
        if !self.config.hibernation || slot.awake_pos.is_none() {
            return;
        }
        let limit = if slot.core.role() == Role::Leader {
            self.config.leader_hibernate_ticks
        } else {
            self.config.follower_hibernate_ticks
        };
        if slot.quiet_ticks >= limit && slot.core.is_quiescent() && self.leader_node_alive(idx) {
            self.sleep_slot(idx);
        }
    }
}

fn batch_for<C: RaftTypeConfig>(
    batches: &mut Vec<NodeBatch<C>>,
    from: C::NodeId,
    to: C::NodeId,
    incarnation: u64,
) -> &mut NodeBatch<C> {
    match batches.iter().position(|b| b.to == to) {
        Some(pos) => &mut batches[pos],
        None => {
            batches.push(NodeBatch::new(from, to, incarnation));
            let last = batches.len() - 1;
            &mut batches[last]
        }
    }
}
