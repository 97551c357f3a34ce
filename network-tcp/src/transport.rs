//! The transport itself: per-peer writer tasks that dial, and an accept loop whose connection tasks read.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use tickraft::message::Rpc;
use tickraft::{Inbound, Network, NetworkError, NodeBatch, RaftTypeConfig};

use crate::config::{TcpConfig, TcpConfigError};
use crate::wire::{
    decode_batch, decode_payload, encode_batch, encode_handshake, read_frame, split_handshake,
    write_all_flush, Hello, HelloReply, RejectReason, StreamKind, WireError, MAX_HANDSHAKE_BYTES,
    PROTOCOL_VERSION,
};

/// A bidirectional byte stream: a plain TCP stream or a TLS stream over one.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub(crate) type BoxedIo = Box<dyn Io>;

/// How many bytes of queued batches a writer coalesces into one write.
const COALESCE_BYTES: usize = 256 * 1024;
/// The read buffer of an accepted connection.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// How long the accept loop pauses after `accept` itself fails (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// The configuration breaks a rule.
    #[error(transparent)]
    Config(#[from] TcpConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificates or key could not be loaded.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The transport was started outside a tokio runtime.
    #[error("must be started inside a tokio runtime")]
    NoRuntime,
}

/// Why a connection failed, was refused, or a frame on it was dropped. Logged with `tracing` (the
/// transport never returns these to the caller of [`Network::send`]: delivery is best effort).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// A framing or decoding error.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Connecting to the peer failed.
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed (e.g. a certificate not signed by the cluster CA).
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// Connecting, the handshake or a write took longer than the configured `io_timeout`.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The two sides speak different protocol versions.
    #[error("protocol version mismatch: ours {ours}, theirs {theirs}")]
    VersionMismatch {
        /// This node's version.
        ours: u16,
        /// The other side's version.
        theirs: u16,
    },
    /// The two sides belong to different clusters.
    #[error("cluster id mismatch: ours {ours}, theirs {theirs}")]
    ClusterMismatch {
        /// This node's cluster id.
        ours: u64,
        /// The other side's cluster id.
        theirs: u64,
    },
    /// The dialer's node id is not a configured peer.
    #[error("node {node} is not a configured peer")]
    UnknownNode {
        /// The node id the dialer claimed (`Debug` format).
        node: String,
    },
    /// The other side is not the node that was meant.
    #[error("expected node {expected}, found node {actual}")]
    WrongNode {
        /// The node that was meant (`Debug` format).
        expected: String,
        /// The node that was found (`Debug` format).
        actual: String,
    },
    /// The acceptor refused the handshake.
    #[error("refused by the acceptor: {0}")]
    Rejected(RejectReason),
    /// A batch's `from` or `to` does not match the authenticated connection; the frame is dropped.
    #[error("batch from {from} to {to} on the connection of node {peer}")]
    Misaddressed {
        /// The node authenticated by the handshake.
        peer: String,
        /// The batch's `from`.
        from: String,
        /// The batch's `to`.
        to: String,
    },
    /// The acceptor closed the connection.
    #[error("the peer closed the connection")]
    PeerClosed,
    /// The acceptor wrote after the handshake, which the protocol does not allow.
    #[error("unexpected bytes from the acceptor after the handshake")]
    UnexpectedData,
}

impl ConnectionError {
    /// What to tell a dialer whose handshake failed this way, if anything.
    fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            ConnectionError::VersionMismatch { ours, .. } => {
                Some(RejectReason::Version { expected: *ours })
            }
            ConnectionError::ClusterMismatch { .. } => Some(RejectReason::Cluster),
            ConnectionError::UnknownNode { .. } => Some(RejectReason::UnknownNode),
            ConnectionError::WrongNode { .. } => Some(RejectReason::WrongNode),
            ConnectionError::Wire(WireError::Decode(_) | WireError::TrailingBytes(_)) => {
                Some(RejectReason::Malformed)
            }
            _ => None,
        }
    }
}

