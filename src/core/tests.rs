//! Unit tests of the core, one per rule of the Raft paper, readable as documentation: set up, act, assert
//! the exact outcome.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::*;
use crate::config::Config;
use crate::message::{AppendResponse, Envelope, Message, Rpc};
use crate::ready::ReadState;
use crate::storage::LogView;
use crate::types::test_config::T;
use crate::types::{Entry, EntryPayload, Membership, Role, Snapshot, Term};

use super::test_log::{decode_state, encode_state, entry, MemLog};

fn data(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The tests' configuration: no pre-vote or check-quorum unless a test turns them on, and commits
/// broadcast at once so that one `stabilize` carries them to every follower.
fn config() -> Config {
    Config {
        election_timeout_min_ticks: 10,
        election_timeout_max_ticks: 20,
        heartbeat_ticks: 1,
        pre_vote: false,
        check_quorum: false,
        broadcast_commit: true,
        ..Config::default()
    }
}

type Core = RaftCore<T, MemLog>;

fn core_with(id: u64, log: MemLog, config: Config) -> Core {
    RaftCore::new(id, config.validated().unwrap(), log, 0, id).unwrap()
}

// ----- a tiny cluster: nodes, a message queue, partitions -----

struct Node {
    core: Core,
    log: MemLog,
    /// Commands applied to the state machine, including those restored from a snapshot.
    state: Vec<Bytes>,
    applied: Vec<Entry<T>>,
    reads: Vec<ReadState>,
    aborted_reads: Vec<ReadId>,
}

struct Cluster {
    nodes: BTreeMap<u64, Node>,
    queue: VecDeque<(u64, Envelope<T>)>,
    /// Directed links that drop everything.
    cut: BTreeSet<(u64, u64)>,
}

impl Cluster {
    fn new(ids: &[u64], config: Config) -> Self {
        let logs = ids.iter().map(|_| MemLog::new(ids)).collect();
        Self::with_logs(ids, logs, config)
    }

    fn with_logs(ids: &[u64], logs: Vec<MemLog>, config: Config) -> Self {
        let nodes = ids
            .iter()
            .zip(logs)
            .map(|(id, log)| {
                let node = Node {
                    core: core_with(*id, log.clone(), config.clone()),
                    log,
                    state: Vec::new(),
                    applied: Vec::new(),
                    reads: Vec::new(),
                    aborted_reads: Vec::new(),
                };
                (*id, node)
            })
            .collect();
        Cluster {
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
        }
    }

    fn core(&mut self, id: u64) -> &mut Core {
        &mut self.nodes.get_mut(&id).unwrap().core
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    /// Runs every node's Ready to completion (persist everything, apply, advance) and queues the messages.
    fn process_readies(&mut self) {
        for (id, node) in self.nodes.iter_mut() {
            while let Some(mut ready) = node.core.ready().unwrap() {
                for env in ready.take_messages() {
                    self.queue.push_back((*id, env));
                }
                if let Some(snapshot) = ready.snapshot() {
                    node.log.install(snapshot);
                    node.state = decode_state(&snapshot.data);
                }
                node.log.write(ready.entries(), ready.hard_state());
                let mut persisted = ready.persisted();
                for env in persisted.take_messages() {
                    self.queue.push_back((*id, env));
                }
                for entry in persisted.committed() {
                    if let EntryPayload::Normal(d) = &entry.payload {
                        node.state.push(d.clone());
                    }
                }
                node.applied.extend_from_slice(persisted.committed());
                node.reads.extend_from_slice(persisted.read_states());
                node.aborted_reads
                    .extend_from_slice(persisted.aborted_reads());
                node.core.advance(persisted).unwrap();
            }
        }
    }

    /// Delivers messages until the network is quiet.
    fn stabilize(&mut self) {
        loop {
            self.process_readies();
            let Some((from, env)) = self.queue.pop_front() else {
                break;
            };
            if self.cut.contains(&(from, env.to)) {
                continue;
            }
            if let Some(node) = self.nodes.get_mut(&env.to) {
                node.core.step(from, env.message).unwrap();
            }
        }
    }

    fn tick_all(&mut self, n: usize) {
        for _ in 0..n {
            for node in self.nodes.values_mut() {
                node.core.tick().unwrap();
            }
            self.stabilize();
        }
    }

    /// Makes `id` time out and run an election, then delivers everything.
    fn campaign(&mut self, id: u64) {
        let core = self.core(id);
        let role = core.role();
        while core.role() == role && core.role() != Role::Leader {
            core.tick().unwrap();
        }
        self.stabilize();
    }

    fn isolate(&mut self, id: u64) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn leaders(&self) -> Vec<(u64, Term)> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.core.is_leader())
            .map(|(id, n)| (*id, n.core.term()))
            .collect()
    }

    /// Takes a snapshot of `id`'s state machine at its applied index and compacts its log there.
    fn snapshot_and_compact(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        let meta = node.core.compaction_point().unwrap();
        let snapshot = Snapshot {
            meta,
            data: encode_state(&node.state),
        };
        node.log.compact_with(snapshot);
    }

    fn applied_data(&self, id: u64) -> Vec<Bytes> {
        self.node(id)
            .applied
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Normal(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Takes one Ready from `core`, persists it into `log`, and returns (sent before persist, sent after).
fn drain(core: &mut Core, log: &MemLog) -> (Vec<Envelope<T>>, Vec<Envelope<T>>) {
    let Some(mut ready) = core.ready().unwrap() else {
        return (Vec::new(), Vec::new());
    };
    let now = ready.take_messages();
    log.write(ready.entries(), ready.hard_state());
    let mut persisted = ready.persisted();
    let later = persisted.take_messages();
    core.advance(persisted).unwrap();
    (now, later)
}

fn message(term: Term, rpc: Rpc<T>) -> Message<T> {
    Message { term, rpc }
}

// ----- §5.2 leader election -----

#[test]
fn election_elects_a_single_leader_per_term() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    assert_eq!(c.leaders(), vec![(1, 1)]);
    for id in [2, 3] {
        assert_eq!(c.core(id).role(), Role::Follower);
        assert_eq!(c.core(id).leader(), Some(1));
        assert_eq!(c.core(id).term(), 1);
    }
    // Another election in a later term deposes the old leader: still one leader per term.
    c.campaign(2);
    assert_eq!(c.leaders(), vec![(2, 2)]);
}

#[test]
fn a_voter_grants_at_most_one_vote_per_term() {
    let log = MemLog::new(&[1, 2, 3]);
    let mut core = core_with(1, log.clone(), config());
    let request = |last_log| {
        message(
            5,
            Rpc::VoteRequest(VoteRequest {
                last_log,
                pre_vote: false,
                leader_transfer: false,
            }),
        )
    };
    core.step(2, request(LogId::new(0, 0))).unwrap();
    core.step(3, request(LogId::new(0, 0))).unwrap();
    let (now, later) = drain(&mut core, &log);
    assert!(now.is_empty(), "vote answers must wait for durability");
    let grants: Vec<(u64, bool)> = later
        .iter()
        .map(|e| match e.message.rpc {
            Rpc::VoteResponse(r) => (e.to, r.granted),
            _ => panic!("unexpected {:?}", e.message),
        })
        .collect();
    assert_eq!(grants, vec![(2, true), (3, false)]);
    assert_eq!(
        log.0.borrow().hard_state.vote,
        Some(2),
        "the vote is durable"
    );
}

#[test]
fn dueling_candidates_resolve() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    // 1 and 2 both time out in term 1 while 3 only hears from 1: 2 loses (3 already voted).
    c.cut.insert((2, 3));
    c.cut.insert((3, 2));
    let ticks = |core: &mut Core| {
        let role = core.role();
        while core.role() == role {
            core.tick().unwrap();
        }
    };
    ticks(c.core(1));
    ticks(c.core(2));
    c.stabilize();
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(
        c.core(2).role(),
        Role::Follower,
        "2 hears from leader 1 in term 1"
    );
    assert_eq!(c.leaders(), vec![(1, 1)]);
    // Once the network heals, the cluster converges on one leader that everyone follows.
    c.heal();
    c.tick_all(30);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    let (leader, term) = leaders[0];
    for id in [1, 2, 3] {
        assert_eq!(c.core(id).term(), term);
        assert_eq!(c.core(id).leader(), Some(leader));
    }
}

#[test]
fn a_candidate_with_a_stale_log_cannot_win() {
    // Node 1 missed term 2; nodes 2 and 3 hold an entry of term 2.
    let logs = vec![
        MemLog::with_terms(&[1, 2, 3], &[1]),
        MemLog::with_terms(&[1, 2, 3], &[1, 2]),
        MemLog::with_terms(&[1, 2, 3], &[1, 2]),
    ];
    let mut c = Cluster::with_logs(&[1, 2, 3], logs, config());
    c.campaign(1);
    assert_ne!(c.core(1).role(), Role::Leader);
    assert!(c.leaders().is_empty());
    // An up-to-date node wins.
    c.campaign(2);
    assert_eq!(c.leaders().len(), 1);
    assert_eq!(c.leaders()[0].0, 2);
}

#[test]
fn a_node_without_a_vote_in_the_membership_never_campaigns() {
    let log = MemLog::new(&[2, 3]);
    let mut core = core_with(1, log, config());
    for _ in 0..100 {
        core.tick().unwrap();
    }
    assert_eq!(core.role(), Role::Follower);
    assert_eq!(core.term(), 0);
}

// ----- §5.3 log replication -----

#[test]
fn commit_reaches_followers() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.core(1).propose(data("x")).unwrap();
    c.stabilize();
    for id in [1, 2, 3] {
        assert_eq!(c.applied_data(id), vec![data("x")], "node {id}");
        assert_eq!(c.core(id).commit_index(), 2, "blank entry + x");
    }
}

