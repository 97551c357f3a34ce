//! The simulated cluster: nodes running [`RaftCore`]s over the virtual network, their disks and state
//! machines, the clients, the fault injector and the invariant checks, advanced one tick at a time.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

use crate::config::ValidConfig;
use crate::core::{MembershipChange, RaftCore};
use crate::error::Error;
use crate::message::Rpc;
use crate::ready::Ready;
use crate::types::{Entry, Index, Membership, Term};

use super::disk::{Disk, DiskView};
use super::faults::FaultMix;
use super::invariants::Invariants;
use super::kv::{KvCommand, KvOp, KvOutput, KvStore, SimTypes};
use super::network::{InFlight, Network};
use super::rng::{Fnv64, SimRng};
use super::workload::{Client, HistoryOp, OpenOp, Outcome};
use super::{SimConfig, SimFailure};

type Core = RaftCore<SimTypes, DiskView>;

/// The most `Ready`s one node handles in one tick (a core that keeps producing them is not stuck forever).
const MAX_READIES_PER_TICK: usize = 16;

/// More messages in flight, or sent in one tick, than this is a message storm (a healthy cluster of 5 has a
/// few hundred in flight and sends a few dozen per tick).
const MAX_IN_FLIGHT: usize = 50_000;
const MAX_SENT_PER_TICK: u64 = 5_000;

/// A write in progress: the `Ready` stays outstanding until the disk reports it durable.
struct PendingWrite {
    ready: Ready<SimTypes>,
    /// The term of the entry the Ready's entries follow (if it has any).
    prev_term: Option<Term>,
    complete_at: u64,
}

/// One simulated server: a disk that survives crashes, and everything else, which does not.
struct Node {
    id: u64,
    disk: Rc<RefCell<Disk>>,
    /// `None` while crashed.
    core: Option<Core>,
    down_until: u64,
    incarnation: u64,
    sm: KvStore,
    write: Option<PendingWrite>,
    /// Ticks per thousand cluster ticks (clock skew), and the fractional ticks owed.
    rate: u64,
    owed: u64,
    /// Client proposals waiting for their entry to be applied: (index, term) → (client, seq).
    waiters: BTreeMap<(Index, Term), (u64, u64)>,
    /// Client reads waiting for their read state: read id → (client, seq, key).
    reads: BTreeMap<u64, (u64, u64, u64)>,
    /// What this incarnation reported last: term and commit index never go back.
    seen_term: Term,
    seen_commit: Index,
    /// The term whose leader log was checked for completeness.
    leader_checked: Option<Term>,
}

impl Node {
    fn is_up(&self) -> bool {
        self.core.is_some()
    }

    /// The snapshot of the write in progress, if it installs one.
    fn pending_snapshot(&self) -> Option<crate::types::LogId> {
        self.write
            .as_ref()
            .and_then(|w| w.ready.snapshot())
            .map(|s| s.meta.last)
    }

    /// The first index of this node's log as far as the simulator can see it (entries before it are in a
    /// snapshot).
    fn first_index(&self) -> Index {
        match self.pending_snapshot() {
            Some(last) => last.index + 1,
            None => self.disk.borrow().first_index(),
        }
    }

    /// The term of entry `index` in this node's log as far as the simulator can see it: the durable log
    /// with the write in progress laid over it.
    fn term_at(&self, index: Index) -> Option<Term> {
        if let Some(last) = self.pending_snapshot() {
            if index <= last.index {
                return (index == last.index).then_some(last.term);
            }
        }
        if let Some(w) = &self.write {
            let entries = w.ready.entries();
            if let Some(first) = entries.first() {
                if index >= first.index {
                    return entries.get((index - first.index) as usize).map(|e| e.term);
                }
            }
        }
        self.disk.borrow().term(index)
    }
}

/// The trace hash and the optional log of recent events.
struct Tracer {
    hash: Fnv64,
    log: std::collections::VecDeque<String>,
    capacity: usize,
}

impl Tracer {
    fn event(&mut self, now: u64, args: std::fmt::Arguments<'_>) {
        let _ = self.hash.write_fmt(args);
        if self.capacity > 0 {
            if self.log.len() == self.capacity {
                self.log.pop_front();
            }
            self.log.push_back(format!("t{now} {args}"));
        }
    }
}

/// An answer from a node to a client.
enum Answer {
    Ok(KvOutput),
    /// The request will not complete on that node (overwritten, aborted, node crashed): try again, maybe
    /// at the hinted leader.
    Retry(Option<u64>),
}

struct Response {
    client: u64,
    seq: u64,
    node: u64,
    answer: Answer,
}

/// A cluster of simulated nodes. Build one with [`Cluster::new`], advance it with [`Cluster::tick`], or
/// let [`run`](super::run) drive the whole scenario.
pub struct Cluster {
    config: SimConfig,
    raft: ValidConfig,
    rng: SimRng,
    now: u64,
    /// The liveness phase: faults off, no new operations, no giving up.
    calm: bool,
    faults: FaultMix,
    request_timeout: u64,
    nodes: Vec<Node>,
    net: Network,
    clients: Vec<Client>,
    history: Vec<HistoryOp>,
    responses: Vec<Response>,
    invariants: Invariants,
    /// The state machine fed with every index the first time any node applies it, and the digest of its
    /// state after each index: what every snapshot must match.
    reference: KvStore,
    digests: Vec<u64>,
    /// (client, seq) → the tick at which the command first took effect (was first applied anywhere) and
    /// its output. Lookups only.
    effects: std::collections::HashMap<(u64, u64), (u64, KvOutput)>,
    tracer: Tracer,
    crashes: u64,
    compactions: u64,
    installs: u64,
}

