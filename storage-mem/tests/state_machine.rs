//! The in-memory state machine helpers: exactly-once application, one response per entry, snapshots.

use bytes::Bytes;
use tickraft::storage::StateMachine;
use tickraft::{
    Entry, EntryPayload, LogId, Membership, RaftTypeConfig, Snapshot, SnapshotMeta, StorageError,
};
use tickraft_storage_mem::{FnStateMachine, KvCommand, KvResponse, KvStateMachine};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Kv;

impl RaftTypeConfig for Kv {
    type NodeId = u64;
    type GroupId = u64;
    type Data = Bytes;
    type Snapshot = Bytes;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Counter;

impl RaftTypeConfig for Counter {
    type NodeId = u64;
    type GroupId = u64;
    type Data = u64;
    type Snapshot = Bytes;
}

fn set(index: u64, key: &str, value: &str) -> Entry<Kv> {
    let command = KvCommand::Set {
        key: key.into(),
        value: value.into(),
    };
    Entry {
        term: 1,
        index,
        payload: EntryPayload::Normal(command.encode()),
    }
}

fn delete(index: u64, key: &str) -> Entry<Kv> {
    Entry {
        term: 1,
        index,
        payload: EntryPayload::Normal(KvCommand::Delete { key: key.into() }.encode()),
    }
}

#[test]
fn commands_round_trip_and_garbage_is_an_error() {
    for command in [
        KvCommand::Set {
            key: "k".into(),
            value: "v é".into(),
        },
        KvCommand::Delete { key: String::new() },
    ] {
        assert_eq!(KvCommand::decode(&command.encode()), Ok(command));
    }
    assert!(KvCommand::decode(b"").is_err());
    assert!(KvCommand::decode(&[9]).is_err());
    assert!(KvCommand::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 5, b'a']).is_err());
    let mut trailing = KvCommand::Delete { key: "a".into() }.encode().to_vec();
    trailing.push(0);
    assert!(KvCommand::decode(&trailing).is_err());
}

#[tokio::test]
async fn kv_applies_in_order_with_one_response_per_entry() -> Result<(), StorageError> {
    let mut kv = KvStateMachine::<Kv>::new(1);
    assert_eq!(kv.applied_state().await?.applied, LogId::default());
    let entries = vec![
        Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Blank,
        },
        set(2, "a", "1"),
        set(3, "a", "2"),
        Entry {
            term: 1,
            index: 4,
            payload: EntryPayload::Membership(Membership::new_voters([1, 2]).into()),
        },
        delete(5, "a"),
        Entry {
            term: 1,
            index: 6,
            payload: EntryPayload::Normal(Bytes::from_static(b"\xffgarbage")),
        },
        set(7, "b", "3"),
    ];
    let responses = kv.apply(&entries).await?;
    assert_eq!(responses.len(), entries.len());
    assert_eq!(responses[0], KvResponse::Noop);
    assert_eq!(responses[1], KvResponse::Done { previous: None });
    assert_eq!(
        responses[2],
        KvResponse::Done {
            previous: Some("1".into())
        }
    );
    assert_eq!(responses[3], KvResponse::Noop);
    assert_eq!(
        responses[4],
        KvResponse::Done {
            previous: Some("2".into())
        }
    );
    assert!(matches!(responses[5], KvResponse::Rejected { .. }));
    assert_eq!(kv.get("a"), None);
    assert_eq!(kv.get("b"), Some("3"));
    let applied = kv.applied_state().await?;
    assert_eq!(applied.applied, LogId::new(1, 7));
    assert_eq!(applied.membership, Membership::new_voters([1, 2]));
    Ok(())
}

