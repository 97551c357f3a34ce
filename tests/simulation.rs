//! Deterministic simulation of tickraft clusters under faults. See `tickraft::sim`.
//!
//! - `SIM_SEED=<n> cargo test -p tickraft --test simulation replay_seed -- --nocapture` replays one seed.
//! - `SIM_SEEDS=100000 SIM_SEED_BASE=<b> cargo test --release -p tickraft --test simulation -- --ignored soak`
//!   runs a soak.

#[path = "support/seeds.rs"]
mod seeds;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use tickraft::sim::{run, run_seed, Cluster, FaultMix, Report, SimConfig, SimFailure};

use seeds::{derive_seed, env_u64};

/// Seeds that once failed; they must keep passing. A seed stands for its [`SimConfig::swarm`] configuration, so
/// these replay the original failure only as long as the swarm generator and the simulator do not change.
const REGRESSION_SEEDS: &[u64] = &[
    // Safety: a single voter led a term it had not made durable; after a crash it won the same term again
    // (two leaders in one term; conflicting entries under one term on a learner).
    3_702_259_739_128_176_399,
    15_864_405_426_856_154_181,
    // Checker: a leadership lost in a crash before its term was durable (nothing sent) was taken for a
    // second leader of that term.
    813_422_359_671_396_070,
    // Liveness bound: a backlog of thousands of one-entry appends under reordering outlasted it.
    592_688_871_659_161_378,
    6_732_651_009_716_697_390,
    15_490_576_710_231_829_492,
    // A snapshot superseded while its Ready was outstanding was installed but not counted as applied.
    18_371_994_974_079_757_443,
    // Liveness: a leader outside an uncommitted C_new stepped down; nobody could be elected.
    5_045_334_014_327_658_732,
    // Liveness: a candidate behind in term never learned the current term (stale vote requests were dropped).
    11_256_200_755_415_862_326,
    // compaction_point failed while a received snapshot waited to be installed.
    10_971_602_091_471_322_960,
    12_156_316_153_804_150_177,
    // Snapshot chunk/response chains multiplied into a message storm.
    5_565_213_955_028_333_382,
    1_184_187_981_364_309_207,
    // Lease reads: a partitioned leader served stale reads after a new leader committed.
    452_972_065_164_750_146,
    // (Sim check) leader completeness must skip entries compacted into the leader's snapshot.
    1_472_602_898_652_641_219,
    // Safety: an append acknowledgement of an older term outlived the truncation of what it vouched for.
    795_896_580_451_576_772,
    5_192_429_766_802_348_444,
    12_425_159_434_004_759_115,
    // Reordering: stale answers from an old window opened full new windows (append message storm).
    3_019_311_019_032_726_581,
    3_826_436_926_654_686_274,
    1_475_911_648_071_138_971,
    13_676_178_334_734_286_759,
];

/// The base from which the CI seeds derive.
const CI_SEED_BASE: u64 = 0x7469_636b_7261_6674; // "tickraft"
const CI_SEEDS: u64 = 1000;

/// What a batch of seeds did.
struct Batch {
    failures: Vec<SimFailure>,
    ops: u64,
    /// The slowest seeds and their run time in seconds, slowest first.
    slowest: Vec<(u64, f64)>,
}

