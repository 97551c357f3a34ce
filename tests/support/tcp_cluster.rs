//! A harness for real clusters in one test process: every node has its own sled database in a temporary
//! directory, its own `TcpNetwork` on 127.0.0.1 and a `KvStateMachine` per group; nodes can be stopped and
//! restarted from disk on the same port.
//!
//! Clients reach the nodes through a [`Directory`] of the handles of the nodes that are running; the
//! harness updates it as nodes stop and start, so that client tasks never hold a stale handle for long.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;
use tickraft::runtime::{
    start_node, ClientError, GroupStatus, InboundQueue, Node, NodeConfig, NodeHandle,
    StateMachineFactory,
};
use tickraft::{Membership, RaftTypeConfig, Role, StorageError};
use tickraft_network_tcp::{TcpConfig, TcpNetwork};
use tickraft_storage_mem::{KvCommand, KvResponse, KvStateMachine};
use tickraft_storage_sled::SledStorage;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kv;

impl RaftTypeConfig for Kv {
    type NodeId = u64;
    type GroupId = u64;
    type Data = Bytes;
    type Snapshot = Bytes;
}

pub type Machine = KvStateMachine<Kv>;
pub type Handle = NodeHandle<Kv, Machine>;
pub type Error = ClientError<Kv>;

/// How long any single wait of the harness may take before the test fails: a hang guard, not a timing
/// assertion.
pub const HANG: Duration = Duration::from_secs(30);

/// The handles of the running nodes, shared with client tasks.
#[derive(Clone, Default)]
pub struct Directory(Arc<RwLock<BTreeMap<u64, Handle>>>);

impl Directory {
    pub fn get(&self, id: u64) -> Option<Handle> {
        self.0.read().unwrap().get(&id).cloned()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.0.read().unwrap().keys().copied().collect()
    }

    pub fn all(&self) -> BTreeMap<u64, Handle> {
        self.0.read().unwrap().clone()
    }

    fn insert(&self, id: u64, handle: Handle) {
        self.0.write().unwrap().insert(id, handle);
    }

    fn remove(&self, id: u64) {
        self.0.write().unwrap().remove(&id);
    }
}

/// Every group gets an empty in-memory store: on a restart the runtime restores it from the stored
/// snapshot and the log.
struct Machines;

impl StateMachineFactory<Kv> for Machines {
    type Machine = Machine;
    fn open(&mut self, group: u64) -> Result<Machine, StorageError> {
        Ok(KvStateMachine::new(group))
    }
}

struct Running {
    node: Node<Kv, Machine>,
    handle: Handle,
    net: Arc<TcpNetwork<Kv>>,
}

struct Slot {
    addr: SocketAddr,
    /// Bound before the node starts (so that every port is known up front), taken by its first start.
    listener: Option<std::net::TcpListener>,
    dir: PathBuf,
    /// The nodes this one talks to when it (re)starts; grows with [`Cluster::introduce`].
    peers: BTreeSet<u64>,
    running: Option<Running>,
}

/// Node settings for tests on loopback: 10 ms ticks, elections after 100–200 ms, snapshots every
/// `snapshot_every` applied entries.
pub fn node_config(snapshot_every: u64) -> NodeConfig {
    NodeConfig {
        tick: Duration::from_millis(10),
        request_timeout_ticks: 500,
        snapshot_every_entries: snapshot_every,
        ..NodeConfig::default()
    }
}

/// N nodes on 127.0.0.1, each with a sled database under one temporary directory (removed on drop).
pub struct Cluster {
    root: TempDir,
    cluster_id: u64,
    config: NodeConfig,
    slots: BTreeMap<u64, Slot>,
    directory: Directory,
}

impl Cluster {
    /// Binds a listener on 127.0.0.1:0 for every node in `ids` (so that the full address map is known
    /// before anything starts), and creates each node's database directory. Starts nothing.
    pub fn new(ids: &[u64], config: NodeConfig) -> Cluster {
        let root = tempfile::Builder::new()
            .prefix("tickraft-cluster-tcp-")
            .tempdir()
            .expect("create a temporary directory");
        let mut slots = BTreeMap::new();
        for &id in ids {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let dir = root.path().join(format!("node-{id}"));
            let peers = ids.iter().copied().filter(|p| *p != id).collect();
            slots.insert(
                id,
                Slot {
                    addr,
                    listener: Some(listener),
                    dir,
                    peers,
                    running: None,
                },
            );
        }
        // Distinct per cluster, so that two tests never talk to each other through a reused port.
        let cluster_id = u64::from(slots.values().next().map_or(0, |s| s.addr.port()))
            ^ (u64::from(std::process::id()) << 16);
        Cluster {
            root,
            cluster_id,
            config,
            slots,
            directory: Directory::default(),
        }
    }

