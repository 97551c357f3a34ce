//! Real clusters: nodes in one process talking over TCP on 127.0.0.1, each with its own sled database in a
//! temporary directory and an in-memory `KvStateMachine` per group (restored from the stored snapshot and
//! the log after a restart).
//!
//! Each test starts its own cluster and stops it; nothing is shared between tests. Waits are bounded by
//! hang guards that fail with a message naming what was awaited; no assertion depends on durations.
//! `CLUSTER_TCP_TRACE=1` prints what leadership transfers do. The harness is in `support/tcp_cluster.rs`.

#[path = "support/tcp_cluster.rs"]
mod tcp_cluster;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tickraft::runtime::ClientError;
use tickraft::sim::linearizability::{check, History, Op, Outcome, Output, Verdict};
use tickraft::{Membership, MembershipChange, Role};
use tickraft_storage_mem::KvResponse;
use tokio::task::JoinSet;

use tcp_cluster::{
    certainly_not_applied, guard, node_config, set, wait_for, Client, Cluster, Handle, Kv,
};

fn voters(ids: &[u64]) -> Membership<Kv> {
    Membership::new_voters(ids.iter().copied())
}

/// Reads group `group`'s whole map on node `node`, linearizably, moving the group's leadership back to
/// `node` whenever it has moved on.
async fn read_map_on(
    cluster: &Cluster,
    node: u64,
    group: u64,
    what: &str,
) -> BTreeMap<String, String> {
    let handle = cluster.handle(node);
    guard(what, async {
        loop {
            match handle
                .read(group, |m: &tcp_cluster::Machine| m.map().clone())
                .await
            {
                Ok(map) => return map,
                Err(ClientError::NotLeader { .. }) => cluster.transfer(group, node).await,
                Err(e) => panic!("read of group {group} on node {node}: {e}"),
            }
        }
    })
    .await
}

/// Proposes on `handle` directly (no redirection), retrying while it is not (yet) the leader.
async fn propose_on(handle: &Handle, group: u64, key: &str, value: &str) -> KvResponse {
    guard(
        format!(
            "node {} to accept a write to group {group}",
            handle.node_id()
        ),
        async {
            loop {
                match handle.propose(group, tcp_cluster::set(key, value)).await {
                    Ok(response) => return response,
                    Err(e) if certainly_not_applied(&e) => {
                        tokio::time::sleep(Duration::from_millis(10)).await
                    }
                    Err(e) => panic!("write to group {group} on node {}: {e}", handle.node_id()),
                }
            }
        },
    )
    .await
}

