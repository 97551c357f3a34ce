//! Durable storage for tickraft on [sled](https://docs.rs/sled).
//!
//! This crate will hold a `LogStorage` backend with one sled database per node and one shared log tree for
//! all groups (keys: group id then index, big-endian), hard state and snapshot metadata per group, and one
//! flush per write batch across all groups.