impl Cluster {
    /// Builds the cluster of `config`: every node starts empty with all nodes as voters.
    pub fn new(config: SimConfig) -> Result<Cluster, SimFailure> {
        let raft = config
            .raft
            .clone()
            .validated()
            .map_err(|e| SimFailure::new(&config, 0, format!("invalid raft config: {e}")))?;
        let mut rng = SimRng::new(config.seed);
        let n = config.nodes as u64;
        let membership = Membership::<SimTypes>::new_voters(1..=config.voters as u64);
        let faults = config.faults.clone();
        let mut nodes = Vec::new();
        for id in 1..=n {
            let rate = if faults.clock_skew {
                rng.range_inclusive(500, 1500)
            } else {
                1000
            };
            nodes.push(Node {
                id,
                disk: Rc::new(RefCell::new(Disk::new(membership.clone()))),
                core: None,
                down_until: 0,
                incarnation: 0,
                sm: KvStore::default(),
                write: None,
                rate,
                owed: 0,
                waiters: BTreeMap::new(),
                reads: BTreeMap::new(),
                seen_term: 0,
                seen_commit: 0,
                leader_checked: None,
            });
        }
        let clients = (1..=config.workload.clients as u64)
            .map(Client::new)
            .collect();
        let request_timeout = config.workload.request_timeout.max(1);
        let mut cluster = Cluster {
            raft,
            rng,
            now: 0,
            calm: false,
            faults,
            request_timeout,
            nodes,
            net: Network::default(),
            clients,
            history: Vec::new(),
            responses: Vec::new(),
            invariants: Invariants::new(),
            reference: KvStore::default(),
            digests: Vec::new(),
            effects: std::collections::HashMap::new(),
            tracer: Tracer {
                hash: Fnv64::default(),
                log: std::collections::VecDeque::new(),
                capacity: config.log_events,
            },
            crashes: 0,
            compactions: 0,
            installs: 0,
            config,
        };
        for i in 0..cluster.nodes.len() {
            cluster.start(i).map_err(|r| cluster.fail(r))?;
        }
        Ok(cluster)
    }

    /// The current tick.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The configuration the cluster runs.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The client history so far.
    pub fn history(&self) -> &[HistoryOp] {
        &self.history
    }

