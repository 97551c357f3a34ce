//! A custom `LogStorage`: the smallest backend that keeps every rule, checked by the conformance suite.
//!
//! `VecStorage` keeps each group's entries in a `Vec`. "Durable" is a copy taken at every `sync`, and
//! `reopen` brings back only that copy, which is exactly what a crash does to a real disk. The rules of a
//! write (no gaps, no rewriting committed entries, compaction behind a snapshot, all or nothing) are not
//! re-implemented here: `plan_batch` checks the whole batch and says what changes, as it does for every
//! backend in the workspace.
//!
//! ```sh
//! cargo run --example custom_storage --features storage-testing
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

// ANCHOR: storage
use tickraft::storage::{
    plan_batch, GroupChange, GroupState, InitialState, LogStorage, LogView, WriteBatch,
};
use tickraft::{Entry, Index, RaftTypeConfig, Snapshot, SnapshotMeta, StorageError, Term};

/// One group: its bookkeeping (bounds, hard state, snapshot metadata), its entries, its snapshot.
#[derive(Debug, Clone, Default)]
struct Group<C: RaftTypeConfig> {
    state: GroupState<C>,
    /// Entries `state.first_index()..=state.last.index`, in order.
    entries: Vec<Entry<C>>,
    snapshot: Option<Snapshot<C>>,
}

impl<C: RaftTypeConfig> Group<C> {
    fn entry(&self, group: &C::GroupId, index: Index) -> Result<&Entry<C>, StorageError> {
        let offset = index.checked_sub(self.state.first_index());
        match offset.and_then(|o| self.entries.get(o as usize)) {
            Some(entry) if entry.index == index => Ok(entry),
            // Never guess: a hole in the log is corruption, named by group and index.
            _ => Err(StorageError::corrupt(group, Some(index), "entry missing")),
        }
    }
}

type Groups<C> = BTreeMap<<C as RaftTypeConfig>::GroupId, Group<C>>;

/// What views read (`live`: everything written) and what survives a crash (`synced`).
#[derive(Debug, Default)]
struct Disk<C: RaftTypeConfig> {
    live: Groups<C>,
    synced: Groups<C>,
}

fn lock<C: RaftTypeConfig>(disk: &Mutex<Disk<C>>) -> Result<MutexGuard<'_, Disk<C>>, StorageError> {
    disk.lock()
        .map_err(|_| StorageError::backend("lock poisoned"))
}

/// A `LogStorage` in a few `Vec`s.
#[derive(Default)]
pub struct VecStorage<C: RaftTypeConfig> {
    disk: Arc<Mutex<Disk<C>>>,
}

impl<C: RaftTypeConfig> VecStorage<C> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A restart: only what was synced is still there.
    pub fn reopen(self) -> Self {
        let synced = match self.disk.lock() {
            Ok(disk) => disk.synced.clone(),
            Err(poisoned) => poisoned.into_inner().synced.clone(),
        };
        let live = synced.clone();
        VecStorage {
            disk: Arc::new(Mutex::new(Disk { live, synced })),
        }
    }
}

impl<C: RaftTypeConfig> LogStorage<C> for VecStorage<C> {
    type View = VecView<C>;

    fn view(&self, group: C::GroupId) -> VecView<C> {
        VecView {
            disk: Arc::clone(&self.disk),
            group,
        }
    }