/// Counters of what the transport did since it started. Every field only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpStats {
    /// Batches written to peers (a batch split across several frames counts once per frame).
    pub batches_sent: u64,
    /// Bytes written to peers, length prefixes included, handshakes excluded.
    pub bytes_sent: u64,
    /// Batches read from peers and handed to the [`Inbound`].
    pub batches_received: u64,
    /// Bytes of the frames of those batches, length prefixes included.
    pub bytes_received: u64,
    /// Batches refused by [`Network::send`] because a queue was full.
    pub dropped_queue_full: u64,
    /// Batches (or frames) discarded because their peer was unreachable when their turn came, or whose
    /// write failed.
    pub dropped_unreachable: u64,
    /// Messages dropped because they do not fit in a frame of `max_frame_bytes` even alone.
    pub dropped_oversized: u64,
    /// Outgoing connections established (handshake completed).
    pub connections_established: u64,
    /// Outgoing connections that failed or were lost (each reported once to `Inbound::unreachable`).
    pub connection_failures: u64,
    /// Incoming connections accepted (handshake completed).
    pub connections_accepted: u64,
    /// Incoming connections refused during the TLS or tickraft handshake.
    pub handshakes_rejected: u64,
    /// Incoming connections closed because of a framing error after the handshake (not counting
    /// connections merely lost or closed).
    pub connections_dropped: u64,
    /// Incoming frames dropped (undecodable or misaddressed) on connections that were kept.
    pub frames_dropped: u64,
}

#[derive(Default)]
struct Counters {
    batches_sent: AtomicU64,
    bytes_sent: AtomicU64,
    batches_received: AtomicU64,
    bytes_received: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_unreachable: AtomicU64,
    dropped_oversized: AtomicU64,
    connections_established: AtomicU64,
    connection_failures: AtomicU64,
    connections_accepted: AtomicU64,
    handshakes_rejected: AtomicU64,
    connections_dropped: AtomicU64,
    frames_dropped: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> TcpStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TcpStats {
            batches_sent: get(&self.batches_sent),
            bytes_sent: get(&self.bytes_sent),
            batches_received: get(&self.batches_received),
            bytes_received: get(&self.bytes_received),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_unreachable: get(&self.dropped_unreachable),
            dropped_oversized: get(&self.dropped_oversized),
            connections_established: get(&self.connections_established),
            connection_failures: get(&self.connection_failures),
            connections_accepted: get(&self.connections_accepted),
            handshakes_rejected: get(&self.handshakes_rejected),
            connections_dropped: get(&self.connections_dropped),
            frames_dropped: get(&self.frames_dropped),
        }
    }
}

/// State shared by every task of one transport.
struct Shared<C: RaftTypeConfig> {
    config: TcpConfig<C::NodeId>,
    inbound: Arc<dyn Inbound<C>>,
    counters: Counters,
    /// The current peers (initially `config.peers`): whom to dial, and whom to accept.
    peers: RwLock<HashMap<C::NodeId, Peer<C>>>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsContext>,
}

impl<C: RaftTypeConfig> Shared<C> {
    fn peers(&self) -> RwLockReadGuard<'_, HashMap<C::NodeId, Peer<C>>> {
        // The lock guards no invariant a panic could break half-way: recover from poisoning.
        self.peers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn peers_mut(&self) -> RwLockWriteGuard<'_, HashMap<C::NodeId, Peer<C>>> {
        self.peers.write().unwrap_or_else(|e| e.into_inner())
    }

    fn is_peer(&self, node: &C::NodeId) -> bool {
        self.peers().contains_key(node)
    }

    async fn wrap_dialed(&self, stream: TcpStream) -> Result<BoxedIo, ConnectionError> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.connect(stream).await.map_err(ConnectionError::Tls);
        }
        Ok(Box::new(stream))
    }

    async fn wrap_accepted(&self, stream: TcpStream) -> Result<BoxedIo, ConnectionError> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.accept(stream).await.map_err(ConnectionError::Tls);
        }
        Ok(Box::new(stream))
    }
}

/// One peer: its address, the two queues toward it and the writer tasks that drain them.
struct Peer<C: RaftTypeConfig> {
    addr: String,
    regular: mpsc::Sender<NodeBatch<C>>,
    snapshot: mpsc::Sender<NodeBatch<C>>,
    writers: [JoinHandle<()>; 2],
}