    pub fn ids(&self) -> Vec<u64> {
        self.slots.keys().copied().collect()
    }

    pub fn directory(&self) -> Directory {
        self.directory.clone()
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.slots[&id].running.is_some()
    }

    /// The handle of a running node.
    pub fn handle(&self, id: u64) -> Handle {
        self.slots[&id]
            .running
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .handle
            .clone()
    }

    pub fn net(&self, id: u64) -> Arc<TcpNetwork<Kv>> {
        self.slots[&id]
            .running
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .net
            .clone()
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.slots[&id].dir.clone()
    }

    /// Starts (or restarts, from its database) node `id`: a new transport on its port, peered with the
    /// nodes it knows (every other node of the cluster, unless [`Cluster::set_peers`] said otherwise), and
    /// a new driver.
    pub async fn start(&mut self, id: u64) {
        let peers: BTreeMap<u64, String> = self.slots[&id]
            .peers
            .iter()
            .map(|other| (*other, self.slots[other].addr.to_string()))
            .collect();
        let slot = self.slots.get_mut(&id).expect("a node of the cluster");
        assert!(slot.running.is_none(), "node {id} is already running");
        let listener = match slot.listener.take() {
            Some(listener) => TcpListener::from_std(listener).expect("register the listener"),
            None => rebind(slot.addr).await,
        };
        let (queue, receiver) = InboundQueue::new(4096);
        let mut tcp = TcpConfig::new(id, self.cluster_id, slot.addr);
        tcp.peers = peers.clone();
        // A node that is down for a while must not make its peers wait seconds once it is back.
        tcp.backoff_min = Duration::from_millis(20);
        tcp.backoff_max = Duration::from_millis(300);
        tcp.io_timeout = Duration::from_secs(5);
        let net = Arc::new(
            TcpNetwork::with_listener(tcp, listener, Arc::new(queue)).expect("start the transport"),
        );
        let dir = slot.dir.clone();
        let storage = tokio::task::spawn_blocking(move || SledStorage::<Kv>::open(dir))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("open the sled database of node {id}: {e}"));
        let node = start_node(
            id,
            peers.keys().copied(),
            self.config.clone(),
            storage,
            // The driver owns the transport; the harness keeps a reference to shut it down.
            net.clone(),
            Machines,
            receiver,
        )
        .unwrap_or_else(|e| panic!("start node {id}: {e}"));
        let handle = node.handle();
        self.directory.insert(id, handle.clone());
        slot.running = Some(Running { node, handle, net });
    }

    /// Which nodes `id` knows when it next starts (e.g. not yet a node that will join later).
    pub fn set_peers(&mut self, id: u64, peers: &[u64]) {
        self.slots.get_mut(&id).unwrap().peers =
            peers.iter().copied().filter(|p| *p != id).collect();
    }

    /// Tells running node `id` about node `new` at run time: its transport learns the address, its driver
    /// accepts batches from it. Remembered for `id`'s restarts.
    pub async fn introduce(&mut self, id: u64, new: u64) {
        let addr = self.slots[&new].addr.to_string();
        self.net(id)
            .add_peer(new, addr)
            .unwrap_or_else(|e| panic!("node {id}: add peer {new} to the transport: {e}"));
        self.handle(id)
            .add_peer(new)
            .await
            .unwrap_or_else(|e| panic!("node {id}: add peer {new} to the driver: {e}"));
        self.slots.get_mut(&id).unwrap().peers.insert(new);
    }

    pub async fn start_all(&mut self) {
        for id in self.ids() {
            self.start(id).await;
        }
    }

    /// Stops node `id` cleanly: its driver (which syncs its database), then its transport (which frees
    /// the port). Its database directory stays.
    pub async fn stop(&mut self, id: u64) {
        let running = self.slots.get_mut(&id).unwrap().running.take();
        let Some(running) = running else { return };
        self.directory.remove(id);
        let Running { node, handle, net } = running;
        guard(format!("node {id} shuts down"), handle.shutdown())
            .await
            .unwrap();
        drop(handle);
        // The driver thread drops the database when it exits: wait for it, so that a restart can open it.
        guard(
            format!("node {id}'s driver thread exits"),
            tokio::task::spawn_blocking(move || node.join()),
        )
        .await
        .unwrap();
        net.shutdown().await;
    }

    /// Cuts node `id` off from its peers by shutting its transport down; its driver keeps running and
    /// clients can still reach it. Undone only by a [`stop`](Self::stop) and a [`start`](Self::start).
    pub async fn isolate(&self, id: u64) {
        self.net(id).shutdown().await;
    }

    pub async fn shutdown(&mut self) {
        for id in self.ids() {
            self.stop(id).await;
        }
    }

    /// Creates `group` with `membership` on every running node in `on`.
    pub async fn create_group(&self, group: u64, membership: &Membership<Kv>, on: &[u64]) {
        for &id in on {
            self.handle(id)
                .create_group(group, membership.clone())
                .await
                .unwrap_or_else(|e| panic!("create group {group} on node {id}: {e}"));
        }
    }

    /// The node that leads `group`, as agreed by the leader itself (polls the running nodes).
    pub async fn leader(&self, group: u64) -> u64 {
        let directory = self.directory.clone();
        wait_for(format!("a leader of group {group}"), || {
            let directory = directory.clone();
            async move { find_leader(&directory, group).await }
        })
        .await
    }

    pub async fn status(&self, id: u64, group: u64) -> GroupStatus<Kv> {
        self.handle(id)
            .status(group)
            .await
            .unwrap_or_else(|e| panic!("status of group {group} on node {id}: {e}"))
    }

    /// Hands leadership of `group` to `target` and waits until `target` leads it. Retries the transfer
    /// if leadership moved elsewhere meanwhile (an election may race with it).
    pub async fn transfer(&self, group: u64, target: u64) {
        let what = format!("node {target} to lead group {group}");
        guard(what, async {
            loop {
                let leader = self.leader(group).await;
                if leader == target {
                    return;
                }
                let result = self.handle(leader).transfer_leadership(group, target).await;
                if trace() {
                    let leader_status = self.handle(leader).status(group).await.ok().map(|s| s.raft);
                    let target_status = self
                        .handle(target)
                        .status(group)
                        .await
                        .ok()
                        .map(|s| (s.raft, s.membership, s.hibernating));
                    eprintln!(
                        "transfer group {group} {leader} -> {target}: {result:?}\n  leader {leader_status:?}\n  target {target_status:?}"
                    );
                }
                match result {
                    Ok(()) => {}
                    // Stepped down meanwhile, or a transfer is already under way: look again.
                    Err(ClientError::NotLeader { .. }) | Err(ClientError::Raft(_)) => {}
                    Err(e) => panic!("transfer of group {group} to {target}: {e}"),
                }
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if let Ok(status) = self.handle(target).status(group).await {
                        if status.raft.role == Role::Leader {
                            return;
                        }
                    }
                }
            }
        })
        .await
    }

    /// Waits until node `id` has applied (and knows as committed) at least what the leader of `group`
    /// had committed when this was called.
    pub async fn wait_caught_up(&self, id: u64, group: u64) {
        let leader = self.leader(group).await;
        let target = self.status(leader, group).await.raft.commit;
        let handle = self.handle(id);
        wait_for(
            format!("node {id} to apply group {group} up to {target}"),
            || {
                let handle = handle.clone();
                async move {
                    let status = handle.status(group).await.ok()?;
                    (status.raft.applied >= target && status.raft.commit >= target).then_some(())
                }
            },
        )
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Tests stop their clusters; this is for a test that panicked. Dropping the handles lets each
        // driver exit on its own (it stops once no handle is left); dropping a transport stops it at once.
        self.directory.0.write().unwrap().clear();
        for slot in self.slots.values_mut() {
            drop(slot.running.take());
        }
    }
}