#[test]
fn without_commit_broadcast_the_commit_index_rides_on_the_next_heartbeat() {
    let config = Config {
        broadcast_commit: false,
        ..config()
    };
    let mut c = Cluster::new(&[1, 2, 3], config);
    c.campaign(1);
    c.tick_all(1);
    c.core(1).propose(data("x")).unwrap();
    c.stabilize();
    assert_eq!(c.core(1).commit_index(), 2, "committed on the leader");
    assert_eq!(
        c.core(2).commit_index(),
        1,
        "no extra message told the follower"
    );
    c.tick_all(1); // the next heartbeat carries it
    assert_eq!(c.core(2).commit_index(), 2);
    assert_eq!(c.applied_data(2), vec![data("x")]);
}

#[test]
fn a_new_leader_overwrites_a_followers_conflicting_uncommitted_tail() {
    // Node 3 holds entries of term 2 that were never committed; nodes 1 and 2 moved on to term 3.
    let logs = vec![
        MemLog::with_terms(&[1, 2, 3], &[1, 1, 3]),
        MemLog::with_terms(&[1, 2, 3], &[1, 1, 3]),
        MemLog::with_terms(&[1, 2, 3], &[1, 2, 2, 2]),
    ];
    let mut c = Cluster::with_logs(&[1, 2, 3], logs, config());
    c.campaign(1);
    assert!(c.core(1).is_leader());
    c.core(1).propose(data("y")).unwrap();
    c.stabilize();
    let leader_terms = c.node(1).log.terms();
    assert_eq!(c.node(3).log.terms(), leader_terms);
    assert_eq!(leader_terms, vec![1, 1, 3, 4, 4]);
}

#[test]
fn a_follower_commits_only_up_to_the_last_entry_the_leader_sent() {
    // Node 2 holds a stale entry 3@1 that the leader of term 2 never had (its 3 is 3@2, committed).
    // An append that brings entry 2 with the leader's commit index 4 commits 2, not the stale 3.
    let follower_log = MemLog::with_terms(&[1, 2, 3], &[1, 1, 1]);
    let mut follower = core_with(2, follower_log, config());
    let append = AppendRequest {
        prev: LogId { term: 1, index: 1 },
        entries: vec![crate::core::test_log::entry(1, 2)],
        commit: 4,
    };
    follower
        .step(1, message(2, Rpc::AppendRequest(append)))
        .unwrap();
    assert_eq!(follower.commit_index(), 2);
}

#[test]
fn backtracking_converges_in_one_round_trip_per_conflicting_term() {
    // Raft Figure 7 (f): the follower holds a long tail of terms 2 and 3 that the leader never had.
    let leader_terms = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let follower_terms = [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3];
    let leader_log = MemLog::with_terms(&[1, 2], &leader_terms);
    leader_log.0.borrow_mut().hard_state.term = 7;
    let follower_log = MemLog::with_terms(&[1, 2], &follower_terms);
    let mut leader = core_with(1, leader_log.clone(), config());
    let mut follower = core_with(2, follower_log.clone(), config());
    // Make 1 leader of term 8 by hand: campaign, and let 2 grant.
    while !matches!(leader.role(), Role::Candidate) {
        leader.tick().unwrap();
    }
    let mut round_trips = 0;
    let mut to_follower: Vec<Message<T>> = Vec::new();
    let mut to_leader: Vec<Message<T>> = Vec::new();
    loop {
        let (now, later) = drain(&mut leader, &leader_log);
        to_follower.extend(now.into_iter().chain(later).map(|e| e.message));
        let appends = to_follower
            .iter()
            .filter(|m| matches!(m.rpc, Rpc::AppendRequest(_)))
            .count();
        if appends > 0 {
            round_trips += 1;
        }
        for m in to_follower.drain(..) {
            follower.step(1, m).unwrap();
        }
        let (now, later) = drain(&mut follower, &follower_log);
        to_leader.extend(now.into_iter().chain(later).map(|e| e.message));
        if to_leader.is_empty() {
            break;
        }
        for m in to_leader.drain(..) {
            leader.step(2, m).unwrap();
        }
        assert!(round_trips < 10, "backtracking does not converge");
    }
    assert!(leader.is_leader());
    let mut expected = leader_terms.to_vec();
    expected.push(8); // the new leader's blank entry
    assert_eq!(follower_log.terms(), expected);
    // The follower's conflicting terms are 3 and 2: one probe at the leader's tail (rejected, hint skips
    // term 3), one that skips term 2 and lands at index 3 (accepted with the missing entries). The
    // election's own append is the first round trip.
    assert!(round_trips <= 3, "took {round_trips} round trips");
}

// ----- §5.4 safety -----

