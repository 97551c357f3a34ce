//! In-memory storage for tickraft.
//!
//! This crate will hold a fast in-memory `LogStorage` (with the ability to drop every write that was not
//! synced, to simulate a crash) and `StateMachine` helpers used by the tests, the simulator and the examples.
