//! Tests of the Multi-Raft driver: batching, coalesced heartbeats, hibernation and node liveness.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::*;
use crate::config::Config;
use crate::core::test_log::MemLog;
use crate::types::test_config::T;
use crate::types::EntryPayload;

fn raft_config() -> ValidConfig {
    Config {
        election_timeout_min_ticks: 10,
        election_timeout_max_ticks: 20,
        heartbeat_ticks: 2,
        ..Config::default()
    }
    .validated()
    .unwrap()
}

struct Node {
    groups: Groups<T, MemLog>,
    logs: BTreeMap<u64, MemLog>,
    applied: BTreeMap<u64, Vec<Bytes>>,
}

/// A cluster of nodes hosting the same groups, with a batch queue and a set of dead nodes.
struct Cluster {
    nodes: BTreeMap<u64, Node>,
    queue: VecDeque<NodeBatch<T>>,
    down: BTreeSet<u64>,
    /// Every batch delivered, as (from, to, tick, carried heartbeats or was empty).
    delivered: Vec<(u64, u64, u64, usize)>,
}

impl Cluster {
    fn new(node_ids: &[u64], group_ids: impl IntoIterator<Item = u64> + Clone) -> Self {
        let mut nodes = BTreeMap::new();
        for &id in node_ids {
            let mut groups = Groups::new(id, 1, raft_config(), GroupsConfig::default(), 7).unwrap();
            for &peer in node_ids {
                groups.add_peer(peer);
            }
            let mut logs = BTreeMap::new();
            for g in group_ids.clone() {
                let log = MemLog::new(node_ids);
                groups.create_group(g, log.clone(), 0).unwrap();
                logs.insert(g, log);
            }
            nodes.insert(
                id,
                Node {
                    groups,
                    logs,
                    applied: BTreeMap::new(),
                },
            );
        }
        Cluster {
            nodes,
            queue: VecDeque::new(),
            down: BTreeSet::new(),
            delivered: Vec::new(),
        }
    }

    fn groups(&mut self, id: u64) -> &mut Groups<T, MemLog> {
        &mut self.nodes.get_mut(&id).unwrap().groups
    }

    /// Runs one ready cycle of node `id`; returns the batches it may send before persisting (the others
    /// are queued).
    fn cycle(&mut self, id: u64) -> Vec<NodeBatch<T>> {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(mut ready) = node.groups.ready().unwrap() else {
            return Vec::new();
        };
        let now = ready.take_batches();
        for w in ready.take_writes() {
            let log = &node.logs[&w.group];
            if let Some(s) = &w.writes.snapshot {
                log.install(s);
            }
            log.write(&w.writes.entries, w.writes.hard_state.as_ref());
        }
        let mut persisted = ready.persisted();
        self.queue.extend(persisted.take_batches());
        node.groups.advance(persisted).unwrap();
        now
    }

    fn process(&mut self) {
        for (id, node) in self.nodes.iter_mut() {
            if self.down.contains(id) {
                continue;
            }
            while let Some(mut ready) = node.groups.ready().unwrap() {
                self.queue.extend(ready.take_batches());
                for w in ready.take_writes() {
                    let log = &node.logs[&w.group];
                    if let Some(s) = &w.writes.snapshot {
                        log.install(s);
                    }
                    log.write(&w.writes.entries, w.writes.hard_state.as_ref());
                }
                let mut persisted = ready.persisted();
                self.queue.extend(persisted.take_batches());
                for apply in persisted.applies() {
                    let list = node.applied.entry(apply.group).or_default();
                    for e in &apply.committed {
                        if let EntryPayload::Normal(d) = &e.payload {
                            list.push(d.clone());
                        }
                    }
                }
                node.groups.advance(persisted).unwrap();
            }
        }
    }

    fn deliver(&mut self) {
        loop {
            self.process();
            let Some(batch) = self.queue.pop_front() else {
                break;
            };
            if self.down.contains(&batch.from) || self.down.contains(&batch.to) {
                continue;
            }
            let now = self.nodes[&batch.to].groups.now();
            self.delivered
                .push((batch.from, batch.to, now, batch.heartbeats.len()));
            if std::env::var("TRACE").is_ok() {
                eprintln!("{batch:?}");
            }
            let rejected = self.groups(batch.to).step(batch).unwrap();
            assert!(rejected.is_empty(), "{rejected:?}");
        }
    }

