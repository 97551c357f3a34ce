//! The combined Ready of many groups: one set of per-node batches, one storage write batch, per-group
//! apply lists; with the same durability split and token as a single core's Ready.

use crate::groups::batch::NodeBatch;
use crate::ready::{Persisted, ReadId, ReadState, SoftState, Writes};
use crate::types::{Entry, RaftTypeConfig};

/// The writes of one group inside a [`GroupsReady`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupWrite<C: RaftTypeConfig> {
    pub group: C::GroupId,
    pub writes: Writes<C>,
}

/// What one group must apply once the cycle's writes are durable.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupApply<C: RaftTypeConfig> {
    pub group: C::GroupId,
    /// Committed entries, in order.
    pub committed: Vec<Entry<C>>,
    /// Reads to serve once `committed` is applied.
    pub read_states: Vec<ReadState>,
    /// Reads that will never be served here (leadership lost).
    pub aborted_reads: Vec<ReadId>,
}

/// The work of one cycle of [`Groups`](crate::groups::Groups).
///
/// 1. Send [`take_batches`](Self::take_batches) (leaders' appends and heartbeats, one batch per node).
/// 2. Write every [`writes`](Self::writes) entry in **one** storage batch; sync it if
///    [`must_sync`](Self::must_sync).
/// 3. [`persisted`](Self::persisted) consumes this and releases the rest.
#[derive(Debug)]
#[must_use = "a GroupsReady must be persisted and advanced, or every group stalls"]
pub struct GroupsReady<C: RaftTypeConfig> {
    pub(crate) batches: Vec<NodeBatch<C>>,
    pub(crate) writes: Vec<GroupWrite<C>>,
    pub(crate) must_sync: bool,
    pub(crate) soft_states: Vec<(C::GroupId, SoftState<C>)>,
    pub(crate) tokens: Vec<(usize, C::GroupId, Persisted<C>)>,
    pub(crate) id: u64,
    pub(crate) from: C::NodeId,
    pub(crate) incarnation: u64,
}

impl<C: RaftTypeConfig> GroupsReady<C> {
    /// Batches that may be sent before the writes are durable.
    pub fn take_batches(&mut self) -> Vec<NodeBatch<C>> {
        std::mem::take(&mut self.batches)
    }

    /// The writes of every group, to make durable together.
    pub fn writes(&self) -> &[GroupWrite<C>] {
        &self.writes
    }

    /// Moves the writes out (they are not needed after this).
    pub fn take_writes(&mut self) -> Vec<GroupWrite<C>> {
        std::mem::take(&mut self.writes)
    }

    /// True if the writes must be synced before [`persisted`](Self::persisted).
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }

    /// Groups whose role or leader changed.
    pub fn soft_states(&self) -> &[(C::GroupId, SoftState<C>)] {
        &self.soft_states
    }

    /// Call once the writes are durable. Releases the batches that vouch for durable state and the
    /// entries to apply.
    pub fn persisted(mut self) -> GroupsPersisted<C> {
        let mut batches: Vec<NodeBatch<C>> = std::mem::take(&mut self.batches);
        let mut applies = Vec::with_capacity(self.tokens.len());
        let touched = self.tokens.len();
        for (_, group, token) in self.tokens.iter_mut() {
            for envelope in token.take_messages() {
                let batch = match batches.iter_mut().position(|b| b.to == envelope.to) {
                    Some(pos) => &mut batches[pos],
                    None => {
                        batches.push(NodeBatch::new(self.from, envelope.to, self.incarnation));
                        let last = batches.len() - 1;
                        &mut batches[last]
                    }
                };
                if batch.messages.capacity() == 0 {
                    batch.messages.reserve(touched);
                }
                batch.push(*group, envelope.message);
            }
            let committed = token.take_committed();
            let read_states = token.read_states().to_vec();
            let aborted_reads = token.aborted_reads().to_vec();
            if !committed.is_empty() || !read_states.is_empty() || !aborted_reads.is_empty() {
                applies.push(GroupApply {
                    group: *group,
                    committed,
                    read_states,
                    aborted_reads,
                });
            }
        }
        GroupsPersisted {
            id: self.id,
            batches,
            applies,
            tokens: self.tokens,
        }
    }
}

/// The part of a [`GroupsReady`] released once its writes are durable; the token for
/// [`Groups::advance`](crate::groups::Groups::advance).
#[derive(Debug)]
#[must_use = "pass GroupsPersisted to Groups::advance, or every group stalls"]
pub struct GroupsPersisted<C: RaftTypeConfig> {
    pub(crate) id: u64,
    pub(crate) batches: Vec<NodeBatch<C>>,
    pub(crate) applies: Vec<GroupApply<C>>,
    pub(crate) tokens: Vec<(usize, C::GroupId, Persisted<C>)>,
}

impl<C: RaftTypeConfig> GroupsPersisted<C> {
    /// Batches to send now: vote answers, append acknowledgements, heartbeat answers.
    pub fn take_batches(&mut self) -> Vec<NodeBatch<C>> {
        std::mem::take(&mut self.batches)
    }

    /// Per group: committed entries to apply and reads to serve after them.
    pub fn applies(&self) -> &[GroupApply<C>] {
        &self.applies
    }

    /// Moves the apply lists out (for an apply task); `advance` still records them as applied.
    pub fn take_applies(&mut self) -> Vec<GroupApply<C>> {
        std::mem::take(&mut self.applies)
    }
}
