//! Damaged databases: every bad record is a typed `Corrupt` error naming the group and the index, found on
//! open or on the read that meets it; never a panic, never a silently shorter log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tickraft::storage::testing::{entries, TestTypes};
use tickraft::storage::{LogStorage, LogView, WriteBatch};
use tickraft::{HardState, LogId, Membership, Snapshot, SnapshotMeta, StorageError};
use tickraft_storage_sled::SledStorage;

type Storage = SledStorage<TestTypes>;

fn fresh_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("corruption-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn key(group: u64, index: u64) -> Vec<u8> {
    let mut k = group.to_be_bytes().to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// A database with group 5 holding entries 1..=10 (term 2), commit 4, and group 6 holding 1..=3.
fn populated(name: &str) -> PathBuf {
    let dir = fresh_dir(name);
    let mut s = Storage::open(&dir).expect("open");
    let mut b = WriteBatch::new();
    b.append(5, entries(1, 10, 2));
    b.set_hard_state(
        5,
        HardState {
            term: 2,
            vote: Some(1),
            commit: 4,
        },
    );
    b.append(6, entries(1, 3, 1));
    s.write(b).expect("write");
    s.sync().expect("sync");
    dir
}

/// Opens the raw sled database (waiting for the lock of a just-closed one) and hands its trees to `f`.
fn tamper(dir: &Path, f: impl FnOnce(&sled::Db, &sled::Tree, &sled::Tree)) {
    let start = Instant::now();
    let db = loop {
        match sled::open(dir) {
            Ok(db) => break db,
            Err(e) if start.elapsed() < Duration::from_secs(3) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("raw open: {e}"),
        }
    };
    let log = db.open_tree("log").expect("log tree");
    let meta = db.open_tree("meta").expect("meta tree");
    f(&db, &log, &meta);
    db.flush().expect("flush");
}

fn expect_corrupt<T: std::fmt::Debug>(
    r: Result<T, StorageError>,
    group: &str,
    index: Option<u64>,
    what: &str,
) {
    match r {
        Err(StorageError::Corrupt {
            group: g,
            index: i,
            reason,
        }) => {
            assert_eq!(g, group, "{what}: group named ({reason})");
            assert_eq!(i, index, "{what}: index named ({reason})");
        }
        other => panic!("{what}: expected Corrupt in group {group} at {index:?}, got {other:?}"),
    }
}

#[test]
fn undecodable_entry_in_the_middle_is_reported_where_it_is_read() {
    let dir = populated("middle");
    tamper(&dir, |_, log, _| {
        log.insert(key(5, 7), &[0xff, 0xff, 0xff][..])
            .expect("insert");
    });
    let s = Storage::open(&dir).expect("the ends are intact: open succeeds");
    let v = s.view(5);
    expect_corrupt(v.term(7), "5", Some(7), "term");
    expect_corrupt(v.entries(1, 11, usize::MAX), "5", Some(7), "entries");
    assert_eq!(
        v.entries(1, 7, usize::MAX)
            .expect("entries before it")
            .len(),
        6
    );
    expect_corrupt(s.verify(), "5", Some(7), "verify");
    // The other group is unaffected.
    assert_eq!(
        s.view(6).entries(1, 4, usize::MAX).expect("group 6").len(),
        3
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_entry_in_the_middle_is_never_skipped() {
    let dir = populated("missing");
    tamper(&dir, |_, log, _| {
        log.remove(key(5, 4)).expect("remove");
    });
    let s = Storage::open(&dir).expect("open");
    let v = s.view(5);
    expect_corrupt(v.entries(2, 9, usize::MAX), "5", Some(4), "entries");
    expect_corrupt(v.term(4), "5", Some(4), "term");
    expect_corrupt(s.verify(), "5", Some(4), "verify");
    // A write that needs the missing entry's term fails the same way and changes nothing.
    let mut s = s;
    let mut b = WriteBatch::new();
    b.save_snapshot(
        5,
        Snapshot {
            meta: SnapshotMeta {
                last: LogId::new(2, 4),
                membership: Membership::default(),
            },
            data: bytes::Bytes::from_static(b"state"),
        },
    );
    expect_corrupt(s.write(b), "5", Some(4), "write");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn entry_under_the_wrong_key_is_corrupt() {
    let dir = populated("wrong-key");
    tamper(&dir, |_, log, _| {
        let three = log.get(key(5, 3)).expect("get").expect("entry 3");
        log.insert(key(5, 8), three).expect("insert");
    });
    let s = Storage::open(&dir).expect("open");
    expect_corrupt(s.view(5).term(8), "5", Some(8), "term");
    expect_corrupt(s.view(5).entries(8, 9, 0), "5", Some(8), "entries");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn undecodable_last_entry_fails_the_open() {
    let dir = populated("last");
    tamper(&dir, |_, log, _| {
        log.insert(key(5, 10), &[0x80][..]).expect("insert");
    });
    expect_corrupt(Storage::open(&dir), "5", Some(10), "open");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn undecodable_metadata_fails_the_open() {
    let dir = populated("meta");
    tamper(&dir, |_, _, meta| {
        meta.insert(5u64.to_be_bytes(), &[0xff; 3][..])
            .expect("insert");
    });
    expect_corrupt(Storage::open(&dir), "5", None, "open");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lost_tail_below_the_commit_index_fails_the_open() {
    let dir = populated("lost-tail");
    tamper(&dir, |_, log, _| {
        for i in 4..=10 {
            log.remove(key(5, i)).expect("remove");
        }
    });
    // Commit is 4, the log now ends at 3: committed entries are gone.
    expect_corrupt(Storage::open(&dir), "5", None, "open");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lost_head_fails_the_open() {
    let dir = populated("lost-head");
    tamper(&dir, |_, log, _| {
        log.remove(key(6, 1)).expect("remove");
    });
    expect_corrupt(Storage::open(&dir), "6", Some(1), "open");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreadable_key_fails_the_open() {
    let dir = populated("short-key");
    tamper(&dir, |_, log, _| {
        log.insert(&[0, 0, 0][..], &[1][..]).expect("insert");
    });
    match Storage::open(&dir) {
        Err(StorageError::Corrupt {
            group, index: None, ..
        }) => {
            assert!(group.contains("unreadable"), "{group}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn other_format_version_is_refused() {
    let dir = populated("format");
    tamper(&dir, |db, _, _| {
        db.insert(b"tickraft-storage-sled/format", &[99][..])
            .expect("insert");
    });
    match Storage::open(&dir) {
        Err(StorageError::Backend { reason }) => assert!(reason.contains("format"), "{reason}"),
        other => panic!("expected a Backend error, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_healthy_database_verifies() {
    let dir = populated("healthy");
    let s = Storage::open(&dir).expect("open");
    assert_eq!(s.verify().expect("verify"), 13);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_snapshot_data_fails_the_open() {
    let dir = populated("snapshot-data");
    {
        let mut s = Storage::open(&dir).expect("open");
        let mut b = WriteBatch::new();
        b.save_snapshot(
            5,
            Snapshot {
                meta: SnapshotMeta {
                    last: LogId::new(2, 4),
                    membership: Membership::new_voters([1, 2]),
                },
                data: bytes::Bytes::from_static(b"state at 4"),
            },
        );
        b.compact(5, 3);
        s.write(b).expect("write");
        s.sync().expect("sync");
        let snapshot = s.view(5).snapshot().expect("snapshot").expect("stored");
        assert_eq!(&snapshot.data[..], b"state at 4");
    }
    let reopened = Storage::open(&dir).expect("reopen");
    let snapshot = reopened
        .view(5)
        .snapshot()
        .expect("snapshot")
        .expect("stored");
    assert_eq!(&snapshot.data[..], b"state at 4");
    assert_eq!(reopened.view(5).first_index().expect("first"), 4);
    drop(reopened);
    tamper(&dir, |db, _, _| {
        let snapshots = db.open_tree("snapshot").expect("snapshot tree");
        snapshots.remove(5u64.to_be_bytes()).expect("remove");
    });
    expect_corrupt(Storage::open(&dir), "5", Some(4), "open");
    let _ = std::fs::remove_dir_all(&dir);
}