/// Changes the membership of `group` on whichever node leads it.
async fn change_membership(cluster: &Cluster, group: u64, change: MembershipChange<Kv>) {
    guard(
        format!("membership change {change:?} of group {group}"),
        async {
            loop {
                let leader = cluster.leader(group).await;
                match cluster
                    .handle(leader)
                    .change_membership(group, change.clone())
                    .await
                {
                    Ok(()) => return,
                    Err(ClientError::NotLeader { .. }) | Err(ClientError::Dropped) => {}
                    // A previous change is still being committed.
                    Err(ClientError::Raft(e)) => {
                        eprintln!("membership change refused, retrying: {e}")
                    }
                    Err(e) => panic!("membership change {change:?} of group {group}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await
}

/// 1. Three nodes elect leaders for 16 groups; 40 client tasks write 10,000 entries between them, each
/// following NotLeader hints; afterwards a linearizable read of every group on its leader holds every
/// acknowledged write, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_10k_writes_across_16_groups() {
    const GROUPS: u64 = 16;
    const WRITERS: u64 = 40;
    const PER_WRITER: u64 = 250;
    let mut cluster = Cluster::new(&[1, 2, 3], node_config(300));
    cluster.start_all().await;
    for group in 0..GROUPS {
        cluster
            .create_group(group, &voters(&[1, 2, 3]), &[1, 2, 3])
            .await;
    }
    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let mut client = Client::new(cluster.directory());
        writers.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..PER_WRITER {
                let group = (w + i) % GROUPS;
                let key = format!("w{w}-{i}");
                let value = format!("v{w}-{i}");
                // Each key is written once; a retry after an ambiguous failure rewrites the same value.
                match client.propose(group, set(&key, &value)).await {
                    KvResponse::Done { previous } => {
                        assert!(previous.is_none() || previous.as_deref() == Some(value.as_str()))
                    }
                    other => panic!("unexpected response {other:?}"),
                }
                acked.push((group, key, value));
            }
            acked
        });
    }
    let mut expected: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    while let Some(acked) = writers.join_next().await {
        for (group, key, value) in acked.expect("a writer task panicked") {
            expected.entry(group).or_default().insert(key, value);
        }
    }
    assert_eq!(
        expected.values().map(BTreeMap::len).sum::<usize>(),
        (WRITERS * PER_WRITER) as usize
    );
    let mut client = Client::new(cluster.directory());
    for group in 0..GROUPS {
        let map = client.read_map(group).await;
        assert_eq!(
            map, expected[&group],
            "group {group}: the leader's state differs from the acknowledged writes"
        );
    }
    cluster.shutdown().await;
}

/// 2. A node is stopped (driver and transport; its database stays), the others keep writing (enough for
/// their logs to be compacted past it), then it restarts from disk on the same port: it catches up, and
/// once it leads a group it serves the latest value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_restarts_from_disk_and_catches_up() {
    const GROUPS: u64 = 4;
    const VICTIM: u64 = 3;
    let mut cluster = Cluster::new(&[1, 2, 3], node_config(50));
    cluster.start_all().await;
    for group in 0..GROUPS {
        cluster
            .create_group(group, &voters(&[1, 2, 3]), &[1, 2, 3])
            .await;
    }
    let mut client = Client::new(cluster.directory());
    let mut expected: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    let mut write = |group: u64, i: u64| {
        let key = format!("k{}", i % 8);
        let value = format!("{group}-{i}");
        expected
            .entry(group)
            .or_default()
            .insert(key.clone(), value.clone());
        (key, value)
    };
    for i in 0..120 {
        for group in 0..GROUPS {
            let (key, value) = write(group, i);
            client.propose(group, set(&key, &value)).await;
        }
    }
    // Make the victim lead a group, so that stopping it forces an election there.
    cluster.transfer(0, VICTIM).await;
    for group in 0..GROUPS {
        cluster.wait_caught_up(VICTIM, group).await;
    }
    let before = cluster.status(VICTIM, 0).await.raft;
    cluster.stop(VICTIM).await;

    for i in 120..400 {
        for group in 0..GROUPS {
            let (key, value) = write(group, i);
            client.propose(group, set(&key, &value)).await;
        }
    }
    cluster.start(VICTIM).await;
    let restored = cluster.handle(VICTIM).statuses().await.unwrap();
    assert_eq!(
        restored.iter().map(|s| s.group).collect::<Vec<_>>(),
        (0..GROUPS).collect::<Vec<_>>(),
        "the restarted node must find every group in its database"
    );
    for group in 0..GROUPS {
        cluster.wait_caught_up(VICTIM, group).await;
    }
    let after = cluster.status(VICTIM, 0).await.raft;
    assert!(
        after.applied > before.applied && after.term >= before.term,
        "node {VICTIM} did not move on: before {before:?}, after {after:?}"
    );
    for group in 0..GROUPS {
        let key = "latest";
        let value = format!("final-{group}");
        client.propose(group, set(key, &value)).await;
        expected
            .get_mut(&group)
            .unwrap()
            .insert(key.into(), value.clone());
        cluster.transfer(group, VICTIM).await;
        let map = read_map_on(&cluster, VICTIM, group, "a read on the restarted node").await;
        assert_eq!(
            map.get(key),
            Some(&value),
            "group {group}: latest value on node {VICTIM}"
        );
        assert_eq!(
            map, expected[&group],
            "group {group}: state on node {VICTIM}"
        );
    }
    cluster.shutdown().await;
}

