//! A TiKV-like sharded key-value store: keys map to N shards, each shard is a Raft group, and the shard
//! leaders are spread over the nodes. Three nodes over loopback TCP with sled share one driver each: every
//! cycle writes all shards' entries in one sled batch with one flush, and sends one batch per peer.
//!
//! Run: `cargo run --release --example sharded_kv` (`SHARDS=256` for more shards).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tickraft::runtime::ClientError;
use tickraft::Membership;
use tickraft_storage_mem::KvCommand;
use tokio::sync::RwLock;

use common::{Cluster, Handle};

/// Maps keys to shards and shards to the node that leads them.
struct Router {
    shards: u64,
    handles: BTreeMap<u64, Handle>,
    leaders: RwLock<BTreeMap<u64, u64>>,
}

impl Router {
    fn shard_of(&self, key: &str) -> u64 {
        // A fixed hash: every client must map a key to the same shard.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        hasher.finish() % self.shards
    }

    async fn put(&self, key: &str, value: &str) -> Result<()> {
        let shard = self.shard_of(key);
        let command = KvCommand::Set {
            key: key.to_string(),
            value: value.to_string(),
        }
        .encode();
        for _ in 0..50 {
            let node = self.leader(shard).await;
            match self.handles[&node].propose(shard, command.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => self.learn(shard, node, e).await?,
            }
        }
        Err(anyhow!("shard {shard}: no leader"))
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        let shard = self.shard_of(key);
        for _ in 0..50 {
            let node = self.leader(shard).await;
            let k = key.to_string();
            match self.handles[&node]
                .read(shard, move |m| m.get(&k).map(str::to_string))
                .await
            {
                Ok(value) => return Ok(value),
                Err(e) => self.learn(shard, node, e).await?,
            }
        }
        Err(anyhow!("shard {shard}: no leader"))
    }

    async fn leader(&self, shard: u64) -> u64 {
        self.leaders.read().await.get(&shard).copied().unwrap_or(1)
    }

    /// Follows a NotLeader hint; other errors end the request.
    async fn learn(&self, shard: u64, asked: u64, error: ClientError<common::Kv>) -> Result<()> {
        match error {
            ClientError::NotLeader { leader } => {
                let next = leader.unwrap_or(1 + asked % self.handles.len() as u64);
                self.leaders.write().await.insert(shard, next);
                if leader.is_none() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(())
            }
            other => Err(anyhow!("shard {shard}: {other}")),
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let shards: u64 = std::env::var("SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::start(dir.path(), 3, Cluster::example_config()).await?;
    for id in 1..=3 {
        let handle = cluster.handle(id).context("a running node")?;
        for shard in 0..shards {
            handle
                .create_group(shard, Membership::new_voters([1, 2, 3]))
                .await
                .map_err(|e| anyhow!("creating shard {shard}: {e}"))?;
        }
    }
    let leaders = cluster
        .wait_for_leaders(0..shards, Duration::from_secs(30))
        .await?;
    // Spread the leaders: shard s is led by node 1 + s % 3.
    for (shard, leader) in &leaders {
        let want = 1 + shard % 3;
        if *leader != want {
            if let Some(h) = cluster.handle(*leader) {
                let _ = h.transfer_leadership(*shard, want).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leaders = cluster
        .wait_for_leaders(0..shards, Duration::from_secs(30))
        .await?;
    let mut per_node: BTreeMap<u64, u64> = BTreeMap::new();
    for node in leaders.values() {
        *per_node.entry(*node).or_default() += 1;
    }
    println!("{shards} shards; leaders per node: {per_node:?}");

    let router = Arc::new(Router {
        shards,
        handles: (1..=3)
            .filter_map(|id| cluster.handle(id).map(|h| (id, h)))
            .collect(),
        leaders: RwLock::new(leaders),
    });
    let keys = 2_000u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..64u64 {
        let router = router.clone();
        tasks.push(tokio::spawn(async move {
            let mut key = worker;
            while key < keys {
                router
                    .put(&format!("user:{key}"), &format!("v{key}"))
                    .await?;
                key += 64;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "wrote {keys} keys in {elapsed:.2} s ({:.0} writes/s)",
        keys as f64 / elapsed
    );
    for key in [0, 7, 1_234, 1_999] {
        let name = format!("user:{key}");
        let value = router.get(&name).await?;
        println!(
            "  {name:<10} shard {:>3} -> {value:?}",
            router.shard_of(&name)
        );
        if value != Some(format!("v{key}")) {
            return Err(anyhow!("{name} has the wrong value"));
        }
    }
    let mut entries = 0;
    let mut syncs = 0;
    for id in 1..=3 {
        if let Some(h) = cluster.handle(id) {
            let m = h.metrics().await.map_err(|e| anyhow!("metrics: {e}"))?;
            entries += m.entries_written;
            syncs += m.syncs;
        }
    }
    println!(
        "storage: {entries} entries in {syncs} syncs ({:.1} entries per sync, all shards together)",
        entries as f64 / syncs.max(1) as f64
    );
    cluster.shutdown().await?;
    Ok(())
}
