//! A node's simulated disk: the durable log, snapshot and hard state, and the read-only view the core
//! reads.

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::StorageError;
use crate::storage::{InitialState, LogView};
use crate::types::{Entry, HardState, Index, Membership, Snapshot, Term};

use super::kv::SimTypes;

/// What survives a crash: the hard state, the latest snapshot and the log after it, exactly as the last
/// completed write left them.
#[derive(Debug, Clone)]
pub struct Disk {
    hard_state: HardState<SimTypes>,
    /// The hard state as of the last synced write.
    synced_hard_state: HardState<SimTypes>,
    /// The bootstrap membership, or the one recorded with the snapshot.
    membership: Membership<SimTypes>,
    snapshot: Option<Snapshot<SimTypes>>,
    /// The index of `entries[0]`: one past the snapshot (1 without one).
    offset: Index,
    entries: Vec<Entry<SimTypes>>,
}

impl Disk {
    /// An empty disk bootstrapped with `membership`.
    pub fn new(membership: Membership<SimTypes>) -> Self {
        Disk {
            hard_state: HardState::default(),
            synced_hard_state: HardState::default(),
            membership,
            snapshot: None,
            offset: 1,
            entries: Vec::new(),
        }
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> &HardState<SimTypes> {
        &self.hard_state
    }

    /// The durable snapshot, if any.
    pub fn snapshot(&self) -> Option<&Snapshot<SimTypes>> {
        self.snapshot.as_ref()
    }

    /// The index of the first entry in the log (one past the snapshot).
    pub fn first_index(&self) -> Index {
        self.offset
    }

    /// The index of the last durable entry (the snapshot's if the log after it is empty).
    pub fn last_index(&self) -> Index {
        self.offset + self.entries.len() as Index - 1
    }

    /// The durable entry at `index`, if it is in the log.
    pub fn entry(&self, index: Index) -> Option<&Entry<SimTypes>> {
        if index < self.offset {
            return None;
        }
        self.entries.get((index - self.offset) as usize)
    }

    /// The term of the durable entry at `index`: the snapshot's term at its index, 0 at index 0, `None`
    /// below the snapshot or past the end.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index + 1 == self.offset {
            return Some(self.snapshot.as_ref().map_or(0, |s| s.meta.last.term));
        }
        self.entry(index).map(|e| e.term)
    }

    /// Makes one `Ready`'s writes durable, atomically: installs the snapshot (replacing the whole log),
    /// drops the log from the first new entry on, appends the new entries, and stores the hard state. A
    /// write that would leave a gap or reach into the snapshot is refused.
    ///
    /// A write that need not be synced (`sync` false: the Ready changed only the commit index) stays in
    /// the page cache: [`lose_unsynced`](Self::lose_unsynced) undoes it, as a crash may.
    pub fn write(
        &mut self,
        snapshot: Option<&Snapshot<SimTypes>>,
        entries: &[Entry<SimTypes>],
        hard_state: Option<&HardState<SimTypes>>,
        sync: bool,
    ) -> Result<(), String> {
        if !sync && (snapshot.is_some() || !entries.is_empty()) {
            return Err("an unsynced write carries a snapshot or entries".to_string());
        }
        // Validate first, so that a refused write changes nothing.
        let (offset, last) = match snapshot {
            Some(s) => (s.meta.last.index + 1, s.meta.last.index),
            None => (self.offset, self.last_index()),
        };
        if let Some(first) = entries.first() {
            if first.index < offset || first.index > last + 1 {
                return Err(format!(
                    "write of entries from {} to a log holding {offset}..={last} leaves a gap or reaches \
                     into the snapshot",
                    first.index
                ));
            }
            for (i, e) in entries.iter().enumerate() {
                if e.index != first.index + i as Index {
                    return Err(format!(
                        "entries in a write are not consecutive at {}",
                        e.index
                    ));
                }
            }
        }
        if let Some(s) = snapshot {
            self.snapshot = Some(s.clone());
            self.membership = s.meta.membership.clone();
            self.offset = offset;
            self.entries.clear();
        }
        if let Some(first) = entries.first() {
            self.entries.truncate((first.index - self.offset) as usize);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        if sync {
            self.synced_hard_state = self.hard_state.clone();
        }
        Ok(())
    }

    /// A crash loses the writes since the last sync (they changed the commit index only).
    pub fn lose_unsynced(&mut self) {
        self.hard_state = self.synced_hard_state.clone();
    }

    /// Stores `snapshot`, taken by this node's state machine, and drops the log up to it.
    pub fn compact(&mut self, snapshot: Snapshot<SimTypes>) -> Result<(), String> {
        let last = snapshot.meta.last;
        if last.index < self.offset {
            return Ok(()); // nothing new to drop
        }
        if self.term(last.index) != Some(last.term) {
            return Err(format!(
                "compaction at {}@{} but the durable log holds {:?} there",
                last.index,
                last.term,
                self.term(last.index)
            ));
        }
        self.entries
            .drain(..(last.index + 1 - self.offset) as usize);
        self.offset = last.index + 1;
        self.membership = snapshot.meta.membership.clone();
        self.snapshot = Some(snapshot);
        Ok(())
    }
}

/// The core's read-only view of a node's [`Disk`], shared with the simulator that writes it.
#[derive(Debug, Clone)]
pub struct DiskView(pub Rc<RefCell<Disk>>);

impl LogView<SimTypes> for DiskView {
    fn initial_state(&self) -> Result<InitialState<SimTypes>, StorageError> {
        let disk = self.0.borrow();
        Ok(InitialState {
            hard_state: disk.hard_state.clone(),
            membership: disk.membership.clone(),
        })
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        let disk = self.0.borrow();
        if index + 1 < disk.offset {
            return Err(StorageError::Compacted { index });
        }
        disk.term(index).ok_or(StorageError::Unavailable { index })
    }

    fn entries(
        &self,
        low: Index,
        high: Index,
        max_bytes: usize,
    ) -> Result<Vec<Entry<SimTypes>>, StorageError> {
        let disk = self.0.borrow();
        if low < disk.offset {
            return Err(StorageError::Compacted { index: low });
        }
        if high > disk.last_index() + 1 {
            return Err(StorageError::Unavailable { index: high - 1 });
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for index in low..high {
            let Some(entry) = disk.entry(index) else {
                return Err(StorageError::Unavailable { index });
            };
            let size = entry.size();
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.0.borrow().offset)
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.0.borrow().last_index())
    }

    fn snapshot(&self) -> Result<Option<Snapshot<SimTypes>>, StorageError> {
        Ok(self.0.borrow().snapshot.clone())
    }
}
