//! The tickraft demo: a 3-node cluster in one process, over loopback TCP, with sled in a temporary
//! directory and 64 shards (one Raft group each). It runs a mixed workload (puts, linearizable reads,
//! compare-and-sets) for about ten seconds, stops one node in the middle and restarts it from disk, then
//! prints throughput, latency, leaders per node, entries per sync, and the linearizability verdict of the
//! whole client history.
//!
//! Run: `cargo run --release --example demo` (`DEMO_SECONDS=30` for a longer run).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tickraft::runtime::ClientError;
use tickraft::sim::linearizability::{check_with_budget, History, Op, Output, Verdict};
use tickraft::Membership;
use tickraft_storage_mem::{KvCommand, KvResponse};

use common::{Cluster, Handle, Kv};

const NODES: u64 = 3;
const SHARDS: u64 = 64;
const KEYS_PER_SHARD: u64 = 4;
const CLIENTS: u64 = 128;

/// One client operation as recorded for the checker.
struct Record {
    client: u64,
    op: Op,
    call: u64,
    /// `None`: the outcome is unknown (timeout, node stopped).
    result: Option<(Output, u64)>,
}

struct Shared {
    start: Instant,
    stop: AtomicBool,
    /// The shard → node that last answered as its leader.
    leaders: Mutex<BTreeMap<u64, u64>>,
    /// The handles of the running nodes; a stopped node is absent.
    handles: Mutex<BTreeMap<u64, Handle>>,
    records: Mutex<Vec<Record>>,
    write_latency_us: Mutex<Vec<u64>>,
    read_latency_us: Mutex<Vec<u64>>,
    ok_ops: AtomicU64,
    failed_ops: AtomicU64,
}

