//! Single group, 3 replicas in one process, in memory, 16-byte payloads: the cost of the core itself.
//!
//! - committed writes/s with K = 256 proposals outstanding (as fast as the loop can drive it);
//! - mean and p50/p99 propose-to-applied latency with K = 1 (one write at a time).
//!
//! A "cycle" delivers every message and runs every replica's Ready to completion, the way a runtime
//! would with instant I/O. Run: `cargo bench --bench core_throughput`.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use tickraft::{Config, Envelope, Membership, RaftCore, Role};

#[path = "support/mod.rs"]
mod support;

use support::{BenchLog, B};

struct Replica {
    core: RaftCore<B, BenchLog>,
    log: BenchLog,
    applied: u64,
}

struct Cluster {
    replicas: Vec<Replica>,
    queue: VecDeque<(u64, Envelope<B>)>,
}

impl Cluster {
    fn new() -> Self {
        let config = Config {
            max_inflight_appends: 4096,
            ..Config::default()
        }
        .validated()
        .expect("valid config");
        let replicas = (1..=3u64)
            .map(|id| {
                let log = BenchLog::new(Membership::new_voters([1, 2, 3]));
                let core = RaftCore::new(id, config.clone(), log.clone(), 0, id).expect("core");
                Replica {
                    core,
                    log,
                    applied: 0,
                }
            })
            .collect();
        let mut c = Cluster {
            replicas,
            queue: VecDeque::new(),
        };
        while c.replicas[0].core.role() != Role::Leader {
            c.replicas[0].core.tick().expect("tick");
            c.run();
        }
        c
    }

    /// Runs Readies and delivers messages until nothing moves.
    fn run(&mut self) {
        loop {
            for (i, r) in self.replicas.iter_mut().enumerate() {
                let id = i as u64 + 1;
                while let Some(mut ready) = r.core.ready().expect("ready") {
                    for m in ready.take_messages() {
                        self.queue.push_back((id, m));
                    }
                    r.log.write(ready.entries(), ready.hard_state());
                    let mut persisted = ready.persisted();
                    for m in persisted.take_messages() {
                        self.queue.push_back((id, m));
                    }
                    r.applied += persisted.committed().len() as u64;
                    r.core.advance(persisted).expect("advance");
                }
            }
            if self.queue.is_empty() {
                return;
            }
            while let Some((from, env)) = self.queue.pop_front() {
                let to = (env.to - 1) as usize;
                self.replicas[to]
                    .core
                    .step(from, env.message)
                    .expect("step");
            }
        }
    }
}

fn throughput(k: usize, total: u64) -> f64 {
    let mut c = Cluster::new();
    let payload = Bytes::from_static(b"0123456789abcdef");
    let base = c.replicas[0].applied;
    let start = Instant::now();
    let mut proposed = 0u64;
    while c.replicas[0].applied - base < total {
        let outstanding = proposed - (c.replicas[0].applied - base);
        let room = (k as u64).saturating_sub(outstanding).min(total - proposed);
        if room > 0 {
            c.replicas[0]
                .core
                .propose_batch((0..room).map(|_| payload.clone()))
                .expect("propose");
            proposed += room;
        }
        c.run();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn latency(samples: usize) -> (f64, f64, f64) {
    let mut c = Cluster::new();
    let payload = Bytes::from_static(b"0123456789abcdef");
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let before = c.replicas[0].applied;
        let start = Instant::now();
        c.replicas[0]
            .core
            .propose(payload.clone())
            .expect("propose");
        while c.replicas[0].applied == before {
            c.run();
        }
        lat.push(start.elapsed().as_nanos() as f64 / 1000.0);
    }
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    lat.sort_by(|a, b| a.total_cmp(b));
    (mean, lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

fn main() {
    let total: u64 = std::env::var("BENCH_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    // Warm up the allocator and caches.
    throughput(256, 100_000);
    let k256 = throughput(256, total);
    let k1 = throughput(1, total / 20);
    let (mean, p50, p99) = latency(100_000);
    println!("| measure | value |");
    println!("|---|---|");
    println!("| committed writes/s, K = 256 | {k256:.0} |");
    println!("| committed writes/s, K = 1 | {k1:.0} |");
    println!("| propose-to-applied latency, K = 1: mean | {mean:.2} µs |");
    println!("| propose-to-applied latency, K = 1: p50 / p99 | {p50:.2} / {p99:.2} µs |");
}
