//! In-memory [`StateMachine`] helpers: a string key-value store and a machine built from a closure.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use tickraft::storage::{AppliedState, Snapshot, SnapshotMeta, StateMachine};
use tickraft::{Entry, EntryPayload, LogId, Membership, RaftTypeConfig, StorageError};

/// Checks that `entries` continue `applied` exactly (consecutive indexes starting at `applied + 1`).
fn check_continues<C: RaftTypeConfig>(
    group: &C::GroupId,
    applied: LogId,
    entries: &[Entry<C>],
) -> Result<(), StorageError> {
    for (expected, entry) in (applied.index + 1..).zip(entries) {
        if entry.index != expected {
            return Err(StorageError::invalid_write(
                group,
                format!(
                    "state machine applied up to {}: entry {} does not continue it (expected {expected})",
                    applied.index, entry.index
                ),
            ));
        }
    }
    Ok(())
}

/// A command of the [`KvStateMachine`], carried as the `Bytes` payload of a log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Set {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
}

const TAG_SET: u8 = 1;
const TAG_DELETE: u8 = 2;

impl KvCommand {
    /// The command as an entry payload: a tag byte, then each string as a big-endian `u64` length and its
    /// UTF-8 bytes.
    pub fn encode(&self) -> Bytes {
        fn put_str(out: &mut BytesMut, s: &str) {
            out.put_u64(s.len() as u64);
            out.put_slice(s.as_bytes());
        }
        let mut out = BytesMut::new();
        match self {
            KvCommand::Set { key, value } => {
                out.put_u8(TAG_SET);
                put_str(&mut out, key);
                put_str(&mut out, value);
            }
            KvCommand::Delete { key } => {
                out.put_u8(TAG_DELETE);
                put_str(&mut out, key);
            }
        }
        out.freeze()
    }

    /// Decodes a payload made by [`encode`](Self::encode). Any other input is an error describing why.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (&tag, mut rest) = bytes.split_first().ok_or("empty command")?;
        let mut take = || -> Result<String, String> {
            let (len, tail) = rest
                .split_first_chunk::<8>()
                .ok_or("truncated string length")?;
            let len = usize::try_from(u64::from_be_bytes(*len)).map_err(|_| "string too long")?;
            if tail.len() < len {
                return Err("truncated string".to_string());
            }
            let (s, tail) = tail.split_at(len);
            rest = tail;
            String::from_utf8(s.to_vec()).map_err(|_| "string is not UTF-8".to_string())
        };
        let command = match tag {
            TAG_SET => KvCommand::Set {
                key: take()?,
                value: take()?,
            },
            TAG_DELETE => KvCommand::Delete { key: take()? },
            other => return Err(format!("unknown command tag {other}")),
        };
        if !rest.is_empty() {
            return Err(format!("{} trailing bytes", rest.len()));
        }
        Ok(command)
    }
}

/// What applying an entry to the [`KvStateMachine`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvResponse {
    /// The command was applied; `previous` is the key's value before it.
    Done {
        /// The value before the command, if the key existed.
        previous: Option<String>,
    },
    /// The entry carried no command (a leader's blank entry or a membership change).
    Noop,
    /// The payload is not a valid command. Every replica rejects it alike and moves on.
    Rejected {
        /// Why the payload could not be decoded.
        reason: String,
    },
}

/// An in-memory string key-value store, the state machine of the examples.
///
/// Entries carry [`KvCommand`]s encoded with [`KvCommand::encode`]; snapshots are the whole map encoded
/// with postcard. Nothing is durable: after a restart the machine reports index 0 (or the snapshot it
/// was restored from) and the log is replayed.
#[derive(Debug, Clone)]
pub struct KvStateMachine<C: RaftTypeConfig> {
    group: C::GroupId,
    map: BTreeMap<String, String>,
    applied: LogId,
    membership: Membership<C>,
}

