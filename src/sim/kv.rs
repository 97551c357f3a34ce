//! The simulated application: a small key-value store with client sessions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{Entry, EntryPayload, Index, Payload, RaftTypeConfig};

/// The simulator's type configuration: `u64` node ids and [`KvCommand`] log entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimTypes;

impl RaftTypeConfig for SimTypes {
    type NodeId = u64;
    type GroupId = u64;
    type Data = KvCommand;
    type Snapshot = bytes::Bytes;
}

/// A client operation on the store. Keys and values are `u64`; every key starts absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Reads a key (served through ReadIndex, never written to the log).
    Get { key: u64 },
    /// Writes a key.
    Put { key: u64, value: u64 },
    /// Writes `new` if the key holds `expected` (`None`: if the key is absent).
    Cas {
        key: u64,
        expected: Option<u64>,
        new: u64,
    },
}

impl KvOp {
    /// The key the operation touches.
    pub fn key(&self) -> u64 {
        match *self {
            KvOp::Get { key } | KvOp::Put { key, .. } | KvOp::Cas { key, .. } => key,
        }
    }

    /// True for operations that go through the log.
    pub fn is_write(&self) -> bool {
        !matches!(self, KvOp::Get { .. })
    }
}

/// The result of an operation: the value read, or whether a compare-and-set took effect (`Put` always
/// reports `Done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOutput {
    Value(Option<u64>),
    Done,
    Cas(bool),
}

/// A log entry's command: an operation tagged with its client session, so that a retried command is
/// applied at most once (Raft thesis §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    pub client: u64,
    pub seq: u64,
    pub op: KvOp,
}

impl Payload for KvCommand {
    fn size(&self) -> usize {
        40
    }
}

/// The replicated state machine: the key-value map plus, per client, the last command applied and its
/// result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStore {
    data: BTreeMap<u64, u64>,
    sessions: BTreeMap<u64, (u64, KvOutput)>,
    applied: Index,
}

impl KvStore {
    /// The index of the last entry applied.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The value of `key`, if it is present.
    pub fn get(&self, key: u64) -> Option<u64> {
        self.data.get(&key).copied()
    }

    /// Encodes the whole state (data, sessions, applied index) as a snapshot.
    pub fn to_snapshot(&self) -> bytes::Bytes {
        let mut out = Vec::with_capacity(8 * (3 + 2 * self.data.len() + 4 * self.sessions.len()));
        let mut put = |v: u64| out.extend_from_slice(&v.to_le_bytes());
        put(self.applied);
        put(self.data.len() as u64);
        for (k, v) in &self.data {
            put(*k);
            put(*v);
        }
        put(self.sessions.len() as u64);
        for (client, (seq, output)) in &self.sessions {
            put(*client);
            put(*seq);
            let (tag, value) = match output {
                KvOutput::Value(None) => (0, 0),
                KvOutput::Value(Some(v)) => (1, *v),
                KvOutput::Done => (2, 0),
                KvOutput::Cas(false) => (3, 0),
                KvOutput::Cas(true) => (4, 0),
            };
            put(tag);
            put(value);
        }
        bytes::Bytes::from(out)
    }

    /// A stable hash of the whole state.
    pub fn digest(&self) -> u64 {
        let mut h = super::rng::Fnv64::default();
        h.bytes(&self.to_snapshot());
        h.finish()
    }

