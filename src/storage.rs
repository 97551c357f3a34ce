//! Storage: how the core reads the log, how the caller writes it, and the state machine it feeds.
//!
//! The core never writes storage itself. It hands a snapshot to install, entries and hard state to the
//! caller in a [`Ready`](crate::Ready); the caller adds them (for any number of groups) to one
//! [`WriteBatch`] with [`WriteBatch::push_writes`], hands it to [`LogStorage::write`], calls
//! [`LogStorage::sync`] once, and then calls [`RaftCore::advance`](crate::RaftCore::advance). The core
//! reads the log back through a per-group [`LogView`] handle obtained from [`LogStorage::view`].
//!
//! Log compaction is the caller's: when the [`StateMachine`] has taken a snapshot at
//! [`RaftCore::compaction_point`](crate::RaftCore::compaction_point), store it with
//! [`WriteBatch::save_snapshot`] and discard the log up to it (or a little less, to spare lagging
//! followers a snapshot) with [`WriteBatch::compact`].
//!
//! # What every `LogStorage` backend guarantees
//!
//! These rules are checked by the conformance suite (`tickraft::storage::testing::run_conformance`, behind
//! the `storage-testing` feature), which every backend in this workspace runs.
//!
//! 1. **Read your writes.** Once [`LogStorage::write`] returns `Ok`, every [`LogView`] of the groups it
//!    touched (including views obtained earlier) reflects the whole batch, whether or not it was synced.
//!    Durability is the only thing [`LogStorage::sync`] adds.
//! 2. **Order.** The operations of a batch take effect in the order they were added. Operations on different
//!    groups never interfere: a write to group A is never visible in group B.
//! 3. **All or nothing.** A batch is validated as a whole before anything is applied: if one operation is
//!    invalid, `write` returns [`StorageError::InvalidWrite`] and *no* operation of the batch takes effect,
//!    in any group. After a crash the backend recovers whole batches only: a prefix of the batches that were
//!    written, never a part of one (so entries are never durable without the hard state written with them,
//!    nor the other way round).
//! 4. **Durability only after sync.** Every batch written before a `sync` that returned `Ok` survives a
//!    crash (of the process; see the backend's documentation for power loss). Batches written after the
//!    last successful sync may or may not survive (each one whole or not at all, per rule 3).
//! 5. **Typed errors, never panics.** Bad arguments are [`StorageError::InvalidWrite`] (writes) or
//!    [`StorageError::Compacted`] / [`StorageError::Unavailable`] (reads); data that cannot be decoded or
//!    that breaks an invariant (a missing entry in the middle of the log) is [`StorageError::Corrupt`],
//!    naming the group and the index. Nothing is silently skipped.
//!
//! # The rules a write must follow
//!
//! A group's log holds entries `first_index()..=last_index()`. Below them is the *compaction point*
//! (`first_index() - 1`), whose term is still known, and at or after it the latest stored *snapshot* (at
//! or before the last index). A write is invalid, and rejected, if:
//!
//! - [`WriteOp::Append`]: the entries do not have consecutive indexes, their terms decrease, the first
//!   entry's term is lower than the term of the entry before it, the first index is past `last_index() + 1`
//!   (a gap), or at or below the compaction point, the snapshot or the persisted commit index (that would
//!   rewrite entries that are known to be committed). A first index at or below `last_index()` is how a
//!   follower overwrites a conflicting tail: every entry from that index on is dropped first.
//! - [`WriteOp::SetHardState`]: its term is lower than the persisted term, or its commit index is past the
//!   last index (write the entries first, in the same batch).
//! - [`WriteOp::Bootstrap`]: the group already has entries or a snapshot.
//! - [`WriteOp::InstallSnapshot`] (a snapshot received from the leader): it is older than the stored
//!   snapshot (or as old with another term), or older than the persisted commit index (installing it would
//!   drop committed entries). It replaces the whole log.
//! - [`WriteOp::SaveSnapshot`] (a snapshot this replica's state machine took): it is older than the stored
//!   snapshot, or the log does not hold its last entry (index and term). The log is kept.
//! - [`WriteOp::Compact`]: its index is past the last index or past the stored snapshot (a snapshot must
//!   cover every discarded entry: it is what a lagging follower receives, and it keeps
//!   [`InitialState::membership`] exact). Compacting to an index at or below the current compaction point
//!   does nothing.
//!
//! A group that was never written reads as an empty log: `first_index() == 1`, `last_index() == 0`, the
//! default hard state, an empty membership and no snapshot.

