//! Durable storage for tickraft on [sled](https://docs.rs/sled): one database per node, one shared log
//! for all of its groups.
//!
//! # Layout
//!
//! - Tree `log`: every entry of every group. The key is the group's [`GroupKey`] then the entry's index,
//!   both big-endian `u64` (16 bytes), so that a group's entries are contiguous and in index order and a
//!   range read is one scan. The value is the [`Entry`] encoded with postcard.
//! - Tree `meta`: one record per group (key: the group's 8-byte big-endian key) holding its hard state,
//!   bootstrap membership, snapshot metadata and compaction point, encoded with postcard. A group with
//!   nothing but entries has no record.
//! - Tree `snapshot`: the data of each group's stored snapshot (same key), as
//!   [`SnapshotData::to_bytes`] gives it. Written only when the snapshot
//!   changes.
//! - The default tree holds the on-disk format version.
//!
//! A [`WriteBatch`] (any number of groups) becomes one sled transaction over the trees it changes (a
//! plain sled batch when it changes only one), so it is atomic on recovery; [`LogStorage::sync`] is one `flush` of the database, whatever the number of groups.
//! [`SledStorage::open`] recovers every group's bounds from the trees (one seek per group end) and checks
//! them; a record that cannot be decoded, an entry missing inside a log or stored under the wrong key is a
//! [`StorageError::Corrupt`] naming the group and the index, never a panic and never skipped.
//!
//! # Durability caveat
//!
//! sled's `flush` writes its log with `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on Linux, not
//! `fsync`/`fdatasync`: the data pages reach the device, but the file's metadata (its size, after the log
//! grew) and the device's volatile write cache are not flushed. Everything acknowledged after
//! [`LogStorage::sync`] therefore survives a crash of the process (`kill -9`; the crash test checks this
//! hundreds of times), but a power loss or kernel crash may lose recently synced batches, on file systems
//! and disks where those caches matter. Deployments that need power-loss durability should run on storage
//! with a non-volatile write cache, or use a backend that calls `fdatasync`. On other platforms sled calls
//! `sync_all`.
//!
//! # Example
//!
//! ```
//! use tickraft::storage::{LogStorage, LogView, WriteBatch};
//! use tickraft::{Entry, EntryPayload, HardState, RaftTypeConfig};
//! use tickraft_storage_sled::SledStorage;
//!
//! #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
//! struct Kv;
//! impl RaftTypeConfig for Kv {
//!     type NodeId = u64;
//!     type GroupId = u64; // implements `GroupKey`
//!     type Data = bytes::Bytes;
//!     type Snapshot = bytes::Bytes;
//! }
//!
//! # fn main() -> Result<(), tickraft::StorageError> {
//! # let dir = std::env::temp_dir().join(format!("tickraft-sled-doc-{}", std::process::id()));
//! let mut storage = SledStorage::<Kv>::open(&dir)?;
//! let mut batch = WriteBatch::new();
//! for group in [1, 2, 3] {
//!     batch.append(group, vec![Entry { term: 1, index: 1, payload: EntryPayload::Blank }]);
//!     batch.set_hard_state(group, HardState { term: 1, vote: Some(1), commit: 0 });
//! }
//! storage.write(batch)?;
//! storage.sync()?; // one flush for the three groups
//! drop(storage);
//!
//! let storage = SledStorage::<Kv>::open(&dir)?; // recovery
//! assert_eq!(storage.groups()?, vec![1, 2, 3]);
//! assert_eq!(storage.view(2).last_index()?, 1);
//! # drop(storage);
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tickraft::storage::{plan_batch, GroupState, InitialState, LogStorage, LogView, WriteBatch};
use tickraft::{
    Entry, HardState, Index, LogId, Membership, RaftTypeConfig, Snapshot, SnapshotData,
    SnapshotMeta, StorageError, Term,
};

/// How a group id becomes the first 8 bytes of every key of the group (big-endian `u64`).
///
/// The encoding must be injective, and `from_key(g.to_key()) == Some(g)` for every group `g`: recovery
/// lists the groups by decoding keys. Keys sort like the `u64`s they encode, so groups are stored in
/// `to_key` order. Implemented for the unsigned integers; implement it for your own group id type (a
/// newtype around an integer, typically).
pub trait GroupKey: Copy {
    /// The group's key.
    fn to_key(self) -> u64;
    /// The group with this key, or `None` if no group has it (recovery then reports corruption).
    fn from_key(key: u64) -> Option<Self>;
}

