//! The conformance suite every [`LogStorage`] backend runs (cargo feature `storage-testing`).
//!
//! A backend's test calls [`run_conformance`] with a function that makes a fresh, empty backend and one
//! that simulates a restart (drop everything in memory and reopen from what is durable):
//!
//! ```ignore
//! #[test]
//! fn conformance() {
//!     tickraft::storage::testing::run_conformance(MemStorage::new, |mut storage| {
//!         storage.crash();
//!         storage
//!     });
//! }
//! ```
//!
//! The suite runs named scenarios (each on a fresh backend) and then a seeded, model-based check that
//! applies random batches (valid ones and invalid ones), syncs and restarts at random, and compares every
//! group's log with a simple reference model after each step. Failures panic with the scenario name, or
//! with the seed and step of the model check; `TICKRAFT_CONFORMANCE_SEEDS=N` runs `N` seeds (default 8).

use bytes::Bytes;

use crate::error::StorageError;
use crate::storage::{InitialState, LogStorage, LogView, WriteBatch, WriteOp};
use crate::types::{
    Entry, EntryPayload, HardState, Index, LogId, Membership, RaftTypeConfig, Snapshot,
    SnapshotMeta, Term,
};

/// The type configuration the suite writes with: `u64` node and group ids, `Bytes` payloads and snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TestTypes;

impl RaftTypeConfig for TestTypes {
    type NodeId = u64;
    type GroupId = u64;
    type Data = Bytes;
    type Snapshot = Bytes;
}

type E = Entry<TestTypes>;
type Batch = WriteBatch<TestTypes>;

/// Runs every scenario and the model check against backends made by `make`. `reopen` simulates a
/// restart: it consumes the backend and returns it as reopened from durable state (for an in-memory
/// backend, the state as of the last sync).
///
/// Panics, naming the scenario (or the seed and step), at the first rule a backend breaks.
pub fn run_conformance<S, M, R>(mut make: M, mut reopen: R)
where
    S: LogStorage<TestTypes>,
    M: FnMut() -> S,
    R: FnMut(S) -> S,
{
    for (name, scenario) in scenarios::<S>() {
        eprintln!("conformance scenario: {name}");
        scenario(make(), &mut reopen);
    }
    let seeds = std::env::var("TICKRAFT_CONFORMANCE_SEEDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(8);
    for seed in 0..seeds {
        run_model_check(make(), &mut reopen, seed, 150);
    }
}

type Scenario<S> = fn(S, &mut dyn FnMut(S) -> S);

fn scenarios<S: LogStorage<TestTypes>>() -> Vec<(&'static str, Scenario<S>)> {
    vec![
        ("empty group reads as an empty log", empty_group::<S>),
        ("appends keep their order", append_order::<S>),
        (
            "an append overwrites a conflicting tail",
            tail_overwrite::<S>,
        ),
        (
            "invalid appends are rejected atomically",
            invalid_appends::<S>,
        ),
        ("hard state round trip", hard_state_round_trip::<S>),
        ("snapshot and compaction", snapshot_and_compaction::<S>),
        (
            "an installed snapshot replaces the log",
            install_snapshot::<S>,
        ),
        ("groups are isolated", isolation::<S>),
        ("one batch spans many groups", many_groups::<S>),
        ("entries() respects the byte budget", byte_budget::<S>),
        ("views see writes before sync", views_before_sync::<S>),
        ("deleting a group forgets it", delete_group::<S>),
        (
            "reopen keeps synced batches, whole",
            reopen_keeps_synced::<S>,
        ),
        (
            "reopen keeps snapshots, compaction and hard state",
            reopen_keeps_metadata::<S>,
        ),
    ]
}

// ----- helpers -----

/// An entry whose payload names its index and term, so that a misplaced entry is caught.
pub fn entry(index: Index, term: Term) -> E {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(Bytes::from(format!("entry {index} term {term}"))),
    }
}

/// Entries `from..=to`, all of `term`.
pub fn entries(from: Index, to: Index, term: Term) -> Vec<E> {
    (from..=to).map(|i| entry(i, term)).collect()
}

fn hs(term: Term, vote: Option<u64>, commit: Index) -> HardState<TestTypes> {
    HardState { term, vote, commit }
}

fn meta(index: Index, term: Term, voters: &[u64]) -> SnapshotMeta<TestTypes> {
    SnapshotMeta {
        last: LogId::new(term, index),
        membership: Membership::new_voters(voters.iter().copied()),
    }
}

/// A snapshot whose data names its last entry.
fn snap(index: Index, term: Term, voters: &[u64]) -> Snapshot<TestTypes> {
    Snapshot {
        meta: meta(index, term, voters),
        data: Bytes::from(format!("state as of {index} (term {term})")),
    }
}

fn voters(v: &[u64]) -> Membership<TestTypes> {
    Membership::new_voters(v.iter().copied())
}

fn batch(f: impl FnOnce(&mut Batch)) -> Batch {
    let mut b = Batch::new();
    f(&mut b);
    b
}

fn write_ok<S: LogStorage<TestTypes>>(s: &mut S, b: Batch, what: &str) {
    if let Err(e) = s.write(b) {
        panic!("{what}: write failed: {e}");
    }
}

fn sync_ok<S: LogStorage<TestTypes>>(s: &mut S, what: &str) {
    if let Err(e) = s.sync() {
        panic!("{what}: sync failed: {e}");
    }
}

fn write_invalid<S: LogStorage<TestTypes>>(s: &mut S, b: Batch, what: &str) {
    match s.write(b) {
        Err(StorageError::InvalidWrite { .. }) => {}
        other => panic!("{what}: expected InvalidWrite, got {other:?}"),
    }
}

fn ok<T>(r: Result<T, StorageError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e}"),
    }
}

fn expect_compacted<T: std::fmt::Debug>(r: Result<T, StorageError>, index: Index, what: &str) {
    match r {
        Err(StorageError::Compacted { index: i }) if i == index => {}
        other => panic!("{what}: expected Compacted {{ index: {index} }}, got {other:?}"),
    }
}