#[test]
fn a_leader_never_commits_a_previous_term_entry_by_counting_replicas() {
    // Raft Figure 8: node 1 led term 2 and replicated index 2 (term 2) to node 2 only. Node 1 now leads
    // term 4. Index 2 sits on a majority (1 and 2), yet it must not commit until an entry of term 4 does:
    // otherwise a node holding a term-3 entry at index 2 could still win and overwrite it.
    let log = MemLog::with_terms(&[1, 2, 3], &[1, 2]);
    log.0.borrow_mut().hard_state.term = 3;
    log.0.borrow_mut().hard_state.commit = 1;
    let mut leader = core_with(1, log.clone(), config());
    while leader.role() != Role::Candidate {
        leader.tick().unwrap();
    }
    drain(&mut leader, &log);
    let granted = VoteResponse {
        pre_vote: false,
        granted: true,
    };
    leader
        .step(2, message(4, Rpc::VoteResponse(granted)))
        .unwrap();
    assert!(leader.is_leader());
    assert_eq!(leader.term(), 4);
    drain(&mut leader, &log); // the blank entry (index 3, term 4) becomes durable on the leader

    let ack = |match_index| {
        message(
            4,
            Rpc::AppendResponse(AppendResponse::Accepted { match_index }),
        )
    };
    leader.step(2, ack(2)).unwrap();
    drain(&mut leader, &log);
    assert_eq!(
        leader.commit_index(),
        1,
        "index 2 (term 2) is on a majority but must not commit by counting"
    );
    leader.step(2, ack(3)).unwrap();
    drain(&mut leader, &log);
    assert_eq!(
        leader.commit_index(),
        3,
        "the term-4 entry commits, and index 2 with it"
    );
}

#[test]
fn a_leader_counts_itself_only_once_its_entries_are_durable() {
    let log = MemLog::new(&[1]);
    let mut core = core_with(1, log.clone(), config());
    while !core.is_leader() {
        core.tick().unwrap();
    }
    core.propose(data("a")).unwrap();
    let ready = core.ready().unwrap().unwrap();
    assert_eq!(ready.entries().len(), 2, "blank entry and the proposal");
    // Not yet written: nothing is committed, even in a group of one.
    assert_eq!(core.commit_index(), 0);
    log.write(ready.entries(), ready.hard_state());
    let persisted = ready.persisted();
    assert!(persisted.committed().is_empty());
    core.advance(persisted).unwrap();
    assert_eq!(core.commit_index(), 2);
    let ready = core.ready().unwrap().unwrap();
    let persisted = ready.persisted();
    assert_eq!(persisted.committed().len(), 2);
    core.advance(persisted).unwrap();
}

// ----- durability and the Ready contract -----

#[test]
fn messages_that_must_wait_for_durability_are_not_in_the_sendable_list() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.core(1).propose(data("x")).unwrap();
    // The leader's append may leave before the leader's own write.
    let mut ready = c.core(1).ready().unwrap().unwrap();
    let now = ready.take_messages();
    assert!(now
        .iter()
        .all(|e| matches!(e.message.rpc, Rpc::AppendRequest(_))));
    assert_eq!(now.len(), 2);
    let persisted = ready.persisted();
    c.core(1).advance(persisted).unwrap();
    // The follower's acknowledgement only appears after its write.
    let append = now[0].clone();
    let follower = append.to;
    c.core(follower).step(1, append.message).unwrap();
    let mut ready = c.core(follower).ready().unwrap().unwrap();
    assert!(ready.take_messages().is_empty(), "no ack before durability");
    assert_eq!(ready.entries().len(), 1);
    let mut persisted = ready.persisted();
    let acks = persisted.take_messages();
    assert!(matches!(
        acks[0].message.rpc,
        Rpc::AppendResponse(AppendResponse::Accepted { match_index: 2 })
    ));
    c.core(follower).advance(persisted).unwrap();
}

#[test]
fn a_new_leader_sends_nothing_before_its_term_and_vote_are_durable() {
    // A single voter wins its election alone and at once; its appends to a learner still wait for its
    // new term and self-vote to be durable. Otherwise a crash could make it forget the term, win it
    // again after the restart, and send the learner different entries under the same term.
    let log = MemLog::new(&[1]);
    let mut core = core_with(1, log.clone(), config());
    while !core.is_leader() {
        core.tick().unwrap();
    }
    drain(&mut core, &log);
    core.change_membership(MembershipChange::AddLearner(2))
        .unwrap();
    drain(&mut core, &log);
    let term = core.term();
    // Restart from the durable log: the next campaign wins at once.
    let mut core = core_with(1, log.clone(), config());
    while !core.is_leader() {
        core.tick().unwrap();
    }
    assert_eq!(core.term(), term + 1);
    let mut ready = core.ready().unwrap().unwrap();
    assert_eq!(ready.hard_state().map(|hs| hs.term), Some(term + 1));
    assert!(
        ready.take_messages().is_empty(),
        "nothing before the term is durable"
    );
    log.write(ready.entries(), ready.hard_state());
    let mut persisted = ready.persisted();
    let later = persisted.take_messages();
    assert!(
        later
            .iter()
            .any(|e| e.to == 2 && matches!(e.message.rpc, Rpc::AppendRequest(_))),
        "{later:?}"
    );
    core.advance(persisted).unwrap();
}

#[test]
fn a_slow_write_does_not_pile_up_heartbeats() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.core(1).propose(data("x")).unwrap();
    // The leader's write is slow: its Ready stays outstanding while the clock runs.
    let ready = c.core(1).ready().unwrap().unwrap();
    for _ in 0..10 {
        c.core(1).tick().unwrap();
    }
    let persisted = ready.persisted();
    c.core(1).advance(persisted).unwrap();
    let mut ready = c.core(1).ready().unwrap().unwrap();
    let heartbeats_to_2 = ready
        .take_messages()
        .iter()
        .filter(|e| e.to == 2 && matches!(e.message.rpc, Rpc::Heartbeat(_)))
        .count();
    assert_eq!(
        heartbeats_to_2, 1,
        "only the latest heartbeat is worth sending"
    );
}

#[test]
fn advance_rejects_a_token_from_another_ready() {
    let mut a = core_with(1, MemLog::new(&[1]), config());
    let mut b = core_with(1, MemLog::new(&[1]), config());
    for core in [&mut a, &mut b] {
        while !core.is_leader() {
            core.tick().unwrap();
        }
    }
    let ready_a = a.ready().unwrap().unwrap();
    let _ready_b = b.ready().unwrap().unwrap();
    assert!(
        a.ready().unwrap().is_none(),
        "one outstanding Ready at a time"
    );
    let token = ready_a.persisted();
    // Both are Ready #1 of their core; a third core has no outstanding Ready at all.
    let mut c = core_with(1, MemLog::new(&[1]), config());
    assert!(matches!(c.advance(token), Err(Error::StaleAdvance)));
}

// ----- client interaction -----

#[test]
fn a_proposal_on_a_follower_gets_not_leader_with_the_hint() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    assert!(matches!(
        c.core(2).propose(data("x")),
        Err(Error::NotLeader { leader: None })
    ));
    c.campaign(1);
    assert!(matches!(
        c.core(2).propose(data("x")),
        Err(Error::NotLeader { leader: Some(1) })
    ));
    assert!(matches!(
        c.core(2).read_index(),
        Err(Error::NotLeader { leader: Some(1) })
    ));
}

