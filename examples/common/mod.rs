//! A cluster of tickraft nodes in one process, over real loopback TCP with sled on disk: what the examples
//! and the demo run on. Each node is exactly what a production process would start; only the addresses
//! and directories are picked for you.

#![allow(dead_code)] // each example uses a different part

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use tickraft::runtime::{
    start_node, ClientError, InboundQueue, Node, NodeConfig, NodeHandle, StateMachineFactory,
};
use tickraft::{Config, RaftTypeConfig, Role, StorageError};
use tickraft_network_tcp::{TcpConfig, TcpNetwork};
use tickraft_storage_mem::{KvResponse, KvStateMachine};
use tickraft_storage_sled::SledStorage;

/// The type configuration of the examples: u64 ids, byte-string commands and snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kv;

impl RaftTypeConfig for Kv {
    type NodeId = u64;
    type GroupId = u64;
    type Data = Bytes;
    type Snapshot = Bytes;
}

pub type Handle = NodeHandle<Kv, KvStateMachine<Kv>>;
pub type KvError = ClientError<Kv>;

/// One in-memory KV state machine per group; after a restart it is rebuilt from the snapshot and the
/// log kept by sled.
pub struct KvMachines;

impl StateMachineFactory<Kv> for KvMachines {
    type Machine = KvStateMachine<Kv>;
    fn open(&mut self, group: u64) -> Result<Self::Machine, StorageError> {
        Ok(KvStateMachine::new(group))
    }
}

/// A running node and what it needs to be stopped and started again.
pub struct RunningNode {
    pub handle: Handle,
    node: Node<Kv, KvStateMachine<Kv>>,
    network: Arc<TcpNetwork<Kv>>,
}

/// Nodes 1..=n on loopback TCP, each with a sled database under one directory.
pub struct Cluster {
    pub dir: PathBuf,
    pub addrs: BTreeMap<u64, SocketAddr>,
    pub nodes: BTreeMap<u64, RunningNode>,
    pub config: NodeConfig,
    cluster_id: u64,
}

impl Cluster {
    /// Starts `n` nodes with databases under `dir`.
    pub async fn start(dir: &Path, n: u64, config: NodeConfig) -> Result<Self> {
        // Bind every listener first (port 0: the OS picks free ports), then tell every node the others.
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding a loopback port")?;
            listeners.insert(id, listener);
        }
        let addrs = listeners
            .iter()
            .map(|(id, l)| Ok((*id, l.local_addr()?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            addrs,
            nodes: BTreeMap::new(),
            config,
            cluster_id: 0x7469_636b,
        };
        for (id, listener) in listeners {
            cluster.start_node(id, Some(listener)).await?;
        }
        Ok(cluster)
    }

    /// The default settings of the examples: 10 ms ticks, elections after 100–200 ms.
    pub fn example_config() -> NodeConfig {
        NodeConfig {
            tick: Duration::from_millis(10),
            raft: Config::default(),
            request_timeout_ticks: 200,
            snapshot_every_entries: 5_000,
            ..NodeConfig::default()
        }
    }

    fn db_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    async fn start_node(
        &mut self,
        id: u64,
        listener: Option<tokio::net::TcpListener>,
    ) -> Result<()> {
        let addr = self.addrs[&id];
        let listener = match listener {
            Some(l) => l,
            // A restart binds the same port again; the old socket may linger for a moment.
            None => bind_retrying(addr).await?,
        };
        let mut tcp = TcpConfig::new(id, self.cluster_id, addr);
        for (peer, peer_addr) in &self.addrs {
            if *peer != id {
                tcp.peers.insert(*peer, peer_addr.to_string());
            }
        }
        let storage = SledStorage::<Kv>::open(self.db_path(id))
            .map_err(|e| anyhow!("opening sled for node {id}: {e}"))?;
        let (queue, receiver) = InboundQueue::new(16_384);
        let network = Arc::new(
            TcpNetwork::with_listener(tcp, listener, Arc::new(queue))
                .map_err(|e| anyhow!("starting TCP for node {id}: {e}"))?,
        );
        let peers: Vec<u64> = self.addrs.keys().copied().filter(|p| *p != id).collect();
        let node = start_node(
            id,
            peers,
            self.config.clone(),
            storage,
            network.clone(),
            KvMachines,
            receiver,
        )
        .map_err(|e| anyhow!("starting node {id}: {e}"))?;
        let handle = node.handle();
        self.nodes.insert(
            id,
            RunningNode {
                handle,
                node,
                network,
            },
        );
        Ok(())
    }

    /// Stops node `id` (its runtime and its network); its database stays on disk.
    pub async fn stop(&mut self, id: u64) -> Result<()> {
        let running = self
            .nodes
            .remove(&id)
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        running
            .handle
            .shutdown()
            .await
            .map_err(|e| anyhow!("stopping node {id}: {e}"))?;
        running.network.shutdown().await;
        tokio::task::spawn_blocking(move || running.node.join())
            .await
            .context("joining the node thread")?;
        Ok(())
    }

    /// Starts node `id` again from its database, on its old port.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        self.start_node(id, None).await
    }

    pub fn handle(&self, id: u64) -> Option<Handle> {
        self.nodes.get(&id).map(|n| n.handle.clone())
    }

    /// Stops every node.
    pub async fn shutdown(mut self) -> Result<()> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await?;
        }
        Ok(())
    }

    /// Waits until every group in `groups` has a leader among the running nodes; returns group → leader.
    pub async fn wait_for_leaders(
        &self,
        groups: impl IntoIterator<Item = u64> + Clone,
        timeout: Duration,
    ) -> Result<BTreeMap<u64, u64>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leaders = self.leaders().await;
            if groups.clone().into_iter().all(|g| leaders.contains_key(&g)) {
                return Ok(leaders);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(anyhow!("groups without a leader after {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// group → the running node that leads it.
    pub async fn leaders(&self) -> BTreeMap<u64, u64> {
        let mut leaders = BTreeMap::new();
        for (id, running) in &self.nodes {
            if let Ok(statuses) = running.handle.statuses().await {
                for status in statuses {
                    if status.raft.role == Role::Leader {
                        leaders.insert(status.group, *id);
                    }
                }
            }
        }
        leaders
    }
}

async fn bind_retrying(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow!("binding {addr} again: {last:?}"))
}

/// A KV response as text, for printing.
pub fn describe(response: &KvResponse) -> String {
    match response {
        KvResponse::Done { previous } => format!("ok (previous: {previous:?})"),
        KvResponse::Compared { swapped, previous } => {
            format!("swapped: {swapped} (found: {previous:?})")
        }
        KvResponse::Noop => "no-op".into(),
        KvResponse::Rejected { reason } => format!("rejected: {reason}"),
    }
}