impl GroupKey for u64 {
    fn to_key(self) -> u64 {
        self
    }
    fn from_key(key: u64) -> Option<Self> {
        Some(key)
    }
}

macro_rules! group_key_for_small_unsigned {
    ($($t:ty),*) => {$(
        impl GroupKey for $t {
            fn to_key(self) -> u64 {
                u64::from(self)
            }
            fn from_key(key: u64) -> Option<Self> {
                <$t>::try_from(key).ok()
            }
        }
    )*};
}

group_key_for_small_unsigned!(u8, u16, u32);

/// The on-disk format this crate writes; a database with another version is refused on open.
pub const FORMAT_VERSION: u8 = 1;
const FORMAT_KEY: &[u8] = b"tickraft-storage-sled/format";
const LOG_TREE: &[u8] = b"log";
const META_TREE: &[u8] = b"meta";
const SNAPSHOT_TREE: &[u8] = b"snapshot";

fn log_key(group: u64, index: Index) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&group.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

fn unreadable_key(tree: &str, key: &[u8]) -> StorageError {
    StorageError::Corrupt {
        group: format!("unknown (unreadable {tree} key {key:02x?})"),
        index: None,
        reason: format!(
            "a {tree} key must be {} bytes",
            if tree == "log" { 16 } else { 8 }
        ),
    }
}

fn parse_log_key(key: &[u8]) -> Result<(u64, Index), StorageError> {
    let Some((group, index)) = key.split_first_chunk::<8>() else {
        return Err(unreadable_key("log", key));
    };
    let Ok(index) = <[u8; 8]>::try_from(index) else {
        return Err(unreadable_key("log", key));
    };
    Ok((u64::from_be_bytes(*group), u64::from_be_bytes(index)))
}

fn parse_meta_key(key: &[u8]) -> Result<u64, StorageError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| unreadable_key("meta", key))
}

fn decode_group<G: GroupKey>(key: u64) -> Result<G, StorageError> {
    G::from_key(key).ok_or_else(|| StorageError::Corrupt {
        group: format!("unknown (key {key})"),
        index: None,
        reason: "the stored group key does not decode to a group id".to_string(),
    })
}

fn backend(e: sled::Error) -> StorageError {
    match e {
        sled::Error::Corruption { at, .. } => StorageError::Corrupt {
            group: "unknown (sled page)".to_string(),
            index: None,
            reason: format!("sled reports corruption at {at:?}"),
        },
        other => StorageError::backend(other),
    }
}

/// A group's metadata record in the `meta` tree.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
struct StoredMeta<C: RaftTypeConfig> {
    hard_state: HardState<C>,
    bootstrap: Membership<C>,
    snapshot: Option<SnapshotMeta<C>>,
    compacted: LogId,
}

/// Decodes the entry stored under `(group, index)`, checking that it is the entry of that index.
fn decode_entry<C: RaftTypeConfig>(
    group: &C::GroupId,
    index: Index,
    bytes: &[u8],
) -> Result<Entry<C>, StorageError> {
    let entry: Entry<C> = postcard::from_bytes(bytes).map_err(|e| {
        StorageError::corrupt(group, Some(index), format!("entry cannot be decoded: {e}"))
    })?;
    if entry.index != index {
        return Err(StorageError::corrupt(
            group,
            Some(index),
            format!(
                "the entry stored under this index has index {}",
                entry.index
            ),
        ));
    }
    Ok(entry)
}

/// Decodes only the term (and checks the index) of a stored entry: the first two fields of its encoding.
fn decode_term<C: RaftTypeConfig>(
    group: &C::GroupId,
    index: Index,
    bytes: &[u8],
) -> Result<Term, StorageError> {
    let ((term, stored_index), _) =
        postcard::take_from_bytes::<(Term, Index)>(bytes).map_err(|e| {
            StorageError::corrupt(group, Some(index), format!("entry cannot be decoded: {e}"))
        })?;
    if stored_index != index {
        return Err(StorageError::corrupt(
            group,
            Some(index),
            format!("the entry stored under this index has index {stored_index}"),
        ));
    }
    Ok(term)
}

