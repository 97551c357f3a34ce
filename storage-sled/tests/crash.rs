//! Crash test: no acknowledged entry is ever lost.
//!
//! The test re-executes its own binary as a child process (the `crash_child` test, switched on by an
//! environment variable). The child appends batches to several groups (now and then also storing a
//! snapshot and compacting, so that several trees change in one batch) and prints `ACK group:index ...`
//! only after `sync()` returned. The parent kills it with SIGKILL at a random moment (from a seeded
//! generator; the seed is printed): half the time a random delay after the start, half the time a moment
//! after a random number of acknowledgements. It then reopens the database and checks that every
//! acknowledged entry is present, in order, without gaps, with the bytes that were written, and starts
//! the next child on the same database.
//!
//! `CRASH_CYCLES=2000` runs more cycles (default 200); `CRASH_SEED=n` replays a seed's kill schedule (the
//! timing of the child itself is up to the machine).

#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickraft::storage::testing::TestTypes;
use tickraft::storage::{LogStorage, LogView, WriteBatch};
use tickraft::{Entry, EntryPayload, HardState, Index, LogId, Membership, Snapshot, SnapshotMeta};
use tickraft_storage_sled::SledStorage;

const CHILD_DIR: &str = "TICKRAFT_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "TICKRAFT_CRASH_CHILD_SEED";
const GROUPS: u64 = 6;
const DEFAULT_CYCLES: u64 = 200;
const DEFAULT_SEED: u64 = 0x5EED_C0DE;
/// The longest random delay between starting a child and killing it.
const MAX_KILL_DELAY_MS: u64 = 80;
/// How long to wait for a child's acknowledgements before killing it anyway.
const ACK_WAIT: Duration = Duration::from_secs(5);

type Storage = SledStorage<TestTypes>;

/// SplitMix64: the kill schedule and the child's choices replay from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// The bytes of entry `index` of `group`: fixed by the position alone, so the parent can check them
/// whatever the child's term was. Lengths vary from 16 bytes to about 300.
fn payload(group: u64, index: Index) -> Bytes {
    let len = 16 + ((group * 131 + index * 29) % 300) as usize;
    let mut bytes = format!("g{group}i{index}:").into_bytes();
    bytes.resize(len, (group * 7 + index) as u8);
    Bytes::from(bytes)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The child: appends and syncs forever; prints each acknowledged last index only after `sync()`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // not the crash test's child: nothing to do
    };
    let mut rng = Rng(env_u64(CHILD_SEED).unwrap_or(0));
    let mut storage = match Storage::open(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("child: open failed: {e}");
            std::process::exit(2);
        }
    };
    let mut last: BTreeMap<u64, Index> = BTreeMap::new();
    let mut term = 0;
    for g in 0..GROUPS {
        let view = storage.view(g);
        last.insert(g, view.last_index().unwrap_or(0));
        term = term.max(view.initial_state().map_or(0, |s| s.hard_state.term));
    }
    term += 1;
    loop {
        let mut batch = WriteBatch::new();
        let mut touched = Vec::new();
        for g in 0..GROUPS {
            if rng.range(0, 1) == 0 && !(touched.is_empty() && g == GROUPS - 1) {
                continue;
            }
            let from = last[&g] + 1;
            let to = from + rng.range(0, 7);
            let entries: Vec<Entry<TestTypes>> = (from..=to)
                .map(|index| Entry {
                    term,
                    index,
                    payload: EntryPayload::Normal(payload(g, index)),
                })
                .collect();
            batch.append(g, entries);
            batch.set_hard_state(
                g,
                HardState {
                    term,
                    vote: Some(1),
                    commit: to - rng.range(0, to - from),
                },
            );
            if rng.range(0, 15) == 0 && to > 40 {
                // Snapshot a little behind the end and compact behind it: both trees change together.
                let at = to - 10;
                let snapshot_term = match storage.view(g).term(at) {
                    Ok(t) => t,
                    Err(_) => term, // written in this batch
                };
                batch.save_snapshot(
                    g,
                    Snapshot {
                        meta: SnapshotMeta {
                            last: LogId::new(snapshot_term, at),
                            membership: Membership::new_voters([1, 2, 3]),
                        },
                        data: Bytes::from(format!("group {g} state at {at}")),
                    },
                );
                batch.compact(g, at - 10);
            }
            last.insert(g, to);
            touched.push(g);
        }
        if let Err(e) = storage.write(batch) {
            eprintln!("child: write failed: {e}");
            std::process::exit(3);
        }
        if let Err(e) = storage.sync() {
            eprintln!("child: sync failed: {e}");
            std::process::exit(4);
        }
        let acks: Vec<String> = touched.iter().map(|g| format!("{g}:{}", last[g])).collect();
        println!("ACK {}", acks.join(" "));
    }
}

/// How many acknowledgements `out` holds so far.
fn count_acks(out: &[u8]) -> usize {
    out.windows(4).filter(|w| w == b"ACK ").count()
}

