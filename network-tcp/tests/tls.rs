//! Mutual TLS: certificates made in the test by a CA (rcgen); a round trip between two nodes of the CA;
//! a node whose certificate comes from another CA is refused in both directions.

#![cfg(feature = "tls")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tickraft::{Network, NodeBatch};
use tickraft_network_tcp::TlsConfig;

use common::*;

const SERVER_NAME: &str = "tickraft.test";

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// A node certificate usable both as server and as client, with the shared server name.
    fn node(&self, id: u64, trusting: &Ca) -> TlsConfig {
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("node-{id}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TlsConfig {
            ca_cert_pem: trusting.issuer.pem(),
            cert_chain_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            server_name: SERVER_NAME.to_string(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_round_trip_and_a_foreign_ca_is_refused() {
    let ca = Ca::new("tickraft test CA");
    let rogue_ca = Ca::new("another CA");

    let (l1, l2, l3) = (
        free_listener().await,
        free_listener().await,
        free_listener().await,
    );
    let (a1, a2, a3) = (
        l1.local_addr().unwrap(),
        l2.local_addr().unwrap(),
        l3.local_addr().unwrap(),
    );
    let peers = |ids: &[(u64, std::net::SocketAddr)]| -> BTreeMap<u64, String> {
        ids.iter().map(|(id, a)| (*id, a.to_string())).collect()
    };
    let mut c1 = test_config(1, a1, peers(&[(2, a2), (3, a3)]));
    c1.tls = Some(ca.node(1, &ca));
    let mut c2 = test_config(2, a2, peers(&[(1, a1)]));
    c2.tls = Some(ca.node(2, &ca));
    // Node 3 is a configured peer of node 1, but its certificate comes from another CA. It trusts node
    // 1's CA, so the refusal below comes from node 1 checking node 3's client certificate.
    let mut c3 = test_config(3, a3, peers(&[(1, a1)]));
    c3.tls = Some(rogue_ca.node(3, &ca));
    let node1 = start_node(c1, l1);
    let node2 = start_node(c2, l2);
    let node3 = start_node(c3, l3);

    // Round trip between the two nodes of the CA.
    for seq in 0..100 {
        node1.net.send(NodeBatch::new(1, 2, seq)).unwrap();
        node2.net.send(NodeBatch::new(2, 1, seq)).unwrap();
    }
    wait_until("the round trip completes", Duration::from_secs(10), || {
        node2.inbound.count() == 100 && node1.inbound.has_incarnation(2, 99)
    })
    .await;

    // Node 3 dials node 1: node 1 refuses its certificate.
    for _ in 0..20 {
        let _ = node3.net.send(NodeBatch::new(3, 1, 1));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_until("node 1 refuses node 3", Duration::from_secs(10), || {
        node1.net.stats().handshakes_rejected >= 1 && node3.inbound.unreachable_count(1) >= 1
    })
    .await;
    assert!(!node1.inbound.has_incarnation(3, 1));

    // Node 1 dials node 3: node 1 refuses node 3's server certificate and reports it unreachable.
    let _ = node1.net.send(NodeBatch::new(1, 3, 1));
    wait_until(
        "node 1 reports node 3 unreachable",
        Duration::from_secs(10),
        || node1.inbound.unreachable_count(3) >= 1,
    )
    .await;
    assert_eq!(node3.inbound.count(), 0);
    assert_eq!(node3.net.stats().connections_accepted, 0);
    println!("node 1: {:?}", node1.net.stats());

    for node in [&node1, &node2, &node3] {
        node.net.shutdown().await;
    }
}

#[tokio::test]
async fn bad_pem_is_a_typed_error() {
    let listener = free_listener().await;
    let addr = listener.local_addr().unwrap();
    let mut config = test_config(1, addr, BTreeMap::new());
    config.tls = Some(TlsConfig {
        ca_cert_pem: "not a pem".into(),
        cert_chain_pem: String::new(),
        private_key_pem: String::new(),
        server_name: SERVER_NAME.into(),
    });
    let inbound = std::sync::Arc::new(Recorder::default());
    let err = tickraft_network_tcp::TcpNetwork::<T>::with_listener(config, listener, inbound)
        .unwrap_err();
    assert!(
        matches!(err, tickraft_network_tcp::TcpError::Tls(_)),
        "{err}"
    );
    println!("{err}");
}