fn expect_unavailable<T: std::fmt::Debug>(r: Result<T, StorageError>, index: Index, what: &str) {
    match r {
        Err(StorageError::Unavailable { index: i }) if i == index => {}
        other => panic!("{what}: expected Unavailable {{ index: {index} }}, got {other:?}"),
    }
}

/// Everything a group's view shows.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    first: Index,
    last: Index,
    compaction_term: Term,
    entries: Vec<E>,
    initial: InitialState<TestTypes>,
    snapshot: Option<Snapshot<TestTypes>>,
}

fn observe<S: LogStorage<TestTypes>>(s: &S, group: u64, what: &str) -> Observed {
    let v = s.view(group);
    let first = ok(v.first_index(), what);
    let last = ok(v.last_index(), what);
    let compaction_term = ok(v.term(first - 1), what);
    let entries = if first <= last {
        ok(v.entries(first, last + 1, usize::MAX), what)
    } else {
        Vec::new()
    };
    Observed {
        first,
        last,
        compaction_term,
        entries,
        initial: ok(v.initial_state(), what),
        snapshot: {
            let snapshot = ok(v.snapshot(), what);
            assert_eq!(
                ok(s.snapshot_meta(group), what),
                snapshot.as_ref().map(|s| s.meta.clone()),
                "{what}: snapshot_meta() and the view's snapshot() disagree in group {group}"
            );
            snapshot
        },
    }
}

/// Checks a group's log: its compaction point and exactly `expected` after it.
fn expect_log<S: LogStorage<TestTypes>>(
    s: &S,
    group: u64,
    compacted: LogId,
    expected: &[E],
    what: &str,
) {
    let v = s.view(group);
    let last = expected.last().map_or(compacted.index, |e| e.index);
    assert_eq!(
        ok(v.first_index(), what),
        compacted.index + 1,
        "{what}: first_index of group {group}"
    );
    assert_eq!(
        ok(v.last_index(), what),
        last,
        "{what}: last_index of group {group}"
    );
    assert_eq!(
        ok(v.term(compacted.index), what),
        compacted.term,
        "{what}: term of the compaction point of group {group}"
    );
    for e in expected {
        assert_eq!(
            ok(v.term(e.index), what),
            e.term,
            "{what}: term({}) of group {group}",
            e.index
        );
    }
    if compacted.index > 0 {
        expect_compacted(v.term(compacted.index - 1), compacted.index - 1, what);
    }
    expect_unavailable(v.term(last + 1), last + 1, what);
    let read = if expected.is_empty() {
        Vec::new()
    } else {
        ok(v.entries(compacted.index + 1, last + 1, usize::MAX), what)
    };
    assert_eq!(read, expected, "{what}: entries of group {group}");
}

// ----- scenarios -----

fn empty_group<S: LogStorage<TestTypes>>(s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "empty group";
    let v = s.view(42);
    assert_eq!(ok(v.first_index(), what), 1);
    assert_eq!(ok(v.last_index(), what), 0);
    assert_eq!(ok(v.term(0), what), 0);
    expect_unavailable(v.term(1), 1, what);
    assert_eq!(ok(v.entries(1, 1, usize::MAX), what), Vec::<E>::new());
    expect_unavailable(v.entries(1, 2, usize::MAX), 1, what);
    let initial = ok(v.initial_state(), what);
    assert_eq!(
        initial.hard_state,
        HardState::default(),
        "{what}: hard state"
    );
    assert_eq!(
        initial.membership,
        Membership::default(),
        "{what}: membership"
    );
    assert_eq!(ok(s.snapshot_meta(42), what), None);
    assert_eq!(ok(v.snapshot(), what), None, "{what}: snapshot()");
    assert_eq!(ok(s.groups(), what), Vec::<u64>::new(), "{what}: groups()");
}

fn append_order<S: LogStorage<TestTypes>>(mut s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "append order";
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(1, 5, 1));
        }),
        what,
    );
    let mut second = vec![entry(6, 1), entry(7, 2)];
    second.extend([entry(8, 2), entry(9, 3)]);
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, second[..2].to_vec());
            b.append(1, second[2..].to_vec());
        }),
        what,
    );
    let mut all = entries(1, 5, 1);
    all.extend(second);
    expect_log(&s, 1, LogId::default(), &all, what);
    let v = s.view(1);
    assert_eq!(
        ok(v.entries(3, 7, usize::MAX), what),
        all[2..6].to_vec(),
        "{what}: entries(3, 7)"
    );
    assert_eq!(
        ok(v.entries(9, 10, usize::MAX), what),
        all[8..].to_vec(),
        "{what}: entries(9, 10)"
    );
    assert_eq!(ok(s.groups(), what), vec![1], "{what}: groups()");
}

fn tail_overwrite<S: LogStorage<TestTypes>>(mut s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "tail overwrite";
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(1, 10, 1));
        }),
        what,
    );
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(6, 7, 2));
        }),
        what,
    );
    let mut expected = entries(1, 5, 1);
    expected.extend(entries(6, 7, 2));
    expect_log(
        &s,
        1,
        LogId::default(),
        &expected,
        &format!("{what}: shorter tail"),
    );

    // Two appends in one batch: the second overwrites part of the first.
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(8, 12, 2));
            b.append(1, entries(10, 10, 3));
        }),
        what,
    );
    expected.extend(entries(8, 9, 2));
    expected.push(entry(10, 3));
    expect_log(
        &s,
        1,
        LogId::default(),
        &expected,
        &format!("{what}: same batch"),
    );

    // Overwriting exactly the last entry.
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, vec![entry(10, 4)]);
        }),
        what,
    );
    expected.pop();
    expected.push(entry(10, 4));
    expect_log(
        &s,
        1,
        LogId::default(),
        &expected,
        &format!("{what}: last entry"),
    );

    // Overwriting from the very first entry.
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(1, 2, 5));
        }),
        what,
    );
    expect_log(
        &s,
        1,
        LogId::default(),
        &entries(1, 2, 5),
        &format!("{what}: whole log"),
    );
}

