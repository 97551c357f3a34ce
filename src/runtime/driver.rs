//! The driver loop of one node: requests and inbound batches in, one storage batch and one sync per cycle,
//! batches out, entries applied, clients answered.

use std::collections::{BTreeMap, HashMap};
use std::thread::JoinHandle;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use crate::core::MembershipChange;
use crate::error::StorageError;
use crate::groups::{GroupApply, Groups, GroupsError, NodeBatch};
use crate::network::Network;
use crate::ready::ReadId;
use crate::runtime::handle::{GroupStatus, LeaderChange, NodeHandle};
use crate::runtime::{ClientError, InboundQueue, NodeConfig, StateMachineFactory};
use crate::storage::{LogStorage, StateMachine, WriteBatch};
use crate::types::{Index, LogId, Membership, RaftTypeConfig, Snapshot, Term};

type Reply<C, T> = oneshot::Sender<Result<T, ClientError<C>>>;

/// A read query run on the state machine once the read is confirmed (or told why it failed).
pub(crate) type ReadQuery<C, M> = Box<dyn FnOnce(Result<&M, ClientError<C>>) + Send>;

/// A request from a [`NodeHandle`] to the driver.
pub(crate) enum Command<C: RaftTypeConfig, M: StateMachine<C>> {
    Propose {
        group: C::GroupId,
        command: C::Data,
        reply: Reply<C, M::Response>,
    },
    Read {
        group: C::GroupId,
        query: ReadQuery<C, M>,
    },
    CreateGroup {
        group: C::GroupId,
        membership: Membership<C>,
        reply: Reply<C, ()>,
    },
    RemoveGroup {
        group: C::GroupId,
        reply: Reply<C, ()>,
    },
    ChangeMembership {
        group: C::GroupId,
        change: MembershipChange<C>,
        reply: Reply<C, ()>,
    },
    TransferLeadership {
        group: C::GroupId,
        target: C::NodeId,
        reply: Reply<C, ()>,
    },
    Status {
        group: C::GroupId,
        reply: Reply<C, GroupStatus<C>>,
    },
    Statuses {
        reply: Reply<C, Vec<GroupStatus<C>>>,
    },
    Metrics {
        reply: Reply<C, NodeMetrics>,
    },
    AddPeer {
        node: C::NodeId,
        reply: Reply<C, ()>,
    },
    RemovePeer {
        node: C::NodeId,
        reply: Reply<C, ()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Counters of one node's driver since it started (also exported through the `metrics` facade).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    pub groups: u64,
    pub awake_groups: u64,
    /// Log entries written to storage (all groups).
    pub entries_written: u64,
    /// Storage syncs: one per cycle that had something to make durable, whatever the number of groups.
    pub syncs: u64,
    pub entries_applied: u64,
    pub batches_sent: u64,
    /// Batches the transport refused (full queue, unknown peer).
    pub batches_dropped: u64,
    pub snapshots_taken: u64,
    /// Elections this node won (any group).
    pub leader_elections_won: u64,
}

impl NodeMetrics {
    /// Entries made durable per sync: the batching factor of the storage path.
    pub fn entries_per_sync(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.entries_written as f64 / self.syncs as f64
        }
    }
}

/// What a transport hands to the driver.
pub(crate) enum Inbox<C: RaftTypeConfig> {
    Batch(NodeBatch<C>),
    Unreachable(C::NodeId),
}

/// What waits for an entry to be applied.
enum Waiter<C: RaftTypeConfig, M: StateMachine<C>> {
    Proposal(Reply<C, M::Response>),
    Membership(Reply<C, ()>),
}

struct PendingEntry<C: RaftTypeConfig, M: StateMachine<C>> {
    term: Term,
    deadline: u64,
    waiter: Waiter<C, M>,
}

struct PendingRead<C: RaftTypeConfig, M: StateMachine<C>> {
    deadline: u64,
    query: ReadQuery<C, M>,
}

