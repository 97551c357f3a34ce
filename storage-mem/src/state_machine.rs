//! In-memory [`StateMachine`] helpers: a string key-value store and a machine built from a closure.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tickraft::storage::{AppliedState, StateMachine};
use tickraft::{
    Entry, EntryPayload, LogId, Membership, RaftTypeConfig, Snapshot, SnapshotData, SnapshotMeta,
    StorageError,
};

/// Encodes a state as snapshot data (postcard).
fn encode_state<C: RaftTypeConfig, S: Serialize>(state: &S) -> Result<C::Snapshot, StorageError> {
    let bytes = postcard::to_allocvec(state).map_err(StorageError::backend)?;
    Ok(C::Snapshot::from_bytes(Bytes::from(bytes)))
}

/// Decodes a state from snapshot data; undecodable data is corruption of the snapshot at `meta`.
fn decode_state<C: RaftTypeConfig, S: DeserializeOwned>(
    group: &C::GroupId,
    snapshot: &Snapshot<C>,
) -> Result<S, StorageError> {
    postcard::from_bytes(&snapshot.data.to_bytes()).map_err(|e| {
        StorageError::corrupt(
            group,
            Some(snapshot.meta.last.index),
            format!("snapshot data cannot be decoded: {e}"),
        )
    })
}

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
    /// Sets `key` to `new` if its value is `expected` (`None`: the key is absent).
    CompareAndSet {
        /// The key.
        key: String,
        /// The value the key must have for the swap to happen.
        expected: Option<String>,
        /// The value written if it does.
        new: String,
    },
}

const TAG_SET: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_CAS: u8 = 3;

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
            KvCommand::CompareAndSet { key, expected, new } => {
                out.put_u8(TAG_CAS);
                put_str(&mut out, key);
                match expected {
                    Some(value) => {
                        out.put_u8(1);
                        put_str(&mut out, value);
                    }
                    None => out.put_u8(0),
                }
                put_str(&mut out, new);
            }
        }
        out.freeze()
    }

    /// Decodes a payload made by [`encode`](Self::encode). Any other input is an error describing why.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut reader = Reader { rest: bytes };
        let command = match reader.byte()? {
            TAG_SET => KvCommand::Set {
                key: reader.string()?,
                value: reader.string()?,
            },
            TAG_DELETE => KvCommand::Delete {
                key: reader.string()?,
            },
            TAG_CAS => {
                let key = reader.string()?;
                let expected = match reader.byte()? {
                    0 => None,
                    1 => Some(reader.string()?),
                    other => return Err(format!("bad expected-value flag {other}")),
                };
                KvCommand::CompareAndSet {
                    key,
                    expected,
                    new: reader.string()?,
                }
            }
            other => return Err(format!("unknown command tag {other}")),
        };
        if !reader.rest.is_empty() {
            return Err(format!("{} trailing bytes", reader.rest.len()));
        }
        Ok(command)
    }
}

