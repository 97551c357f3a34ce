//! Helpers shared by the integration tests: a type config, a recording `Inbound`, node start-up on free
//! ports, polling.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickraft::groups::{GroupHeartbeat, GroupMessage};
use tickraft::message::{AppendRequest, Message, Rpc, SnapshotChunk};
use tickraft::types::{Entry, EntryPayload, LogId, Membership, SnapshotMeta};
use tickraft::{Inbound, NodeBatch, RaftTypeConfig};
use tickraft_network_tcp::{TcpConfig, TcpNetwork};
use tokio::net::TcpListener;

pub const CLUSTER: u64 = 0x7e57;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct T;

impl RaftTypeConfig for T {
    type NodeId = u64;
    type GroupId = u64;
    type Data = Bytes;
    type Snapshot = Bytes;
}

/// Records everything the transport hands over, in order of arrival.
#[derive(Default)]
pub struct Recorder {
    pub batches: Mutex<Vec<NodeBatch<T>>>,
    pub unreachable: Mutex<Vec<u64>>,
}

impl Inbound<T> for Recorder {
    fn deliver(&self, batch: NodeBatch<T>) {
        self.batches.lock().unwrap().push(batch);
    }
    fn unreachable(&self, node: u64) {
        self.unreachable.lock().unwrap().push(node);
    }
}

impl Recorder {
    pub fn count(&self) -> usize {
        self.batches.lock().unwrap().len()
    }
    pub fn has_incarnation(&self, from: u64, incarnation: u64) -> bool {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.from == from && b.incarnation == incarnation)
    }
    pub fn unreachable_count(&self, node: u64) -> usize {
        self.unreachable
            .lock()
            .unwrap()
            .iter()
            .filter(|&&n| n == node)
            .count()
    }
}

pub struct Node {
    pub net: TcpNetwork<T>,
    pub inbound: Arc<Recorder>,
    pub addr: SocketAddr,
}

/// Sends the transport's log lines to the test output (shown with `--nocapture` or on failure).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::INFO)
        .try_init();
}

pub async fn free_listener() -> TcpListener {
    init_logs();
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A config with fast backoff, for tests.
pub fn test_config(id: u64, addr: SocketAddr, peers: BTreeMap<u64, String>) -> TcpConfig<u64> {
    let mut config = TcpConfig::new(id, CLUSTER, addr);
    config.peers = peers;
    config.backoff_min = Duration::from_millis(10);
    config.backoff_max = Duration::from_millis(200);
    config.io_timeout = Duration::from_secs(5);
    config
}

pub fn start_node(config: TcpConfig<u64>, listener: TcpListener) -> Node {
    let inbound = Arc::new(Recorder::default());
    let addr = listener.local_addr().unwrap();
    let net = TcpNetwork::with_listener(config, listener, inbound.clone()).unwrap();
    Node { net, inbound, addr }
}

/// Starts `n` fully connected nodes with ids 1..=n on free loopback ports.
pub async fn cluster(n: u64, tweak: impl Fn(&mut TcpConfig<u64>)) -> Vec<Node> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(free_listener().await);
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let peers = addrs
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(j, addr)| (j as u64 + 1, addr.to_string()))
            .collect();
        let mut config = test_config(id, addrs[i], peers);
        tweak(&mut config);
        nodes.push(start_node(config, listener));
    }
    nodes
}

/// Polls `condition` every few milliseconds until it holds; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn heartbeat(group: u64, read_seq: u64) -> GroupHeartbeat<T> {
    GroupHeartbeat {
        group,
        term: 1,
        commit: 0,
        read_seq,
    }
}

pub fn append(group: u64, index: u64, data: Bytes) -> GroupMessage<T> {
    GroupMessage {
        group,
        message: Message {
            term: 1,
            rpc: Rpc::AppendRequest(AppendRequest {
                prev: LogId::new(1, index - 1),
                entries: vec![Entry {
                    term: 1,
                    index,
                    payload: EntryPayload::Normal(data),
                }],
                commit: 0,
            }),
        },
    }
}

pub fn snapshot_chunk(group: u64, data: Bytes) -> GroupMessage<T> {
    let total_len = data.len() as u64;
    GroupMessage {
        group,
        message: Message {
            term: 1,
            rpc: Rpc::InstallSnapshot(Box::new(SnapshotChunk {
                meta: SnapshotMeta {
                    last: LogId::new(1, 100),
                    membership: Membership::new_voters([1, 2, 3]),
                },
                offset: 0,
                data,
                total_len,
                checksum: 0,
            })),
        },
    }
}

pub fn is_snapshot(batch: &NodeBatch<T>) -> bool {
    batch
        .messages
        .iter()
        .any(|m| matches!(m.message.rpc, Rpc::InstallSnapshot(_)))
}
