//! Bad input at the listener never panics and never stops it: each case below writes bad bytes with a raw
//! `TcpStream`, checks that the connection (or only the frame) is dropped with the right counter, then
//! checks that a good peer still gets through.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tickraft::{Network, NodeBatch};
use tickraft_network_tcp::wire::{
    self, Hello, HelloReply, RejectReason, StreamKind, MAX_HANDSHAKE_BYTES, PROTOCOL_VERSION,
};
use tickraft_network_tcp::TcpStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::*;

const MAX_FRAME: u32 = 64 * 1024;
/// A configured peer of node 1 that never runs: the raw client impersonates it.
const IMPERSONATED: u64 = 3;

struct Setup {
    node1: Node,
    node2: Node,
    marker: u64,
}

/// Node 1 (peers 2 and 3) and node 2 (peer 1), both real; node 3 is only a name in node 1's config.
async fn setup() -> Setup {
    let (l1, l2) = (free_listener().await, free_listener().await);
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let mut c1 = test_config(
        1,
        a1,
        BTreeMap::from([
            (2, a2.to_string()),
            (IMPERSONATED, "127.0.0.1:1".to_string()),
        ]),
    );
    c1.max_frame_bytes = MAX_FRAME;
    let mut c2 = test_config(2, a2, BTreeMap::from([(1, a1.to_string())]));
    c2.max_frame_bytes = MAX_FRAME;
    Setup {
        node1: start_node(c1, l1),
        node2: start_node(c2, l2),
        marker: 1000,
    }
}

impl Setup {
    /// Node 2 sends node 1 a fresh batch, which must arrive.
    async fn good_peer_gets_through(&mut self) {
        self.marker += 1;
        let marker = self.marker;
        self.node2.net.send(NodeBatch::new(2, 1, marker)).unwrap();
        let inbound = self.node1.inbound.clone();
        wait_until("a good peer gets through", Duration::from_secs(10), || {
            inbound.has_incarnation(2, marker)
        })
        .await;
    }

    fn stats(&self) -> TcpStats {
        self.node1.net.stats()
    }
}

/// Reads until the listener closes the connection; returns what it sent before.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the listener did not close the connection"),
        }
    }
}

/// Decodes the acceptor's reply from the raw bytes it sent.
async fn decode_reply(bytes: &[u8]) -> HelloReply<u64> {
    let mut reader = bytes;
    let payload = wire::read_frame(&mut reader, MAX_HANDSHAKE_BYTES)
        .await
        .unwrap();
    let (version, body) = wire::split_handshake(&payload).unwrap();
    assert_eq!(version, PROTOCOL_VERSION);
    wire::decode_payload(body).unwrap()
}

fn hello(from: u64) -> Hello<u64> {
    Hello {
        cluster_id: CLUSTER,
        from,
        to: 1,
        stream: StreamKind::Regular,
    }
}

/// Sends a handshake frame and returns the stream and the reply.
async fn raw_handshake(addr: SocketAddr, version: u16, hello: &Hello<u64>) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let frame = wire::encode_handshake(version, hello).unwrap();
    stream.write_all(&frame).await.unwrap();
    let mut len = [0u8; 4];
    let mut reply = Vec::new();
    if stream.read_exact(&mut len).await.is_ok() {
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).await.unwrap();
        reply.extend_from_slice(&len);
        reply.extend_from_slice(&body);
    }
    (stream, reply)
}

/// A raw connection that passed the handshake as node 3.
async fn authenticated(addr: SocketAddr) -> TcpStream {
    let (stream, reply) = raw_handshake(addr, PROTOCOL_VERSION, &hello(IMPERSONATED)).await;
    assert_eq!(decode_reply(&reply).await, HelloReply::Accepted { node: 1 });
    stream
}