/// Reads the fields of an encoded [`KvCommand`], refusing truncated input.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&b, tail) = self.rest.split_first().ok_or("truncated command")?;
        self.rest = tail;
        Ok(b)
    }

    fn string(&mut self) -> Result<String, String> {
        let (len, tail) = self
            .rest
            .split_first_chunk::<8>()
            .ok_or("truncated string length")?;
        let len = usize::try_from(u64::from_be_bytes(*len)).map_err(|_| "string too long")?;
        if tail.len() < len {
            return Err("truncated string".to_string());
        }
        let (s, tail) = tail.split_at(len);
        self.rest = tail;
        String::from_utf8(s.to_vec()).map_err(|_| "string is not UTF-8".to_string())
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
    /// A compare-and-set was evaluated: `swapped` says whether the value matched; `previous` is the
    /// value it found.
    Compared {
        /// The swap happened.
        swapped: bool,
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
/// with postcard (any [`SnapshotData`] type holds them). Nothing is durable: after a restart the machine reports index 0 (or the snapshot it
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
    C: RaftTypeConfig<Data = Bytes>,
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
    C: RaftTypeConfig<Data = Bytes>,
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
                    self.membership = Membership::clone(m);
                    KvResponse::Noop
                }
                EntryPayload::Normal(data) => match KvCommand::decode(data) {
                    Ok(KvCommand::Set { key, value }) => KvResponse::Done {
                        previous: self.map.insert(key, value),
                    },
                    Ok(KvCommand::Delete { key }) => KvResponse::Done {
                        previous: self.map.remove(&key),
                    },
                    Ok(KvCommand::CompareAndSet { key, expected, new }) => {
                        let previous = self.map.get(&key).cloned();
                        let swapped = previous == expected;
                        if swapped {
                            self.map.insert(key, new);
                        }
                        KvResponse::Compared { swapped, previous }
                    }
                    Err(reason) => KvResponse::Rejected { reason },
                },
            };
            self.applied = entry.log_id();
            responses.push(response);
        }
        Ok(responses)
    }

    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError> {
        Ok(Snapshot {
            meta: SnapshotMeta {
                last: self.applied,
                membership: self.membership.clone(),
            },
            data: encode_state::<C, _>(&self.map)?,
        })
    }

    async fn install_snapshot(&mut self, snapshot: Snapshot<C>) -> Result<(), StorageError> {
        self.map = decode_state(&self.group, &snapshot)?;
        self.applied = snapshot.meta.last;
        self.membership = snapshot.meta.membership;
        Ok(())
    }
}

/// A state machine built from a closure: `apply` is called with the state and each normal entry's data,
/// and its result is the entry's response (`Some`); blank and membership entries respond `None`.
/// Snapshots are the state encoded with postcard.
///
/// ```
/// # use tickraft::RaftTypeConfig;
/// # #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
/// # struct Counter;
/// # impl RaftTypeConfig for Counter {
/// #     type NodeId = u64; type GroupId = u64; type Data = u64; type Snapshot = bytes::Bytes;
/// # }
/// use tickraft_storage_mem::FnStateMachine;
/// // A counter: each entry adds its value and returns the new total.
/// let machine = FnStateMachine::<Counter, u64, _, _>::new(1, 0, |total: &mut u64, add: &u64| {
///     *total += add;
///     *total
/// });
/// assert_eq!(*machine.state(), 0);
/// ```
pub struct FnStateMachine<C, S, R, F>
where
    C: RaftTypeConfig,
{
    group: C::GroupId,
    state: S,
    applied: LogId,
    membership: Membership<C>,
    apply: F,
    _response: std::marker::PhantomData<fn() -> R>,
}

impl<C, S, R, F> FnStateMachine<C, S, R, F>
where
    C: RaftTypeConfig,
    S: Serialize + DeserializeOwned + Send,
    F: FnMut(&mut S, &C::Data) -> R + Send,
    R: Send + 'static,
{
    /// A machine for `group` starting from `initial` (nothing applied yet). The group id only labels
    /// errors.
    pub fn new(group: C::GroupId, initial: S, apply: F) -> Self {
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
    pub fn state(&self) -> &S {
        &self.state
    }
}

impl<C: RaftTypeConfig, S: std::fmt::Debug, R, F> std::fmt::Debug for FnStateMachine<C, S, R, F> {
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
impl<C, S, R, F> StateMachine<C> for FnStateMachine<C, S, R, F>
where
    C: RaftTypeConfig,
    S: Serialize + DeserializeOwned + Send,
    F: FnMut(&mut S, &C::Data) -> R + Send,
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
                    self.membership = Membership::clone(m);
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
                last: self.applied,
                membership: self.membership.clone(),
            },
            data: encode_state::<C, _>(&self.state)?,
        })
    }

    async fn install_snapshot(&mut self, snapshot: Snapshot<C>) -> Result<(), StorageError> {
        self.state = decode_state(&self.group, &snapshot)?;
        self.applied = snapshot.meta.last;
        self.membership = snapshot.meta.membership;
        Ok(())
    }
}
