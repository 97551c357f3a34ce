//! In-memory storage for tickraft: a fast [`LogStorage`] for tests, the simulator and examples, and
//! [`StateMachine`](tickraft::storage::StateMachine) helpers.
//!
//! [`MemStorage`] keeps every group's log in memory and follows the same rules as every backend (it runs
//! the conformance suite). It also remembers what was synced, so that a test can simulate a crash with
//! [`MemStorage::crash`]: every batch written since the last [`sync`](LogStorage::sync) is dropped.
//!
//! ```
//! use tickraft::storage::{LogStorage, LogView, WriteBatch};
//! use tickraft::{Entry, EntryPayload, HardState, RaftTypeConfig};
//! use tickraft_storage_mem::MemStorage;
//!
//! #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
//! struct Kv;
//! impl RaftTypeConfig for Kv {
//!     type NodeId = u64;
//!     type GroupId = u64;
//!     type Data = bytes::Bytes;
//!     type Snapshot = bytes::Bytes;
//! }
//!
//! # fn main() -> Result<(), tickraft::StorageError> {
//! let mut storage = MemStorage::<Kv>::new();
//! let view = storage.view(1); // what the core of group 1 reads
//! let mut batch = WriteBatch::new();
//! batch.append(1, vec![Entry { term: 1, index: 1, payload: EntryPayload::Blank }]);
//! batch.set_hard_state(1, HardState { term: 1, vote: Some(1), commit: 1 });
//! storage.write(batch)?;
//! assert_eq!(view.last_index()?, 1); // visible at once
//! storage.crash(); // never synced: gone
//! assert_eq!(view.last_index()?, 0);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tickraft::storage::{
    plan_batch, GroupChange, GroupState, InitialState, LogStorage, LogView, WriteBatch,
};
use tickraft::{Entry, Index, RaftTypeConfig, Snapshot, SnapshotMeta, StorageError, Term};

mod state_machine;

pub use state_machine::{FnStateMachine, KvCommand, KvResponse, KvStateMachine};

/// One group's log in memory.
#[derive(Debug, Clone)]
struct MemGroup<C: RaftTypeConfig> {
    state: GroupState<C>,
    /// The entries `state.first_index()..=state.last.index`, in order.
    entries: VecDeque<Entry<C>>,
    /// The stored snapshot (its metadata is `state.snapshot`).
    snapshot: Option<Snapshot<C>>,
}

impl<C: RaftTypeConfig> Default for MemGroup<C> {
    fn default() -> Self {
        MemGroup {
            state: GroupState::default(),
            entries: VecDeque::new(),
            snapshot: None,
        }
    }
}

impl<C: RaftTypeConfig> MemGroup<C> {
    fn entry(&self, group: &C::GroupId, index: Index) -> Result<&Entry<C>, StorageError> {
        let found = index
            .checked_sub(self.state.first_index())
            .and_then(|offset| self.entries.get(offset as usize));
        match found {
            Some(entry) if entry.index == index => Ok(entry),
            Some(entry) => Err(StorageError::corrupt(
                group,
                Some(index),
                format!(
                    "the entry stored at this position has index {}",
                    entry.index
                ),
            )),
            None => Err(StorageError::corrupt(group, Some(index), "entry missing")),
        }
    }
}

type Groups<C> = HashMap<<C as RaftTypeConfig>::GroupId, MemGroup<C>>;

/// Applies a planned change to the groups (the change is consumed; `appended` entries move in).
fn apply_change<C: RaftTypeConfig>(groups: &mut Groups<C>, change: GroupChange<C>) {
    let kept = change.kept();
    let group = groups.entry(change.group).or_default();
    if kept.is_empty() {
        group.entries.clear();
    } else {
        while group.entries.back().is_some_and(|e| e.index > *kept.end()) {
            group.entries.pop_back();
        }
        while group
            .entries
            .front()
            .is_some_and(|e| e.index < *kept.start())
        {
            group.entries.pop_front();
        }
    }
    group.entries.extend(change.appended);
    if let Some(snapshot) = change.snapshot {
        group.snapshot = Some(snapshot);
    } else if change.after.snapshot.is_none() {
        group.snapshot = None;
    }
    group.state = change.after;
    if group.state.is_pristine() && group.entries.is_empty() {
        groups.remove(&change.group);
    }
}

#[derive(Debug)]
struct Shared<C: RaftTypeConfig> {
    /// What views read: everything written.
    live: Groups<C>,
    /// What survives a crash: everything synced.
    durable: Groups<C>,
    /// The changes written since the last sync, in order; a sync replays them onto `durable`.
    unsynced: Vec<GroupChange<C>>,
}

/// An in-memory [`LogStorage`]: every group of a node in one map, behind one lock.
///
/// Writes are visible at once through every [`MemView`]; [`sync`](LogStorage::sync) marks them durable,
/// and [`crash`](Self::crash) drops everything written since the last sync, like a power cut.
#[derive(Debug)]
pub struct MemStorage<C: RaftTypeConfig> {
    shared: Arc<RwLock<Shared<C>>>,
}

