//! A linearizability checker for histories of a small key-value store.
//!
//! A test records what its clients did — every operation, when it was invoked, when (and with what) it
//! returned — in a [`History`], then asks [`check`] whether there is a single sequential order of those
//! operations, consistent with their real-time order, under which a plain in-memory map would have given
//! exactly the recorded answers. If there is none, the store is not linearizable and the [`Verdict`] names
//! a small window of the history that proves it.
//!
//! # Model
//!
//! * Keys and values are `u64`: cheap to hash and copy, which keeps the search fast. Map richer keys or
//!   values to `u64`s (for instance an index into a table) before recording.
//! * Every key starts absent. Three operations: [`Op::Put`], [`Op::Get`] and [`Op::Cas`]
//!   (compare-and-set, where `expected: None` means "the key is absent").
//! * Times are logical ticks (`u64`). An operation is *invoked* at its call time and *completes* at its
//!   return time, which must be strictly later. Operation `a` precedes `b` in real time only when
//!   `a` returned strictly before `b` was called; intervals that merely touch (`a.return == b.call`) count
//!   as concurrent, because a simulator often does several things within one tick.
//! * An operation whose client gave up (timeout, lost connection) is recorded with
//!   [`History::unknown`]: it may have taken effect at any point after its call, or never. Operations
//!   that are still pending when the history is checked are treated the same way. An unknown `Get` has no
//!   effect and is ignored.
//! * The client id is informational (it is shown in explanations); nothing checks that a client has at most
//!   one operation in flight.
//!
//! # Algorithm
//!
//! Operations on different keys are independent, so the history is split into one partition per key and
//! each partition is checked on its own (linearizability is compositional). Each partition is checked with
//! the Wing & Gong search as improved by Lowe ("Testing for linearizability", 2017) and popularised by
//! Porcupine: the call and return events sit in a doubly linked list ordered by time; the search
//! repeatedly picks a pending call to linearize next, removes it from the list, and backtracks when it
//! reaches a return event whose operation it could not linearize. A cache of visited configurations
//! (`set of linearized operations` as a bitset, `value of the key`) stops it from exploring the same
//! configuration twice, which makes the search close to linear on realistic histories.
//!
//! On top of that, a few sound reductions (each argued where it is implemented):
//!
//! * a completed read (or failed swap) whose answer matches the current value is linearized at once,
//!   without branching: moving an operation that changes nothing earlier cannot break any solution;
//! * an unknown-outcome write whose value nobody could have observed is dropped up front — it may as well
//!   never have happened — and an unknown operation is never linearized where it would change nothing;
//! * candidates are tried in a good order: unknown-outcome writes first (one that never took effect is
//!   then simply overwritten), completed operations by return time (the one that returns first must be
//!   linearized soonest).
//!
//! Unknown-outcome writes that *were* observed remain an expensive case: each can take effect at any later
//! point, and proving a violation means ruling all of those points out.
//!
//! Cost grows with the number of operations in flight *on the same key*: a partition where at most a
//! handful overlap is checked in a few steps per operation; ten concurrent clients on one key take tens
//! of steps per operation; twenty can take seconds per ten thousand operations. Partition by key
//! generously in workloads, or use [`check_with_budget`].
//!
//! When a partition fails, the checker narrows the failure down: it finds the earliest completion after
//! which the key's history can no longer be linearized (the *culprit*), then the latest quiescent point
//! before it from which the remaining operations still cannot be linearized whatever the key held there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// An operation on the store. See the [module documentation](self) for the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Set `key` to `value`. Completes with [`Output::Put`].
    Put {
        /// The key written.
        key: u64,
        /// The value written.
        value: u64,
    },
    /// Read `key`. Completes with [`Output::Get`].
    Get {
        /// The key read.
        key: u64,
    },
    /// Set `key` to `new` if it currently holds `expected` (`None`: if it is absent). Completes with
    /// [`Output::Cas`], `true` when the swap happened.
    Cas {
        /// The key compared and maybe written.
        key: u64,
        /// The value the key must hold for the swap to happen; `None` means "absent".
        expected: Option<u64>,
        /// The value written on success.
        new: u64,
    },
}

impl Op {
    /// The key this operation touches.
    pub fn key(&self) -> u64 {
        match *self {
            Op::Put { key, .. } | Op::Get { key } | Op::Cas { key, .. } => key,
        }
    }

    fn accepts(&self, output: &Output) -> bool {
        matches!(
            (self, output),
            (Op::Put { .. }, Output::Put)
                | (Op::Get { .. }, Output::Get(_))
                | (Op::Cas { .. }, Output::Cas(_))
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Put { key, value } => write!(f, "put(k{key}, {value})"),
            Op::Get { key } => write!(f, "get(k{key})"),
            Op::Cas { key, expected, new } => {
                write!(f, "cas(k{key}, {}, {new})", ShowValue(expected))
            }
        }
    }
}

/// What a completed operation returned. The variant must match the operation's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    /// A [`Op::Put`] was acknowledged.
    Put,
    /// A [`Op::Get`] saw this value (`None`: the key was absent).
    Get(Option<u64>),
    /// A [`Op::Cas`] reported whether it swapped.
    Cas(bool),
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Output::Put => write!(f, "ok"),
            Output::Get(v) => write!(f, "{}", ShowValue(v)),
            Output::Cas(swapped) => write!(f, "{swapped}"),
        }
    }
}

/// Shows `None` as `absent`.
struct ShowValue(Option<u64>);

impl fmt::Display for ShowValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => write!(f, "absent"),
        }
    }
}

/// Identifies an operation within the [`History`] that returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(usize);

impl OpId {
    /// The position of the operation in [`History::records`].
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How an operation ended, as far as the history knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Invoked, not completed yet. Checked like [`Outcome::Unknown`].
    Pending,
    /// Completed at `time` with `output`.
    Ok {
        /// The answer the client received.
        output: Output,
        /// The return time; strictly after the call time.
        time: u64,
    },
    /// The client gave up: the operation may have taken effect at any point after its call, or never.
    Unknown,
}

/// One operation of a [`History`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The client that issued the operation (informational).
    pub client: u64,
    /// The operation.
    pub op: Op,
    /// The call (invocation) time.
    pub call: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcome {
            Outcome::Ok { output, time } => write!(
                f,
                "client {} [{}, {}] {} -> {}",
                self.client, self.call, time, self.op, output
            ),
            Outcome::Unknown => write!(
                f,
                "client {} [{}, ?] {} -> unknown",
                self.client, self.call, self.op
            ),
            Outcome::Pending => write!(
                f,
                "client {} [{}, ...] {} -> pending",
                self.client, self.call, self.op
            ),
        }
    }
}

/// A mistake while recording a [`History`]. The history is left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The id does not belong to this history.
    #[error("operation {0} is not in this history")]
    UnknownOp(OpId),
    /// The operation already completed (or was already marked unknown).
    #[error("operation {0} already completed")]
    AlreadyCompleted(OpId),
    /// A return time must be strictly after the call time.
    #[error("operation {id} returned at {ret}, not after its call at {call}")]
    ReturnNotAfterCall {
        /// The operation.
        id: OpId,
        /// Its call time.
        call: u64,
        /// The rejected return time.
        ret: u64,
    },
    /// The output is for another kind of operation (e.g. [`Output::Cas`] for a [`Op::Get`]).
    #[error("operation {id} ({op}) cannot return {output:?}")]
    OutputMismatch {
        /// The operation.
        id: OpId,
        /// What it was.
        op: Op,
        /// The rejected output.
        output: Output,
    },
}