use async_trait::async_trait;

use crate::error::StorageError;
use crate::ready::Writes;
use crate::types::{
    Entry, HardState, Index, LogId, Membership, RaftTypeConfig, Snapshot, SnapshotMeta, Term,
};

mod plan;
#[cfg(feature = "storage-testing")]
pub mod testing;

pub use plan::{plan_batch, GroupChange, GroupState};

/// What a replica restarts from.
#[derive(Debug, Clone, PartialEq)]
pub struct InitialState<C: RaftTypeConfig> {
    pub hard_state: HardState<C>,
    /// The membership in force at the start of the durable log (bootstrap configuration or the one
    /// recorded with the latest snapshot). Membership entries in the log after it take precedence.
    pub membership: Membership<C>,
}

/// The core's read-only view of one group's durable log.
///
/// Indexes run from `first_index()` to `last_index()` inclusive; `first_index() - 1` is the compaction
/// point, whose term must still be answered by [`term`](Self::term) (it is 0 for an uncompacted log).
/// An empty log has `first_index() == last_index() + 1`.
pub trait LogView<C: RaftTypeConfig> {
    /// The persisted hard state and membership, read once when the core starts.
    fn initial_state(&self) -> Result<InitialState<C>, StorageError>;

    /// The term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`.
    /// Below that range: [`StorageError::Compacted`]; above it: [`StorageError::Unavailable`].
    fn term(&self, index: Index) -> Result<Term, StorageError>;

    /// Entries in `[low, high)`, stopping once their total [`Entry::size`] would exceed `max_bytes`, but
    /// always at least one entry when `low < high`.
    fn entries(
        &self,
        low: Index,
        high: Index,
        max_bytes: usize,
    ) -> Result<Vec<Entry<C>>, StorageError>;

    /// The index of the first entry still in the log.
    fn first_index(&self) -> Result<Index, StorageError>;

    /// The index of the last durable entry (the compaction point if the log is empty).
    fn last_index(&self) -> Result<Index, StorageError>;

    /// The latest durable snapshot, if any. Once the log is compacted, a snapshot covering at least the
    /// compaction point (`first_index() - 1`) must exist: it is what a lagging follower receives.
    fn snapshot(&self) -> Result<Option<Snapshot<C>>, StorageError>;
}

/// One change to one group's log. See the [module docs](self) for the rules each must follow.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp<C: RaftTypeConfig> {
    /// Appends entries with consecutive indexes. If the first index is at or below the last index, every
    /// entry from that index on is dropped first (a follower overwriting a conflicting tail).
    Append(Vec<Entry<C>>),
    /// Replaces the persisted hard state.
    SetHardState(HardState<C>),
    /// Records the membership a new group starts with ([`InitialState::membership`] until a snapshot
    /// replaces it). Only while the group has neither entries nor a snapshot.
    Bootstrap(Membership<C>),
    /// A snapshot received from the leader ([`Ready::snapshot`](crate::Ready::snapshot)): replaces the
    /// whole log. Afterwards `first_index()` is its last index + 1, `term` answers its last term, and
    /// [`LogView::snapshot`] returns it.
    InstallSnapshot(Snapshot<C>),
    /// A snapshot this replica's state machine took at an index the log holds (see
    /// [`RaftCore::compaction_point`](crate::RaftCore::compaction_point)): stored for lagging followers,
    /// the log is kept. Compact the log up to it with [`WriteOp::Compact`].
    SaveSnapshot(Snapshot<C>),
    /// Discards every entry up to and including `upto`; the term of `upto` stays known.
    Compact {
        /// The new compaction point.
        upto: Index,
    },
    /// Removes everything stored for the group: it reads as never written afterwards.
    DeleteGroup,
}

/// A [`WriteOp`] addressed to a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupOp<C: RaftTypeConfig> {
    /// The group the operation changes.
    pub group: C::GroupId,
    /// What changes.
    pub op: WriteOp<C>,
}