impl<C: RaftTypeConfig> Peer<C> {
    /// Creates the queues and spawns the two writers.
    fn spawn(shared: &Arc<Shared<C>>, runtime: &Handle, peer: C::NodeId, addr: String) -> Self {
        let (regular, regular_rx) = mpsc::channel(shared.config.queue_len);
        let (snapshot, snapshot_rx) = mpsc::channel(shared.config.snapshot_queue_len);
        let writer = |kind, rx| Writer {
            shared: shared.clone(),
            peer,
            addr: addr.clone(),
            kind,
            rx,
        };
        let writers = [
            runtime.spawn(writer(StreamKind::Regular, regular_rx).run()),
            runtime.spawn(writer(StreamKind::Snapshot, snapshot_rx).run()),
        ];
        Peer {
            addr,
            regular,
            snapshot,
            writers,
        }
    }

    fn abort(&self) {
        for writer in &self.writers {
            writer.abort();
        }
    }
}

/// A [`Network`] over TCP (optionally TLS): see the [crate documentation](crate).
///
/// Dropping it stops every task at once; [`TcpNetwork::shutdown`] does the same and waits for them.
pub struct TcpNetwork<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
    runtime: Handle,
    local_addr: SocketAddr,
    closed: AtomicBool,
    accept_loop: Mutex<Option<JoinHandle<()>>>,
}

impl<C: RaftTypeConfig> std::fmt::Debug for TcpNetwork<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpNetwork")
            .field("node_id", &self.shared.config.node_id)
            .field("local_addr", &self.local_addr)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> TcpNetwork<C> {
    /// Checks `config`, binds `config.listen_addr` and starts the accept loop and one writer per peer.
    /// Received batches go to `inbound`.
    pub async fn start(
        config: TcpConfig<C::NodeId>,
        inbound: Arc<dyn Inbound<C>>,
    ) -> Result<Self, TcpError> {
        config.check()?;
        let addr = config.listen_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TcpError::Bind { addr, source })?;
        Self::with_listener(config, listener, inbound)
    }

    /// Like [`start`](Self::start), but accepts on a listener the caller already bound (for example on
    /// port 0, to learn the port before configuring the peers); `config.listen_addr` is ignored. Must be
    /// called inside a tokio runtime.
    pub fn with_listener(
        config: TcpConfig<C::NodeId>,
        listener: TcpListener,
        inbound: Arc<dyn Inbound<C>>,
    ) -> Result<Self, TcpError> {
        config.check()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TcpError::NoRuntime)?;
        let local_addr = listener.local_addr().map_err(|source| TcpError::Bind {
            addr: config.listen_addr,
            source,
        })?;
        #[cfg(feature = "tls")]
        let tls = match &config.tls {
            Some(tls) => Some(crate::tls::TlsContext::new(tls)?),
            None => None,
        };
        let shared = Arc::new(Shared {
            config,
            inbound,
            counters: Counters::default(),
            peers: RwLock::new(HashMap::new()),
            #[cfg(feature = "tls")]
            tls,
        });
        {
            let mut peers = shared.peers_mut();
            for (&peer, addr) in &shared.config.peers {
                peers.insert(peer, Peer::spawn(&shared, &runtime, peer, addr.clone()));
            }
        }
        let accept_loop = runtime.spawn(accept_loop(shared.clone(), listener));
        info!(
            node = ?shared.config.node_id,
            %local_addr,
            peers = shared.config.peers.len(),
            tls = shared.config.tls.is_some(),
            "tickraft transport started"
        );
        Ok(TcpNetwork {
            shared,
            runtime,
            local_addr,
            closed: AtomicBool::new(false),
            accept_loop: Mutex::new(Some(accept_loop)),
        })
    }

    /// Adds a peer at run time (for example when a membership change brings in a new node), or moves an
    /// existing one to a new address. From now on its connections are accepted and batches to it are sent.
    /// Re-adding a peer at the same address changes nothing.
    pub fn add_peer(&self, node: C::NodeId, addr: impl Into<String>) -> Result<(), TcpConfigError> {
        let addr = addr.into();
        if node == self.shared.config.node_id {
            return Err(TcpConfigError::new(
                "peers",
                "must not contain this node's own id",
            ));
        }
        if !crate::config::is_host_port(&addr) {
            return Err(TcpConfigError::new(
                "peers",
                format!("address {addr:?} of node {node:?} is not host:port"),
            ));
        }
        if self.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut peers = self.shared.peers_mut();
        if peers.get(&node).is_some_and(|peer| peer.addr == addr) {
            return Ok(());
        }
        let peer = Peer::spawn(&self.shared, &self.runtime, node, addr.clone());
        if let Some(old) = peers.insert(node, peer) {
            old.abort();
        }
        info!(peer = ?node, %addr, "peer added");
        Ok(())
    }

    /// Removes a peer at run time: its writers stop, batches to it are refused with
    /// [`NetworkError::UnknownPeer`], and its incoming connections are refused (an established one is
    /// closed at its next frame). Returns whether it was a peer.
    pub fn remove_peer(&self, node: C::NodeId) -> bool {
        let removed = self.shared.peers_mut().remove(&node);
        match removed {
            Some(peer) => {
                peer.abort();
                info!(peer = ?node, "peer removed");
                true
            }
            None => false,
        }
    }

    /// The current peers and their addresses.
    pub fn peers(&self) -> Vec<(C::NodeId, String)> {
        let mut peers: Vec<_> = self
            .shared
            .peers()
            .iter()
            .map(|(&node, peer)| (node, peer.addr.clone()))
            .collect();
        peers.sort_by_key(|&(node, _)| node);
        peers
    }

    /// Takes every task handle out, so that they can be aborted.
    fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        let mut tasks: Vec<_> = self
            .shared
            .peers_mut()
            .drain()
            .flat_map(|(_, peer)| peer.writers)
            .collect();
        tasks.extend(
            self.accept_loop
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        tasks
    }

    /// The address the listener is bound to (with the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> C::NodeId {
        self.shared.config.node_id
    }

    /// The counters so far.
    pub fn stats(&self) -> TcpStats {
        self.shared.counters.snapshot()
    }

    /// Stops every task (accept loop, connections, writers) and waits until they are gone. Queued batches
    /// are dropped; later calls to [`Network::send`] return [`NetworkError::Shutdown`]. Idempotent.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let tasks = self.take_tasks();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // A cancelled task reports `JoinError::Cancelled`: that is the point.
            let _ = task.await;
        }
        info!(node = ?self.shared.config.node_id, "tickraft transport shut down");
    }

    fn enqueue(
        &self,
        queue: &mpsc::Sender<NodeBatch<C>>,
        batch: NodeBatch<C>,
    ) -> Result<(), NetworkError> {
        match queue.try_send(batch) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(batch)) => {
                bump(&self.shared.counters.dropped_queue_full, 1);
                Err(NetworkError::QueueFull {
                    peer: format!("{:?}", batch.to),
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(NetworkError::Shutdown),
        }
    }
}