/// Every group with anything stored, and its bounds and metadata.
type GroupMap<C> = HashMap<<C as RaftTypeConfig>::GroupId, GroupState<C>>;

struct Inner<C: RaftTypeConfig> {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    snapshots: sled::Tree,
    /// Every group with anything stored. Readers hold the read lock for a whole read and the writer
    /// holds the write lock for a whole batch, so a read never sees half a batch.
    groups: RwLock<GroupMap<C>>,
}

fn poisoned() -> StorageError {
    StorageError::backend("sled storage lock poisoned (a thread panicked while holding it)")
}

impl<C> Inner<C>
where
    C: RaftTypeConfig,
    C::GroupId: GroupKey,
{
    fn read(&self) -> Result<RwLockReadGuard<'_, GroupMap<C>>, StorageError> {
        self.groups.read().map_err(|_| poisoned())
    }

    fn lock(&self) -> Result<RwLockWriteGuard<'_, GroupMap<C>>, StorageError> {
        self.groups.write().map_err(|_| poisoned())
    }

    fn stored_term(&self, group: &C::GroupId, index: Index) -> Result<Term, StorageError> {
        match self
            .log
            .get(log_key(group.to_key(), index))
            .map_err(backend)?
        {
            Some(bytes) => decode_term::<C>(group, index, &bytes),
            None => Err(StorageError::corrupt(group, Some(index), "entry missing")),
        }
    }

    fn term(&self, group: &C::GroupId, index: Index) -> Result<Term, StorageError> {
        let groups = self.read()?;
        let default = GroupState::default();
        let state = groups.get(group).unwrap_or(&default);
        match state.term_hint(index) {
            Some(answer) => answer,
            None => self.stored_term(group, index),
        }
    }

    fn snapshot(&self, group: &C::GroupId) -> Result<Option<Snapshot<C>>, StorageError> {
        let groups = self.read()?;
        let Some(meta) = groups.get(group).and_then(|s| s.snapshot.clone()) else {
            return Ok(None);
        };
        match self
            .snapshots
            .get(group.to_key().to_be_bytes())
            .map_err(backend)?
        {
            Some(data) => Ok(Some(Snapshot {
                meta,
                data: C::Snapshot::from_bytes(bytes::Bytes::copy_from_slice(&data)),
            })),
            None => Err(StorageError::corrupt(
                group,
                Some(meta.last.index),
                "the snapshot's data is missing",
            )),
        }
    }

    fn entries(
        &self,
        group: &C::GroupId,
        low: Index,
        high: Index,
        max_bytes: usize,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        let groups = self.read()?;
        let default = GroupState::default();
        let state = groups.get(group).unwrap_or(&default);
        if !state.check_range(low, high)? {
            return Ok(Vec::new());
        }
        let key = group.to_key();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut expected = low;
        for item in self.log.range(log_key(key, low)..log_key(key, high)) {
            let (k, v) = item.map_err(backend)?;
            let (_, index) = parse_log_key(&k)?;
            if index != expected {
                return Err(StorageError::corrupt(
                    group,
                    Some(expected),
                    "entry missing",
                ));
            }
            let entry = decode_entry::<C>(group, index, &v)?;
            let size = entry.size();
            if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                return Ok(out);
            }
            bytes = bytes.saturating_add(size);
            out.push(entry);
            expected += 1;
        }
        if expected < high {
            return Err(StorageError::corrupt(
                group,
                Some(expected),
                "entry missing",
            ));
        }
        Ok(out)
    }
}

/// A durable [`LogStorage`] on sled: one database per node, one shared log tree for all groups.
///
/// See the [crate docs](crate) for the layout, the recovery checks and the durability caveat.
pub struct SledStorage<C: RaftTypeConfig> {
    inner: Arc<Inner<C>>,
    path: PathBuf,
}

