//! A quick loopback throughput check: node 1 streams batches to node 2 as fast as the queue allows.
//!
//! ```text
//! cargo run --release -p tickraft-network-tcp --example throughput -- [batches] [entry_bytes] [entries_per_batch]
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickraft::groups::GroupMessage;
use tickraft::message::{AppendRequest, Message, Rpc};
use tickraft::types::{Entry, EntryPayload, LogId};
use tickraft::{Inbound, Network, NetworkError, NodeBatch, RaftTypeConfig};
use tickraft_network_tcp::{TcpConfig, TcpNetwork};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct T;

impl RaftTypeConfig for T {
    type NodeId = u64;
    type GroupId = u64;
    type Data = Bytes;
    type Snapshot = Bytes;
}

#[derive(Default)]
struct Count {
    batches: AtomicU64,
}

impl Inbound<T> for Count {
    fn deliver(&self, _batch: NodeBatch<T>) {
        self.batches.fetch_add(1, Ordering::Relaxed);
    }
    fn unreachable(&self, _node: u64) {}
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let batches = args.next().transpose()?.unwrap_or(200_000);
    let entry_bytes = args.next().transpose()?.unwrap_or(256) as usize;
    let entries = args.next().transpose()?.unwrap_or(4);

    let (l1, l2) = (
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    );
    let (a1, a2) = (l1.local_addr()?, l2.local_addr()?);
    let mut c1 = TcpConfig::new(1u64, 1, a1);
    c1.peers = BTreeMap::from([(2, a2.to_string())]);
    let mut c2 = TcpConfig::new(2u64, 1, a2);
    c2.peers = BTreeMap::from([(1, a1.to_string())]);
    let received = Arc::new(Count::default());
    let node1 = TcpNetwork::<T>::with_listener(c1, l1, Arc::new(Count::default()))?;
    let node2 = TcpNetwork::<T>::with_listener(c2, l2, received.clone())?;

    let data = Bytes::from(vec![0x5a; entry_bytes]);
    let make = |seq: u64| {
        let mut batch = NodeBatch::new(1, 2, 0);
        batch.messages.push(GroupMessage {
            group: seq % 64,
            message: Message {
                term: 1,
                rpc: Rpc::AppendRequest(AppendRequest {
                    prev: LogId::new(1, seq),
                    entries: (0..entries)
                        .map(|i| Entry {
                            term: 1,
                            index: seq + 1 + i,
                            payload: EntryPayload::Normal(data.clone()),
                        })
                        .collect(),
                    commit: seq,
                }),
            },
        });
        batch
    };

    let start = Instant::now();
    let mut retries = 0u64;
    for seq in 0..batches {
        let mut batch = make(seq);
        loop {
            match node1.send(batch) {
                Ok(()) => break,
                Err(NetworkError::QueueFull { .. }) => {
                    retries += 1;
                    tokio::task::yield_now().await;
                    batch = make(seq);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    while received.batches.load(Ordering::Relaxed) < batches {
        if start.elapsed() > Duration::from_secs(120) {
            return Err("timed out".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let bytes = node1.stats().bytes_sent as f64;
    println!(
        "{batches} batches ({entries} entries of {entry_bytes} B each) in {elapsed:.3} s: \
         {:.0} batches/s, {:.1} MB/s of frames ({} sends retried on a full queue)",
        batches as f64 / elapsed,
        bytes / elapsed / 1e6,
        retries
    );
    node1.shutdown().await;
    node2.shutdown().await;
    Ok(())
}