fn invalid_appends<S: LogStorage<TestTypes>>(mut s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "invalid appends";
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(1, 5, 2));
            b.set_hard_state(1, hs(2, Some(1), 2));
            b.append(2, entries(1, 1, 1));
        }),
        what,
    );
    let before = (
        observe(&s, 1, what),
        observe(&s, 2, what),
        observe(&s, 3, what),
    );
    let bad: Vec<(&str, WriteOp<TestTypes>)> = vec![
        (
            "a gap after the last index",
            WriteOp::Append(entries(8, 9, 2)),
        ),
        (
            "non-consecutive entries",
            WriteOp::Append(vec![entry(7, 2), entry(9, 2)]),
        ),
        (
            "repeated index",
            WriteOp::Append(vec![entry(7, 2), entry(7, 2)]),
        ),
        (
            "terms going back",
            WriteOp::Append(vec![entry(7, 3), entry(8, 2)]),
        ),
        (
            "a term below the previous entry's",
            WriteOp::Append(vec![entry(7, 1)]),
        ),
        (
            "overwriting a committed entry",
            WriteOp::Append(entries(2, 3, 3)),
        ),
        ("index 0", WriteOp::Append(vec![entry(0, 3)])),
        (
            "commit past the last index",
            WriteOp::SetHardState(hs(2, Some(1), 7)),
        ),
        ("term going back", WriteOp::SetHardState(hs(1, None, 2))),
        (
            "compaction past the last index",
            WriteOp::Compact { upto: 7 },
        ),
        ("compaction past the snapshot", WriteOp::Compact { upto: 1 }),
        (
            "installing a snapshot below the commit index",
            WriteOp::InstallSnapshot(snap(1, 2, &[1])),
        ),
        (
            "saving a snapshot the log does not hold",
            WriteOp::SaveSnapshot(snap(4, 1, &[1])),
        ),
        (
            "saving a snapshot past the log",
            WriteOp::SaveSnapshot(snap(7, 2, &[1])),
        ),
        (
            "bootstrap of a group with a log",
            WriteOp::Bootstrap(voters(&[1])),
        ),
    ];
    for (name, op) in bad {
        let label = format!("{what}: {name}");
        // Valid operations on both sides of the bad one, in this group and in others.
        let b = batch(|b| {
            b.append(2, entries(2, 3, 1));
            b.append(1, entries(6, 6, 2));
            b.append(3, entries(1, 2, 1));
            b.push(1, op);
            b.set_hard_state(2, hs(1, None, 1));
        });
        write_invalid(&mut s, b, &label);
        let after = (
            observe(&s, 1, &label),
            observe(&s, 2, &label),
            observe(&s, 3, &label),
        );
        assert_eq!(after, before, "{label}: a rejected batch changed something");
    }
    // Rejected batches never reach the disk either.
    sync_ok(&mut s, what);
    assert_eq!(
        ok(s.groups(), what),
        vec![1, 2],
        "{what}: groups() after rejected batches"
    );
}

fn hard_state_round_trip<S: LogStorage<TestTypes>>(mut s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "hard state";
    write_ok(
        &mut s,
        batch(|b| {
            b.set_hard_state(5, hs(3, Some(2), 0));
        }),
        what,
    );
    let initial = ok(s.view(5).initial_state(), what);
    assert_eq!(
        initial.hard_state,
        hs(3, Some(2), 0),
        "{what}: after the first write"
    );
    write_ok(
        &mut s,
        batch(|b| {
            b.append(5, entries(1, 3, 3));
            b.set_hard_state(5, hs(3, Some(2), 3));
        }),
        what,
    );
    assert_eq!(
        ok(s.view(5).initial_state(), what).hard_state,
        hs(3, Some(2), 3)
    );
    write_ok(
        &mut s,
        batch(|b| {
            b.set_hard_state(5, hs(4, None, 3));
        }),
        what,
    );
    assert_eq!(
        ok(s.view(5).initial_state(), what).hard_state,
        hs(4, None, 3)
    );
    // The last write in a batch wins.
    write_ok(
        &mut s,
        batch(|b| {
            b.set_hard_state(5, hs(5, Some(1), 3));
            b.set_hard_state(5, hs(6, Some(3), 3));
        }),
        what,
    );
    assert_eq!(
        ok(s.view(5).initial_state(), what).hard_state,
        hs(6, Some(3), 3)
    );
    assert_eq!(
        ok(s.view(6).initial_state(), what).hard_state,
        HardState::default()
    );
}

