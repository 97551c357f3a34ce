//! # tickraft
//!
//! A Raft consensus library whose core is a pure, synchronous, deterministic state machine.
//!
//! [`RaftCore`] never reads a clock, spawns a task or touches a file or socket. Time advances when the
//! caller calls [`RaftCore::tick`]; messages arrive through [`RaftCore::step`]; commands through
//! [`RaftCore::propose`]. The core answers with a [`Ready`]: messages to send, entries and hard state to
//! persist, committed entries to apply, reads to serve. The caller does the I/O and hands the token back
//! to [`RaftCore::advance`]. The order is enforced by the types: the messages that vouch for durable state
//! (vote answers, append acknowledgements) are only reachable after [`Ready::persisted`].
//!
//! ```ignore
//! let mut core = RaftCore::<Kv, _>::new(node_id, Config::default().validated()?, log_view, applied, seed)?;
//! core.tick()?;                                  // or core.step(from, msg)?; core.propose(data)?
//! if let Some(mut ready) = core.ready()? {
//!     network.send(ready.take_messages());       // safe before persisting
//!     log.write(ready.entries(), ready.hard_state())?;
//!     if ready.must_sync() { log.sync()?; }
//!     let mut persisted = ready.persisted();     // consumes the Ready
//!     network.send(persisted.take_messages());   // vote answers, append acks: only now
//!     state_machine.apply(persisted.committed());
//!     core.advance(persisted)?;
//! }
//! ```

pub mod config;
pub mod core;
pub mod error;
pub mod groups;
pub mod message;
pub mod network;
pub mod ready;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod storage;
pub mod types;

#[cfg(feature = "sim")]
pub mod sim;

pub use crate::config::{Config, ReadMode, ValidConfig};
pub use crate::core::{MembershipChange, RaftCore, Status};
pub use crate::error::{ConfigError, Error, StorageError};
pub use crate::groups::{Groups, GroupsConfig, GroupsError, NodeBatch};
pub use crate::message::{Envelope, Message, Rpc};
pub use crate::network::{Inbound, Network, NetworkError};
pub use crate::ready::{Persisted, ReadId, ReadState, Ready, SoftState, Writes};
pub use crate::storage::{InitialState, LogView};
pub use crate::types::{
    Entry, EntryPayload, HardState, Index, LogId, Membership, Payload, RaftTypeConfig, Role,
    Snapshot, SnapshotData, SnapshotMeta, Term,
};
