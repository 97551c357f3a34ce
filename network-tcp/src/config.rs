//! The transport's configuration and its validation.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::Duration;

use validator::{Validate, ValidationError, ValidationErrors};

/// Configuration of one node's transport.
///
/// Build it with [`TcpConfig::new`], which fills in the defaults, then set the peers and anything else:
///
/// ```
/// use tickraft_network_tcp::TcpConfig;
///
/// let mut config = TcpConfig::new(1u64, 0xC0FFEE, "127.0.0.1:7001".parse().unwrap());
/// config.peers.insert(2, "127.0.0.1:7002".to_string());
/// config.peers.insert(3, "node-3.internal:7003".to_string());
/// assert!(config.check().is_ok());
///
/// config.queue_len = 0;
/// assert_eq!(config.check().unwrap_err().field(), "queue_len");
/// ```
#[derive(Clone, PartialEq, Eq, Validate)]
#[validate(schema(function = "check_cross_field_rules", skip_on_field_errors = true))]
pub struct TcpConfig<N: Ord + fmt::Debug> {
    /// This node's id, sent in every handshake.
    pub node_id: N,
    /// The cluster this node belongs to. Connections between nodes of different clusters are refused, so
    /// that two clusters sharing hosts and ports cannot talk to each other by mistake.
    pub cluster_id: u64,
    /// Where to accept connections from peers.
    pub listen_addr: SocketAddr,
    /// Every peer this node talks to and accepts connections from: node id → `host:port`. Host names are
    /// resolved at each connection attempt. Must not contain `node_id`.
    pub peers: BTreeMap<N, String>,
    /// The largest frame payload sent or accepted, in bytes. Must exceed the largest batch (in particular
    /// the snapshot chunk size, `Config::max_snapshot_chunk_bytes`, plus a few hundred bytes). A larger outgoing
    /// batch is split across several frames; a single message that does not fit is dropped.
    #[validate(range(min = 1024, message = "must be at least 1024"))]
    pub max_frame_bytes: u32,
    /// How many batches may wait for each peer's regular stream before `send` drops.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub queue_len: usize,
    /// How many batches of snapshot chunks may wait for each peer's snapshot stream before `send` drops.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub snapshot_queue_len: usize,
    /// The first reconnection delay after a failure; it doubles on each further failure.
    pub backoff_min: Duration,
    /// The largest reconnection delay.
    pub backoff_max: Duration,
    /// The longest a connection attempt, a handshake, or one write may take before the connection is
    /// considered failed.
    pub io_timeout: Duration,
    /// Mutual TLS. `Some` requires the crate's `tls` feature.
    pub tls: Option<TlsConfig>,
}