/// A record of operations invoked on the store and how they ended.
///
/// Record in any order: every event carries its own time. Typical use:
///
/// ```ignore
/// let mut h = History::new();
/// let a = h.call(1, Op::Put { key: 7, value: 1 }, 10);
/// let b = h.call(2, Op::Get { key: 7 }, 11);
/// h.ok(a, Output::Put, 12)?;
/// h.unknown(b)?; // client 2 timed out
/// assert!(check(&h).is_linearizable());
/// ```
#[derive(Debug, Clone, Default)]
pub struct History {
    records: Vec<Record>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` invoked `op` at `time`. The operation is pending until [`History::ok`] or
    /// [`History::unknown`].
    pub fn call(&mut self, client: u64, op: Op, time: u64) -> OpId {
        self.records.push(Record {
            client,
            op,
            call: time,
            outcome: Outcome::Pending,
        });
        OpId(self.records.len() - 1)
    }

    /// Records that operation `id` returned `output` at `time`.
    ///
    /// Fails, leaving the history unchanged, if `id` is not from this history, the operation already
    /// completed or was marked unknown (a late answer after a timeout is not recorded), `time` is not after
    /// the call, or `output` does not fit the operation.
    pub fn ok(&mut self, id: OpId, output: Output, time: u64) -> Result<(), HistoryError> {
        let record = self
            .records
            .get_mut(id.0)
            .ok_or(HistoryError::UnknownOp(id))?;
        if record.outcome != Outcome::Pending {
            return Err(HistoryError::AlreadyCompleted(id));
        }
        if time <= record.call {
            return Err(HistoryError::ReturnNotAfterCall {
                id,
                call: record.call,
                ret: time,
            });
        }
        if !record.op.accepts(&output) {
            return Err(HistoryError::OutputMismatch {
                id,
                op: record.op,
                output,
            });
        }
        record.outcome = Outcome::Ok { output, time };
        Ok(())
    }

    /// Records that the client gave up on operation `id`: it may or may not have taken effect.
    ///
    /// Fails if `id` is not from this history or the operation already completed.
    pub fn unknown(&mut self, id: OpId) -> Result<(), HistoryError> {
        let record = self
            .records
            .get_mut(id.0)
            .ok_or(HistoryError::UnknownOp(id))?;
        if record.outcome != Outcome::Pending {
            return Err(HistoryError::AlreadyCompleted(id));
        }
        record.outcome = Outcome::Unknown;
        Ok(())
    }

    /// The operation `id`, if it is in this history.
    pub fn get(&self, id: OpId) -> Option<&Record> {
        self.records.get(id.0)
    }

    /// All operations, indexed by [`OpId::index`].
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no operation was recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// One line per operation (`#id client c [call, return] op -> output`), for failure messages.
    /// Ids not in this history are skipped.
    pub fn describe(&self, ops: &[OpId]) -> String {
        let mut out = String::new();
        for &id in ops {
            if let Some(record) = self.get(id) {
                out.push_str(&format!("{id} {record}\n"));
            }
        }
        out
    }
}

/// The answer of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Some order of the operations, consistent with real time, explains every answer.
    Linearizable,
    /// No order explains the answers on `key`.
    ///
    /// When several keys fail, this is the one with the fewest operations.
    NotLinearizable {
        /// The key whose history cannot be linearized.
        key: u64,
        /// The first operation on `key` (by return time, ties by id) whose completion makes the key's
        /// history non-linearizable: with everything that returned before it the history is fine.
        culprit: OpId,
        /// A window of the key's history that is not linearizable on its own, sorted by id (ids are
        /// allocated in recording order). It ends with the operations invoked by the time `culprit`
        /// returned; those that returned later count as pending. Unless `from_initial` is set, it starts
        /// at a quiescent point (every earlier completed operation on the key had returned) and fails
        /// whatever value the key held there; unknown-outcome writes invoked before that point are kept,
        /// since they may take effect later. Operations that cannot matter (unknown-outcome reads, unknown
        /// writes nobody could have observed) are left out.
        ops: Vec<OpId>,
        /// Whether the window starts at the beginning of the history, where the key was absent.
        from_initial: bool,
    },
    /// The step budget ran out while checking `key`: no conclusion. Never a pass.
    Timeout {
        /// The key being checked when the budget ran out.
        key: u64,
    },
}

impl Verdict {
    /// Whether the verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable {
                key,
                culprit,
                ops,
                from_initial,
            } => {
                write!(
                    f,
                    "not linearizable on key {key}: {culprit} cannot be explained by the window ["
                )?;
                for (i, id) in ops.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{id}")?;
                }
                let start = if *from_initial {
                    "the key starting absent"
                } else {
                    "any starting value"
                };
                write!(f, "] with {start}")
            }
            Verdict::Timeout { key } => write!(f, "no verdict: step budget exhausted on key {key}"),
        }
    }
}

/// Checks `history` without a step budget.
///
/// Realistic histories of tens of thousands of operations take milliseconds; a history with many
/// unknown-outcome writes that somebody observed, in a key that is *not* linearizable, can take
/// exponential time. Use [`check_with_budget`] where that matters.
pub fn check(history: &History) -> Verdict {
    check_with_budget(history, u64::MAX)
}

/// Checks `history`, giving up with [`Verdict::Timeout`] after `max_steps` search steps in total over all
/// keys (a step enters a configuration, tries one operation there, or backtracks once; a passing history
/// takes a few steps per operation).
///
/// Keys are checked from the smallest partition up, and the check stops at the first failing key.
/// Narrowing a failure down runs about `2 * log2(operations on the key)` more searches; they do not count
/// against `max_steps`, but each is limited to four times the steps the failing key took (plus 100,000).
/// One that runs out only makes the explanation less narrow, never wrong.
pub fn check_with_budget(history: &History, max_steps: u64) -> Verdict {
    let mut partitions: BTreeMap<u64, Vec<PartOp>> = BTreeMap::new();
    for (index, record) in history.records.iter().enumerate() {
        let (ret, out) = match record.outcome {
            Outcome::Ok { output, time } => (Some(time), Some(output)),
            Outcome::Pending | Outcome::Unknown => (None, None),
        };
        partitions.entry(record.op.key()).or_default().push(PartOp {
            id: OpId(index),
            op: record.op,
            call: record.call,
            ret,
            out,
        });
    }
    let mut order: Vec<(usize, u64)> = partitions.iter().map(|(k, p)| (p.len(), *k)).collect();
    order.sort_unstable();

    let mut budget = max_steps;
    for (_, key) in order {
        let Some(ops) = partitions.get(&key) else {
            continue;
        };
        let before = budget;
        match search(ops, State::Known(None), &mut budget) {
            SearchResult::Linearizable => {}
            SearchResult::Timeout => return Verdict::Timeout { key },
            SearchResult::NotLinearizable => {
                let spent = before - budget;
                let shrink_budget = spent.saturating_mul(4).saturating_add(100_000);
                return explain(key, ops, shrink_budget);
            }
        }
    }
    Verdict::Linearizable
}