fn snapshot_and_compaction<S: LogStorage<TestTypes>>(mut s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "snapshot and compaction";
    let mut log = entries(1, 4, 1);
    log.extend(entries(5, 10, 2));
    write_ok(
        &mut s,
        batch(|b| {
            b.bootstrap(1, voters(&[1, 2, 3]));
            b.append(1, log.clone());
            b.set_hard_state(1, hs(2, None, 8));
        }),
        what,
    );
    assert_eq!(
        ok(s.view(1).initial_state(), what).membership,
        voters(&[1, 2, 3]),
        "{what}: bootstrap membership"
    );
    // Compaction needs a snapshot covering the discarded entries.
    write_invalid(
        &mut s,
        batch(|b| {
            b.compact(1, 2);
        }),
        &format!("{what}: no snapshot"),
    );

    // A saved snapshot keeps the log.
    write_ok(
        &mut s,
        batch(|b| {
            b.save_snapshot(1, snap(6, 2, &[1, 2]));
        }),
        what,
    );
    expect_log(
        &s,
        1,
        LogId::default(),
        &log,
        &format!("{what}: saved snapshot"),
    );
    assert_eq!(ok(s.snapshot_meta(1), what), Some(meta(6, 2, &[1, 2])));
    assert_eq!(ok(s.view(1).snapshot(), what), Some(snap(6, 2, &[1, 2])));
    assert_eq!(
        ok(s.view(1).initial_state(), what).membership,
        voters(&[1, 2]),
        "{what}: snapshot membership"
    );

    write_ok(
        &mut s,
        batch(|b| {
            b.compact(1, 4);
        }),
        what,
    );
    expect_log(
        &s,
        1,
        LogId::new(1, 4),
        &log[4..],
        &format!("{what}: compacted to 4"),
    );
    let v = s.view(1);
    expect_compacted(v.term(3), 3, what);
    expect_compacted(v.entries(3, 6, usize::MAX), 3, what);
    expect_compacted(v.entries(4, 6, usize::MAX), 4, what);
    assert_eq!(ok(v.entries(5, 7, usize::MAX), what), log[4..6].to_vec());

    // Compacting to an older point changes nothing.
    write_ok(
        &mut s,
        batch(|b| {
            b.compact(1, 2);
        }),
        what,
    );
    expect_log(
        &s,
        1,
        LogId::new(1, 4),
        &log[4..],
        &format!("{what}: older compaction"),
    );

    let invalid: Vec<(&str, WriteOp<TestTypes>)> = vec![
        ("past the snapshot", WriteOp::Compact { upto: 7 }),
        ("past the end", WriteOp::Compact { upto: 11 }),
        ("older snapshot", WriteOp::SaveSnapshot(snap(5, 2, &[1]))),
        (
            "same index, other term",
            WriteOp::SaveSnapshot(snap(6, 3, &[1])),
        ),
        (
            "bootstrap after a snapshot",
            WriteOp::Bootstrap(voters(&[9])),
        ),
    ];
    for (name, op) in invalid {
        let mut b = Batch::new();
        b.push(1, op);
        write_invalid(&mut s, b, &format!("{what}: {name}"));
    }

    // Compaction to the snapshot, then appends after it, all in one batch.
    write_ok(
        &mut s,
        batch(|b| {
            b.compact(1, 6);
            b.append(1, entries(11, 12, 3));
            b.save_snapshot(1, snap(11, 3, &[1, 2, 3, 4]));
            b.compact(1, 11);
        }),
        what,
    );
    expect_log(
        &s,
        1,
        LogId::new(3, 11),
        &entries(12, 12, 3),
        &format!("{what}: one batch"),
    );
    write_invalid(
        &mut s,
        batch(|b| {
            b.append(1, entries(11, 11, 3));
        }),
        &format!("{what}: append at the compaction point"),
    );
    assert_eq!(
        ok(s.view(1).snapshot(), what),
        Some(snap(11, 3, &[1, 2, 3, 4]))
    );

    // Compacting every entry leaves an empty log whose compaction point still answers.
    write_ok(
        &mut s,
        batch(|b| {
            b.save_snapshot(1, snap(12, 3, &[1]));
            b.compact(1, 12);
        }),
        what,
    );
    expect_log(
        &s,
        1,
        LogId::new(3, 12),
        &[],
        &format!("{what}: everything compacted"),
    );
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(13, 13, 3));
        }),
        what,
    );
    expect_log(
        &s,
        1,
        LogId::new(3, 12),
        &entries(13, 13, 3),
        &format!("{what}: after"),
    );
}

fn install_snapshot<S: LogStorage<TestTypes>>(mut s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "install snapshot";
    write_ok(
        &mut s,
        batch(|b| {
            b.bootstrap(1, voters(&[1]));
            b.append(1, entries(1, 5, 1));
            b.set_hard_state(1, hs(1, None, 3));
        }),
        what,
    );
    write_invalid(
        &mut s,
        batch(|b| {
            b.install_snapshot(1, snap(2, 1, &[1]));
        }),
        &format!("{what}: below the commit index"),
    );
    // Past the log.
    write_ok(
        &mut s,
        batch(|b| {
            b.install_snapshot(1, snap(20, 3, &[7]));
        }),
        what,
    );
    expect_log(&s, 1, LogId::new(3, 20), &[], what);
    expect_compacted(s.view(1).term(5), 5, what);
    assert_eq!(ok(s.view(1).initial_state(), what).membership, voters(&[7]));
    assert_eq!(ok(s.view(1).snapshot(), what), Some(snap(20, 3, &[7])));
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(21, 22, 3));
        }),
        what,
    );
    expect_log(&s, 1, LogId::new(3, 20), &entries(21, 22, 3), what);
    write_invalid(
        &mut s,
        batch(|b| {
            b.append(1, entries(23, 23, 2));
        }),
        &format!("{what}: term below the previous entry's"),
    );
    write_invalid(
        &mut s,
        batch(|b| {
            b.install_snapshot(1, snap(19, 3, &[7]));
        }),
        &format!("{what}: older than the stored snapshot"),
    );

    // Inside the log, matching or not, the whole log is replaced. The leader's entries follow in the same
    // batch, as the writes of a Ready do.
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(23, 25, 3));
            b.push_writes(
                1,
                crate::ready::Writes {
                    snapshot: Some(Box::new(snap(24, 3, &[1, 2]))),
                    entries: entries(25, 26, 4),
                    hard_state: Some(hs(4, None, 24)),
                },
            );
        }),
        what,
    );
    expect_log(
        &s,
        1,
        LogId::new(3, 24),
        &entries(25, 26, 4),
        &format!("{what}: inside"),
    );
    assert_eq!(
        ok(s.view(1).initial_state(), what).hard_state,
        hs(4, None, 24)
    );
    assert_eq!(ok(s.snapshot_meta(1), what), Some(meta(24, 3, &[1, 2])));
}

