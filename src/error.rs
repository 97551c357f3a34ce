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

/// An error reading or writing the log.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The entry was discarded by log compaction; only a snapshot covers it now.
    #[error("log index {index} is compacted")]
    Compacted { index: Index },
    /// The entry is past the end of the log.
    #[error("log index {index} is not available (past the last index)")]
    Unavailable { index: Index },
    /// A write would leave a gap or break the log's order.
    #[error("invalid log write: {reason}")]
    InvalidWrite { reason: String },
    /// Stored data could not be decoded or violates an invariant. Never silently skipped.
    #[error("corrupt storage: {reason}")]
    Corrupt { reason: String },
    /// The backend failed (an I/O error, a closed database).
    #[error("storage backend error: {reason}")]
    Backend { reason: String },
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