#[test]
fn proposals_beyond_the_uncommitted_budget_are_refused() {
    let config = Config {
        max_uncommitted_bytes: 100,
        ..config()
    };
    let mut c = Cluster::new(&[1, 2, 3], config);
    c.campaign(1);
    c.isolate(1);
    let big = Bytes::from(vec![0u8; 60]);
    c.core(1).propose(big.clone()).unwrap();
    assert!(matches!(
        c.core(1).propose(big.clone()),
        Err(Error::UncommittedLimit { limit: 100 })
    ));
    c.heal();
    c.tick_all(2);
    c.core(1).propose(big).unwrap();
}

// ----- flow control -----

#[test]
fn flow_control_stops_at_the_inflight_limit_and_resumes_on_acks() {
    let config = Config {
        max_inflight_appends: 3,
        max_append_bytes: 1,
        ..config()
    };
    let mut c = Cluster::new(&[1, 2], config);
    c.campaign(1);
    // Replication starts with one append in flight and doubles the window with each acknowledgement
    // (slow start); a few acknowledged writes open it to the configured maximum.
    for i in 0..4 {
        c.core(1).propose(data(&format!("warm{i}"))).unwrap();
        c.stabilize();
    }
    // Ten proposals, one entry per message (max_append_bytes 1).
    for i in 0..10 {
        c.core(1).propose(data(&format!("p{i}"))).unwrap();
    }
    let mut ready = c.core(1).ready().unwrap().unwrap();
    let sent = ready.take_messages();
    let appends: Vec<_> = sent
        .iter()
        .filter(|e| matches!(e.message.rpc, Rpc::AppendRequest(_)))
        .collect();
    assert_eq!(appends.len(), 3, "stops at the inflight limit");
    assert!(c.core(1).progress(2).unwrap().is_paused(3));
    c.node(1).log.write(ready.entries(), ready.hard_state());
    let p = ready.persisted();
    c.core(1).advance(p).unwrap();
    // One ack frees one slot: exactly one more append goes out.
    let first = appends[0].message.clone();
    c.core(2).step(1, first).unwrap();
    let follower_log = c.node(2).log.clone();
    let (_, acks) = drain(c.core(2), &follower_log);
    for ack in acks {
        c.core(1).step(2, ack.message).unwrap();
    }
    let mut ready = c.core(1).ready().unwrap().unwrap();
    let more = ready.take_messages();
    let more_appends = more
        .iter()
        .filter(|e| matches!(&e.message.rpc, Rpc::AppendRequest(a) if !a.entries.is_empty()))
        .count();
    assert_eq!(more_appends, 1);
    let p = ready.persisted();
    c.core(1).advance(p).unwrap();
}

// ----- elections with pre-vote and check-quorum -----

#[test]
fn pre_vote_stops_a_rejoining_partitioned_node_from_disrupting_the_leader() {
    let config = Config {
        pre_vote: true,
        ..config()
    };
    let mut c = Cluster::new(&[1, 2, 3], config);
    c.campaign(1);
    assert_eq!(c.leaders(), vec![(1, 1)]);
    c.isolate(3);
    // Node 3 times out again and again while cut off. With pre-vote it never raises its term.
    for _ in 0..100 {
        c.core(3).tick().unwrap();
        c.stabilize();
    }
    assert_eq!(c.core(3).term(), 1);
    c.heal();
    c.tick_all(5);
    assert_eq!(c.leaders(), vec![(1, 1)], "the leader was not disrupted");
    assert_eq!(c.core(3).leader(), Some(1));
}

#[test]
fn without_pre_vote_a_rejoining_node_does_disrupt() {
    // The counterpart of the test above, showing what pre-vote prevents.
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.isolate(3);
    for _ in 0..25 {
        c.core(3).tick().unwrap();
        c.stabilize();
    }
    assert!(c.core(3).term() > 1);
    c.heal();
    c.tick_all(25);
    assert!(
        c.core(1).term() > 1,
        "the old leader was deposed by the higher term"
    );
}

#[test]
fn check_quorum_demotes_an_isolated_leader() {
    let config = Config {
        check_quorum: true,
        pre_vote: true,
        ..config()
    };
    let mut c = Cluster::new(&[1, 2, 3], config);
    c.campaign(1);
    c.isolate(1);
    for _ in 0..2 * 10 {
        c.core(1).tick().unwrap();
        c.stabilize();
    }
    assert_eq!(c.core(1).role(), Role::Follower);
    assert_eq!(c.core(1).leader(), None);
}

#[test]
fn followers_ignore_vote_requests_while_their_leader_lease_is_fresh() {
    let config = Config {
        check_quorum: true,
        ..config()
    };
    let mut c = Cluster::new(&[1, 2, 3], config);
    c.campaign(1);
    // Node 3 is made to campaign at once (no pre-vote here): 2 has just heard from leader 1 and ignores it.
    c.core(3).tick().unwrap();
    for _ in 0..20 {
        if c.core(3).role() == Role::Candidate {
            break;
        }
        c.core(3).tick().unwrap();
    }
    assert_eq!(c.core(3).role(), Role::Candidate);
    c.cut.insert((3, 1)); // 1 would be deposed by the term; only 2's answer matters here
    c.stabilize();
    assert_eq!(c.core(2).term(), 1, "vote ignored within the lease");
    assert_eq!(c.core(2).leader(), Some(1));
}

// ----- reads -----

#[test]
fn read_index_is_not_served_before_the_leader_commits_in_its_term() {
    // Node 1 wins term 2 over a log whose entries came from term 1. Until its blank entry commits, its
    // commit index may lag the previous leader's, so a read must wait even if leadership is confirmed.
    let log = MemLog::with_terms(&[1, 2, 3], &[1, 1]);
    let mut leader = core_with(1, log.clone(), config());
    while leader.role() != Role::Candidate {
        leader.tick().unwrap();
    }
    drain(&mut leader, &log);
    let granted = VoteResponse {
        pre_vote: false,
        granted: true,
    };
    leader
        .step(2, message(2, Rpc::VoteResponse(granted)))
        .unwrap();
    assert!(leader.is_leader());
    let read = leader.read_index().unwrap();
    let heartbeat_ack = message(
        2,
        Rpc::HeartbeatResponse(HeartbeatResponse { read_seq: read.0 }),
    );

    let mut served = Vec::new();
    let run = |leader: &mut Core, served: &mut Vec<ReadState>| {
        while let Some(ready) = leader.ready().unwrap() {
            log.write(ready.entries(), ready.hard_state());
            let p = ready.persisted();
            served.extend_from_slice(p.read_states());
            leader.advance(p).unwrap();
        }
    };
    run(&mut leader, &mut served);
    // A quorum confirms leadership, but nothing of term 2 is committed: the read waits.
    leader.step(2, heartbeat_ack).unwrap();
    run(&mut leader, &mut served);
    assert_eq!(leader.commit_index(), 0);
    assert!(
        served.is_empty(),
        "read served before a commit in the leader's term"
    );

    // The blank entry (index 3, term 2) is acknowledged and commits. The read is issued at index 3; the
    // earlier answer was sent after the read arrived, so it already confirms leadership for it.
    let ack = message(
        2,
        Rpc::AppendResponse(AppendResponse::Accepted { match_index: 3 }),
    );
    leader.step(2, ack).unwrap();
    run(&mut leader, &mut served);
    assert_eq!(leader.commit_index(), 3);
    assert_eq!(served, vec![ReadState { id: read, index: 3 }]);
}