    /// The client history with every write whose client gave up resolved from what the cluster actually
    /// did: if its command was never applied, it certainly had no effect and is dropped
    /// ([`Outcome::Failed`]); if it was applied, it completes when it was first applied, with the output
    /// it had then ([`Outcome::Applied`]) — or, with `observed_only`, only if some answered operation
    /// observed the value it wrote, staying [`Outcome::Unknown`] otherwise (the checker may then leave it
    /// out). Also checks that every answer a client got for a write is the output the command had when it
    /// took effect.
    ///
    /// Resolving is sound — a write that took effect had its linearization point (its commit) before it
    /// was first applied — and keeps the check fast: observed unknown-outcome writes make linearizability
    /// checking exponential. Many overlapping writes that nobody observed do too when they are mandatory;
    /// `observed_only` is the fallback for those histories.
    pub fn resolved_history(&self, observed_only: bool) -> Result<Vec<HistoryOp>, String> {
        // Values are unique per operation: a value some answer reveals identifies its write.
        let mut observed = std::collections::HashSet::new();
        for h in &self.history {
            match (h.op, h.outcome) {
                (
                    _,
                    Outcome::Ok {
                        output: KvOutput::Value(Some(v)),
                        ..
                    },
                ) => {
                    observed.insert(v);
                }
                (
                    KvOp::Cas {
                        expected: Some(v), ..
                    },
                    Outcome::Ok {
                        output: KvOutput::Cas(true),
                        ..
                    },
                ) => {
                    observed.insert(v);
                }
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(self.history.len());
        for h in &self.history {
            let effect = self.effects.get(&(h.client, h.seq)).copied();
            let written = match h.op {
                KvOp::Put { value, .. } => Some(value),
                KvOp::Cas { new, .. } => Some(new),
                KvOp::Get { .. } => None,
            };
            let keep_unknown = observed_only && !written.is_some_and(|v| observed.contains(&v));
            let outcome = h.resolve(effect, keep_unknown)?;
            out.push(HistoryOp { outcome, ..*h });
        }
        Ok(out)
    }

    /// The hash of every event so far (messages delivered, Readies, writes, applies, client answers).
    /// Two runs of one seed must agree on it.
    pub fn trace_hash(&self) -> u64 {
        self.tracer.hash.finish()
    }

    /// The invariant checker with everything it learned so far.
    pub fn invariants(&self) -> &Invariants {
        &self.invariants
    }

    /// The number of crashes so far.
    pub fn crashes(&self) -> u64 {
        self.crashes
    }

    /// Log compactions and snapshot installations so far.
    pub fn snapshot_counts(&self) -> (u64, u64) {
        (self.compactions, self.installs)
    }

    /// Messages sent, dropped (loss or cut links) and delivered so far.
    pub fn message_counts(&self) -> (u64, u64, u64) {
        (self.net.sent, self.net.dropped, self.net.delivered)
    }

    /// The id and term of the leader with the highest term, if any node is leader.
    pub fn leader(&self) -> Option<(u64, Term)> {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .filter(|c| c.is_leader())
            .map(|c| (c.id(), c.term()))
            .max_by_key(|(_, term)| *term)
    }

    /// The number of client operations still open.
    pub fn open_ops(&self) -> usize {
        self.clients.iter().filter(|c| c.open.is_some()).count()
    }

    /// The sum of the applied indexes of the running nodes (grows while replicas catch up).
    pub fn applied_total(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .map(|c| c.applied_index())
            .sum()
    }

    /// The highest term any running node is in.
    pub fn max_term(&self) -> Term {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .map(|c| c.term())
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn fail(&self, reason: String) -> SimFailure {
        let mut failure = SimFailure::new(&self.config, self.now, reason);
        failure.events = self.recent_events();
        failure
    }

    /// The most recent events, oldest first, if [`SimConfig::log_events`] is on.
    pub fn recent_events(&self) -> Vec<String> {
        self.tracer.log.iter().cloned().collect()
    }

    /// Advances the whole cluster by one tick: faults, message delivery, node clocks, clients, then the
    /// Readies of every node, checking the invariants after each step of each node.
    pub fn tick(&mut self) -> Result<(), SimFailure> {
        self.tick_inner().map_err(|r| self.fail(r))
    }

    fn tick_inner(&mut self) -> Result<(), String> {
        let sent_before = self.net.sent;
        self.now += 1;
        let now = self.now;
        self.net.heal(now);
        if !self.calm {
            self.inject_faults()?;
        }
        if self.rng.chance(self.faults.compact_ppm) {
            let i = self.rng.index(self.nodes.len());
            self.compact(i)?;
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_up() && self.nodes[i].down_until <= now {
                self.start(i)?;
            }
        }
        while let Some(msg) = self.net.pop_due(now) {
            self.deliver(msg)?;
        }
        for i in 0..self.nodes.len() {
            self.tick_node(i)?;
        }
        for c in 0..self.clients.len() {
            self.client_act(c)?;
        }
        for i in 0..self.nodes.len() {
            self.drive(i)?;
        }
        self.answer_clients();
        let sent = self.net.sent - sent_before;
        if self.net.in_flight() > MAX_IN_FLIGHT || sent > MAX_SENT_PER_TICK {
            return Err(format!(
                "message storm: {sent} messages sent in this tick, {} in flight, {} sent so far",
                self.net.in_flight(),
                self.net.sent
            ));
        }
        Ok(())
    }

    /// Switches to the liveness phase: heals every partition, restarts crashed nodes, stops loss,
    /// duplication, skew and new operations, and shortens delays so that elections can finish.
    pub fn calm_down(&mut self) {
        self.calm = true;
        self.faults = self
            .config
            .faults
            .calm(u64::from(self.raft.election_timeout_min_ticks));
        self.net.heal(u64::MAX);
        // Long enough for a request to commit, so that clients stop hopping between nodes.
        let delays = self.faults.max_delay * 4 + self.faults.max_write_delay * 3;
        self.request_timeout = self
            .request_timeout
            .max(delays + 2 * u64::from(self.raft.election_timeout_max_ticks));
        for node in &mut self.nodes {
            node.rate = 1000;
            if !node.is_up() {
                node.down_until = self.now;
            }
        }
    }

    /// In the liveness phase: true once a leader is known to every member, every client operation has
    /// finished and every member has applied everything the leader committed (including the end of any
    /// joint configuration).
    pub fn converged(&self) -> Result<bool, SimFailure> {
        if self.clients.iter().any(|c| c.open.is_some()) {
            return Ok(false);
        }
        let Some((leader, _)) = self.leader() else {
            return Ok(false);
        };
        let Some(lcore) = self.nodes[leader as usize - 1].core.as_ref() else {
            return Ok(false);
        };
        let status = lcore
            .status()
            .map_err(|e| self.fail(format!("status of leader {leader} failed: {e}")))?;
        if status.commit != status.last_index {
            return Ok(false);
        }
        let membership = lcore.membership();
        if membership.is_joint() {
            return Ok(false);
        }
        let members: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| membership.contains(n.id))
            .collect();
        for node in &members {
            let Some(core) = node.core.as_ref() else {
                return Ok(false);
            };
            if core.leader() != Some(leader) || core.applied_index() != status.commit {
                return Ok(false);
            }
        }
        let first = &self.nodes[leader as usize - 1].sm;
        if let Some(other) = members.iter().find(|n| n.sm != *first) {
            return Err(self.fail(format!(
                "nodes {leader} and {} applied the same log but their state machines differ",
                other.id
            )));
        }
        Ok(true)
    }

    /// A one-line description of every node, for liveness failures.
    pub fn describe_nodes(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            match node.core.as_ref().map(|c| c.status()) {
                Some(Ok(s)) => {
                    let _ = write!(
                        out,
                        "[n{} {:?} term={} leader={:?} commit={} applied={} last={} write={} voters={:?} \
                         outgoing={:?} learners={:?}] ",
                        node.id,
                        s.role,
                        s.term,
                        s.leader,
                        s.commit,
                        s.applied,
                        s.last_index,
                        node.write.is_some(),
                        node.core.as_ref().map(|c| &c.membership().voters),
                        node.core.as_ref().map(|c| &c.membership().outgoing_voters),
                        node.core.as_ref().map(|c| &c.membership().learners),
                    );
                }
                Some(Err(e)) => {
                    let _ = write!(out, "[n{} status error {e}] ", node.id);
                }
                None => {
                    let _ = write!(out, "[n{} down] ", node.id);
                }
            }
        }
        let open = self.clients.iter().filter(|c| c.open.is_some()).count();
        let _ = write!(out, "open client ops: {open}");
        out
    }

    // ----- nodes -----

    /// Starts (or restarts) node `i` from its disk. The state machine is rebuilt by re-applying the
    /// committed log from index 1.
    fn start(&mut self, i: usize) -> Result<(), String> {
        let seed = self.rng.next_u64();
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        let view = DiskView(node.disk.clone());
        let sm = match node.disk.borrow().snapshot() {
            Some(s) => KvStore::from_snapshot(&s.data)
                .map_err(|e| format!("node {}: durable snapshot does not decode: {e}", node.id))?,
            None => KvStore::default(),
        };
        let applied = sm.applied();
        let core = Core::new(node.id, self.raft.clone(), view, applied, seed).map_err(|e| {
            format!(
                "node {} cannot restart from its disk (incarnation {}): {e}",
                node.id, node.incarnation
            )
        })?;
        node.seen_term = core.term();
        node.seen_commit = core.commit_index();
        node.leader_checked = None;
        node.sm = sm;
        node.owed = 0;
        node.core = Some(core);
        self.tracer
            .event(self.now, format_args!("start {} {};", node.id, self.now));
        Ok(())
    }

    /// Crashes node `i`: a write in progress reaches the disk or not (a coin decides), and everything
    /// in memory is lost. Clients waiting on it see their connection drop.
    fn crash(&mut self, i: usize) -> Result<(), String> {
        if !self.nodes[i].is_up() {
            return Ok(());
        }
        if let Some(w) = self.nodes[i].write.take() {
            if self.rng.coin() {
                self.persist(i, &w.ready)?;
            }
        }
        if self.rng.coin() {
            // Writes that needed no sync (commit index only) were still in the page cache.
            self.nodes[i].disk.borrow_mut().lose_unsynced();
        }
        let down = self
            .rng
            .range_inclusive(1, self.config.faults.max_down_ticks.max(1));
        let node = &mut self.nodes[i];
        node.core = None;
        node.down_until = self.now + down;
        for (_, (client, seq)) in std::mem::take(&mut node.waiters) {
            self.responses.push(Response {
                client,
                seq,
                node: node.id,
                answer: Answer::Retry(None),
            });
        }
        for (_, (client, seq, _)) in std::mem::take(&mut node.reads) {
            self.responses.push(Response {
                client,
                seq,
                node: node.id,
                answer: Answer::Retry(None),
            });
        }
        self.crashes += 1;
        self.tracer
            .event(self.now, format_args!("crash {} {};", node.id, self.now));
        Ok(())
    }

    /// Checks what node `i` reports after an input: term and commit never go back, applied never passes
    /// commit, one leader per term, and a leader's new commits are recorded and checked.
    fn observe(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let Some(core) = node.core.as_ref() else {
            return Ok(());
        };
        let id = node.id;
        let term = core.term();
        let commit = core.commit_index();
        let applied = core.applied_index();
        if term < node.seen_term {
            return Err(format!(
                "node {id}: term went back from {} to {term}",
                node.seen_term
            ));
        }
        if commit < node.seen_commit {
            return Err(format!(
                "node {id}: commit index went back from {} to {commit}",
                node.seen_commit
            ));
        }
        if applied > commit {
            return Err(format!(
                "node {id}: applied index {applied} is past the commit index {commit}"
            ));
        }
        let old_commit = node.seen_commit;
        node.seen_term = term;
        node.seen_commit = commit;
        if !core.is_leader() {
            return Ok(());
        }
        // A leadership counts once its term and self-vote are durable: before that nothing it did has left
        // the node, and a crash makes it never have happened (the node may then vote for another in that
        // term).
        let durable = {
            let disk = node.disk.borrow();
            let hs = disk.hard_state();
            (hs.term, hs.vote)
        };
        if durable == (term, Some(id)) {
            self.invariants.leader(term, id)?;
        }
        if commit > old_commit {
            self.check_commit_quorum(i, commit)?;
        }
        for index in old_commit + 1..=commit {
            let Some(entry_term) = self.nodes[i].term_at(index) else {
                continue;
            };
            if self.invariants.committed(index, entry_term, term)? {
                self.check_commit_in_later_leaders(index, entry_term, term)?;
            }
        }
        Ok(())
    }

    /// A leader's commit index may only cover an entry that a quorum of its configuration (both halves
    /// of a joint one) holds durably.
    fn check_commit_quorum(&self, i: usize, commit: Index) -> Result<(), String> {
        let node = &self.nodes[i];
        let Some(core) = node.core.as_ref() else {
            return Ok(());
        };
        let Some(term) = node.term_at(commit) else {
            return Ok(()); // compacted: committed long ago
        };
        let holds = |id: u64| {
            self.nodes.get(id as usize - 1).is_some_and(|n| {
                let disk = n.disk.borrow();
                commit < disk.first_index() || disk.term(commit) == Some(term)
            })
        };
        let m = core.membership();
        for half in [&m.voters, &m.outgoing_voters] {
            if half.is_empty() {
                continue;
            }
            let durable: Vec<u64> = half.iter().copied().filter(|id| holds(*id)).collect();
            if durable.len() * 2 <= half.len() {
                return Err(format!(
                    "node {}, leader in term {}, committed {commit}@{term} but only {durable:?} of voters \
                     {half:?} hold it durably",
                    node.id,
                    core.term()
                ));
            }
        }
        Ok(())
    }

    /// Messages that vouch for durable state may only leave once it is durable: an append
    /// acknowledgement for entries on disk, a vote (or a vote request) for a term and vote on disk (or a
    /// later term on disk, which rules out another vote in that term).
    fn check_message_durability(
        &self,
        i: usize,
        env: &crate::message::Envelope<SimTypes>,
    ) -> Result<(), String> {
        use crate::message::AppendResponse;
        let node = &self.nodes[i];
        let disk = node.disk.borrow();
        let hs = disk.hard_state();
        let term = env.message.term;
        let vote_is_durable =
            |candidate: u64| hs.term > term || (hs.term == term && hs.vote == Some(candidate));
        let problem = match &env.message.rpc {
            Rpc::AppendResponse(AppendResponse::Accepted { match_index })
                if *match_index > disk.last_index() =>
            {
                Some(format!(
                    "acknowledges entries up to {match_index} but its durable log ends at {}",
                    disk.last_index()
                ))
            }
            Rpc::VoteResponse(v) if v.granted && !v.pre_vote && !vote_is_durable(env.to) => Some(
                format!("grants its vote in term {term} but its durable hard state is {hs:?}"),
            ),
            Rpc::VoteRequest(v) if !v.pre_vote && !vote_is_durable(node.id) => Some(format!(
                "asks for votes in term {term} but its durable hard state is {hs:?}"
            )),
            // A leader speaks for its term only once the term and its self-vote are durable: otherwise a
            // crash lets it win the same term again and say something else.
            Rpc::AppendRequest(_)
            | Rpc::Heartbeat(_)
            | Rpc::InstallSnapshot(_)
            | Rpc::TimeoutNow
                if !vote_is_durable(node.id) =>
            {
                Some(format!(
                    "speaks as leader of term {term} but its durable hard state is {hs:?}"
                ))
            }
            _ => None,
        };
        match problem {
            Some(p) => Err(format!(
                "durability: node {} sends {} to {}: {p}",
                node.id,
                env.message.kind(),
                env.to
            )),
            None => Ok(()),
        }
    }

    /// Leader completeness for a newly learned commit: every leader of a later term, whose log the
    /// simulator has seen whole, holds it.
    fn check_commit_in_later_leaders(
        &self,
        index: Index,
        entry_term: Term,
        commit_term: Term,
    ) -> Result<(), String> {
        for node in &self.nodes {
            let Some(core) = node.core.as_ref() else {
                continue;
            };
            // Entries below the first index are in the leader's snapshot, checked against the log's state.
            if core.is_leader()
                && core.term() > commit_term
                && node.leader_checked == Some(core.term())
                && index >= node.first_index()
                && node.term_at(index) != Some(entry_term)
            {
                return Err(format!(
                    "leader completeness: {index}@{entry_term} was committed in term {commit_term}, but node \
                     {}, leader in term {}, has {:?} there",
                    node.id,
                    core.term(),
                    node.term_at(index)
                ));
            }
        }
        Ok(())
    }

    /// Node `i` snapshots its state machine at the applied index and compacts its durable log up to it.
    fn compact(&mut self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let Some(core) = node.core.as_ref() else {
            return Ok(());
        };
        let meta = match core.compaction_point() {
            Ok(meta) => meta,
            // A snapshot from the leader is about to replace the state machine: compact later.
            Err(Error::SnapshotInstallPending) => return Ok(()),
            Err(e) => return Err(format!("node {}: compaction_point failed: {e}", node.id)),
        };
        if meta.last.index != node.sm.applied() {
            return Err(format!(
                "node {}: compaction point {:?} is not the state machine's applied index {}",
                node.id,
                meta.last,
                node.sm.applied()
            ));
        }
        if meta.last.index < node.disk.borrow().first_index() {
            return Ok(());
        }
        let snapshot = crate::types::Snapshot {
            meta,
            data: node.sm.to_snapshot(),
        };
        let last = snapshot.meta.last;
        self.check_snapshot(node.id, Some(&snapshot))?;
        node.disk
            .borrow_mut()
            .compact(snapshot)
            .map_err(|e| format!("node {}: {e}", node.id))?;
        self.tracer
            .event(self.now, format_args!("compact {} {last:?};", node.id));
        self.compactions += 1;
        Ok(())
    }

    fn tick_node(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        if !node.is_up() {
            return Ok(());
        }
        node.owed += node.rate;
        while self.nodes[i].owed >= 1000 {
            self.nodes[i].owed -= 1000;
            if let Some(core) = self.nodes[i].core.as_mut() {
                core.tick()
                    .map_err(|e| format!("node {}: tick failed: {e}", i + 1))?;
            }
            self.observe(i)?;
        }
        Ok(())
    }

    fn deliver(&mut self, msg: InFlight) -> Result<(), String> {
        let InFlight { from, to, message } = msg;
        self.tracer.event(
            self.now,
            format_args!("{} {from}>{to} {:?};", self.now, message),
        );
        let i = to as usize - 1;
        let Some(core) = self.nodes[i].core.as_mut() else {
            return Ok(());
        };
        let kind = message.kind();
        let term = message.term;
        let is_vote_response = matches!(message.rpc, Rpc::VoteResponse(_));
        let known = |m: &Membership<SimTypes>| {
            if is_vote_response {
                m.is_voter(from)
            } else {
                m.contains(from)
            }
        };
        let known_before = known(core.membership());
        if let Err(e) = core.step(from, message) {
            if matches!(e, Error::UnknownSender { .. })
                && !(known_before && known(core.membership()))
            {
                // A node outside this replica's configuration: removed, not added yet, or demoted.
                return self.observe(i);
            }
            return Err(format!(
                "node {to} (term {}) returned an error on an honest {kind} of term {term} from node {from}: {e}",
                core.term()
            ));
        }
        self.observe(i)
    }

    /// Handles node `i`'s Readies: sends what may leave at once, starts the write, and completes writes
    /// that are due (then sends what had to wait, applies and advances).
    fn drive(&mut self, i: usize) -> Result<(), String> {
        for _ in 0..MAX_READIES_PER_TICK {
            if let Some(w) = &self.nodes[i].write {
                if w.complete_at > self.now {
                    return Ok(());
                }
                self.complete_write(i)?;
            }
            let node = &mut self.nodes[i];
            let id = node.id;
            let Some(core) = node.core.as_mut() else {
                return Ok(());
            };
            let ready = core
                .ready()
                .map_err(|e| format!("node {id}: ready failed: {e}"))?;
            let Some(mut ready) = ready else {
                return Ok(());
            };
            self.observe(i)?;
            self.send_all(i, ready.take_messages())?;
            let prev_term = self.check_ready(i, &ready)?;
            self.tracer.event(
                self.now,
                format_args!(
                    "ready n{id} snap={:?} entries={:?}..{:?} hs={:?} soft={:?};",
                    ready.snapshot().map(|s| s.meta.last),
                    ready.entries().first().map(Entry::log_id),
                    ready.entries().last().map(Entry::log_id),
                    ready.hard_state(),
                    ready.soft_state()
                ),
            );
            let delay = self.rng.range_inclusive(0, self.faults.max_write_delay);
            self.nodes[i].write = Some(PendingWrite {
                ready,
                prev_term,
                complete_at: self.now + delay,
            });
            self.check_new_leader(i)?;
        }
        Ok(())
    }

    /// Sends node `i`'s messages. A message to a peer behind a cut link is dropped, and half the time the
    /// transport notices and tells the core ([`RaftCore::report_unreachable`]).
    fn send_all(
        &mut self,
        i: usize,
        messages: Vec<crate::message::Envelope<SimTypes>>,
    ) -> Result<(), String> {
        let id = self.nodes[i].id;
        for env in messages {
            self.check_message_durability(i, &env)?;
            let to = env.to;
            if self.net.is_cut(id, to) && self.rng.coin() {
                if let Some(core) = self.nodes[i].core.as_mut() {
                    core.report_unreachable(to);
                }
            }
            self.net
                .send(self.now, id, to, env.message, &self.faults, &mut self.rng);
        }
        Ok(())
    }

    /// Checks a Ready's snapshot and entries against the node's durable log; returns the term of the entry
    /// before the first new one, so that the entries can be registered (log matching) once durable.
    fn check_ready(&mut self, i: usize, ready: &Ready<SimTypes>) -> Result<Option<Term>, String> {
        let node = &self.nodes[i];
        let id = node.id;
        let disk = node.disk.borrow();
        let commit = disk.hard_state().commit;
        let durable = disk.hard_state();
        let changes_vote = ready
            .hard_state()
            .is_some_and(|hs| hs.term != durable.term || hs.vote != durable.vote);
        if !ready.must_sync()
            && (ready.snapshot().is_some() || !ready.entries().is_empty() || changes_vote)
        {
            return Err(format!(
                "node {id}: a Ready with a snapshot, entries or a new term or vote says it need not be \
                 synced (hard state {:?} → {:?})",
                durable,
                ready.hard_state()
            ));
        }
        let snapshot_last = ready.snapshot().map(|s| s.meta.last);
        if let Some(last) = snapshot_last {
            if last.index < commit {
                return Err(format!(
                    "node {id}: a Ready installs a snapshot at {}@{} below the durable commit index {commit}",
                    last.index, last.term
                ));
            }
            self.check_snapshot(id, ready.snapshot())?;
        }
        let prev_of = |index: Index| match snapshot_last {
            Some(last) => (index == last.index + 1).then_some(last.term),
            None => disk.term(index - 1),
        };
        let Some(first) = ready.entries().first() else {
            return Ok(None);
        };
        let Some(prev_term) = prev_of(first.index) else {
            return Err(format!(
                "node {id}: Ready entries start at {} but the log (durable {}..={}, snapshot {:?}) does \
                 not reach {}",
                first.index,
                disk.first_index(),
                disk.last_index(),
                snapshot_last,
                first.index - 1
            ));
        };
        if snapshot_last.is_none() {
            for e in ready.entries() {
                if e.index > commit {
                    break;
                }
                if let Some(old) = disk.entry(e.index) {
                    if old != e {
                        return Err(format!(
                            "node {id}: a Ready overwrites durable committed entry {}@{} (durable commit \
                             {commit}) with {}@{}",
                            old.index, old.term, e.index, e.term
                        ));
                    }
                }
            }
        }
        drop(disk);
        Ok(Some(prev_term))
    }

    /// A snapshot must hold exactly the state reached by applying the committed log up to its index.
    fn check_snapshot(
        &self,
        node: u64,
        snapshot: Option<&crate::types::Snapshot<SimTypes>>,
    ) -> Result<(), String> {
        let Some(snapshot) = snapshot else {
            return Ok(());
        };
        let last = snapshot.meta.last;
        let store = KvStore::from_snapshot(&snapshot.data)
            .map_err(|e| format!("node {node}: snapshot at {last:?} does not decode: {e}"))?;
        if store.applied() != last.index {
            return Err(format!(
                "node {node}: snapshot claims {last:?} but holds the state at {}",
                store.applied()
            ));
        }
        if self.invariants.applied_term(last.index) != Some(last.term) {
            return Err(format!(
                "node {node}: snapshot at {}@{} but {:?} was applied at {}",
                last.index,
                last.term,
                self.invariants.applied_term(last.index),
                last.index
            ));
        }
        if self.digests.get(last.index as usize - 1) != Some(&store.digest()) {
            return Err(format!(
                "node {node}: snapshot at {last:?} differs from the state reached by applying the log"
            ));
        }
        Ok(())
    }

    /// Leader completeness for a new leader: once its first Ready is out, the simulator sees its whole
    /// log, which must hold every entry committed in an earlier term.
    fn check_new_leader(&mut self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let Some(core) = node.core.as_ref() else {
            return Ok(());
        };
        if !core.is_leader() || node.leader_checked == Some(core.term()) {
            return Ok(());
        }
        let term = core.term();
        let first = node.first_index();
        self.invariants
            .check_leader_log(node.id, term, first, |index| node.term_at(index))?;
        self.nodes[i].leader_checked = Some(term);
        Ok(())
    }

    /// Makes a Ready's writes durable on node `i`'s disk and checks the durable state.
    fn persist(&mut self, i: usize, ready: &Ready<SimTypes>) -> Result<(), String> {
        let node = &self.nodes[i];
        let mut disk = node.disk.borrow_mut();
        let old = disk.hard_state().clone();
        disk.write(
            ready.snapshot(),
            ready.entries(),
            ready.hard_state(),
            ready.must_sync(),
        )
        .map_err(|e| format!("node {}: {e}", node.id))?;
        let new = disk.hard_state();
        let id = node.id;
        Invariants::durable_change(&old, new, disk.last_index())
            .map_err(|e| format!("node {id}: {e}"))?;
        self.tracer.event(
            self.now,
            format_args!("persist {id} {} {:?};", disk.last_index(), new),
        );
        Ok(())
    }

    /// The write of node `i` is durable: send what had to wait, apply, serve reads, advance.
    fn complete_write(&mut self, i: usize) -> Result<(), String> {
        let Some(w) = self.nodes[i].write.take() else {
            return Ok(());
        };
        self.persist(i, &w.ready)?;
        let id = self.nodes[i].id;
        // Entries count for log matching once durable (or once a follower made them durable): a leader's
        // entries that a crash erased before they reached any disk were never anybody's log.
        if let Some(prev_term) = w.prev_term {
            self.invariants.appended(id, prev_term, w.ready.entries())?;
        }
        if let Some(snapshot) = w.ready.snapshot() {
            // Install into the state machine before applying anything after it.
            self.nodes[i].sm = KvStore::from_snapshot(&snapshot.data)
                .map_err(|e| format!("node {id}: cannot install snapshot: {e}"))?;
            self.tracer.event(
                self.now,
                format_args!("install {id} {:?};", snapshot.meta.last),
            );
            self.installs += 1;
        }
        let mut persisted = w.ready.persisted();
        self.send_all(i, persisted.take_messages())?;
        let hint = self.nodes[i].core.as_ref().and_then(|c| c.leader());
        for entry in persisted.committed() {
            self.apply(i, entry, hint)?;
        }
        for rs in persisted.read_states() {
            let node = &mut self.nodes[i];
            if node.sm.applied() < rs.index {
                return Err(format!(
                    "node {id}: read {:?} released for index {} while the state machine is at {}",
                    rs.id,
                    rs.index,
                    node.sm.applied()
                ));
            }
            if let Some((client, seq, key)) = node.reads.remove(&rs.id.0) {
                let value = node.sm.get(key);
                self.responses.push(Response {
                    client,
                    seq,
                    node: id,
                    answer: Answer::Ok(KvOutput::Value(value)),
                });
            }
        }
        for read in persisted.aborted_reads() {
            if let Some((client, seq, _)) = self.nodes[i].reads.remove(&read.0) {
                self.responses.push(Response {
                    client,
                    seq,
                    node: id,
                    answer: Answer::Retry(hint),
                });
            }
        }
        let node = &mut self.nodes[i];
        let Some(core) = node.core.as_mut() else {
            return Ok(());
        };
        core.advance(persisted)
            .map_err(|e| format!("node {id}: advance failed: {e}"))?;
        if core.applied_index() != node.sm.applied() {
            return Err(format!(
                "node {id}: the core says {} is applied but the state machine is at {}",
                core.applied_index(),
                node.sm.applied()
            ));
        }
        self.observe(i)
    }

    fn apply(
        &mut self,
        i: usize,
        entry: &Entry<SimTypes>,
        hint: Option<u64>,
    ) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let id = node.id;
        let result = node
            .sm
            .apply(entry)
            .map_err(|e| format!("node {id}: {e}"))?;
        if self.invariants.applied(id, entry)? {
            let effect = self
                .reference
                .apply(entry)
                .map_err(|e| format!("reference state machine: {e}"))?;
            self.digests.push(self.reference.digest());
            if let Some((cmd, output)) = effect {
                // The first copy of a command in the log is the one that takes effect.
                self.effects
                    .entry((cmd.client, cmd.seq))
                    .or_insert((self.now, output));
            }
        }
        self.tracer
            .event(self.now, format_args!("apply {id} {};", entry.index));
        let node = &mut self.nodes[i];
        let waiting: Vec<((Index, Term), (u64, u64))> = node
            .waiters
            .range((entry.index, 0)..=(entry.index, Term::MAX))
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((index, term), (client, seq)) in waiting {
            node.waiters.remove(&(index, term));
            let answer = if term == entry.term {
                match result {
                    Some((cmd, output)) if cmd.client == client && cmd.seq == seq => {
                        Answer::Ok(output)
                    }
                    // A stale copy of an operation its client has given up on.
                    _ => continue,
                }
            } else {
                Answer::Retry(hint)
            };
            self.responses.push(Response {
                client,
                seq,
                node: id,
                answer,
            });
        }
        Ok(())
    }