/// The complete `ACK` lines a child printed (a line cut by the kill is ignored).
fn parse_acks(stdout: &[u8], acked: &mut [Index; GROUPS as usize]) -> u64 {
    let text = String::from_utf8_lossy(stdout);
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    let mut batches = 0;
    for line in complete.lines() {
        let Some(rest) = line.strip_prefix("ACK ") else {
            continue;
        };
        batches += 1;
        for pair in rest.split(' ') {
            let parsed = pair
                .split_once(':')
                .and_then(|(g, i)| Some((g.parse::<u64>().ok()?, i.parse::<u64>().ok()?)));
            let Some((g, index)) = parsed else {
                panic!("unreadable ack {pair:?} in line {line:?}");
            };
            let slot = &mut acked[g as usize];
            assert!(
                index >= *slot,
                "acks went backwards in group {g}: {index} after {slot}"
            );
            *slot = index;
        }
    }
    batches
}

/// Reopens the database and checks every group against what was acknowledged.
fn check(dir: &Path, acked: &[Index; GROUPS as usize], context: &str) {
    let storage = Storage::open(dir).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    storage
        .verify()
        .unwrap_or_else(|e| panic!("{context}: verify failed: {e}"));
    for g in 0..GROUPS {
        let view = storage.view(g);
        let first = view
            .first_index()
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        let last = view
            .last_index()
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        let want = acked[g as usize];
        assert!(
            last >= want,
            "{context}: group {g} lost acknowledged entries: last index {last}, acknowledged {want}"
        );
        if first > want {
            // Everything acknowledged was compacted: a snapshot must cover it.
            let snapshot = storage
                .snapshot_meta(g)
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            assert!(
                snapshot.as_ref().map_or(0, |s| s.last.index) >= want,
                "{context}: group {g} compacted past its snapshot"
            );
        }
        if first > last {
            continue;
        }
        let entries = view
            .entries(first, last + 1, usize::MAX)
            .unwrap_or_else(|e| panic!("{context}: group {g}: {e}"));
        assert_eq!(
            entries.len() as u64,
            last + 1 - first,
            "{context}: group {g} has gaps"
        );
        for (expected, entry) in (first..).zip(&entries) {
            assert_eq!(entry.index, expected, "{context}: group {g} out of order");
            assert_eq!(
                entry.payload,
                EntryPayload::Normal(payload(g, expected)),
                "{context}: group {g} entry {expected} holds the wrong bytes"
            );
        }
    }
}

#[test]
fn acknowledged_entries_survive_kill_9() {
    let cycles = env_u64("CRASH_CYCLES").unwrap_or(DEFAULT_CYCLES);
    let seed = env_u64("CRASH_SEED").unwrap_or(DEFAULT_SEED);
    println!("crash test: seed {seed} (replay with CRASH_SEED={seed}), {cycles} cycles");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("crash-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut rng = Rng(seed);
    let mut acked = [0; GROUPS as usize];
    let mut total_batches = 0;
    let mut silent_kills = 0;
    let started = Instant::now();
    for cycle in 0..cycles {
        let context = format!("crash test seed {seed} cycle {cycle}");
        // Half the kills come after a random delay from the start (some land during recovery), half a
        // moment after a random number of acknowledged batches (always mid-write, even on a slow machine).
        let (after_acks, delay) = if rng.range(0, 1) == 0 {
            (None, Duration::from_millis(rng.range(1, MAX_KILL_DELAY_MS)))
        } else {
            (
                Some(rng.range(1, 20) as usize),
                Duration::from_micros(rng.range(0, 3000)),
            )
        };
        let mut child = Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DIR, &dir)
            .env(CHILD_SEED, rng.next().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{context}: spawn failed: {e}"));
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (chunks_tx, chunks) = mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || chunks_tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut out = Vec::new();
        if let Some(acks) = after_acks {
            // Kill shortly after the child acknowledged `acks` batches, however slow its start was.
            let deadline = Instant::now() + ACK_WAIT;
            while count_acks(&out) < acks {
                let left = deadline.saturating_duration_since(Instant::now());
                match chunks.recv_timeout(left) {
                    Ok(chunk) => out.extend(chunk),
                    Err(_) => break,
                }
            }
        }
        std::thread::sleep(delay);
        // `Child::kill` sends SIGKILL on Unix.
        let _ = child.kill();
        let status = child.wait().expect("wait for the child");
        out.extend(chunks.iter().flatten());
        reader.join().expect("stdout reader");
        if status.signal() != Some(libc_sigkill()) {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            panic!("{context}: the child ended by itself ({status}) before the kill:\n{err}");
        }
        let batches = parse_acks(&out, &mut acked);
        if batches == 0 {
            silent_kills += 1;
        }
        total_batches += batches;
        check(&dir, &acked, &context);
    }
    println!(
        "crash test: {cycles} kills in {:.1?}, {total_batches} acknowledged batches, {silent_kills} kills \
         before the first ack, acknowledged last indexes {acked:?}",
        started.elapsed()
    );
    assert!(
        total_batches > 0,
        "no batch was ever acknowledged: kill delays too short"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGKILL's number.
fn libc_sigkill() -> i32 {
    libc::SIGKILL
}