fn isolation<S: LogStorage<TestTypes>>(mut s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "isolation";
    let groups = [0, 1, 2, u64::MAX];
    write_ok(
        &mut s,
        batch(|b| {
            for (n, g) in groups.iter().enumerate() {
                let n = n as u64 + 1;
                b.append(*g, entries(1, 3 + n, n));
                b.set_hard_state(*g, hs(n, Some(n), 1));
            }
        }),
        what,
    );
    let mut expected: Vec<Vec<E>> = (1..=4).map(|n| entries(1, 3 + n, n)).collect();
    let check = |s: &S, expected: &[Vec<E>], label: &str| {
        for (g, exp) in groups.iter().zip(expected) {
            let compacted = match *g {
                2 => LogId::new(3, 2),
                _ => LogId::default(),
            };
            let visible: Vec<E> = exp
                .iter()
                .filter(|e| e.index > compacted.index)
                .cloned()
                .collect();
            expect_log(s, *g, compacted, &visible, label);
        }
    };
    // Overwrite group 1's tail: groups 0 and 2 (adjacent keys) are untouched.
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(2, 2, 9));
        }),
        what,
    );
    expected[1] = vec![entry(1, 2), entry(2, 9)];
    // Compact group 2.
    write_ok(
        &mut s,
        batch(|b| {
            b.save_snapshot(2, snap(2, 3, &[1]));
            b.compact(2, 2);
        }),
        what,
    );
    check(
        &s,
        &expected,
        &format!("{what}: after overwrite and compaction"),
    );
    for (n, g) in groups.iter().enumerate() {
        let n = n as u64 + 1;
        assert_eq!(
            ok(s.view(*g).initial_state(), what).hard_state,
            hs(n, Some(n), 1)
        );
    }
    assert_eq!(
        ok(s.snapshot_meta(1), what),
        None,
        "{what}: snapshot of group 1"
    );
    // Delete group 0: the others keep everything.
    write_ok(
        &mut s,
        batch(|b| {
            b.delete_group(0);
        }),
        what,
    );
    expected[0] = Vec::new();
    check(&s, &expected, &format!("{what}: after deleting group 0"));
    assert_eq!(
        ok(s.groups(), what),
        vec![1, 2, u64::MAX],
        "{what}: groups()"
    );
}

fn many_groups<S: LogStorage<TestTypes>>(mut s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "many groups";
    write_ok(
        &mut s,
        batch(|b| {
            for g in 0..200 {
                b.append(g, entries(1, 3, g + 1));
                b.set_hard_state(g, hs(g + 1, Some(g), 3));
            }
        }),
        what,
    );
    sync_ok(&mut s, what);
    for g in 0..200 {
        expect_log(&s, g, LogId::default(), &entries(1, 3, g + 1), what);
        assert_eq!(
            ok(s.view(g).initial_state(), what).hard_state,
            hs(g + 1, Some(g), 3)
        );
    }
    assert_eq!(
        ok(s.groups(), what),
        (0..200).collect::<Vec<_>>(),
        "{what}: groups()"
    );
}

fn byte_budget<S: LogStorage<TestTypes>>(mut s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "byte budget";
    let log: Vec<E> = (1..=10)
        .map(|i| Entry {
            term: 1,
            index: i,
            payload: EntryPayload::Normal(Bytes::from(vec![i as u8; 10 * i as usize])),
        })
        .collect();
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, log.clone());
        }),
        what,
    );
    let v = s.view(1);
    let size = |n: usize| log[..n].iter().map(Entry::size).sum::<usize>();
    assert_eq!(
        ok(v.entries(1, 11, 0), what),
        log[..1].to_vec(),
        "{what}: budget 0"
    );
    assert_eq!(
        ok(v.entries(1, 11, 1), what),
        log[..1].to_vec(),
        "{what}: budget 1"
    );
    assert_eq!(
        ok(v.entries(1, 11, size(2)), what),
        log[..2].to_vec(),
        "{what}: two exactly"
    );
    assert_eq!(
        ok(v.entries(1, 11, size(2) - 1), what),
        log[..1].to_vec(),
        "{what}: two minus 1"
    );
    assert_eq!(
        ok(v.entries(1, 11, size(7)), what),
        log[..7].to_vec(),
        "{what}: seven"
    );
    assert_eq!(
        ok(v.entries(1, 11, usize::MAX), what),
        log,
        "{what}: unlimited"
    );
    assert_eq!(
        ok(v.entries(4, 6, 0), what),
        log[3..4].to_vec(),
        "{what}: from 4, budget 0"
    );
    assert_eq!(
        ok(v.entries(4, 4, usize::MAX), what),
        Vec::<E>::new(),
        "{what}: empty"
    );
    assert_eq!(
        ok(v.entries(6, 4, usize::MAX), what),
        Vec::<E>::new(),
        "{what}: inverted"
    );
    expect_unavailable(v.entries(9, 12, usize::MAX), 11, what);
    expect_compacted(v.entries(0, 3, usize::MAX), 0, what);
}

fn views_before_sync<S: LogStorage<TestTypes>>(mut s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "views before sync";
    let early = s.view(1);
    let clone = early.clone();
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(1, 3, 1));
            b.set_hard_state(1, hs(1, Some(1), 2));
        }),
        what,
    );
    for v in [&early, &clone, &s.view(1)] {
        assert_eq!(ok(v.last_index(), what), 3, "{what}: last_index");
        assert_eq!(ok(v.entries(1, 4, usize::MAX), what), entries(1, 3, 1));
        assert_eq!(ok(v.initial_state(), what).hard_state, hs(1, Some(1), 2));
    }
}

fn delete_group<S: LogStorage<TestTypes>>(mut s: S, _reopen: &mut dyn FnMut(S) -> S) {
    let what = "delete group";
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(1, 5, 2));
            b.set_hard_state(1, hs(2, Some(1), 5));
            b.save_snapshot(1, snap(3, 2, &[1]));
            b.compact(1, 2);
        }),
        what,
    );
    write_ok(
        &mut s,
        batch(|b| {
            b.delete_group(1);
        }),
        what,
    );
    expect_log(&s, 1, LogId::default(), &[], what);
    assert_eq!(
        ok(s.view(1).initial_state(), what).hard_state,
        HardState::default()
    );
    assert_eq!(ok(s.snapshot_meta(1), what), None);
    assert_eq!(ok(s.view(1).snapshot(), what), None, "{what}: snapshot()");
    assert_eq!(ok(s.groups(), what), Vec::<u64>::new(), "{what}: groups()");
    // Deleted and recreated in one batch.
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(1, 4, 1));
            b.delete_group(1);
            b.append(1, entries(1, 2, 9));
        }),
        what,
    );
    expect_log(
        &s,
        1,
        LogId::default(),
        &entries(1, 2, 9),
        &format!("{what}: recreated"),
    );
}