impl<C: RaftTypeConfig> Drop for TcpNetwork<C> {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        for task in self.take_tasks() {
            task.abort();
        }
    }
}

impl<C: RaftTypeConfig> Network<C> for TcpNetwork<C> {
    /// Splits `batch` into its regular part and its snapshot chunks and queues each on its stream.
    ///
    /// Returns [`NetworkError::QueueFull`] if either part was dropped (the other may have been queued),
    /// [`NetworkError::UnknownPeer`] if `batch.to` is not a configured peer.
    fn send(&self, batch: NodeBatch<C>) -> Result<(), NetworkError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(NetworkError::Shutdown);
        }
        let peers = self.shared.peers();
        let Some(queues) = peers.get(&batch.to) else {
            return Err(NetworkError::UnknownPeer {
                peer: format!("{:?}", batch.to),
            });
        };
        let (regular, snapshot) = split_snapshot(batch);
        let regular = match regular {
            Some(batch) => self.enqueue(&queues.regular, batch),
            None => Ok(()),
        };
        let snapshot = match snapshot {
            Some(batch) => self.enqueue(&queues.snapshot, batch),
            None => Ok(()),
        };
        regular.and(snapshot)
    }
}

fn is_snapshot<C: RaftTypeConfig>(message: &tickraft::groups::GroupMessage<C>) -> bool {
    matches!(message.message.rpc, Rpc::InstallSnapshot(_))
}