    // ----- clients -----

    fn client_act(&mut self, c: usize) -> Result<(), String> {
        let now = self.now;
        if self.clients[c].next_at > now {
            return Ok(());
        }
        let max_attempts = self.config.workload.max_attempts;
        let client = &mut self.clients[c];
        match &mut client.open {
            None => {
                if self.calm {
                    return Ok(());
                }
                let (seq, op) = client.next_op(&self.config.workload, &mut self.rng);
                self.history.push(HistoryOp {
                    client: client.id,
                    seq,
                    op,
                    call: now,
                    outcome: Outcome::Pending,
                });
                client.open = Some(OpenOp {
                    seq,
                    op,
                    history: self.history.len() - 1,
                    attempts: 0,
                    accepted: false,
                    waiting: None,
                });
                self.tracer.event(
                    self.now,
                    format_args!("call {} {seq} {op:?} {now};", client.id),
                );
            }
            Some(open) => {
                if let Some((node, deadline)) = open.waiting {
                    if now < deadline {
                        return Ok(());
                    }
                    open.attempts += 1;
                    open.waiting = None;
                    if !self.calm && open.attempts >= max_attempts {
                        let outcome = if open.op.is_write() && open.accepted {
                            Outcome::Unknown
                        } else {
                            Outcome::Failed
                        };
                        self.history[open.history].outcome = outcome;
                        client.open = None;
                        client.next_at = now + 1;
                        self.tracer
                            .event(self.now, format_args!("giveup {} {now};", client.id));
                        return Ok(());
                    }
                    let n = self.nodes.len() as u64;
                    let other = (node + self.rng.range(0, n - 1)) % n + 1;
                    client.leader_guess = Some(other);
                }
            }
        }
        self.attempt(c)
    }