/// One operation of a partition, as the search sees it.
#[derive(Debug, Clone, Copy)]
struct PartOp {
    id: OpId,
    op: Op,
    call: u64,
    /// `None`: never returned (unknown outcome), i.e. returns at infinity.
    ret: Option<u64>,
    /// `None`: unknown outcome, matches anything.
    out: Option<Output>,
}

/// The value of one key, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum State {
    /// Any value at all (used to check a window that starts mid-history). This is a relaxation: an
    /// ordering accepted from some concrete value is accepted from `Any`, so a window that fails from
    /// `Any` fails from every value.
    Any,
    /// Exactly this value (`None`: absent).
    Known(Option<u64>),
}

/// Applies `op` to `state`; `None` if `out` (when known) is not what the model answers.
fn step(state: State, op: &Op, out: Option<&Output>) -> Option<State> {
    match *op {
        Op::Put { value, .. } => Some(State::Known(Some(value))),
        Op::Get { .. } => match (state, out) {
            (_, None) => Some(state),
            (State::Any, Some(&Output::Get(seen))) => Some(State::Known(seen)),
            (State::Known(v), Some(&Output::Get(seen))) => (v == seen).then_some(state),
            (_, Some(_)) => None,
        },
        Op::Cas { expected, new, .. } => match state {
            State::Known(v) => {
                let swapped = v == expected;
                match out {
                    Some(&Output::Cas(said)) if said != swapped => None,
                    Some(&Output::Cas(_)) | None => Some(if swapped {
                        State::Known(Some(new))
                    } else {
                        state
                    }),
                    Some(_) => None,
                }
            }
            // Unknown value: a successful swap pins it, anything else leaves it unknown.
            State::Any => match out {
                Some(&Output::Cas(true)) => Some(State::Known(Some(new))),
                Some(&Output::Cas(false)) | None => Some(State::Any),
                Some(_) => None,
            },
        },
    }
}

enum SearchResult {
    Linearizable,
    NotLinearizable,
    Timeout,
}

/// Drops operations that cannot matter: unknown-outcome reads, and unknown-outcome writes whose value
/// nobody could have observed.
///
/// An unknown write `w` of value `v` is dropped when no operation that could be linearized after it (one
/// that returns at or after `w`'s call) read `v`, expected `v` in a swap, or reported a failed swap. Why
/// that is sound: take any linearization that applies `w`. Until the next write the key holds `v`, so the
/// operations in between can only be unknown swaps that failed (move them to the end, where they may sit
/// unapplied), and the next write is necessarily a put, which erases `v`. Removing `w` leaves a valid
/// linearization.
fn prune(ops: &[PartOp]) -> Vec<PartOp> {
    // The latest return (u64::MAX: never) of an op that observed each value, and of a failed swap.
    let mut observed: HashMap<u64, u64> = HashMap::new();
    let mut failed_cas: Option<u64> = None;
    for p in ops {
        let ret = p.ret.unwrap_or(u64::MAX);
        let seen = match (p.op, p.out) {
            (Op::Get { .. }, Some(Output::Get(Some(v)))) => Some(v),
            (Op::Cas { .. }, Some(Output::Cas(false))) => {
                failed_cas = failed_cas.max(Some(ret));
                None
            }
            (Op::Cas { expected, .. }, _) => expected,
            _ => None,
        };
        if let Some(v) = seen {
            let latest = observed.entry(v).or_insert(ret);
            *latest = (*latest).max(ret);
        }
    }
    ops.iter()
        .filter(|p| {
            if p.out.is_some() {
                return true;
            }
            match p.op {
                Op::Get { .. } => false,
                Op::Put { value, .. } | Op::Cas { new: value, .. } => {
                    let after_call = |ret: u64| ret >= p.call;
                    observed.get(&value).copied().is_some_and(after_call)
                        || failed_cas.is_some_and(after_call)
                }
            }
        })
        .copied()
        .collect()
}

/// A 64-bit mixer (the SplitMix64 finaliser): spreads small integers over all bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn state_hash(state: State) -> u64 {
    match state {
        State::Any => 0x5555_5555_5555_5555,
        State::Known(None) => 0x3333_3333_3333_3333,
        State::Known(Some(v)) => mix(v ^ 0x0f0f_0f0f_0f0f_0f0f),
    }
}

/// A visited configuration: which operations are linearized, and the key's value after them.
#[derive(PartialEq, Eq)]
struct CacheKey {
    /// Precomputed hash of the other fields.
    hash: u64,
    /// Linearized completed ops, trimmed (see [`Bitset::trimmed`]).
    done: (usize, Box<[u64]>),
    /// Linearized unknown-outcome ops, trimmed.
    applied: (usize, Box<[u64]>),
    state: State,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        hasher.write_u64(self.hash);
    }
}

/// Passes a precomputed `u64` hash through (other input is folded in, never expected).
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// A set of operations (numbered in call order) with an incrementally maintained Zobrist hash.
///
/// During the search the set of linearized operations is "everything below some index, plus a few
/// operations after it", so the cache stores only the words between the first word that is not full
/// (`low`) and the last word that is not empty (`high_end - 1`): a word or two on realistic histories,
/// instead of `n / 64`.
struct Bitset {
    words: Vec<u64>,
    zobrist: Vec<u64>,
    hash: u64,
    /// The first word that is not all ones (`words.len()` if none).
    low: usize,
    /// One past the last word that is not zero (0 if none).
    high_end: usize,
}

impl Bitset {
    fn new(n: usize, seed: u64) -> Self {
        Bitset {
            words: vec![0; n.div_ceil(64)],
            zobrist: (0..n as u64).map(|i| mix(i ^ seed)).collect(),
            hash: 0,
            low: 0,
            high_end: 0,
        }
    }

    /// Adds `i` if absent, removes it if present.
    fn flip(&mut self, i: usize) {
        let w = i / 64;
        let (Some(word), Some(z)) = (self.words.get_mut(w), self.zobrist.get(i)) else {
            return;
        };
        *word ^= 1 << (i % 64);
        self.hash ^= z;
        let word = *word;
        if word == u64::MAX && w == self.low {
            while self.words.get(self.low) == Some(&u64::MAX) {
                self.low += 1;
            }
        } else if word != u64::MAX && w < self.low {
            self.low = w;
        }
        if word != 0 && w >= self.high_end {
            self.high_end = w + 1;
        } else if word == 0 && w + 1 == self.high_end {
            while self.high_end > 0 && self.words.get(self.high_end - 1) == Some(&0) {
                self.high_end -= 1;
            }
        }
    }

    /// A canonical compact copy: equal sets give equal values.
    fn trimmed(&self) -> (usize, Box<[u64]>) {
        let words = self.words.get(self.low..self.high_end).unwrap_or(&[]);
        (self.low, words.into())
    }
}

/// End of an event list.
const NIL: usize = usize::MAX;

/// A configuration on the current search path, with the candidates still to try from it.
struct Frame {
    /// The op whose linearization led here from the parent, and the key's value before it (`None` for
    /// the root).
    via: Option<(usize, State)>,
    /// This configuration's candidates are `candidates[start..end]`; those still to try start at `next`.
    start: usize,
    next: usize,
    end: usize,
}