#[tokio::test]
async fn garbage_bytes_are_refused() {
    let mut s = setup().await;
    s.good_peer_gets_through().await;

    // An HTTP request: "GET " read as a length prefix is ~1.2 GB, far above the handshake limit.
    let mut http = TcpStream::connect(s.node1.addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_until_closed(&mut http).await.is_empty());

    // A well-framed payload without the magic.
    let mut junk = TcpStream::connect(s.node1.addr).await.unwrap();
    junk.write_all(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .unwrap();
    assert!(read_until_closed(&mut junk).await.is_empty());

    // The magic and version, then a body that is not a Hello: answered `Malformed`.
    let mut frame = vec![0, 0, 0, 9];
    frame.extend_from_slice(b"TKRF");
    frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    frame.extend_from_slice(&[0xff, 0xff, 0xff]);
    let mut bad_body = TcpStream::connect(s.node1.addr).await.unwrap();
    bad_body.write_all(&frame).await.unwrap();
    let reply = read_until_closed(&mut bad_body).await;
    assert_eq!(
        decode_reply(&reply).await,
        HelloReply::Rejected(RejectReason::Malformed)
    );

    wait_until("3 refusals are counted", Duration::from_secs(10), || {
        s.stats().handshakes_rejected == 3
    })
    .await;
    s.good_peer_gets_through().await;
}

#[tokio::test]
async fn truncated_frames_drop_the_connection() {
    let mut s = setup().await;

    // A handshake frame cut short.
    let mut cut = TcpStream::connect(s.node1.addr).await.unwrap();
    cut.write_all(&[0, 0, 0, 50, b'T', b'K']).await.unwrap();
    cut.shutdown().await.unwrap();
    read_until_closed(&mut cut).await;
    wait_until("the refusal is counted", Duration::from_secs(10), || {
        s.stats().handshakes_rejected == 1
    })
    .await;

    // A data frame cut short after a good handshake.
    let mut stream = authenticated(s.node1.addr).await;
    stream
        .write_all(&[0, 0, 0, 100, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    read_until_closed(&mut stream).await;
    wait_until(
        "the dropped connection is counted",
        Duration::from_secs(10),
        || s.stats().connections_dropped == 1,
    )
    .await;
    assert_eq!(s.stats().batches_received, 0);
    s.good_peer_gets_through().await;
}

#[tokio::test]
async fn an_oversized_length_prefix_drops_the_connection() {
    let mut s = setup().await;

    // Before the handshake, the limit is 1 KiB.
    let mut early = TcpStream::connect(s.node1.addr).await.unwrap();
    early
        .write_all(&(MAX_HANDSHAKE_BYTES + 1).to_be_bytes())
        .await
        .unwrap();
    read_until_closed(&mut early).await;

    // After it, `max_frame_bytes`; nothing that large is ever allocated or read.
    let mut stream = authenticated(s.node1.addr).await;
    stream
        .write_all(&(MAX_FRAME + 1).to_be_bytes())
        .await
        .unwrap();
    read_until_closed(&mut stream).await;
    let mut huge = authenticated(s.node1.addr).await;
    huge.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    read_until_closed(&mut huge).await;

    wait_until("the drops are counted", Duration::from_secs(10), || {
        let stats = s.stats();
        stats.handshakes_rejected == 1 && stats.connections_dropped == 2
    })
    .await;
    s.good_peer_gets_through().await;
}

#[tokio::test]
async fn a_wrong_cluster_id_is_rejected() {
    let mut s = setup().await;
    let mut other = hello(IMPERSONATED);
    other.cluster_id = CLUSTER + 1;
    let (mut stream, reply) = raw_handshake(s.node1.addr, PROTOCOL_VERSION, &other).await;
    assert_eq!(
        decode_reply(&reply).await,
        HelloReply::Rejected(RejectReason::Cluster)
    );
    read_until_closed(&mut stream).await;
    assert_eq!(s.stats().handshakes_rejected, 1);
    s.good_peer_gets_through().await;
}

#[tokio::test]
async fn a_wrong_version_is_rejected() {
    let mut s = setup().await;
    let (mut stream, reply) =
        raw_handshake(s.node1.addr, PROTOCOL_VERSION + 1, &hello(IMPERSONATED)).await;
    assert_eq!(
        decode_reply(&reply).await,
        HelloReply::Rejected(RejectReason::Version {
            expected: PROTOCOL_VERSION
        })
    );
    read_until_closed(&mut stream).await;
    assert_eq!(s.stats().handshakes_rejected, 1);
    s.good_peer_gets_through().await;
}

#[tokio::test]
async fn an_unknown_node_id_is_rejected() {
    let mut s = setup().await;
    // A dialer that is not a configured peer.
    let (mut stream, reply) = raw_handshake(s.node1.addr, PROTOCOL_VERSION, &hello(77)).await;
    assert_eq!(
        decode_reply(&reply).await,
        HelloReply::Rejected(RejectReason::UnknownNode)
    );
    read_until_closed(&mut stream).await;

    // A dialer that meant to reach another node.
    let mut misdirected = hello(IMPERSONATED);
    misdirected.to = 2;
    let (mut stream, reply) = raw_handshake(s.node1.addr, PROTOCOL_VERSION, &misdirected).await;
    assert_eq!(
        decode_reply(&reply).await,
        HelloReply::Rejected(RejectReason::WrongNode)
    );
    read_until_closed(&mut stream).await;
    assert_eq!(s.stats().handshakes_rejected, 2);
    s.good_peer_gets_through().await;
}

#[tokio::test]
async fn bad_frames_from_an_authenticated_peer_are_dropped_alone() {
    let mut s = setup().await;
    let mut stream = authenticated(s.node1.addr).await;

    // A batch claiming to come from an unknown node, one claiming to come from node 2 (not the
    // authenticated node 3), one addressed to node 2, and a payload that is not a batch.
    for (from, to) in [(77, 1), (2, 1), (IMPERSONATED, 2)] {
        let frame = wire::encode_batch(&NodeBatch::<T>::new(from, to, 5), MAX_FRAME).unwrap();
        stream.write_all(&frame).await.unwrap();
    }
    stream
        .write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    // The connection stays up: a good batch on it is delivered.
    let good = wire::encode_batch(&NodeBatch::<T>::new(IMPERSONATED, 1, 6), MAX_FRAME).unwrap();
    stream.write_all(&good).await.unwrap();

    wait_until("the good batch arrives", Duration::from_secs(10), || {
        s.node1.inbound.has_incarnation(IMPERSONATED, 6)
    })
    .await;
    let stats = s.stats();
    assert_eq!(stats.frames_dropped, 4);
    assert_eq!(stats.batches_received, 1);
    assert!(!s.node1.inbound.has_incarnation(77, 5));
    assert!(!s.node1.inbound.has_incarnation(2, 5));
    s.good_peer_gets_through().await;
}

#[tokio::test]
async fn a_silent_client_is_timed_out() {
    let (listener, other) = (free_listener().await, free_listener().await);
    let addr = listener.local_addr().unwrap();
    let mut config = test_config(
        1,
        addr,
        BTreeMap::from([(2, other.local_addr().unwrap().to_string())]),
    );
    config.io_timeout = Duration::from_millis(200);
    let node = start_node(config, listener);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    read_until_closed(&mut silent).await;
    assert_eq!(node.net.stats().handshakes_rejected, 1);
}