/// 2b. The smallest form of a restart: after the group took a snapshot and compacted its log, a node that
/// restarts from disk still knows the group's membership (and so can vote and be elected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_the_membership_after_compaction() {
    let mut cluster = Cluster::new(&[1, 2, 3], node_config(10));
    cluster.start_all().await;
    cluster
        .create_group(7, &voters(&[1, 2, 3]), &[1, 2, 3])
        .await;
    let mut client = Client::new(cluster.directory());
    for i in 0..30 {
        client.propose(7, set("k", &i.to_string())).await;
    }
    let restarted = if cluster.leader(7).await == 3 { 2 } else { 3 };
    cluster.wait_caught_up(restarted, 7).await;
    cluster.stop(restarted).await;
    cluster.start(restarted).await;
    let status = cluster.status(restarted, 7).await;
    assert_eq!(
        status.membership,
        voters(&[1, 2, 3]),
        "node {restarted} lost the membership of group 7 across a restart: {:?}",
        status.raft
    );
    cluster.shutdown().await;
}

/// 2c. Every node stops, then the whole cluster starts again from its databases: leaders are elected and
/// every acknowledged write is still there (some groups restart from a snapshot, others from the log only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_restarts_from_disk() {
    const GROUPS: u64 = 4;
    let mut cluster = Cluster::new(&[1, 2, 3], node_config(40));
    cluster.start_all().await;
    for group in 0..GROUPS {
        cluster
            .create_group(group, &voters(&[1, 2, 3]), &[1, 2, 3])
            .await;
    }
    let mut client = Client::new(cluster.directory());
    let mut expected: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    for group in 0..GROUPS {
        // Group g gets 30 * g writes: group 0 none, group 1 less than a snapshot's worth, others more.
        for i in 0..30 * group {
            let (key, value) = (format!("k{}", i % 7), format!("{group}-{i}"));
            client.propose(group, set(&key, &value)).await;
            expected.entry(group).or_default().insert(key, value);
        }
    }
    cluster.shutdown().await;
    cluster.start_all().await;
    let mut client = Client::new(cluster.directory());
    for group in 0..GROUPS {
        let map = client.read_map(group).await;
        assert_eq!(
            map,
            expected.remove(&group).unwrap_or_default(),
            "group {group} after a full restart"
        );
    }
    for group in 0..GROUPS {
        client.propose(group, set("after", "restart")).await;
    }
    cluster.shutdown().await;
}

