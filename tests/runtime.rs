//! The tokio runtime end to end, over an in-process network and in-memory storage: elections, proposals,
//! linearizable reads, leader transfer, typed client errors, many groups, shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tickraft::groups::NodeBatch;
use tickraft::network::{Inbound, Network, NetworkError};
use tickraft::runtime::{
    start_node, ClientError, InboundQueue, NodeConfig, NodeHandle, RaftNode, StateMachineFactory,
};
use tickraft::{Membership, RaftTypeConfig, StorageError};
use tickraft_storage_mem::{KvCommand, KvResponse, KvStateMachine, MemStorage};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Kv;

impl RaftTypeConfig for Kv {
    type NodeId = u64;
    type GroupId = u64;
    type Data = Bytes;
    type Snapshot = Bytes;
}

type Handle = NodeHandle<Kv, KvStateMachine<Kv>>;

/// Routes batches between nodes of one process; a node can be cut off.
#[derive(Clone, Default)]
struct Switchboard {
    inboxes: Arc<Mutex<BTreeMap<u64, InboundQueue<Kv>>>>,
    cut: Arc<Mutex<Vec<u64>>>,
}

struct Port {
    board: Switchboard,
    from: u64,
}

impl Network<Kv> for Port {
    fn send(&self, batch: NodeBatch<Kv>) -> Result<(), NetworkError> {
        let cut = self.board.cut.lock().map_err(|_| NetworkError::Shutdown)?;
        if cut.contains(&self.from) || cut.contains(&batch.to) {
            return Ok(()); // lost on the wire
        }
        let inboxes = self
            .board
            .inboxes
            .lock()
            .map_err(|_| NetworkError::Shutdown)?;
        let to = batch.to;
        match inboxes.get(&to) {
            Some(inbox) => {
                inbox.deliver(batch);
                Ok(())
            }
            None => Err(NetworkError::UnknownPeer {
                peer: to.to_string(),
            }),
        }
    }
}

struct Machines;

impl StateMachineFactory<Kv> for Machines {
    type Machine = KvStateMachine<Kv>;
    fn open(&mut self, group: u64) -> Result<Self::Machine, StorageError> {
        Ok(KvStateMachine::new(group))
    }
}

fn config() -> NodeConfig {
    NodeConfig {
        tick: Duration::from_millis(2),
        request_timeout_ticks: 1000,
        ..NodeConfig::default()
    }
}

async fn start(board: &Switchboard, ids: &[u64]) -> BTreeMap<u64, Handle> {
    let mut handles = BTreeMap::new();
    for &id in ids {
        let (queue, receiver) = InboundQueue::new(4096);
        board.inboxes.lock().unwrap().insert(id, queue);
        let port = Port {
            board: board.clone(),
            from: id,
        };
        let peers: Vec<u64> = ids.iter().copied().filter(|p| *p != id).collect();
        let node = start_node(
            id,
            peers,
            config(),
            MemStorage::<Kv>::new(),
            port,
            Machines,
            receiver,
        )
        .unwrap();
        handles.insert(id, node.handle());
    }
    handles
}

fn set(key: &str, value: &str) -> Bytes {
    KvCommand::Set {
        key: key.into(),
        value: value.into(),
    }
    .encode()
}