/// Whether `p` cannot change the value, wherever it is linearized.
fn never_writes(p: &PartOp) -> bool {
    match (p.op, p.out) {
        (Op::Get { .. }, _) | (Op::Cas { .. }, Some(Output::Cas(false))) => true,
        (Op::Cas { expected, new, .. }, _) => expected == Some(new),
        (Op::Put { .. }, _) => false,
    }
}

/// The Wing–Gong/Lowe search over one partition, starting from `init`. Every loop iteration costs one
/// unit of `budget`.
///
/// Completed ops live in the classic event list: entry `2j` is the call of op `j`, `2j + 1` its return,
/// sorted by time with calls before returns at equal times (touching intervals are concurrent); `2n` is
/// its head. Unknown-outcome ops never return. Their calls sit in separate lists sorted by call time: the
/// puts (head `2n + 1`), and the swaps grouped by expected value (heads `2n + 2 + g`), so that a swap that
/// cannot succeed on the current value is never even looked at.
///
/// The candidates at a configuration are the ops invoked before the first pending return (whose op must
/// be linearized before that point), tried in this order:
/// 1. if a completed op that never writes answers correctly on the current value, only that op: see the
///    comment where it is chosen;
/// 2. unknown-outcome ops, oldest first: applied early, a write that never took effect is usually
///    overwritten by the next put at no cost, whereas applying a needed one late would first exhaust every
///    interleaving before it;
/// 3. completed ops by return time, earliest first ("just in time": the op that returns first is the one
///    that must be linearized soonest).
fn search(ops: &[PartOp], init: State, budget: &mut u64) -> SearchResult {
    let mut ops = prune(ops);
    // Call order, so that the linearized sets stay compact (see `Bitset`).
    ops.sort_unstable_by_key(|p| (p.call, p.id));
    let n = ops.len();
    let mut remaining_ok = ops.iter().filter(|p| p.out.is_some()).count();
    let known = |j: usize| ops[j].out.is_some();

    // List heads: completed ops, unknown puts, then one per expected value of unknown swaps.
    let (head, puts_head) = (2 * n, 2 * n + 1);
    let mut swap_heads: HashMap<Option<u64>, usize> = HashMap::new();
    for p in ops.iter().filter(|p| p.out.is_none()) {
        if let Op::Cas { expected, .. } = p.op {
            let next_head = 2 * n + 2 + swap_heads.len();
            swap_heads.entry(expected).or_insert(next_head);
        }
    }
    let mut next = vec![NIL; 2 * n + 2 + swap_heads.len()];
    let mut prev = vec![NIL; next.len()];
    let mut tails: HashMap<usize, usize> = HashMap::new();
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    // Each op's index in the bitset of its kind.
    let mut slot = vec![0usize; n];
    let (mut n_ok, mut n_unknown) = (0, 0);
    for (j, p) in ops.iter().enumerate() {
        match (p.ret, p.out, p.op) {
            (Some(ret), Some(_), _) => {
                events.push((p.call, 0, 2 * j));
                events.push((ret, 1, 2 * j + 1));
                slot[j] = n_ok;
                n_ok += 1;
            }
            (_, _, op) => {
                let list = match op {
                    Op::Cas { expected, .. } => swap_heads.get(&expected).copied(),
                    _ => None,
                }
                .unwrap_or(puts_head);
                let tail = tails.entry(list).or_insert(list);
                next[*tail] = 2 * j;
                prev[2 * j] = *tail;
                *tail = 2 * j;
                slot[j] = n_unknown;
                n_unknown += 1;
            }
        }
    }
    events.sort_unstable();
    let mut last = head;
    for &(_, _, entry) in &events {
        next[last] = entry;
        prev[entry] = last;
        last = entry;
    }

    let unlink = |next: &mut [usize], prev: &mut [usize], e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut [usize], prev: &mut [usize], e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != NIL {
            prev[nx] = e;
        }
    };

    let mut done = Bitset::new(n_ok, 0);
    let mut applied = Bitset::new(n_unknown, 0xa5a5_a5a5_a5a5_a5a5);
    let cache_key = |done: &Bitset, applied: &Bitset, state: State| CacheKey {
        hash: (done.hash ^ applied.hash).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ state_hash(state),
        done: done.trimmed(),
        applied: applied.trimmed(),
        state,
    };
    let mut cache: HashSet<CacheKey, BuildHasherDefault<PassThrough>> = HashSet::default();
    let mut state = init;
    let mut frames: Vec<Frame> = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    // The configuration just entered, by linearizing `via` (None: the root).
    let mut entered: Option<Option<(usize, State)>> = Some(None);

    loop {
        if remaining_ok == 0 {
            // Every unknown operation still pending can be left unapplied (placed at the end).
            return SearchResult::Linearizable;
        }
        if *budget == 0 {
            return SearchResult::Timeout;
        }
        *budget -= 1;

        if let Some(via) = entered.take() {
            // List the candidates of the new configuration.
            let start = candidates.len();
            let mut e = next[head];
            let mut forced = None;
            while e != NIL && e % 2 == 0 {
                let p = &ops[e / 2];
                // A completed op that never writes (a read, a swap that failed) and whose answer matches
                // the current value can be linearized right now without losing any solution: moving it
                // earlier changes no value anybody sees, and every op that had to precede it is already
                // linearized (otherwise a return event would come before its call in the list). So this
                // is the only child worth exploring, and if it fails this configuration fails.
                if never_writes(p) && step(state, &p.op, p.out.as_ref()) == Some(state) {
                    forced = Some(e / 2);
                    break;
                }
                candidates.push(e / 2);
                e = next[e];
            }
            if let Some(j) = forced {
                candidates.truncate(start);
                candidates.push(j);
            } else {
                let limit = if e == NIL {
                    u64::MAX
                } else {
                    ops[e / 2].ret.unwrap_or(u64::MAX)
                };
                candidates[start..].sort_unstable_by_key(|&j| (ops[j].ret, j));
                let completed_end = candidates.len();
                let swaps = match state {
                    State::Known(v) => swap_heads.get(&v).copied(),
                    State::Any => None,
                };
                for list in std::iter::once(puts_head).chain(swaps) {
                    let mut e = next[list];
                    while e != NIL && ops[e / 2].call <= limit {
                        candidates.push(e / 2);
                        e = next[e];
                    }
                }
                // Unknown ops first: candidates are taken from `next` upwards.
                candidates[start..].rotate_left(completed_end - start);
            }
            frames.push(Frame {
                via,
                start,
                next: start,
                end: candidates.len(),
            });
            continue;
        }

        let Some(frame) = frames.last_mut() else {
            return SearchResult::NotLinearizable;
        };
        if frame.next == frame.end {
            // No candidate left: this configuration fails. Undo the step that led here and go on with
            // the parent's candidates.
            candidates.truncate(frame.start);
            let Some((j, before)) = frame.via else {
                return SearchResult::NotLinearizable;
            };
            frames.pop();
            state = before;
            if known(j) {
                done.flip(slot[j]);
                relink(&mut next, &mut prev, 2 * j + 1);
                relink(&mut next, &mut prev, 2 * j);
                remaining_ok += 1;
            } else {
                applied.flip(slot[j]);
                relink(&mut next, &mut prev, 2 * j);
            }
            continue;
        }
        let j = candidates[frame.next];
        frame.next += 1;

        // Try to linearize op j here.
        let p = &ops[j];
        let Some(new_state) = step(state, &p.op, p.out.as_ref())
            // An unknown op that changes nothing is better left unapplied.
            .filter(|&s| known(j) || s != state)
        else {
            continue;
        };
        let set = if known(j) { &mut done } else { &mut applied };
        set.flip(slot[j]);
        if !cache.insert(cache_key(&done, &applied, new_state)) {
            // Seen before: it failed, or it is on the current path.
            let set = if known(j) { &mut done } else { &mut applied };
            set.flip(slot[j]);
            continue;
        }
        entered = Some(Some((j, state)));
        state = new_state;
        unlink(&mut next, &mut prev, 2 * j);
        if known(j) {
            unlink(&mut next, &mut prev, 2 * j + 1);
            remaining_ok -= 1;
        }
    }
}