fn reopen_keeps_synced<S: LogStorage<TestTypes>>(mut s: S, reopen: &mut dyn FnMut(S) -> S) {
    let what = "reopen";
    let groups = [1, 2, 3];
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(1, 4, 1));
            b.set_hard_state(1, hs(1, Some(1), 2));
            b.append(2, entries(1, 2, 1));
        }),
        what,
    );
    sync_ok(&mut s, what);
    let synced: Vec<Observed> = groups.iter().map(|g| observe(&s, *g, what)).collect();
    // Not synced: may survive or not, but only whole.
    write_ok(
        &mut s,
        batch(|b| {
            b.append(1, entries(3, 6, 2));
            b.set_hard_state(1, hs(2, Some(3), 4));
            b.append(3, entries(1, 1, 1));
        }),
        what,
    );
    let written: Vec<Observed> = groups.iter().map(|g| observe(&s, *g, what)).collect();
    let mut s = reopen(s);
    let reopened: Vec<Observed> = groups.iter().map(|g| observe(&s, *g, what)).collect();
    assert!(
        reopened == synced || reopened == written,
        "{what}: after reopen the state is neither the synced one nor the written one (a torn batch):\n\
         reopened: {reopened:#?}\nsynced: {synced:#?}\nwritten: {written:#?}"
    );
    // New writes after a reopen, synced: they survive the next reopen.
    let last = ok(s.view(2).last_index(), what);
    write_ok(
        &mut s,
        batch(|b| {
            b.append(2, entries(last + 1, last + 3, 4));
        }),
        what,
    );
    sync_ok(&mut s, what);
    let synced: Vec<Observed> = groups.iter().map(|g| observe(&s, *g, what)).collect();
    let s = reopen(s);
    let reopened: Vec<Observed> = groups.iter().map(|g| observe(&s, *g, what)).collect();
    assert_eq!(
        reopened, synced,
        "{what}: synced state lost by the second reopen"
    );
    let s = reopen(s);
    let again: Vec<Observed> = groups.iter().map(|g| observe(&s, *g, what)).collect();
    assert_eq!(
        again, synced,
        "{what}: a reopen without writes changed the state"
    );
}

fn reopen_keeps_metadata<S: LogStorage<TestTypes>>(mut s: S, reopen: &mut dyn FnMut(S) -> S) {
    let what = "reopen metadata";
    write_ok(
        &mut s,
        batch(|b| {
            b.bootstrap(1, voters(&[1, 2, 3]));
            b.append(1, entries(1, 10, 1));
            b.set_hard_state(1, hs(3, Some(2), 6));
            b.save_snapshot(1, snap(5, 1, &[1, 2]));
            b.compact(1, 4);
            b.append(1, entries(8, 9, 3));
            b.install_snapshot(2, snap(30, 7, &[4]));
            b.append(2, entries(31, 31, 7));
        }),
        what,
    );
    sync_ok(&mut s, what);
    let before: Vec<Observed> = [1, 2].iter().map(|g| observe(&s, *g, what)).collect();
    let s = reopen(s);
    let after: Vec<Observed> = [1, 2].iter().map(|g| observe(&s, *g, what)).collect();
    assert_eq!(after, before, "{what}: state changed across a reopen");
    let mut log = entries(5, 7, 1);
    log.extend(entries(8, 9, 3));
    expect_log(&s, 1, LogId::new(1, 4), &log, what);
    expect_log(&s, 2, LogId::new(7, 30), &entries(31, 31, 7), what);
    assert_eq!(ok(s.snapshot_meta(1), what), Some(meta(5, 1, &[1, 2])));
    assert_eq!(ok(s.groups(), what), vec![1, 2], "{what}: groups()");
}

// ----- the model check -----

/// A tiny deterministic generator (SplitMix64), so that a seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[low, high]`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next() % (high - low + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The reference model of one group: the rules, written as plainly as possible.
#[derive(Debug, Clone, PartialEq, Default)]
struct ModelGroup {
    compacted: LogId,
    bootstrap: Membership<TestTypes>,
    snapshot: Option<Snapshot<TestTypes>>,
    hard_state: HardState<TestTypes>,
    entries: Vec<E>,
}

impl ModelGroup {
    fn last(&self) -> LogId {
        self.entries.last().map_or(self.compacted, Entry::log_id)
    }

    fn snapshot_last(&self) -> LogId {
        self.snapshot
            .as_ref()
            .map_or(LogId::default(), |s| s.meta.last)
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index == self.compacted.index {
            return Some(self.compacted.term);
        }
        self.entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
    }

