//! The tokio runtime: one driver per node hosting a [`Groups`](crate::groups::Groups), and the async client
//! handles ([`NodeHandle`], [`RaftNode`]) that applications call.
//!
//! The driver owns everything that does I/O for the node: the [`LogStorage`], the state machines (one per
//! group, made by a [`StateMachineFactory`]) and the [`Network`]. It runs on its own thread, so that a
//! storage sync never stalls the application's tasks. Every cycle it:
//!
//! 1. ticks, steps inbound batches and takes client requests (a bounded queue: a full queue answers
//!    [`ClientError::Overloaded`]);
//! 2. takes one [`GroupsReady`](crate::groups::GroupsReady): sends the leaders' batches, writes every
//!    group's entries and hard state in **one** storage batch and syncs it **once**;
//! 3. sends the acknowledgements, applies committed entries through each group's state machine, resolves
//!    the proposals and reads waiting on them, and advances.
//!
//! The core stays free of all this: the runtime is a feature (`runtime`, on by default).

mod driver;
mod handle;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::config::Config;
use crate::error::{Error, StorageError};
use crate::groups::{GroupsConfig, GroupsError, NodeBatch};
use crate::network::Inbound;
use crate::storage::StateMachine;
use crate::types::RaftTypeConfig;

pub use self::driver::{start_node, InboundReceiver, Node, NodeMetrics};
pub use self::handle::{GroupStatus, LeaderChange, NodeHandle, RaftNode};

/// Settings of a node's driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct NodeConfig {
    /// The length of one tick. Election timeouts and heartbeats are counted in ticks (see `raft`).
    #[serde(with = "duration_millis")]
    pub tick: Duration,
    /// Per-group Raft settings, shared by every group of the node.
    pub raft: Config,
    /// Multi-Raft driver settings (hibernation, liveness).
    pub groups: GroupsConfig,
    /// Client requests waiting for the driver; beyond this, requests fail with `Overloaded`.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub max_pending_requests: usize,
    /// A proposal or read not answered within this many ticks fails with `Timeout`.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub request_timeout_ticks: u32,
    /// A group takes a snapshot and compacts its log once this many entries were applied since the last
    /// snapshot.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub snapshot_every_entries: u64,
    /// Seed of the election jitter (mixed with node and group ids).
    pub seed: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            tick: Duration::from_millis(10),
            raft: Config::default(),
            groups: GroupsConfig::default(),
            max_pending_requests: 65_536,
            request_timeout_ticks: 500,
            snapshot_every_entries: 10_000,
            seed: 0x7469_636b,
        }
    }
}

mod duration_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Makes the state machine of each group hosted by a node.
pub trait StateMachineFactory<C: RaftTypeConfig>: Send + 'static {
    type Machine: StateMachine<C> + 'static;

    /// The state machine of `group`, opened from wherever the application keeps it. It reports its
    /// applied state, so that nothing is applied twice.
    fn open(&mut self, group: C::GroupId) -> Result<Self::Machine, StorageError>;
}

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError<C: RaftTypeConfig> {
    /// This node does not lead the group; `leader` is the node that does, if known. Retry there.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<C::NodeId> },
    /// No answer within the request timeout. A proposal may or may not have been applied.
    #[error("request timed out")]
    Timeout,
    /// The node is shutting down; a proposal may or may not have been applied.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Too many requests are waiting; retry later.
    #[error("too many pending requests")]
    Overloaded,
    /// The node hosts no such group.
    #[error("no group {group:?} on this node")]
    GroupNotFound { group: C::GroupId },
    /// The group already exists on this node.
    #[error("group {group:?} already exists on this node")]
    GroupExists { group: C::GroupId },
    /// The proposal's log slot was taken by another leader's entry: it was not applied. Retry.
    #[error("the proposal was dropped by a change of leader; it was not applied")]
    Dropped,
    /// The group refused the request (an invalid membership change, a transfer in progress, ...).
    #[error(transparent)]
    Raft(Error<C>),
    /// Storage or the state machine failed; the node stops.
    #[error(transparent)]
    Storage(StorageError),
    /// The request was refused for another reason.
    #[error("{0}")]
    Other(String),
}

impl<C: RaftTypeConfig> ClientError<C> {
    pub(crate) fn from_groups(e: GroupsError<C>) -> Self {
        match e {
            GroupsError::GroupNotFound { group } => ClientError::GroupNotFound { group },
            GroupsError::Group {
                error: Error::NotLeader { leader },
                ..
            } => ClientError::NotLeader { leader },
            GroupsError::Group { error, .. } => ClientError::Raft(error),
            other => ClientError::Other(other.to_string()),
        }
    }
}

/// Where a transport hands inbound batches to a node's driver (implements [`Inbound`]). Bounded: when the
/// driver falls behind, batches are dropped, which Raft tolerates.
#[derive(Clone)]
pub struct InboundQueue<C: RaftTypeConfig> {
    tx: tokio::sync::mpsc::Sender<driver::Inbox<C>>,
}

impl<C: RaftTypeConfig> Inbound<C> for InboundQueue<C> {
    fn deliver(&self, batch: NodeBatch<C>) {
        if self.tx.try_send(driver::Inbox::Batch(batch)).is_err() {
            tracing::debug!("inbound queue full or closed; batch dropped");
        }
    }

    fn unreachable(&self, node: C::NodeId) {
        let _ = self.tx.try_send(driver::Inbox::Unreachable(node));
    }
}