/// Splits a batch into the part for the regular stream and the snapshot chunks for the snapshot stream.
/// An empty batch (a liveness signal) goes to the regular stream; a batch of snapshot chunks alone has no
/// regular part.
pub(crate) fn split_snapshot<C: RaftTypeConfig>(
    mut batch: NodeBatch<C>,
) -> (Option<NodeBatch<C>>, Option<NodeBatch<C>>) {
    if !batch.messages.iter().any(is_snapshot) {
        return (Some(batch), None);
    }
    let (chunks, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut batch.messages)
        .into_iter()
        .partition(is_snapshot);
    batch.messages = rest;
    let mut snapshot = NodeBatch::new(batch.from, batch.to, batch.incarnation);
    snapshot.messages = chunks;
    let regular = if batch.is_empty() { None } else { Some(batch) };
    (regular, Some(snapshot))
}

/// Splits a batch in two non-empty halves (requires `batch.len() >= 2`).
fn halve<C: RaftTypeConfig>(mut batch: NodeBatch<C>) -> (NodeBatch<C>, NodeBatch<C>) {
    let mut second = NodeBatch::new(batch.from, batch.to, batch.incarnation);
    if batch.messages.len() >= 2 {
        second.messages = batch.messages.split_off(batch.messages.len() / 2);
    } else if !batch.messages.is_empty() {
        second.messages = std::mem::take(&mut batch.messages);
    } else if batch.heartbeats.len() >= 2 {
        second.heartbeats = batch.heartbeats.split_off(batch.heartbeats.len() / 2);
    } else {
        second.heartbeat_responses = batch
            .heartbeat_responses
            .split_off(batch.heartbeat_responses.len() / 2);
    }
    (batch, second)
}

/// Appends `batch` to `buf` as one frame, or as several if it is too large for one. Returns the number of
/// frames appended.
fn push_batch<C: RaftTypeConfig>(
    shared: &Shared<C>,
    buf: &mut Vec<u8>,
    batch: NodeBatch<C>,
) -> u64 {
    match encode_batch(&batch, shared.config.max_frame_bytes) {
        Ok(frame) => {
            if buf.is_empty() {
                *buf = frame;
            } else {
                buf.extend_from_slice(&frame);
            }
            1
        }
        Err(WireError::FrameTooLarge { .. }) if batch.len() >= 2 => {
            let (first, second) = halve(batch);
            push_batch(shared, buf, first) + push_batch(shared, buf, second)
        }
        Err(error) => {
            warn!(
                to = ?batch.to,
                messages = batch.len(),
                %error,
                "dropping a batch that cannot be encoded in one frame"
            );
            bump(
                &shared.counters.dropped_oversized,
                batch.len().max(1) as u64,
            );
            0
        }
    }
}

/// Exponential backoff with jitter: each delay is drawn uniformly from `[d/2, d]`, where `d` doubles
/// from `min` to `max` with each consecutive failure.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    rng: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            min,
            max,
            next: min,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // xorshift64*: plenty for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let random = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let half = base / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(random % nanos.saturating_add(1))
    }
}

/// A per-process random seed (std's hasher keys are random), mixed with `salt`.
fn random_seed(salt: impl Hash) -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    salt.hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    hasher.finish()
}

/// Owns one stream toward one peer: dials, handshakes, writes queued batches, reconnects with backoff.
struct Writer<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
    peer: C::NodeId,
    addr: String,
    kind: StreamKind,
    rx: mpsc::Receiver<NodeBatch<C>>,
}

/// How a connected writer stopped.
enum Stop {
    /// The transport is gone.
    Closed,
    /// The connection failed.
    Failed(ConnectionError),
}