    fn tick(&mut self, n: usize) {
        for _ in 0..n {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                if !self.down.contains(&id) {
                    self.groups(id).tick().unwrap();
                }
            }
            self.deliver();
        }
    }

    /// Restarts node `id`: a new `Groups` with `incarnation` over the same durable logs, its state
    /// machines emptied (they are rebuilt from the log).
    fn restart(&mut self, id: u64, incarnation: u64) {
        let peers: Vec<u64> = self.nodes.keys().copied().collect();
        let node = self.nodes.get_mut(&id).unwrap();
        let mut restarted =
            Groups::new(id, incarnation, raft_config(), GroupsConfig::default(), 9).unwrap();
        for peer in peers {
            restarted.add_peer(peer);
        }
        for (g, log) in &node.logs {
            restarted.create_group(*g, log.clone(), 0).unwrap();
        }
        node.groups = restarted;
        node.applied.clear();
    }

    fn leader_of(&self, group: u64) -> Option<u64> {
        let leaders: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(id, n)| {
                !self.down.contains(id) && n.groups.core(group).is_some_and(|c| c.is_leader())
            })
            .map(|(id, _)| *id)
            .collect();
        // A deposed leader that is asleep may still think it leads; take the highest term.
        leaders
            .into_iter()
            .max_by_key(|id| self.nodes[id].groups.core(group).map(|c| c.term()))
    }

    fn term_of(&self, node: u64, group: u64) -> u64 {
        self.nodes[&node].groups.core(group).unwrap().term()
    }
}