impl<C: RaftTypeConfig> std::fmt::Debug for SledStorage<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<C> SledStorage<C>
where
    C: RaftTypeConfig,
    C::GroupId: GroupKey,
{
    /// Opens (or creates) the database at `path` and recovers every group.
    ///
    /// If the directory is locked (by another process, or by a `SledStorage` of this process that was
    /// just dropped: sled releases its lock from a background thread), this retries for up to 3 seconds
    /// before failing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(path, |config| config)
    }

    /// Like [`open`](Self::open), letting `tune` adjust sled's configuration (cache size, background
    /// flush interval, mode). The path is set before `tune` runs.
    pub fn open_with(
        path: impl AsRef<Path>,
        tune: impl FnOnce(sled::Config) -> sled::Config,
    ) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        let config = tune(sled::Config::new().path(&path));
        let db = open_retrying_lock(&config)?;
        match db.get(FORMAT_KEY).map_err(backend)? {
            Some(version) if version.as_ref() == [FORMAT_VERSION] => {}
            Some(version) => {
                return Err(StorageError::backend(format!(
                    "{} holds on-disk format {:?}; this version reads format {FORMAT_VERSION}",
                    path.display(),
                    version.as_ref()
                )))
            }
            None => {
                db.insert(FORMAT_KEY, &[FORMAT_VERSION]).map_err(backend)?;
            }
        }
        let log = db.open_tree(LOG_TREE).map_err(backend)?;
        let meta = db.open_tree(META_TREE).map_err(backend)?;
        let snapshots = db.open_tree(SNAPSHOT_TREE).map_err(backend)?;
        let groups = recover::<C>(&log, &meta, &snapshots)?;
        Ok(SledStorage {
            inner: Arc::new(Inner {
                db,
                log,
                meta,
                snapshots,
                groups: RwLock::new(groups),
            }),
            path,
        })
    }

    /// The database's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and checks every stored entry of every group: keys in order without gaps, every entry
    /// decodable, stored under its own index and within its group's bounds, terms never decreasing.
    /// Returns the number of entries. Costs a full scan; meant for tests and offline checks.
    pub fn verify(&self) -> Result<u64, StorageError> {
        let groups = self.inner.read()?;
        let mut count = 0u64;
        for (group, state) in groups.iter() {
            let mut expected = state.first_index();
            let mut prev_term = state.compacted.term;
            for item in self.inner.log.scan_prefix(group.to_key().to_be_bytes()) {
                let (k, v) = item.map_err(backend)?;
                let (_, index) = parse_log_key(&k)?;
                if index != expected {
                    let reason = if index > state.last.index {
                        format!(
                            "entry {index} is stored past the last index {}",
                            state.last.index
                        )
                    } else {
                        "entry missing".to_string()
                    };
                    return Err(StorageError::corrupt(
                        group,
                        Some(expected.min(index)),
                        reason,
                    ));
                }
                let entry = decode_entry::<C>(group, index, &v)?;
                if entry.term < prev_term {
                    return Err(StorageError::corrupt(
                        group,
                        Some(index),
                        format!(
                            "term {} is lower than the previous entry's {prev_term}",
                            entry.term
                        ),
                    ));
                }
                prev_term = entry.term;
                expected += 1;
                count += 1;
            }
            if expected != state.last.index + 1 {
                return Err(StorageError::corrupt(
                    group,
                    Some(expected),
                    "entry missing",
                ));
            }
            if prev_term != state.last.term {
                return Err(StorageError::corrupt(
                    group,
                    Some(state.last.index),
                    format!(
                        "last term {prev_term} differs from the recovered {}",
                        state.last.term
                    ),
                ));
            }
        }
        // Entries outside every known group's key range.
        let stored = self.inner.log.len() as u64;
        if stored != count {
            return Err(StorageError::Corrupt {
                group: "unknown".to_string(),
                index: None,
                reason: format!(
                    "{} stored entries belong to no recovered group",
                    stored.saturating_sub(count)
                ),
            });
        }
        Ok(count)
    }
}

/// How long [`SledStorage::open`] waits for the directory lock of a database that was just closed.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Opens the database, retrying while its directory lock is held: sled releases the lock of a closed
/// database from a background thread, shortly after the last handle is dropped.
fn open_retrying_lock(config: &sled::Config) -> Result<sled::Db, StorageError> {
    let start = Instant::now();
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            // sled reports a held lock as an `Other` I/O error with this message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && start.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(backend(e)),
        }
    }
}

