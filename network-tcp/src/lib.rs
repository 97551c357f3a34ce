//! TCP transport for tickraft, on tokio.
//!
//! [`TcpNetwork`] implements [`tickraft::Network`]: it carries the [`NodeBatch`](tickraft::NodeBatch) that
//! `Groups` produces for each peer node each cycle, whatever groups it holds, and hands what it receives to
//! a [`tickraft::Inbound`]. Delivery is best effort, as Raft expects: a slow or dead peer makes `send` drop
//! (and say so), never block.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tickraft::{Inbound, Network, NodeBatch, RaftTypeConfig};
//! use tickraft_network_tcp::{TcpConfig, TcpNetwork};
//!
//! # #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
//! # struct Kv;
//! # impl RaftTypeConfig for Kv {
//! #     type NodeId = u64; type GroupId = u64; type Data = bytes::Bytes; type Snapshot = bytes::Bytes;
//! # }
//! struct ToDriver; // in a real node: forwards to the driver loop's channel
//! impl Inbound<Kv> for ToDriver {
//!     fn deliver(&self, batch: NodeBatch<Kv>) { /* groups.step(batch) */ }
//!     fn unreachable(&self, node: u64) { /* groups.report_unreachable(node) */ }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = TcpConfig::new(1u64, 0xC0FFEE, "0.0.0.0:7001".parse()?);
//! config.peers.insert(2, "node-2:7001".into());
//! config.peers.insert(3, "node-3:7001".into());
//! let network = TcpNetwork::<Kv>::start(config, Arc::new(ToDriver)).await?;
//! network.send(NodeBatch::new(1, 2, 0))?; // an empty batch: "I am alive"
//! network.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Connections
//!
//! Each node dials each of its peers and *writes* on the connections it dialed; it *reads* on the
//! connections it accepted. So between two nodes A and B there is one connection A→B carrying A's batches
//! and one B→A carrying B's, shared by every group. No tie-breaking is needed when both dial at once, and a
//! writer never waits on a reader.
//!
//! There are two such streams per direction: the **regular** stream carries every message except snapshot
//! chunks, and the **snapshot** stream carries the group messages whose rpc is `Rpc::InstallSnapshot`.
//! [`Network::send`](tickraft::Network::send) splits each batch into the two parts (with the same `from`,
//! `to` and `incarnation`), so that a multi-megabyte chunk never sits in front of heartbeats and appends.
//! The snapshot stream is opened on first use.
//!
//! Each stream has a bounded queue ([`TcpConfig::queue_len`], [`TcpConfig::snapshot_queue_len`]). When it
//! is full, `send` returns `NetworkError::QueueFull` and counts the drop ([`TcpStats::dropped_queue_full`]).
//! A writer whose connection fails reports `Inbound::unreachable(peer)` once for that failure, then retries
//! with exponential backoff (from [`TcpConfig::backoff_min`] doubling up to [`TcpConfig::backoff_max`], each
//! delay drawn uniformly from its upper half) and discards what is queued meanwhile: Raft resends what
//! still matters. Each failed attempt is a failure, reported once.
//!
//! The peers are [`TcpConfig::peers`] at start; [`TcpNetwork::add_peer`] and [`TcpNetwork::remove_peer`]
//! change them at run time (membership changes). Only peers are dialed, and only peers are accepted.
//!
//! # Wire format
//!
//! Every frame, in both directions, is
//!
//! ```text
//! +----------------------+---------------------------+
//! | length: u32, big-end | payload: `length` bytes   |
//! +----------------------+---------------------------+
//! ```
//!
//! A zero length is invalid; a length above the limit is refused before anything is allocated and closes
//! the connection (the stream cannot be resynchronised). The limit is [`wire::MAX_HANDSHAKE_BYTES`]
//! (1 KiB) for handshake frames and [`TcpConfig::max_frame_bytes`] (16 MiB by default) for data frames.
//!
//! **Handshake.** The dialer sends one handshake frame, the acceptor answers with one:
//!
//! ```text
//! payload = magic "TKRF" (4 bytes) | version: u16 big-endian | body (postcard)
//! dialer's body   = Hello      { cluster_id: u64, from: NodeId, to: NodeId, stream: Regular | Snapshot }
//! acceptor's body = HelloReply { Accepted { node: NodeId } | Rejected(RejectReason) }
//! ```
//!
//! The version sits outside the postcard body so that a node can tell a version mismatch even when it
//! cannot decode the body of another version. The acceptor checks, in order: the magic, the version
//! ([`wire::PROTOCOL_VERSION`]), the cluster id, that `from` is one of its configured peers, and that
//! `to` is itself. On a mismatch it answers `Rejected` with a [`wire::RejectReason`] (when the frame was a
//! tickraft handshake at all), logs the reason with `tracing` and closes. The dialer checks that the
//! acceptor's `node` is the peer it meant to reach.
//!
//! **Data frames.** After the handshake only the dialer writes. Each data frame's payload is one
//! `NodeBatch<C>` encoded with [postcard](https://docs.rs/postcard) (varint integers, no field names),
//! with no bytes left over. The acceptor drops (and counts) a frame that does not decode or whose `from` /
//! `to` differ from the handshake's, and keeps the connection. An outgoing batch larger than
//! `max_frame_bytes` is split across several frames; a single message that does not fit alone is dropped.
//! The acceptor never writes after its reply, so the dialer watches its read side to notice a closed
//! connection at once.
//!
//! Postcard is not self-describing: nodes must share the same `RaftTypeConfig` types, and any change to
//! the encoding of tickraft's messages requires a new protocol version.
//!
//! # Bad input
//!
//! Nothing a peer or a stray client sends can panic the transport or stop the listener: garbage, a
//! truncated frame, an oversized length prefix, a wrong magic, version or cluster id, an unknown node id, a
//! misaddressed batch, a handshake that never completes ([`TcpConfig::io_timeout`]) — each closes that one
//! connection or drops that one frame, with a [`ConnectionError`] in a `tracing` line and a counter in
//! [`TcpStats`]. A batch for an unknown *group* is delivered: `Groups` decides what to do with it.
//!
//! # TLS
//!
//! With the `tls` feature and [`TcpConfig::tls`] set, every connection runs rustls with mutual
//! authentication before the handshake: the acceptor requires a client certificate signed by the
//! configured CA, and the dialer checks the acceptor's certificate against the CA and
//! [`TlsConfig::server_name`]. The tickraft handshake then runs inside the encrypted stream.
//!
//! Without TLS the handshake identifies but does not authenticate: anyone who can reach the listener and
//! knows the cluster id and a peer's node id can send batches as that peer. Use TLS, or a private network,
//! in production. With TLS, any holder of a certificate of the cluster CA may claim any node id.

#![warn(missing_docs)]

mod config;
#[cfg(feature = "tls")]
mod tls;
mod transport;
pub mod wire;

pub use crate::config::{TcpConfig, TcpConfigError, TlsConfig};
pub use crate::transport::{ConnectionError, TcpError, TcpNetwork, TcpStats};
