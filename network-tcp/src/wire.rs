//! The wire format: length-delimited frames, the handshake and the batch encoding.
//!
//! Everything here is pure or works on any `AsyncRead`/`AsyncWrite`, so that it can be tested and fuzzed
//! without sockets. See the [crate documentation](crate) for the layout in one place.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use tickraft::{NodeBatch, RaftTypeConfig};

/// The four bytes that open every handshake frame (`TKRF`), so that a stray client is told apart from an
/// old or new tickraft node at once.
pub const MAGIC: [u8; 4] = *b"TKRF";

/// The version of this wire protocol. Both sides of a connection must speak the same one.
pub const PROTOCOL_VERSION: u16 = 1;

/// The largest handshake frame accepted, in bytes. Kept small and independent of the data-frame limit, so
/// that an unauthenticated client cannot make the acceptor allocate a large buffer.
pub const MAX_HANDSHAKE_BYTES: u32 = 1024;

/// The number of bytes of the length prefix of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Why bytes read from (or about to be written to) a connection are not a valid frame.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection cleanly, between two frames.
    #[error("connection closed")]
    Closed,
    /// The connection ended in the middle of a frame (inside its length prefix or its payload).
    #[error(
        "connection closed in the middle of a frame (truncated after {read} of {expected} bytes)"
    )]
    Truncated {
        /// The bytes of the prefix or payload that arrived.
        read: usize,
        /// The bytes the prefix or payload should have had.
        expected: usize,
    },
    /// The length prefix announces more bytes than this side accepts. The stream cannot be resynchronised,
    /// so the connection is closed.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The announced (or encoded) payload length.
        len: u64,
        /// The limit in force.
        max: u32,
    },
    /// A zero-length frame: never sent by a correct peer.
    #[error("empty frame")]
    EmptyFrame,
    /// A handshake frame that does not start with [`MAGIC`].
    #[error("bad magic: not a tickraft handshake")]
    BadMagic,
    /// The payload does not decode as the expected type.
    #[error("cannot decode frame payload: {0}")]
    Decode(#[source] postcard::Error),
    /// The payload decoded but bytes were left over.
    #[error("{0} trailing bytes after the frame payload")]
    TrailingBytes(usize),
    /// A value could not be encoded (should not happen with tickraft's types).
    #[error("cannot encode frame payload: {0}")]
    Encode(#[source] postcard::Error),
    /// Reading or writing the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Which of the two connections to a peer a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamKind {
    /// Heartbeats, appends, votes and every other message except snapshot chunks.
    Regular,
    /// Only messages whose rpc is `Rpc::InstallSnapshot`, so that a large snapshot never delays the rest.
    Snapshot,
}

/// The dialer's half of the handshake: who it is, whom it wants, and for what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello<N> {
    /// The cluster the dialer belongs to; must equal the acceptor's.
    pub cluster_id: u64,
    /// The dialer's node id; must be one of the acceptor's configured peers.
    pub from: N,
    /// The node the dialer means to reach; must be the acceptor itself.
    pub to: N,
    /// Which stream this connection carries.
    pub stream: StreamKind,
}

/// The acceptor's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply<N> {
    /// The connection is accepted; `node` is the acceptor's node id, which the dialer checks.
    Accepted {
        /// The acceptor's node id.
        node: N,
    },
    /// The connection is refused and will be closed.
    Rejected(RejectReason),
}

/// Why an acceptor refused a handshake. Sent to the dialer before the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RejectReason {
    /// The dialer speaks another protocol version; `expected` is the acceptor's.
    #[error("protocol version mismatch (acceptor speaks version {expected})")]
    Version {
        /// The acceptor's protocol version.
        expected: u16,
    },
    /// The dialer belongs to another cluster.
    #[error("cluster id mismatch")]
    Cluster,
    /// The dialer's node id is not one of the acceptor's peers.
    #[error("unknown node id")]
    UnknownNode,
    /// The dialer meant to reach another node.
    #[error("wrong destination node id")]
    WrongNode,
    /// The handshake body could not be decoded.
    #[error("malformed handshake")]
    Malformed,
}