/// Rebuilds every group's state from the trees and checks it.
fn recover<C>(
    log: &sled::Tree,
    meta: &sled::Tree,
    snapshots: &sled::Tree,
) -> Result<GroupMap<C>, StorageError>
where
    C: RaftTypeConfig,
    C::GroupId: GroupKey,
{
    let mut groups: GroupMap<C> = HashMap::new();
    for item in meta.iter() {
        let (k, v) = item.map_err(backend)?;
        let group: C::GroupId = decode_group(parse_meta_key(&k)?)?;
        let record: StoredMeta<C> = postcard::from_bytes(&v).map_err(|e| {
            StorageError::corrupt(&group, None, format!("metadata cannot be decoded: {e}"))
        })?;
        groups.insert(
            group,
            GroupState {
                hard_state: record.hard_state,
                bootstrap: record.bootstrap,
                snapshot: record.snapshot,
                compacted: record.compacted,
                last: record.compacted,
            },
        );
    }
    // One seek to each end of each group's key range.
    // Starts from the empty key, so that a short (unreadable) key sorting first is seen too.
    let mut next: Option<Vec<u8>> = Some(Vec::new());
    while let Some(start) = next {
        let Some(first) = log.range(start..).next() else {
            break;
        };
        let (k, _) = first.map_err(backend)?;
        let (key, first_index) = parse_log_key(&k)?;
        let group: C::GroupId = decode_group(key)?;
        let Some(last) = log.scan_prefix(key.to_be_bytes()).next_back() else {
            return Err(StorageError::corrupt(
                &group,
                None,
                "entries vanished during recovery",
            ));
        };
        let (k, v) = last.map_err(backend)?;
        let (_, last_index) = parse_log_key(&k)?;
        let entry = decode_entry::<C>(&group, last_index, &v)?;
        let state = groups.entry(group).or_default();
        let expected_first = state.first_index();
        if first_index != expected_first {
            return Err(StorageError::corrupt(
                &group,
                Some(expected_first.min(first_index)),
                format!(
                    "the log should start at {expected_first} (after the compaction point) but its \
                     first stored entry is {first_index}"
                ),
            ));
        }
        state.last = entry.log_id();
        next = key.checked_add(1).map(|k| log_key(k, 0).to_vec());
    }
    for (group, state) in &groups {
        state.check_invariants(group)?;
        if let Some(snapshot) = &state.snapshot {
            let key = group.to_key().to_be_bytes();
            if !snapshots.contains_key(key).map_err(backend)? {
                return Err(StorageError::corrupt(
                    group,
                    Some(snapshot.last.index),
                    "the snapshot's data is missing",
                ));
            }
        }
    }
    Ok(groups)
}