/// Proposes on whichever node leads, following NotLeader hints and waiting out elections.
async fn propose(handles: &BTreeMap<u64, Handle>, group: u64, command: Bytes) -> KvResponse {
    let ids: Vec<u64> = handles.keys().copied().collect();
    let mut target = ids[0];
    for attempt in 0..500 {
        match handles[&target].propose(group, command.clone()).await {
            Ok(response) => return response,
            Err(ClientError::NotLeader { leader: Some(l) }) if handles.contains_key(&l) => {
                target = l
            }
            Err(ClientError::NotLeader { .. }) | Err(ClientError::Dropped) => {
                target = ids[(attempt + 1) % ids.len()];
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("propose failed: {e}"),
        }
    }
    panic!("no leader for group {group}");
}

async fn leader_of(handles: &BTreeMap<u64, Handle>, group: u64) -> u64 {
    for _ in 0..500 {
        for (id, h) in handles {
            if let Ok(status) = h.status(group).await {
                if status.raft.role == tickraft::Role::Leader {
                    return *id;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no leader for group {group}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_read_linearizably() {
    let board = Switchboard::default();
    let handles = start(&board, &[1, 2, 3]).await;
    for h in handles.values() {
        h.create_group(7, Membership::new_voters([1, 2, 3]))
            .await
            .unwrap();
    }
    let response = propose(&handles, 7, set("a", "1")).await;
    assert_eq!(response, KvResponse::Done { previous: None });
    let leader = leader_of(&handles, 7).await;
    let value = handles[&leader]
        .read(7, |m: &KvStateMachine<Kv>| m.get("a").map(str::to_string))
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("1"));
    // A follower refuses reads and proposals with a hint to the leader.
    let follower = *handles.keys().find(|k| **k != leader).unwrap();
    match handles[&follower].read(7, |_| ()).await {
        Err(ClientError::NotLeader { leader: hint }) => assert_eq!(hint, Some(leader)),
        other => panic!("expected NotLeader, got {:?}", other.map(|_| ())),
    }
    for h in handles.values() {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_transfer_and_on_isolation() {
    let board = Switchboard::default();
    let handles = start(&board, &[1, 2, 3]).await;
    for h in handles.values() {
        h.create_group(1, Membership::new_voters([1, 2, 3]))
            .await
            .unwrap();
    }
    propose(&handles, 1, set("k", "v0")).await;
    let leader = leader_of(&handles, 1).await;
    let target = *handles.keys().find(|k| **k != leader).unwrap();
    let mut changes = handles[&target].leader_changes();
    handles[&leader]
        .transfer_leadership(1, target)
        .await
        .unwrap();
    loop {
        let change = tokio::time::timeout(Duration::from_secs(5), changes.recv())
            .await
            .expect("a leader change")
            .unwrap();
        if change.group == 1 && change.leader == Some(target) {
            break;
        }
    }
    propose(&handles, 1, set("k", "v1")).await;
    // Cut the leader off: the others elect a new one and keep serving.
    board.cut.lock().unwrap().push(target);
    let rest: BTreeMap<u64, Handle> = handles
        .iter()
        .filter(|(k, _)| **k != target)
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    propose(&rest, 1, set("k", "v2")).await;
    let new_leader = leader_of(&rest, 1).await;
    let value = rest[&new_leader]
        .read(1, |m: &KvStateMachine<Kv>| m.get("k").map(str::to_string))
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("v2"));
    for h in handles.values() {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_on_one_driver_and_typed_errors() {
    let board = Switchboard::default();
    let handles = start(&board, &[1, 2, 3]).await;
    for g in 0..16u64 {
        for h in handles.values() {
            h.create_group(g, Membership::new_voters([1, 2, 3]))
                .await
                .unwrap();
        }
    }
    for g in 0..16u64 {
        for i in 0..5 {
            propose(&handles, g, set(&format!("k{i}"), &format!("g{g}"))).await;
        }
    }
    let statuses = handles[&1].statuses().await.unwrap();
    assert_eq!(statuses.len(), 16);
    assert!(matches!(
        handles[&1].propose(99, set("x", "y")).await,
        Err(ClientError::GroupNotFound { group: 99 })
    ));
    assert!(matches!(
        handles[&1]
            .create_group(3, Membership::new_voters([1, 2, 3]))
            .await,
        Err(ClientError::GroupExists { group: 3 })
    ));
    // A single-group handle is the same driver bound to one group.
    let single = RaftNode::new(handles[&2].clone(), 5, Membership::new_voters([1, 2, 3]))
        .await
        .unwrap();
    let status = single.status().await.unwrap();
    assert_eq!(status.group, 5);
    handles[&1].shutdown().await.unwrap();
    assert!(matches!(
        handles[&1].propose(0, set("x", "y")).await,
        Err(ClientError::ShuttingDown)
    ));
    for h in handles.values() {
        h.shutdown().await.unwrap();
    }
}
