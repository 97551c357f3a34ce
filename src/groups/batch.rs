//! What travels between two nodes: one batch per destination per cycle, carrying the messages of every
//! group, with heartbeats and their answers coalesced into compact tuples.

use serde::{Deserialize, Serialize};

use crate::message::{Heartbeat, HeartbeatResponse, Message, Rpc};
use crate::types::{Index, RaftTypeConfig, Term};

/// Everything one node sends another in one cycle. An empty batch still says "I am alive": node-level
/// liveness rides on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct NodeBatch<C: RaftTypeConfig> {
    pub from: C::NodeId,
    pub to: C::NodeId,
    /// Changes every time the sender restarts, so that a restart is told apart from a short silence.
    pub incarnation: u64,
    /// Messages other than heartbeats, each for one group.
    pub messages: Vec<GroupMessage<C>>,
    /// Heartbeats of every group the sender leads with a replica on the receiver.
    pub heartbeats: Vec<GroupHeartbeat<C>>,
    /// Answers to heartbeats.
    pub heartbeat_responses: Vec<GroupHeartbeatResponse<C>>,
}

impl<C: RaftTypeConfig> NodeBatch<C> {
    pub fn new(from: C::NodeId, to: C::NodeId, incarnation: u64) -> Self {
        NodeBatch {
            from,
            to,
            incarnation,
            messages: Vec::new(),
            heartbeats: Vec::new(),
            heartbeat_responses: Vec::new(),
        }
    }

    /// The number of group messages carried (a coalesced heartbeat counts once per group).
    pub fn len(&self) -> usize {
        self.messages.len() + self.heartbeats.len() + self.heartbeat_responses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a message of `group`, coalescing heartbeats.
    pub(crate) fn push(&mut self, group: C::GroupId, message: Message<C>) {
        match message.rpc {
            Rpc::Heartbeat(hb) => self.heartbeats.push(GroupHeartbeat {
                group,
                term: message.term,
                commit: hb.commit,
                read_seq: hb.read_seq,
            }),
            Rpc::HeartbeatResponse(resp) => self.heartbeat_responses.push(GroupHeartbeatResponse {
                group,
                term: message.term,
                read_seq: resp.read_seq,
            }),
            rpc => self.messages.push(GroupMessage {
                group,
                message: Message {
                    term: message.term,
                    rpc,
                },
            }),
        }
    }

    /// Every message in the batch, heartbeats expanded back into messages.
    pub(crate) fn into_messages(self) -> impl Iterator<Item = (C::GroupId, Message<C>)> {
        let heartbeats = self.heartbeats.into_iter().map(|hb| {
            (
                hb.group,
                Message {
                    term: hb.term,
                    rpc: Rpc::Heartbeat(Heartbeat {
                        commit: hb.commit,
                        read_seq: hb.read_seq,
                    }),
                },
            )
        });
        let responses = self.heartbeat_responses.into_iter().map(|r| {
            (
                r.group,
                Message {
                    term: r.term,
                    rpc: Rpc::HeartbeatResponse(HeartbeatResponse {
                        read_seq: r.read_seq,
                    }),
                },
            )
        });
        self.messages
            .into_iter()
            .map(|m| (m.group, m.message))
            .chain(heartbeats)
            .chain(responses)
    }
}

/// A message for one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct GroupMessage<C: RaftTypeConfig> {
    pub group: C::GroupId,
    pub message: Message<C>,
}

/// A heartbeat of one group, as a tuple inside a coalesced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct GroupHeartbeat<C: RaftTypeConfig> {
    pub group: C::GroupId,
    pub term: Term,
    pub commit: Index,
    pub read_seq: u64,
}

/// The answer to a [`GroupHeartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct GroupHeartbeatResponse<C: RaftTypeConfig> {
    pub group: C::GroupId,
    pub term: Term,
    pub read_seq: u64,
}
