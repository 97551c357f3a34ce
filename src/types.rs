//! The vocabulary of the protocol: the application's type configuration, log entries, hard state and
//! membership.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A Raft term. Terms start at 0 (no leader has ever been elected) and only grow.
pub type Term = u64;

/// A position in the replicated log. Index 0 is the empty prefix; the first real entry has index 1.
pub type Index = u64;

/// The types an application fixes once for all of its groups.
///
/// The marker type itself carries no data; it only names the associated types. Implement it on an empty
/// struct:
///
/// ```
/// use tickraft::RaftTypeConfig;
///
/// #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
/// struct Kv;
///
/// impl RaftTypeConfig for Kv {
///     type NodeId = u64;
///     type GroupId = u64;
///     // `Bytes` is cheap to clone: every message that carries an entry shares one buffer.
///     type Data = bytes::Bytes;
///     type Snapshot = bytes::Bytes;
/// }
/// ```
pub trait RaftTypeConfig:
    Sized + Copy + Clone + Debug + Default + Eq + Ord + Hash + Send + Sync + 'static
{
    /// Identifies a node (a process hosting replicas).
    type NodeId: Copy + Ord + Hash + Debug + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// Identifies a Raft group (a shard) in a Multi-Raft deployment.
    type GroupId: Copy + Ord + Hash + Debug + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// The application's command carried by a normal log entry. Cloning should be cheap (reference-counted),
    /// because an entry is shared by every append message that carries it.
    type Data: Payload;
    /// The application's snapshot data. It travels to followers in byte chunks, so it converts to and
    /// from bytes; `bytes::Bytes` and `Vec<u8>` do.
    type Snapshot: SnapshotData;
}

/// Snapshot data: converts to bytes for sending in chunks and back on the receiving side.
pub trait SnapshotData: Clone + Debug + PartialEq + Send + Sync + 'static {
    /// The bytes to send. Called once per chunk sent, so it should be cheap (a reference-counted view).
    fn to_bytes(&self) -> bytes::Bytes;
    /// Rebuilds the snapshot from the bytes received.
    fn from_bytes(bytes: bytes::Bytes) -> Self;
}

impl SnapshotData for bytes::Bytes {
    fn to_bytes(&self) -> bytes::Bytes {
        self.clone()
    }
    fn from_bytes(bytes: bytes::Bytes) -> Self {
        bytes
    }
}

impl SnapshotData for Vec<u8> {
    fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(self)
    }
    fn from_bytes(bytes: bytes::Bytes) -> Self {
        bytes.to_vec()
    }
}

/// A log entry payload: anything cheaply clonable whose encoded size can be estimated for flow control.
pub trait Payload:
    Clone + Debug + PartialEq + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// The number of bytes this payload contributes to a message; used for the per-message and
    /// uncommitted-bytes budgets. An estimate is fine; it must not be expensive to compute.
    fn size(&self) -> usize;
}

impl Payload for bytes::Bytes {
    fn size(&self) -> usize {
        self.len()
    }
}

impl Payload for Vec<u8> {
    fn size(&self) -> usize {
        self.len()
    }
}

impl Payload for String {
    fn size(&self) -> usize {
        self.len()
    }
}

impl Payload for u64 {
    fn size(&self) -> usize {
        8
    }
}

/// The identity of a log entry: the term it was created in and its index.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId {
    pub term: Term,
    pub index: Index,
}

impl LogId {
    pub const fn new(term: Term, index: Index) -> Self {
        LogId { term, index }
    }
}

/// What a log entry carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum EntryPayload<C: RaftTypeConfig> {
    /// Appended by a new leader at the start of its term, so that it can commit entries of earlier terms
    /// (Raft §5.4.2).
    Blank,
    /// An application command.
    Normal(C::Data),
    /// A new cluster membership.
    Membership(Membership<C>),
}

/// One entry of the replicated log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Entry<C: RaftTypeConfig> {
    pub term: Term,
    pub index: Index,
    pub payload: EntryPayload<C>,
}

/// The fixed per-entry overhead counted by the byte budgets, on top of the payload's own size.
pub const ENTRY_OVERHEAD_BYTES: usize = 24;

impl<C: RaftTypeConfig> Entry<C> {
    pub fn log_id(&self) -> LogId {
        LogId::new(self.term, self.index)
    }

    /// The approximate encoded size of this entry, used by flow control.
    pub fn size(&self) -> usize {
        ENTRY_OVERHEAD_BYTES
            + match &self.payload {
                EntryPayload::Blank => 0,
                EntryPayload::Normal(data) => data.size(),
                EntryPayload::Membership(m) => {
                    8 * (m.voters.len() + m.outgoing_voters.len() + m.learners.len())
                }
            }
    }
}

/// The state that must be durable before a node answers a vote or acknowledges an append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct HardState<C: RaftTypeConfig> {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<C::NodeId>,
    /// The highest index known to be committed.
    pub commit: Index,
}

impl<C: RaftTypeConfig> Default for HardState<C> {
    fn default() -> Self {
        HardState {
            term: 0,
            vote: None,
            commit: 0,
        }
    }
}

/// Who takes part in a group.
///
/// `voters` is the (incoming) voting configuration. While a joint-consensus change is in progress,
/// `outgoing_voters` holds the previous voting configuration and every decision needs a majority of both;
/// otherwise it is empty. Learners receive the log but never vote and never count toward a quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Membership<C: RaftTypeConfig> {
    pub voters: BTreeSet<C::NodeId>,
    pub outgoing_voters: BTreeSet<C::NodeId>,
    pub learners: BTreeSet<C::NodeId>,
}

impl<C: RaftTypeConfig> Default for Membership<C> {
    fn default() -> Self {
        Membership {
            voters: BTreeSet::new(),
            outgoing_voters: BTreeSet::new(),
            learners: BTreeSet::new(),
        }
    }
}

impl<C: RaftTypeConfig> Membership<C> {
    /// A simple (non-joint) configuration of voters without learners.
    pub fn new_voters(voters: impl IntoIterator<Item = C::NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            ..Default::default()
        }
    }

    /// True while a joint-consensus change is in progress.
    pub fn is_joint(&self) -> bool {
        !self.outgoing_voters.is_empty()
    }

    /// True if `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: C::NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing_voters.contains(&id)
    }

    /// True if `id` is a learner.
    pub fn is_learner(&self, id: C::NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Every node that receives the log: voters of both halves and learners, in ascending order.
    pub fn replicas(&self) -> BTreeSet<C::NodeId> {
        self.voters
            .iter()
            .chain(self.outgoing_voters.iter())
            .chain(self.learners.iter())
            .copied()
            .collect()
    }

    /// True if `id` is any kind of member.
    pub fn contains(&self, id: C::NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }
}

/// What a snapshot covers: the log up to and including `last`, and the membership in force there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SnapshotMeta<C: RaftTypeConfig> {
    pub last: LogId,
    pub membership: Membership<C>,
}

/// A snapshot of the state machine with the metadata of the log prefix it replaces.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot<C: RaftTypeConfig> {
    pub meta: SnapshotMeta<C>,
    pub data: C::Snapshot,
}

/// The role a replica plays in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[cfg(test)]
pub(crate) mod test_config {
    use super::RaftTypeConfig;

    /// The type configuration used by the crate's unit tests.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct T;

    impl RaftTypeConfig for T {
        type NodeId = u64;
        type GroupId = u64;
        type Data = bytes::Bytes;
        type Snapshot = bytes::Bytes;
    }
}
