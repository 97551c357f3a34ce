//! A deterministic cluster simulator for testing tickraft and applications built on it.
//!
//! A simulation runs a cluster of 3 or 5 [`RaftCore`](crate::RaftCore)s over a virtual network, with
//! simulated disks and a small key-value store ([`KvStore`]) driven by concurrent clients. Everything —
//! network delays, message loss, partitions, crashes, disk latency, clock skew, membership changes, log
//! compaction, the workload and the cores' own election jitter — derives from one `u64` seed through
//! [`SimRng`], and a tick counter is the only clock, so a seed replays exactly (checked by a hash of every
//! event, [`Report::trace_hash`]).
//!
//! A run has two phases:
//!
//! 1. **Faults** ([`SimConfig::ticks`] ticks): the [`FaultMix`] of the run injects faults while clients
//!    issue puts, gets (through ReadIndex, or leases when the core is configured so) and compare-and-sets
//!    (see [`Workload`]). After every input to every node the [`Invariants`] are checked: one leader per
//!    term, log matching, leader completeness, state machine safety, snapshots equal to the state the log
//!    produces, terms and commit indexes that never go back (durably too, across restarts), no second
//!    vote in a term, applied ≤ committed, durable commit ≤ durable last index, and no message storm.
//! 2. **Liveness** (at most [`SimConfig::liveness_ticks`] ticks): faults stop, crashed nodes restart,
//!    partitions heal. A leader must emerge, every open client operation must finish and every member must
//!    apply everything committed.
//!
//! Finally the client history goes through the [linearizability checker](linearizability).
//!
//! The Ready protocol is driven as an application would: messages from [`Ready::take_messages`] leave at
//! once; the write (snapshot, entries, hard state) completes after a random disk latency, during which the
//! node keeps ticking and stepping; only then do [`Persisted`]'s messages leave, its committed entries get
//! applied, its reads get served, and `advance` is called. A crash loses the write in progress (or, by a
//! coin toss, lets it reach the disk) and everything in memory; the node restarts from its disk, its state
//! machine from the durable snapshot (or empty) re-applying the committed log.
//!
//! ```
//! use tickraft::sim::{run, SimConfig};
//!
//! let config = SimConfig { ticks: 300, ..SimConfig::swarm(42) };
//! let report = run(config).unwrap_or_else(|failure| panic!("{failure}"));
//! assert_eq!(report.seed, 42);
//! ```
//!
//! [`run_seed`] runs the swarm configuration of a seed: which faults are on and how often, the Raft
//! timing and flow-control settings and the workload are all picked from the seed, so that many seeds
//! cover many combinations (swarm testing). A [`SimFailure`] names its seed and configuration; replay it
//! with `SIM_SEED=<seed> cargo test -p tickraft --test simulation replay_seed -- --nocapture`, which also
//! attaches the last events before the failure ([`SimConfig::log_events`]).
//!
//! [`Ready::take_messages`]: crate::Ready::take_messages
//! [`Persisted`]: crate::Persisted

mod cluster;
mod disk;
mod faults;
mod invariants;
mod kv;
pub mod linearizability;
mod network;
mod rng;
mod workload;

use std::fmt;

use crate::config::{Config, ReadMode};

pub use self::cluster::Cluster;
pub use self::disk::{Disk, DiskView};
pub use self::faults::FaultMix;
pub use self::invariants::Invariants;
pub use self::kv::{KvCommand, KvOp, KvOutput, KvStore, SimTypes};
pub use self::rng::{Fnv64, SimRng};
pub use self::workload::{random_op, HistoryOp, Outcome, Workload};

/// Everything that defines a simulation run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// The seed every random choice derives from.
    pub seed: u64,
    /// The number of nodes (server processes).
    pub nodes: usize,
    /// Nodes `1..=voters` form the initial configuration; the others start outside the group and join
    /// only through membership changes.
    pub voters: usize,
    /// The length of the fault phase, in ticks.
    pub ticks: u64,
    /// The liveness bound: within this many ticks after faults stop, a leader must be up and every client
    /// operation finished. Replicas catching up may take longer, as long as they keep applying (no more
    /// than this many ticks without progress, and at most 20 times the bound in all).
    pub liveness_ticks: u64,
    /// Which faults are injected in the fault phase, and how often.
    pub faults: FaultMix,
    /// What the clients do.
    pub workload: Workload,
    /// The configuration of every node's core.
    pub raft: Config,
    /// Keep this many of the most recent events (messages, Readies, writes, applies, client actions,
    /// faults) in readable form and attach them to a failure. 0 (the default) keeps none, which is
    /// faster. Does not change the run.
    pub log_events: usize,
}