/// Reads one frame: a big-endian `u32` length, then that many bytes of payload.
///
/// Lengths above `max` and zero lengths are refused before anything is allocated. A clean end of stream
/// before the first byte of the length is [`WireError::Closed`]; anywhere else it is
/// [`WireError::Truncated`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
) -> Result<Vec<u8>, WireError> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let mut got = 0;
    while got < LENGTH_PREFIX_BYTES {
        let n = match reader.read(&mut prefix[got..]).await {
            Ok(n) => n,
            // TLS reports a close without `close_notify` this way; between frames it is a plain close.
            Err(e) if got == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(if got == 0 {
                WireError::Closed
            } else {
                WireError::Truncated {
                    read: got,
                    expected: LENGTH_PREFIX_BYTES,
                }
            });
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix);
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    if len > max {
        return Err(WireError::FrameTooLarge {
            len: u64::from(len),
            max,
        });
    }
    let len = len as usize;
    let mut payload = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = reader.read(&mut payload[got..]).await?;
        if n == 0 {
            return Err(WireError::Truncated {
                read: got,
                expected: len,
            });
        }
        got += n;
    }
    Ok(payload)
}

/// Encodes `value` as one complete frame (length prefix included), refusing payloads above `max`.
pub fn encode_frame<T: Serialize>(value: &T, max: u32) -> Result<Vec<u8>, WireError> {
    let frame =
        postcard::to_extend(value, vec![0u8; LENGTH_PREFIX_BYTES]).map_err(WireError::Encode)?;
    seal_frame(frame, max)
}

/// Writes the length prefix into the first four bytes of `frame` (reserved by the caller).
fn seal_frame(mut frame: Vec<u8>, max: u32) -> Result<Vec<u8>, WireError> {
    let len = frame.len() - LENGTH_PREFIX_BYTES;
    if len as u64 > u64::from(max) {
        return Err(WireError::FrameTooLarge {
            len: len as u64,
            max,
        });
    }
    // `len <= max <= u32::MAX`, checked just above.
    let prefix = (len as u32).to_be_bytes();
    frame[..LENGTH_PREFIX_BYTES].copy_from_slice(&prefix);
    Ok(frame)
}

/// Decodes a whole frame payload as `T`, refusing trailing bytes.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes(payload).map_err(WireError::Decode)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Encodes a batch as one data frame.
pub fn encode_batch<C: RaftTypeConfig>(
    batch: &NodeBatch<C>,
    max: u32,
) -> Result<Vec<u8>, WireError> {
    encode_frame(batch, max)
}

/// Decodes the payload of a data frame.
pub fn decode_batch<C: RaftTypeConfig>(payload: &[u8]) -> Result<NodeBatch<C>, WireError> {
    decode_payload(payload)
}

/// Encodes a handshake message (a [`Hello`] or a [`HelloReply`]) as a frame: [`MAGIC`], the protocol
/// `version` as a big-endian `u16`, then the postcard body.
pub fn encode_handshake<T: Serialize>(version: u16, body: &T) -> Result<Vec<u8>, WireError> {
    let mut head = vec![0u8; LENGTH_PREFIX_BYTES];
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&version.to_be_bytes());
    let frame = postcard::to_extend(body, head).map_err(WireError::Encode)?;
    seal_frame(frame, MAX_HANDSHAKE_BYTES)
}

/// Splits a handshake payload into its protocol version and its body, checking the magic.
pub fn split_handshake(payload: &[u8]) -> Result<(u16, &[u8]), WireError> {
    let Some((magic, rest)) = payload.split_first_chunk::<4>() else {
        return Err(WireError::BadMagic);
    };
    if *magic != MAGIC {
        return Err(WireError::BadMagic);
    }
    let Some((version, body)) = rest.split_first_chunk::<2>() else {
        return Err(WireError::Truncated {
            read: payload.len(),
            expected: MAGIC.len() + 2,
        });
    };
    Ok((u16::from_be_bytes(*version), body))
}

