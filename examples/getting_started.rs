//! Getting started: three replicas of one Raft group in one process, driven by hand.
//!
//! Each node owns a `RaftCore`, an in-memory `MemStorage` and a tiny state machine (a map). The "network"
//! is a queue of envelopes. The loop is the whole contract: feed the cores (`tick`, `step`, `propose`),
//! take a `Ready`, send what may leave now, persist, call `persisted()`, send the rest, apply, `advance`.
//!
//! Run it with `cargo run --example getting_started`.

// ANCHOR: setup
use std::collections::BTreeMap;
use std::error::Error;

use bytes::Bytes;
use tickraft::storage::{LogStorage, WriteBatch};
use tickraft::{Config, EntryPayload, Envelope, Membership, RaftCore, RaftTypeConfig};
use tickraft_storage_mem::{MemStorage, MemView};

/// The application's types: node and group ids, the command carried by an entry, the snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Kv;

impl RaftTypeConfig for Kv {
    type NodeId = u64;
    type GroupId = u64;
    type Data = Bytes; // "key=value"
    type Snapshot = Bytes;
}

const GROUP: u64 = 1;

struct Node {
    core: RaftCore<Kv, MemView<Kv>>,
    storage: MemStorage<Kv>,
    map: BTreeMap<String, String>, // the state machine
}

/// Messages on the wire: (from, envelope).
type Wire = Vec<(u64, Envelope<Kv>)>;
// ANCHOR_END: setup

// ANCHOR: ready
/// Handles every `Ready` of one node: the durability contract in eight lines.
fn handle_ready(id: u64, node: &mut Node, wire: &mut Wire) -> Result<(), Box<dyn Error>> {
    while let Some(mut ready) = node.core.ready()? {
        if let Some(soft) = ready.soft_state() {
            println!("node {id}: now {:?}, leader {:?}", soft.role, soft.leader);
        }
        // 1. A leader's appends and heartbeats may leave before its own write is durable.
        wire.extend(ready.take_messages().into_iter().map(|m| (id, m)));
        // 2. Persist entries and hard state; sync when the Ready says so.
        let mut batch = WriteBatch::new();
        batch.push_writes(GROUP, ready.take_writes());
        node.storage.write(batch)?;
        if ready.must_sync() {
            node.storage.sync()?;
        }
        // 3. Only now: vote answers and append acknowledgements, committed entries.
        let mut persisted = ready.persisted();
        wire.extend(persisted.take_messages().into_iter().map(|m| (id, m)));
        for entry in persisted.committed() {
            if let EntryPayload::Normal(command) = &entry.payload {
                let command = String::from_utf8_lossy(command);
                if let Some((key, value)) = command.split_once('=') {
                    node.map.insert(key.to_string(), value.to_string());
                }
                println!("node {id}: applied #{} {command}", entry.index);
            }
        }
        node.core.advance(persisted)?;
    }
    Ok(())
}
// ANCHOR_END: ready

// ANCHOR: deliver
/// Runs every node's Readies and delivers every message until the cluster is quiet.
fn run_until_quiet(nodes: &mut BTreeMap<u64, Node>) -> Result<(), Box<dyn Error>> {
    loop {
        let mut wire = Wire::new();
        for (id, node) in nodes.iter_mut() {
            handle_ready(*id, node, &mut wire)?;
        }
        if wire.is_empty() {
            return Ok(());
        }
        for (from, envelope) in wire {
            let to = nodes.get_mut(&envelope.to).ok_or("unknown node")?;
            // A message a core refuses is dropped; the cluster carries on (Raft tolerates loss).
            if let Err(e) = to.core.step(from, envelope.message) {
                println!("node {}: dropped a message from {from}: {e}", envelope.to);
            }
        }
    }
}
// ANCHOR_END: deliver

// ANCHOR: main
fn main() -> Result<(), Box<dyn Error>> {
    let config = Config::default().validated()?;
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        // Every replica starts from the same initial membership, written once to its storage.
        let mut storage = MemStorage::new();
        let mut batch = WriteBatch::new();
        batch.bootstrap(GROUP, Membership::new_voters([1, 2, 3]));
        storage.write(batch)?;
        storage.sync()?;
        let core = RaftCore::new(id, config.clone(), storage.view(GROUP), 0, id)?;
        let map = BTreeMap::new();
        nodes.insert(id, Node { core, storage, map });
    }

    // Time passes only when we say so: tick until somebody has won an election.
    let mut ticks = 0;
    let leader = loop {
        for node in nodes.values_mut() {
            node.core.tick()?;
        }
        ticks += 1;
        run_until_quiet(&mut nodes)?;
        if let Some((id, _)) = nodes.iter().find(|(_, n)| n.core.is_leader()) {
            break *id;
        }
    };
    println!("node {leader} leads after {ticks} ticks");

    // Only the leader accepts proposals; a follower says who leads.
    let follower = if leader == 1 { 2 } else { 1 };
    let refused = nodes.get_mut(&follower).ok_or("no follower")?;
    if let Err(e) = refused.core.propose(Bytes::from("x=0")) {
        println!("node {follower} refuses the proposal: {e}");
    }
    for command in ["x=1", "y=2", "x=3"] {
        let node = nodes.get_mut(&leader).ok_or("no leader")?;
        let at = node.core.propose(Bytes::from(command))?;
        println!(
            "proposed {command} at index {} (term {})",
            at.index, at.term
        );
    }
    run_until_quiet(&mut nodes)?;

    for (id, node) in &nodes {
        println!(
            "node {id}: commit index {}, state {:?}",
            node.core.commit_index(),
            node.map
        );
    }
    let first = &nodes[&1].map;
    assert!(nodes.values().all(|n| &n.map == first) && first["x"] == "3");
    Ok(())
}
// ANCHOR_END: main