/// 3. Leadership of each group goes to every node in turn (twice round) while a writer per group keeps
/// writing; after each transfer the new leader accepts a write, and in the end every acknowledged write
/// is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfers_to_each_node_in_turn_while_writing() {
    const GROUPS: u64 = 2;
    let mut cluster = Cluster::new(&[1, 2, 3], node_config(100));
    cluster.start_all().await;
    for group in 0..GROUPS {
        cluster
            .create_group(group, &voters(&[1, 2, 3]), &[1, 2, 3])
            .await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = JoinSet::new();
    for group in 0..GROUPS {
        let mut client = Client::new(cluster.directory());
        let stop = stop.clone();
        writers.spawn(async move {
            let mut acked = BTreeMap::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("bg{i}");
                let value = format!("{group}-{i}");
                client.propose(group, set(&key, &value)).await;
                acked.insert(key, value);
                i += 1;
            }
            (group, acked)
        });
    }
    let mut expected: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    for round in 0..2 {
        for target in [1, 2, 3] {
            for group in 0..GROUPS {
                cluster.transfer(group, target).await;
                let key = format!("t{round}-{target}");
                let value = format!("by-{target}");
                let handle = cluster.handle(target);
                propose_on(&handle, group, &key, &value).await;
                expected.entry(group).or_default().insert(key, value);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = writers.join_next().await {
        let (group, acked) = done.expect("a writer task panicked");
        assert!(
            !acked.is_empty(),
            "the background writer of group {group} wrote nothing"
        );
        expected.entry(group).or_default().extend(acked);
    }
    let mut client = Client::new(cluster.directory());
    for group in 0..GROUPS {
        assert_eq!(
            client.read_map(group).await,
            expected[&group],
            "group {group}"
        );
    }
    cluster.shutdown().await;
}

/// 4. A fourth node joins a running cluster: the others learn its address and accept it as a peer at run
/// time; it creates the groups with an empty membership (it knows nothing yet), is added as a learner,
/// catches up (through a snapshot: the others compacted their logs), is promoted to voter and takes over
/// leadership by transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_joins_as_learner_then_voter_then_leads() {
    const GROUPS: u64 = 2;
    const NEW: u64 = 4;
    let mut cluster = Cluster::new(&[1, 2, 3, NEW], node_config(50));
    for id in [1, 2, 3] {
        cluster.set_peers(id, &[1, 2, 3]);
        cluster.start(id).await;
    }
    for group in 0..GROUPS {
        cluster
            .create_group(group, &voters(&[1, 2, 3]), &[1, 2, 3])
            .await;
    }
    let mut client = Client::new(cluster.directory());
    let mut expected: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    for i in 0..150 {
        for group in 0..GROUPS {
            let (key, value) = (format!("k{}", i % 10), format!("{group}-{i}"));
            client.propose(group, set(&key, &value)).await;
            expected.entry(group).or_default().insert(key, value);
        }
    }

    cluster.start(NEW).await;
    for id in [1, 2, 3] {
        cluster.introduce(id, NEW).await;
    }
    for group in 0..GROUPS {
        cluster
            .create_group(group, &Membership::default(), &[NEW])
            .await;
        change_membership(&cluster, group, MembershipChange::AddLearner(NEW)).await;
        cluster.wait_caught_up(NEW, group).await;
        let status = cluster.status(NEW, group).await;
        assert!(
            status.membership.is_learner(NEW),
            "group {group}: node {NEW} should be a learner, membership {:?}",
            status.membership
        );
        assert_ne!(status.raft.role, Role::Leader);
    }
    for group in 0..GROUPS {
        change_membership(&cluster, group, MembershipChange::AddVoter(NEW)).await;
        let (key, value) = ("after-promotion".to_string(), format!("{group}"));
        client.propose(group, set(&key, &value)).await;
        expected.get_mut(&group).unwrap().insert(key, value);
        cluster.wait_caught_up(NEW, group).await;
        let status = cluster.status(NEW, group).await;
        assert!(
            status.membership.is_voter(NEW),
            "group {group}: node {NEW} should be a voter, membership {:?}",
            status.membership
        );
        cluster.transfer(group, NEW).await;
        let handle = cluster.handle(NEW);
        propose_on(&handle, group, "led-by", "4").await;
        expected
            .get_mut(&group)
            .unwrap()
            .insert("led-by".into(), "4".into());
        let map = read_map_on(&cluster, NEW, group, "a read on the new leader").await;
        assert_eq!(map, expected[&group], "group {group}: state on node {NEW}");
    }
    cluster.shutdown().await;
}

/// 5. Concurrent clients put and read a handful of keys in three groups while nodes fail: the leader of
/// group 0 is stopped and restarted from disk (then made leader again by transfer), and later the leader
/// of group 1 is cut off from its peers (its transport shut down while clients can still reach it), then
/// stopped and restarted. The recorded history must be linearizable. Writes whose outcome is unknown
/// (timeout, shutdown, any ambiguous error) are recorded as such; proposals refused outright (not leader,
/// dropped, overloaded) and failed reads are retried within the same operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_history_across_a_restart_is_linearizable() {
    const GROUPS: u64 = 3;
    const KEYS: u64 = 3;
    const CLIENTS: u64 = 6;
    let mut cluster = Cluster::new(&[1, 2, 3], node_config(100));
    cluster.start_all().await;
    for group in 0..GROUPS {
        cluster
            .create_group(group, &voters(&[1, 2, 3]), &[1, 2, 3])
            .await;
    }
    let history = Arc::new(Mutex::new(History::new()));
    let clock = Arc::new(AtomicU64::new(1));
    let completed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        let mut client = Client::new(cluster.directory());
        let (history, clock, completed, stop) = (
            history.clone(),
            clock.clone(),
            completed.clone(),
            stop.clone(),
        );
        clients.spawn(async move {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (c + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut seq = 0u64;
            let mut unknown = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let group = next() % GROUPS;
                let k = next() % KEYS;
                let key = group * 100 + k;
                let key_name = format!("k{k}");
                let now = || clock.fetch_add(1, Ordering::SeqCst);
                if next() % 2 == 0 {
                    seq += 1;
                    let value = c * 1_000_000 + seq;
                    let op = history
                        .lock()
                        .unwrap()
                        .call(c, Op::Put { key, value }, now());
                    let command = set(&key_name, &value.to_string());
                    let outcome = loop {
                        match tokio::time::timeout(
                            Duration::from_secs(10),
                            client.propose_once(group, command.clone()),
                        )
                        .await
                        {
                            Ok(Ok(_)) => break Some(Output::Put),
                            Ok(Err(None)) => {}
                            Ok(Err(Some(e))) if certainly_not_applied(&e) => {}
                            Ok(Err(Some(_))) | Err(_) => break None,
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    };
                    let mut history = history.lock().unwrap();
                    match outcome {
                        Some(output) => history.ok(op, output, now()).unwrap(),
                        None => {
                            unknown += 1;
                            history.unknown(op).unwrap()
                        }
                    }
                } else {
                    let op = history.lock().unwrap().call(c, Op::Get { key }, now());
                    let outcome = loop {
                        match tokio::time::timeout(
                            Duration::from_secs(10),
                            client.read_once(group, &key_name),
                        )
                        .await
                        {
                            Ok(Ok(value)) => {
                                let value = value.map(|v| v.parse::<u64>().expect("a u64 value"));
                                break Some(Output::Get(value));
                            }
                            // A failed read has no effect: retry it as the same operation.
                            Ok(Err(None)) | Ok(Err(Some(ClientError::NotLeader { .. }))) => {}
                            Ok(Err(Some(_))) | Err(_) => break None,
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    };
                    let mut history = history.lock().unwrap();
                    match outcome {
                        Some(output) => history.ok(op, output, now()).unwrap(),
                        None => history.unknown(op).unwrap(),
                    }
                }
                completed.fetch_add(1, Ordering::SeqCst);
            }
            unknown
        });
    }
    let ops_done = |n: u64| {
        let completed = completed.clone();
        wait_for(format!("{n} client operations"), move || {
            let done = completed.load(Ordering::SeqCst);
            std::future::ready((done >= n).then_some(()))
        })
    };
    ops_done(300).await;
    let victim = cluster.leader(0).await;
    cluster.stop(victim).await;
    let at_stop = completed.load(Ordering::SeqCst);
    ops_done(at_stop + 300).await;
    cluster.start(victim).await;
    for group in 0..GROUPS {
        cluster.wait_caught_up(victim, group).await;
    }
    let at_restart = completed.load(Ordering::SeqCst);
    ops_done(at_restart + 200).await;
    // Reads and writes of group 0 are now served by the restarted node.
    cluster.transfer(0, victim).await;
    let at_transfer = completed.load(Ordering::SeqCst);
    ops_done(at_transfer + 200).await;
    let isolated = cluster.leader(1).await;
    cluster.isolate(isolated).await;
    let at_isolation = completed.load(Ordering::SeqCst);
    ops_done(at_isolation + 300).await;
    cluster.stop(isolated).await;
    cluster.start(isolated).await;
    for group in 0..GROUPS {
        cluster.wait_caught_up(isolated, group).await;
    }
    let at_second_restart = completed.load(Ordering::SeqCst);
    ops_done(at_second_restart + 300).await;
    stop.store(true, Ordering::Relaxed);
    let mut unknown_writes = 0;
    while let Some(done) = clients.join_next().await {
        unknown_writes += done.expect("a client task panicked");
    }
    cluster.shutdown().await;

    let history = history.lock().unwrap();
    // The check is not vacuous: writes were acknowledged and reads saw written values.
    let acknowledged = |wanted: fn(&Output) -> bool| {
        history
            .records()
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Ok { output, .. } if wanted(&output)))
            .count()
    };
    let puts = acknowledged(|o| matches!(o, Output::Put));
    let reads_of_values = acknowledged(|o| matches!(o, Output::Get(Some(_))));
    assert!(
        puts > 100 && reads_of_values > 100,
        "too few operations: {puts} puts, {reads_of_values} reads of values"
    );
    let verdict = check(&history);
    eprintln!(
        "history: {} operations, {unknown_writes} writes with unknown outcome; node {victim} restarted, \
         node {isolated} isolated and restarted; {verdict}",
        history.len()
    );
    if let Verdict::NotLinearizable { ops, .. } = &verdict {
        panic!("not linearizable: {verdict}\n{}", history.describe(ops));
    }
    assert!(verdict.is_linearizable(), "{verdict}");
}
