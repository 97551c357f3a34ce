//! `Ready`: everything the core asks the caller to do after a round of `tick`/`step`/`propose`, and the
//! token the caller hands back through `advance`.
//!
//! The types enforce the order in which the work must happen:
//!
//! 1. From a [`Ready`], the caller may send [`Ready::take_messages`] at once (a leader's appends and
//!    heartbeats: Raft thesis §10.2.1 lets a leader send before its own write is durable), and must persist
//!    [`Ready::entries`] and [`Ready::hard_state`]. A `Ready` that changes the term or the vote has no
//!    messages to send at once: nothing may speak for a term before the term is durable.
//! 2. Once they are durable, the caller turns the `Ready` into [`Persisted`] with [`Ready::persisted`],
//!    which consumes it. Only `Persisted` hands out the messages that vouch for durable state (vote and
//!    pre-vote answers, append acknowledgements), the committed entries to apply and the reads to serve.
//! 3. The caller gives `Persisted` back to [`RaftCore::advance`](crate::RaftCore::advance), which accepts
//!    only the token of the outstanding `Ready`.

use crate::message::Envelope;
use crate::types::{Entry, HardState, Index, LogId, RaftTypeConfig, Role, Snapshot};

/// The identifier of a read request, issued by the leader in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

/// A read that is safe to serve once the state machine has applied `index`. By the time it appears in
/// [`Persisted::read_states`], the committed entries in the same `Persisted` bring the state machine there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    pub id: ReadId,
    pub index: Index,
}

/// Volatile state a caller may want to observe: who leads and what this replica is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState<C: RaftTypeConfig> {
    pub role: Role,
    pub leader: Option<C::NodeId>,
}

/// Work for the caller. See the [module documentation](self) for the order.
#[derive(Debug)]
#[must_use = "a Ready must be persisted and advanced, or the core stalls"]
pub struct Ready<C: RaftTypeConfig> {
    /// Boxed: rare and large, it would make every Ready larger.
    pub(crate) snapshot: Option<Box<Snapshot<C>>>,
    pub(crate) messages: Vec<Envelope<C>>,
    pub(crate) entries: Vec<Entry<C>>,
    pub(crate) hard_state: Option<HardState<C>>,
    pub(crate) must_sync: bool,
    pub(crate) soft_state: Option<SoftState<C>>,
    pub(crate) after_persist: Persisted<C>,
}

impl<C: RaftTypeConfig> Ready<C> {
    /// Messages that may be sent before this Ready's writes are durable. Messages not taken here are
    /// handed out again by [`Persisted::take_messages`].
    pub fn take_messages(&mut self) -> Vec<Envelope<C>> {
        std::mem::take(&mut self.messages)
    }

    /// Entries to append to the log. The first entry's index may be at or below the current last index:
    /// the log must then drop every entry from that index on before appending.
    pub fn entries(&self) -> &[Entry<C>] {
        &self.entries
    }

    /// A snapshot received from the leader, to install before anything else in this Ready: replace the
    /// log with it (afterwards `first_index` is its last index + 1 and `term` answers its last term) and
    /// load it into the state machine. [`entries`](Self::entries) then continue after it.
    pub fn snapshot(&self) -> Option<&Snapshot<C>> {
        self.snapshot.as_deref()
    }

    /// The hard state to persist, if it changed.
    pub fn hard_state(&self) -> Option<&HardState<C>> {
        self.hard_state.as_ref()
    }

    /// Moves the writes out (snapshot to install, entries to append, hard state), for a caller that
    /// gathers the writes of many groups into one storage batch. The Ready still releases its
    /// after-durability part through [`persisted`](Self::persisted).
    pub fn take_writes(&mut self) -> Writes<C> {
        Writes {
            snapshot: self.snapshot.take(),
            entries: std::mem::take(&mut self.entries),
            hard_state: self.hard_state.take(),
        }
    }

    /// True if the writes must be synced to disk before [`persisted`](Self::persisted): new entries, or a new
    /// term or vote. A change of the commit index alone need not be synced.
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }

    /// A change of role or leader, if one happened.
    pub fn soft_state(&self) -> Option<&SoftState<C>> {
        self.soft_state.as_ref()
    }

    /// Call once [`entries`](Self::entries) and [`hard_state`](Self::hard_state) are durable. Consumes the
    /// Ready and releases what may only follow durability.
    pub fn persisted(mut self) -> Persisted<C> {
        let mut after = self.after_persist;
        if !self.messages.is_empty() {
            self.messages.append(&mut after.messages);
            after.messages = self.messages;
        }
        after
    }
}

/// The writes of one [`Ready`], moved out with [`Ready::take_writes`]. Apply them in field order: install
/// the snapshot, append the entries (dropping any conflicting tail first), store the hard state.
#[derive(Debug, Clone, PartialEq)]
pub struct Writes<C: RaftTypeConfig> {
    /// Boxed: rare and large.
    pub snapshot: Option<Box<Snapshot<C>>>,
    pub entries: Vec<Entry<C>>,
    pub hard_state: Option<HardState<C>>,
}

impl<C: RaftTypeConfig> Writes<C> {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// The part of a [`Ready`] released once its writes are durable; also the token for
/// [`RaftCore::advance`](crate::RaftCore::advance).
#[derive(Debug)]
#[must_use = "pass Persisted to RaftCore::advance, or the core stalls"]
pub struct Persisted<C: RaftTypeConfig> {
    pub(crate) id: u64,
    pub(crate) messages: Vec<Envelope<C>>,
    pub(crate) committed: Vec<Entry<C>>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) aborted_reads: Vec<ReadId>,
    pub(crate) last_entry: Option<LogId>,
    pub(crate) snapshot: Option<LogId>,
    pub(crate) applied_to: Option<Index>,
}

impl<C: RaftTypeConfig> Persisted<C> {
    /// Messages that vouch for durable state: safe to send now.
    pub fn take_messages(&mut self) -> Vec<Envelope<C>> {
        std::mem::take(&mut self.messages)
    }

    /// Committed entries to apply to the state machine, in order.
    pub fn committed(&self) -> &[Entry<C>] {
        &self.committed
    }

    /// Takes the committed entries out (for moving them to an apply task); `advance` still records them as
    /// applied.
    pub fn take_committed(&mut self) -> Vec<Entry<C>> {
        std::mem::take(&mut self.committed)
    }

    /// Reads that may be served once the committed entries above are applied.
    pub fn read_states(&self) -> &[ReadState] {
        &self.read_states
    }

    /// Reads that will never be confirmed because this replica lost leadership; the client should retry
    /// on the new leader.
    pub fn aborted_reads(&self) -> &[ReadId] {
        &self.aborted_reads
    }

    /// The index of the last committed entry handed out by this token, if any.
    pub fn last_committed_index(&self) -> Option<Index> {
        self.applied_to
    }
}