struct GroupRuntime<M> {
    machine: M,
    applied_since_snapshot: u64,
}

/// The receiving end of an [`InboundQueue`], given to [`start_node`].
pub struct InboundReceiver<C: RaftTypeConfig> {
    rx: mpsc::Receiver<Inbox<C>>,
}

impl<C: RaftTypeConfig> InboundQueue<C> {
    /// A queue of `capacity` batches: give the queue to the transport and the receiver to
    /// [`start_node`].
    pub fn new(capacity: usize) -> (InboundQueue<C>, InboundReceiver<C>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (InboundQueue { tx }, InboundReceiver { rx })
    }
}

/// Starts the driver of node `node` on its own thread.
///
/// `peers` are the other nodes (batches from anyone else are refused). Groups found in `storage` are
/// restarted; new ones are created through [`NodeHandle::create_group`].
pub fn start_node<C, L, N, F>(
    node: C::NodeId,
    peers: impl IntoIterator<Item = C::NodeId>,
    config: NodeConfig,
    storage: L,
    network: N,
    factory: F,
    inbound: InboundReceiver<C>,
) -> Result<Node<C, F::Machine>, ClientError<C>>
where
    C: RaftTypeConfig,
    L: LogStorage<C> + Send + 'static,
    N: Network<C>,
    F: StateMachineFactory<C>,
{
    use validator::Validate;
    config
        .validate()
        .map_err(|e| ClientError::Other(format!("invalid node config: {e}")))?;
    let raft = config
        .raft
        .clone()
        .validated()
        .map_err(|e| ClientError::Other(e.to_string()))?;
    // The start time as incarnation: it grows at every start, so that peers can tell a restart from a
    // pause and drop late batches of an earlier life. (A wall clock set back across a restart makes peers
    // drop this node's batches until it restarts again; NTP steps are far smaller than a restart.)
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut groups = Groups::new(node, incarnation, raft, config.groups.clone(), config.seed)
        .map_err(ClientError::from_groups)?;
    for peer in peers {
        groups.add_peer(peer);
    }
    let (commands, command_rx) = mpsc::channel(config.max_pending_requests);
    let (leaders, _) = broadcast::channel(1024);
    let handle = NodeHandle {
        node,
        commands,
        leaders: leaders.clone(),
    };
    let driver = Driver {
        node,
        config,
        groups,
        storage,
        network,
        factory,
        machines: HashMap::new(),
        pending_entries: HashMap::new(),
        pending_reads: HashMap::new(),
        commands: command_rx,
        inbound: inbound.rx,
        leaders,
        stopping: None,
        metrics: NodeMetrics::default(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("tickraft-node-{node:?}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(%e, "cannot start the node's runtime");
                    return;
                }
            };
            let span = tracing::info_span!("tickraft_node", node = ?node);
            let _entered = span.enter();
            runtime.block_on(driver.run());
        })
        .map_err(|e| ClientError::Other(format!("cannot spawn the node thread: {e}")))?;
    Ok(Node { handle, thread })
}

/// A running node: its driver thread and a handle to it.
pub struct Node<C: RaftTypeConfig, M: StateMachine<C>> {
    handle: NodeHandle<C, M>,
    thread: JoinHandle<()>,
}

impl<C: RaftTypeConfig, M: StateMachine<C>> Node<C, M> {
    /// A handle for clients (cheap to clone).
    pub fn handle(&self) -> NodeHandle<C, M> {
        self.handle.clone()
    }

    /// Waits (blocking) for the driver thread to exit, after [`NodeHandle::shutdown`].
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the node's driver thread panicked");
        }
    }
}

