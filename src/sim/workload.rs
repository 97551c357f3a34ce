//! The client workload and the history it records for the linearizability checker.

use std::collections::BTreeMap;

use super::kv::{KvOp, KvOutput};
use super::rng::SimRng;

/// What the simulated clients do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The number of concurrent clients; each has at most one operation open at a time.
    pub clients: usize,
    /// Operations touch keys `1..=keys`.
    pub keys: u64,
    /// A client waits between 0 and `max_think_ticks` after an operation before starting the next.
    pub max_think_ticks: u64,
    /// The share of reads among operations, in percent.
    pub read_percent: u64,
    /// The share of compare-and-sets among writes, in percent (the rest are puts).
    pub cas_percent: u64,
    /// A client that has heard nothing for this many ticks retries on another node. (In the liveness phase
    /// it is raised to cover a commit round trip.)
    pub request_timeout: u64,
    /// After this many attempts without an answer a client gives up on an operation (its outcome is then
    /// unknown) and moves on. Not applied in the liveness phase, where every operation must finish.
    pub max_attempts: u32,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            clients: 3,
            keys: 3,
            max_think_ticks: 10,
            read_percent: 40,
            cas_percent: 40,
            request_timeout: 60,
            max_attempts: 4,
        }
    }
}

impl Workload {
    /// A random workload.
    pub fn swarm(rng: &mut SimRng) -> Self {
        Workload {
            clients: rng.range_inclusive(1, 5) as usize,
            keys: rng.range_inclusive(1, 4),
            max_think_ticks: [0, 5, 20, 60][rng.index(4)],
            read_percent: rng.range_inclusive(0, 70),
            cas_percent: rng.range_inclusive(0, 80),
            request_timeout: [10, 30, 60][rng.index(3)],
            max_attempts: rng.range_inclusive(1, 5) as u32,
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still open (only while the simulation runs).
    Pending,
    /// Answered at `tick` with `output`.
    Ok { tick: u64, output: KvOutput },
    /// The client gave up after a write was accepted somewhere: it may or may not have taken effect, at
    /// any time after the call.
    Unknown,
    /// The client gave up before any node accepted it: it certainly had no effect.
    Failed,
    /// The client gave up, but the simulator saw the command take effect: first applied at `tick`, with
    /// `output` (see [`Cluster::resolved_history`](super::Cluster::resolved_history)).
    Applied { tick: u64, output: KvOutput },
}

/// One client operation in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOp {
    /// The client that invoked the operation.
    pub client: u64,
    /// The client's sequence number of the operation (its session id for deduplication).
    pub seq: u64,
    /// The operation.
    pub op: KvOp,
    /// The tick at which the client invoked the operation.
    pub call: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl HistoryOp {
    /// The outcome of this operation resolved against the effect its command had in the cluster (the
    /// tick and output of its first application, if it was applied): an unknown or pending operation
    /// that took effect becomes [`Outcome::Applied`] (or stays unknown with `keep_unknown`), one that did
    /// not becomes [`Outcome::Failed`]. An answer that contradicts the effect is an error.
    pub fn resolve(
        &self,
        effect: Option<(u64, KvOutput)>,
        keep_unknown: bool,
    ) -> Result<Outcome, String> {
        let h = self;
        Ok(match (h.outcome, effect) {
            (Outcome::Unknown | Outcome::Pending, Some((tick, output))) => {
                if keep_unknown {
                    Outcome::Unknown
                } else {
                    Outcome::Applied { tick, output }
                }
            }
            (Outcome::Unknown | Outcome::Pending, None) => Outcome::Failed,
            (Outcome::Failed, Some(_)) => {
                return Err(format!(
                    "client {} gave up on {:?} (seq {}) before any node accepted it, yet it was applied",
                    h.client, h.op, h.seq
                ));
            }
            (Outcome::Ok { output, .. }, Some((_, applied))) if output != applied => {
                return Err(format!(
                    "client {} got {output:?} for {:?} (seq {}) but the command had output {applied:?} \
                     when it took effect",
                    h.client, h.op, h.seq
                ));
            }
            (Outcome::Ok { .. }, None) if h.op.is_write() => {
                return Err(format!(
                    "client {} got an answer for {:?} (seq {}) but the command was never applied",
                    h.client, h.op, h.seq
                ));
            }
            (other, _) => other,
        })
    }
}

/// A random operation of `workload` on `key`; a write writes `value`, and a compare-and-set expects the
/// value `seen` last showed for the key (or, one time in four, its absence).
pub fn random_op(
    workload: &Workload,
    rng: &mut SimRng,
    key: u64,
    value: u64,
    seen: &BTreeMap<u64, Option<u64>>,
) -> KvOp {
    if rng.range(0, 100) < workload.read_percent {
        KvOp::Get { key }
    } else if rng.range(0, 100) < workload.cas_percent {
        let expected = if rng.range(0, 4) == 0 {
            None
        } else {
            seen.get(&key).copied().flatten()
        };
        KvOp::Cas {
            key,
            expected,
            new: value,
        }
    } else {
        KvOp::Put { key, value }
    }
}

/// The operation a client has open.
#[derive(Debug, Clone)]
pub(crate) struct OpenOp {
    pub seq: u64,
    pub op: KvOp,
    pub history: usize,
    pub attempts: u32,
    /// A node accepted the command into its log at least once.
    pub accepted: bool,
    /// The node the client waits on, and until when.
    pub waiting: Option<(u64, u64)>,
}

/// A simulated client.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub id: u64,
    pub next_seq: u64,
    pub leader_guess: Option<u64>,
    pub open: Option<OpenOp>,
    pub next_at: u64,
    /// The last value this client saw for each key, used as the expected value of compare-and-sets.
    pub seen: BTreeMap<u64, Option<u64>>,
}

impl Client {
    pub fn new(id: u64) -> Self {
        Client {
            id,
            next_seq: 1,
            leader_guess: None,
            open: None,
            next_at: 0,
            seen: BTreeMap::new(),
        }
    }

    /// Picks the next operation.
    pub fn next_op(&mut self, workload: &Workload, rng: &mut SimRng) -> (u64, KvOp) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = rng.range_inclusive(1, workload.keys.max(1));
        // Values are unique per client and operation, which makes histories easy to check.
        let value = self.id * 1_000_000 + seq;
        (seq, random_op(workload, rng, key, value, &self.seen))
    }

    /// Remembers what an answered operation revealed about its key.
    pub fn learn(&mut self, op: KvOp, output: KvOutput) {
        match (op, output) {
            (KvOp::Get { key }, KvOutput::Value(v)) => {
                self.seen.insert(key, v);
            }
            (KvOp::Put { key, value }, _) => {
                self.seen.insert(key, Some(value));
            }
            (KvOp::Cas { key, new, .. }, KvOutput::Cas(true)) => {
                self.seen.insert(key, Some(new));
            }
            _ => {}
        }
    }
}