    /// Sends client `c`'s open operation to the node it believes leads.
    fn attempt(&mut self, c: usize) -> Result<(), String> {
        let now = self.now;
        let n = self.nodes.len() as u64;
        let client = &mut self.clients[c];
        let Some(open) = client.open.as_mut() else {
            return Ok(());
        };
        let target = match client.leader_guess {
            Some(t) => t,
            None => self.rng.range_inclusive(1, n),
        };
        let node = &mut self.nodes[target as usize - 1];
        let Some(core) = node.core.as_mut() else {
            // Connection refused: try another node next tick.
            client.leader_guess = Some(target % n + 1);
            client.next_at = now + 1;
            return Ok(());
        };
        let result = if open.op.is_write() {
            let cmd = KvCommand {
                client: client.id,
                seq: open.seq,
                op: open.op,
            };
            core.propose(cmd).map(|log_id| {
                node.waiters
                    .insert((log_id.index, log_id.term), (client.id, open.seq));
                open.accepted = true;
            })
        } else {
            let key = open.op.key();
            core.read_index().map(|read| {
                node.reads.insert(read.0, (client.id, open.seq, key));
            })
        };
        match result {
            Ok(()) => {
                open.waiting = Some((target, now + self.request_timeout));
                client.leader_guess = Some(target);
                self.tracer
                    .event(self.now, format_args!("sent {} {target} {now};", client.id));
            }
            Err(Error::NotLeader { leader }) => {
                let guess = match leader.filter(|l| *l != target) {
                    Some(l) => l,
                    None => (target + self.rng.range(0, n - 1)) % n + 1,
                };
                client.leader_guess = Some(guess);
                client.next_at = now
                    + if leader.is_some() {
                        1
                    } else {
                        self.rng.range_inclusive(1, 5)
                    };
            }
            Err(Error::LeadershipTransferInProgress | Error::UncommittedLimit { .. }) => {
                client.next_at = now + self.rng.range_inclusive(1, 5);
            }
            Err(e) => {
                return Err(format!(
                    "node {target} refused a client {} with an unexpected error: {e}",
                    if open.op.is_write() {
                        "proposal"
                    } else {
                        "read"
                    }
                ))
            }
        }
        self.observe(target as usize - 1)
    }

