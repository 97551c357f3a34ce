//! The async client side of a node: [`NodeHandle`] (many groups) and [`RaftNode`] (one group).

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::core::{MembershipChange, Status};
use crate::runtime::driver::Command;
use crate::runtime::ClientError;
use crate::storage::StateMachine;
use crate::types::{Membership, RaftTypeConfig, Role, Term};

/// A change of leader of one group, as seen by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderChange<C: RaftTypeConfig> {
    pub group: C::GroupId,
    pub leader: Option<C::NodeId>,
    pub role: Role,
    pub term: Term,
}

/// The state of one group on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus<C: RaftTypeConfig> {
    pub group: C::GroupId,
    pub raft: Status<C>,
    pub membership: Membership<C>,
    pub hibernating: bool,
}

/// A cheap, clonable handle to a running node. Every method is a request to the node's driver.
pub struct NodeHandle<C: RaftTypeConfig, M: StateMachine<C>> {
    pub(crate) node: C::NodeId,
    pub(crate) commands: mpsc::Sender<Command<C, M>>,
    pub(crate) leaders: broadcast::Sender<LeaderChange<C>>,
}

impl<C: RaftTypeConfig, M: StateMachine<C>> Clone for NodeHandle<C, M> {
    fn clone(&self) -> Self {
        NodeHandle {
            node: self.node,
            commands: self.commands.clone(),
            leaders: self.leaders.clone(),
        }
    }
}

impl<C: RaftTypeConfig, M: StateMachine<C> + 'static> NodeHandle<C, M> {
    pub fn node_id(&self) -> C::NodeId {
        self.node
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ClientError<C>>>) -> Command<C, M>,
    ) -> Result<T, ClientError<C>> {
        let (tx, rx) = oneshot::channel();
        self.commands.try_send(make(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ClientError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => ClientError::ShuttingDown,
        })?;
        rx.await.map_err(|_| ClientError::ShuttingDown)?
    }

    /// Proposes `command` to `group` and returns the state machine's response once it is applied on this
    /// node (which must lead the group: otherwise `NotLeader` with a hint).
    pub async fn propose(
        &self,
        group: C::GroupId,
        command: C::Data,
    ) -> Result<M::Response, ClientError<C>> {
        self.request(|reply| Command::Propose {
            group,
            command,
            reply,
        })
        .await
    }

    /// A linearizable read: once the leader has confirmed it still leads and its state machine has caught
    /// up with the commit index at the time of the call, runs `query` on the state machine.
    pub async fn read<R: Send + 'static>(
        &self,
        group: C::GroupId,
        query: impl FnOnce(&M) -> R + Send + 'static,
    ) -> Result<R, ClientError<C>> {
        self.request(|reply| Command::Read {
            group,
            query: Box::new(move |machine: Result<&M, ClientError<C>>| {
                let _ = reply.send(machine.map(query));
            }),
        })
        .await
    }

    /// Creates a replica of `group` on this node. On a new group, `membership` is the initial
    /// configuration (every initial member must be created with the same one); a group that exists in
    /// storage restarts from there and ignores it. A replica *joining* an existing group is created with
    /// `Membership::default()`: it does not campaign, and learns the configuration from the leader's
    /// snapshot or log once the leader adds it (`MembershipChange::AddLearner`, then `AddVoter`).
    pub async fn create_group(
        &self,
        group: C::GroupId,
        membership: Membership<C>,
    ) -> Result<(), ClientError<C>> {
        self.request(|reply| Command::CreateGroup {
            group,
            membership,
            reply,
        })
        .await
    }

    /// Removes this node's replica of `group` and deletes its log. Remove the node from the group's
    /// membership first.
    pub async fn remove_group(&self, group: C::GroupId) -> Result<(), ClientError<C>> {
        self.request(|reply| Command::RemoveGroup { group, reply })
            .await
    }

    /// Changes the membership of `group`; resolves once the change is applied here (for a joint change,
    /// once the joint configuration is; the leader then leaves it on its own).
    pub async fn change_membership(
        &self,
        group: C::GroupId,
        change: MembershipChange<C>,
    ) -> Result<(), ClientError<C>> {
        self.request(|reply| Command::ChangeMembership {
            group,
            change,
            reply,
        })
        .await
    }

    /// Hands leadership of `group` to `target`. Resolves when the transfer has started; watch
    /// [`leader_changes`](Self::leader_changes) for its outcome.
    pub async fn transfer_leadership(
        &self,
        group: C::GroupId,
        target: C::NodeId,
    ) -> Result<(), ClientError<C>> {
        self.request(|reply| Command::TransferLeadership {
            group,
            target,
            reply,
        })
        .await
    }

    /// The state of `group` on this node.
    pub async fn status(&self, group: C::GroupId) -> Result<GroupStatus<C>, ClientError<C>> {
        self.request(|reply| Command::Status { group, reply }).await
    }

    /// The state of every group on this node.
    pub async fn statuses(&self) -> Result<Vec<GroupStatus<C>>, ClientError<C>> {
        self.request(|reply| Command::Statuses { reply }).await
    }

    /// Accepts batches from `node` and sends it liveness heartbeats from now on: call on every node before
    /// adding a new node to a group (the transport must know its address too).
    pub async fn add_peer(&self, node: C::NodeId) -> Result<(), ClientError<C>> {
        self.request(|reply| Command::AddPeer { node, reply }).await
    }

    /// Stops accepting batches from `node` (after it left every group).
    pub async fn remove_peer(&self, node: C::NodeId) -> Result<(), ClientError<C>> {
        self.request(|reply| Command::RemovePeer { node, reply })
            .await
    }

    /// The driver's counters (entries written, syncs, ...).
    pub async fn metrics(&self) -> Result<crate::runtime::NodeMetrics, ClientError<C>> {
        self.request(|reply| Command::Metrics { reply }).await
    }

    /// Changes of leader or role of the groups on this node, from now on.
    pub fn leader_changes(&self) -> broadcast::Receiver<LeaderChange<C>> {
        self.leaders.subscribe()
    }

    /// Stops the node: requests in flight fail with `ShuttingDown`, storage is synced, the driver thread
    /// exits. Resolves once it has.
    pub async fn shutdown(&self) -> Result<(), ClientError<C>> {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply: tx })
            .await
            .is_err()
        {
            return Ok(()); // already stopped
        }
        let _ = rx.await;
        Ok(())
    }
}

