//! Typed errors. Input from the network or from disk never panics the library: it ends up here.

use crate::types::{Index, RaftTypeConfig, Term};

/// A configuration rule was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: `{field}` {rule}")]
pub struct ConfigError {
    field: String,
    rule: String,
}

impl ConfigError {
    pub(crate) fn new(field: &str, rule: String) -> Self {
        ConfigError {
            field: field.to_string(),
            rule,
        }
    }

    /// The name of the offending field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The rule the field broke, in words.
    pub fn rule(&self) -> &str {
        &self.rule
    }
}

/// An error reading or writing the log, or applying to the state machine.
///
/// Backends never panic on bad input or bad data: every failure ends up here. Group ids are carried as
/// their `Debug` rendering so that the error stays independent of the application's type configuration.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The entry was discarded by log compaction; only a snapshot covers it now.
    #[error("log index {index} is compacted")]
    Compacted { index: Index },
    /// The entry is past the end of the log.
    #[error("log index {index} is not available (past the last index)")]
    Unavailable { index: Index },
    /// A write would leave a gap, break the log's order or contradict what is already durable (for
    /// example, overwrite a committed entry). Nothing of the batch that carried it was applied.
    #[error("invalid write to group {group}: {reason}")]
    InvalidWrite {
        /// The group's id, formatted with `Debug`.
        group: String,
        reason: String,
    },
    /// Stored data could not be decoded or violates an invariant (a missing entry, a record under the wrong
    /// key). Never silently skipped: the backend refuses to guess.
    #[error("corrupt storage in group {group}{}: {reason}", at_index(.index))]
    Corrupt {
        /// The group's id, formatted with `Debug` (or a description of the raw key when the key itself is
        /// unreadable).
        group: String,
        /// The log index of the bad record, if the record is a log entry.
        index: Option<Index>,
        reason: String,
    },
    /// The backend failed (an I/O error, a closed database, a poisoned lock).
    #[error("storage backend error: {reason}")]
    Backend { reason: String },
}

fn at_index(index: &Option<Index>) -> String {
    match index {
        Some(index) => format!(" at index {index}"),
        None => String::new(),
    }
}

impl StorageError {
    /// An [`InvalidWrite`](StorageError::InvalidWrite) for `group`.
    pub fn invalid_write(group: &impl std::fmt::Debug, reason: impl Into<String>) -> Self {
        StorageError::InvalidWrite {
            group: format!("{group:?}"),
            reason: reason.into(),
        }
    }

    /// A [`Corrupt`](StorageError::Corrupt) error for the record of `group` at `index` (`None` for the
    /// group's metadata).
    pub fn corrupt(
        group: &impl std::fmt::Debug,
        index: Option<Index>,
        reason: impl Into<String>,
    ) -> Self {
        StorageError::Corrupt {
            group: format!("{group:?}"),
            index,
            reason: reason.into(),
        }
    }

    /// A [`Backend`](StorageError::Backend) error from anything displayable.
    pub fn backend(reason: impl std::fmt::Display) -> Self {
        StorageError::Backend {
            reason: reason.to_string(),
        }
    }
}

/// Errors returned by [`RaftCore`](crate::RaftCore).
#[derive(Debug, thiserror::Error)]
pub enum Error<C: RaftTypeConfig> {
    /// Only the leader accepts proposals and reads. `leader` is the leader this replica knows of, if any.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<C::NodeId> },
    /// The leader is handing leadership over and refuses new proposals until the transfer ends.
    #[error("leadership transfer in progress")]
    LeadershipTransferInProgress,
    /// The leader holds more uncommitted bytes than `max_uncommitted_bytes`; retry once entries commit.
    #[error("too many uncommitted bytes (limit {limit})")]
    UncommittedLimit { limit: usize },
    /// A membership change is already in flight (an uncommitted configuration, or a joint one not yet
    /// left). Retry once it completes.
    #[error("a membership change is already in progress")]
    MembershipChangeInProgress,
    /// The requested membership change is not valid.
    #[error("invalid membership change: {reason}")]
    InvalidMembershipChange { reason: String },
    /// A new leader must commit an entry of its own term before changing membership; retry shortly.
    #[error("the leader has not yet committed an entry of its term")]
    LeaderNotReady,
    /// A snapshot received from the leader is waiting to be installed; retry once it is.
    #[error("a snapshot from the leader is being installed")]
    SnapshotInstallPending,
    /// Leadership can only go to a voter of the current configuration.
    #[error("cannot transfer leadership to {target:?}: not a voter")]
    InvalidTransferTarget { target: C::NodeId },
    /// A message came from a node that is not a member of the group.
    #[error("message from unknown node {from:?}")]
    UnknownSender { from: C::NodeId },
    /// A message broke the protocol in a way an honest peer cannot (for example, a leader of the current
    /// term contradicting an entry this replica already knows to be committed). The message was dropped.
    #[error("protocol violation from {from:?} at term {term}: {reason}")]
    ProtocolViolation {
        from: C::NodeId,
        term: Term,
        reason: String,
    },
    /// `advance` was given a token from another Ready, or no Ready was outstanding.
    #[error("advance called with a token that does not belong to the outstanding Ready")]
    StaleAdvance,
    /// The log storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The persisted state is inconsistent (for example, a commit index past the last entry).
    #[error("inconsistent persisted state: {reason}")]
    CorruptState { reason: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}