impl<C: RaftTypeConfig> Writer<C> {
    async fn run(mut self) {
        let seed = random_seed((format!("{:?}", self.peer), self.kind));
        let mut backoff = Backoff::new(
            self.shared.config.backoff_min,
            self.shared.config.backoff_max,
            seed,
        );
        let mut failing = false;
        loop {
            // The snapshot stream is opened only when there is a snapshot to send.
            let mut pending = None;
            if self.kind == StreamKind::Snapshot {
                match self.rx.recv().await {
                    Some(batch) => pending = Some(batch),
                    None => return,
                }
            }
            let timeout = self.shared.config.io_timeout;
            let dialed = match tokio::time::timeout(timeout, self.dial()).await {
                Ok(result) => result,
                Err(_) => Err(ConnectionError::Timeout(timeout)),
            };
            let error = match dialed {
                Ok(io) => {
                    bump(&self.shared.counters.connections_established, 1);
                    info!(peer = ?self.peer, addr = %self.addr, stream = ?self.kind, "connected");
                    backoff.reset();
                    failing = false;
                    match self.pump(io, pending.take()).await {
                        Stop::Closed => return,
                        Stop::Failed(error) => error,
                    }
                }
                Err(error) => error,
            };
            if let Some(batch) = pending {
                bump(&self.shared.counters.dropped_unreachable, 1);
                drop(batch);
            }
            bump(&self.shared.counters.connection_failures, 1);
            if failing {
                debug!(peer = ?self.peer, addr = %self.addr, stream = ?self.kind, %error, "still unreachable");
            } else {
                warn!(peer = ?self.peer, addr = %self.addr, stream = ?self.kind, %error, "peer unreachable");
            }
            failing = true;
            self.shared.inbound.unreachable(self.peer);

            // Wait before the next attempt, discarding what is queued meanwhile: Raft resends what still
            // matters, and stale heartbeats delivered late help no one.
            let sleep = tokio::time::sleep(backoff.delay());
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    batch = self.rx.recv() => match batch {
                        Some(_) => bump(&self.shared.counters.dropped_unreachable, 1),
                        None => return,
                    },
                }
            }
        }
    }

    /// Connects and performs the dialer's side of the handshake.
    async fn dial(&self) -> Result<BoxedIo, ConnectionError> {
        let stream = TcpStream::connect(self.addr.as_str())
            .await
            .map_err(ConnectionError::Connect)?;
        // Latency matters more than packet count for Raft; failure to set it is harmless.
        let _ = stream.set_nodelay(true);
        let mut io = self.shared.wrap_dialed(stream).await?;
        let hello = Hello {
            cluster_id: self.shared.config.cluster_id,
            from: self.shared.config.node_id,
            to: self.peer,
            stream: self.kind,
        };
        write_all_flush(&mut io, &encode_handshake(PROTOCOL_VERSION, &hello)?).await?;
        let payload = read_frame(&mut io, MAX_HANDSHAKE_BYTES).await?;
        let (version, body) = split_handshake(&payload)?;
        if version != PROTOCOL_VERSION {
            return Err(ConnectionError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: version,
            });
        }
        match decode_payload::<HelloReply<C::NodeId>>(body)? {
            HelloReply::Accepted { node } if node == self.peer => Ok(io),
            HelloReply::Accepted { node } => Err(ConnectionError::WrongNode {
                expected: format!("{:?}", self.peer),
                actual: format!("{node:?}"),
            }),
            HelloReply::Rejected(reason) => Err(ConnectionError::Rejected(reason)),
        }
    }

    /// Writes queued batches until the connection fails or the transport closes. Also watches the read
    /// side: the acceptor never writes after the handshake, so a readable socket means it closed.
    async fn pump(&mut self, io: BoxedIo, pending: Option<NodeBatch<C>>) -> Stop {
        let (mut reader, mut writer) = tokio::io::split(io);
        let mut buf = Vec::new();
        let mut frames = 0;
        if let Some(batch) = pending {
            frames += push_batch(&self.shared, &mut buf, batch);
        }
        let timeout = self.shared.config.io_timeout;
        let mut probe = [0u8; 1];
        loop {
            if !buf.is_empty() {
                match tokio::time::timeout(timeout, write_all_flush(&mut writer, &buf)).await {
                    Ok(Ok(())) => {
                        bump(&self.shared.counters.batches_sent, frames);
                        bump(&self.shared.counters.bytes_sent, buf.len() as u64);
                    }
                    Ok(Err(error)) => {
                        bump(&self.shared.counters.dropped_unreachable, frames);
                        return Stop::Failed(error.into());
                    }
                    Err(_) => {
                        bump(&self.shared.counters.dropped_unreachable, frames);
                        return Stop::Failed(ConnectionError::Timeout(timeout));
                    }
                }
                buf.clear();
                frames = 0;
            }
            tokio::select! {
                batch = self.rx.recv() => {
                    let Some(batch) = batch else { return Stop::Closed };
                    frames += push_batch(&self.shared, &mut buf, batch);
                    while buf.len() < COALESCE_BYTES {
                        match self.rx.try_recv() {
                            Ok(batch) => frames += push_batch(&self.shared, &mut buf, batch),
                            Err(_) => break,
                        }
                    }
                }
                read = reader.read(&mut probe) => {
                    return Stop::Failed(match read {
                        Ok(0) => ConnectionError::PeerClosed,
                        Ok(_) => ConnectionError::UnexpectedData,
                        Err(error) => WireError::Io(error).into(),
                    });
                }
            }
        }
    }
}

