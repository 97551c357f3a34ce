//! The rules of a write, in one place: validation of a [`WriteBatch`] and its net effect on each group.
//!
//! Backends call [`plan_batch`] before touching anything: it checks every operation of the batch against
//! the group's state as the batch evolves it, and returns one [`GroupChange`] per group saying which stored
//! entries survive, which entries to store and the group's new [`GroupState`]. A backend then applies the
//! changes (all of them, atomically), so that every backend follows exactly the same rules and a batch with
//! one bad operation changes nothing.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use crate::error::StorageError;
use crate::storage::{InitialState, WriteBatch, WriteOp};
use crate::types::{
    Entry, HardState, Index, LogId, Membership, RaftTypeConfig, Snapshot, SnapshotMeta, Term,
};

/// The bookkeeping of one group's log that a backend keeps next to the entries: enough to validate writes
/// and to answer `first_index`, `last_index` and the terms at both ends without reading an entry. The
/// snapshot's data is kept by the backend apart from it (it may be large).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState<C: RaftTypeConfig> {
    /// The persisted hard state.
    pub hard_state: HardState<C>,
    /// The membership the group was bootstrapped with: in force at the start of the log until a snapshot
    /// exists.
    pub bootstrap: Membership<C>,
    /// The metadata of the stored snapshot, if any.
    pub snapshot: Option<SnapshotMeta<C>>,
    /// The compaction point: entries up to and including its index are gone; its term is still known.
    pub compacted: LogId,
    /// The last entry, equal to `compacted` when the log is empty.
    pub last: LogId,
}

impl<C: RaftTypeConfig> Default for GroupState<C> {
    /// The state of a group that was never written: an empty log starting at index 1.
    fn default() -> Self {
        GroupState {
            hard_state: HardState::default(),
            bootstrap: Membership::default(),
            snapshot: None,
            compacted: LogId::default(),
            last: LogId::default(),
        }
    }
}

impl<C: RaftTypeConfig> GroupState<C> {
    /// The index of the first entry in the log.
    pub fn first_index(&self) -> Index {
        self.compacted.index + 1
    }

    /// True if the group stores nothing (it reads exactly like a group that was never written).
    pub fn is_pristine(&self) -> bool {
        *self == Self::default()
    }

    /// The last index the stored snapshot covers (0 without a snapshot).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.last.index)
    }

    /// What the core restarts from: the hard state, and the snapshot's membership (the bootstrap one
    /// without a snapshot).
    pub fn initial_state(&self) -> InitialState<C> {
        InitialState {
            hard_state: self.hard_state.clone(),
            membership: self
                .snapshot
                .as_ref()
                .map_or(&self.bootstrap, |s| &s.membership)
                .clone(),
        }
    }

    /// Answers `term(index)` without reading an entry where possible: the compaction point, the last entry
    /// and out-of-range indexes. `None` means the entry itself must be read.
    pub fn term_hint(&self, index: Index) -> Option<Result<Term, StorageError>> {
        term_hint(self.compacted, self.last, index)
    }

    /// Checks the range of an `entries(low, high, _)` read: `Ok(false)` if it is empty (`low >= high`),
    /// `Ok(true)` if every index in it is in the log, and `Compacted` / `Unavailable` otherwise.
    pub fn check_range(&self, low: Index, high: Index) -> Result<bool, StorageError> {
        if low >= high {
            return Ok(false);
        }
        if low <= self.compacted.index {
            return Err(StorageError::Compacted { index: low });
        }
        if high - 1 > self.last.index {
            return Err(StorageError::Unavailable {
                index: self.last.index.saturating_add(1),
            });
        }
        Ok(true)
    }

    /// Checks the invariants every state that a backend recovers must meet (the compaction point at or
    /// before the snapshot, the snapshot at or before the last entry, the commit index within the log).
    /// A violation is [`StorageError::Corrupt`] naming `group`.
    pub fn check_invariants(&self, group: &C::GroupId) -> Result<(), StorageError> {
        let fail = |reason: String| Err(StorageError::corrupt(group, None, reason));
        let snapshot = self.snapshot_index();
        if self.compacted.index > snapshot {
            return fail(format!(
                "compaction point {} is past the snapshot at {snapshot} (no snapshot covers the discarded \
                 entries)",
                self.compacted.index
            ));
        }
        if snapshot > self.last.index {
            return fail(format!(
                "snapshot at {snapshot} is past the last index {}",
                self.last.index
            ));
        }
        if self.hard_state.commit > self.last.index {
            return fail(format!(
                "commit index {} is past the last index {} (committed entries are missing)",
                self.hard_state.commit, self.last.index
            ));
        }
        if self.last.index == self.compacted.index && self.last.term != self.compacted.term {
            return fail(format!(
                "empty log whose last term {} differs from the compaction point's term {}",
                self.last.term, self.compacted.term
            ));
        }
        Ok(())
    }
}