    /// A random valid operation on this group.
    fn random_op(&self, rng: &mut Rng) -> WriteOp<TestTypes> {
        let last = self.last();
        let snapshot = self.snapshot_last();
        let members: Vec<u64> = (1..=rng.range(1, 5)).collect();
        match rng.range(0, 11) {
            0..=4 => {
                let floor = self
                    .compacted
                    .index
                    .max(snapshot.index)
                    .max(self.hard_state.commit);
                let first = rng.range(floor + 1, last.index + 1);
                let prev = self.term(first - 1).unwrap_or(0);
                let mut term = prev.max(self.hard_state.term) + rng.range(0, 1);
                let n = rng.range(1, 4);
                let mut out = Vec::new();
                for index in first..first + n {
                    out.push(entry(index, term));
                    term += rng.range(0, 1);
                }
                WriteOp::Append(out)
            }
            5 | 6 => {
                let commit = rng.range(self.hard_state.commit.min(last.index), last.index);
                let term = self.hard_state.term + rng.range(0, 1);
                let vote = if rng.chance(50) {
                    Some(rng.range(1, 3))
                } else {
                    None
                };
                WriteOp::SetHardState(hs(term, vote, commit))
            }
            7 => {
                let index = rng.range(snapshot.index.max(self.compacted.index), last.index);
                WriteOp::SaveSnapshot(snap(index, self.term(index).unwrap_or(0), &members))
            }
            8 => {
                let index = rng.range(snapshot.index.max(self.hard_state.commit), last.index + 3);
                let term = if index == snapshot.index {
                    snapshot.term
                } else {
                    last.term + rng.range(0, 1)
                };
                WriteOp::InstallSnapshot(snap(index, term, &members))
            }
            9 => WriteOp::Compact {
                upto: rng.range(self.compacted.index, snapshot.index),
            },
            10 if last.index == 0 && self.snapshot.is_none() => {
                WriteOp::Bootstrap(voters(&members))
            }
            10 => WriteOp::SetHardState(self.hard_state.clone()),
            _ => WriteOp::DeleteGroup,
        }
    }

    /// An operation the rules reject.
    fn random_invalid_op(&self, rng: &mut Rng) -> WriteOp<TestTypes> {
        let last = self.last();
        match rng.range(0, 4) {
            0 => WriteOp::Append(entries(last.index + 2, last.index + 3, last.term)),
            1 => WriteOp::Compact {
                upto: last.index + 1,
            },
            2 => WriteOp::SetHardState(hs(self.hard_state.term, None, last.index + 1)),
            3 => WriteOp::SaveSnapshot(snap(last.index + 1, last.term, &[1])),
            _ => WriteOp::Append(vec![entry(self.compacted.index, last.term + 1)]),
        }
    }

    fn apply(&mut self, op: WriteOp<TestTypes>) {
        match op {
            WriteOp::Append(new) => {
                if let Some(first) = new.first().map(|e| e.index) {
                    self.entries.retain(|e| e.index < first);
                    self.entries.extend(new);
                }
            }
            WriteOp::SetHardState(h) => self.hard_state = h,
            WriteOp::Bootstrap(m) => self.bootstrap = m,
            WriteOp::InstallSnapshot(snapshot) => {
                self.entries.clear();
                self.compacted = snapshot.meta.last;
                self.snapshot = Some(snapshot);
            }
            WriteOp::SaveSnapshot(snapshot) => self.snapshot = Some(snapshot),
            WriteOp::Compact { upto } => {
                if upto > self.compacted.index {
                    self.compacted = LogId::new(self.term(upto).unwrap_or(0), upto);
                    self.entries.retain(|e| e.index > upto);
                }
            }
            WriteOp::DeleteGroup => *self = ModelGroup::default(),
        }
    }

    fn observed(&self) -> Observed {
        let last = self.last();
        Observed {
            first: self.compacted.index + 1,
            last: last.index,
            compaction_term: self.compacted.term,
            entries: self.entries.clone(),
            initial: InitialState {
                hard_state: self.hard_state.clone(),
                membership: self
                    .snapshot
                    .as_ref()
                    .map_or(&self.bootstrap, |s| &s.meta.membership)
                    .clone(),
            },
            snapshot: self.snapshot.clone(),
        }
    }
}

const MODEL_GROUPS: u64 = 4;

type Model = Vec<ModelGroup>;

fn compare<S: LogStorage<TestTypes>>(s: &S, model: &Model, context: &str) {
    for (g, group) in model.iter().enumerate() {
        let observed = observe(s, g as u64, context);
        assert_eq!(
            observed,
            group.observed(),
            "{context}: group {g} differs from the model"
        );
        // Random reads within the log answer like the model.
        let v = s.view(g as u64);
        for e in &group.entries {
            assert_eq!(
                ok(v.term(e.index), context),
                e.term,
                "{context}: term({})",
                e.index
            );
        }
    }
    let expected: Vec<u64> = model
        .iter()
        .enumerate()
        .filter(|(_, g)| **g != ModelGroup::default())
        .map(|(g, _)| g as u64)
        .collect();
    assert_eq!(ok(s.groups(), context), expected, "{context}: groups()");
}

/// The seeded model check: `steps` random batches against `storage`, with random syncs and restarts,
/// comparing every group with the reference model after each step. Panics with the seed and the step.
pub fn run_model_check<S, R>(storage: S, reopen: &mut R, seed: u64, steps: u64)
where
    S: LogStorage<TestTypes>,
    R: FnMut(S) -> S + ?Sized,
{
    let mut rng = Rng(seed ^ 0x7469_636B_7261_6674);
    let mut s = storage;
    let mut model: Model = vec![ModelGroup::default(); MODEL_GROUPS as usize];
    // The model as of the last sync, and after each batch written since.
    let mut durable = model.clone();
    let mut since_sync: Vec<Model> = Vec::new();
    for step in 0..steps {
        let context = format!("model check seed {seed} step {step}");
        let mut scratch = model.clone();
        let mut b = Batch::new();
        let invalid = rng.chance(10);
        let ops = rng.range(1, 5);
        let bad_at = rng.range(0, ops - 1);
        for k in 0..ops {
            let g = rng.range(0, MODEL_GROUPS - 1);
            let group = &mut scratch[g as usize];
            if invalid && k == bad_at {
                b.push(g, group.random_invalid_op(&mut rng));
            } else {
                let op = group.random_op(&mut rng);
                group.apply(op.clone());
                b.push(g, op);
            }
        }
        if invalid {
            write_invalid(&mut s, b, &context);
        } else {
            write_ok(&mut s, b, &context);
            model = scratch;
            since_sync.push(model.clone());
        }
        compare(&s, &model, &context);
        if rng.chance(25) {
            sync_ok(&mut s, &context);
            durable = model.clone();
            since_sync.clear();
        }
        if rng.chance(4) {
            s = reopen(s);
            // A prefix of the unsynced batches may have survived, each whole.
            let candidates: Vec<&Model> =
                std::iter::once(&durable).chain(since_sync.iter()).collect();
            let found = candidates.iter().position(|m| {
                m.iter()
                    .enumerate()
                    .all(|(g, group)| observe(&s, g as u64, &context) == group.observed())
            });
            let Some(found) = found else {
                let observed: Vec<Observed> = (0..MODEL_GROUPS)
                    .map(|g| observe(&s, g, &context))
                    .collect();
                panic!(
                    "{context}: after reopen the state is neither the synced state nor the state after \
                     any later batch (lost or torn batch):\nobserved: {observed:#?}\nsynced: {durable:#?}"
                );
            };
            model = candidates[found].clone();
            durable = model.clone();
            since_sync.clear();
            compare(&s, &model, &format!("{context} (after reopen)"));
        }
    }
}