impl Shared {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

fn key_name(key: u64) -> String {
    format!("k{key}")
}

/// A small deterministic generator for the workload (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

enum Outcome {
    Done(KvResponse),
    Read(Option<String>),
    /// Definitely not applied (not the leader, overloaded...): not recorded.
    Refused,
    /// May or may not have been applied.
    Unknown,
}

async fn client(id: u64, shared: Arc<Shared>) {
    let mut rng = Rng(id.wrapping_mul(0x1234_5678_9abc_def1));
    let mut counter = 0u64;
    // The last value this client saw for each key: what its compare-and-sets expect.
    let mut seen: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let key = rng.next() % (SHARDS * KEYS_PER_SHARD);
        let shard = key / KEYS_PER_SHARD;
        counter += 1;
        let value = (id << 32) | counter;
        let (op, command) = match rng.next() % 10 {
            0..=4 => (
                Op::Put { key, value },
                Some(KvCommand::Set {
                    key: key_name(key),
                    value: value.to_string(),
                }),
            ),
            5..=7 => (Op::Get { key }, None),
            _ => {
                let expected = seen.get(&key).copied().flatten();
                (
                    Op::Cas {
                        key,
                        expected,
                        new: value,
                    },
                    Some(KvCommand::CompareAndSet {
                        key: key_name(key),
                        expected: expected.map(|v| v.to_string()),
                        new: value.to_string(),
                    }),
                )
            }
        };
        let target = {
            let leaders = shared.leaders.lock().unwrap_or_else(|p| p.into_inner());
            leaders.get(&shard).copied().unwrap_or(1 + shard % NODES)
        };
        let handle = {
            let handles = shared.handles.lock().unwrap_or_else(|p| p.into_inner());
            handles.get(&target).cloned()
        };
        let Some(handle) = handle else {
            // The node we thought leads is down: try another next time.
            shared
                .leaders
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(shard, 1 + (target % NODES));
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        let call = shared.now();
        let outcome = match &command {
            Some(command) => match handle.propose(shard, command.encode()).await {
                Ok(response) => Outcome::Done(response),
                Err(e) => classify(&shared, shard, target, e),
            },
            None => {
                let name = key_name(key);
                match handle
                    .read(shard, move |m| m.get(&name).map(str::to_string))
                    .await
                {
                    Ok(value) => Outcome::Read(value),
                    Err(e) => match classify(&shared, shard, target, e) {
                        // A read without an answer had no effect: nothing to record.
                        Outcome::Unknown => Outcome::Refused,
                        other => other,
                    },
                }
            }
        };
        let ret = shared.now();
        let latency_us = (ret - call) / 1000;
        let parse = |s: &Option<String>| s.as_ref().and_then(|v| v.parse::<u64>().ok());
        let result = match outcome {
            Outcome::Done(KvResponse::Done { .. }) => {
                seen.insert(key, Some(value));
                shared
                    .write_latency_us
                    .lock()
                    .map(|mut l| l.push(latency_us))
                    .ok();
                Some(Some((Output::Put, ret)))
            }
            Outcome::Done(KvResponse::Compared { swapped, previous }) => {
                seen.insert(
                    key,
                    if swapped {
                        Some(value)
                    } else {
                        parse(&previous)
                    },
                );
                shared
                    .write_latency_us
                    .lock()
                    .map(|mut l| l.push(latency_us))
                    .ok();
                Some(Some((Output::Cas(swapped), ret)))
            }
            Outcome::Done(_) => None,
            Outcome::Read(found) => {
                seen.insert(key, parse(&found));
                shared
                    .read_latency_us
                    .lock()
                    .map(|mut l| l.push(latency_us))
                    .ok();
                Some(Some((Output::Get(parse(&found)), ret)))
            }
            Outcome::Refused => None,
            Outcome::Unknown => Some(None),
        };
        match result {
            Some(result) => {
                if result.is_some() {
                    shared.ok_ops.fetch_add(1, Ordering::Relaxed);
                } else {
                    shared.failed_ops.fetch_add(1, Ordering::Relaxed);
                }
                let mut records = shared.records.lock().unwrap_or_else(|p| p.into_inner());
                records.push(Record {
                    client: id,
                    op,
                    call,
                    result,
                });
            }
            None => {
                shared.failed_ops.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Sorts an error into "definitely not applied" or "unknown", and learns the leader from hints.
fn classify(shared: &Shared, shard: u64, target: u64, error: ClientError<Kv>) -> Outcome {
    match error {
        ClientError::NotLeader { leader } => {
            let mut leaders = shared.leaders.lock().unwrap_or_else(|p| p.into_inner());
            leaders.insert(shard, leader.unwrap_or(1 + target % NODES));
            Outcome::Refused
        }
        ClientError::Overloaded | ClientError::Dropped | ClientError::GroupNotFound { .. } => {
            Outcome::Refused
        }
        _ => Outcome::Unknown,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn bar(fraction: f64, width: usize) -> String {
    let filled = (fraction.clamp(0.0, 1.0) * width as f64) as usize;
    format!("{}{}", "#".repeat(filled), ".".repeat(width - filled))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let seconds: u64 = std::env::var("DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    let dir = tempfile::tempdir().context("creating a temporary directory for sled")?;
    println!(
        "tickraft demo: {NODES} nodes over loopback TCP, sled in {}",
        dir.path().display()
    );
    println!("{SHARDS} shards (one Raft group each), {CLIENTS} clients, {seconds} s of puts, reads and compare-and-sets");

    let mut cluster = Cluster::start(dir.path(), NODES, Cluster::example_config()).await?;
    let voters = Membership::new_voters(1..=NODES);
    for id in 1..=NODES {
        let handle = cluster.handle(id).context("a started node")?;
        for shard in 0..SHARDS {
            handle
                .create_group(shard, voters.clone())
                .await
                .map_err(|e| anyhow::anyhow!("creating shard {shard} on node {id}: {e}"))?;
        }
    }
    let started = Instant::now();
    cluster
        .wait_for_leaders(0..SHARDS, Duration::from_secs(30))
        .await?;
    // Spread the shard leaders evenly over the nodes.
    let leaders = cluster.leaders().await;
    for shard in 0..SHARDS {
        let want = 1 + shard % NODES;
        if let (Some(&now), Some(handle)) = (leaders.get(&shard), cluster.handle(leaders[&shard])) {
            if now != want {
                let _ = handle.transfer_leadership(shard, want).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaders = cluster
        .wait_for_leaders(0..SHARDS, Duration::from_secs(30))
        .await?;
    println!(
        "all shards elected a leader in {:.2} s; leaders spread over the nodes",
        started.elapsed().as_secs_f64()
    );

    let shared = Arc::new(Shared {
        start: Instant::now(),
        stop: AtomicBool::new(false),
        leaders: Mutex::new(leaders),
        handles: Mutex::new(
            (1..=NODES)
                .filter_map(|id| cluster.handle(id).map(|h| (id, h)))
                .collect(),
        ),
        records: Mutex::new(Vec::new()),
        write_latency_us: Mutex::new(Vec::new()),
        read_latency_us: Mutex::new(Vec::new()),
        ok_ops: AtomicU64::new(0),
        failed_ops: AtomicU64::new(0),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, shared.clone())))
        .collect();

    // The fault: node 3 stops at 40% of the run and comes back from disk at 60%.
    let victim = NODES;
    let stop_at = duration.mul_f64(0.4);
    let restart_at = duration.mul_f64(0.6);
    let mut phase = "all nodes up";
    let mut stopped = false;
    let mut restarted = false;
    while shared.start.elapsed() < duration {
        let elapsed = shared.start.elapsed();
        if !stopped && elapsed >= stop_at {
            shared
                .handles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&victim);
            cluster.stop(victim).await?;
            stopped = true;
            phase = "node 3 stopped";
        }
        if stopped && !restarted && elapsed >= restart_at {
            cluster.restart(victim).await?;
            if let Some(h) = cluster.handle(victim) {
                shared
                    .handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(victim, h);
            }
            restarted = true;
            phase = "node 3 restarted from disk";
        }
        if restarted && phase != "leaders rebalanced" && elapsed >= restart_at.mul_f64(1.2) {
            // Hand node 3 its shards back, as an operator would after a restart.
            let leaders = cluster.leaders().await;
            for (shard, now) in leaders {
                let want = 1 + shard % NODES;
                if now != want {
                    if let Some(h) = cluster.handle(now) {
                        let _ = h.transfer_leadership(shard, want).await;
                    }
                }
            }
            phase = "leaders rebalanced";
        }
        let ok = shared.ok_ops.load(Ordering::Relaxed);
        eprint!(
            "\r[{}] {:>5.1} s  {:>9} ops  {:>8.0} ops/s  {:<28}",
            bar(elapsed.as_secs_f64() / duration.as_secs_f64(), 30),
            elapsed.as_secs_f64(),
            ok,
            ok as f64 / elapsed.as_secs_f64().max(0.001),
            phase
        );
        let _ = std::io::stderr().flush();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let elapsed = shared.start.elapsed().as_secs_f64();
    eprintln!();

    // Let node 3 catch up, then gather what the nodes say about themselves.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaders = cluster.leaders().await;
    let mut per_node: BTreeMap<u64, usize> = (1..=NODES).map(|id| (id, 0)).collect();
    for node in leaders.values() {
        *per_node.entry(*node).or_default() += 1;
    }
    let mut entries = 0u64;
    let mut syncs = 0u64;
    for id in 1..=NODES {
        if let Some(h) = cluster.handle(id) {
            if let Ok(m) = h.metrics().await {
                entries += m.entries_written;
                syncs += m.syncs;
            }
        }
    }

    let ok = shared.ok_ops.load(Ordering::Relaxed);
    let failed = shared.failed_ops.load(Ordering::Relaxed);
    let mut writes = std::mem::take(
        &mut *shared
            .write_latency_us
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    let mut reads = std::mem::take(
        &mut *shared
            .read_latency_us
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    writes.sort_unstable();
    reads.sort_unstable();

    println!();
    println!(
        "throughput      {:.0} ops/s ({} ok, {} refused or unknown, {:.1} s)",
        ok as f64 / elapsed,
        ok,
        failed,
        elapsed
    );
    println!(
        "                {:.0} writes/s, {:.0} linearizable reads/s",
        writes.len() as f64 / elapsed,
        reads.len() as f64 / elapsed
    );
    println!(
        "write latency   p50 {:.2} ms   p99 {:.2} ms",
        percentile(&writes, 0.5),
        percentile(&writes, 0.99)
    );
    println!(
        "read latency    p50 {:.2} ms   p99 {:.2} ms",
        percentile(&reads, 0.5),
        percentile(&reads, 0.99)
    );
    println!(
        "leaders         {}",
        per_node
            .iter()
            .map(|(id, n)| format!("node {id}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "entries/sync    {:.1} ({entries} entries in {syncs} syncs, all nodes)",
        if syncs == 0 {
            0.0
        } else {
            entries as f64 / syncs as f64
        }
    );

    // Check the whole history.
    let records = std::mem::take(&mut *shared.records.lock().unwrap_or_else(|p| p.into_inner()));
    let mut history = History::new();
    for r in &records {
        let id = history.call(r.client, r.op, r.call);
        let recorded = match r.result {
            Some((output, time)) => history.ok(id, output, time.max(r.call + 1)),
            None => history.unknown(id),
        };
        recorded.map_err(|e| anyhow::anyhow!("recording the history: {e}"))?;
    }
    let checking = Instant::now();
    let verdict = check_with_budget(&history, 50_000_000);
    let verdict_text = match &verdict {
        Verdict::Linearizable => "LINEARIZABLE".to_string(),
        Verdict::NotLinearizable { key, .. } => format!("NOT LINEARIZABLE (key {key})"),
        Verdict::Timeout { key } => format!("undecided: the checker's budget ran out on key {key}"),
    };
    println!(
        "linearizability {verdict_text} ({} operations checked in {:.2} s)",
        records.len(),
        checking.elapsed().as_secs_f64()
    );
    cluster.shutdown().await?;
    if let Verdict::NotLinearizable { .. } = verdict {
        println!("{verdict}");
        std::process::exit(1);
    }
    Ok(())
}