/// Changes to any number of groups, applied atomically by [`LogStorage::write`] and made durable by one
/// [`LogStorage::sync`].
///
/// ```
/// # use tickraft::{Entry, EntryPayload, HardState, RaftTypeConfig};
/// # use tickraft::storage::WriteBatch;
/// # #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
/// # struct Kv;
/// # impl RaftTypeConfig for Kv {
/// #     type NodeId = u64; type GroupId = u64; type Data = bytes::Bytes; type Snapshot = bytes::Bytes;
/// # }
/// let mut batch = WriteBatch::<Kv>::new();
/// batch.append(7, vec![Entry { term: 1, index: 1, payload: EntryPayload::Blank }]);
/// batch.set_hard_state(7, HardState { term: 1, vote: Some(2), commit: 0 });
/// batch.append(8, vec![Entry { term: 3, index: 1, payload: EntryPayload::Blank }]);
/// assert_eq!(batch.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WriteBatch<C: RaftTypeConfig> {
    writes: Vec<GroupOp<C>>,
}

impl<C: RaftTypeConfig> Default for WriteBatch<C> {
    fn default() -> Self {
        WriteBatch { writes: Vec::new() }
    }
}

impl<C: RaftTypeConfig> WriteBatch<C> {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an operation on `group`. Operations take effect in the order they are added.
    pub fn push(&mut self, group: C::GroupId, op: WriteOp<C>) -> &mut Self {
        self.writes.push(GroupOp { group, op });
        self
    }

    /// Adds the writes of one group's [`Ready`](crate::Ready) (from
    /// [`Ready::take_writes`](crate::Ready::take_writes)) in the order they must be applied: the snapshot
    /// received from the leader, the entries, the hard state.
    pub fn push_writes(&mut self, group: C::GroupId, writes: Writes<C>) -> &mut Self {
        if let Some(snapshot) = writes.snapshot {
            self.install_snapshot(group, *snapshot);
        }
        self.append(group, writes.entries);
        if let Some(hard_state) = writes.hard_state {
            self.set_hard_state(group, hard_state);
        }
        self
    }

    /// Appends `entries` to `group` (see [`WriteOp::Append`]). An empty list adds nothing.
    pub fn append(&mut self, group: C::GroupId, entries: Vec<Entry<C>>) -> &mut Self {
        if entries.is_empty() {
            return self;
        }
        self.push(group, WriteOp::Append(entries))
    }

    /// Sets the hard state of `group`.
    pub fn set_hard_state(&mut self, group: C::GroupId, hard_state: HardState<C>) -> &mut Self {
        self.push(group, WriteOp::SetHardState(hard_state))
    }

    /// Records the membership a new `group` starts with (see [`WriteOp::Bootstrap`]).
    pub fn bootstrap(&mut self, group: C::GroupId, membership: Membership<C>) -> &mut Self {
        self.push(group, WriteOp::Bootstrap(membership))
    }

    /// Replaces `group`'s log with a snapshot from the leader (see [`WriteOp::InstallSnapshot`]).
    pub fn install_snapshot(&mut self, group: C::GroupId, snapshot: Snapshot<C>) -> &mut Self {
        self.push(group, WriteOp::InstallSnapshot(snapshot))
    }

    /// Stores a snapshot of `group` taken locally (see [`WriteOp::SaveSnapshot`]).
    pub fn save_snapshot(&mut self, group: C::GroupId, snapshot: Snapshot<C>) -> &mut Self {
        self.push(group, WriteOp::SaveSnapshot(snapshot))
    }

    /// Compacts `group`'s log up to and including `upto`.
    pub fn compact(&mut self, group: C::GroupId, upto: Index) -> &mut Self {
        self.push(group, WriteOp::Compact { upto })
    }