/// Whether `ops` (from `init`) is proven non-linearizable within `budget` steps.
fn fails(ops: &[PartOp], init: State, mut budget: u64) -> bool {
    matches!(
        search(ops, init, &mut budget),
        SearchResult::NotLinearizable
    )
}

/// Narrows a failing partition down to a culprit and a small failing window.
///
/// Both narrowing steps binary-search a monotone property, and only move to a narrower window once it is
/// proven to fail; a search that runs out of budget counts as "not proven", so the result is always a
/// genuinely failing window.
fn explain(key: u64, ops: &[PartOp], budget: u64) -> Verdict {
    // Completions in order. Prefix k: the first k completions are kept, every other op invoked by then is
    // pending, later ops are dropped. If the whole history is linearizable so is every prefix, so
    // "prefix k fails" is monotone in k, and it holds for the last k (the full history, up to unknown ops
    // invoked after every completion, which can always go last).
    let mut completions: Vec<(u64, OpId, usize)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.ret.map(|r| (r, p.id, i)))
        .collect();
    completions.sort_unstable();
    let prefix = |k: usize| -> Vec<PartOp> {
        let Some(&(t, _, _)) = k.checked_sub(1).and_then(|i| completions.get(i)) else {
            return Vec::new();
        };
        let mut kept: Vec<bool> = vec![false; ops.len()];
        for &(_, _, i) in &completions[..k] {
            kept[i] = true;
        }
        ops.iter()
            .zip(kept)
            .filter(|(p, _)| p.call <= t)
            .map(|(p, kept)| {
                let mut p = *p;
                if !kept {
                    p.ret = None;
                    p.out = None;
                }
                p
            })
            .collect()
    };
    // Smallest failing k in (lo, hi]; hi is proven failing.
    let (mut lo, mut hi) = (0, completions.len());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fails(&prefix(mid), State::Known(None), budget) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let culprit = match hi.checked_sub(1).and_then(|i| completions.get(i)) {
        Some(&(_, id, _)) => id,
        // No completion at all cannot fail; report the whole partition.
        None => {
            return Verdict::NotLinearizable {
                key,
                culprit: ops.first().map_or(OpId(0), |p| p.id),
                ops: ops.iter().map(|p| p.id).collect(),
                from_initial: true,
            }
        }
    };

    let mut window = prefix(hi);
    window.sort_unstable_by_key(|p| (p.call, p.id));
    // Quiescent cuts: cut c drops the completed ops of window[..c], which all returned before any op of
    // window[c..] was invoked, and keeps the rest, starting from any value. The kept unknown-outcome
    // writes invoked earlier may still take effect later; if they took effect before the cut, a
    // linearization can leave them unapplied instead. So cutting later only relaxes the check, "fails from
    // cut c" is monotone, and cut 0 (from absent) is proven.
    let suffix = |c: usize| -> Vec<PartOp> {
        let (before, after) = window.split_at(c);
        let pending = before.iter().filter(|p| p.ret.is_none());
        prune(&pending.chain(after).copied().collect::<Vec<_>>())
    };
    let mut cuts = vec![0];
    let mut max_ret: Option<u64> = None;
    for (c, p) in window.iter().enumerate() {
        if c > 0 && max_ret.is_none_or(|r| r < p.call) {
            cuts.push(c);
        }
        max_ret = max_ret.max(p.ret);
    }
    // Largest failing cut index in [lo, hi); lo is proven failing.
    let (mut lo, mut hi) = (0, cuts.len());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fails(&suffix(cuts[mid]), State::Any, budget) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let start = cuts[lo];
    let mut ops: Vec<OpId> = suffix(start).iter().map(|p| p.id).collect();
    ops.sort_unstable();
    Verdict::NotLinearizable {
        key,
        culprit,
        ops,
        from_initial: start == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- Helpers: build histories tersely. ----

    fn put(h: &mut History, client: u64, key: u64, value: u64, call: u64, ret: u64) -> OpId {
        let id = h.call(client, Op::Put { key, value }, call);
        h.ok(id, Output::Put, ret).expect("valid put");
        id
    }

    fn get(h: &mut History, client: u64, key: u64, seen: Option<u64>, call: u64, ret: u64) -> OpId {
        let id = h.call(client, Op::Get { key }, call);
        h.ok(id, Output::Get(seen), ret).expect("valid get");
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn cas(
        h: &mut History,
        client: u64,
        key: u64,
        expected: Option<u64>,
        new: u64,
        swapped: bool,
        call: u64,
        ret: u64,
    ) -> OpId {
        let id = h.call(client, Op::Cas { key, expected, new }, call);
        h.ok(id, Output::Cas(swapped), ret).expect("valid cas");
        id
    }

    fn unknown_put(h: &mut History, client: u64, key: u64, value: u64, call: u64) -> OpId {
        let id = h.call(client, Op::Put { key, value }, call);
        h.unknown(id).expect("valid unknown");
        id
    }

    #[track_caller]
    fn assert_linearizable(h: &History) {
        let verdict = check(h);
        assert!(
            verdict.is_linearizable(),
            "{verdict}\n{}",
            h.describe(&all_ids(h))
        );
    }

    /// Asserts the history fails on `key`, and returns the explanation's culprit and window.
    #[track_caller]
    fn assert_violation(h: &History, key: u64) -> (OpId, Vec<OpId>) {
        match check(h) {
            Verdict::NotLinearizable {
                key: k,
                culprit,
                ops,
                ..
            } => {
                assert_eq!(k, key, "wrong key");
                assert!(ops.contains(&culprit), "the window holds the culprit");
                (culprit, ops)
            }
            other => panic!("expected a violation on key {key}, got {other:?}"),
        }
    }

    fn all_ids(h: &History) -> Vec<OpId> {
        (0..h.len()).map(OpId).collect()
    }

    // ---- Violations are caught. ----

    #[test]
    fn stale_read_is_caught() {
        // put 1, then put 2 completes, then a read still sees 1.
        let mut h = History::new();
        let p1 = put(&mut h, 1, 0, 1, 0, 10);
        let p2 = put(&mut h, 1, 0, 2, 20, 30);
        let g = get(&mut h, 2, 0, Some(1), 40, 50);
        let (culprit, window) = assert_violation(&h, 0);
        assert_eq!(culprit, g);
        // put 1 is irrelevant: put 2 followed by the read is already impossible, whatever came before.
        assert_eq!(window, vec![p2, g]);
        assert!(!window.contains(&p1));
    }

    #[test]
    fn lost_write_is_caught() {
        // An acknowledged put, then a later read by another client sees the key absent.
        let mut h = History::new();
        let p = put(&mut h, 1, 5, 7, 0, 10);
        let g = get(&mut h, 2, 5, None, 11, 12);
        let (culprit, window) = assert_violation(&h, 5);
        assert_eq!(culprit, g);
        assert_eq!(window, vec![p, g]);

        // Same with an older value rather than absent.
        let mut h = History::new();
        put(&mut h, 1, 5, 1, 0, 10);
        put(&mut h, 1, 5, 2, 20, 30);
        get(&mut h, 2, 5, Some(1), 31, 32);
        assert_violation(&h, 5);
    }

    #[test]
    fn reordered_writes_are_caught() {
        // Two sequential puts by different clients; a later read sees the first one's value.
        let mut h = History::new();
        put(&mut h, 1, 3, 100, 0, 5);
        put(&mut h, 2, 3, 200, 6, 9);
        let g = get(&mut h, 3, 3, Some(100), 10, 11);
        let (culprit, _) = assert_violation(&h, 3);
        assert_eq!(culprit, g);
    }

    #[test]
    fn failed_cas_that_should_have_succeeded_is_caught() {
        let mut h = History::new();
        put(&mut h, 1, 0, 4, 0, 10);
        let c = cas(&mut h, 2, 0, Some(4), 5, false, 20, 30);
        let (culprit, _) = assert_violation(&h, 0);
        assert_eq!(culprit, c);

        // On an absent key, `expected: None` must succeed.
        let mut h = History::new();
        let c = cas(&mut h, 2, 0, None, 5, false, 20, 30);
        let (culprit, window) = assert_violation(&h, 0);
        assert_eq!((culprit, window), (c, vec![c]));
    }

    #[test]
    fn successful_cas_that_should_have_failed_is_caught() {
        let mut h = History::new();
        put(&mut h, 1, 0, 4, 0, 10);
        cas(&mut h, 2, 0, Some(3), 5, true, 20, 30);
        assert_violation(&h, 0);
    }

    #[test]
    fn read_of_a_value_nobody_wrote_is_caught() {
        let mut h = History::new();
        let g = get(&mut h, 1, 0, Some(9), 0, 1);
        match check(&h) {
            Verdict::NotLinearizable {
                ops, from_initial, ..
            } => {
                assert_eq!(ops, vec![g]);
                // It only fails because the key starts absent.
                assert!(from_initial);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn write_that_takes_effect_twice_is_caught() {
        // 1, then 2, then a read of 1 again, then 2 again: no single order works.
        let mut h = History::new();
        put(&mut h, 1, 0, 1, 0, 10);
        put(&mut h, 2, 0, 2, 0, 10);
        get(&mut h, 3, 0, Some(1), 11, 12);
        get(&mut h, 3, 0, Some(2), 13, 14);
        get(&mut h, 3, 0, Some(1), 15, 16);
        assert_violation(&h, 0);
    }

    // ---- Valid histories pass. ----

    #[test]
    fn overlapping_put_and_get_may_see_either_value() {
        for seen in [None, Some(1)] {
            let mut h = History::new();
            put(&mut h, 1, 0, 1, 0, 10);
            get(&mut h, 2, 0, seen, 5, 15);
            assert_linearizable(&h);
        }
        // Two overlapping puts: later reads may see either, but then must keep seeing it.
        for winner in [1, 2] {
            let mut h = History::new();
            put(&mut h, 1, 0, 1, 0, 10);
            put(&mut h, 2, 0, 2, 5, 15);
            get(&mut h, 3, 0, Some(winner), 20, 21);
            get(&mut h, 3, 0, Some(winner), 22, 23);
            assert_linearizable(&h);
        }
    }

    #[test]
    fn touching_intervals_are_concurrent() {
        // The put returns at 10 and the read is invoked at 10: either order is allowed.
        let mut h = History::new();
        put(&mut h, 1, 0, 1, 0, 10);
        get(&mut h, 2, 0, None, 10, 20);
        assert_linearizable(&h);
    }

    #[test]
    fn cas_chain_passes() {
        let mut h = History::new();
        cas(&mut h, 1, 0, None, 1, true, 0, 10);
        cas(&mut h, 2, 0, None, 9, false, 11, 20);
        cas(&mut h, 1, 0, Some(1), 2, true, 21, 30);
        get(&mut h, 2, 0, Some(2), 31, 40);
        assert_linearizable(&h);
    }

    #[test]
    fn keys_are_independent() {
        // Each key on its own is fine, though the values interleave across keys.
        let mut h = History::new();
        put(&mut h, 1, 0, 1, 0, 10);
        put(&mut h, 1, 1, 2, 11, 20);
        get(&mut h, 2, 1, Some(2), 21, 30);
        get(&mut h, 2, 0, Some(1), 31, 40);
        assert_linearizable(&h);
        // A failure is reported on the key it happens on.
        get(&mut h, 2, 1, None, 41, 50);
        assert_violation(&h, 1);
    }

    #[test]
    fn unknown_put_that_took_effect_passes() {
        let mut h = History::new();
        put(&mut h, 1, 0, 1, 0, 10);
        unknown_put(&mut h, 2, 0, 2, 20);
        get(&mut h, 3, 0, Some(2), 100, 110);
        get(&mut h, 3, 0, Some(2), 120, 130);
        assert_linearizable(&h);
    }

    #[test]
    fn unknown_put_that_did_not_take_effect_passes() {
        let mut h = History::new();
        put(&mut h, 1, 0, 1, 0, 10);
        unknown_put(&mut h, 2, 0, 2, 20);
        get(&mut h, 3, 0, Some(1), 100, 110);
        get(&mut h, 3, 0, Some(1), 120, 130);
        assert_linearizable(&h);
    }

    #[test]
    fn unknown_put_can_take_effect_only_after_its_call() {
        let mut h = History::new();
        get(&mut h, 3, 0, Some(2), 0, 10);
        unknown_put(&mut h, 2, 0, 2, 20);
        assert_violation(&h, 0);
    }

    #[test]
    fn unknown_put_takes_effect_at_most_once() {
        let mut h = History::new();
        unknown_put(&mut h, 2, 0, 2, 0);
        get(&mut h, 3, 0, Some(2), 10, 11);
        put(&mut h, 1, 0, 1, 12, 13);
        get(&mut h, 3, 0, Some(2), 14, 15);
        assert_violation(&h, 0);
    }

    #[test]
    fn unknown_cas_may_explain_a_later_value() {
        let mut h = History::new();
        put(&mut h, 1, 0, 1, 0, 10);
        let c = h.call(
            2,
            Op::Cas {
                key: 0,
                expected: Some(1),
                new: 5,
            },
            20,
        );
        h.unknown(c).expect("pending");
        get(&mut h, 3, 0, Some(5), 30, 40);
        assert_linearizable(&h);
        // ...but not if its expectation could not have held.
        let mut h = History::new();
        put(&mut h, 1, 0, 1, 0, 10);
        let c = h.call(
            2,
            Op::Cas {
                key: 0,
                expected: Some(7),
                new: 5,
            },
            20,
        );
        h.unknown(c).expect("pending");
        get(&mut h, 3, 0, Some(5), 30, 40);
        assert_violation(&h, 0);
    }

    #[test]
    fn pending_ops_count_as_unknown_and_unknown_reads_are_ignored() {
        let mut h = History::new();
        h.call(1, Op::Put { key: 0, value: 3 }, 0); // never completes
        let g = h.call(2, Op::Get { key: 0 }, 1);
        h.unknown(g).expect("pending");
        get(&mut h, 3, 0, Some(3), 10, 11);
        assert_linearizable(&h);
    }

    #[test]
    fn an_empty_history_is_linearizable() {
        assert_linearizable(&History::new());
    }

    // ---- Recording mistakes are errors, never panics. ----

    #[test]
    fn history_rejects_bad_records() {
        let mut h = History::new();
        let g = h.call(1, Op::Get { key: 0 }, 10);
        assert_eq!(
            h.ok(OpId(99), Output::Put, 20),
            Err(HistoryError::UnknownOp(OpId(99)))
        );
        assert_eq!(h.unknown(OpId(99)), Err(HistoryError::UnknownOp(OpId(99))));
        assert!(matches!(
            h.ok(g, Output::Get(None), 10),
            Err(HistoryError::ReturnNotAfterCall { .. })
        ));
        assert!(matches!(
            h.ok(g, Output::Cas(true), 20),
            Err(HistoryError::OutputMismatch { .. })
        ));
        assert_eq!(h.get(g).map(|r| r.outcome), Some(Outcome::Pending));
        assert_eq!(h.ok(g, Output::Get(None), 20), Ok(()));
        assert_eq!(
            h.ok(g, Output::Get(None), 30),
            Err(HistoryError::AlreadyCompleted(g))
        );
        assert_eq!(h.unknown(g), Err(HistoryError::AlreadyCompleted(g)));
        // A late answer after a timeout is not recorded.
        let p = h.call(1, Op::Put { key: 0, value: 1 }, 40);
        h.unknown(p).expect("pending");
        assert_eq!(
            h.ok(p, Output::Put, 50),
            Err(HistoryError::AlreadyCompleted(p))
        );
        assert_eq!(h.describe(&[g, OpId(99)]).lines().count(), 1);
    }

    #[test]
    fn budget_exhaustion_is_a_timeout_never_a_pass() {
        let mut h = History::new();
        put(&mut h, 1, 0, 1, 0, 10);
        get(&mut h, 2, 0, Some(1), 11, 12);
        assert_eq!(check_with_budget(&h, 1), Verdict::Timeout { key: 0 });
        assert_eq!(check_with_budget(&h, 1_000), Verdict::Linearizable);
    }

    // ---- Cross-check against brute force on many small random histories. ----

    /// SplitMix64: a tiny seeded generator, so the tests need no dependency.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// Linearizability by definition: try every order of `ops` consistent with real time (unknown ops
    /// return at infinity, and may be left out by being ordered last), from `init`.
    fn brute_force(ops: &[Record], init: Option<u64>) -> bool {
        fn ret(r: &Record) -> Option<u64> {
            match r.outcome {
                Outcome::Ok { time, .. } => Some(time),
                _ => None,
            }
        }
        fn go(ops: &[Record], used: &mut Vec<bool>, state: Option<u64>) -> bool {
            if (0..ops.len()).all(|i| used[i] || ret(&ops[i]).is_none()) {
                return true;
            }
            for i in 0..ops.len() {
                if used[i] {
                    continue;
                }
                // i may go next only if no other remaining op returned before i was called.
                let blocked = (0..ops.len())
                    .any(|j| !used[j] && j != i && ret(&ops[j]).is_some_and(|r| r < ops[i].call));
                if blocked {
                    continue;
                }
                let (next, answer) = match ops[i].op {
                    Op::Put { value, .. } => (Some(value), Output::Put),
                    Op::Get { .. } => (state, Output::Get(state)),
                    Op::Cas { expected, new, .. } => {
                        let swapped = state == expected;
                        (
                            if swapped { Some(new) } else { state },
                            Output::Cas(swapped),
                        )
                    }
                };
                if let Outcome::Ok { output, .. } = ops[i].outcome {
                    if output != answer {
                        continue;
                    }
                }
                used[i] = true;
                let ok = go(ops, used, next);
                used[i] = false;
                if ok {
                    return true;
                }
            }
            false
        }
        go(ops, &mut vec![false; ops.len()], init)
    }

    fn random_small_history(rng: &mut SplitMix64) -> History {
        let mut h = History::new();
        let n = 1 + rng.below(7);
        for _ in 0..n {
            let key = rng.below(2);
            let small = |rng: &mut SplitMix64| (rng.below(4) > 0).then(|| rng.below(3));
            let op = match rng.below(3) {
                0 => Op::Put {
                    key,
                    value: rng.below(3),
                },
                1 => Op::Get { key },
                _ => Op::Cas {
                    key,
                    expected: small(rng),
                    new: rng.below(3),
                },
            };
            let call = rng.below(12);
            let id = h.call(rng.below(3), op, call);
            if rng.chance(20) {
                if rng.chance(50) {
                    h.unknown(id).expect("pending");
                }
                continue;
            }
            let output = match op {
                Op::Put { .. } => Output::Put,
                Op::Get { .. } => Output::Get(small(rng)),
                Op::Cas { .. } => Output::Cas(rng.chance(50)),
            };
            h.ok(id, output, call + 1 + rng.below(6)).expect("valid");
        }
        h
    }

    /// A small history from a linearizable store (with many unknown outcomes), with one answer changed
    /// half of the time: violations close to the boundary.
    fn near_linearizable_history(rng: &mut SplitMix64) -> History {
        let (seed, n_ops, n_clients) = (rng.next(), 1 + rng.below(8), 1 + rng.below(4));
        let mut generated = generate(seed, n_ops as usize, 2, n_clients as usize, 30);
        if rng.chance(50) {
            let g = &mut generated[rng.below(n_ops) as usize];
            g.output = match g.output {
                Output::Get(_) => Output::Get(rng.below(n_ops + 1).checked_sub(1).map(|v| v + 1)),
                Output::Cas(swapped) => Output::Cas(!swapped),
                Output::Put => Output::Put,
            };
        }
        record(&generated)
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = SplitMix64(7);
        let (mut passed, mut failed) = (0, 0);
        for _ in 0..5_000 {
            let h = if rng.chance(50) {
                random_small_history(&mut rng)
            } else {
                near_linearizable_history(&mut rng)
            };
            let expected = (0..2).all(|key| {
                let part: Vec<Record> = h
                    .records()
                    .iter()
                    .filter(|r| r.op.key() == key)
                    .copied()
                    .collect();
                brute_force(&part, None)
            });
            let verdict = check(&h);
            assert_eq!(
                verdict.is_linearizable(),
                expected,
                "{verdict}\n{}",
                h.describe(&all_ids(&h))
            );
            let Verdict::NotLinearizable {
                culprit,
                ops,
                from_initial,
                ..
            } = verdict
            else {
                passed += 1;
                continue;
            };
            failed += 1;
            // The window really fails on its own: from absent, or from every possible value. Ops that
            // returned after the culprit count as pending.
            let culprit_ret = match h.get(culprit).map(|r| r.outcome) {
                Some(Outcome::Ok { time, .. }) => time,
                other => panic!("culprit must have completed: {other:?}"),
            };
            let window: Vec<Record> = ops
                .iter()
                .filter_map(|&id| h.get(id).copied())
                .map(|mut r| {
                    if matches!(r.outcome, Outcome::Ok { time, .. } if time > culprit_ret) {
                        r.outcome = Outcome::Unknown;
                    }
                    r
                })
                .collect();
            let starts: Vec<Option<u64>> = if from_initial {
                vec![None]
            } else {
                vec![None, Some(0), Some(1), Some(2), Some(99)]
            };
            for init in starts {
                assert!(
                    !brute_force(&window, init),
                    "window from {init:?} is linearizable\n{}",
                    h.describe(&ops)
                );
            }
        }
        // The generator exercises both sides.
        assert!(
            passed > 300 && failed > 300,
            "{passed} passed, {failed} failed"
        );
    }

    // ---- Scale: 10,000 operations. ----

    /// One generated operation: what the client saw, and whether it really took effect.
    struct Generated {
        client: u64,
        op: Op,
        call: u64,
        ret: u64,
        output: Output,
        unknown: bool,
    }

    /// Simulates a linearizable store: every op takes effect atomically at a random instant within its
    /// interval. Values are unique, so a read of a value identifies the write. Clients issue one op at a
    /// time; `unknown_percent` of the ops time out, and half of those never take effect.
    fn generate(
        seed: u64,
        n_ops: usize,
        n_keys: u64,
        n_clients: usize,
        unknown_percent: u64,
    ) -> Vec<Generated> {
        let mut rng = SplitMix64(seed);
        let mut free_at = vec![0u64; n_clients];
        let mut recent: Vec<Vec<u64>> = vec![Vec::new(); n_keys as usize];
        let mut ops = Vec::with_capacity(n_ops);
        let mut instants = Vec::with_capacity(n_ops);
        for i in 0..n_ops {
            // The client that became free first goes next: always ~n_clients ops in flight.
            let client = (0..n_clients).min_by_key(|&c| (free_at[c], c)).unwrap_or(0);
            let call = free_at[client];
            let duration = 1 + rng.below(20);
            let instant = call + rng.below(duration + 1);
            let ret = call + duration;
            free_at[client] = ret + 1 + rng.below(3);
            let key = rng.below(n_keys);
            let value = i as u64 + 1;
            let op = match rng.below(20) {
                0..=8 => Op::Put { key, value },
                9..=16 => Op::Get { key },
                _ => {
                    let r = &recent[key as usize];
                    let pick = rng.below(r.len() as u64 + 1) as usize;
                    Op::Cas {
                        key,
                        expected: r.iter().rev().nth(pick).copied(),
                        new: value,
                    }
                }
            };
            if let Op::Put { .. } = op {
                recent[key as usize].push(value);
                if recent[key as usize].len() > 3 {
                    recent[key as usize].remove(0);
                }
            }
            let unknown = rng.chance(unknown_percent);
            let takes_effect = !unknown || rng.chance(50);
            ops.push(Generated {
                client: client as u64,
                op,
                call,
                ret,
                output: Output::Put,
                unknown,
            });
            if takes_effect {
                instants.push((instant, i));
            }
        }
        instants.sort_unstable();
        let mut store: BTreeMap<u64, u64> = BTreeMap::new();
        for (_, i) in instants {
            let g = &mut ops[i];
            g.output = match g.op {
                Op::Put { key, value } => {
                    store.insert(key, value);
                    Output::Put
                }
                Op::Get { key } => Output::Get(store.get(&key).copied()),
                Op::Cas { key, expected, new } => {
                    let swapped = store.get(&key).copied() == expected;
                    if swapped {
                        store.insert(key, new);
                    }
                    Output::Cas(swapped)
                }
            };
        }
        ops
    }

    fn record(generated: &[Generated]) -> History {
        let mut h = History::new();
        for g in generated {
            let id = h.call(g.client, g.op, g.call);
            if g.unknown {
                h.unknown(id).expect("pending");
            } else {
                h.ok(id, g.output, g.ret).expect("valid");
            }
        }
        h
    }

    #[test]
    fn ten_thousand_ops_from_a_linearizable_store_pass_quickly() {
        let generated = generate(42, 10_000, 5, 10, 1);
        let h = record(&generated);
        let started = std::time::Instant::now();
        let verdict = check(&h);
        println!(
            "10k-op linearizable history checked in {:?}",
            started.elapsed()
        );
        assert_eq!(verdict, Verdict::Linearizable);
    }

    #[test]
    fn ten_thousand_ops_on_one_hot_key_with_timeouts_pass() {
        // Ten clients hammering a single key, 5% of the ops timing out: the hardest shape for the search.
        let h = record(&generate(44, 10_000, 1, 10, 5));
        let started = std::time::Instant::now();
        let verdict = check(&h);
        println!("10k ops on one key checked in {:?}", started.elapsed());
        assert_eq!(verdict, Verdict::Linearizable);
    }

    #[test]
    fn ten_thousand_ops_with_one_planted_stale_read_are_caught() {
        let mut generated = generate(43, 10_000, 5, 10, 1);
        // Pick a read in the second half such that, before it was invoked, one write of its key completed
        // and then another write (invoked after the first completed) completed too. Make it return the
        // first write's value: stale, since values are unique.
        let is_write = |g: &Generated| {
            !g.unknown
                && matches!(
                    (g.op, g.output),
                    (Op::Put { .. }, _) | (_, Output::Cas(true))
                )
        };
        let written = |g: &Generated| match g.op {
            Op::Put { value, .. } => value,
            Op::Cas { new, .. } => new,
            Op::Get { .. } => 0,
        };
        let (target, stale) = (5_000..generated.len())
            .find_map(|r| {
                let read = &generated[r];
                if read.unknown || !matches!(read.op, Op::Get { .. }) {
                    return None;
                }
                let key = read.op.key();
                let writes: Vec<&Generated> = generated[..r]
                    .iter()
                    .filter(|w| is_write(w) && w.op.key() == key && w.ret < read.call)
                    .collect();
                writes.iter().find_map(|first| {
                    writes
                        .iter()
                        .any(|second| first.ret < second.call)
                        .then(|| (r, written(first)))
                })
            })
            .expect("a read to corrupt");
        generated[target].output = Output::Get(Some(stale));
        let h = record(&generated);

        let started = std::time::Instant::now();
        let verdict = check(&h);
        println!(
            "10k-op history with a stale read checked in {:?}",
            started.elapsed()
        );
        let (culprit, window) = assert_violation(&h, generated[target].op.key());
        assert_eq!(culprit, OpId(target));
        println!("{verdict}\n{}", h.describe(&window));
    }
}