/// Writes a whole buffer and flushes it (TLS streams hold data until flushed).
pub(crate) async fn write_all_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> Result<(), WireError> {
    writer.write_all(bytes).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
    struct T;
    impl RaftTypeConfig for T {
        type NodeId = u64;
        type GroupId = u64;
        type Data = Vec<u8>;
        type Snapshot = Vec<u8>;
    }

    async fn read(bytes: &[u8], max: u32) -> Result<Vec<u8>, WireError> {
        let mut reader = bytes;
        read_frame(&mut reader, max).await
    }

    #[tokio::test]
    async fn a_frame_round_trips() {
        let mut batch = NodeBatch::<T>::new(1, 2, 7);
        batch.heartbeats.push(tickraft::groups::GroupHeartbeat {
            group: 3,
            term: 4,
            commit: 5,
            read_seq: 6,
        });
        let frame = encode_batch(&batch, 1 << 20).unwrap();
        assert_eq!(&frame[..4], &((frame.len() - 4) as u32).to_be_bytes());
        let payload = read(&frame, 1 << 20).await.unwrap();
        assert_eq!(decode_batch::<T>(&payload).unwrap(), batch);
    }

    #[tokio::test]
    async fn framing_errors_are_typed() {
        assert!(matches!(read(&[], 100).await, Err(WireError::Closed)));
        assert!(matches!(
            read(&[0, 0], 100).await,
            Err(WireError::Truncated {
                read: 2,
                expected: 4
            })
        ));
        assert!(matches!(
            read(&[0, 0, 0, 9, 1, 2], 100).await,
            Err(WireError::Truncated {
                read: 2,
                expected: 9
            })
        ));
        assert!(matches!(
            read(&[0, 0, 0, 0], 100).await,
            Err(WireError::EmptyFrame)
        ));
        assert!(matches!(
            read(&[0xff, 0xff, 0xff, 0xff], 100).await,
            Err(WireError::FrameTooLarge {
                len: 0xffff_ffff,
                max: 100
            })
        ));
        assert!(matches!(
            encode_frame(&vec![0u8; 200], 100),
            Err(WireError::FrameTooLarge { max: 100, .. })
        ));
    }

    #[test]
    fn payload_errors_are_typed() {
        assert!(matches!(
            decode_batch::<T>(&[0xff, 0xff, 0xff]),
            Err(WireError::Decode(_))
        ));
        let mut bytes = postcard::to_allocvec(&NodeBatch::<T>::new(1, 2, 3)).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode_batch::<T>(&bytes),
            Err(WireError::TrailingBytes(1))
        ));
        assert!(matches!(
            split_handshake(b"GET / HTTP"),
            Err(WireError::BadMagic)
        ));
        assert!(matches!(split_handshake(b"TKR"), Err(WireError::BadMagic)));
        assert!(matches!(
            split_handshake(b"TKRF\x00"),
            Err(WireError::Truncated { .. })
        ));
    }

    #[tokio::test]
    async fn handshake_frames_carry_magic_and_version() {
        let hello = Hello {
            cluster_id: 9,
            from: 1u64,
            to: 2u64,
            stream: StreamKind::Snapshot,
        };
        let frame = encode_handshake(PROTOCOL_VERSION, &hello).unwrap();
        assert_eq!(&frame[4..8], b"TKRF");
        let payload = read(&frame, MAX_HANDSHAKE_BYTES).await.unwrap();
        let (version, body) = split_handshake(&payload).unwrap();
        assert_eq!(version, PROTOCOL_VERSION);
        assert_eq!(decode_payload::<Hello<u64>>(body).unwrap(), hello);
    }

    /// Every prefix of a valid frame stream and every byte flip is refused or decoded, never a panic.
    #[tokio::test]
    async fn arbitrary_bytes_never_panic() {
        let mut batch = NodeBatch::<T>::new(1, 2, 7);
        batch.heartbeats.push(tickraft::groups::GroupHeartbeat {
            group: 3,
            term: 4,
            commit: 5,
            read_seq: 6,
        });
        let frame = encode_batch(&batch, 1 << 20).unwrap();
        for cut in 0..frame.len() {
            let _ = read(&frame[..cut], 1 << 20).await;
        }
        for i in 0..frame.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut bad = frame.clone();
                bad[i] ^= flip;
                if let Ok(payload) = read(&bad, 1 << 20).await {
                    let _ = decode_batch::<T>(&payload);
                    let _ = split_handshake(&payload);
                }
            }
        }
    }
}
