//! `RaftCore`: one replica of one group as a pure, synchronous state machine.
//!
//! Time advances only through [`RaftCore::tick`]; input arrives through [`RaftCore::step`],
//! [`RaftCore::propose`] and [`RaftCore::read_index`]; output leaves through [`RaftCore::ready`]. The core
//! reads the durable log through a [`LogView`] and never writes, sleeps, or reads a clock.

mod checksum;
pub mod log;
pub mod membership;
pub mod progress;
pub mod quorum;
pub(crate) mod rng;

#[cfg(test)]
pub(crate) mod test_log;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::{ReadMode, ValidConfig};
use crate::error::{Error, StorageError};
use crate::message::{
    AppendRequest, AppendResponse, Envelope, Heartbeat, HeartbeatResponse, Message, Rpc,
    SnapshotChunk, SnapshotProgress, SnapshotResponse, VoteRequest, VoteResponse,
};
use crate::ready::{Persisted, ReadId, ReadState, Ready, SoftState};
use crate::storage::LogView;
use crate::types::{
    Entry, EntryPayload, HardState, Index, LogId, Membership, Payload, RaftTypeConfig, Role,
    Snapshot, SnapshotData, SnapshotMeta, Term, ENTRY_OVERHEAD_BYTES,
};

use self::log::RaftLog;
use self::membership::MembershipLog;
use self::progress::{Progress, ProgressState};
use self::quorum::{joint_committed, joint_vote, VoteResult};
use self::rng::SplitMix64;

/// A change of membership, proposed through [`RaftCore::change_membership`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange<C: RaftTypeConfig> {
    /// Adds a voter, or promotes a learner to voter.
    AddVoter(C::NodeId),
    /// Adds a learner: it receives the log but never votes or counts toward a quorum.
    AddLearner(C::NodeId),
    /// Removes a voter or a learner.
    RemoveNode(C::NodeId),
    /// Replaces the whole configuration. When more than one voter changes, this goes through joint
    /// consensus: the leader enters the joint configuration and leaves it once that is committed.
    Replace {
        voters: BTreeSet<C::NodeId>,
        learners: BTreeSet<C::NodeId>,
    },
}

/// A snapshot being received from the leader, chunk by chunk.
#[derive(Debug)]
struct IncomingSnapshot<C: RaftTypeConfig> {
    meta: SnapshotMeta<C>,
    buf: Vec<u8>,
    total_len: u64,
    checksum: u32,
}

/// A leader's lease (`ReadMode::Lease`): the send ticks of recent heartbeats, and how long the ones a
/// quorum acknowledged keep other candidates from winning.
#[derive(Debug, Default)]
struct Lease {
    /// (heartbeat sequence number, tick it was sent), oldest first, newer than the last confirmed one.
    sent: VecDeque<(u64, u64)>,
    /// Lease reads are safe while `ticks < until`.
    until: u64,
    /// A leadership transfer began: the transferee may win at once (voters ignore their lease for it),
    /// so this leader must never serve a lease read again in this term.
    forbidden: bool,
}

/// The reads a replica is tracking.
#[derive(Debug, Default)]
struct Reads {
    /// Reads that arrived before the leader committed an entry of its term.
    awaiting_commit: Vec<ReadId>,
    /// Reads waiting for a quorum of heartbeat answers, in id order.
    awaiting_quorum: VecDeque<PendingRead>,
    /// Confirmed reads, released once the state machine reaches their index.
    confirmed: VecDeque<ReadState>,
    /// Reads that can never be confirmed here, to report to the caller.
    aborted: Vec<ReadId>,
}

impl Reads {
    fn is_empty(&self) -> bool {
        self.awaiting_commit.is_empty()
            && self.awaiting_quorum.is_empty()
            && self.confirmed.is_empty()
            && self.aborted.is_empty()
    }
}

/// A read waiting for its leadership confirmation.
#[derive(Debug, Clone, Copy)]
struct PendingRead {
    id: ReadId,
    index: Index,
}

/// A snapshot of one replica's state, for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status<C: RaftTypeConfig> {
    pub id: C::NodeId,
    pub role: Role,
    pub leader: Option<C::NodeId>,
    pub term: Term,
    pub vote: Option<C::NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub last_index: Index,
}

/// One replica of one Raft group. See the [crate documentation](crate) for the driving loop.
pub struct RaftCore<C: RaftTypeConfig, S: LogView<C>> {
    id: C::NodeId,
    config: ValidConfig,
    log: RaftLog<C, S>,
    term: Term,
    vote: Option<C::NodeId>,
    role: Role,
    leader: Option<C::NodeId>,
    memberships: MembershipLog<C>,

    /// Leader only: the replication progress of every other replica.
    progress: BTreeMap<C::NodeId, Progress>,
    /// Leader only: the last index durable on this replica (counts toward the commit quorum).
    self_match: Index,
    /// Candidates only: the answers received in this election.
    votes: BTreeMap<C::NodeId, bool>,

    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    rng: SplitMix64,

    /// Follower: a snapshot arriving in chunks.
    incoming_snapshot: Option<Box<IncomingSnapshot<C>>>,
    /// Leader: the checksum of the snapshot being sent, computed once per snapshot.
    snapshot_checksum: Option<Box<(LogId, u32)>>,

    /// Leader only: a check-quorum round passed since this replica became leader or last woke, so lease
    /// reads are safe.
    lease: Option<Box<Lease>>,
    /// Ticks since this replica started: the clock leases are measured on.
    ticks: u64,
    /// Periodic heartbeats are the caller's job (see `with_external_heartbeats`).
    external_heartbeats: bool,

    /// Leader only: a leadership transfer in progress and the ticks it has taken.
    transferee: Option<C::NodeId>,
    transfer_elapsed: u32,

    /// Leader only: bytes of entries appended but not yet handed out for apply.
    uncommitted_bytes: usize,
    /// Leader only: entries were appended since the last broadcast.
    pending_append: bool,
    /// Leader only: the commit index moved since the last broadcast.
    pending_commit_broadcast: bool,

    next_read_id: u64,
    /// Leader only: a heartbeat carrying the newest read id must go out.
    pending_read_broadcast: bool,
    /// Reads in progress; allocated only while there are some, to keep idle replicas small.
    reads: Option<Box<Reads>>,

    /// Messages that may leave at once, and those that must wait for durability.
    messages: Vec<Envelope<C>>,
    messages_after_persist: Vec<Envelope<C>>,

    prev_hard_state: HardState<C>,
    prev_soft_state: SoftState<C>,
    /// The id of the Ready handed out and not yet advanced.
    outstanding_ready: Option<u64>,
    next_ready_id: u64,
}

impl<C: RaftTypeConfig, S: LogView<C>> RaftCore<C, S> {
    /// Creates a replica from its durable state. `applied` is the index the state machine has already
    /// applied (it reports it on open), so that nothing is applied twice. `seed` drives election jitter.
    pub fn new(
        id: C::NodeId,
        config: ValidConfig,
        storage: S,
        applied: Index,
        seed: u64,
    ) -> Result<Self, Error<C>> {
        let initial = storage.initial_state()?;
        let hs = initial.hard_state;
        let last = storage.last_index()?;
        if hs.commit > last {
            return Err(Error::CorruptState {
                reason: format!(
                    "commit index {} is past the last log index {last}",
                    hs.commit
                ),
            });
        }
        if applied > last {
            return Err(Error::CorruptState {
                reason: format!("applied index {applied} is past the last log index {last}"),
            });
        }
        // The state machine may have applied entries whose commit index was not yet persisted: they were
        // committed, so the commit index can only be at least that high. So is the compaction point.
        let first = storage.first_index()?;
        let committed = hs.commit.max(applied).max(first - 1);
        if applied + 1 < first {
            return Err(Error::CorruptState {
                reason: format!(
                    "applied index {applied} is below the snapshot at {}: install the snapshot into the \
                     state machine first",
                    first - 1
                ),
            });
        }
        let log = RaftLog::new(storage, committed, applied)?;
        let memberships = Self::memberships_from_log(&log, initial.membership)?;
        let mut core = RaftCore {
            id,
            config,
            log,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            memberships,
            progress: BTreeMap::new(),
            self_match: 0,
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            rng: SplitMix64::new(seed),
            incoming_snapshot: None,
            snapshot_checksum: None,
            lease: None,
            ticks: 0,
            external_heartbeats: false,
            transferee: None,
            transfer_elapsed: 0,
            uncommitted_bytes: 0,
            pending_append: false,
            pending_commit_broadcast: false,
            next_read_id: 1,
            pending_read_broadcast: false,
            reads: None,
            messages: Vec::new(),
            messages_after_persist: Vec::new(),
            prev_hard_state: HardState {
                term: hs.term,
                vote: hs.vote,
                commit: committed,
            },
            prev_soft_state: SoftState {
                role: Role::Follower,
                leader: None,
            },
            outstanding_ready: None,
            next_ready_id: 1,
        };
        core.reset_election_timer();
        Ok(core)
    }

