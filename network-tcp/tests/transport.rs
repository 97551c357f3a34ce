//! End-to-end behaviour over loopback: round trips, reconnection, dropping on full queues, the separate
//! snapshot stream, shutdown.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickraft::{Network, NetworkError, NodeBatch};
use tickraft_network_tcp::{TcpError, TcpNetwork};
use tokio::net::TcpListener;

use common::*;

/// Sends `batch`, retrying while the queue is full (the test wants every batch through).
async fn send_all(net: &TcpNetwork<T>, batch: NodeBatch<T>) {
    loop {
        match net.send(batch.clone()) {
            Ok(()) => return,
            Err(NetworkError::QueueFull { .. }) => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_thousands_of_batches_in_order() {
    const BATCHES: u64 = 3000;
    let nodes = cluster(3, |_| {}).await;
    let payload = Bytes::from(vec![7u8; 100]);

    let start = Instant::now();
    tokio::join!(
        send_stream(&nodes[0], BATCHES, payload.clone()),
        send_stream(&nodes[1], BATCHES, payload.clone()),
        send_stream(&nodes[2], BATCHES, payload.clone()),
    );

    for node in &nodes {
        wait_until("every batch arrives", Duration::from_secs(30), || {
            node.inbound.count() == 2 * BATCHES as usize
        })
        .await;
    }
    let elapsed = start.elapsed();
    for node in &nodes {
        let batches = node.inbound.batches.lock().unwrap();
        let mut next: HashMap<u64, u64> = HashMap::new();
        for batch in batches.iter() {
            assert_eq!(batch.to, node.net.node_id());
            let expected = next.entry(batch.from).or_insert(0);
            assert_eq!(
                batch.incarnation, *expected,
                "in order, without loss or duplicates"
            );
            assert_eq!(batch.messages.len(), 1);
            assert_eq!(batch.heartbeats, vec![heartbeat(*expected % 10, *expected)]);
            *expected += 1;
        }
        let stats = node.net.stats();
        assert_eq!(stats.batches_received, 2 * BATCHES);
        assert_eq!(stats.frames_dropped + stats.connections_dropped, 0);
    }
    println!("3 nodes exchanged {} batches in {elapsed:?}", 6 * BATCHES);
    for node in &nodes {
        node.net.shutdown().await;
    }
}

/// Sends `count` batches to every other node of a 3-node cluster, numbered by their incarnation.
async fn send_stream(node: &Node, count: u64, payload: Bytes) {
    let me = node.net.node_id();
    let targets: Vec<u64> = (1..=3).filter(|&p| p != me).collect();
    for seq in 0..count {
        for &to in &targets {
            // The incarnation carries the sequence number, so that order can be checked.
            let mut batch = NodeBatch::new(me, to, seq);
            batch
                .messages
                .push(append(seq % 10, seq + 1, payload.clone()));
            batch.heartbeats.push(heartbeat(seq % 10, seq));
            send_all(&node.net, batch).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_reconnected_to() {
    let mut nodes = cluster(2, |_| {}).await;
    let node2 = nodes.pop().unwrap();
    let node1 = nodes.pop().unwrap();
    let addr2 = node2.addr;

    node1.net.send(NodeBatch::new(1, 2, 1)).unwrap();
    wait_until("the first batch arrives", Duration::from_secs(10), || {
        node2.inbound.has_incarnation(1, 1)
    })
    .await;

    // Node 2 goes away: node 1 notices the closed connection and reports it once.
    node2.net.shutdown().await;
    drop(node2);
    wait_until(
        "node 1 reports node 2 unreachable",
        Duration::from_secs(10),
        || node1.inbound.unreachable_count(2) >= 1,
    )
    .await;
    for _ in 0..5 {
        // Sent while node 2 is down: dropped or queued, never blocking.
        let _ = node1.net.send(NodeBatch::new(1, 2, 2));
    }

    // Node 2 comes back on the same port, with a new incarnation.
    let listener = TcpListener::bind(addr2).await.unwrap();
    let peers = BTreeMap::from([(1, node1.addr.to_string())]);
    let node2 = start_node(test_config(2, addr2, peers), listener);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node2.inbound.has_incarnation(1, 3) {
        assert!(
            Instant::now() < deadline,
            "node 1 never reconnected to node 2"
        );
        let _ = node1.net.send(NodeBatch::new(1, 2, 3));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = node1.net.stats();
    println!("node 1 after the restart: {stats:?}");
    assert!(stats.connections_established >= 2);
    assert!(stats.connection_failures >= 1);
    // And the other direction works too: node 2 dials node 1.
    node2.net.send(NodeBatch::new(2, 1, 9)).unwrap();
    wait_until("node 2's batch arrives", Duration::from_secs(10), || {
        node1.inbound.has_incarnation(2, 9)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_reports_instead_of_blocking() {
    // Node 2's address accepts TCP connections but never answers the handshake, so node 1's writer is
    // stuck in the handshake and drains nothing.
    let black_hole = free_listener().await;
    let hole_addr = black_hole.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = black_hole.accept().await {
            held.push(stream);
        }
    });

    let listener = free_listener().await;
    let addr = listener.local_addr().unwrap();
    let mut config = test_config(1, addr, BTreeMap::from([(2, hole_addr.to_string())]));
    config.queue_len = 8;
    config.snapshot_queue_len = 2;
    config.io_timeout = Duration::from_secs(30);
    let node = start_node(config, listener);

    let start = Instant::now();
    let mut queued = 0;
    let mut dropped = 0;
    for seq in 0..100 {
        match node.net.send(NodeBatch::new(1, 2, seq)) {
            Ok(()) => queued += 1,
            Err(NetworkError::QueueFull { peer }) => {
                assert_eq!(peer, "2");
                dropped += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let elapsed = start.elapsed();
    println!("100 sends: {queued} queued, {dropped} dropped, in {elapsed:?}");
    assert_eq!(queued, 8);
    assert_eq!(dropped, 92);
    assert!(elapsed < Duration::from_secs(1), "send must not block");

    // The snapshot queue is separate and bounded too.
    let mut snapshot_dropped = 0;
    for _ in 0..10 {
        let mut batch = NodeBatch::new(1, 2, 0);
        batch
            .messages
            .push(snapshot_chunk(1, Bytes::from_static(b"chunk")));
        if let Err(NetworkError::QueueFull { .. }) = node.net.send(batch) {
            snapshot_dropped += 1;
        }
    }
    // 2 wait in the queue, and the writer may have taken 1 to open the connection.
    assert!((7..=8).contains(&snapshot_dropped), "{snapshot_dropped}");
    assert_eq!(node.net.stats().dropped_queue_full, 92 + snapshot_dropped);
    node.net.shutdown().await;
    accepted.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_snapshot_does_not_delay_heartbeats() {
    const SNAPSHOT_BYTES: usize = 5 * 1024 * 1024;
    let nodes = cluster(2, |c| c.max_frame_bytes = 8 * 1024 * 1024).await;
    let (node1, node2) = (&nodes[0], &nodes[1]);

    // Open both streams first, so that connection set-up does not decide the race.
    let mut warm = NodeBatch::new(1, 2, 0);
    warm.messages
        .push(snapshot_chunk(1, Bytes::from_static(b"small")));
    warm.heartbeats.push(heartbeat(2, 999));
    node1.net.send(warm).unwrap();
    wait_until("both streams are up", Duration::from_secs(10), || {
        node2.inbound.count() == 2
    })
    .await;

    // One batch holding a 5 MB chunk and a heartbeat, then 50 heartbeat batches.
    let mut big = NodeBatch::new(1, 2, 1);
    big.messages
        .push(snapshot_chunk(1, Bytes::from(vec![0xAB; SNAPSHOT_BYTES])));
    big.heartbeats.push(heartbeat(2, 0));
    node1.net.send(big).unwrap();
    for seq in 1..=50 {
        let mut batch = NodeBatch::new(1, 2, 1);
        batch.heartbeats.push(heartbeat(2, seq));
        node1.net.send(batch).unwrap();
    }
    wait_until("everything arrives", Duration::from_secs(30), || {
        node2.inbound.count() == 2 + 1 + 1 + 50
    })
    .await;

    let batches = node2.inbound.batches.lock().unwrap();
    let order: Vec<String> = batches[2..]
        .iter()
        .map(|b| {
            if is_snapshot(b) {
                "SNAPSHOT".to_string()
            } else {
                format!("hb{}", b.heartbeats[0].read_seq)
            }
        })
        .collect();
    let snapshot_at = order.iter().position(|s| s == "SNAPSHOT").unwrap();
    println!("arrival order: {}", order.join(" "));
    println!("{snapshot_at} heartbeat batches overtook the 5 MB snapshot chunk");
    // The heartbeat that travelled in the same batch as the chunk was split off onto the regular stream.
    let big_chunk = batches
        .iter()
        .find(|b| is_snapshot(b) && b.incarnation == 1)
        .unwrap();
    assert!(big_chunk.heartbeats.is_empty());
    // On one shared stream the chunk would arrive before all 51 heartbeats; here the heartbeats go first.
    assert!(
        snapshot_at >= 1,
        "a heartbeat sent after the chunk must arrive before it"
    );
    assert_eq!(order[0], "hb0");
}

#[tokio::test]
async fn shutdown_stops_every_task_and_frees_the_port() {
    let nodes = cluster(2, |_| {}).await;
    nodes[0].net.send(NodeBatch::new(1, 2, 1)).unwrap();
    wait_until("delivery", Duration::from_secs(10), || {
        nodes[1].inbound.count() == 1
    })
    .await;

    nodes[1].net.shutdown().await;
    assert_eq!(
        nodes[1].net.send(NodeBatch::new(2, 1, 1)),
        Err(NetworkError::Shutdown)
    );
    // The listener is closed: the port can be bound again, and the peer noticed the lost connection.
    let again = TcpListener::bind(nodes[1].addr).await;
    assert!(again.is_ok(), "{again:?}");
    wait_until("node 1 notices", Duration::from_secs(10), || {
        nodes[0].inbound.unreachable_count(2) >= 1
    })
    .await;
    nodes[1].net.shutdown().await; // idempotent
    nodes[0].net.shutdown().await;
}

#[tokio::test]
async fn unknown_peers_and_bad_configs_are_typed_errors() {
    let nodes = cluster(2, |_| {}).await;
    assert_eq!(
        nodes[0].net.send(NodeBatch::new(1, 99, 0)),
        Err(NetworkError::UnknownPeer { peer: "99".into() })
    );

    let mut config = test_config(1, "127.0.0.1:0".parse().unwrap(), BTreeMap::new());
    config.queue_len = 0;
    let inbound = std::sync::Arc::new(Recorder::default());
    match TcpNetwork::<T>::start(config, inbound).await {
        Err(TcpError::Config(e)) => assert_eq!(e.field(), "queue_len"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_too_big_for_one_frame_is_split_and_a_message_too_big_is_dropped() {
    let nodes = cluster(2, |c| c.max_frame_bytes = 4096).await;
    // 20 appends of 1 KiB do not fit in one 4 KiB frame: they travel in several.
    let mut batch = NodeBatch::new(1, 2, 1);
    for i in 0..20 {
        batch
            .messages
            .push(append(i, 1, Bytes::from(vec![1u8; 1024])));
    }
    batch.heartbeats.push(heartbeat(1, 1));
    // A single 8 KiB append cannot fit at all: it alone is dropped.
    batch
        .messages
        .push(append(99, 1, Bytes::from(vec![2u8; 8192])));
    nodes[0].net.send(batch).unwrap();

    wait_until("the pieces arrive", Duration::from_secs(10), || {
        let batches = nodes[1].inbound.batches.lock().unwrap();
        batches.iter().map(|b| b.messages.len()).sum::<usize>() == 20
    })
    .await;
    let batches = nodes[1].inbound.batches.lock().unwrap();
    let mut groups: Vec<u64> = batches
        .iter()
        .flat_map(|b| b.messages.iter().map(|m| m.group))
        .collect();
    groups.sort();
    assert_eq!(groups, (0..20).collect::<Vec<_>>());
    assert_eq!(batches.iter().map(|b| b.heartbeats.len()).sum::<usize>(), 1);
    assert!(batches.len() >= 5, "{} frames", batches.len());
    assert!(batches.iter().all(|b| b.incarnation == 1));
    assert_eq!(nodes[0].net.stats().dropped_oversized, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_can_be_added_and_removed_at_run_time() {
    let (l1, l2) = (free_listener().await, free_listener().await);
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    // Node 1 starts without peers; node 2 knows node 1.
    let node1 = start_node(test_config(1, a1, BTreeMap::new()), l1);
    let node2 = start_node(
        test_config(2, a2, BTreeMap::from([(1, a1.to_string())])),
        l2,
    );

    // Node 1 refuses node 2 while it is not a peer.
    let _ = node2.net.send(NodeBatch::new(2, 1, 1));
    wait_until("node 1 refuses node 2", Duration::from_secs(10), || {
        node1.net.stats().handshakes_rejected >= 1
    })
    .await;
    assert_eq!(
        node1.net.send(NodeBatch::new(1, 2, 1)),
        Err(NetworkError::UnknownPeer { peer: "2".into() })
    );

    // Added: both directions work.
    assert!(node1.net.add_peer(1, a2.to_string()).is_err());
    assert!(node1.net.add_peer(2, "nonsense").is_err());
    node1.net.add_peer(2, a2.to_string()).unwrap();
    assert_eq!(node1.net.peers(), vec![(2, a2.to_string())]);
    node1.net.send(NodeBatch::new(1, 2, 2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node1.inbound.has_incarnation(2, 3) {
        assert!(Instant::now() < deadline, "node 2 never got through");
        let _ = node2.net.send(NodeBatch::new(2, 1, 3));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until("node 1's batch arrives", Duration::from_secs(10), || {
        node2.inbound.has_incarnation(1, 2)
    })
    .await;

    // Removed: sends are refused and node 2's connection is closed at its next frame.
    assert!(node1.net.remove_peer(2));
    assert!(!node1.net.remove_peer(2));
    assert!(matches!(
        node1.net.send(NodeBatch::new(1, 2, 4)),
        Err(NetworkError::UnknownPeer { .. })
    ));
    let _ = node2.net.send(NodeBatch::new(2, 1, 4));
    wait_until("node 2 is cut off", Duration::from_secs(10), || {
        node2.inbound.unreachable_count(1) >= 1
    })
    .await;
    assert!(!node1.inbound.has_incarnation(2, 4));
}