/// The term of `index` if the ends of the log answer it (see [`GroupState::term_hint`]).
fn term_hint(compacted: LogId, last: LogId, index: Index) -> Option<Result<Term, StorageError>> {
    if index < compacted.index {
        Some(Err(StorageError::Compacted { index }))
    } else if index == compacted.index {
        Some(Ok(compacted.term))
    } else if index > last.index {
        Some(Err(StorageError::Unavailable { index }))
    } else if index == last.index {
        Some(Ok(last.term))
    } else {
        None
    }
}

/// The net effect of a write batch on one group, as computed by [`plan_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupChange<C: RaftTypeConfig> {
    /// The group.
    pub group: C::GroupId,
    /// The group's state before the batch.
    pub before: GroupState<C>,
    /// The group's state after the batch.
    pub after: GroupState<C>,
    /// The entries to store, with consecutive indexes, all after the [`kept`](Self::kept) range. An entry
    /// may reuse the index of a removed one (a tail overwrite).
    pub appended: Vec<Entry<C>>,
    /// The snapshot this batch stores for the group (the latest, if it stores several), with its data.
    /// `None` if the stored snapshot did not change, or if it was deleted (then `after.snapshot` is
    /// `None` too).
    pub snapshot: Option<Snapshot<C>>,
    kept_from: Index,
    kept_to: Index,
}

impl<C: RaftTypeConfig> GroupChange<C> {
    /// The stored entries (those of `before`) that survive the batch: a sub-range of
    /// `before.first_index()..=before.last.index`, empty if none survives.
    pub fn kept(&self) -> RangeInclusive<Index> {
        self.kept_from..=self.kept_to
    }

    /// The stored entries that the batch removes (compacted, truncated or discarded), in ascending order.
    /// Entries of [`appended`](Self::appended) may later reuse some of these indexes.
    pub fn removed(&self) -> impl Iterator<Item = Index> {
        let first = self.before.first_index();
        let last = self.before.last.index;
        let (head, tail) = if self.kept_from > self.kept_to {
            (first..=last, RangeInclusive::new(1, 0))
        } else {
            (first..=self.kept_from - 1, self.kept_to + 1..=last)
        };
        head.chain(tail)
    }

    /// True if the hard state, bootstrap membership, snapshot metadata or compaction point changed: the
    /// group's metadata record must be rewritten.
    pub fn metadata_changed(&self) -> bool {
        self.before.hard_state != self.after.hard_state
            || self.before.bootstrap != self.after.bootstrap
            || self.before.snapshot != self.after.snapshot
            || self.before.compacted != self.after.compacted
    }

    /// True if the stored snapshot was removed (the group was deleted): the backend drops its data.
    pub fn snapshot_removed(&self) -> bool {
        self.before.snapshot.is_some() && self.after.snapshot.is_none()
    }
}

/// One group's state while a batch is planned.
struct Planner<C: RaftTypeConfig> {
    group: C::GroupId,
    before: GroupState<C>,
    after: GroupState<C>,
    /// Stored entries at or below this index are gone.
    stored_lo: Index,
    /// Stored entries above this index are gone. Nothing stored survives when `stored_hi <= stored_lo`.
    stored_hi: Index,
    /// The index of `tail[0]`; `after.last.index + 1` when the tail is empty.
    tail_start: Index,
    /// Entries written by this batch.
    tail: Vec<Entry<C>>,
    /// The snapshot stored by this batch.
    snapshot: Option<Snapshot<C>>,
}

impl<C: RaftTypeConfig> Planner<C> {
    fn new(group: C::GroupId, before: GroupState<C>) -> Self {
        Planner {
            group,
            stored_lo: before.compacted.index,
            stored_hi: before.last.index,
            tail_start: before.last.index.saturating_add(1),
            tail: Vec::new(),
            snapshot: None,
            after: before.clone(),
            before,
        }
    }

    fn invalid(&self, reason: String) -> StorageError {
        StorageError::invalid_write(&self.group, reason)
    }

    /// The term of `index` in the log as this batch leaves it so far.
    fn term<T>(&self, index: Index, stored_term: &mut T) -> Result<Term, StorageError>
    where
        T: FnMut(&C::GroupId, Index) -> Result<Term, StorageError>,
    {
        if let Some(answer) = term_hint(self.after.compacted, self.after.last, index) {
            return answer;
        }
        if !self.tail.is_empty() && index >= self.tail_start {
            let offset = (index - self.tail_start) as usize;
            return match self.tail.get(offset) {
                Some(entry) => Ok(entry.term),
                None => Err(StorageError::Unavailable { index }),
            };
        }
        if index > self.stored_lo && index <= self.stored_hi {
            return stored_term(&self.group, index);
        }
        Err(StorageError::corrupt(
            &self.group,
            Some(index),
            "entry inside the log is neither stored nor written by this batch",
        ))
    }