    /// Collects the membership entries from the end of the log back to the newest committed one, so that
    /// an uncommitted one can be reverted if a new leader overwrites it.
    fn memberships_from_log(
        log: &RaftLog<C, S>,
        base: Membership<C>,
    ) -> Result<MembershipLog<C>, StorageError> {
        let first = log.first_index()?;
        let last = log.last_index()?;
        let mut found: Vec<(Index, Membership<C>)> = Vec::new();
        let mut high = last;
        'scan: while high >= first && high > 0 {
            let low = high.saturating_sub(63).max(first);
            let entries = log.slice(low, high + 1, usize::MAX)?;
            for entry in entries.iter().rev() {
                if let EntryPayload::Membership(m) = &entry.payload {
                    found.push((entry.index, (**m).clone()));
                    if entry.index <= log.committed {
                        break 'scan;
                    }
                }
            }
            if low == first {
                break;
            }
            high = low - 1;
        }
        let mut memberships = MembershipLog::new(first - 1, base);
        for (index, m) in found.into_iter().rev() {
            memberships.push(index, m);
        }
        Ok(memberships)
    }

    // ----- observation -----

    pub fn id(&self) -> C::NodeId {
        self.id
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader(&self) -> Option<C::NodeId> {
        self.leader
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The membership in force: the newest one in the log, committed or not.
    pub fn membership(&self) -> &Membership<C> {
        self.memberships.current()
    }

    pub fn commit_index(&self) -> Index {
        self.log.committed
    }

    pub fn applied_index(&self) -> Index {
        self.log.applied
    }

    /// The log view the core reads; the caller writes to the storage behind it.
    pub fn storage(&self) -> &S {
        &self.log.storage
    }

    pub fn status(&self) -> Result<Status<C>, Error<C>> {
        Ok(Status {
            id: self.id,
            role: self.role,
            leader: self.leader,
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index()?,
        })
    }

    /// The progress of `peer` as seen by this leader.
    pub fn progress(&self, peer: C::NodeId) -> Option<&Progress> {
        self.progress.get(&peer)
    }

    fn hard_state(&self) -> HardState<C> {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    fn soft_state(&self) -> SoftState<C> {
        SoftState {
            role: self.role,
            leader: self.leader,
        }
    }

    fn election_timeout(&self) -> u32 {
        self.config.election_timeout_min_ticks
    }

    // ----- time -----

    /// Advances the replica's clock by one tick.
    pub fn tick(&mut self) -> Result<(), Error<C>> {
        self.ticks += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => {
                self.election_elapsed = self.election_elapsed.saturating_add(1);
                if self.election_elapsed >= self.randomized_election_timeout && self.is_promotable()
                {
                    self.start_election(false)?;
                }
                Ok(())
            }
        }
    }

    fn tick_leader(&mut self) -> Result<(), Error<C>> {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout() {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                tracing::debug!(id = ?self.id, term = self.term, "check-quorum failed; stepping down");
                self.become_follower(self.term, None);
                return Ok(());
            }
        }
        if let Some(target) = self.transferee {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.election_timeout() {
                tracing::debug!(id = ?self.id, ?target, "leadership transfer timed out");
                self.transferee = None;
            }
        }
        if !self.external_heartbeats && self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        Ok(())
    }

    // ----- driving many groups (used by `Groups`) -----

    /// Leaves periodic heartbeats to the caller, who calls [`heartbeat`](Self::heartbeat) on every
    /// leader at the same ticks, so that the heartbeats of many groups toward one node coalesce into one
    /// message. Heartbeats that confirm reads are still sent at once.
    pub fn with_external_heartbeats(mut self) -> Self {
        self.external_heartbeats = true;
        self
    }

    /// A leader sends a heartbeat to every follower now; other roles do nothing.
    pub fn heartbeat(&mut self) {
        if self.role == Role::Leader {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// True when nothing is in flight and nothing will happen without new input: everything is committed,
    /// applied and durable, and (for a leader) every replica holds the whole log, with no read, transfer
    /// or membership change pending. Such a replica may stop ticking (hibernate).
    pub fn is_quiescent(&self) -> bool {
        self.outstanding_ready.is_none() && !self.has_ready() && self.is_settled()
    }

    /// The state part of [`is_quiescent`](Self::is_quiescent), ignoring work waiting in a `Ready`: a
    /// heartbeat answered by a hibernating follower leaves it settled.
    pub fn is_settled(&self) -> bool {
        let Ok(last) = self.log.last_index() else {
            return false;
        };
        let settled = self.log.committed == last
            && self.log.applied == last
            && self.log.stable_last_index().is_ok_and(|i| i == last);
        if !settled {
            return false;
        }
        match self.role {
            Role::Leader => {
                self.transferee.is_none()
                    && self.reads.is_none()
                    && !self.memberships.current().is_joint()
                    && self.progress.values().all(|p| p.match_index == last)
            }
            Role::Follower => self.leader.is_some() && self.incoming_snapshot.is_none(),
            Role::PreCandidate | Role::Candidate => false,
        }
    }

    /// Releases the memory only an active replica needs (leader progress, buffers). Call when the
    /// replica stops ticking; [`wake`](Self::wake) undoes it. Only valid while [`is_quiescent`].
    ///
    /// [`is_quiescent`]: Self::is_quiescent
    pub fn hibernate(&mut self) {
        self.progress = BTreeMap::new();
        self.votes = BTreeMap::new();
        self.messages = Vec::new();
        self.messages_after_persist = Vec::new();
        self.reads = None;
        self.log.shrink();
        self.incoming_snapshot = None;
        self.snapshot_checksum = None;
        // Time stops while hibernating: a lease can no longer be vouched for.
        self.lease = None;
    }

    /// Resumes after [`hibernate`](Self::hibernate). A leader rebuilds its follower progress: every
    /// replica held the whole (committed) log when it went to sleep, and committed entries are never lost.
    pub fn wake(&mut self) -> Result<(), Error<C>> {
        self.lease = None;
        if self.role == Role::Leader && self.progress.is_empty() {
            let committed = self.log.committed;
            for peer in self.memberships.current().replicas() {
                if peer != self.id {
                    let mut pr = Progress::new(committed + 1);
                    pr.maybe_update(committed);
                    pr.become_replicate();
                    pr.recent_active = true;
                    self.progress.insert(peer, pr);
                }
            }
            self.election_elapsed = 0;
        }
        Ok(())
    }

    /// The leader's node is gone: forget the leader and time out `after` ticks from now (a caller spreads
    /// these over its groups, and ranks a group's replicas, so that one election starts per group).
    pub fn leader_lost(&mut self, after: u32) {
        if self.role == Role::Leader {
            return;
        }
        self.leader = None;
        let after = after.max(1);
        // A lower-ranked survivor may be asked to wait longer than one election timeout; the timer is
        // re-randomised at the next role change anyway.
        self.randomized_election_timeout = self.randomized_election_timeout.max(after);
        self.election_elapsed = self.randomized_election_timeout - after;
    }

    /// True if a quorum (counting this leader) was heard from since the last check; resets the marks.
    fn quorum_recently_active(&mut self) -> bool {
        let me = self.id;
        let progress = &self.progress;
        let result = joint_vote(
            &self.memberships.current().voters,
            &self.memberships.current().outgoing_voters,
            |id| {
                if id == me {
                    Some(true)
                } else {
                    Some(progress.get(&id).is_some_and(|p| p.recent_active))
                }
            },
        );
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        result == VoteResult::Won
    }

    /// May this replica start an election? A voter of the newest configuration may. So may a voter of the
    /// configuration an *uncommitted* newest one replaces: until the change commits, the old members must
    /// be able to finish it (Raft §6: a leader outside C_new manages the cluster until C_new commits).
    /// Without this, a leader that appended a C_new it is not part of and then lost leadership leaves
    /// nobody able to win: the C_new voters lack its entries, and the replicas holding them are not C_new
    /// voters. Votes are still counted in the newest configuration, so safety is unchanged.
    fn is_promotable(&self) -> bool {
        let current = self.memberships.current();
        if current.is_voter(self.id) {
            return true;
        }
        let index = self.memberships.current_index();
        index > self.log.committed && index > 0 && self.memberships.at(index - 1).is_voter(self.id)
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.randomized_election_timeout = self.rng.in_range(
            u64::from(self.config.election_timeout_min_ticks),
            u64::from(self.config.election_timeout_max_ticks),
        ) as u32;
    }

    // ----- role transitions -----

    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = None;
            // An append acknowledgement of an older term must not outlive the term change: the new term's
            // leader may truncate the entries it vouches for before they are durable (within one term a
            // leader never truncates what was acknowledged). Dropping it is always safe: it could have
            // been lost.
            self.messages_after_persist.retain(|e| {
                e.message.term >= term
                    || !matches!(
                        e.message.rpc,
                        Rpc::AppendResponse(AppendResponse::Accepted { .. })
                    )
            });
            // A new leader restarts any snapshot transfer from offset 0.
            self.incoming_snapshot = None;
        }
        self.leader = None;
        self.heartbeat_elapsed = 0;
        self.reset_election_timer();
        self.votes.clear();
        self.progress.clear();
        self.transferee = None;
        self.transfer_elapsed = 0;
        self.lease = None;
        self.uncommitted_bytes = 0;
        self.pending_append = false;
        self.pending_commit_broadcast = false;
        self.pending_read_broadcast = false;
        // Unconfirmed reads can never be confirmed by this replica now. Confirmed ones stay valid.
        if let Some(reads) = self.reads.as_mut() {
            let awaiting_commit = std::mem::take(&mut reads.awaiting_commit);
            reads.aborted.extend(awaiting_commit);
            let awaiting_quorum = std::mem::take(&mut reads.awaiting_quorum);
            reads
                .aborted
                .extend(awaiting_quorum.into_iter().map(|r| r.id));
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<C::NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn start_election(&mut self, leader_transfer: bool) -> Result<(), Error<C>> {
        if self.config.pre_vote && !leader_transfer {
            self.reset(self.term);
            self.role = Role::PreCandidate;
            tracing::debug!(id = ?self.id, term = self.term, "starting pre-vote");
            self.request_votes(true, false)
        } else {
            self.campaign(leader_transfer)
        }
    }

    fn campaign(&mut self, leader_transfer: bool) -> Result<(), Error<C>> {
        self.reset(self.term + 1);
        self.role = Role::Candidate;
        self.vote = Some(self.id);
        tracing::debug!(id = ?self.id, term = self.term, "starting election");
        self.request_votes(false, leader_transfer)
    }

    fn request_votes(&mut self, pre_vote: bool, leader_transfer: bool) -> Result<(), Error<C>> {
        let last_log = self.log.last_log_id()?;
        let term = if pre_vote { self.term + 1 } else { self.term };
        self.votes.insert(self.id, true);
        if self.tally_votes() == VoteResult::Won {
            return self.on_election_won(pre_vote);
        }
        let voters: Vec<C::NodeId> = self
            .memberships
            .current()
            .voters
            .iter()
            .chain(self.memberships.current().outgoing_voters.iter())
            .copied()
            .filter(|id| *id != self.id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for to in voters {
            // A vote request commits this replica to its new term and self-vote: it leaves only once they
            // are durable.
            self.messages_after_persist.push(Envelope {
                to,
                message: Message {
                    term,
                    rpc: Rpc::VoteRequest(VoteRequest {
                        last_log,
                        pre_vote,
                        leader_transfer,
                    }),
                },
            });
        }
        Ok(())
    }

    fn tally_votes(&self) -> VoteResult {
        joint_vote(
            &self.memberships.current().voters,
            &self.memberships.current().outgoing_voters,
            |id| self.votes.get(&id).copied(),
        )
    }

    fn on_election_won(&mut self, pre_vote: bool) -> Result<(), Error<C>> {
        if pre_vote {
            self.campaign(false)
        } else {
            self.become_leader()
        }
    }

    fn become_leader(&mut self) -> Result<(), Error<C>> {
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let last = self.log.last_index()?;
        for peer in self.memberships.current().replicas() {
            if peer != self.id {
                self.progress.insert(peer, Progress::new(last + 1));
            }
        }
        self.self_match = self.log.stable_last_index()?;
        tracing::debug!(id = ?self.id, term, "became leader");
        // Raft §5.4.2: a blank entry of the new term lets the leader commit everything before it.
        self.append_as_leader(vec![EntryPayload::Blank])?;
        Ok(())
    }

    // ----- input -----

    /// Handles a message from `from`.
    ///
    /// Stale messages are dropped silently, as the paper prescribes. A message that no honest peer could
    /// send returns an error and changes nothing that matters; it never panics.
    pub fn step(&mut self, from: C::NodeId, message: Message<C>) -> Result<(), Error<C>> {
        if from == self.id {
            return Err(Error::ProtocolViolation {
                from,
                term: message.term,
                reason: "a message from this replica's own id".into(),
            });
        }
        if message.term > self.term {
            match &message.rpc {
                Rpc::VoteRequest(req) => {
                    // Within an election timeout of hearing from our leader, a vote request comes from a
                    // disruptive node. With lease reads, also within an election timeout of starting: a
                    // restarted replica does not remember when it last acknowledged a leader's
                    // heartbeat, and that leader may be serving lease reads relying on it.
                    let timeout = self.election_timeout();
                    let recently_started =
                        self.config.read_mode == ReadMode::Lease && self.ticks < u64::from(timeout);
                    let in_lease = self.config.check_quorum
                        && self.election_elapsed < timeout
                        && (self.leader.is_some() || recently_started);
                    if in_lease && !req.leader_transfer {
                        // Our leader is alive: a vote request now comes from a disruptive node.
                        tracing::trace!(id = ?self.id, ?from, "ignoring vote request within leader lease");
                        return Ok(());
                    }
                    if !req.pre_vote {
                        self.become_follower(message.term, None);
                    }
                }
                Rpc::VoteResponse(resp) if resp.pre_vote && resp.granted => {
                    // A granted pre-vote carries the term we would campaign in; nothing to adopt.
                }
                Rpc::AppendRequest(_) | Rpc::Heartbeat(_) | Rpc::InstallSnapshot(_) => {
                    self.become_follower(message.term, Some(from));
                }
                _ => self.become_follower(message.term, None),
            }
        } else if message.term < self.term {
            return self.step_stale(from, message);
        }

        match message.rpc {
            Rpc::VoteRequest(req) => self.handle_vote_request(from, message.term, req),
            Rpc::VoteResponse(resp) => self.handle_vote_response(from, message.term, resp),
            Rpc::AppendRequest(req) => self.handle_append_request(from, req),
            Rpc::AppendResponse(resp) => self.handle_append_response(from, resp),
            Rpc::Heartbeat(hb) => self.handle_heartbeat(from, hb),
            Rpc::HeartbeatResponse(resp) => self.handle_heartbeat_response(from, resp),
            Rpc::TimeoutNow => self.handle_timeout_now(from),
            Rpc::InstallSnapshot(chunk) => self.handle_install_snapshot(from, *chunk),
            Rpc::SnapshotResponse(resp) => self.handle_snapshot_response(from, resp),
        }
    }

    /// A message from an older term.
    fn step_stale(&mut self, from: C::NodeId, message: Message<C>) -> Result<(), Error<C>> {
        match message.rpc {
            Rpc::AppendRequest(_) | Rpc::Heartbeat(_) | Rpc::InstallSnapshot(_)
                if self.config.check_quorum || self.config.pre_vote =>
            {
                // A deposed leader that was cut off may never learn of the new term otherwise: with
                // pre-vote or check-quorum, nobody raises the term to reach it. Tell it.
                self.send_after_persist(
                    from,
                    Rpc::HeartbeatResponse(HeartbeatResponse { read_seq: 0 }),
                );
            }
            Rpc::VoteRequest(req) => {
                // Raft §5.1: reject with the current term. A candidate nobody else talks to (it may be in
                // no one else's configuration) would otherwise never learn the term and campaign forever.
                self.send_after_persist(
                    from,
                    Rpc::VoteResponse(VoteResponse {
                        pre_vote: req.pre_vote,
                        granted: false,
                    }),
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn send_after_persist(&mut self, to: C::NodeId, rpc: Rpc<C>) {
        self.messages_after_persist.push(Envelope {
            to,
            message: Message {
                term: self.term,
                rpc,
            },
        });
    }

    fn send_now(&mut self, to: C::NodeId, rpc: Rpc<C>) {
        self.messages.push(Envelope {
            to,
            message: Message {
                term: self.term,
                rpc,
            },
        });
    }

    fn handle_vote_request(
        &mut self,
        from: C::NodeId,
        term: Term,
        req: VoteRequest,
    ) -> Result<(), Error<C>> {
        // A repeated request from the candidate we voted for, or a fresh vote, or a pre-vote for a later
        // term. The latter changes nothing here.
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (req.pre_vote && term > self.term);
        let granted = can_vote && self.log.is_up_to_date(req.last_log)?;
        let response_term = if req.pre_vote && granted {
            term
        } else {
            self.term
        };
        if granted && !req.pre_vote {
            self.vote = Some(from);
            self.election_elapsed = 0;
        }
        tracing::trace!(id = ?self.id, ?from, term, granted, pre_vote = req.pre_vote, "vote request");
        self.messages_after_persist.push(Envelope {
            to: from,
            message: Message {
                term: response_term,
                rpc: Rpc::VoteResponse(VoteResponse {
                    pre_vote: req.pre_vote,
                    granted,
                }),
            },
        });
        Ok(())
    }

    fn handle_vote_response(
        &mut self,
        from: C::NodeId,
        term: Term,
        resp: VoteResponse,
    ) -> Result<(), Error<C>> {
        let expecting = match self.role {
            Role::PreCandidate => resp.pre_vote && (!resp.granted || term == self.term + 1),
            Role::Candidate => !resp.pre_vote && term == self.term,
            _ => false,
        };
        if !expecting {
            return Ok(()); // a late answer to an election that is over
        }
        if !self.memberships.current().is_voter(from) {
            return self.unknown_or_stale(from);
        }
        self.votes.insert(from, resp.granted);
        match self.tally_votes() {
            VoteResult::Won => self.on_election_won(resp.pre_vote),
            VoteResult::Lost => {
                self.become_follower(self.term, None);
                Ok(())
            }
            VoteResult::Pending => Ok(()),
        }
    }

    fn handle_append_request(
        &mut self,
        from: C::NodeId,
        req: AppendRequest<C>,
    ) -> Result<(), Error<C>> {
        if self.role == Role::Leader {
            return Err(Error::ProtocolViolation {
                from,
                term: self.term,
                reason: "a second leader in this replica's term".into(),
            });
        }
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;

        let committed = self.log.committed;
        if req.prev.index < committed {
            // Everything up to the commit index matches the leader (Leader Completeness).
            self.send_after_persist(
                from,
                Rpc::AppendResponse(AppendResponse::Accepted {
                    match_index: committed,
                }),
            );
            return Ok(());
        }
        if !self.log.matches(req.prev)? {
            let hint = self
                .log
                .find_conflict_by_term(req.prev.index, req.prev.term)?;
            self.send_after_persist(
                from,
                Rpc::AppendResponse(AppendResponse::Rejected {
                    rejected: req.prev,
                    hint,
                }),
            );
            return Ok(());
        }
        if let Some(bad) = req.entries.iter().enumerate().find(|(i, e)| {
            e.index != req.prev.index + 1 + *i as Index
                || e.term > self.term
                || e.term < req.prev.term
        }) {
            return Err(Error::ProtocolViolation {
                from,
                term: self.term,
                reason: format!("malformed entries in append at position {}", bad.0),
            });
        }
        let last_new = req.prev.index + req.entries.len() as Index;
        if let Some(conflict) = self.log.find_conflict(&req.entries)? {
            if conflict <= committed {
                return Err(Error::ProtocolViolation {
                    from,
                    term: self.term,
                    reason: format!("append conflicts with committed entry {conflict}"),
                });
            }
            let skip = (conflict - req.prev.index - 1) as usize;
            let mut entries = req.entries;
            let new = if skip == 0 {
                entries
            } else {
                entries.split_off(skip)
            };
            self.memberships.truncate_from(conflict);
            let memberships = memberships_in(&new);
            self.log.append(new);
            self.adopt_memberships(memberships)?;
        }
        self.log.commit_to(req.commit.min(last_new))?;
        if self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|i| i.meta.last.index <= self.log.committed)
        {
            self.incoming_snapshot = None; // the log caught up past it: a half-received snapshot is moot
        }
        self.send_after_persist(
            from,
            Rpc::AppendResponse(AppendResponse::Accepted {
                match_index: last_new,
            }),
        );
        Ok(())
    }

    /// Membership entries take effect as soon as they are in the log (Raft thesis §4.1).
    fn adopt_memberships(
        &mut self,
        memberships: Vec<(Index, Membership<C>)>,
    ) -> Result<(), Error<C>> {
        let changed = !memberships.is_empty();
        for (index, m) in memberships {
            self.memberships.push(index, m);
        }
        if changed && self.role == Role::Leader {
            self.sync_progress_with_membership()?;
        }
        Ok(())
    }

    /// Leader: tracks progress for exactly the replicas of the current configuration.
    fn sync_progress_with_membership(&mut self) -> Result<(), Error<C>> {
        let replicas = self.memberships.current().replicas();
        self.progress.retain(|id, _| replicas.contains(id));
        let last = self.log.last_index()?;
        for peer in replicas {
            if peer != self.id && !self.progress.contains_key(&peer) {
                // A new replica starts by probing from the entry that added it.
                self.progress.insert(peer, Progress::new(last.max(1)));
            }
        }
        Ok(())
    }

    fn handle_append_response(
        &mut self,
        from: C::NodeId,
        resp: AppendResponse,
    ) -> Result<(), Error<C>> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let last = self.log.last_index()?;
        let first = self.log.first_index()?;
        let Some(pr) = self.progress.get_mut(&from) else {
            return self.unknown_or_stale(from);
        };
        pr.recent_active = true;
        match resp {
            AppendResponse::Rejected { rejected, hint } => {
                // Skip the follower's whole conflicting term, and ours: one round trip per term.
                let hint = if hint.index > last {
                    LogId::new(hint.term, last)
                } else {
                    hint
                };
                let match_hint = self.log.find_conflict_by_term(hint.index, hint.term)?;
                let pr = self.progress.get_mut(&from).expect("checked above");
                if pr.maybe_decrease_to(rejected.index, match_hint.index) {
                    tracing::trace!(id = ?self.id, ?from, next = pr.next_index, "append rejected; backtracking");
                    self.send_append(from, true)?;
                }
            }
            AppendResponse::Accepted { match_index } => {
                if match_index > last {
                    return Err(Error::ProtocolViolation {
                        from,
                        term: self.term,
                        reason: format!("acknowledged index {match_index} past our last {last}"),
                    });
                }
                let max_inflight = self.config.max_inflight_appends;
                let was_paused = pr.is_paused(max_inflight);
                if !pr.maybe_update(match_index) {
                    return Ok(());
                }
                match pr.state {
                    ProgressState::Probe => pr.become_replicate(),
                    // Installed a snapshot (or caught up otherwise): the log can serve it again.
                    ProgressState::NeedsSnapshot { .. } if match_index + 1 >= first => {
                        pr.become_replicate()
                    }
                    _ => {}
                }
                if self.maybe_commit()? {
                    self.pending_commit_broadcast = self.config.broadcast_commit;
                } else if was_paused {
                    self.send_append(from, false)?;
                }
                while self.send_append(from, false)? {}
                if self.config.broadcast_commit {
                    // The broadcast may have skipped this follower while its window was full.
                    let committed = self.log.committed;
                    let behind = self
                        .progress
                        .get(&from)
                        .is_some_and(|p| p.commit_sent < committed.min(p.match_index));
                    if behind {
                        self.send_append(from, true)?;
                    }
                }
                if self.transferee == Some(from) && match_index == last {
                    self.send_now(from, Rpc::TimeoutNow);
                }
            }
        }
        Ok(())
    }

    fn handle_heartbeat(&mut self, from: C::NodeId, hb: Heartbeat) -> Result<(), Error<C>> {
        if self.role == Role::Leader {
            return Err(Error::ProtocolViolation {
                from,
                term: self.term,
                reason: "a second leader in this replica's term".into(),
            });
        }
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        self.log.commit_to(hb.commit)?;
        self.send_after_persist(
            from,
            Rpc::HeartbeatResponse(HeartbeatResponse {
                read_seq: hb.read_seq,
            }),
        );
        Ok(())
    }

    fn handle_heartbeat_response(
        &mut self,
        from: C::NodeId,
        resp: HeartbeatResponse,
    ) -> Result<(), Error<C>> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let last = self.log.last_index()?;
        let Some(pr) = self.progress.get_mut(&from) else {
            return self.unknown_or_stale(from);
        };
        // A lost probe or chunk is retried after half an election timeout, not at every heartbeat answer.
        let retry_after = u64::from(self.config.election_timeout_min_ticks / 2).max(1);
        pr.on_heartbeat_response(self.config.max_inflight_appends, self.ticks, retry_after);
        if resp.read_seq < self.next_read_id {
            pr.read_seq = pr.read_seq.max(resp.read_seq);
        }
        if pr.match_index < last {
            // Sent even without new entries: a follower that lost appends answers with a rejection that
            // tells us where to resume.
            self.send_append(from, true)?;
        }
        self.confirm_reads();
        Ok(())
    }

    fn handle_install_snapshot(
        &mut self,
        from: C::NodeId,
        chunk: SnapshotChunk<C>,
    ) -> Result<(), Error<C>> {
        if self.role == Role::Leader {
            return Err(Error::ProtocolViolation {
                from,
                term: self.term,
                reason: "a second leader in this replica's term".into(),
            });
        }
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        let last = chunk.meta.last;
        let accepted = |match_index| Rpc::AppendResponse(AppendResponse::Accepted { match_index });
        if last.index <= self.log.committed {
            // Older than what we know is committed: nothing to install (the leader learns where we are).
            self.incoming_snapshot = None;
            self.send_after_persist(from, accepted(self.log.committed));
            return Ok(());
        }
        if self.log.matches(last)? {
            // Our log already holds what the snapshot covers; it is committed, so adopt that.
            self.incoming_snapshot = None;
            self.log.commit_to(last.index)?;
            self.send_after_persist(from, accepted(last.index));
            return Ok(());
        }
        let end = chunk.offset.checked_add(chunk.data.len() as u64);
        if end.is_none_or(|end| end > chunk.total_len) {
            return Err(Error::ProtocolViolation {
                from,
                term: self.term,
                reason: "snapshot chunk past the snapshot's length".into(),
            });
        }
        let chunk_offset = chunk.offset;
        let progress = |next_offset| {
            Rpc::SnapshotResponse(SnapshotResponse {
                snapshot: last,
                chunk_offset,
                result: SnapshotProgress::Continue { next_offset },
            })
        };
        let same = self.incoming_snapshot.as_ref().is_some_and(|i| {
            i.meta.last == last && i.total_len == chunk.total_len && i.checksum == chunk.checksum
        });
        if !same {
            if chunk.offset != 0 {
                self.send_after_persist(from, progress(0));
                return Ok(());
            }
            self.incoming_snapshot = Some(Box::new(IncomingSnapshot {
                meta: chunk.meta.clone(),
                buf: Vec::new(),
                total_len: chunk.total_len,
                checksum: chunk.checksum,
            }));
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            return Ok(());
        };
        let received = incoming.buf.len() as u64;
        if chunk.offset != received {
            // Out of order (a chunk was lost or duplicated): tell the leader where to resume.
            self.send_after_persist(from, progress(received));
            return Ok(());
        }
        incoming.buf.extend_from_slice(&chunk.data);
        let received = incoming.buf.len() as u64;
        if received < incoming.total_len {
            self.send_after_persist(from, progress(received));
            return Ok(());
        }
        let Some(incoming) = self.incoming_snapshot.take().map(|b| *b) else {
            return Ok(());
        };
        if checksum::crc32(&incoming.buf) != incoming.checksum {
            tracing::warn!(id = ?self.id, ?from, ?last, "snapshot checksum mismatch; restarting transfer");
            self.send_after_persist(
                from,
                Rpc::SnapshotResponse(SnapshotResponse {
                    snapshot: last,
                    chunk_offset,
                    result: SnapshotProgress::ChecksumMismatch,
                }),
            );
            return Ok(());
        }
        tracing::debug!(id = ?self.id, ?from, ?last, "snapshot received; installing");
        self.memberships
            .reset(last.index, incoming.meta.membership.clone());
        self.log.restore(Snapshot {
            meta: incoming.meta,
            data: C::Snapshot::from_bytes(bytes::Bytes::from(incoming.buf)),
        });
        // Acknowledged only once the snapshot is durable (after-persist list).
        self.send_after_persist(from, accepted(last.index));
        Ok(())
    }

    fn handle_snapshot_response(
        &mut self,
        from: C::NodeId,
        resp: SnapshotResponse,
    ) -> Result<(), Error<C>> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return self.unknown_or_stale(from);
        };
        pr.recent_active = true;
        let ProgressState::NeedsSnapshot {
            snapshot,
            next_offset: in_flight,
        } = pr.state
        else {
            return Ok(()); // the transfer is over
        };
        if resp.snapshot != snapshot || !pr.probe_sent || resp.chunk_offset != in_flight {
            return Ok(()); // about an older snapshot, or not about the chunk in flight
        }
        let next_offset = match resp.result {
            SnapshotProgress::Continue { next_offset } => next_offset,
            SnapshotProgress::ChecksumMismatch => 0,
        };
        pr.state = ProgressState::NeedsSnapshot {
            snapshot,
            next_offset,
        };
        pr.probe_sent = false;
        self.send_snapshot_chunk(from)
    }

    /// An answer from a node this leader tracks no progress for: a member's answer is merely late (the
    /// leader hibernated, or the membership changed since), anyone else's is an error.
    fn unknown_or_stale(&self, from: C::NodeId) -> Result<(), Error<C>> {
        if self.memberships.current().contains(from) {
            Ok(())
        } else {
            Err(Error::UnknownSender { from })
        }
    }

    fn handle_timeout_now(&mut self, from: C::NodeId) -> Result<(), Error<C>> {
        if self.role == Role::Leader || !self.is_promotable() {
            return Ok(());
        }
        tracing::debug!(id = ?self.id, ?from, "leadership transferred to us; campaigning now");
        self.campaign(true)
    }

    // ----- proposals -----

    /// Proposes one command. Returns the log position it will occupy if it commits; the command is
    /// committed when an entry with that index *and term* is handed out in `Persisted::committed`.
    pub fn propose(&mut self, data: C::Data) -> Result<LogId, Error<C>> {
        let (first, _) = self.propose_batch(std::iter::once(data))?;
        Ok(first)
    }

    /// Proposes several commands at once; returns the positions of the first and the last.
    pub fn propose_batch(
        &mut self,
        data: impl IntoIterator<Item = C::Data>,
    ) -> Result<(LogId, LogId), Error<C>> {
        self.check_can_propose()?;
        let payloads: Vec<EntryPayload<C>> = data.into_iter().map(EntryPayload::Normal).collect();
        let size: usize = payloads
            .iter()
            .map(|p| match p {
                EntryPayload::Normal(d) => d.size() + ENTRY_OVERHEAD_BYTES,
                _ => ENTRY_OVERHEAD_BYTES,
            })
            .sum();
        let limit = self.config.max_uncommitted_bytes;
        if self.uncommitted_bytes > 0 && self.uncommitted_bytes + size > limit {
            return Err(Error::UncommittedLimit { limit });
        }
        self.append_as_leader(payloads)
    }

    fn check_can_propose(&self) -> Result<(), Error<C>> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee.is_some() {
            return Err(Error::LeadershipTransferInProgress);
        }
        Ok(())
    }

    fn append_as_leader(
        &mut self,
        payloads: Vec<EntryPayload<C>>,
    ) -> Result<(LogId, LogId), Error<C>> {
        let last = self.log.last_index()?;
        let term = self.term;
        let entries: Vec<Entry<C>> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Entry {
                term,
                index: last + 1 + i as Index,
                payload,
            })
            .collect();
        let Some(first) = entries.first().map(Entry::log_id) else {
            let id = LogId::new(self.log.term(last)?, last);
            return Ok((id, id));
        };
        self.uncommitted_bytes += entries.iter().map(Entry::size).sum::<usize>();
        let last_id = entries.last().map(Entry::log_id).unwrap_or(first);
        let memberships = memberships_in(&entries);
        self.log.append(entries);
        self.adopt_memberships(memberships)?;
        self.pending_append = true;
        // A group of one commits as soon as its own write is durable; nothing else to wait for.
        Ok((first, last_id))
    }

    /// Recomputes the commit index from the match indexes. Returns true if it moved.
    fn maybe_commit(&mut self) -> Result<bool, Error<C>> {
        let me = self.id;
        let self_match = self.self_match;
        let progress = &self.progress;
        let index = joint_committed(
            &self.memberships.current().voters,
            &self.memberships.current().outgoing_voters,
            |id| {
                if id == me {
                    self_match
                } else {
                    progress.get(&id).map_or(0, |p| p.match_index)
                }
            },
        );
        if index == Index::MAX {
            return Ok(false); // no voters at all
        }
        let advanced = self.log.maybe_commit(index, self.term)?;
        if advanced {
            self.on_commit_in_term();
            self.on_membership_committed()?;
        }
        Ok(advanced)
    }

    /// Leader: once the current configuration is committed, leave a joint configuration automatically,
    /// or step down if this leader is no longer a voter.
    fn on_membership_committed(&mut self) -> Result<(), Error<C>> {
        if self.role != Role::Leader || self.memberships.has_uncommitted(self.log.committed) {
            return Ok(());
        }
        let current = self.memberships.current();
        if current.is_joint() {
            let leave = Membership {
                voters: current.voters.clone(),
                outgoing_voters: BTreeSet::new(),
                learners: current.learners.clone(),
            };
            tracing::debug!(id = ?self.id, "joint configuration committed; leaving it");
            self.append_as_leader(vec![EntryPayload::Membership(Box::new(leave))])?;
        } else if !current.is_voter(self.id) {
            tracing::debug!(id = ?self.id, "removed from the voters; stepping down");
            // Tell the others about the commit before going quiet, so that they elect a successor soon.
            let peers: Vec<C::NodeId> = self.progress.keys().copied().collect();
            for to in peers {
                self.send_append(to, true)?;
            }
            self.become_follower(self.term, None);
        }
        Ok(())
    }

    // ----- membership -----

    /// Proposes a change of membership. A change of at most one voter takes effect directly; larger
    /// changes go through joint consensus, which the leader leaves on its own once the joint
    /// configuration commits. Only one change may be in flight.
    pub fn change_membership(&mut self, change: MembershipChange<C>) -> Result<LogId, Error<C>> {
        self.check_can_propose()?;
        if !self.committed_in_current_term()? {
            return Err(Error::LeaderNotReady);
        }
        if self.memberships.has_uncommitted(self.log.committed)
            || self.memberships.current().is_joint()
        {
            return Err(Error::MembershipChangeInProgress);
        }
        let current = self.memberships.current();
        let invalid = |reason: &str| Error::InvalidMembershipChange {
            reason: reason.to_string(),
        };
        let (mut voters, mut learners) = (current.voters.clone(), current.learners.clone());
        match change {
            MembershipChange::AddVoter(id) => {
                if voters.contains(&id) {
                    return Err(invalid("the node is already a voter"));
                }
                learners.remove(&id);
                voters.insert(id);
            }
            MembershipChange::AddLearner(id) => {
                if learners.contains(&id) {
                    return Err(invalid("the node is already a learner"));
                }
                voters.remove(&id);
                learners.insert(id);
            }
            MembershipChange::RemoveNode(id) => {
                if !voters.remove(&id) && !learners.remove(&id) {
                    return Err(invalid("the node is not a member"));
                }
            }
            MembershipChange::Replace {
                voters: v,
                learners: l,
            } => {
                voters = v;
                learners = l;
            }
        }
        if voters.is_empty() {
            return Err(invalid("no voter would remain"));
        }
        if !voters.is_disjoint(&learners) {
            return Err(invalid("a node cannot be both a voter and a learner"));
        }
        let outgoing_voters = if current.voters.symmetric_difference(&voters).count() <= 1 {
            BTreeSet::new()
        } else {
            current.voters.clone()
        };
        let next = Membership {
            voters,
            outgoing_voters,
            learners,
        };
        if next == *current {
            return Err(invalid("the configuration would not change"));
        }
        let (id, _) = self.append_as_leader(vec![EntryPayload::Membership(Box::new(next))])?;
        Ok(id)
    }

    // ----- leadership transfer -----

    /// Asks the leader to hand leadership to `target`: the leader brings it up to date, then tells it to
    /// campaign at once. Proposals are refused meanwhile; the transfer is abandoned after an election
    /// timeout.
    pub fn transfer_leadership(&mut self, target: C::NodeId) -> Result<(), Error<C>> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.id || self.transferee == Some(target) {
            return Ok(());
        }
        if !self.memberships.current().is_voter(target) {
            return Err(Error::InvalidTransferTarget { target });
        }
        self.transferee = Some(target);
        self.transfer_elapsed = 0;
        // The transferee will campaign with `leader_transfer`, which voters grant inside their lease.
        self.forbid_lease();
        // Reset the check-quorum clock so that the transfer has a full election timeout to finish.
        self.election_elapsed = 0;
        let last = self.log.last_index()?;
        if self.progress.get(&target).map(|p| p.match_index) == Some(last) {
            self.send_now(target, Rpc::TimeoutNow);
        } else {
            self.send_append(target, true)?;
        }
        Ok(())
    }

    // ----- reads -----

    /// Starts a linearizable read. The returned id comes back in `Persisted::read_states` with the index the
    /// state machine must reach before serving the read, or in `Persisted::aborted_reads` if this replica
    /// loses leadership first.
    pub fn read_index(&mut self) -> Result<ReadId, Error<C>> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        let id = ReadId(self.next_read_id);
        self.next_read_id += 1;
        if self.committed_in_current_term()? {
            self.start_read(id);
        } else {
            // Our commit index may lag the previous leader's until we commit in our own term.
            self.reads_mut().awaiting_commit.push(id);
        }
        Ok(id)
    }

    fn committed_in_current_term(&self) -> Result<bool, Error<C>> {
        Ok(self.log.term_if_present(self.log.committed)? == Some(self.term))
    }

    fn start_read(&mut self, id: ReadId) {
        let index = self.log.committed;
        let me = self.id;
        let current = self.memberships.current();
        let quorum_is_me = current
            .voters
            .iter()
            .chain(current.outgoing_voters.iter())
            .all(|id| *id == me);
        let lease_holds = self.config.read_mode == ReadMode::Lease
            && self
                .lease
                .as_ref()
                .is_some_and(|l| !l.forbidden && self.ticks < l.until);
        if quorum_is_me || lease_holds {
            self.reads_mut()
                .confirmed
                .push_back(ReadState { id, index });
        } else {
            self.reads_mut()
                .awaiting_quorum
                .push_back(PendingRead { id, index });
            self.pending_read_broadcast = true;
        }
    }

    fn reads_mut(&mut self) -> &mut Reads {
        self.reads.get_or_insert_with(Box::default)
    }

    fn on_commit_in_term(&mut self) {
        let Some(reads) = self.reads.as_mut() else {
            return;
        };
        if reads.awaiting_commit.is_empty() {
            return;
        }
        for id in std::mem::take(&mut reads.awaiting_commit) {
            self.start_read(id);
        }
        // Answers to heartbeats sent after these reads arrived may already confirm them.
        self.confirm_reads();
    }

    /// The newest heartbeat sequence number a quorum has echoed in this term.
    fn quorum_acknowledged_seq(&self) -> u64 {
        let me = self.id;
        let newest = self.next_read_id - 1;
        let progress = &self.progress;
        joint_committed(
            &self.memberships.current().voters,
            &self.memberships.current().outgoing_voters,
            |id| {
                if id == me {
                    newest
                } else {
                    progress.get(&id).map_or(0, |p| p.read_seq)
                }
            },
        )
    }

    /// Extends the lease: no voter that acknowledged a heartbeat will vote for anyone else within an
    /// election timeout of *receiving* it, so the lease runs from when it was *sent* (one tick of margin).
    fn extend_lease(&mut self, confirmed: u64) {
        let duration = u64::from(self.election_timeout().saturating_sub(1));
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        let mut anchor = None;
        while let Some(&(seq, sent)) = lease.sent.front() {
            if seq > confirmed {
                break;
            }
            anchor = Some(sent);
            lease.sent.pop_front();
        }
        if let Some(sent) = anchor {
            lease.until = lease.until.max(sent + duration);
        }
    }

    fn forbid_lease(&mut self) {
        if self.config.read_mode == ReadMode::Lease {
            self.lease.get_or_insert_with(Box::default).forbidden = true;
        }
    }

    /// Releases reads whose id a quorum has echoed in heartbeat answers of this term, and extends the
    /// lease.
    fn confirm_reads(&mut self) {
        let waiting = self
            .reads
            .as_ref()
            .is_some_and(|r| !r.awaiting_quorum.is_empty());
        if !waiting && self.lease.is_none() {
            return;
        }
        let confirmed = self.quorum_acknowledged_seq();
        self.extend_lease(confirmed);
        let Some(reads) = self.reads.as_mut() else {
            return;
        };
        while let Some(read) = reads.awaiting_quorum.front() {
            if read.id.0 > confirmed {
                break;
            }
            reads.confirmed.push_back(ReadState {
                id: read.id,
                index: read.index,
            });
            reads.awaiting_quorum.pop_front();
        }
    }

    // ----- sending -----

    /// Sends the next append to `to` if its progress allows. With `send_if_empty`, sends even when there
    /// are no new entries (to carry the commit index or probe). Returns true if a message was sent.
    fn send_append(&mut self, to: C::NodeId, send_if_empty: bool) -> Result<bool, Error<C>> {
        let max_inflight = self.config.max_inflight_appends;
        let Some(pr) = self.progress.get(&to) else {
            return Ok(false);
        };
        if pr.is_paused(max_inflight) {
            return Ok(false);
        }
        if let ProgressState::NeedsSnapshot { .. } = pr.state {
            self.send_snapshot_chunk(to)?;
            return Ok(false);
        }
        let next = pr.next_index;
        let prev_index = next - 1;
        let prev_term = match self.log.term(prev_index) {
            Ok(t) => t,
            Err(StorageError::Compacted { .. }) => {
                self.start_snapshot(to)?;
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        let last = self.log.last_index()?;
        let entries = match self.log.slice(next, last + 1, self.config.max_append_bytes) {
            Ok(e) => e,
            Err(StorageError::Compacted { .. }) => {
                self.start_snapshot(to)?;
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        if entries.is_empty() && !send_if_empty {
            return Ok(false);
        }
        let sent_last = entries.last().map(|e| e.index);
        let commit = self.log.committed;
        let now = self.ticks;
        let carried = commit.min(sent_last.unwrap_or(prev_index));
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent_append(sent_last, max_inflight, now);
            pr.commit_sent = pr.commit_sent.max(carried);
        }
        self.send_now(
            to,
            Rpc::AppendRequest(AppendRequest {
                prev: LogId::new(prev_term, prev_index),
                entries,
                commit,
            }),
        );
        Ok(sent_last.is_some())
    }

    /// The entries `to` needs are compacted: switch it to snapshot catch-up and send the first chunk.
    fn start_snapshot(&mut self, to: C::NodeId) -> Result<(), Error<C>> {
        let snapshot = self.storage_snapshot()?;
        if let Some(pr) = self.progress.get_mut(&to) {
            tracing::debug!(id = ?self.id, ?to, snapshot = ?snapshot.meta.last, "follower is behind the compacted log; sending a snapshot");
            pr.become_needs_snapshot(snapshot.meta.last);
        }
        self.send_snapshot_chunk(to)
    }

    fn storage_snapshot(&self) -> Result<Snapshot<C>, Error<C>> {
        self.log
            .storage
            .snapshot()?
            .ok_or_else(|| Error::CorruptState {
                reason: "the log is compacted but storage holds no snapshot".into(),
            })
    }

    /// Sends the next chunk of the snapshot `to` is receiving, one chunk in flight at a time.
    fn send_snapshot_chunk(&mut self, to: C::NodeId) -> Result<(), Error<C>> {
        let Some(pr) = self.progress.get(&to) else {
            return Ok(());
        };
        let ProgressState::NeedsSnapshot {
            snapshot: wanted,
            mut next_offset,
        } = pr.state
        else {
            return Ok(());
        };
        if pr.probe_sent {
            return Ok(());
        }
        let snapshot = self.storage_snapshot()?;
        let bytes = snapshot.data.to_bytes();
        let id = snapshot.meta.last;
        if id != wanted {
            next_offset = 0; // storage has a newer snapshot: send that one instead
        }
        let checksum = match self.snapshot_checksum.as_deref() {
            Some(&(cached, sum)) if cached == id => sum,
            _ => {
                let sum = checksum::crc32(&bytes);
                self.snapshot_checksum = Some(Box::new((id, sum)));
                sum
            }
        };
        let total_len = bytes.len() as u64;
        let start = next_offset.min(total_len);
        let end = (start + self.config.max_snapshot_chunk_bytes as u64).min(total_len);
        let now = self.ticks;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.state = ProgressState::NeedsSnapshot {
                snapshot: id,
                next_offset: start,
            };
            pr.pause(now);
        }
        self.send_now(
            to,
            Rpc::InstallSnapshot(Box::new(SnapshotChunk {
                meta: snapshot.meta,
                offset: start,
                data: bytes.slice(start as usize..end as usize),
                total_len,
                checksum,
            })),
        );
        Ok(())
    }

    /// The transport could not reach `peer`: stop streaming to it optimistically and probe instead.
    pub fn report_unreachable(&mut self, peer: C::NodeId) {
        if let Some(pr) = self.progress.get_mut(&peer) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    /// The metadata a snapshot taken now at the applied index must carry: the applied entry's id and the
    /// membership in force there. Take the state machine's snapshot at exactly that index, store it,
    /// then compact the log up to it. While a snapshot received from the leader waits to be installed,
    /// there is nothing worth compacting: `Error::SnapshotInstallPending`.
    pub fn compaction_point(&self) -> Result<SnapshotMeta<C>, Error<C>> {
        if self.log.has_pending_snapshot() {
            // The whole log is about to be replaced by a snapshot newer than anything applied here.
            return Err(Error::SnapshotInstallPending);
        }
        let applied = self.log.applied;
        Ok(SnapshotMeta {
            last: LogId::new(self.log.term(applied)?, applied),
            membership: self.memberships.at(applied).clone(),
        })
    }

    fn broadcast_heartbeat(&mut self) {
        // Every broadcast gets its own sequence number: reads issued before it are confirmed by its
        // answers, and in lease mode its send tick anchors the lease.
        let read_seq = self.next_read_id;
        self.next_read_id += 1;
        if self.config.read_mode == ReadMode::Lease && self.role == Role::Leader {
            let now = self.ticks;
            let lease = self.lease.get_or_insert_with(Box::default);
            lease.sent.push_back((read_seq, now));
        }
        // A heartbeat not yet taken (a slow write holds the Ready back) is superseded by this one: its
        // answers confirm everything the older one would have (read sequence numbers only grow).
        self.messages
            .retain(|e| !matches!(e.message.rpc, Rpc::Heartbeat(_)));
        let commit = self.log.committed;
        let peers: Vec<(C::NodeId, Index)> = self
            .progress
            .iter()
            .map(|(id, p)| (*id, p.match_index))
            .collect();
        for (to, match_index) in peers {
            if let Some(pr) = self.progress.get_mut(&to) {
                pr.commit_sent = pr.commit_sent.max(commit.min(match_index));
            }
            self.send_now(
                to,
                Rpc::Heartbeat(Heartbeat {
                    commit: commit.min(match_index),
                    read_seq,
                }),
            );
        }
        self.pending_read_broadcast = false;
    }

    fn flush_leader_broadcasts(&mut self) -> Result<(), Error<C>> {
        if self.role != Role::Leader {
            return Ok(());
        }
        if self.pending_append || self.pending_commit_broadcast {
            let send_if_empty = self.pending_commit_broadcast;
            self.pending_append = false;
            self.pending_commit_broadcast = false;
            let peers: Vec<C::NodeId> = self.progress.keys().copied().collect();
            for to in peers {
                let mut first = true;
                while self.send_append(to, send_if_empty && first)? {
                    first = false;
                }
            }
        }
        if self.pending_read_broadcast {
            self.broadcast_heartbeat();
        }
        Ok(())
    }

    // ----- output -----

    /// True if [`ready`](Self::ready) would return work.
    pub fn has_ready(&self) -> bool {
        if self.outstanding_ready.is_some() {
            return false;
        }
        !self.messages.is_empty()
            || !self.messages_after_persist.is_empty()
            || self.log.has_unpersisted()
            || self.log.has_unpersisted_snapshot()
            || self.hard_state() != self.prev_hard_state
            || self.soft_state() != self.prev_soft_state
            || self.pending_append
            || self.pending_commit_broadcast
            || self.pending_read_broadcast
            || self
                .reads
                .as_ref()
                .is_some_and(|r| !r.aborted.is_empty() || !r.confirmed.is_empty())
            || self
                .log
                .applicable_index()
                .is_ok_and(|i| i > self.log.applied)
    }

    /// Collects the work accumulated since the last `Ready`. Returns `None` if there is none, or while a
    /// previous `Ready` has not been advanced (there is at most one outstanding at a time).
    pub fn ready(&mut self) -> Result<Option<Ready<C>>, Error<C>> {
        if self.outstanding_ready.is_some() {
            return Ok(None);
        }
        self.flush_leader_broadcasts()?;

        let snapshot = self.log.take_unpersisted_snapshot().map(Box::new);
        let entries = self.log.take_unpersisted();
        let last_entry = entries.last().map(Entry::log_id);
        let hard_state = self.hard_state();
        let hard_state_changed = hard_state != self.prev_hard_state;
        let term_or_vote_changed = hard_state.term != self.prev_hard_state.term
            || hard_state.vote != self.prev_hard_state.vote;
        let must_sync = !entries.is_empty() || snapshot.is_some() || term_or_vote_changed;
        let soft_state = self.soft_state();
        let soft_state_changed = soft_state != self.prev_soft_state;

        let committed = self
            .log
            .committed_entries_after(self.log.applied, self.config.max_apply_bytes)?;
        let applied_to = committed.last().map(|e| e.index);
        if self.role == Role::Leader {
            let freed: usize = committed.iter().map(Entry::size).sum();
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(freed);
        }
        let readable = applied_to.unwrap_or(self.log.applied);
        let mut read_states = Vec::new();
        let mut aborted_reads = Vec::new();
        if let Some(reads) = self.reads.as_mut() {
            while let Some(read) = reads.confirmed.front() {
                if read.index > readable {
                    break;
                }
                read_states.push(*read);
                reads.confirmed.pop_front();
            }
            aborted_reads = std::mem::take(&mut reads.aborted);
            if reads.is_empty() {
                self.reads = None;
            }
        }

        let nothing = entries.is_empty()
            && snapshot.is_none()
            && !hard_state_changed
            && !soft_state_changed
            && committed.is_empty()
            && read_states.is_empty()
            && aborted_reads.is_empty()
            && self.messages.is_empty()
            && self.messages_after_persist.is_empty();
        if nothing {
            return Ok(None);
        }

        let id = self.next_ready_id;
        self.next_ready_id += 1;
        self.outstanding_ready = Some(id);
        self.prev_hard_state = hard_state.clone();
        self.prev_soft_state = soft_state;
        let snapshot_id = snapshot.as_ref().map(|s| s.meta.last);
        let mut messages = std::mem::take(&mut self.messages);
        let mut messages_after_persist = std::mem::take(&mut self.messages_after_persist);
        if term_or_vote_changed && !messages.is_empty() {
            // Nothing speaks for a term before the term and vote are durable. A leader elected at once
            // (a single voter, say) would otherwise send appends of a term it can forget in a crash,
            // then win the same term again after the restart and send different entries under it.
            messages.append(&mut messages_after_persist);
            messages_after_persist = messages;
            messages = Vec::new();
        }
        Ok(Some(Ready {
            snapshot,
            messages,
            entries,
            hard_state: hard_state_changed.then_some(hard_state),
            must_sync,
            soft_state: soft_state_changed.then_some(soft_state),
            after_persist: Persisted {
                id,
                messages: messages_after_persist,
                committed,
                read_states,
                aborted_reads,
                last_entry,
                snapshot: snapshot_id,
                applied_to,
            },
        }))
    }

    /// Tells the core that the Ready behind `persisted` is done: its writes are durable and its committed
    /// entries applied.
    pub fn advance(&mut self, persisted: Persisted<C>) -> Result<(), Error<C>> {
        if self.outstanding_ready != Some(persisted.id) {
            return Err(Error::StaleAdvance);
        }
        self.outstanding_ready = None;
        if let Some(snapshot) = persisted.snapshot {
            self.log.snapshot_stable(snapshot);
        }
        if let Some(last) = persisted.last_entry {
            self.log.stable_to(last);
        }
        if let Some(applied) = persisted.applied_to {
            self.log.applied = self.log.applied.max(applied);
        }
        self.memberships.prune(self.log.applied);
        if self.role == Role::Leader {
            let durable = self.log.stable_last_index()?;
            if durable > self.self_match {
                self.self_match = durable;
                if self.maybe_commit()? {
                    self.pending_commit_broadcast = self.config.broadcast_commit;
                }
            }
        }
        Ok(())
    }
}

/// The membership entries among `entries` (usually none: this allocates nothing then).
fn memberships_in<C: RaftTypeConfig>(entries: &[Entry<C>]) -> Vec<(Index, Membership<C>)> {
    entries
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some((e.index, (**m).clone())),
            _ => None,
        })
        .collect()
}