#[tokio::test]
async fn kv_rejects_gaps_and_entries_applied_twice() -> Result<(), StorageError> {
    let mut kv = KvStateMachine::<Kv>::new(1);
    kv.apply(&[set(1, "a", "1"), set(2, "a", "2")]).await?;
    for bad in [
        vec![set(2, "a", "x")],
        vec![set(4, "a", "x")],
        vec![set(3, "a", "x"), set(5, "a", "y")],
    ] {
        match kv.apply(&bad).await {
            Err(StorageError::InvalidWrite { .. }) => {}
            other => panic!("expected InvalidWrite for {bad:?}, got {other:?}"),
        }
        assert_eq!(kv.get("a"), Some("2"), "a rejected batch changed the state");
        assert_eq!(kv.applied_state().await?.applied.index, 2);
    }
    assert!(kv.apply(&[]).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn kv_snapshot_restores_state_and_applied_index() -> Result<(), StorageError> {
    let mut kv = KvStateMachine::<Kv>::new(1);
    kv.apply(&[
        Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Membership(Membership::new_voters([1, 2, 3]).into()),
        },
        set(2, "x", "1"),
        set(3, "y", "2"),
    ])
    .await?;
    let snapshot = kv.build_snapshot().await?;
    assert_eq!(snapshot.meta.last, LogId::new(1, 3));
    assert_eq!(snapshot.meta.membership, Membership::new_voters([1, 2, 3]));

    let mut restored = KvStateMachine::<Kv>::new(1);
    restored.install_snapshot(snapshot).await?;
    assert_eq!(restored.map(), kv.map());
    let applied = restored.applied_state().await?;
    assert_eq!(applied.applied, LogId::new(1, 3));
    assert_eq!(applied.membership, Membership::new_voters([1, 2, 3]));
    // Continues right after the snapshot.
    restored.apply(&[set(4, "z", "3")]).await?;
    assert_eq!(restored.get("z"), Some("3"));

    let bad = Snapshot {
        meta: SnapshotMeta {
            last: LogId::new(2, 9),
            membership: Membership::default(),
        },
        data: Bytes::from_static(&[0xff, 0xff, 0xff]),
    };
    match restored.install_snapshot(bad).await {
        Err(StorageError::Corrupt { index: Some(9), .. }) => {}
        other => panic!("expected Corrupt at index 9, got {other:?}"),
    }
    assert_eq!(
        restored.get("z"),
        Some("3"),
        "a bad snapshot changed the state"
    );
    Ok(())
}

#[tokio::test]
async fn fn_machine_applies_a_closure() -> Result<(), StorageError> {
    let mut counter =
        FnStateMachine::<Counter, u64, _, _>::new(7, 0, |total: &mut u64, add: &u64| {
            *total += add;
            *total
        });
    let entries: Vec<Entry<Counter>> = (1..=4)
        .map(|i| Entry {
            term: 1,
            index: i,
            payload: if i == 2 {
                EntryPayload::Blank
            } else {
                EntryPayload::Normal(i * 10)
            },
        })
        .collect();
    let responses = counter.apply(&entries).await?;
    assert_eq!(responses, vec![Some(10), None, Some(40), Some(80)]);
    let snapshot = counter.build_snapshot().await?;
    assert_eq!(snapshot.meta.last.index, 4);
    let mut other =
        FnStateMachine::<Counter, u64, _, _>::new(7, 0, |total: &mut u64, add: &u64| {
            *total += add;
            *total
        });
    other.install_snapshot(snapshot).await?;
    assert_eq!(*other.state(), 80);
    assert_eq!(*counter.state(), 80);
    assert_eq!(
        other.apply(&entries[..1]).await.ok(),
        None,
        "index 1 is already applied"
    );
    Ok(())
}

#[tokio::test]
async fn kv_passes_the_state_machine_conformance_suite() {
    tickraft::storage::testing::run_state_machine_conformance(
        || KvStateMachine::<tickraft::storage::testing::TestTypes>::new(1),
        |n| {
            let key = format!("k{}", n % 7);
            if n % 5 == 0 {
                KvCommand::Delete { key }.encode()
            } else {
                KvCommand::Set {
                    key,
                    value: format!("v{n}"),
                }
                .encode()
            }
        },
    )
    .await;
}

#[tokio::test]
async fn fn_machine_passes_the_state_machine_conformance_suite() {
    use tickraft::storage::testing::TestTypes;
    // The state: a running log of the commands' first two bytes.
    tickraft::storage::testing::run_state_machine_conformance(
        || {
            FnStateMachine::<TestTypes, Vec<u8>, _, _>::new(
                1,
                Vec::new(),
                |state: &mut Vec<u8>, data: &Bytes| {
                    state.extend_from_slice(&data[..data.len().min(2)]);
                    state.len()
                },
            )
        },
        |n| Bytes::from(format!("{n:02}")),
    )
    .await;
}

#[tokio::test]
async fn kv_compare_and_set_swaps_only_on_the_expected_value() -> Result<(), StorageError> {
    let cas = |index, expected: Option<&str>, new: &str| Entry::<Kv> {
        term: 1,
        index,
        payload: EntryPayload::Normal(
            KvCommand::CompareAndSet {
                key: "k".into(),
                expected: expected.map(str::to_string),
                new: new.into(),
            }
            .encode(),
        ),
    };
    let mut machine = KvStateMachine::<Kv>::new(1);
    let responses = machine
        .apply(&[
            cas(1, None, "a"),
            cas(2, None, "b"),
            cas(3, Some("a"), "c"),
            cas(4, Some("a"), "d"),
        ])
        .await?;
    let swapped = |swapped, previous: Option<&str>| KvResponse::Compared {
        swapped,
        previous: previous.map(str::to_string),
    };
    assert_eq!(
        responses,
        vec![
            swapped(true, None),
            swapped(false, Some("a")),
            swapped(true, Some("a")),
            swapped(false, Some("c")),
        ]
    );
    assert_eq!(machine.get("k"), Some("c"));
    let encoded = cas(5, Some("x"), "y");
    let EntryPayload::Normal(bytes) = &encoded.payload else {
        unreachable!("built as a normal entry")
    };
    assert_eq!(
        KvCommand::decode(bytes),
        Ok(KvCommand::CompareAndSet {
            key: "k".into(),
            expected: Some("x".into()),
            new: "y".into()
        })
    );
    assert!(KvCommand::decode(&bytes[..bytes.len() - 1]).is_err());
    Ok(())
}
