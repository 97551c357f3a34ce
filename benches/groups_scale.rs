//! Multi-Raft scale: G groups × 3 replicas on 3 in-process nodes, in memory.
//!
//! Measures, for each G:
//! - resident bytes per hibernating replica (RSS growth / replicas, storage included);
//! - CPU time per second of idle wall time with every group hibernating (the driver's cost of one
//!   second's worth of ticks at 100 ticks/s, measured as busy time);
//! - heartbeat batches per ordered node pair per heartbeat interval while idle;
//! - committed writes/s with proposals spread over all groups, and over 64 hot groups.
//!
//! Run: `cargo bench --bench groups_scale` (all sizes) or `BENCH_GROUPS=1000,10000 cargo bench --bench
//! groups_scale`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tickraft::groups::{Groups, GroupsConfig, NodeBatch};
use tickraft::{Config, Membership};

#[path = "support/mod.rs"]
mod support;

use support::{BenchLog, B};

/// Counts live heap bytes, so that memory per replica is exact rather than read off the RSS (which
/// keeps whatever the allocator has not returned to the OS).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

struct Node {
    groups: Groups<B, BenchLog>,
    logs: Vec<BenchLog>,
    applied: u64,
}

struct Cluster {
    nodes: BTreeMap<u64, Node>,
    queue: VecDeque<NodeBatch<B>>,
    heartbeat_batches: BTreeMap<(u64, u64), u64>,
}

impl Cluster {
    /// The durable logs of every replica, created apart so that their memory can be told apart from the
    /// driver's.
    fn logs(g: u64) -> BTreeMap<u64, Vec<BenchLog>> {
        (1..=3u64)
            .map(|id| {
                let logs = (0..g)
                    .map(|_| BenchLog::new(Membership::new_voters([1, 2, 3])))
                    .collect();
                (id, logs)
            })
            .collect()
    }

    fn new(mut all_logs: BTreeMap<u64, Vec<BenchLog>>) -> Self {
        let raft = Config::default().validated().expect("valid config");
        let mut nodes = BTreeMap::new();
        for id in 1..=3u64 {
            let mut groups = Groups::new(id, 1, raft.clone(), GroupsConfig::default(), 42)
                .expect("valid groups config");
            for peer in 1..=3 {
                groups.add_peer(peer);
            }
            let logs = all_logs.remove(&id).unwrap_or_default();
            for (group, log) in logs.iter().enumerate() {
                groups
                    .create_group(group as u64, log.clone(), 0)
                    .expect("new group");
            }
            nodes.insert(
                id,
                Node {
                    groups,
                    logs,
                    applied: 0,
                },
            );
        }
        Cluster {
            nodes,
            queue: VecDeque::new(),
            heartbeat_batches: BTreeMap::new(),
        }
    }

    fn process(&mut self) {
        for node in self.nodes.values_mut() {
            while let Some(mut ready) = node.groups.ready().expect("ready") {
                self.queue.extend(ready.take_batches());
                for w in ready.take_writes() {
                    node.logs[w.group as usize]
                        .write(&w.writes.entries, w.writes.hard_state.as_ref());
                }
                let mut persisted = ready.persisted();
                self.queue.extend(persisted.take_batches());
                for apply in persisted.applies() {
                    node.applied += apply.committed.len() as u64;
                }
                node.groups.advance(persisted).expect("advance");
            }
        }
    }

    fn deliver(&mut self) {
        loop {
            self.process();
            if self.queue.is_empty() {
                break;
            }
            while let Some(batch) = self.queue.pop_front() {
                if batch.messages.is_empty() && batch.heartbeat_responses.is_empty() {
                    *self
                        .heartbeat_batches
                        .entry((batch.from, batch.to))
                        .or_default() += 1;
                }
                let to = batch.to;
                let node = self.nodes.get_mut(&to).expect("node");
                let rejected = node.groups.step(batch).expect("step");
                assert!(rejected.is_empty(), "{rejected:?}");
            }
        }
    }

    fn tick(&mut self) {
        for node in self.nodes.values_mut() {
            node.groups.tick().expect("tick");
        }
        self.deliver();
    }

    fn leader_of(&self, group: u64) -> Option<u64> {
        self.nodes
            .iter()
            .find(|(_, n)| n.groups.core(group).is_some_and(|c| c.is_leader()))
            .map(|(id, _)| *id)
    }