/// Accepts connections until aborted; each connection is served by its own task.
async fn accept_loop<C: RaftTypeConfig>(shared: Arc<Shared<C>>, listener: TcpListener) {
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    connections.spawn(serve_connection(shared.clone(), stream, addr));
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    if error.is_panic() {
                        warn!(%error, "a connection task panicked (in the Inbound?); the listener goes on");
                    }
                }
            }
        }
    }
}

/// The acceptor's side of the handshake: reads the [`Hello`], checks it, answers.
async fn accept_handshake<C: RaftTypeConfig>(
    shared: &Shared<C>,
    io: &mut BoxedIo,
) -> Result<(C::NodeId, StreamKind), ConnectionError> {
    let payload = read_frame(io, MAX_HANDSHAKE_BYTES).await?;
    let (version, body) = split_handshake(&payload)?;
    let checked = check_hello(shared, version, body);
    let reply = match &checked {
        Ok(_) => Some(HelloReply::Accepted {
            node: shared.config.node_id,
        }),
        Err(error) => error.reject_reason().map(HelloReply::Rejected),
    };
    if let Some(reply) = reply {
        let frame = encode_handshake(PROTOCOL_VERSION, &reply)?;
        let written = write_all_flush(io, &frame).await;
        // A refused dialer may already be gone; only an accepted one must hear the answer.
        if checked.is_ok() {
            written?;
        }
    }
    checked
}