    fn apply<T>(&mut self, op: WriteOp<C>, stored_term: &mut T) -> Result<(), StorageError>
    where
        T: FnMut(&C::GroupId, Index) -> Result<Term, StorageError>,
    {
        match op {
            WriteOp::Append(entries) => self.append(entries, stored_term),
            WriteOp::SetHardState(hard_state) => self.set_hard_state(hard_state),
            WriteOp::Bootstrap(membership) => self.bootstrap(membership),
            WriteOp::InstallSnapshot(snapshot) => self.install_snapshot(snapshot),
            WriteOp::SaveSnapshot(snapshot) => self.save_snapshot(snapshot, stored_term),
            WriteOp::Compact { upto } => self.compact(upto, stored_term),
            WriteOp::DeleteGroup => {
                self.stored_hi = self.stored_lo;
                self.tail.clear();
                self.snapshot = None;
                self.after = GroupState::default();
                self.tail_start = 1;
                Ok(())
            }
        }
    }

    fn append<T>(&mut self, entries: Vec<Entry<C>>, stored_term: &mut T) -> Result<(), StorageError>
    where
        T: FnMut(&C::GroupId, Index) -> Result<Term, StorageError>,
    {
        let (Some(first_entry), Some(last_entry)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let first = first_entry.index;
        let first_term = first_entry.term;
        let last = last_entry.log_id();
        for pair in entries.windows(2) {
            if pair[0].index.checked_add(1) != Some(pair[1].index) {
                return Err(self.invalid(format!(
                    "appended entries are not consecutive: index {} follows index {}",
                    pair[1].index, pair[0].index
                )));
            }
            if pair[1].term < pair[0].term {
                return Err(self.invalid(format!(
                    "appended entries go back in term: entry {} has term {} after term {}",
                    pair[1].index, pair[1].term, pair[0].term
                )));
            }
        }
        if first > 0 && first - 1 > self.after.last.index {
            return Err(self.invalid(format!(
                "append at index {first} leaves a gap after the last index {}",
                self.after.last.index
            )));
        }
        let floors = [
            (self.after.compacted.index, "the compaction point"),
            (self.after.snapshot_index(), "the snapshot"),
            (self.after.hard_state.commit, "the commit index"),
        ];
        for (floor, what) in floors {
            if first <= floor {
                return Err(self.invalid(format!(
                    "append at index {first} would overwrite entries up to {what} at {floor}"
                )));
            }
        }
        let prev_term = self.term(first - 1, stored_term)?;
        if first_term < prev_term {
            return Err(self.invalid(format!(
                "append at index {first} with term {first_term} follows an entry of term {prev_term}"
            )));
        }
        if first < self.tail_start {
            // Overwrites stored entries from `first` on.
            self.stored_hi = self.stored_hi.min(first - 1);
            self.tail.clear();
            self.tail_start = first;
        } else {
            self.tail.truncate((first - self.tail_start) as usize);
            if self.tail.is_empty() {
                self.tail_start = first;
            }
        }
        self.tail.extend(entries);
        self.after.last = last;
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState<C>) -> Result<(), StorageError> {
        if hard_state.term < self.after.hard_state.term {
            return Err(self.invalid(format!(
                "hard state term {} is lower than the persisted term {}",
                hard_state.term, self.after.hard_state.term
            )));
        }
        if hard_state.commit > self.after.last.index {
            return Err(self.invalid(format!(
                "commit index {} is past the last index {}",
                hard_state.commit, self.after.last.index
            )));
        }
        self.after.hard_state = hard_state;
        Ok(())
    }

    fn bootstrap(&mut self, membership: Membership<C>) -> Result<(), StorageError> {
        if self.after.last.index > 0 || self.after.snapshot.is_some() {
            return Err(self.invalid(format!(
                "bootstrap of a group that already has a log (last index {}) or a snapshot",
                self.after.last.index
            )));
        }
        self.after.bootstrap = membership;
        Ok(())
    }

    /// Checks that `snapshot` is not older than the stored one.
    fn check_newer(&self, snapshot: &Snapshot<C>) -> Result<(), StorageError> {
        let new = snapshot.meta.last;
        if let Some(current) = self.after.snapshot.as_ref().map(|s| s.last) {
            if new.index < current.index {
                return Err(self.invalid(format!(
                    "snapshot at index {} is older than the stored snapshot at {}",
                    new.index, current.index
                )));
            }
            if new.index == current.index && new.term != current.term {
                return Err(self.invalid(format!(
                    "snapshot at index {} has term {} but the stored snapshot there has term {}",
                    new.index, new.term, current.term
                )));
            }
        }
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: Snapshot<C>) -> Result<(), StorageError> {
        self.check_newer(&snapshot)?;
        let last = snapshot.meta.last;
        if last.index < self.after.hard_state.commit {
            return Err(self.invalid(format!(
                "installing the snapshot at {} would drop committed entries up to {}",
                last.index, self.after.hard_state.commit
            )));
        }
        // The snapshot replaces the whole log.
        self.stored_hi = self.stored_lo;
        self.tail.clear();
        self.tail_start = last.index.saturating_add(1);
        self.after.compacted = last;
        self.after.last = last;
        self.after.snapshot = Some(snapshot.meta.clone());
        self.snapshot = Some(snapshot);
        Ok(())
    }

    fn save_snapshot<T>(
        &mut self,
        snapshot: Snapshot<C>,
        stored_term: &mut T,
    ) -> Result<(), StorageError>
    where
        T: FnMut(&C::GroupId, Index) -> Result<Term, StorageError>,
    {
        self.check_newer(&snapshot)?;
        let last = snapshot.meta.last;
        let in_log =
            if last.index >= self.after.compacted.index && last.index <= self.after.last.index {
                Some(self.term(last.index, stored_term)?)
            } else {
                None
            };
        if in_log != Some(last.term) {
            return Err(self.invalid(format!(
                "the log does not hold the snapshot's last entry (index {}, term {}): its log is {}..={}",
                last.index,
                last.term,
                self.after.first_index(),
                self.after.last.index
            )));
        }
        self.after.snapshot = Some(snapshot.meta.clone());
        self.snapshot = Some(snapshot);
        Ok(())
    }

    fn compact<T>(&mut self, upto: Index, stored_term: &mut T) -> Result<(), StorageError>
    where
        T: FnMut(&C::GroupId, Index) -> Result<Term, StorageError>,
    {
        if upto > self.after.last.index {
            return Err(self.invalid(format!(
                "compaction to index {upto} is past the last index {}",
                self.after.last.index
            )));
        }
        if upto > self.after.snapshot_index() {
            return Err(self.invalid(format!(
                "compaction to index {upto} is past the snapshot at {}: a snapshot must cover every \
                 discarded entry",
                self.after.snapshot_index()
            )));
        }
        if upto <= self.after.compacted.index {
            return Ok(());
        }
        let term = self.term(upto, stored_term)?;
        self.after.compacted = LogId::new(term, upto);
        self.stored_lo = self.stored_lo.max(upto);
        if !self.tail.is_empty() && upto >= self.tail_start {
            let n = ((upto - self.tail_start + 1) as usize).min(self.tail.len());
            self.tail.drain(..n);
            self.tail_start = upto.saturating_add(1);
        }
        Ok(())
    }

    fn finish(self) -> GroupChange<C> {
        GroupChange {
            group: self.group,
            before: self.before,
            after: self.after,
            appended: self.tail,
            snapshot: self.snapshot,
            kept_from: self.stored_lo + 1,
            kept_to: self.stored_hi,
        }
    }
}

/// Validates `batch` and computes its net effect on each group it touches, in ascending group order.
///
/// `state_of` returns a group's current state (the default for a group that was never written);
/// `stored_term` reads the term of a stored entry (it is only asked for indexes inside the stored log).
/// On the first invalid operation this returns [`StorageError::InvalidWrite`] and the backend must apply
/// nothing.
pub fn plan_batch<C, S, T>(
    batch: WriteBatch<C>,
    mut state_of: S,
    mut stored_term: T,
) -> Result<Vec<GroupChange<C>>, StorageError>
where
    C: RaftTypeConfig,
    S: FnMut(&C::GroupId) -> Result<GroupState<C>, StorageError>,
    T: FnMut(&C::GroupId, Index) -> Result<Term, StorageError>,
{
    let mut planners: BTreeMap<C::GroupId, Planner<C>> = BTreeMap::new();
    for write in batch.into_writes() {
        let planner = match planners.entry(write.group) {
            std::collections::btree_map::Entry::Occupied(slot) => slot.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                let before = state_of(&write.group)?;
                slot.insert(Planner::new(write.group, before))
            }
        };
        planner.apply(write.op, &mut stored_term)?;
    }
    Ok(planners.into_values().map(Planner::finish).collect())
}
