//! A deterministic cluster simulator for testing tickraft and applications built on it.

pub mod linearizability;