// ----- state machines -----

/// Checks the guarantees every [`StateMachine`](crate::storage::StateMachine) keeps: nothing applied
/// at first, one response per entry, the applied index and membership advancing with the entries, gaps
/// and entries applied twice rejected without effect, deterministic responses, and snapshots that carry
/// the whole state (a machine restored from one answers the next entries exactly like the original).
///
/// `make` builds a fresh machine; `command(n)` is the payload of the `n`-th normal entry (something the
/// machine understands, so that its state actually changes). Await it in any executor.
pub async fn run_state_machine_conformance<M, F, P>(mut make: F, mut command: P)
where
    M: crate::storage::StateMachine<TestTypes>,
    M::Response: PartialEq + std::fmt::Debug,
    F: FnMut() -> M,
    P: FnMut(u64) -> Bytes,
{
    let what = "state machine";
    let mut log: Vec<E> = Vec::new();
    // `into`: the payload holds the membership directly or boxed, depending on the core's version.
    #[allow(clippy::useless_conversion)]
    for index in 1..=40u64 {
        let term = 1 + index / 15;
        let payload = match index {
            1 => EntryPayload::Blank,
            10 => EntryPayload::Membership(voters(&[1, 2, 3]).into()),
            25 => EntryPayload::Membership(voters(&[2, 3]).into()),
            _ => EntryPayload::Normal(command(index)),
        };
        log.push(Entry {
            term,
            index,
            payload,
        });
    }

    let mut a = make();
    let fresh = ok(a.applied_state().await, what);
    assert_eq!(
        fresh.applied,
        LogId::default(),
        "{what}: a fresh machine applied something"
    );
    assert!(
        ok(a.apply(&[]).await, what).is_empty(),
        "{what}: responses to no entries"
    );

    // Applied in uneven chunks, with rejected batches in between.
    let mut responses_a = Vec::new();
    let mut applied = 0usize;
    for chunk in [1usize, 3, 6, 2, 8] {
        let batch = &log[applied..applied + chunk];
        let responses = ok(a.apply(batch).await, what);
        assert_eq!(
            responses.len(),
            batch.len(),
            "{what}: one response per entry"
        );
        responses_a.extend(responses);
        applied += chunk;
        let state = ok(a.applied_state().await, what);
        assert_eq!(
            state.applied,
            log[applied - 1].log_id(),
            "{what}: applied index"
        );
        let membership = if applied >= 10 {
            Membership::new_voters([1, 2, 3])
        } else {
            Membership::default()
        };
        assert_eq!(
            state.membership, membership,
            "{what}: membership after {applied}"
        );

        for (label, bad) in [
            ("an entry applied twice", &log[applied - 1..applied + 1]),
            ("a gap", &log[applied + 1..applied + 2]),
        ] {
            match a.apply(bad).await {
                Err(StorageError::InvalidWrite { .. }) => {}
                other => panic!("{what}: {label}: expected InvalidWrite, got {other:?}"),
            }
            let state = ok(a.applied_state().await, what);
            assert_eq!(
                state.applied,
                log[applied - 1].log_id(),
                "{what}: {label} applied"
            );
        }
    }

    // Snapshot at 20, restore into a fresh machine, and continue both.
    let snapshot = ok(a.build_snapshot().await, what);
    assert_eq!(
        snapshot.meta.last,
        log[applied - 1].log_id(),
        "{what}: snapshot index"
    );
    assert_eq!(snapshot.meta.membership, Membership::new_voters([1, 2, 3]));
    let mut b = make();
    ok(b.install_snapshot(snapshot.clone()).await, what);
    let state = ok(b.applied_state().await, what);
    assert_eq!(
        state.applied, snapshot.meta.last,
        "{what}: applied after install"
    );
    assert_eq!(
        state.membership, snapshot.meta.membership,
        "{what}: membership after install"
    );
    let rest = &log[applied..];
    let from_a = ok(a.apply(rest).await, what);
    let from_b = ok(b.apply(rest).await, what);
    assert_eq!(
        from_a, from_b,
        "{what}: a restored machine answers differently (incomplete snapshot)"
    );
    responses_a.extend(from_a);
    let end = ok(b.applied_state().await, what);
    assert_eq!(end.applied, log[39].log_id(), "{what}: applied at the end");
    assert_eq!(
        end.membership,
        Membership::new_voters([2, 3]),
        "{what}: final membership"
    );

    // Deterministic: a second machine fed the same log in one batch answers the same.
    let mut c = make();
    let from_c = ok(c.apply(&log).await, what);
    assert_eq!(
        from_c, responses_a,
        "{what}: responses depend on more than the log"
    );
    assert_eq!(
        ok(c.build_snapshot().await, what),
        ok(a.build_snapshot().await, what),
        "{what}: same log, different snapshots"
    );

    // Installing a snapshot replaces the state: a machine ahead goes back to the snapshot.
    ok(c.install_snapshot(snapshot.clone()).await, what);
    assert_eq!(
        ok(c.applied_state().await, what).applied,
        snapshot.meta.last
    );
    assert_eq!(
        ok(c.apply(rest).await, what),
        from_b,
        "{what}: after re-install"
    );
}
