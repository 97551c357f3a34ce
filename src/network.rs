//! How batches travel between nodes. The core and [`Groups`](crate::groups::Groups) never touch a socket:
//! a transport implements [`Network`] for sending and hands what it receives to an [`Inbound`].
//!
//! Delivery is best effort. Raft tolerates loss, duplication, reordering and delay, so a transport drops
//! rather than blocks when a peer is slow or gone, and reports unreachable peers so that leaders stop
//! streaming to them optimistically.

use crate::groups::NodeBatch;
use crate::types::RaftTypeConfig;

/// Why a batch was not queued for sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// No address is known for the destination node.
    #[error("no address for peer {peer}")]
    UnknownPeer { peer: String },
    /// The peer's send queue is full: the batch was dropped (Raft will retry what matters).
    #[error("send queue to peer {peer} is full; batch dropped")]
    QueueFull { peer: String },
    /// The transport is shutting down.
    #[error("the transport is shut down")]
    Shutdown,
}

/// Sends batches to peer nodes.
pub trait Network<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Queues `batch` for `batch.to` and returns at once: it never blocks on the network. A full queue
    /// drops the batch and says so.
    fn send(&self, batch: NodeBatch<C>) -> Result<(), NetworkError>;
}

/// Receives what a transport reads from its peers.
pub trait Inbound<C: RaftTypeConfig>: Send + Sync + 'static {
    /// A well-formed batch from an authenticated peer.
    fn deliver(&self, batch: NodeBatch<C>);
    /// `node` could not be reached (connection refused or lost); called once per failure.
    fn unreachable(&self, node: C::NodeId);
}

/// A shared transport is a transport: lets the application keep an `Arc` to shut it down later.
impl<C: RaftTypeConfig, T: Network<C>> Network<C> for std::sync::Arc<T> {
    fn send(&self, batch: NodeBatch<C>) -> Result<(), NetworkError> {
        (**self).send(batch)
    }
}