#[test]
fn read_index_is_served_after_a_quorum_confirms_leadership() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.core(1).propose(data("x")).unwrap();
    c.stabilize();
    let id = c.core(1).read_index().unwrap();
    c.stabilize();
    assert_eq!(c.node(1).reads, vec![ReadState { id, index: 2 }]);
}

#[test]
fn a_deposed_leader_never_answers_a_read() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.stabilize();
    c.isolate(1);
    c.campaign(2);
    assert!(c.core(2).is_leader());
    // Node 1 still believes it leads; it accepts the read but can never confirm it.
    let read = c.core(1).read_index().unwrap();
    for _ in 0..50 {
        c.core(1).tick().unwrap();
        c.stabilize();
    }
    assert!(c.node(1).reads.is_empty());
    // When it rejoins and learns of the new term, the read is reported aborted, never served.
    c.heal();
    c.tick_all(3);
    assert!(!c.core(1).is_leader());
    assert!(c.node(1).reads.is_empty());
    assert_eq!(c.node(1).aborted_reads, vec![read]);
}

/// A cluster in lease mode whose nodes ticked together until one of them leads (a replica refuses votes
/// for an election timeout after it starts in lease mode, so a lone node cannot be made to campaign).
fn lease_cluster() -> (Cluster, u64) {
    let config = Config {
        check_quorum: true,
        read_mode: ReadMode::Lease,
        ..config()
    };
    let mut c = Cluster::new(&[1, 2, 3], config);
    for _ in 0..100 {
        c.tick_all(1);
        if let [(leader, _)] = c.leaders()[..] {
            return (c, leader);
        }
    }
    panic!("no leader");
}

#[test]
fn lease_reads_are_served_at_once_while_a_quorum_acknowledged_a_recent_heartbeat() {
    let (mut c, l) = lease_cluster();
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != l).collect();
    // Heartbeats answered by a quorum make a lease: a read is served with no message at all.
    c.tick_all(2);
    for o in &others {
        c.cut.insert((l, *o));
    }
    let read = c.core(l).read_index().unwrap();
    c.process_readies();
    assert_eq!(c.node(l).reads, vec![ReadState { id: read, index: 1 }]);
    // The lease runs out an election timeout after the last acknowledged heartbeat was *sent*, which is
    // before any follower could vote for someone else: afterwards reads need a quorum again.
    for _ in 0..10 {
        c.core(l).tick().unwrap();
        c.process_readies();
        c.queue.clear();
    }
    let late = c.core(l).read_index().unwrap();
    c.process_readies();
    assert!(
        !c.node(l).reads.iter().any(|r| r.id == late),
        "no stale lease read"
    );
}

#[test]
fn a_leader_transferring_leadership_serves_no_lease_read() {
    let (mut c, l) = lease_cluster();
    let target = if l == 1 { 2 } else { 1 };
    c.tick_all(2);
    c.cut.insert((l, target)); // the transfer cannot finish, but it has begun
    c.core(l).transfer_leadership(target).unwrap();
    let read = c.core(l).read_index().unwrap();
    c.process_readies();
    assert!(
        !c.node(l).reads.iter().any(|r| r.id == read),
        "the transferee may already be winning: no lease"
    );
}

#[test]
fn a_woken_leader_holds_no_lease() {
    let (mut c, l) = lease_cluster();
    c.tick_all(10);
    assert!(c.core(l).is_quiescent());
    c.core(l).hibernate();
    c.core(l).wake().unwrap();
    c.isolate(l);
    c.core(l).read_index().unwrap();
    c.process_readies();
    assert!(
        c.node(l).reads.is_empty(),
        "time stopped while asleep: the lease is gone"
    );
}

#[test]
fn a_hibernated_leader_wakes_with_its_followers_caught_up() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.core(1).propose(data("a")).unwrap();
    c.stabilize();
    for id in [1, 2, 3] {
        assert!(c.core(id).is_quiescent(), "node {id}");
    }
    c.core(1).hibernate();
    assert!(
        c.core(1).progress(2).is_none(),
        "no progress kept while asleep"
    );
    c.core(1).wake().unwrap();
    assert_eq!(c.core(1).progress(2).unwrap().match_index, 2);
    c.core(1).propose(data("b")).unwrap();
    c.stabilize();
    assert_eq!(c.applied_data(3), vec![data("a"), data("b")]);
}

// ----- leadership transfer -----

#[test]
fn leadership_transfer_to_an_up_to_date_follower() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.core(1).propose(data("x")).unwrap();
    c.stabilize();
    c.core(1).transfer_leadership(3).unwrap();
    assert!(matches!(
        c.core(1).propose(data("y")),
        Err(Error::LeadershipTransferInProgress)
    ));
    c.stabilize();
    assert_eq!(c.leaders(), vec![(3, 2)]);
}

#[test]
fn leadership_transfer_to_a_lagging_follower_catches_it_up_first() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.cut.insert((1, 3));
    for i in 0..5 {
        c.core(1).propose(data(&format!("p{i}"))).unwrap();
    }
    c.stabilize();
    assert!(c.node(3).log.terms().len() < c.node(1).log.terms().len());
    c.heal();
    c.core(1).transfer_leadership(3).unwrap();
    // The append lost while node 3 was cut off is retried at a heartbeat answer half an election timeout
    // later; then node 3 catches up and is told to campaign.
    for _ in 0..8 {
        c.tick_all(1);
        if c.core(3).is_leader() {
            break;
        }
    }
    assert_eq!(c.leaders(), vec![(3, 2)]);
    assert_eq!(
        c.node(3).log.terms(),
        c.node(1).log.terms()[..6]
            .to_vec()
            .into_iter()
            .chain([2])
            .collect::<Vec<_>>()
    );
}

#[test]
fn leadership_transfer_gives_up_after_an_election_timeout() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.isolate(3);
    c.core(1).transfer_leadership(3).unwrap();
    for _ in 0..10 {
        c.core(1).tick().unwrap();
        c.stabilize();
    }
    assert!(c.core(1).is_leader());
    c.core(1).propose(data("after")).unwrap();
}

// ----- bad input -----

#[test]
fn responses_to_requests_never_sent_are_ignored() {
    let log = MemLog::new(&[1, 2, 3]);
    let mut core = core_with(1, log.clone(), config());
    core.step(
        2,
        message(
            0,
            Rpc::AppendResponse(AppendResponse::Accepted { match_index: 50 }),
        ),
    )
    .unwrap();
    core.step(
        2,
        message(
            0,
            Rpc::VoteResponse(VoteResponse {
                pre_vote: false,
                granted: true,
            }),
        ),
    )
    .unwrap();
    core.step(
        2,
        message(0, Rpc::HeartbeatResponse(HeartbeatResponse { read_seq: 7 })),
    )
    .unwrap();
    assert_eq!(core.role(), Role::Follower);
    assert_eq!(core.commit_index(), 0);
}

#[test]
fn a_leader_rejects_an_acknowledgement_past_its_log() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    let err = c
        .core(1)
        .step(
            2,
            message(
                1,
                Rpc::AppendResponse(AppendResponse::Accepted { match_index: 99 }),
            ),
        )
        .unwrap_err();
    assert!(matches!(err, Error::ProtocolViolation { from: 2, .. }));
    assert_eq!(c.core(1).commit_index(), 1);
}