    fn answer_clients(&mut self) {
        let now = self.now;
        let n = self.nodes.len() as u64;
        for r in std::mem::take(&mut self.responses) {
            let client = &mut self.clients[r.client as usize - 1];
            let Some(open) = client.open.as_mut() else {
                continue;
            };
            if open.seq != r.seq {
                continue;
            }
            match r.answer {
                Answer::Ok(output) => {
                    self.history[open.history].outcome = Outcome::Ok { tick: now, output };
                    let op = open.op;
                    client.learn(op, output);
                    client.open = None;
                    client.next_at = now
                        + self
                            .rng
                            .range_inclusive(0, self.config.workload.max_think_ticks);
                    self.tracer.event(
                        self.now,
                        format_args!("ok {} {} {output:?} {now};", r.client, r.seq),
                    );
                }
                Answer::Retry(hint) => {
                    if open.waiting.map(|(node, _)| node) != Some(r.node) {
                        continue;
                    }
                    open.waiting = None;
                    let guess = match hint.filter(|h| *h != r.node) {
                        Some(h) => h,
                        None => (r.node + self.rng.range(0, n - 1)) % n + 1,
                    };
                    client.leader_guess = Some(guess);
                    client.next_at = now + 1;
                    self.tracer.event(
                        self.now,
                        format_args!("retry {} {} {now};", r.client, r.seq),
                    );
                }
            }
        }
    }