fn data(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn a_single_group_is_a_groups_of_one() {
    let mut c = Cluster::new(&[1, 2, 3], [7]);
    c.tick(40);
    let leader = c.leader_of(7).expect("a leader");
    c.groups(leader).propose(7, data("x")).unwrap();
    c.deliver();
    c.tick(2); // followers learn the commit index from the next heartbeat
    for id in [1, 2, 3] {
        assert_eq!(c.nodes[&id].applied[&7], vec![data("x")], "node {id}");
    }
}

#[test]
fn many_groups_elect_and_commit_with_one_batch_per_peer_per_cycle() {
    let groups: Vec<u64> = (0..60).collect();
    let mut c = Cluster::new(&[1, 2, 3], groups.clone());
    c.tick(60);
    for &g in &groups {
        let leader = c
            .leader_of(g)
            .unwrap_or_else(|| panic!("group {g} has no leader"));
        c.groups(leader).propose(g, data(&format!("v{g}"))).unwrap();
    }
    // One ready on each node carries the proposals of all the groups it leads, one batch per peer.
    for id in [1, 2, 3] {
        let batches = c.cycle(id);
        let mut destinations: Vec<u64> = batches.iter().map(|b| b.to).collect();
        destinations.sort();
        destinations.dedup();
        assert_eq!(
            destinations.len(),
            batches.len(),
            "one batch per destination"
        );
        c.queue.extend(batches);
    }
    c.deliver();
    c.tick(2); // followers learn the commit index from the next heartbeat
    for &g in &groups {
        for id in [1, 2, 3] {
            assert_eq!(c.nodes[&id].applied[&g], vec![data(&format!("v{g}"))]);
        }
    }
}

#[test]
fn heartbeats_of_all_groups_coalesce_into_one_batch_per_node_pair_per_interval() {
    let config = GroupsConfig {
        hibernation: false,
        ..GroupsConfig::default()
    };
    let groups: Vec<u64> = (0..40).collect();
    let mut c = Cluster::new(&[1, 2, 3], groups);
    for node in c.nodes.values_mut() {
        node.groups.config = config.clone();
    }
    c.tick(60);
    c.delivered.clear();
    let interval: u64 = 2;
    c.tick(10 * interval as usize);
    // Count, per ordered node pair and interval, the batches that carried heartbeats.
    let mut per_pair_interval: BTreeMap<(u64, u64, u64), usize> = BTreeMap::new();
    let mut heartbeats = 0;
    for &(from, to, tick, hbs) in &c.delivered {
        if hbs > 0 {
            *per_pair_interval
                .entry((from, to, tick / interval))
                .or_default() += 1;
            heartbeats += hbs;
        }
    }
    assert!(heartbeats > 40, "leaders did send heartbeats: {heartbeats}");
    assert!(
        per_pair_interval.values().all(|n| *n == 1),
        "{per_pair_interval:?}"
    );
}

#[test]
fn idle_groups_hibernate_send_nothing_and_wake_on_a_proposal() {
    let groups: Vec<u64> = (0..30).collect();
    let mut c = Cluster::new(&[1, 2, 3], groups.clone());
    c.tick(60);
    c.tick(40);
    for id in [1, 2, 3] {
        let stats = c.nodes[&id].groups.stats();
        assert_eq!(stats.awake, 0, "node {id}: {stats:?}");
        assert_eq!(stats.hibernating, 30);
    }
    // Only node-level liveness flows now: batches without any group message.
    c.delivered.clear();
    let queue_before = c.queue.len();
    c.tick(10);
    assert_eq!(queue_before, 0);
    assert!(!c.delivered.is_empty(), "liveness batches still flow");
    assert!(c.delivered.iter().all(|(_, _, _, hbs)| *hbs == 0));
    // A proposal wakes its group, commits, and the group goes back to sleep.
    let leader = c.leader_of(5).unwrap();
    c.groups(leader).propose(5, data("wake")).unwrap();
    c.deliver();
    c.tick(2); // followers learn the commit index from the next heartbeat
    for id in [1, 2, 3] {
        assert_eq!(c.nodes[&id].applied[&5], vec![data("wake")]);
    }
    let awake: usize = [1, 2, 3]
        .iter()
        .map(|id| c.nodes[id].groups.stats().awake)
        .sum();
    assert!((1..=3).contains(&awake), "only group 5 woke: {awake}");
    c.tick(40);
    let awake: usize = [1, 2, 3]
        .iter()
        .map(|id| c.nodes[id].groups.stats().awake)
        .sum();
    assert_eq!(awake, 0);
}

#[test]
fn a_dead_node_wakes_only_the_groups_it_led_and_each_elects_once() {
    let groups: Vec<u64> = (0..60).collect();
    let mut c = Cluster::new(&[1, 2, 3], groups.clone());
    c.tick(100);
    let led_by_3: Vec<u64> = groups
        .iter()
        .copied()
        .filter(|g| c.leader_of(*g) == Some(3))
        .collect();
    assert!(!led_by_3.is_empty());
    let terms_before: BTreeMap<u64, u64> = groups.iter().map(|g| (*g, c.term_of(1, *g))).collect();
    c.down.insert(3);
    // Node timeout (10) + spread + one election: well within two election timeouts after detection.
    c.tick(10 + 2 * 20);
    for g in &led_by_3 {
        let leader = c
            .leader_of(*g)
            .unwrap_or_else(|| panic!("group {g} has no leader"));
        assert_ne!(leader, 3);
    }
    let elections: u64 = groups
        .iter()
        .map(|g| c.term_of(1, *g).max(c.term_of(2, *g)) - terms_before[g])
        .sum();
    assert_eq!(
        elections,
        led_by_3.len() as u64,
        "exactly one election per orphaned group"
    );
    let woken: u64 = [1, 2]
        .iter()
        .map(|id| c.nodes[id].groups.stats().woken_by_liveness)
        .sum();
    assert_eq!(
        woken,
        2 * led_by_3.len() as u64,
        "both surviving replicas of each, nobody else"
    );
}

#[test]
fn a_restarted_node_rejoins_and_only_groups_that_need_it_wake() {
    let groups: Vec<u64> = (0..20).collect();
    let mut c = Cluster::new(&[1, 2, 3], groups.clone());
    c.tick(100);
    c.restart(3, 2);
    c.tick(100);
    for g in &groups {
        let leader = c.leader_of(*g).unwrap();
        let core = c.nodes[&3].groups.core(*g).unwrap();
        assert!(
            core.is_leader() || core.leader() == Some(leader),
            "group {g}"
        );
    }
    for id in [1, 2, 3] {
        assert_eq!(
            c.nodes[&id].groups.stats().awake,
            0,
            "all asleep again on {id}"
        );
    }
    // Proposals still commit everywhere.
    let leader = c.leader_of(4).unwrap();
    c.groups(leader).propose(4, data("after restart")).unwrap();
    c.deliver();
    c.tick(2); // followers learn the commit index from the next heartbeat
    assert_eq!(c.nodes[&3].applied[&4].last(), Some(&data("after restart")));
}

#[test]
fn batches_from_unknown_nodes_and_for_unknown_groups_are_refused() {
    let mut c = Cluster::new(&[1, 2, 3], [1]);
    let stranger = NodeBatch::<T>::new(9, 1, 1);
    assert!(matches!(
        c.groups(1).step(stranger),
        Err(GroupsError::UnknownNode { node: 9 })
    ));
    let misaddressed = NodeBatch::<T>::new(2, 3, 1);
    assert!(matches!(
        c.groups(1).step(misaddressed),
        Err(GroupsError::Misaddressed { .. })
    ));
    let mut unknown_group = NodeBatch::<T>::new(2, 1, 1);
    unknown_group.heartbeats.push(GroupHeartbeat {
        group: 99,
        term: 1,
        commit: 0,
        read_seq: 0,
    });
    let rejected = c.groups(1).step(unknown_group.clone()).unwrap();
    assert!(matches!(
        rejected.as_slice(),
        [GroupsError::UnknownGroup { group: 99, from: 2 }]
    ));
    // With a policy, the same message creates an uninitialised replica.
    c.groups(1)
        .set_replica_policy(Box::new(|_, _| Some(MemLog::new(&[]))));
    let rejected = c.groups(1).step(unknown_group).unwrap();
    assert!(rejected.is_empty());
    assert!(c.groups(1).contains(99));
    assert_eq!(c.groups(1).core(99).unwrap().leader(), Some(2));
}

#[test]
fn groups_can_be_added_and_removed_at_runtime() {
    let mut c = Cluster::new(&[1, 2, 3], [1]);
    c.tick(40);
    for id in [1, 2, 3] {
        let log = MemLog::new(&[1, 2, 3]);
        c.nodes.get_mut(&id).unwrap().logs.insert(2, log.clone());
        c.groups(id).create_group(2, log, 0).unwrap();
    }
    assert!(matches!(
        c.groups(1).create_group(2, MemLog::new(&[1]), 0),
        Err(GroupsError::GroupExists { group: 2 })
    ));
    c.tick(40);
    let leader = c.leader_of(2).unwrap();
    c.groups(leader).propose(2, data("g2")).unwrap();
    c.deliver();
    c.tick(2); // followers learn the commit index from the next heartbeat
    assert_eq!(c.nodes[&1].applied[&2], vec![data("g2")]);
    for id in [1, 2, 3] {
        c.groups(id).remove_group(1).unwrap();
        assert!(!c.groups(id).contains(1));
    }
    c.tick(20);
    assert!(matches!(
        c.groups(1).propose(1, data("gone")),
        Err(GroupsError::GroupNotFound { group: 1 })
    ));
}

#[test]
fn a_late_batch_from_an_earlier_life_of_a_peer_is_dropped_not_taken_for_a_restart() {
    let groups: Vec<u64> = (0..20).collect();
    let mut c = Cluster::new(&[1, 2, 3], groups.clone());
    c.tick(100);
    c.restart(3, 2);
    c.tick(100);
    let woken_before = c.nodes[&1].groups.stats().woken_by_liveness;
    // A batch of node 3's first life, held back by the network until now.
    let late = NodeBatch::<T>::new(3, 1, 1);
    assert!(matches!(
        c.groups(1).step(late),
        Err(GroupsError::StaleIncarnation {
            node: 3,
            incarnation: 1,
            current: 2
        })
    ));
    c.tick(1);
    assert_eq!(c.nodes[&1].groups.stats().woken_by_liveness, woken_before);
    assert_eq!(c.nodes[&1].groups.stats().awake, 0, "nothing woke");
}

#[test]
fn a_client_request_to_a_sleeping_follower_gets_the_leader_hint_without_waking_it() {
    let mut c = Cluster::new(&[1, 2, 3], 0..10);
    c.tick(100);
    let leader = c.leader_of(5).unwrap();
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    assert_eq!(c.nodes[&follower].groups.is_hibernating(5), Some(true));
    let answer = c.groups(follower).read_index(5);
    assert!(
        matches!(
            answer,
            Err(GroupsError::Group {
                group: 5,
                error: Error::NotLeader { leader: Some(l) }
            }) if l == leader
        ),
        "{answer:?}"
    );
    assert!(c.groups(follower).propose(5, data("misrouted")).is_err());
    assert_eq!(c.nodes[&follower].groups.is_hibernating(5), Some(true));
    let term = c.term_of(leader, 5);
    c.tick(100);
    assert_eq!(c.term_of(leader, 5), term, "no election followed");
    assert_eq!(c.leader_of(5), Some(leader));
}

#[test]
fn lease_reads_need_a_node_timeout_of_at_least_an_election_timeout() {
    let lease = Config {
        election_timeout_min_ticks: 10,
        election_timeout_max_ticks: 20,
        heartbeat_ticks: 2,
        check_quorum: true,
        read_mode: crate::config::ReadMode::Lease,
        ..Config::default()
    }
    .validated()
    .unwrap();
    let short = GroupsConfig {
        node_timeout_ticks: 6,
        ..GroupsConfig::default()
    };
    assert!(matches!(
        Groups::<T, MemLog>::new(1, 1, lease.clone(), short, 7),
        Err(GroupsError::Config(_))
    ));
    assert!(Groups::<T, MemLog>::new(1, 1, lease, GroupsConfig::default(), 7).is_ok());
}