struct Driver<C, L, N, F>
where
    C: RaftTypeConfig,
    L: LogStorage<C>,
    F: StateMachineFactory<C>,
{
    node: C::NodeId,
    config: NodeConfig,
    groups: Groups<C, L::View>,
    storage: L,
    network: N,
    factory: F,
    machines: HashMap<C::GroupId, GroupRuntime<F::Machine>>,
    pending_entries: HashMap<(C::GroupId, Index), PendingEntry<C, F::Machine>>,
    pending_reads: HashMap<(C::GroupId, ReadId), PendingRead<C, F::Machine>>,
    commands: mpsc::Receiver<Command<C, F::Machine>>,
    inbound: mpsc::Receiver<Inbox<C>>,
    leaders: broadcast::Sender<LeaderChange<C>>,
    stopping: Option<oneshot::Sender<()>>,
    metrics: NodeMetrics,
}

/// A failure that stops the node: storage or a state machine broke.
#[derive(Debug)]
struct Fatal(String);

impl From<StorageError> for Fatal {
    fn from(e: StorageError) -> Self {
        Fatal(e.to_string())
    }
}

impl<C: RaftTypeConfig> From<GroupsError<C>> for Fatal {
    fn from(e: GroupsError<C>) -> Self {
        Fatal(e.to_string())
    }
}