impl SimConfig {
    /// A fault-free run of 3 nodes with the default workload and core configuration.
    pub fn calm(seed: u64) -> Self {
        SimConfig {
            seed,
            nodes: 3,
            voters: 3,
            ticks: 2_000,
            liveness_ticks: 5_000,
            faults: FaultMix::none(),
            workload: Workload::default(),
            raft: Config::default(),
            log_events: 0,
        }
    }

    /// The swarm configuration of `seed`: 3 or 5 nodes, a random [`FaultMix`], a random [`Workload`] and
    /// random core timing and flow-control settings (pre-vote and check-quorum on or off, tiny or large
    /// message and apply budgets, short or long election timeouts).
    pub fn swarm(seed: u64) -> Self {
        // A stream of its own, so that the cluster's stream (seeded with `seed`) is not the same.
        let mut rng = SimRng::new(seed ^ 0x5157_4152_4d5f_4346);
        let nodes = if rng.coin() { 3 } else { 5 };
        let mut faults = FaultMix::swarm(&mut rng);
        let workload = Workload::swarm(&mut rng);
        let min = rng.range_inclusive(6, 20) as u32;
        let mut raft = Config {
            election_timeout_min_ticks: min,
            // At least 2 apart: the upper bound is exclusive, and `min + 1` leaves no jitter at all.
            election_timeout_max_ticks: min + rng.range_inclusive(2, 15) as u32,
            heartbeat_ticks: rng.range_inclusive(1, u64::from(min / 4).max(1)) as u32,
            max_inflight_appends: [1, 2, 8, 256][rng.index(4)],
            max_append_bytes: [1, 200, 1 << 20][rng.index(3)],
            max_uncommitted_bytes: [1, 500, 64 << 20][rng.index(3)],
            max_apply_bytes: [1, 300, 4 << 20][rng.index(3)],
            pre_vote: rng.coin(),
            check_quorum: rng.coin(),
            ..Config::default()
        };
        // Snapshots travel in chunks of the append budget: tiny budgets exercise resumed chunks.
        raft.max_snapshot_chunk_bytes = raft.max_append_bytes;
        if !raft.pre_vote && !raft.check_quorum {
            faults.membership_ppm = 0;
        }
        let (nodes, voters) = if faults.membership_ppm > 0 {
            (5, if rng.coin() { 3 } else { 5 })
        } else {
            (nodes, nodes)
        };
        // Lease reads are only promised to be correct while clocks drift by less than an election timeout:
        // never with the sim's clock skew (up to 3x).
        if raft.check_quorum && !faults.clock_skew && rng.range(0, 4) == 0 {
            raft.read_mode = ReadMode::Lease;
        }
        SimConfig {
            seed,
            nodes,
            voters,
            ticks: 2_000,
            liveness_ticks: 5_000,
            faults,
            workload,
            raft,
            log_events: 0,
        }
    }

    /// A one-line summary: nodes, faults, core settings, workload.
    pub fn summary(&self) -> String {
        let r = &self.raft;
        let w = &self.workload;
        format!(
            "{} nodes ({} voters); faults: {}; raft: election {}..{} heartbeat {} inflight {} append-bytes {} \
             uncommitted-bytes {} apply-bytes {} pre-vote {} check-quorum {} reads {:?}; workload: {} \
             clients {} keys think<={} reads {}% cas {}% attempts {}",
            self.nodes,
            self.voters,
            self.faults,
            r.election_timeout_min_ticks,
            r.election_timeout_max_ticks,
            r.heartbeat_ticks,
            r.max_inflight_appends,
            r.max_append_bytes,
            r.max_uncommitted_bytes,
            r.max_apply_bytes,
            r.pre_vote,
            r.check_quorum,
            r.read_mode,
            w.clients,
            w.keys,
            w.max_think_ticks,
            w.read_percent,
            w.cas_percent,
            w.max_attempts
        )
    }
}