#[test]
fn an_append_contradicting_a_committed_entry_is_refused() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.core(1).propose(data("x")).unwrap();
    c.stabilize();
    assert_eq!(c.core(2).commit_index(), 2);
    let forged = AppendRequest {
        prev: LogId::new(1, 1),
        entries: vec![entry(1, 2)],
        commit: 0,
    };
    // prev is below the commit index: acknowledged as matching, nothing overwritten.
    c.core(2)
        .step(1, message(1, Rpc::AppendRequest(forged)))
        .unwrap();
    c.process_readies();
    assert_eq!(c.node(2).log.terms(), vec![1, 1]);
    assert_eq!(c.applied_data(2), vec![data("x")]);
}

#[test]
fn step_never_panics_on_arbitrary_messages() {
    // A deterministic fuzz: random messages with random terms and indexes at every role.
    let mut rng = SplitMix64::new(42);
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.core(1).propose(data("x")).unwrap();
    c.stabilize();
    for round in 0..3000u64 {
        let to = 1 + rng.next_u64() % 3;
        let from = 1 + rng.next_u64() % 4;
        let term = rng.next_u64() % 4;
        let idx = |rng: &mut SplitMix64| rng.next_u64() % 6;
        let rpc = match rng.next_u64() % 7 {
            0 => Rpc::VoteRequest(VoteRequest {
                last_log: LogId::new(rng.next_u64() % 4, idx(&mut rng)),
                pre_vote: rng.next_u64() % 2 == 0,
                leader_transfer: rng.next_u64() % 2 == 0,
            }),
            1 => Rpc::VoteResponse(VoteResponse {
                pre_vote: rng.next_u64() % 2 == 0,
                granted: rng.next_u64() % 2 == 0,
            }),
            2 => {
                let prev = LogId::new(rng.next_u64() % 4, idx(&mut rng));
                let n = rng.next_u64() % 3;
                Rpc::AppendRequest(AppendRequest {
                    prev,
                    entries: (0..n)
                        .map(|i| entry(prev.term + i % 2, prev.index + 1 + i))
                        .collect(),
                    commit: idx(&mut rng),
                })
            }
            3 => Rpc::AppendResponse(if rng.next_u64() % 2 == 0 {
                AppendResponse::Accepted {
                    match_index: idx(&mut rng),
                }
            } else {
                AppendResponse::Rejected {
                    rejected: LogId::new(rng.next_u64() % 4, idx(&mut rng)),
                    hint: LogId::new(rng.next_u64() % 4, idx(&mut rng)),
                }
            }),
            4 => Rpc::Heartbeat(Heartbeat {
                commit: idx(&mut rng),
                read_seq: rng.next_u64() % 4,
            }),
            5 => Rpc::HeartbeatResponse(HeartbeatResponse {
                read_seq: rng.next_u64() % 4,
            }),
            _ => Rpc::TimeoutNow,
        };
        // Errors are fine; panics are not.
        let _ = c.core(to).step(from, message(term, rpc));
        if round % 7 == 0 {
            let _ = c.core(to).tick();
        }
        c.process_readies();
        c.queue.clear();
    }
}

#[test]
fn a_replica_restarts_from_its_durable_state() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.core(1).propose(data("x")).unwrap();
    c.stabilize();
    let log = c.node(2).log.clone();
    let restarted =
        RaftCore::<T, MemLog>::new(2, config().validated().unwrap(), log, 2, 7).unwrap();
    assert_eq!(restarted.term(), 1);
    assert_eq!(restarted.commit_index(), 2);
    assert_eq!(restarted.applied_index(), 2);
}

#[test]
fn a_commit_index_past_the_log_is_reported_as_corrupt_state() {
    let log = MemLog::with_terms(&[1, 2, 3], &[1, 1]);
    log.0.borrow_mut().hard_state.commit = 5;
    let result = RaftCore::<T, MemLog>::new(1, config().validated().unwrap(), log, 0, 1);
    assert!(matches!(result, Err(Error::CorruptState { .. })));
}

#[test]
fn a_follower_behind_the_compacted_prefix_catches_up_by_snapshot() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.isolate(3);
    for i in 0..5 {
        c.core(1).propose(data(&format!("p{i}"))).unwrap();
    }
    c.stabilize();
    c.snapshot_and_compact(1);
    assert_eq!(c.node(1).log.first_index().unwrap(), 7);
    c.heal();
    c.tick_all(8); // the probe sent while it was cut off is retried after half an election timeout
                   // Node 3 received the snapshot, installed it, and continues from there.
    assert_eq!(c.node(3).state, c.node(1).state);
    assert_eq!(c.node(3).log.first_index().unwrap(), 7);
    assert!(matches!(
        c.core(1).progress(3).unwrap().state,
        ProgressState::Replicate
    ));
    c.core(1).propose(data("after")).unwrap();
    c.stabilize();
    assert_eq!(c.node(3).state.last(), Some(&data("after")));
    assert_eq!(c.node(3).state, c.node(1).state);
}

/// A config whose chunk budget makes a small snapshot travel in several chunks.
fn small_chunks() -> Config {
    Config {
        max_snapshot_chunk_bytes: 4,
        ..config()
    }
}

#[test]
fn a_lost_snapshot_chunk_is_resumed_not_restarted() {
    let mut c = Cluster::new(&[1, 2, 3], small_chunks());
    c.campaign(1);
    c.isolate(3);
    for i in 0..5 {
        c.core(1).propose(data(&format!("p{i}"))).unwrap();
    }
    c.stabilize();
    c.snapshot_and_compact(1);
    c.heal();
    // Deliver chunks to node 3 by hand, dropping the second one.
    let mut offsets = Vec::new();
    let mut dropped = false;
    for _ in 0..200 {
        c.core(1).tick().unwrap();
        c.process_readies();
        while let Some((from, env)) = c.queue.pop_front() {
            if let Rpc::InstallSnapshot(chunk) = &env.message.rpc {
                offsets.push(chunk.offset);
                if chunk.offset > 0 && !dropped {
                    dropped = true;
                    continue;
                }
            }
            if let Some(node) = c.nodes.get_mut(&env.to) {
                node.core.step(from, env.message).unwrap();
            }
            c.process_readies();
        }
        if c.node(3).state == c.node(1).state {
            break;
        }
    }
    assert!(dropped);
    assert_eq!(c.node(3).state, c.node(1).state, "installed after the loss");
    // The lost chunk was sent again from its own offset: no offset went back to 0 after the loss.
    let first_resend = offsets.iter().position(|o| *o == 4).unwrap();
    assert_eq!(offsets[0], 0);
    assert!(
        offsets[first_resend + 1..].iter().all(|o| *o >= 4),
        "{offsets:?}"
    );
}