fn check_hello<C: RaftTypeConfig>(
    shared: &Shared<C>,
    version: u16,
    body: &[u8],
) -> Result<(C::NodeId, StreamKind), ConnectionError> {
    if version != PROTOCOL_VERSION {
        return Err(ConnectionError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    let hello: Hello<C::NodeId> = decode_payload(body)?;
    let config = &shared.config;
    if hello.cluster_id != config.cluster_id {
        return Err(ConnectionError::ClusterMismatch {
            ours: config.cluster_id,
            theirs: hello.cluster_id,
        });
    }
    if !shared.is_peer(&hello.from) {
        return Err(ConnectionError::UnknownNode {
            node: format!("{:?}", hello.from),
        });
    }
    if hello.to != config.node_id {
        return Err(ConnectionError::WrongNode {
            expected: format!("{:?}", config.node_id),
            actual: format!("{:?}", hello.to),
        });
    }
    Ok((hello.from, hello.stream))
}

/// Serves one accepted connection: TLS and handshake, then reads batches until it closes or misbehaves.
async fn serve_connection<C: RaftTypeConfig>(
    shared: Arc<Shared<C>>,
    stream: TcpStream,
    addr: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let timeout = shared.config.io_timeout;
    let handshake = async {
        let mut io = shared.wrap_accepted(stream).await?;
        let (peer, kind) = accept_handshake(&shared, &mut io).await?;
        Ok::<_, ConnectionError>((io, peer, kind))
    };
    let (io, peer, kind) = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(error)) => {
            bump(&shared.counters.handshakes_rejected, 1);
            warn!(%addr, %error, "refused an incoming connection");
            return;
        }
        Err(_) => {
            bump(&shared.counters.handshakes_rejected, 1);
            let error = ConnectionError::Timeout(timeout);
            warn!(%addr, %error, "refused an incoming connection");
            return;
        }
    };
    bump(&shared.counters.connections_accepted, 1);
    info!(%addr, ?peer, stream = ?kind, "accepted a connection");

    let me = shared.config.node_id;
    let max = shared.config.max_frame_bytes;
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, io);
    loop {
        let payload = match read_frame(&mut reader, max).await {
            Ok(payload) => payload,
            Err(WireError::Closed) => {
                debug!(%addr, ?peer, stream = ?kind, "connection closed by the peer");
                return;
            }
            Err(WireError::Io(error)) => {
                // A reset or a read error: the peer crashed or the network failed, not bad input.
                info!(%addr, ?peer, stream = ?kind, %error, "connection lost");
                return;
            }
            Err(error) => {
                bump(&shared.counters.connections_dropped, 1);
                warn!(%addr, ?peer, stream = ?kind, %error, "dropping the connection");
                return;
            }
        };
        if !shared.is_peer(&peer) {
            bump(&shared.counters.connections_dropped, 1);
            warn!(%addr, ?peer, "closing the connection of a removed peer");
            return;
        }
        let batch = match decode_batch::<C>(&payload) {
            Ok(batch) if batch.from == peer && batch.to == me => batch,
            Ok(batch) => {
                bump(&shared.counters.frames_dropped, 1);
                let error = ConnectionError::Misaddressed {
                    peer: format!("{peer:?}"),
                    from: format!("{:?}", batch.from),
                    to: format!("{:?}", batch.to),
                };
                warn!(%addr, %error, "dropping a frame");
                continue;
            }
            Err(error) => {
                bump(&shared.counters.frames_dropped, 1);
                warn!(%addr, ?peer, %error, "dropping a frame");
                continue;
            }
        };
        bump(&shared.counters.batches_received, 1);
        bump(
            &shared.counters.bytes_received,
            (payload.len() + crate::wire::LENGTH_PREFIX_BYTES) as u64,
        );
        shared.inbound.deliver(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickraft::groups::{GroupHeartbeat, GroupMessage};
    use tickraft::message::{Message, SnapshotChunk};
    use tickraft::types::{LogId, Membership, SnapshotMeta};

    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
    struct T;
    impl RaftTypeConfig for T {
        type NodeId = u64;
        type GroupId = u64;
        type Data = Vec<u8>;
        type Snapshot = Vec<u8>;
    }

    fn chunk(group: u64) -> GroupMessage<T> {
        GroupMessage {
            group,
            message: Message {
                term: 1,
                rpc: Rpc::InstallSnapshot(Box::new(SnapshotChunk {
                    meta: SnapshotMeta {
                        last: LogId::new(1, 1),
                        membership: Membership::new_voters([1, 2]),
                    },
                    offset: 0,
                    data: vec![1, 2, 3].into(),
                    total_len: 3,
                    checksum: 0,
                })),
            },
        }
    }

    fn timeout_now(group: u64) -> GroupMessage<T> {
        GroupMessage {
            group,
            message: Message {
                term: 1,
                rpc: Rpc::TimeoutNow,
            },
        }
    }

    #[test]
    fn snapshot_chunks_are_split_off() {
        let mut batch = NodeBatch::<T>::new(1, 2, 3);
        batch.messages = vec![timeout_now(1), chunk(2), timeout_now(3)];
        let (regular, snapshot) = split_snapshot(batch);
        let (regular, snapshot) = (regular.unwrap(), snapshot.unwrap());
        assert_eq!(regular.messages, vec![timeout_now(1), timeout_now(3)]);
        assert_eq!(snapshot.messages, vec![chunk(2)]);
        assert_eq!(
            (snapshot.from, snapshot.to, snapshot.incarnation),
            (1, 2, 3)
        );

        let mut only_chunks = NodeBatch::<T>::new(1, 2, 3);
        only_chunks.messages = vec![chunk(2)];
        assert!(split_snapshot(only_chunks).0.is_none());

        let empty = NodeBatch::<T>::new(1, 2, 3);
        assert_eq!(split_snapshot(empty.clone()), (Some(empty), None));
    }

    #[test]
    fn halving_always_makes_progress() {
        let hb = |group| GroupHeartbeat::<T> {
            group,
            term: 1,
            commit: 1,
            read_seq: 0,
        };
        let mut batch = NodeBatch::<T>::new(1, 2, 3);
        batch.messages = vec![timeout_now(1)];
        batch.heartbeats = vec![hb(1), hb(2), hb(3)];
        let (a, b) = halve(batch);
        assert_eq!((a.len(), b.len()), (3, 1));
        let (c, d) = halve(a);
        assert_eq!((c.len(), d.len()), (1, 2));
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_bounded() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(100);
        let mut backoff = Backoff::new(min, max, 42);
        let mut base = min;
        for _ in 0..20 {
            let delay = backoff.delay();
            assert!(delay >= base / 2 && delay <= base, "{delay:?} vs {base:?}");
            base = (base * 2).min(max);
        }
        backoff.reset();
        assert!(backoff.delay() <= min);
    }
}