/// A failed run: which seed, when, why, and how to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFailure {
    /// The seed of the run ([`SimConfig::seed`]).
    pub seed: u64,
    /// The tick at which the failure was detected.
    pub tick: u64,
    /// [`SimConfig::summary`] of the run.
    pub summary: String,
    /// What went wrong.
    pub reason: String,
    /// The most recent events before the failure (see [`SimConfig::log_events`]).
    pub events: Vec<String>,
}

impl SimFailure {
    fn new(config: &SimConfig, tick: u64, reason: String) -> Self {
        SimFailure {
            seed: config.seed,
            tick,
            summary: config.summary(),
            reason,
            events: Vec::new(),
        }
    }
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation seed {} failed at tick {}: {}\n  config: {}\n  replay: SIM_SEED={} cargo test -p \
             tickraft --test simulation replay_seed -- --nocapture",
            self.seed, self.tick, self.reason, self.summary, self.seed
        )?;
        if !self.events.is_empty() {
            write!(f, "\n  last {} events:", self.events.len())?;
            for event in &self.events {
                write!(f, "\n    {event}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// What a successful run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The seed of the run.
    pub seed: u64,
    /// All ticks run, both phases.
    pub ticks: u64,
    /// The ticks the liveness phase took to converge.
    pub liveness_ticks: u64,
    /// The hash of the run's trace: equal for two runs of one configuration.
    pub trace_hash: u64,
    /// Client operations answered, with an unknown outcome, and failed before reaching any log.
    pub ops_ok: usize,
    /// Writes whose client gave up after a node accepted them (the simulator then resolves them from
    /// what the cluster did, see [`Cluster::resolved_history`]).
    pub ops_unknown: usize,
    /// Operations whose client gave up before any node accepted them.
    pub ops_failed: usize,
    /// The number of terms that had a leader.
    pub leaders: usize,
    /// The highest term any node reached.
    pub max_term: u64,
    /// The highest index applied anywhere.
    pub applied: u64,
    /// Node crashes in the fault phase.
    pub crashes: u64,
    /// Log compactions, and snapshots installed from a leader.
    pub compactions: u64,
    pub snapshots_installed: u64,
    /// Messages sent, and dropped by loss or cut links.
    pub messages_sent: u64,
    pub messages_dropped: u64,
}

/// Runs the swarm configuration of `seed` ([`SimConfig::swarm`]).
pub fn run_seed(seed: u64) -> Result<Report, SimFailure> {
    run(SimConfig::swarm(seed))
}

/// Runs one simulation: the fault phase, the liveness phase, then the linearizability check.
pub fn run(config: SimConfig) -> Result<Report, SimFailure> {
    let mut cluster = Cluster::new(config)?;
    let ticks = cluster.config().ticks;
    for _ in 0..ticks {
        cluster.tick()?;
    }
    cluster.calm_down();
    let start = cluster.now();
    let bound = cluster.config().liveness_ticks;
    // Catching a lagging replica up may take long with tiny flow-control windows (one entry per append
    // and reordering turn a backlog of thousands of entries into thousands of round trips), and open
    // client operations may wait on that replica's acknowledgement: past the bound, keep going as long as
    // replicas keep applying, up to a hard cap.
    let (mut applied, mut progress_at) = (cluster.applied_total(), start);
    let mut leader_seen_at = start;
    loop {
        if cluster.converged()? {
            break;
        }
        let now = cluster.now();
        let stalled = now - progress_at >= bound || now - start >= 20 * bound;
        if cluster.leader().is_some() {
            leader_seen_at = now;
        }
        // A leader that removed itself steps down, and the new configuration elects another: a moment
        // without a leader is fine, a long one is not.
        let stuck = if now - leader_seen_at >= bound / 2 {
            Some("there is no leader")
        } else if !stalled {
            None
        } else if cluster.open_ops() > 0 {
            Some("client operations are still open")
        } else {
            Some("replicas stopped catching up")
        };
        if let (true, Some(what)) = (now - start >= bound, stuck) {
            return Err(cluster.fail(format!(
                "liveness: {what} {} ticks after faults stopped: {}",
                now - start,
                cluster.describe_nodes()
            )));
        }
        cluster.tick()?;
        if cluster.applied_total() > applied {
            applied = cluster.applied_total();
            progress_at = cluster.now();
        }
    }
    let liveness_ticks = cluster.now() - start;
    // Full strength first; if the search runs out of budget, again without the writes nobody observed.
    let history = cluster
        .resolved_history(false)
        .map_err(|reason| cluster.fail(reason))?;
    match check_history(&history, LINEARIZABILITY_BUDGET / 25) {
        Err(CheckError::Timeout(_)) => {
            let history = cluster
                .resolved_history(true)
                .map_err(|reason| cluster.fail(reason))?;
            check_history(&history, LINEARIZABILITY_BUDGET)
                .map_err(|e| cluster.fail(e.to_string()))?;
        }
        other => other.map_err(|e| cluster.fail(e.to_string()))?,
    }
    let history = cluster.history();
    let count = |f: fn(&Outcome) -> bool| history.iter().filter(|h| f(&h.outcome)).count();
    let (sent, dropped, _) = cluster.message_counts();
    let (compactions, snapshots_installed) = cluster.snapshot_counts();
    Ok(Report {
        seed: cluster.config().seed,
        ticks: cluster.now(),
        liveness_ticks,
        trace_hash: cluster.trace_hash(),
        ops_ok: count(|o| matches!(o, Outcome::Ok { .. })),
        ops_unknown: count(|o| matches!(o, Outcome::Unknown)),
        ops_failed: count(|o| matches!(o, Outcome::Failed)),
        leaders: cluster.invariants().leader_count(),
        max_term: cluster.max_term(),
        applied: cluster.invariants().max_applied(),
        crashes: cluster.crashes(),
        compactions,
        snapshots_installed,
        messages_sent: sent,
        messages_dropped: dropped,
    })
}

fn lin_output(output: KvOutput) -> linearizability::Output {
    match output {
        KvOutput::Value(v) => linearizability::Output::Get(v),
        KvOutput::Done => linearizability::Output::Put,
        KvOutput::Cas(ok) => linearizability::Output::Cas(ok),
    }
}

/// The most search steps the linearizability check may take; running out fails the run.
const LINEARIZABILITY_BUDGET: u64 = 50_000_000;

/// Why [`check_history`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The history is not linearizable (or could not be recorded): the explanation.
    Violation(String),
    /// The search ran out of its step budget: no verdict.
    Timeout(String),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Violation(s) | CheckError::Timeout(s) => f.write_str(s),
        }
    }
}

