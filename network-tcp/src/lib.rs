//! TCP transport for tickraft.
//!
//! This crate will hold a `Network` implementation on tokio: one connection per peer node shared by all
//! groups, length-delimited postcard frames with an explicit maximum size, a versioned handshake, bounded
//! per-peer queues that drop rather than block, and reconnection with backoff and jitter.