    fn write(&mut self, batch: WriteBatch<C>) -> Result<(), StorageError> {
        let mut disk = lock(&self.disk)?;
        let live = &disk.live;
        // Validate the whole batch first: on error nothing has changed, in any group.
        let changes = plan_batch(
            batch,
            |g| Ok(live.get(g).map(|g| g.state.clone()).unwrap_or_default()),
            |g, index| match live.get(g) {
                Some(group) => Ok(group.entry(g, index)?.term),
                None => Err(StorageError::corrupt(g, Some(index), "entry missing")),
            },
        )?;
        for change in changes {
            apply(&mut disk.live, change);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let mut disk = lock(&self.disk)?;
        disk.synced = disk.live.clone(); // a real backend: fsync
        Ok(())
    }

    fn snapshot_meta(&self, group: C::GroupId) -> Result<Option<SnapshotMeta<C>>, StorageError> {
        Ok(lock(&self.disk)?
            .live
            .get(&group)
            .and_then(|g| g.state.snapshot.clone()))
    }

    fn groups(&self) -> Result<Vec<C::GroupId>, StorageError> {
        Ok(lock(&self.disk)?.live.keys().copied().collect()) // a BTreeMap: ascending
    }
}

/// Applies one group's planned change: keep the surviving entries, add the new ones.
fn apply<C: RaftTypeConfig>(groups: &mut Groups<C>, change: GroupChange<C>) {
    let kept = change.kept();
    let group = groups.entry(change.group).or_default();
    group.entries.retain(|e| kept.contains(&e.index));
    group.entries.extend(change.appended);
    if change.snapshot.is_some() || change.after.snapshot.is_none() {
        group.snapshot = change.snapshot; // a new snapshot, or the group was deleted
    }
    group.state = change.after;
    if group.state.is_pristine() && group.entries.is_empty() {
        groups.remove(&change.group); // deleted: it reads as never written
    }
}

/// The read handle of one group: a shared pointer and the group id.
#[derive(Debug, Clone)]
pub struct VecView<C: RaftTypeConfig> {
    disk: Arc<Mutex<Disk<C>>>,
    group: C::GroupId,
}

impl<C: RaftTypeConfig> VecView<C> {
    fn with<T>(
        &self,
        f: impl FnOnce(&Group<C>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let disk = lock(&self.disk)?;
        f(disk.live.get(&self.group).unwrap_or(&Group::default()))
    }
}

impl<C: RaftTypeConfig> LogView<C> for VecView<C> {
    fn initial_state(&self) -> Result<InitialState<C>, StorageError> {
        self.with(|g| Ok(g.state.initial_state()))
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        // The ends of the log (and out-of-range indexes) are answered from the bookkeeping.
        self.with(|g| match g.state.term_hint(index) {
            Some(answer) => answer,
            None => Ok(g.entry(&self.group, index)?.term),
        })
    }

    fn entries(
        &self,
        low: Index,
        high: Index,
        max_bytes: usize,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        self.with(|g| {
            if !g.state.check_range(low, high)? {
                return Ok(Vec::new()); // Compacted / Unavailable came back as errors above
            }
            let (mut out, mut bytes) = (Vec::new(), 0usize);
            for index in low..high {
                let entry = g.entry(&self.group, index)?;
                bytes = bytes.saturating_add(entry.size());
                if !out.is_empty() && bytes > max_bytes {
                    break; // the budget, but always at least one entry
                }
                out.push(entry.clone());
            }
            Ok(out)
        })
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        self.with(|g| Ok(g.state.first_index()))
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        self.with(|g| Ok(g.state.last.index))
    }

    fn snapshot(&self) -> Result<Option<Snapshot<C>>, StorageError> {
        self.with(|g| Ok(g.snapshot.clone()))
    }
}
// ANCHOR_END: storage

// ANCHOR: main
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Kv;

impl RaftTypeConfig for Kv {
    type NodeId = u64;
    type GroupId = u64;
    type Data = bytes::Bytes;
    type Snapshot = bytes::Bytes;
}

fn main() -> Result<(), StorageError> {
    use tickraft::{EntryPayload, HardState};

    let mut storage = VecStorage::<Kv>::new();
    let view = storage.view(7); // what the core of group 7 would read
    let entry = |index| Entry {
        term: 1,
        index,
        payload: EntryPayload::Blank,
    };

    let mut batch = WriteBatch::new();
    batch.append(7, vec![entry(1), entry(2)]);
    batch.set_hard_state(
        7,
        HardState {
            term: 1,
            vote: Some(1),
            commit: 1,
        },
    );
    storage.write(batch)?;
    storage.sync()?;
    println!("written and synced: last index {}", view.last_index()?);

    let mut batch = WriteBatch::new();
    batch.append(7, vec![entry(3)]);
    storage.write(batch)?;
    println!("written, not synced: last index {}", view.last_index()?);

    let mut gap = WriteBatch::new();
    gap.append(7, vec![entry(9)]);
    println!("a batch with a gap: {}", storage.write(gap).unwrap_err());

    let storage = storage.reopen();
    println!(
        "after a crash: last index {}",
        storage.view(7).last_index()?
    );

    conformance();
    Ok(())
}

/// The suite every backend runs: named scenarios, then a seeded model check with random restarts.
#[cfg(feature = "storage-testing")]
fn conformance() {
    use tickraft::storage::testing::run_conformance;
    run_conformance(VecStorage::new, VecStorage::reopen);
    println!("VecStorage passes the conformance suite");
}

#[cfg(not(feature = "storage-testing"))]
fn conformance() {
    println!("(run with `--features storage-testing` to run the conformance suite)");
}
// ANCHOR_END: main