#[test]
fn a_corrupted_snapshot_fails_its_checksum_and_is_sent_again() {
    let mut c = Cluster::new(&[1, 2, 3], small_chunks());
    c.campaign(1);
    c.isolate(3);
    for i in 0..3 {
        c.core(1).propose(data(&format!("p{i}"))).unwrap();
    }
    c.stabilize();
    c.snapshot_and_compact(1);
    c.heal();
    let mut corrupted = false;
    let mut mismatches = 0;
    for _ in 0..100 {
        c.core(1).tick().unwrap();
        c.process_readies();
        while let Some((from, mut env)) = c.queue.pop_front() {
            if let Rpc::InstallSnapshot(chunk) = &mut env.message.rpc {
                if !corrupted && !chunk.data.is_empty() {
                    corrupted = true;
                    let mut bad = chunk.data.to_vec();
                    bad[0] ^= 0xFF;
                    chunk.data = Bytes::from(bad);
                }
            }
            if let Rpc::SnapshotResponse(r) = &env.message.rpc {
                if r.result == crate::message::SnapshotProgress::ChecksumMismatch {
                    mismatches += 1;
                }
            }
            if let Some(node) = c.nodes.get_mut(&env.to) {
                node.core.step(from, env.message).unwrap();
            }
            c.process_readies();
        }
        if c.node(3).state == c.node(1).state {
            break;
        }
    }
    assert_eq!(mismatches, 1);
    assert_eq!(c.node(3).state, c.node(1).state);
}

#[test]
fn a_snapshot_older_than_the_commit_index_is_ignored() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.core(1).propose(data("a")).unwrap();
    c.stabilize();
    let old = crate::message::SnapshotChunk {
        meta: SnapshotMeta {
            last: LogId::new(1, 1),
            membership: Membership::new_voters([1, 2, 3]),
        },
        offset: 0,
        data: Bytes::new(),
        total_len: 0,
        checksum: checksum::crc32(b""),
    };
    c.core(2)
        .step(1, message(1, Rpc::InstallSnapshot(Box::new(old))))
        .unwrap();
    c.stabilize();
    assert_eq!(c.node(2).state, vec![data("a")]);
    assert_eq!(
        c.node(2).log.first_index().unwrap(),
        1,
        "the log was not replaced"
    );
}

#[test]
fn a_replica_restarts_from_a_snapshot_and_its_log_suffix() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    for i in 0..3 {
        c.core(1).propose(data(&format!("p{i}"))).unwrap();
    }
    c.stabilize();
    c.snapshot_and_compact(2);
    c.core(1).propose(data("suffix")).unwrap();
    c.stabilize();
    // Restart node 2: its state machine reloads the snapshot and reports the snapshot's index as applied;
    // the suffix is applied again from the log.
    let log = c.node(2).log.clone();
    let snapshot = log.snapshot().unwrap().unwrap();
    let applied = snapshot.meta.last.index;
    let mut core =
        RaftCore::<T, MemLog>::new(2, config().validated().unwrap(), log.clone(), applied, 9)
            .unwrap();
    let mut state = decode_state(&snapshot.data);
    assert_eq!(core.commit_index(), 5);
    while let Some(ready) = core.ready().unwrap() {
        let p = ready.persisted();
        for e in p.committed() {
            if let EntryPayload::Normal(d) = &e.payload {
                state.push(d.clone());
            }
        }
        core.advance(p).unwrap();
    }
    assert_eq!(state, c.node(1).state);
    // An applied index below the snapshot means the state machine lacks it: a typed error.
    let err = RaftCore::<T, MemLog>::new(2, config().validated().unwrap(), log, 0, 9);
    assert!(matches!(err, Err(Error::CorruptState { .. })));
}

// ----- §6 membership changes -----

fn voters_of(core: &Core) -> Vec<u64> {
    core.membership().voters.iter().copied().collect()
}

/// A cluster of `ids` in which only `members` are in the initial configuration (the others are new nodes
/// waiting to be added, with an empty configuration).
fn cluster_with_members(ids: &[u64], members: &[u64]) -> Cluster {
    let logs = ids
        .iter()
        .map(|id| {
            if members.contains(id) {
                MemLog::new(members)
            } else {
                MemLog::new(&[])
            }
        })
        .collect();
    Cluster::with_logs(ids, logs, config())
}

#[test]
fn adding_one_voter_takes_the_single_node_shortcut() {
    let mut c = cluster_with_members(&[1, 2, 3, 4], &[1, 2, 3]);
    c.campaign(1);
    c.core(1)
        .change_membership(MembershipChange::AddVoter(4))
        .unwrap();
    assert!(!c.core(1).membership().is_joint());
    c.stabilize();
    for id in [1, 2, 3, 4] {
        assert_eq!(voters_of(c.core(id)), vec![1, 2, 3, 4], "node {id}");
    }
    c.core(1).propose(data("x")).unwrap();
    c.stabilize();
    assert_eq!(c.applied_data(4), vec![data("x")]);
}

#[test]
fn joint_consensus_enters_and_leaves_on_its_own() {
    let mut c = cluster_with_members(&[1, 2, 3, 4, 5], &[1, 2, 3]);
    c.campaign(1);
    let target: BTreeSet<u64> = [1, 4, 5].into();
    c.core(1)
        .change_membership(MembershipChange::Replace {
            voters: target.clone(),
            learners: BTreeSet::new(),
        })
        .unwrap();
    let joint = c.core(1).membership().clone();
    assert!(joint.is_joint());
    assert_eq!(joint.outgoing_voters, [1, 2, 3].into());
    // A second change while the first is in flight is refused.
    assert!(matches!(
        c.core(1).change_membership(MembershipChange::AddVoter(2)),
        Err(Error::MembershipChangeInProgress)
    ));
    c.stabilize();
    // Once the joint configuration committed, the leader appended the final one; it committed too.
    let leader = c.core(1);
    assert!(!leader.membership().is_joint());
    assert_eq!(leader.membership().voters, target);
    let entries: Vec<bool> = c
        .node(1)
        .applied
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(m.is_joint()),
            _ => None,
        })
        .collect();
    assert_eq!(entries, vec![true, false], "enter joint, then leave it");
    c.core(1).propose(data("y")).unwrap();
    c.stabilize();
    for id in [1, 4, 5] {
        assert_eq!(c.applied_data(id), vec![data("y")], "node {id}");
    }
}

#[test]
fn joint_consensus_needs_both_majorities_to_commit() {
    let mut c = cluster_with_members(&[1, 2, 3, 4, 5], &[1, 2, 3]);
    c.campaign(1);
    // The new nodes are unreachable: the joint configuration cannot gather a majority of {1, 4, 5}.
    c.isolate(4);
    c.isolate(5);
    c.core(1)
        .change_membership(MembershipChange::Replace {
            voters: [1, 4, 5].into(),
            learners: BTreeSet::new(),
        })
        .unwrap();
    let commit_before = c.core(1).commit_index();
    c.tick_all(3);
    assert_eq!(
        c.core(1).commit_index(),
        commit_before,
        "old majority alone is not enough"
    );
    assert!(c.core(1).membership().is_joint());
}