impl<N: Ord + fmt::Debug> TcpConfig<N> {
    /// A configuration with no peers and the defaults: 16 MiB frames, queues of 1024 batches (4 for
    /// snapshots), backoff from 50 ms to 5 s, a 10 s i/o timeout, no TLS.
    pub fn new(node_id: N, cluster_id: u64, listen_addr: SocketAddr) -> Self {
        TcpConfig {
            node_id,
            cluster_id,
            listen_addr,
            peers: BTreeMap::new(),
            max_frame_bytes: 16 * 1024 * 1024,
            queue_len: 1024,
            snapshot_queue_len: 4,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl<N: Ord + Hash + fmt::Debug> TcpConfig<N> {
    /// Checks every rule; the error names the first offending field (fields in declaration order, then
    /// the rules that relate several fields).
    pub fn check(&self) -> Result<(), TcpConfigError> {
        self.validate().map_err(|errors| first_error(&errors))
    }
}

impl<N: Ord + fmt::Debug> fmt::Debug for TcpConfig<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpConfig")
            .field("node_id", &self.node_id)
            .field("cluster_id", &self.cluster_id)
            .field("listen_addr", &self.listen_addr)
            .field("peers", &self.peers)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("queue_len", &self.queue_len)
            .field("snapshot_queue_len", &self.snapshot_queue_len)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("io_timeout", &self.io_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Mutual TLS settings: every node presents a certificate signed by the cluster's CA and checks that its
/// peer does too. Certificates and key are PEM text.
///
/// The acceptor requires and verifies a client certificate; the dialer verifies the acceptor's
/// certificate against `server_name`, so every node's certificate must carry that name as a DNS subject
/// alternative name. Node ids are still taken from the handshake inside the encrypted stream: any holder of
/// a certificate of the CA is trusted to state its own node id.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificate(s) that sign every node's certificate (PEM, one or more).
    pub ca_cert_pem: String,
    /// This node's certificate chain, leaf first (PEM).
    pub cert_chain_pem: String,
    /// This node's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key_pem: String,
    /// The DNS name every node's certificate carries, checked by dialers.
    pub server_name: String,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "ca_cert_pem",
                &format_args!("{} bytes", self.ca_cert_pem.len()),
            )
            .field(
                "cert_chain_pem",
                &format_args!("{} bytes", self.cert_chain_pem.len()),
            )
            .field("private_key_pem", &format_args!("<redacted>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// A configuration rule that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport config: `{field}` {rule}")]
pub struct TcpConfigError {
    field: String,
    rule: String,
}

impl TcpConfigError {
    pub(crate) fn new(field: &str, rule: impl Into<String>) -> Self {
        TcpConfigError {
            field: field.to_string(),
            rule: rule.into(),
        }
    }

    /// The name of the offending field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The rule the field broke, in words.
    pub fn rule(&self) -> &str {
        &self.rule
    }
}

const FIELD_ORDER: &[&str] = &["max_frame_bytes", "queue_len", "snapshot_queue_len"];

fn first_error(errors: &ValidationErrors) -> TcpConfigError {
    let fields = errors.field_errors();
    for name in FIELD_ORDER {
        if let Some(error) = fields.get(*name).and_then(|list| list.first()) {
            return TcpConfigError::new(name, describe(error));
        }
    }
    // Cross-field rules put the offending field's name in the error code.
    for list in fields.values() {
        if let Some(error) = list.first() {
            return TcpConfigError::new(error.code.as_ref(), describe(error));
        }
    }
    TcpConfigError::new("config", "is invalid")
}

fn describe(error: &ValidationError) -> String {
    match &error.message {
        Some(message) => message.to_string(),
        None => error.code.to_string(),
    }
}

fn rule(field: &'static str, message: impl Into<Cow<'static, str>>) -> ValidationError {
    ValidationError::new(field).with_message(message.into())
}

/// True if `addr` looks like `host:port` (the host is resolved only when dialing).
pub(crate) fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

fn check_cross_field_rules<N: Ord + fmt::Debug>(
    config: &TcpConfig<N>,
) -> Result<(), ValidationError> {
    if config.peers.contains_key(&config.node_id) {
        return Err(rule("peers", "must not contain this node's own id"));
    }
    for (node, addr) in &config.peers {
        if !is_host_port(addr) {
            return Err(rule(
                "peers",
                format!("address {addr:?} of node {node:?} is not host:port"),
            ));
        }
    }
    if config.backoff_min.is_zero() {
        return Err(rule("backoff_min", "must be positive"));
    }
    if config.backoff_max < config.backoff_min {
        return Err(rule("backoff_max", "must be at least backoff_min"));
    }
    if config.io_timeout.is_zero() {
        return Err(rule("io_timeout", "must be positive"));
    }
    if let Some(tls) = &config.tls {
        if !cfg!(feature = "tls") {
            return Err(rule(
                "tls",
                "requires the `tls` feature of tickraft-network-tcp",
            ));
        }
        if tls.server_name.is_empty() {
            return Err(rule("tls", "server_name must not be empty"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> TcpConfig<u64> {
        let mut config = TcpConfig::new(1, 7, "127.0.0.1:0".parse().unwrap());
        config.peers.insert(2, "127.0.0.1:9".to_string());
        config
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(valid().check(), Ok(()));
    }

    #[test]
    fn each_rule_names_its_field() {
        type BreakIt = Box<dyn Fn(&mut TcpConfig<u64>)>;
        let cases: Vec<(&str, BreakIt)> = vec![
            ("max_frame_bytes", Box::new(|c| c.max_frame_bytes = 10)),
            ("queue_len", Box::new(|c| c.queue_len = 0)),
            ("snapshot_queue_len", Box::new(|c| c.snapshot_queue_len = 0)),
            (
                "peers",
                Box::new(|c| {
                    c.peers.insert(1, "127.0.0.1:1".into());
                }),
            ),
            (
                "peers",
                Box::new(|c| {
                    c.peers.insert(3, "no-port".into());
                }),
            ),
            ("backoff_min", Box::new(|c| c.backoff_min = Duration::ZERO)),
            (
                "backoff_max",
                Box::new(|c| c.backoff_max = Duration::from_millis(1)),
            ),
            ("io_timeout", Box::new(|c| c.io_timeout = Duration::ZERO)),
        ];
        for (field, break_it) in cases {
            let mut config = valid();
            break_it(&mut config);
            let err = config.check().expect_err(field);
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn the_private_key_is_not_printed() {
        let tls = TlsConfig {
            ca_cert_pem: "ca".into(),
            cert_chain_pem: "cert".into(),
            private_key_pem: "SECRET".into(),
            server_name: "node".into(),
        };
        assert!(!format!("{tls:?}").contains("SECRET"));
    }
}