impl<C> KvStateMachine<C>
where
    C: RaftTypeConfig<Data = Bytes, Snapshot = Bytes>,
{
    /// An empty store for `group` (the group id only labels errors).
    pub fn new(group: C::GroupId) -> Self {
        KvStateMachine {
            group,
            map: BTreeMap::new(),
            applied: LogId::default(),
            membership: Membership::default(),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// Every key and value, in key order.
    pub fn map(&self) -> &BTreeMap<String, String> {
        &self.map
    }
}

#[async_trait]
impl<C> StateMachine<C> for KvStateMachine<C>
where
    C: RaftTypeConfig<Data = Bytes, Snapshot = Bytes>,
{
    type Response = KvResponse;

    async fn applied_state(&mut self) -> Result<AppliedState<C>, StorageError> {
        Ok(AppliedState {
            applied: self.applied,
            membership: self.membership.clone(),
        })
    }

    async fn apply(&mut self, entries: &[Entry<C>]) -> Result<Vec<KvResponse>, StorageError> {
        check_continues(&self.group, self.applied, entries)?;
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            let response = match &entry.payload {
                EntryPayload::Blank => KvResponse::Noop,
                EntryPayload::Membership(m) => {
                    self.membership = m.clone();
                    KvResponse::Noop
                }
                EntryPayload::Normal(data) => match KvCommand::decode(data) {
                    Ok(KvCommand::Set { key, value }) => KvResponse::Done {
                        previous: self.map.insert(key, value),
                    },
                    Ok(KvCommand::Delete { key }) => KvResponse::Done {
                        previous: self.map.remove(&key),
                    },
                    Err(reason) => KvResponse::Rejected { reason },
                },
            };
            self.applied = entry.log_id();
            responses.push(response);
        }
        Ok(responses)
    }

    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError> {
        let data = postcard::to_allocvec(&self.map).map_err(StorageError::backend)?;
        Ok(Snapshot {
            meta: SnapshotMeta {
                index: self.applied.index,
                term: self.applied.term,
                membership: self.membership.clone(),
            },
            data: Bytes::from(data),
        })
    }

    async fn install_snapshot(&mut self, snapshot: Snapshot<C>) -> Result<(), StorageError> {
        let map: BTreeMap<String, String> = postcard::from_bytes(&snapshot.data).map_err(|e| {
            StorageError::corrupt(
                &self.group,
                Some(snapshot.meta.index),
                format!("snapshot data cannot be decoded: {e}"),
            )
        })?;
        self.map = map;
        self.applied = snapshot.meta.log_id();
        self.membership = snapshot.meta.membership;
        Ok(())
    }
}

/// A state machine built from a closure: the state is the application's snapshot type itself, and
/// `apply` is called with each normal entry's data. Blank and membership entries respond `None`.
///
/// ```
/// # use tickraft::RaftTypeConfig;
/// # #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
/// # struct Counter;
/// # impl RaftTypeConfig for Counter {
/// #     type NodeId = u64; type GroupId = u64; type Data = u64; type Snapshot = u64;
/// # }
/// use tickraft_storage_mem::FnStateMachine;
/// // A counter: each entry adds its value and returns the new total.
/// let machine = FnStateMachine::<Counter, _, _>::new(1, 0, |total: &mut u64, add: &u64| {
///     *total += add;
///     *total
/// });
/// assert_eq!(*machine.state(), 0);
/// ```
pub struct FnStateMachine<C, R, F>
where
    C: RaftTypeConfig,
{
    group: C::GroupId,
    state: C::Snapshot,
    applied: LogId,
    membership: Membership<C>,
    apply: F,
    _response: std::marker::PhantomData<fn() -> R>,
}

impl<C, R, F> FnStateMachine<C, R, F>
where
    C: RaftTypeConfig,
    F: FnMut(&mut C::Snapshot, &C::Data) -> R + Send,
    R: Send + 'static,
{
    /// A machine for `group` starting from `initial` (nothing applied yet).
    pub fn new(group: C::GroupId, initial: C::Snapshot, apply: F) -> Self {
        FnStateMachine {
            group,
            state: initial,
            applied: LogId::default(),
            membership: Membership::default(),
            apply,
            _response: std::marker::PhantomData,
        }
    }

    /// The current state.
    pub fn state(&self) -> &C::Snapshot {
        &self.state
    }
}

impl<C: RaftTypeConfig, R, F> std::fmt::Debug for FnStateMachine<C, R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnStateMachine")
            .field("group", &self.group)
            .field("state", &self.state)
            .field("applied", &self.applied)
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<C, R, F> StateMachine<C> for FnStateMachine<C, R, F>
where
    C: RaftTypeConfig,
    F: FnMut(&mut C::Snapshot, &C::Data) -> R + Send,
    R: Send + 'static,
{
    type Response = Option<R>;

    async fn applied_state(&mut self) -> Result<AppliedState<C>, StorageError> {
        Ok(AppliedState {
            applied: self.applied,
            membership: self.membership.clone(),
        })
    }

    async fn apply(&mut self, entries: &[Entry<C>]) -> Result<Vec<Option<R>>, StorageError> {
        check_continues(&self.group, self.applied, entries)?;
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            let response = match &entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Membership(m) => {
                    self.membership = m.clone();
                    None
                }
                EntryPayload::Normal(data) => Some((self.apply)(&mut self.state, data)),
            };
            self.applied = entry.log_id();
            responses.push(response);
        }
        Ok(responses)
    }

    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError> {
        Ok(Snapshot {
            meta: SnapshotMeta {
                index: self.applied.index,
                term: self.applied.term,
                membership: self.membership.clone(),
            },
            data: self.state.clone(),
        })
    }

    async fn install_snapshot(&mut self, snapshot: Snapshot<C>) -> Result<(), StorageError> {
        self.state = snapshot.data;
        self.applied = snapshot.meta.log_id();
        self.membership = snapshot.meta.membership;
        Ok(())
    }
}