#[test]
fn a_learner_never_counts_toward_a_quorum() {
    let mut c = cluster_with_members(&[1, 2, 3], &[1, 2]);
    c.campaign(1);
    c.core(1)
        .change_membership(MembershipChange::AddLearner(3))
        .unwrap();
    c.stabilize();
    assert!(c.core(3).membership().is_learner(3));
    assert_eq!(
        c.core(1).progress(3).unwrap().state,
        ProgressState::Replicate
    );
    // With voter 2 cut off, the learner's acknowledgement does not commit anything.
    c.isolate(2);
    let commit = c.core(1).commit_index();
    c.core(1).propose(data("x")).unwrap();
    c.stabilize();
    assert_eq!(c.core(1).commit_index(), commit);
    assert_eq!(
        c.node(3).log.terms().len(),
        c.node(1).log.terms().len(),
        "but it has the log"
    );
    // A learner never campaigns, however long it waits.
    for _ in 0..100 {
        c.core(3).tick().unwrap();
    }
    assert_eq!(c.core(3).role(), Role::Follower);
    // Promoting it makes it count.
    c.heal();
    c.stabilize();
    c.tick_all(2);
    c.core(1)
        .change_membership(MembershipChange::AddVoter(3))
        .unwrap();
    c.stabilize();
    assert!(c.core(1).membership().is_voter(3));
    c.isolate(2);
    let commit = c.core(1).commit_index();
    c.core(1).propose(data("z")).unwrap();
    c.stabilize();
    assert!(
        c.core(1).commit_index() > commit,
        "the promoted learner now completes a quorum"
    );
}

#[test]
fn a_removed_leader_steps_down_after_the_change_commits() {
    let mut c = Cluster::new(&[1, 2, 3], config());
    c.campaign(1);
    c.core(1)
        .change_membership(MembershipChange::RemoveNode(1))
        .unwrap();
    assert!(
        c.core(1).is_leader(),
        "still leads until the change commits"
    );
    c.stabilize();
    assert_eq!(c.core(1).role(), Role::Follower);
    assert_eq!(voters_of(c.core(2)), vec![2, 3]);
    // The removed node never campaigns again; the others elect a leader among themselves.
    for _ in 0..100 {
        c.core(1).tick().unwrap();
    }
    assert_eq!(c.core(1).role(), Role::Follower);
    c.tick_all(30);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0].0, 1);
}

#[test]
fn a_removed_node_cannot_disrupt_the_cluster() {
    let config = Config {
        pre_vote: true,
        check_quorum: true,
        ..config()
    };
    let mut c = Cluster::new(&[1, 2, 3], config);
    c.campaign(1);
    // Node 3 is removed while cut off, so it never learns of its removal.
    c.isolate(3);
    c.core(1)
        .change_membership(MembershipChange::RemoveNode(3))
        .unwrap();
    c.stabilize();
    c.heal();
    c.cut.insert((1, 3)); // the leader no longer talks to it anyway
    let term = c.core(1).term();
    c.tick_all(100);
    assert_eq!(c.leaders(), vec![(1, term)], "no disruption");
}

#[test]
fn an_overwritten_membership_entry_is_reverted_on_the_follower() {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], config());
    c.campaign(1);
    // Leader 1 appends "remove 5"; only node 2 receives it and its acknowledgement is lost, so the entry
    // never commits.
    c.isolate(1);
    c.cut.remove(&(1, 2));
    c.core(1)
        .change_membership(MembershipChange::RemoveNode(5))
        .unwrap();
    c.stabilize();
    assert_eq!(
        voters_of(c.core(2)),
        vec![1, 2, 3, 4],
        "in force as soon as appended"
    );
    // Node 3 wins term 2 with the votes of 4 and 5 while 1 and 2 are cut off.
    c.isolate(2);
    c.campaign(3);
    assert!(c.core(3).is_leader());
    // Node 2 rejoins: the new leader's entries overwrite the uncommitted one, and the configuration
    // it carried is reverted.
    c.heal();
    c.isolate(1);
    c.core(3).propose(data("z")).unwrap();
    // The probe sent while node 2 was cut off is retried half an election timeout later.
    c.tick_all(8);
    assert_eq!(voters_of(c.core(2)), vec![1, 2, 3, 4, 5]);
    assert_eq!(c.applied_data(2), vec![data("z")]);
}

#[test]
fn an_idle_replica_stays_small() {
    // Multi-Raft hosts hundreds of thousands of replicas: the inline size of a core is a budget, not an
    // accident. Leader, read and snapshot state is allocated only while in use.
    assert!(
        std::mem::size_of::<Core>() <= 544,
        "{}",
        std::mem::size_of::<Core>()
    );
}

#[test]
fn a_stale_vote_request_is_rejected_with_the_current_term() {
    // Raft §5.1: the candidate must learn the newer term, or it campaigns forever when nobody else
    // contacts it (it may be in no one else's configuration).
    let log = MemLog::with_terms(&[1, 2, 3], &[1]);
    log.0.borrow_mut().hard_state.term = 5;
    let mut core = core_with(1, log.clone(), config());
    let stale = VoteRequest {
        last_log: LogId::new(1, 1),
        pre_vote: false,
        leader_transfer: false,
    };
    core.step(2, message(3, Rpc::VoteRequest(stale))).unwrap();
    let (now, later) = drain(&mut core, &log);
    assert!(now.is_empty());
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].message.term, 5);
    assert!(matches!(
        later[0].message.rpc,
        Rpc::VoteResponse(VoteResponse { granted: false, .. })
    ));
    // The stale candidate adopts the term on receiving it.
    let candidate_log = MemLog::with_terms(&[1, 2, 3], &[1]);
    candidate_log.0.borrow_mut().hard_state.term = 2;
    let mut candidate = core_with(2, candidate_log, config());
    while candidate.role() != Role::Candidate {
        candidate.tick().unwrap();
    }
    candidate.step(1, later[0].message.clone()).unwrap();
    assert_eq!(candidate.term(), 5);
    assert_eq!(candidate.role(), Role::Follower);
}

#[test]
fn a_deposed_leader_outside_an_uncommitted_new_configuration_can_still_finish_the_change() {
    let config = Config {
        check_quorum: true,
        ..config()
    };
    let mut c = Cluster::new(&[1, 2, 3], config);
    c.campaign(1);
    // Move to a configuration of node 3 alone: joint first ({3} with {1,2,3}), which commits.
    c.core(1)
        .change_membership(MembershipChange::Replace {
            voters: [3].into(),
            learners: BTreeSet::new(),
        })
        .unwrap();
    // Deliver until the joint configuration commits and the leader appends the final one; from then on
    // keep everything from node 1 away from node 3.
    loop {
        c.process_readies();
        if !c.core(1).membership().is_joint() && !c.cut.contains(&(1, 3)) {
            c.cut.insert((1, 3));
        }
        let Some((from, env)) = c.queue.pop_front() else {
            break;
        };
        if !c.cut.contains(&(from, env.to)) {
            c.core(env.to).step(from, env.message).unwrap();
        }
    }
    assert_eq!(c.core(1).membership().voters, [3].into());
    assert!(!c.core(1).membership().is_joint());
    assert!(
        c.core(3).membership().is_joint(),
        "node 3 only has the joint configuration"
    );
    // Node 1 leads a configuration it is not part of, whose only voter is unreachable: check-quorum
    // deposes it.
    for _ in 0..25 {
        c.core(1).tick().unwrap();
        c.stabilize();
    }
    assert!(!c.core(1).is_leader());
    // Node 3 cannot win (nodes 1 and 2 hold a longer log). Node 1 must be able to campaign, win node 3's
    // vote, commit the new configuration, and hand over.
    c.heal();
    c.tick_all(80);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    assert_eq!(
        leaders[0].0, 3,
        "the new configuration's only voter leads in the end"
    );
    assert_eq!(c.core(3).membership().voters, [3].into());
    assert!(!c.core(3).membership().is_joint());
}