    // ----- faults -----

    fn inject_faults(&mut self) -> Result<(), String> {
        let now = self.now;
        let n = self.nodes.len() as u64;
        let f = self.config.faults.clone();
        let span = |rng: &mut SimRng| rng.range_inclusive(1, f.max_partition_ticks.max(1));
        if self.rng.chance(f.partition_ppm) {
            // A random split into two non-empty sides.
            let mut ids: Vec<u64> = (1..=n).collect();
            for k in (1..ids.len()).rev() {
                let j = self.rng.index(k + 1);
                ids.swap(k, j);
            }
            let cut = self.rng.range(1, n) as usize;
            let until = now + span(&mut self.rng);
            for a in &ids[..cut] {
                for b in &ids[cut..] {
                    self.net.cut(*a, *b, until);
                    self.net.cut(*b, *a, until);
                }
            }
            self.tracer
                .event(self.now, format_args!("partition {:?} {cut} {until};", ids));
        }
        if self.rng.chance(f.one_way_ppm) {
            let from = self.rng.range_inclusive(1, n);
            let to = (from + self.rng.range(0, n - 1)) % n + 1;
            let until = now + span(&mut self.rng);
            self.net.cut(from, to, until);
            self.tracer
                .event(self.now, format_args!("cut {from}>{to} {until};"));
        }
        if self.rng.chance(f.isolate_leader_ppm) {
            if let Some((leader, _)) = self.leader() {
                let until = now + span(&mut self.rng);
                for other in (1..=n).filter(|o| *o != leader) {
                    self.net.cut(leader, other, until);
                    self.net.cut(other, leader, until);
                }
                self.tracer
                    .event(self.now, format_args!("isolate {leader} {until};"));
            }
        }
        if self.rng.chance(f.crash_ppm) {
            // A third of the crashes hit the leader, a third a node in the middle of a write (where
            // durability bugs live), a third any node.
            let writing: Vec<usize> = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].write.is_some())
                .collect();
            let i = match (self.rng.range(0, 3), self.leader()) {
                (0, Some((leader, _))) => leader as usize - 1,
                (1, _) if !writing.is_empty() => writing[self.rng.index(writing.len())],
                _ => self.rng.index(self.nodes.len()),
            };
            self.crash(i)?;
        }
        if self.rng.chance(f.transfer_ppm) {
            if let Some((leader, _)) = self.leader() {
                let i = leader as usize - 1;
                let voters: Vec<u64> = self.nodes[i]
                    .core
                    .as_ref()
                    .map(|c| {
                        c.membership()
                            .voters
                            .iter()
                            .copied()
                            .filter(|v| *v != leader)
                            .collect()
                    })
                    .unwrap_or_default();
                let target = voters.get(self.rng.index(voters.len())).copied();
                if let (Some(core), Some(target)) = (self.nodes[i].core.as_mut(), target) {
                    core.transfer_leadership(target).map_err(|e| {
                        format!("node {leader}: transfer of leadership to {target} failed: {e}")
                    })?;
                    self.tracer
                        .event(self.now, format_args!("transfer {leader}>{target};"));
                    self.observe(i)?;
                }
            }
        }
        if self.rng.chance(f.membership_ppm) {
            self.change_membership()?;
        }
        Ok(())
    }

    /// The leader proposes a random membership change.
    fn change_membership(&mut self) -> Result<(), String> {
        let Some((leader, _)) = self.leader() else {
            return Ok(());
        };
        let i = leader as usize - 1;
        let n = self.nodes.len() as u64;
        let Some(core) = self.nodes[i].core.as_mut() else {
            return Ok(());
        };
        let current = core.membership().clone();
        let node = self.rng.range_inclusive(1, n);
        let change = match self.rng.range(0, 4) {
            0 => MembershipChange::AddVoter(node),
            1 => MembershipChange::AddLearner(node),
            2 => MembershipChange::RemoveNode(node),
            _ => {
                let mut voters = std::collections::BTreeSet::new();
                let mut learners = std::collections::BTreeSet::new();
                for id in 1..=n {
                    match self.rng.range(0, 3) {
                        0 => {
                            voters.insert(id);
                        }
                        1 => {
                            learners.insert(id);
                        }
                        _ => {}
                    }
                }
                if voters.is_empty() {
                    voters.insert(node);
                    learners.remove(&node);
                }
                MembershipChange::Replace { voters, learners }
            }
        };
        self.tracer
            .event(self.now, format_args!("membership {leader} {change:?};"));
        match core.change_membership(change.clone()) {
            Ok(_)
            | Err(
                Error::LeaderNotReady
                | Error::MembershipChangeInProgress
                | Error::InvalidMembershipChange { .. }
                | Error::LeadershipTransferInProgress
                | Error::UncommittedLimit { .. },
            ) => {}
            Err(e) => {
                return Err(format!(
                    "node {leader}: change_membership({change:?}) from {current:?} failed: {e}"
                ))
            }
        }
        self.observe(i)
    }
}
