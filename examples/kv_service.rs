//! An etcd-like key-value service on one Raft group: three nodes over loopback TCP with sled, each serving
//! a small line protocol to clients:
//!
//! ```text
//! PUT <key> <value>            -> OK [previous]
//! GET <key>                    -> VALUE <value> | NONE        (a linearizable read)
//! DEL <key>                    -> OK [previous]
//! CAS <key> <expected|-> <new> -> SWAPPED | FAILED [current]
//! ```
//!
//! A node that does not lead answers `REDIRECT <node> <addr>`. The example runs a scripted session against
//! the cluster and prints it; with `--serve` it keeps the cluster up so that you can try it yourself
//! (`nc 127.0.0.1 <port>`).
//!
//! Run: `cargo run --example kv_service` (or `-- --serve`).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tickraft::runtime::{ClientError, RaftNode};
use tickraft::Membership;
use tickraft_storage_mem::{KvCommand, KvResponse, KvStateMachine};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use common::{Cluster, Kv};

const GROUP: u64 = 0;

/// The service one node offers: a `RaftNode` (one group) and the client addresses of every node, for
/// redirects.
#[derive(Clone)]
struct KvService {
    raft: RaftNode<Kv, KvStateMachine<Kv>>,
    client_addrs: BTreeMap<u64, SocketAddr>,
}

impl KvService {
    async fn handle_line(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let result = match words.as_slice() {
            ["PUT", key, value] => {
                self.write(KvCommand::Set {
                    key: key.to_string(),
                    value: value.to_string(),
                })
                .await
            }
            ["DEL", key] => {
                self.write(KvCommand::Delete {
                    key: key.to_string(),
                })
                .await
            }
            ["CAS", key, expected, new] => {
                self.write(KvCommand::CompareAndSet {
                    key: key.to_string(),
                    expected: (*expected != "-").then(|| expected.to_string()),
                    new: new.to_string(),
                })
                .await
            }
            ["GET", key] => {
                let key = key.to_string();
                self.raft
                    .read(move |m| m.get(&key).map(str::to_string))
                    .await
                    .map(|value| match value {
                        Some(v) => format!("VALUE {v}"),
                        None => "NONE".to_string(),
                    })
            }
            _ => return "ERR usage: PUT k v | GET k | DEL k | CAS k expected|- new".to_string(),
        };
        match result {
            Ok(answer) => answer,
            Err(ClientError::NotLeader { leader: Some(l) }) => match self.client_addrs.get(&l) {
                Some(addr) => format!("REDIRECT {l} {addr}"),
                None => format!("REDIRECT {l}"),
            },
            Err(ClientError::NotLeader { leader: None }) => "RETRY no leader yet".to_string(),
            Err(e) => format!("ERR {e}"),
        }
    }

    async fn write(&self, command: KvCommand) -> Result<String, ClientError<Kv>> {
        Ok(match self.raft.propose(command.encode()).await? {
            KvResponse::Done { previous: Some(p) } => format!("OK {p}"),
            KvResponse::Done { previous: None } => "OK".to_string(),
            KvResponse::Compared { swapped: true, .. } => "SWAPPED".to_string(),
            KvResponse::Compared {
                swapped: false,
                previous,
            } => format!("FAILED {}", previous.as_deref().unwrap_or("-")),
            KvResponse::Noop => "OK".to_string(),
            KvResponse::Rejected { reason } => format!("ERR {reason}"),
        })
    }

    async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = self.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = service.handle_line(&line).await;
                    if write
                        .write_all(format!("{answer}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    }
}

/// Sends one request line, following redirects.
async fn request(addrs: &BTreeMap<u64, SocketAddr>, line: &str) -> Result<String> {
    let mut addr = *addrs.values().next().context("no node")?;
    for _ in 0..20 {
        let stream = TcpStream::connect(addr).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(format!("{line}\n").as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(read).read_line(&mut answer).await?;
        let answer = answer.trim().to_string();
        if let Some(rest) = answer.strip_prefix("REDIRECT ") {
            let node: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .context("a redirect names a node")?;
            addr = *addrs.get(&node).context("a known node")?;
            continue;
        }
        if answer.starts_with("RETRY") {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        return Ok(answer);
    }
    Err(anyhow!("no answer to {line:?}"))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let serve = std::env::args().any(|a| a == "--serve");
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(dir.path(), 3, Cluster::example_config()).await?;

    // Bind the client ports first, so that every node can redirect to every other.
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        listeners.insert(id, TcpListener::bind("127.0.0.1:0").await?);
    }
    let client_addrs: BTreeMap<u64, SocketAddr> = listeners
        .iter()
        .map(|(id, l)| Ok((*id, l.local_addr()?)))
        .collect::<Result<_>>()?;
    for (id, listener) in listeners {
        let handle = cluster.handle(id).context("a running node")?;
        let raft = RaftNode::new(handle, GROUP, Membership::new_voters([1, 2, 3]))
            .await
            .map_err(|e| anyhow!("creating the group on node {id}: {e}"))?;
        let service = KvService {
            raft,
            client_addrs: client_addrs.clone(),
        };
        tokio::spawn(service.serve(listener));
    }
    cluster
        .wait_for_leaders([GROUP], Duration::from_secs(10))
        .await?;

    println!(
        "kv service: 3 nodes, clients on {:?}",
        client_addrs.values().collect::<Vec<_>>()
    );
    let session = [
        "PUT greeting hello",
        "GET greeting",
        "CAS greeting hello bonjour",
        "CAS greeting hello hola",
        "GET greeting",
        "PUT counter 1",
        "DEL counter",
        "GET counter",
        "CAS counter - 10",
        "GET counter",
    ];
    for line in session {
        let answer = request(&client_addrs, line).await?;
        println!("> {line:<28} {answer}");
    }

    if serve {
        println!("serving; try: nc {} (Ctrl-C to stop)", client_addrs[&1]);
        tokio::signal::ctrl_c().await?;
    }
    cluster.shutdown().await?;
    Ok(())
}