impl<C: RaftTypeConfig> Default for MemStorage<C> {
    fn default() -> Self {
        MemStorage {
            shared: Arc::new(RwLock::new(Shared {
                live: HashMap::new(),
                durable: HashMap::new(),
                unsynced: Vec::new(),
            })),
        }
    }
}

fn poisoned() -> StorageError {
    StorageError::backend("memory storage lock poisoned (a thread panicked while holding it)")
}

impl<C: RaftTypeConfig> MemStorage<C> {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, Shared<C>>, StorageError> {
        self.shared.read().map_err(|_| poisoned())
    }

    fn lock(&self) -> Result<RwLockWriteGuard<'_, Shared<C>>, StorageError> {
        self.shared.write().map_err(|_| poisoned())
    }

    /// Simulates a crash: every batch written since the last successful sync is lost, in every group.
    /// Views (including those obtained before) show the synced state from now on.
    pub fn crash(&mut self) {
        // A poisoned lock still holds consistent data: writes validate before they change anything.
        let mut shared = match self.shared.write() {
            Ok(guard) => guard,
            Err(poison) => poison.into_inner(),
        };
        shared.live = shared.durable.clone();
        shared.unsynced.clear();
    }

    /// The number of group changes written since the last sync (what a crash would lose).
    pub fn unsynced_changes(&self) -> Result<usize, StorageError> {
        Ok(self.read()?.unsynced.len())
    }
}

impl<C: RaftTypeConfig> LogStorage<C> for MemStorage<C> {
    type View = MemView<C>;

    fn view(&self, group: C::GroupId) -> MemView<C> {
        MemView {
            shared: Arc::clone(&self.shared),
            group,
        }
    }

    fn write(&mut self, batch: WriteBatch<C>) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut shared = self.lock()?;
        let live = &shared.live;
        let changes = plan_batch(
            batch,
            |g| Ok(live.get(g).map(|m| m.state.clone()).unwrap_or_default()),
            |g, index| match live.get(g) {
                Some(m) => m.entry(g, index).map(|e| e.term),
                None => Err(StorageError::corrupt(g, Some(index), "entry missing")),
            },
        )?;
        for change in changes {
            shared.unsynced.push(change.clone());
            apply_change(&mut shared.live, change);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let mut shared = self.lock()?;
        let unsynced = std::mem::take(&mut shared.unsynced);
        for change in unsynced {
            apply_change(&mut shared.durable, change);
        }
        Ok(())
    }

    fn snapshot_meta(&self, group: C::GroupId) -> Result<Option<SnapshotMeta<C>>, StorageError> {
        let shared = self.read()?;
        Ok(shared
            .live
            .get(&group)
            .and_then(|m| m.state.snapshot.clone()))
    }

    fn groups(&self) -> Result<Vec<C::GroupId>, StorageError> {
        let mut groups: Vec<C::GroupId> = self.read()?.live.keys().copied().collect();
        groups.sort();
        Ok(groups)
    }
}

/// The read handle of one group of a [`MemStorage`]: a shared pointer and the group id.
#[derive(Debug)]
pub struct MemView<C: RaftTypeConfig> {
    shared: Arc<RwLock<Shared<C>>>,
    group: C::GroupId,
}

impl<C: RaftTypeConfig> Clone for MemView<C> {
    fn clone(&self) -> Self {
        MemView {
            shared: Arc::clone(&self.shared),
            group: self.group,
        }
    }
}

impl<C: RaftTypeConfig> MemView<C> {
    /// The group this view reads.
    pub fn group(&self) -> C::GroupId {
        self.group
    }

    fn with<T>(
        &self,
        f: impl FnOnce(Option<&MemGroup<C>>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let shared = self.shared.read().map_err(|_| poisoned())?;
        f(shared.live.get(&self.group))
    }
}

impl<C: RaftTypeConfig> LogView<C> for MemView<C> {
    fn initial_state(&self) -> Result<InitialState<C>, StorageError> {
        self.with(|g| {
            Ok(g.map(|g| g.state.initial_state())
                .unwrap_or_else(|| GroupState::default().initial_state()))
        })
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.with(|g| {
            let Some(g) = g else {
                return GroupState::<C>::default()
                    .term_hint(index)
                    .unwrap_or(Err(StorageError::Unavailable { index }));
            };
            match g.state.term_hint(index) {
                Some(answer) => answer,
                None => g.entry(&self.group, index).map(|e| e.term),
            }
        })
    }

    fn entries(
        &self,
        low: Index,
        high: Index,
        max_bytes: usize,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        self.with(|g| {
            let state = g.map(|g| &g.state);
            let default = GroupState::default();
            if !state.unwrap_or(&default).check_range(low, high)? {
                return Ok(Vec::new());
            }
            let Some(g) = g else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for index in low..high {
                let entry = g.entry(&self.group, index)?;
                let size = entry.size();
                if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                    break;
                }
                bytes = bytes.saturating_add(size);
                out.push(entry.clone());
            }
            Ok(out)
        })
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        self.with(|g| Ok(g.map_or(1, |g| g.state.first_index())))
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        self.with(|g| Ok(g.map_or(0, |g| g.state.last.index)))
    }

    fn snapshot(&self) -> Result<Option<Snapshot<C>>, StorageError> {
        self.with(|g| Ok(g.and_then(|g| g.snapshot.clone())))
    }
}