impl<C, L, N, F> Driver<C, L, N, F>
where
    C: RaftTypeConfig,
    L: LogStorage<C>,
    N: Network<C>,
    F: StateMachineFactory<C>,
{
    async fn run(mut self) {
        if let Err(Fatal(reason)) = self.restart_groups().await {
            tracing::error!(node = ?self.node, %reason, "cannot restart the node's groups");
            self.fail_everything(|| ClientError::Other(reason.clone()));
            return;
        }
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => {
                        if let Err(e) = self.on_command(command).await {
                            break Err(e);
                        }
                    }
                    None => break Ok(()), // every handle is gone
                },
                Some(inbox) = self.inbound.recv() => self.on_inbox(inbox),
                _ = ticker.tick() => {
                    if let Err(e) = self.on_tick() {
                        break Err(e);
                    }
                }
            }
            // Take whatever else is already waiting, so that one cycle serves it all.
            let mut drained = 0;
            while drained < 4096 {
                match self.inbound.try_recv() {
                    Ok(inbox) => self.on_inbox(inbox),
                    Err(_) => break,
                }
                drained += 1;
            }
            while drained < 8192 {
                let Ok(command) = self.commands.try_recv() else {
                    break;
                };
                if let Err(e) = self.on_command(command).await {
                    return self.stop(Err(e)).await;
                }
                drained += 1;
            }
            if let Err(e) = self.cycle().await {
                break Err(e);
            }
            if self.stopping.is_some() {
                break Ok(());
            }
        };
        self.stop(result).await;
    }

    async fn stop(mut self, result: Result<(), Fatal>) {
        match &result {
            Ok(()) => {
                // Finish what is in flight, then make everything durable.
                if let Err(Fatal(reason)) = self.cycle().await {
                    tracing::error!(node = ?self.node, %reason, "final cycle failed");
                }
                if let Err(e) = self.storage.sync() {
                    tracing::error!(node = ?self.node, %e, "final sync failed");
                }
                self.fail_everything(|| ClientError::ShuttingDown);
            }
            Err(Fatal(reason)) => {
                tracing::error!(node = ?self.node, %reason, "node stopped on a fatal error");
                let reason = reason.clone();
                self.fail_everything(|| ClientError::Other(reason.clone()));
            }
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            reject(command, ClientError::ShuttingDown);
        }
        if let Some(reply) = self.stopping.take() {
            let _ = reply.send(());
        }
    }

    fn fail_everything(&mut self, error: impl Fn() -> ClientError<C>) {
        for (_, pending) in self.pending_entries.drain() {
            fail_waiter(pending.waiter, error());
        }
        for (_, read) in self.pending_reads.drain() {
            (read.query)(Err(error()));
        }
    }

    async fn restart_groups(&mut self) -> Result<(), Fatal> {
        for group in self.storage.groups()? {
            self.open_group(group).await?;
        }
        Ok(())
    }

    /// Opens the state machine of a group present in storage and starts its replica.
    async fn open_group(&mut self, group: C::GroupId) -> Result<(), Fatal> {
        let mut machine = self.factory.open(group)?;
        let mut applied = machine.applied_state().await?.applied.index;
        let view = self.storage.view(group);
        if let Some(snapshot) = crate::storage::LogView::snapshot(&view)? {
            if applied < snapshot.meta.last.index {
                // The machine lost state the log no longer holds: restore it from the snapshot.
                applied = snapshot.meta.last.index;
                machine.install_snapshot(snapshot).await?;
            }
        }
        self.groups.create_group(group, view, applied)?;
        self.machines.insert(
            group,
            GroupRuntime {
                machine,
                applied_since_snapshot: 0,
            },
        );
        Ok(())
    }

    fn on_inbox(&mut self, inbox: Inbox<C>) {
        match inbox {
            Inbox::Batch(batch) => match self.groups.step(batch) {
                Ok(rejected) => {
                    for e in rejected {
                        tracing::debug!(node = ?self.node, %e, "message rejected");
                    }
                }
                Err(e) => tracing::warn!(node = ?self.node, %e, "batch refused"),
            },
            Inbox::Unreachable(peer) => self.groups.report_unreachable(peer),
        }
    }

    fn on_tick(&mut self) -> Result<(), Fatal> {
        self.groups.tick()?;
        let now = self.groups.now();
        // Expire what waited too long; a scan every few ticks is cheap next to the work it guards.
        if now % 8 == 0 {
            let expired: Vec<(C::GroupId, Index)> = self
                .pending_entries
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(k, _)| *k)
                .collect();
            for key in expired {
                if let Some(p) = self.pending_entries.remove(&key) {
                    fail_waiter(p.waiter, ClientError::Timeout);
                }
            }
            let expired: Vec<(C::GroupId, ReadId)> = self
                .pending_reads
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(k, _)| *k)
                .collect();
            for key in expired {
                if let Some(read) = self.pending_reads.remove(&key) {
                    (read.query)(Err(ClientError::Timeout));
                }
            }
        }
        Ok(())
    }

    fn deadline(&self) -> u64 {
        self.groups.now() + u64::from(self.config.request_timeout_ticks)
    }

    async fn on_command(&mut self, command: Command<C, F::Machine>) -> Result<(), Fatal> {
        match command {
            Command::Propose {
                group,
                command,
                reply,
            } => match self.groups.propose(group, command) {
                Ok(id) => self.wait_for_entry(group, id, Waiter::Proposal(reply)),
                Err(e) => drop(reply.send(Err(ClientError::from_groups(e)))),
            },
            Command::ChangeMembership {
                group,
                change,
                reply,
            } => match self.groups.change_membership(group, change) {
                Ok(id) => self.wait_for_entry(group, id, Waiter::Membership(reply)),
                Err(e) => drop(reply.send(Err(ClientError::from_groups(e)))),
            },
            Command::Read { group, query } => match self.groups.read_index(group) {
                Ok(id) => {
                    let deadline = self.deadline();
                    self.pending_reads
                        .insert((group, id), PendingRead { deadline, query });
                }
                Err(e) => query(Err(ClientError::from_groups(e))),
            },
            Command::TransferLeadership {
                group,
                target,
                reply,
            } => {
                let result = self
                    .groups
                    .transfer_leadership(group, target)
                    .map_err(ClientError::from_groups);
                let _ = reply.send(result);
            }
            Command::CreateGroup {
                group,
                membership,
                reply,
            } => {
                let result = self.create_group(group, membership).await;
                let _ = reply.send(result);
            }
            Command::RemoveGroup { group, reply } => {
                let result = self.remove_group(group);
                let _ = reply.send(result);
            }
            Command::Status { group, reply } => {
                let result = self
                    .status(group)
                    .ok_or(ClientError::GroupNotFound { group });
                let _ = reply.send(result);
            }
            Command::Statuses { reply } => {
                let mut ids: Vec<C::GroupId> = self.groups.group_ids().collect();
                ids.sort();
                let all = ids.into_iter().filter_map(|g| self.status(g)).collect();
                let _ = reply.send(Ok(all));
            }
            Command::Metrics { reply } => {
                let stats = self.groups.stats();
                let metrics = NodeMetrics {
                    groups: stats.groups as u64,
                    awake_groups: stats.awake as u64,
                    ..self.metrics
                };
                let _ = reply.send(Ok(metrics));
            }
            Command::AddPeer { node, reply } => {
                self.groups.add_peer(node);
                let _ = reply.send(Ok(()));
            }
            Command::RemovePeer { node, reply } => {
                self.groups.remove_peer(node);
                let _ = reply.send(Ok(()));
            }
            Command::Shutdown { reply } => self.stopping = Some(reply),
        }
        Ok(())
    }

    fn wait_for_entry(&mut self, group: C::GroupId, id: LogId, waiter: Waiter<C, F::Machine>) {
        let deadline = self.deadline();
        let previous = self.pending_entries.insert(
            (group, id.index),
            PendingEntry {
                term: id.term,
                deadline,
                waiter,
            },
        );
        // An older waiter on the same index lost its slot to a new leader's entry.
        if let Some(old) = previous {
            fail_waiter(old.waiter, ClientError::Dropped);
        }
    }

    fn status(&self, group: C::GroupId) -> Option<GroupStatus<C>> {
        let core = self.groups.core(group)?;
        Some(GroupStatus {
            group,
            raft: core.status().ok()?,
            membership: core.membership().clone(),
            hibernating: self.groups.is_hibernating(group).unwrap_or(false),
        })
    }

    async fn create_group(
        &mut self,
        group: C::GroupId,
        membership: Membership<C>,
    ) -> Result<(), ClientError<C>> {
        if self.groups.contains(group) {
            return Err(ClientError::GroupExists { group });
        }
        let known = self.storage.groups().map_err(ClientError::Storage)?;
        if !known.contains(&group) {
            let mut batch = WriteBatch::new();
            batch.bootstrap(group, membership);
            self.storage.write(batch).map_err(ClientError::Storage)?;
            self.storage.sync().map_err(ClientError::Storage)?;
        }
        self.open_group(group)
            .await
            .map_err(|Fatal(reason)| ClientError::Other(reason))
    }

    fn remove_group(&mut self, group: C::GroupId) -> Result<(), ClientError<C>> {
        self.groups
            .remove_group(group)
            .map_err(ClientError::from_groups)?;
        self.machines.remove(&group);
        let mut batch = WriteBatch::new();
        batch.delete_group(group);
        self.storage.write(batch).map_err(ClientError::Storage)?;
        self.storage.sync().map_err(ClientError::Storage)?;
        let keys: Vec<_> = self
            .pending_entries
            .keys()
            .filter(|(g, _)| *g == group)
            .copied()
            .collect();
        for key in keys {
            if let Some(p) = self.pending_entries.remove(&key) {
                fail_waiter(p.waiter, ClientError::GroupNotFound { group });
            }
        }
        let reads: Vec<_> = self
            .pending_reads
            .keys()
            .filter(|(g, _)| *g == group)
            .copied()
            .collect();
        for key in reads {
            if let Some(read) = self.pending_reads.remove(&key) {
                (read.query)(Err(ClientError::GroupNotFound { group }));
            }
        }
        Ok(())
    }

    fn send(&mut self, batch: NodeBatch<C>) {
        self.metrics.batches_sent += 1;
        metrics::counter!("tickraft_batches_sent_total").increment(1);
        if let Err(e) = self.network.send(batch) {
            self.metrics.batches_dropped += 1;
            metrics::counter!("tickraft_batches_dropped_total").increment(1);
            tracing::debug!(node = ?self.node, %e, "batch not sent");
        }
    }

    /// Runs ready cycles until there is no more work.
    async fn cycle(&mut self) -> Result<(), Fatal> {
        while let Some(mut ready) = self.groups.ready()? {
            for batch in ready.take_batches() {
                self.send(batch);
            }
            for (group, soft) in ready.soft_states() {
                let term = self.groups.core(*group).map(|c| c.term()).unwrap_or(0);
                tracing::debug!(node = ?self.node, ?group, leader = ?soft.leader, role = ?soft.role, term, "leader change");
                if soft.role == crate::types::Role::Leader {
                    self.metrics.leader_elections_won += 1;
                    metrics::counter!("tickraft_leader_elections_won_total").increment(1);
                }
                let _ = self.leaders.send(LeaderChange {
                    group: *group,
                    leader: soft.leader,
                    role: soft.role,
                    term,
                });
            }
            let mut batch = WriteBatch::new();
            let mut installs = Vec::new();
            for write in ready.take_writes() {
                if let Some(snapshot) = &write.writes.snapshot {
                    installs.push((write.group, Snapshot::clone(snapshot)));
                }
                batch.push_writes(write.group, write.writes);
            }
            let entries: usize = batch
                .writes()
                .iter()
                .map(|op| match &op.op {
                    crate::storage::WriteOp::Append(entries) => entries.len(),
                    _ => 0,
                })
                .sum();
            if !batch.is_empty() {
                self.storage.write(batch)?;
            }
            self.metrics.entries_written += entries as u64;
            metrics::counter!("tickraft_entries_written_total").increment(entries as u64);
            if ready.must_sync() {
                let started = std::time::Instant::now();
                self.storage.sync()?;
                self.metrics.syncs += 1;
                metrics::counter!("tickraft_syncs_total").increment(1);
                metrics::histogram!("tickraft_sync_seconds")
                    .record(started.elapsed().as_secs_f64());
            }
            let mut persisted = ready.persisted();
            for batch in persisted.take_batches() {
                self.send(batch);
            }
            for (group, snapshot) in installs {
                self.install(group, snapshot).await?;
            }
            for apply in persisted.take_applies() {
                self.apply(apply).await?;
            }
            self.groups.advance(persisted)?;
        }
        self.take_snapshots().await
    }

    async fn install(&mut self, group: C::GroupId, snapshot: Snapshot<C>) -> Result<(), Fatal> {
        let index = snapshot.meta.last.index;
        if let Some(rt) = self.machines.get_mut(&group) {
            rt.machine.install_snapshot(snapshot).await?;
            rt.applied_since_snapshot = 0;
        }
        // Proposals covered by the snapshot may or may not be in it: their outcome is unknown here.
        let covered: Vec<_> = self
            .pending_entries
            .keys()
            .filter(|(g, i)| *g == group && *i <= index)
            .copied()
            .collect();
        for key in covered {
            if let Some(p) = self.pending_entries.remove(&key) {
                fail_waiter(p.waiter, ClientError::Timeout);
            }
        }
        Ok(())
    }

    async fn apply(&mut self, apply: GroupApply<C>) -> Result<(), Fatal> {
        let group = apply.group;
        let Some(rt) = self.machines.get_mut(&group) else {
            return Ok(()); // removed meanwhile
        };
        if !apply.committed.is_empty() {
            let responses = rt.machine.apply(&apply.committed).await?;
            if responses.len() != apply.committed.len() {
                return Err(Fatal(format!(
                    "state machine of group {group:?} returned {} responses for {} entries",
                    responses.len(),
                    apply.committed.len()
                )));
            }
            rt.applied_since_snapshot += apply.committed.len() as u64;
            self.metrics.entries_applied += apply.committed.len() as u64;
            metrics::counter!("tickraft_entries_applied_total")
                .increment(apply.committed.len() as u64);
            for (entry, response) in apply.committed.iter().zip(responses) {
                let Some(pending) = self.pending_entries.remove(&(group, entry.index)) else {
                    continue;
                };
                if pending.term != entry.term {
                    fail_waiter(pending.waiter, ClientError::Dropped);
                    continue;
                }
                match pending.waiter {
                    Waiter::Proposal(reply) => drop(reply.send(Ok(response))),
                    Waiter::Membership(reply) => drop(reply.send(Ok(()))),
                }
            }
        }
        for read in &apply.read_states {
            if let Some(pending) = self.pending_reads.remove(&(group, read.id)) {
                (pending.query)(Ok(&rt.machine));
            }
        }
        let leader = self.groups.core(group).and_then(|c| c.leader());
        for id in &apply.aborted_reads {
            if let Some(pending) = self.pending_reads.remove(&(group, *id)) {
                (pending.query)(Err(ClientError::NotLeader { leader }));
            }
        }
        Ok(())
    }

    /// Snapshots and compacts groups that applied enough since their last snapshot.
    async fn take_snapshots(&mut self) -> Result<(), Fatal> {
        let every = self.config.snapshot_every_entries;
        let due: BTreeMap<C::GroupId, ()> = self
            .machines
            .iter()
            .filter(|(_, rt)| rt.applied_since_snapshot >= every)
            .map(|(g, _)| (*g, ()))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for group in due.into_keys() {
            // The core knows the membership in force at the applied index, including the bootstrap
            // configuration, which no log entry carries and so no state machine sees.
            let Some(meta) = self
                .groups
                .core(group)
                .and_then(|c| c.compaction_point().ok())
            else {
                continue; // a snapshot from the leader is being installed: nothing worth compacting
            };
            let Some(rt) = self.machines.get_mut(&group) else {
                continue;
            };
            let mut snapshot = rt.machine.build_snapshot().await?;
            if snapshot.meta.last != meta.last {
                return Err(Fatal(format!(
                    "the state machine of group {group:?} built a snapshot at {:?} but the core applied {:?}",
                    snapshot.meta.last, meta.last
                )));
            }
            snapshot.meta.membership = meta.membership;
            rt.applied_since_snapshot = 0;
            self.metrics.snapshots_taken += 1;
            metrics::counter!("tickraft_snapshots_taken_total").increment(1);
            let upto = snapshot.meta.last.index;
            batch.save_snapshot(group, snapshot);
            batch.compact(group, upto);
        }
        self.storage.write(batch)?;
        Ok(())
    }
}

fn fail_waiter<C: RaftTypeConfig, M: StateMachine<C>>(waiter: Waiter<C, M>, error: ClientError<C>) {
    match waiter {
        Waiter::Proposal(reply) => drop(reply.send(Err(error))),
        Waiter::Membership(reply) => drop(reply.send(Err(error))),
    }
}

fn reject<C: RaftTypeConfig, M: StateMachine<C>>(command: Command<C, M>, error: ClientError<C>) {
    match command {
        Command::Propose { reply, .. } => drop(reply.send(Err(error))),
        Command::Read { query, .. } => query(Err(error)),
        Command::CreateGroup { reply, .. }
        | Command::RemoveGroup { reply, .. }
        | Command::ChangeMembership { reply, .. }
        | Command::TransferLeadership { reply, .. } => drop(reply.send(Err(error))),
        Command::Status { reply, .. } => drop(reply.send(Err(error))),
        Command::Statuses { reply } => drop(reply.send(Err(error))),
        Command::Metrics { reply } => drop(reply.send(Err(error))),
        Command::AddPeer { reply, .. } | Command::RemovePeer { reply, .. } => {
            drop(reply.send(Err(error)))
        }
        Command::Shutdown { reply } => drop(reply.send(())),
    }
}
