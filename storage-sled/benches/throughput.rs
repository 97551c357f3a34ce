//! Write throughput of the storage backends: entries per second and entries per flush when G groups
//! write at once (G = 1, 64, 1024), with 16-byte and 1-KiB payloads, for the in-memory and sled backends.
//!
//! Each round is what a Multi-Raft node does once per cycle: one write batch holding one new entry and a
//! new hard state for every group, then one `sync()`. Each configuration runs for `BENCH_SECONDS`
//! (default 1.5) or until 256 MiB of payload were written, whichever comes first.
//!
//! ```sh
//! cargo bench -p tickraft-storage-sled --bench throughput
//! BENCH_BACKEND=sled BENCH_SECONDS=3 cargo bench -p tickraft-storage-sled --bench throughput
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickraft::storage::{LogStorage, WriteBatch};
use tickraft::{Entry, EntryPayload, HardState, RaftTypeConfig, StorageError};
use tickraft_storage_mem::MemStorage;
use tickraft_storage_sled::SledStorage;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Bench;

impl RaftTypeConfig for Bench {
    type NodeId = u64;
    type GroupId = u64;
    type Data = Bytes;
    type Snapshot = Bytes;
}

const PAYLOAD_CAP: u64 = 256 << 20;

struct Outcome {
    entries: u64,
    flushes: u64,
    bytes: u64,
    elapsed: Duration,
    /// Time spent in `write` (the rest of `elapsed` is mostly `sync`).
    writing: Duration,
}

fn run<S: LogStorage<Bench>>(
    storage: &mut S,
    groups: u64,
    payload_len: usize,
    budget: Duration,
) -> Result<Outcome, StorageError> {
    let payload = Bytes::from(vec![0xA5u8; payload_len]);
    let mut outcome = Outcome {
        entries: 0,
        flushes: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        writing: Duration::ZERO,
    };
    let start = Instant::now();
    let mut index = 0;
    while start.elapsed() < budget && outcome.bytes < PAYLOAD_CAP {
        index += 1;
        let mut batch = WriteBatch::new();
        for g in 0..groups {
            batch.append(
                g,
                vec![Entry {
                    term: 1,
                    index,
                    payload: EntryPayload::Normal(payload.clone()),
                }],
            );
            batch.set_hard_state(
                g,
                HardState {
                    term: 1,
                    vote: Some(1),
                    commit: index - 1,
                },
            );
        }
        let write_start = Instant::now();
        storage.write(batch)?;
        outcome.writing += write_start.elapsed();
        storage.sync()?;
        outcome.entries += groups;
        outcome.flushes += 1;
        outcome.bytes += groups * payload_len as u64;
    }
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

fn main() -> Result<(), StorageError> {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.5);
    let budget = Duration::from_secs_f64(seconds);
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-throughput-{}", std::process::id()));
    println!(
        "one round = one batch with 1 entry + 1 hard state per group, then one sync; {seconds} s or \
         256 MiB per row\n"
    );
    println!(
        "| backend | groups | payload | entries/s | entries/flush | flushes/s | ms/round | of which write | payload MiB/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let only = std::env::var("BENCH_BACKEND").ok();
    for backend in ["mem", "sled"] {
        if only.as_deref().is_some_and(|b| b != backend) {
            continue;
        }
        for payload_len in [16usize, 1024] {
            for groups in [1u64, 64, 1024] {
                let outcome = match backend {
                    "mem" => run(&mut MemStorage::<Bench>::new(), groups, payload_len, budget)?,
                    _ => {
                        let dir = root.join(format!("{groups}-{payload_len}"));
                        let outcome = {
                            let mut storage = SledStorage::<Bench>::open(&dir)?;
                            run(&mut storage, groups, payload_len, budget)?
                        };
                        let _ = std::fs::remove_dir_all(&dir);
                        outcome
                    }
                };
                let secs = outcome.elapsed.as_secs_f64();
                println!(
                    "| {backend} | {groups} | {} | {:.0} | {} | {:.0} | {:.3} | {:.0}% | {:.1} |",
                    if payload_len == 16 { "16 B" } else { "1 KiB" },
                    outcome.entries as f64 / secs,
                    outcome.entries / outcome.flushes.max(1),
                    outcome.flushes as f64 / secs,
                    secs * 1000.0 / outcome.flushes.max(1) as f64,
                    100.0 * outcome.writing.as_secs_f64() / secs,
                    outcome.bytes as f64 / secs / f64::from(1 << 20),
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