/// Checks a client history for linearizability within `max_steps` search steps. Operations that
/// certainly had no effect are left out; within a tick, calls come first, then effects seen by the
/// simulator ([`Outcome::Applied`]), then answers to clients.
pub fn check_history(history: &[HistoryOp], max_steps: u64) -> Result<(), CheckError> {
    use linearizability as lin;
    let mut h = lin::History::new();
    for op in history {
        let lop = match op.op {
            KvOp::Get { key } => lin::Op::Get { key },
            KvOp::Put { key, value } => lin::Op::Put { key, value },
            KvOp::Cas { key, expected, new } => lin::Op::Cas { key, expected, new },
        };
        let outcome = match op.outcome {
            Outcome::Failed => continue,
            // A read whose answer nobody saw changes nothing and constrains nothing; as an unknown op it
            // would only multiply the search.
            Outcome::Unknown if matches!(op.op, KvOp::Get { .. }) => continue,
            other => other,
        };
        let id = h.call(op.client, lop, op.call * 4 + 1);
        let recorded = match outcome {
            Outcome::Ok { tick, output } => h.ok(id, lin_output(output), tick * 4 + 3),
            Outcome::Applied { tick, output } => h.ok(id, lin_output(output), tick * 4 + 2),
            Outcome::Unknown => h.unknown(id),
            Outcome::Pending | Outcome::Failed => Ok(()),
        };
        recorded.map_err(|e| CheckError::Violation(format!("bad history: {e}")))?;
    }
    let verdict = lin::check_with_budget(&h, max_steps);
    match &verdict {
        lin::Verdict::Linearizable => Ok(()),
        lin::Verdict::NotLinearizable { ops, .. } => Err(CheckError::Violation(format!(
            "linearizability: {verdict}\n{}",
            h.describe(ops)
        ))),
        lin::Verdict::Timeout { .. } => {
            Err(CheckError::Timeout(format!("linearizability: {verdict}")))
        }
    }
}