async fn rebind(addr: SocketAddr) -> TcpListener {
    // The old listener is closed; connections it accepted may linger in TIME_WAIT (tokio binds with
    // SO_REUSEADDR, so that is no obstacle). Retry briefly in case the port is still being released.
    let mut last = None;
    for _ in 0..100 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr} again: {last:?}");
}

/// Whether to print what the harness does (set `CLUSTER_TCP_TRACE=1`).
pub fn trace() -> bool {
    std::env::var_os("CLUSTER_TCP_TRACE").is_some()
}

/// Runs `fut`, failing the test with `what` if it does not finish within [`HANG`].
pub async fn guard<T>(what: impl std::fmt::Display, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(HANG, fut).await {
        Ok(out) => out,
        Err(_) => panic!("hang guard: gave up waiting {HANG:?} for {what}"),
    }
}

/// Polls `probe` every 20 ms until it answers `Some`, failing with `what` after [`HANG`].
pub async fn wait_for<T, F, Fut>(what: impl std::fmt::Display, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    guard(what, async {
        loop {
            if let Some(out) = probe().await {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The running node that reports itself leader of `group` in the highest term, if any.
pub async fn find_leader(directory: &Directory, group: u64) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for (id, handle) in directory.all() {
        if let Ok(status) = handle.status(group).await {
            if status.raft.role == Role::Leader
                && best.is_none_or(|(term, _)| status.raft.term > term)
            {
                best = Some((status.raft.term, id));
            }
        }
    }
    best.map(|(_, id)| id)
}

pub fn set(key: &str, value: &str) -> Bytes {
    KvCommand::Set {
        key: key.into(),
        value: value.into(),
    }
    .encode()
}

/// Whether a failed proposal certainly did not take effect (so it may be retried as the same operation).
pub fn certainly_not_applied(e: &Error) -> bool {
    matches!(
        e,
        ClientError::NotLeader { .. }
            | ClientError::Dropped
            | ClientError::Overloaded
            | ClientError::GroupNotFound { .. }
    )
}

/// A client that follows leader hints: remembers the last leader of each group.
#[derive(Clone)]
pub struct Client {
    directory: Directory,
    leaders: BTreeMap<u64, u64>,
    rotate: usize,
}

impl Client {
    pub fn new(directory: Directory) -> Client {
        Client {
            directory,
            leaders: BTreeMap::new(),
            rotate: 0,
        }
    }

    /// The node to try for `group`: the last known leader if it is running, else the next running node.
    fn target(&mut self, group: u64) -> Option<(u64, Handle)> {
        if let Some(&id) = self.leaders.get(&group) {
            if let Some(handle) = self.directory.get(id) {
                return Some((id, handle));
            }
        }
        let ids = self.directory.ids();
        if ids.is_empty() {
            return None;
        }
        self.rotate = self.rotate.wrapping_add(1);
        let id = ids[self.rotate % ids.len()];
        self.leaders.insert(group, id);
        Some((id, self.directory.get(id)?))
    }

    /// Learns from a `NotLeader` answer: go to the hinted node, or to another one.
    fn redirect(&mut self, group: u64, tried: u64, hint: Option<u64>) {
        match hint {
            Some(leader) if leader != tried && self.directory.get(leader).is_some() => {
                self.leaders.insert(group, leader);
            }
            _ => {
                self.leaders.remove(&group);
            }
        }
    }

    /// One attempt at a proposal on the node believed to lead `group`. `Err(None)`: no node to ask.
    pub async fn propose_once(
        &mut self,
        group: u64,
        command: Bytes,
    ) -> Result<KvResponse, Option<Error>> {
        let (id, handle) = self.target(group).ok_or(None)?;
        let result = handle.propose(group, command).await;
        if let Err(ClientError::NotLeader { leader }) = &result {
            self.redirect(group, id, *leader);
        } else if result.is_err() {
            self.leaders.remove(&group);
        }
        result.map_err(Some)
    }

    /// One attempt at a linearizable read of `key` on the node believed to lead `group`.
    pub async fn read_once(
        &mut self,
        group: u64,
        key: &str,
    ) -> Result<Option<String>, Option<Error>> {
        let (id, handle) = self.target(group).ok_or(None)?;
        let key = key.to_string();
        let result = handle
            .read(group, move |m: &Machine| m.get(&key).map(str::to_string))
            .await;
        if let Err(ClientError::NotLeader { leader }) = &result {
            self.redirect(group, id, *leader);
        } else if result.is_err() {
            self.leaders.remove(&group);
        }
        result.map_err(Some)
    }

    /// Proposes until the command is applied, retrying on any error (use only for idempotent commands:
    /// an ambiguous failure may have applied it already). Fails the test after [`HANG`].
    pub async fn propose(&mut self, group: u64, command: Bytes) -> KvResponse {
        guard(format!("a proposal to group {group}"), async {
            loop {
                match self.propose_once(group, command.clone()).await {
                    Ok(response) => return response,
                    Err(Some(ClientError::NotLeader { leader: Some(_) })) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await
    }

    /// A linearizable read of the whole map of `group` (retried until a leader answers).
    pub async fn read_map(&mut self, group: u64) -> BTreeMap<String, String> {
        guard(format!("a read of group {group}"), async {
            loop {
                let Some((id, handle)) = self.target(group) else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                match handle.read(group, |m: &Machine| m.map().clone()).await {
                    Ok(map) => return map,
                    Err(ClientError::NotLeader { leader }) => self.redirect(group, id, leader),
                    Err(_) => {
                        self.leaders.remove(&group);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
        .await
    }

    /// A linearizable read of `key` (retried until a leader answers).
    pub async fn read(&mut self, group: u64, key: &str) -> Option<String> {
        guard(format!("a read of {key} in group {group}"), async {
            loop {
                match self.read_once(group, key).await {
                    Ok(value) => return value,
                    Err(Some(ClientError::NotLeader { leader: Some(_) })) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await
    }
}
