//! How the core reads the log: a synchronous, read-only view of what is durable.
//!
//! The core never writes storage itself. It hands entries and hard state to the caller in a
//! [`Ready`](crate::Ready); the caller persists them and then calls
//! [`RaftCore::advance`](crate::RaftCore::advance). From then on the view must return what was written.

use crate::error::StorageError;
use crate::types::{Entry, HardState, Index, Membership, RaftTypeConfig, Snapshot, Term};

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