/// Runs `count` seeds derived from `base` on `threads` threads.
fn run_many(base: u64, count: u64, threads: usize) -> Batch {
    let next = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let slowest = Mutex::new(Vec::new());
    let ops = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let seed = derive_seed(base, i);
                let start = std::time::Instant::now();
                let result = run_seed(seed);
                let secs = start.elapsed().as_secs_f64();
                {
                    let mut slow = slowest.lock().unwrap_or_else(|p| p.into_inner());
                    slow.push((seed, secs));
                    slow.sort_by(|a, b| b.1.total_cmp(&a.1));
                    slow.truncate(5);
                }
                match result {
                    Ok(report) => {
                        ops.fetch_add(report.ops_ok, Ordering::Relaxed);
                    }
                    Err(failure) => failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(failure),
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort_by_key(|f| f.seed);
    Batch {
        failures,
        ops: ops.into_inner() as u64,
        slowest: slowest.into_inner().unwrap_or_else(|p| p.into_inner()),
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(2))
}

fn assert_no_failures(failures: &[SimFailure], count: u64) {
    if failures.is_empty() {
        return;
    }
    // Group by the kind of failure (the reason with its numbers blanked), listing a few seeds of each.
    let mut kinds: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for f in failures {
        let kind: String = f
            .reason
            .chars()
            .take(60)
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        kinds.entry(kind).or_default().push(f.seed);
    }
    let mut msg = format!("{} of {count} seeds failed, by kind:\n", failures.len());
    for (kind, seeds) in &kinds {
        let shown: Vec<String> = seeds.iter().take(8).map(u64::to_string).collect();
        msg.push_str(&format!(
            "  {:>5} × {kind}…  e.g. {}\n",
            seeds.len(),
            shown.join(" ")
        ));
    }
    msg.push('\n');
    for f in failures.iter().take(5) {
        msg.push_str(&format!("{f}\n\n"));
    }
    panic!("{msg}");
}

#[test]
fn calm_cluster_serves_clients() {
    let report = run(SimConfig::calm(1)).unwrap_or_else(|f| panic!("{f}"));
    println!("{report:?}");
    assert!(report.ops_ok > 100, "{report:?}");
    assert_eq!(report.ops_unknown, 0, "{report:?}");
    assert_eq!(report.crashes, 0);
}

#[test]
fn all_faults_at_once() {
    for seed in 0..4 {
        let config = SimConfig {
            faults: FaultMix::all(),
            nodes: if seed % 2 == 0 { 3 } else { 5 },
            ..SimConfig::calm(seed)
        };
        let report = run(config).unwrap_or_else(|f| panic!("{f}"));
        assert!(report.crashes > 0, "{report:?}");
    }
}

#[test]
fn same_seed_same_trace() {
    for seed in [3, 0xdead_beef] {
        let a: Report = run_seed(seed).unwrap_or_else(|f| panic!("{f}"));
        let b: Report = run_seed(seed).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(a, b, "seed {seed} does not replay");
    }
    let a = run_seed(3).map(|r| r.trace_hash).ok();
    let b = run_seed(4).map(|r| r.trace_hash).ok();
    assert_ne!(a, b, "different seeds should give different traces");
}

#[test]
fn regression_seeds() {
    let failures: Vec<SimFailure> = REGRESSION_SEEDS
        .iter()
        .filter_map(|seed| run_seed(*seed).err())
        .collect();
    assert_no_failures(&failures, REGRESSION_SEEDS.len() as u64);
}

#[test]
fn random_seeds() {
    let batch = run_many(CI_SEED_BASE, CI_SEEDS, threads());
    assert_no_failures(&batch.failures, CI_SEEDS);
}

/// Replays `SIM_SEED` (does nothing without it), printing the report.
#[test]
fn replay_seed() {
    let Some(seed) = env_u64("SIM_SEED") else {
        return;
    };
    // SIM_LOG=<n> attaches the last n events to a failure (default 300).
    let config = SimConfig {
        log_events: env_u64("SIM_LOG").unwrap_or(300) as usize,
        ..SimConfig::swarm(seed)
    };
    println!("seed {seed}: {}", config.summary());
    match run(config) {
        Ok(report) => println!("{report:?}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// `SIM_SEEDS` seeds (default 100000) derived from `SIM_SEED_BASE` (default the CI base + 1000).
#[test]
#[ignore = "soak: run with --release -- --ignored soak"]
fn soak_many_seeds() {
    let count = env_u64("SIM_SEEDS").unwrap_or(100_000);
    let base = env_u64("SIM_SEED_BASE").unwrap_or(CI_SEED_BASE + 1_000);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let start = std::time::Instant::now();
    let batch = run_many(base, count, threads);
    println!(
        "soak: {count} seeds from base {base:#x} on {threads} threads in {:.1}s, {} client ops answered, {} failed",
        start.elapsed().as_secs_f64(),
        batch.ops,
        batch.failures.len()
    );
    for (seed, secs) in &batch.slowest {
        println!("  slow: seed {seed} took {secs:.2}s");
    }
    assert_no_failures(&batch.failures, count);
}

/// Writes the readable event log of `SIM_SEED`'s run (fault phase and the start of the liveness phase) to
/// `SIM_DUMP` (default `target/sim-<seed>.log`) and prints how many messages of each kind were delivered.
#[test]
#[ignore = "diagnostics: SIM_SEED=<n> [SIM_DUMP=<path>] ... -- --ignored dump_trace --nocapture"]
fn dump_trace() {
    let Some(seed) = env_u64("SIM_SEED") else {
        return;
    };
    let config = SimConfig {
        log_events: usize::MAX,
        ..SimConfig::swarm(seed)
    };
    let ticks = config.ticks;
    let mut cluster = Cluster::new(config).unwrap_or_else(|f| panic!("{f}"));
    let mut failure = None;
    // The fault phase, then (SIM_CALM_TICKS, default 300) ticks of the liveness phase.
    let calm = env_u64("SIM_CALM_TICKS").unwrap_or(300);
    for t in 0..ticks + calm {
        if t == ticks {
            cluster.calm_down();
        }
        if let Err(f) = cluster.tick() {
            failure = Some(f);
            break;
        }
    }
    let events = cluster.recent_events();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        // "t12 12 1>2 Message { term: 3, rpc: AppendRequest(..." → "1>2 AppendRequest"
        if let (Some(link), Some(rpc)) = (e.split_whitespace().nth(2), e.split("rpc: ").nth(1)) {
            let kind: String = rpc.chars().take_while(|c| c.is_alphanumeric()).collect();
            *kinds.entry(format!("{link} {kind}")).or_default() += 1;
        }
    }
    let mut kinds: Vec<(String, u64)> = kinds.into_iter().collect();
    kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (kind, n) in kinds.iter().take(20) {
        println!("{n:>9} {kind}");
    }
    let path = std::env::var("SIM_DUMP").unwrap_or_else(|_| format!("target/sim-{seed}.log"));
    std::fs::write(&path, events.join("\n")).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    println!("{} events written to {path}", events.len());
    if let Some(f) = failure {
        println!("{f}");
    }
}