/// The single-group handle: a [`NodeHandle`] bound to one group. Not a second implementation — the same
/// driver and `Groups`, with one group in it.
pub struct RaftNode<C: RaftTypeConfig, M: StateMachine<C>> {
    handle: NodeHandle<C, M>,
    group: C::GroupId,
}

impl<C: RaftTypeConfig, M: StateMachine<C>> Clone for RaftNode<C, M> {
    fn clone(&self) -> Self {
        RaftNode {
            handle: self.handle.clone(),
            group: self.group,
        }
    }
}

impl<C: RaftTypeConfig, M: StateMachine<C> + 'static> RaftNode<C, M> {
    /// Binds `handle` to `group`, creating the group on the node if it does not exist.
    pub async fn new(
        handle: NodeHandle<C, M>,
        group: C::GroupId,
        membership: Membership<C>,
    ) -> Result<Self, ClientError<C>> {
        match handle.create_group(group, membership).await {
            Ok(()) | Err(ClientError::GroupExists { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(RaftNode { handle, group })
    }

    pub fn group(&self) -> C::GroupId {
        self.group
    }

    pub fn handle(&self) -> &NodeHandle<C, M> {
        &self.handle
    }

    /// See [`NodeHandle::propose`].
    pub async fn propose(&self, command: C::Data) -> Result<M::Response, ClientError<C>> {
        self.handle.propose(self.group, command).await
    }

    /// See [`NodeHandle::read`].
    pub async fn read<R: Send + 'static>(
        &self,
        query: impl FnOnce(&M) -> R + Send + 'static,
    ) -> Result<R, ClientError<C>> {
        self.handle.read(self.group, query).await
    }

    /// See [`NodeHandle::change_membership`].
    pub async fn change_membership(
        &self,
        change: MembershipChange<C>,
    ) -> Result<(), ClientError<C>> {
        self.handle.change_membership(self.group, change).await
    }

    /// See [`NodeHandle::transfer_leadership`].
    pub async fn transfer_leadership(&self, target: C::NodeId) -> Result<(), ClientError<C>> {
        self.handle.transfer_leadership(self.group, target).await
    }

    /// See [`NodeHandle::status`].
    pub async fn status(&self) -> Result<GroupStatus<C>, ClientError<C>> {
        self.handle.status(self.group).await
    }

    /// See [`NodeHandle::shutdown`].
    pub async fn shutdown(&self) -> Result<(), ClientError<C>> {
        self.handle.shutdown().await
    }
}