    /// Removes everything stored for `group`.
    pub fn delete_group(&mut self, group: C::GroupId) -> &mut Self {
        self.push(group, WriteOp::DeleteGroup)
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// True if the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The operations, in order.
    pub fn writes(&self) -> &[GroupOp<C>] {
        &self.writes
    }

    /// Takes the operations out, in order.
    pub fn into_writes(self) -> Vec<GroupOp<C>> {
        self.writes
    }
}

/// The durable log of every group hosted by a node: batched writes, one sync, and per-group read views.
///
/// A node owns one `LogStorage` and is its only writer (`write` and `sync` take `&mut self`); the core of
/// each group reads through a [`View`](Self::View). See the [module docs](self) for the guarantees every
/// implementation keeps and for the rules a write must follow.
pub trait LogStorage<C: RaftTypeConfig> {
    /// The read handle of one group: cheap to clone (a shared pointer and the group id) and always showing
    /// the latest written state, synced or not.
    type View: LogView<C> + Clone + Send + Sync + 'static;

    /// The read handle of `group`. A group that was never written reads as an empty log.
    fn view(&self, group: C::GroupId) -> Self::View;

    /// Applies `batch` atomically (all of it or, on error, none of it). Visible to every view when this
    /// returns; durable only after the next successful [`sync`](Self::sync).
    fn write(&mut self, batch: WriteBatch<C>) -> Result<(), StorageError>;

    /// Makes every batch written so far durable. One call covers all groups.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// The metadata of the snapshot stored for `group`, if any (without reading its data).
    fn snapshot_meta(&self, group: C::GroupId) -> Result<Option<SnapshotMeta<C>>, StorageError>;

    /// Every group that has anything stored, in ascending order: the groups a node hosts after a restart.
    fn groups(&self) -> Result<Vec<C::GroupId>, StorageError>;
}

/// What a state machine has applied: reported on open so that nothing is applied twice after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedState<C: RaftTypeConfig> {
    /// The last entry applied (index 0, term 0 if none).
    pub applied: LogId,
    /// The membership in force at `applied`.
    pub membership: Membership<C>,
}

impl<C: RaftTypeConfig> Default for AppliedState<C> {
    fn default() -> Self {
        AppliedState {
            applied: LogId::default(),
            membership: Membership::default(),
        }
    }
}

/// The application's state machine for one group: applies committed entries, builds and installs
/// snapshots.
///
/// Guarantees an implementation keeps:
///
/// - **Exactly once, in order.** [`apply`](Self::apply) receives committed entries in log order, starting
///   right after the applied index. Entries that do not continue the applied index exactly (a gap, or
///   entries already applied) are rejected with [`StorageError::InvalidWrite`] and nothing is applied.
/// - **One response per entry.** `apply` returns exactly one [`Response`](Self::Response) per entry, in
///   order, including blank and membership entries (for which a machine typically returns a unit-like
///   response). A membership entry changes the membership reported by [`applied_state`](Self::applied_state).
/// - **Applied index survives with the effects.** A durable machine persists its applied index atomically
///   with the effects of the entries, so that [`applied_state`](Self::applied_state) on open never reports
///   an entry as applied whose effect was lost, nor loses one whose effect was kept. A machine that keeps
///   nothing durable reports index 0 on open (or the snapshot it was restored from).
/// - **Deterministic.** The same entries applied to the same state give the same state and responses on
///   every replica; a command the machine cannot understand yields a response saying so, not an error,
///   because every replica must move past it alike. Errors are for local failures (I/O).
/// - **Typed errors, never panics.**
#[async_trait]
pub trait StateMachine<C: RaftTypeConfig>: Send {
    /// What applying one entry returns to the client that proposed it.
    type Response: Send + 'static;

    /// The last applied entry and the membership in force there. The caller starts the core with
    /// `applied.index`, so that nothing is applied twice.
    async fn applied_state(&mut self) -> Result<AppliedState<C>, StorageError>;

    /// Applies committed entries (consecutive indexes starting at `applied.index + 1`), returning one
    /// response per entry, in order.
    async fn apply(&mut self, entries: &[Entry<C>]) -> Result<Vec<Self::Response>, StorageError>;

    /// A snapshot of the state as of the applied index. The runtime replaces the snapshot's membership
    /// with the one the core knows to be in force at that index (which includes the bootstrap
    /// configuration, never carried by a log entry), so a machine need not track membership exactly.
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError>;

    /// Replaces the whole state with `snapshot`; the applied state becomes its metadata.
    async fn install_snapshot(&mut self, snapshot: Snapshot<C>) -> Result<(), StorageError>;
}
