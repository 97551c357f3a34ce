//! The messages replicas exchange: one variant per RPC and per response, no overloaded fields.

use serde::{Deserialize, Serialize};

use bytes::Bytes;

use crate::types::{Entry, Index, LogId, RaftTypeConfig, SnapshotMeta, Term};

/// A message between two replicas of one group. Every message carries the sender's term; the rest depends
/// on the RPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Message<C: RaftTypeConfig> {
    /// The sender's current term, except in pre-vote requests (the term the sender would campaign in) and
    /// granted pre-vote responses (the term of the request they answer).
    pub term: Term,
    pub rpc: Rpc<C>,
}

/// The body of a [`Message`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Rpc<C: RaftTypeConfig> {
    VoteRequest(VoteRequest),
    VoteResponse(VoteResponse),
    AppendRequest(AppendRequest<C>),
    AppendResponse(AppendResponse),
    Heartbeat(Heartbeat),
    HeartbeatResponse(HeartbeatResponse),
    /// Sent by a leader transferring leadership: campaign now, ignoring the election timeout.
    TimeoutNow,
    /// Boxed: rare and large, it would make every message larger.
    InstallSnapshot(Box<SnapshotChunk<C>>),
    SnapshotResponse(SnapshotResponse),
}

/// One chunk of a snapshot sent to a follower whose next entry was compacted away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SnapshotChunk<C: RaftTypeConfig> {
    pub meta: SnapshotMeta<C>,
    /// Where `data` starts in the snapshot's bytes.
    pub offset: u64,
    pub data: Bytes,
    /// The snapshot's total length in bytes.
    pub total_len: u64,
    /// CRC-32 of the whole snapshot, checked once every byte has arrived.
    pub checksum: u32,
}

/// A follower's answer to a [`SnapshotChunk`]. Installation itself is acknowledged with
/// [`AppendResponse::Accepted`] once the snapshot is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotResponse {
    /// The snapshot this answers (its last log id).
    pub snapshot: LogId,
    /// The offset of the chunk this answers. The leader keeps one chunk in flight and ignores answers to
    /// any other (duplicates, answers to resent copies): otherwise every extra answer would start a chain
    /// of chunk and answer that never ends.
    pub chunk_offset: u64,
    pub result: SnapshotProgress,
}

/// How a snapshot transfer stands on the follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotProgress {
    /// Send from this offset next (also the answer to a chunk that arrived out of order: resume here).
    Continue { next_offset: u64 },
    /// Every byte arrived but the checksum did not match: start again from offset 0.
    ChecksumMismatch,
}

/// RequestVote (Raft §5.2), also used for the pre-vote round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// The candidate's last log entry, for the up-to-date check (§5.4.1).
    pub last_log: LogId,
    /// A pre-vote asks "would you vote for me?" without changing anyone's term.
    pub pre_vote: bool,
    /// Set when a leader transfer triggered the campaign: voters then ignore their leader lease.
    pub leader_transfer: bool,
}

/// The answer to a [`VoteRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResponse {
    pub pre_vote: bool,
    pub granted: bool,
}

/// AppendEntries (Raft §5.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct AppendRequest<C: RaftTypeConfig> {
    /// The entry just before `entries`; the follower accepts only if its log holds it.
    pub prev: LogId,
    pub entries: Vec<Entry<C>>,
    /// The leader's commit index.
    pub commit: Index,
}

/// The answer to an [`AppendRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to and including `match_index`, durably.
    Accepted { match_index: Index },
    /// The follower's log does not hold `rejected` (the request's `prev`). `hint` is the follower's
    /// best guess of where the logs agree: the last entry at or before `rejected.index` whose term is at
    /// most `rejected.term`, so that the leader skips a whole conflicting term in one round trip.
    Rejected { rejected: LogId, hint: LogId },
}

/// A leader's periodic heartbeat, which also confirms leadership for reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The commit index the follower may adopt: the leader's commit index capped at the follower's known
    /// match index, so that it never points past entries the follower holds.
    pub commit: Index,
    /// The leader's latest read sequence number; echoed in the response.
    pub read_seq: u64,
}

/// The answer to a [`Heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub read_seq: u64,
}

/// A message addressed to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Envelope<C: RaftTypeConfig> {
    pub to: C::NodeId,
    pub message: Message<C>,
}

impl<C: RaftTypeConfig> Message<C> {
    /// A short name of the RPC, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match &self.rpc {
            Rpc::VoteRequest(v) if v.pre_vote => "PreVoteRequest",
            Rpc::VoteRequest(_) => "VoteRequest",
            Rpc::VoteResponse(v) if v.pre_vote => "PreVoteResponse",
            Rpc::VoteResponse(_) => "VoteResponse",
            Rpc::AppendRequest(_) => "AppendRequest",
            Rpc::AppendResponse(_) => "AppendResponse",
            Rpc::Heartbeat(_) => "Heartbeat",
            Rpc::HeartbeatResponse(_) => "HeartbeatResponse",
            Rpc::TimeoutNow => "TimeoutNow",
            Rpc::InstallSnapshot(_) => "InstallSnapshot",
            Rpc::SnapshotResponse(_) => "SnapshotResponse",
        }
    }
}