    /// Decodes a state encoded by [`to_snapshot`](Self::to_snapshot).
    pub fn from_snapshot(bytes: &[u8]) -> Result<KvStore, String> {
        let mut words = bytes.chunks(8).map(|c| {
            <[u8; 8]>::try_from(c)
                .map(u64::from_le_bytes)
                .map_err(|_| "snapshot length is not a multiple of 8".to_string())
        });
        let mut next = move || {
            words
                .next()
                .unwrap_or_else(|| Err("snapshot is truncated".to_string()))
        };
        let mut store = KvStore {
            applied: next()?,
            ..KvStore::default()
        };
        for _ in 0..next()? {
            let k = next()?;
            let v = next()?;
            store.data.insert(k, v);
        }
        for _ in 0..next()? {
            let client = next()?;
            let seq = next()?;
            let (tag, value) = (next()?, next()?);
            let output = match tag {
                0 => KvOutput::Value(None),
                1 => KvOutput::Value(Some(value)),
                2 => KvOutput::Done,
                3 => KvOutput::Cas(false),
                4 => KvOutput::Cas(true),
                _ => return Err(format!("bad output tag {tag} in snapshot")),
            };
            store.sessions.insert(client, (seq, output));
        }
        if next().is_ok() {
            return Err("trailing bytes in snapshot".to_string());
        }
        Ok(store)
    }

    /// Applies one committed entry and returns the command's output, if it is an application command.
    /// Entries must come in index order without gaps; anything else is an error the simulator reports.
    pub fn apply(
        &mut self,
        entry: &Entry<SimTypes>,
    ) -> Result<Option<(KvCommand, KvOutput)>, String> {
        if entry.index != self.applied + 1 {
            return Err(format!(
                "entry {} applied after entry {}: applies must be consecutive",
                entry.index, self.applied
            ));
        }
        self.applied = entry.index;
        let EntryPayload::Normal(cmd) = &entry.payload else {
            return Ok(None);
        };
        if let Some((last_seq, output)) = self.sessions.get(&cmd.client) {
            if cmd.seq < *last_seq {
                // A stale retry of a command the client has given up on: no effect.
                return Ok(None);
            }
            if cmd.seq == *last_seq {
                // A retry of the last command: answer as the first copy did.
                return Ok(Some((*cmd, *output)));
            }
        }
        let output = match cmd.op {
            KvOp::Get { key } => KvOutput::Value(self.get(key)),
            KvOp::Put { key, value } => {
                self.data.insert(key, value);
                KvOutput::Done
            }
            KvOp::Cas { key, expected, new } => {
                let ok = self.get(key) == expected;
                if ok {
                    self.data.insert(key, new);
                }
                KvOutput::Cas(ok)
            }
        };
        self.sessions.insert(cmd.client, (cmd.seq, output));
        Ok(Some((*cmd, output)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, client: u64, seq: u64, op: KvOp) -> Entry<SimTypes> {
        Entry {
            term: 1,
            index,
            payload: EntryPayload::Normal(KvCommand { client, seq, op }),
        }
    }

    #[test]
    fn retries_apply_once() {
        let mut kv = KvStore::default();
        let put = KvOp::Put { key: 1, value: 5 };
        let cas = KvOp::Cas {
            key: 1,
            expected: Some(5),
            new: 6,
        };
        assert_eq!(
            kv.apply(&entry(1, 1, 1, put)).map(|o| o.map(|x| x.1)),
            Ok(Some(KvOutput::Done))
        );
        assert_eq!(
            kv.apply(&entry(2, 1, 2, cas)).map(|o| o.map(|x| x.1)),
            Ok(Some(KvOutput::Cas(true)))
        );
        // The retry answers like the first copy and changes nothing.
        assert_eq!(
            kv.apply(&entry(3, 1, 2, cas)).map(|o| o.map(|x| x.1)),
            Ok(Some(KvOutput::Cas(true)))
        );
        assert_eq!(kv.get(1), Some(6));
        // A stale copy of seq 1 has no effect.
        assert_eq!(
            kv.apply(&entry(4, 1, 1, KvOp::Put { key: 1, value: 9 })),
            Ok(None)
        );
        assert_eq!(kv.get(1), Some(6));
        assert!(kv.apply(&entry(6, 1, 3, put)).is_err());
        let copy = KvStore::from_snapshot(&kv.to_snapshot());
        assert_eq!(copy, Ok(kv));
        assert!(KvStore::from_snapshot(&[1, 2, 3]).is_err());
    }
}