    fn awake(&self) -> usize {
        self.nodes.values().map(|n| n.groups.stats().awake).sum()
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Commits `total` writes spread over `targets`, `outstanding` in flight per round; returns writes/s.
fn write_throughput(c: &mut Cluster, targets: &[u64], total: u64, per_round: usize) -> f64 {
    let leaders: Vec<(u64, u64)> = targets
        .iter()
        .map(|g| (*g, c.leader_of(*g).expect("leader")))
        .collect();
    let payload = Bytes::from_static(b"0123456789abcdef");
    let applied_before: u64 = c.nodes.values().map(|n| n.applied).sum();
    let start = Instant::now();
    let mut proposed = 0u64;
    let mut next = 0usize;
    while proposed < total {
        for _ in 0..per_round {
            let (group, leader) = leaders[next % leaders.len()];
            next += 1;
            let node = c.nodes.get_mut(&leader).expect("leader node");
            node.groups
                .propose(group, payload.clone())
                .expect("propose");
            proposed += 1;
        }
        c.deliver();
    }
    // Every write is committed and applied by its leader once the network is quiet.
    let elapsed = start.elapsed().as_secs_f64();
    // Followers learn the last commit index from the next heartbeats; check they applied everything.
    for _ in 0..4 {
        c.tick();
    }
    let applied: u64 = c.nodes.values().map(|n| n.applied).sum::<u64>() - applied_before;
    assert!(applied >= 3 * total, "applied {applied} of {}", 3 * total);
    total as f64 / elapsed
}

fn run(g: u64) {
    let heap_start = live_bytes();
    let logs = Cluster::logs(g);
    let heap_before = live_bytes();
    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut c = Cluster::new(logs);
    let mut ticks = 0;
    while (0..g).any(|group| c.leader_of(group).is_none()) || c.awake() > 0 {
        c.tick();
        ticks += 1;
        assert!(ticks < 2000, "groups did not settle");
    }
    let settle = started.elapsed();
    let rss_after = rss_bytes();
    let heap_after = live_bytes();
    let replicas = (3 * g) as f64;
    // Live heap bytes of the driver (cores, slots, index), and with the in-memory log; RSS for reference.
    let per_replica = heap_after.saturating_sub(heap_before) as f64 / replicas;
    let with_log = heap_after.saturating_sub(heap_start) as f64 / replicas;
    let rss_per_replica = rss_after.saturating_sub(rss_before) as f64 / replicas;

    // Idle: 100 ticks (one second at 10 ms per tick), every group hibernating.
    c.heartbeat_batches.clear();
    let idle_ticks = 100;
    let start = Instant::now();
    for _ in 0..idle_ticks {
        c.tick();
    }
    let idle = start.elapsed();
    assert_eq!(c.awake(), 0);
    let interval = u64::from(Config::default().heartbeat_ticks);
    let pairs = c.heartbeat_batches.len() as u64;
    let per_pair_interval = c.heartbeat_batches.values().sum::<u64>() as f64
        / (pairs.max(1) * (idle_ticks / interval)) as f64;

    let all: Vec<u64> = (0..g).collect();
    let spread_writes: u64 = std::env::var("BENCH_SPREAD_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(g.max(100_000));
    let spread = write_throughput(&mut c, &all, spread_writes, 1000);
    let hot: Vec<u64> = (0..64.min(g)).collect();
    let hot_rate = write_throughput(&mut c, &hot, spread_writes.min(50_000), 1000);

    println!(
        "| {g:>7} | {:>9.1} s | {per_replica:>9.0} B | {with_log:>9.0} B | {rss_per_replica:>9.0} B | {:>7.3}% | {per_pair_interval:>16.2} | {spread:>15.0} | {hot_rate:>15.0} |",
        settle.as_secs_f64(),
        idle.as_secs_f64() * 100.0,
    );
}

fn main() {
    let sizes: Vec<u64> = std::env::var("BENCH_GROUPS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    println!("| groups  | elect+sleep | heap/replica | with log    | RSS/replica | idle CPU | hb/pair/interval | writes/s spread | writes/s 64 hot |");
    println!("|---------|-------------|--------------|-------------|-------------|----------|------------------|-----------------|-----------------|");
    for g in sizes {
        run(g);
    }
}