impl<C> LogStorage<C> for SledStorage<C>
where
    C: RaftTypeConfig,
    C::GroupId: GroupKey,
{
    type View = SledView<C>;

    fn view(&self, group: C::GroupId) -> SledView<C> {
        SledView {
            inner: Arc::clone(&self.inner),
            group,
        }
    }

    fn write(&mut self, batch: WriteBatch<C>) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let inner = &*self.inner;
        let mut groups = inner.lock()?;
        let current = &*groups;
        let changes = plan_batch(
            batch,
            |g| Ok(current.get(g).cloned().unwrap_or_default()),
            |g, index| inner.stored_term(g, index),
        )?;
        let mut log_batch = sled::Batch::default();
        let mut meta_batch = sled::Batch::default();
        let mut snapshot_batch = sled::Batch::default();
        let (mut log_writes, mut meta_writes, mut snapshot_writes) = (false, false, false);
        for change in &changes {
            let key = change.group.to_key();
            for index in change.removed() {
                log_batch.remove(&log_key(key, index)[..]);
                log_writes = true;
            }
            for entry in &change.appended {
                let value = postcard::to_allocvec(entry).map_err(|e| {
                    StorageError::backend(format!(
                        "cannot encode entry {} of group {:?}: {e}",
                        entry.index, change.group
                    ))
                })?;
                log_batch.insert(&log_key(key, entry.index)[..], value);
                log_writes = true;
            }
            if let Some(snapshot) = &change.snapshot {
                let data = snapshot.data.to_bytes();
                snapshot_batch.insert(&key.to_be_bytes()[..], data.as_ref());
                snapshot_writes = true;
            } else if change.snapshot_removed() {
                snapshot_batch.remove(&key.to_be_bytes()[..]);
                snapshot_writes = true;
            }
            if change.metadata_changed() {
                let after = &change.after;
                let record = StoredMeta::<C> {
                    hard_state: after.hard_state.clone(),
                    bootstrap: after.bootstrap.clone(),
                    snapshot: after.snapshot.clone(),
                    compacted: after.compacted,
                };
                if after.hard_state == HardState::default()
                    && after.bootstrap == Membership::default()
                    && after.snapshot.is_none()
                    && after.compacted == LogId::default()
                {
                    meta_batch.remove(&key.to_be_bytes()[..]);
                } else {
                    let value = postcard::to_allocvec(&record).map_err(|e| {
                        StorageError::backend(format!(
                            "cannot encode the metadata of group {:?}: {e}",
                            change.group
                        ))
                    })?;
                    meta_batch.insert(&key.to_be_bytes()[..], value);
                }
                meta_writes = true;
            }
        }
        match (log_writes, meta_writes, snapshot_writes) {
            (false, false, false) => {}
            // One tree: its batch is atomic on its own.
            (true, false, false) => inner.log.apply_batch(log_batch).map_err(backend)?,
            (false, true, false) => inner.meta.apply_batch(meta_batch).map_err(backend)?,
            (false, false, true) => inner
                .snapshots
                .apply_batch(snapshot_batch)
                .map_err(backend)?,
            _ => (&inner.log, &inner.meta, &inner.snapshots)
                .transaction(|(log, meta, snapshots)| {
                    log.apply_batch(&log_batch)?;
                    meta.apply_batch(&meta_batch)?;
                    snapshots.apply_batch(&snapshot_batch)?;
                    Ok::<(), ConflictableTransactionError<Infallible>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => backend(e),
                    TransactionError::Abort(never) => match never {},
                })?,
        }
        for change in changes {
            if change.after.is_pristine() {
                groups.remove(&change.group);
            } else {
                groups.insert(change.group, change.after);
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.inner.db.flush().map_err(backend)?;
        Ok(())
    }

    fn snapshot_meta(&self, group: C::GroupId) -> Result<Option<SnapshotMeta<C>>, StorageError> {
        Ok(self
            .inner
            .read()?
            .get(&group)
            .and_then(|s| s.snapshot.clone()))
    }

    fn groups(&self) -> Result<Vec<C::GroupId>, StorageError> {
        let mut groups: Vec<C::GroupId> = self.inner.read()?.keys().copied().collect();
        groups.sort();
        Ok(groups)
    }
}

/// The read handle of one group of a [`SledStorage`]: a shared pointer and the group id.
pub struct SledView<C: RaftTypeConfig> {
    inner: Arc<Inner<C>>,
    group: C::GroupId,
}

impl<C: RaftTypeConfig> Clone for SledView<C> {
    fn clone(&self) -> Self {
        SledView {
            inner: Arc::clone(&self.inner),
            group: self.group,
        }
    }
}

impl<C: RaftTypeConfig> std::fmt::Debug for SledView<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledView")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> SledView<C> {
    /// The group this view reads.
    pub fn group(&self) -> C::GroupId {
        self.group
    }
}

impl<C> LogView<C> for SledView<C>
where
    C: RaftTypeConfig,
    C::GroupId: GroupKey,
{
    fn initial_state(&self) -> Result<InitialState<C>, StorageError> {
        let groups = self.inner.read()?;
        Ok(groups
            .get(&self.group)
            .map(GroupState::initial_state)
            .unwrap_or_else(|| GroupState::default().initial_state()))
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.inner.term(&self.group, index)
    }

    fn entries(
        &self,
        low: Index,
        high: Index,
        max_bytes: usize,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        self.inner.entries(&self.group, low, high, max_bytes)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self
            .inner
            .read()?
            .get(&self.group)
            .map_or(1, GroupState::first_index))
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self
            .inner
            .read()?
            .get(&self.group)
            .map_or(0, |s| s.last.index))
    }

    fn snapshot(&self) -> Result<Option<Snapshot<C>>, StorageError> {
        self.inner.snapshot(&self.group)
    }
}
