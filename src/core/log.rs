//! The log as the core sees it: the durable part through the caller's [`LogView`], plus an unstable tail
//! of entries that are not durable yet.

use crate::error::StorageError;
use crate::storage::LogView;
use crate::types::{Entry, Index, LogId, RaftTypeConfig, Snapshot, Term};

/// Entries appended in memory that the caller has not yet made durable.
#[derive(Debug)]
struct Unstable<C: RaftTypeConfig> {
    /// The index of `entries[0]`.
    offset: Index,
    entries: Vec<Entry<C>>,
    /// Entries below this index were already handed to the caller in a `Ready`.
    in_progress: Index,
    /// A snapshot received from the leader and not yet durable; `offset - 1` is its last index.
    snapshot: Option<Box<Snapshot<C>>>,
    /// The snapshot was already handed to the caller.
    snapshot_in_progress: bool,
}

impl<C: RaftTypeConfig> Unstable<C> {
    fn last_index(&self) -> Option<Index> {
        self.entries.last().map(|e| e.index)
    }

    fn get(&self, index: Index) -> Option<&Entry<C>> {
        if index < self.offset {
            return None;
        }
        self.entries.get((index - self.offset) as usize)
    }

    fn truncate_and_append(&mut self, new: Vec<Entry<C>>) {
        let Some(first) = new.first().map(|e| e.index) else {
            return;
        };
        let end = self.offset + self.entries.len() as Index;
        if first == end {
            if self.entries.is_empty() {
                self.entries = new;
            } else {
                self.entries.extend(new);
            }
        } else if first <= self.offset {
            // Replaces every unstable entry (and overrides durable ones from `first` on).
            self.offset = first;
            self.entries = new;
        } else {
            self.entries.truncate((first - self.offset) as usize);
            self.entries.extend(new);
        }
        self.in_progress = self.in_progress.min(first);
    }
}

/// The log of one replica.
pub struct RaftLog<C: RaftTypeConfig, S: LogView<C>> {
    pub storage: S,
    unstable: Unstable<C>,
    /// The highest index known to be committed.
    pub committed: Index,
    /// The highest index the caller has applied (reported through `advance`).
    pub applied: Index,
}

impl<C: RaftTypeConfig, S: LogView<C>> RaftLog<C, S> {
    pub fn new(storage: S, committed: Index, applied: Index) -> Result<Self, StorageError> {
        let last = storage.last_index()?;
        Ok(RaftLog {
            storage,
            unstable: Unstable {
                offset: last + 1,
                entries: Vec::new(),
                in_progress: last + 1,
                snapshot: None,
                snapshot_in_progress: false,
            },
            committed,
            applied,
        })
    }

    pub fn first_index(&self) -> Result<Index, StorageError> {
        match &self.unstable.snapshot {
            Some(s) => Ok(s.meta.last.index + 1),
            None => self.storage.first_index(),
        }
    }

    pub fn last_index(&self) -> Result<Index, StorageError> {
        match (self.unstable.last_index(), &self.unstable.snapshot) {
            (Some(last), _) => Ok(last),
            (None, Some(s)) => Ok(s.meta.last.index),
            (None, None) => self.storage.last_index(),
        }
    }

    pub fn last_log_id(&self) -> Result<LogId, StorageError> {
        let index = self.last_index()?;
        Ok(LogId::new(self.term(index)?, index))
    }

    /// The term of the entry at `index`.
    pub fn term(&self, index: Index) -> Result<Term, StorageError> {
        if let Some(entry) = self.unstable.get(index) {
            return Ok(entry.term);
        }
        if index >= self.unstable.offset {
            return Err(StorageError::Unavailable { index });
        }
        if let Some(s) = &self.unstable.snapshot {
            return if index == s.meta.last.index {
                Ok(s.meta.last.term)
            } else {
                Err(StorageError::Compacted { index })
            };
        }
        self.storage.term(index)
    }

    /// The term at `index`, or `None` if it is compacted or past the end.
    pub fn term_if_present(&self, index: Index) -> Result<Option<Term>, StorageError> {
        match self.term(index) {
            Ok(term) => Ok(Some(term)),
            Err(StorageError::Compacted { .. } | StorageError::Unavailable { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn matches(&self, id: LogId) -> Result<bool, StorageError> {
        Ok(self.term_if_present(id.index)? == Some(id.term))
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours.
    pub fn is_up_to_date(&self, candidate_last: LogId) -> Result<bool, StorageError> {
        let ours = self.last_log_id()?;
        Ok((candidate_last.term, candidate_last.index) >= (ours.term, ours.index))
    }

    /// The index of the last durable entry that the unstable tail does not override.
    pub fn stable_last_index(&self) -> Result<Index, StorageError> {
        if self.unstable.snapshot.is_some() {
            // The durable log is about to be replaced: nothing in it counts.
            return Ok(self.applied);
        }
        Ok(self.storage.last_index()?.min(self.unstable.offset - 1))
    }

    /// Replaces the log with a snapshot received from the leader. It becomes durable when the caller
    /// persists the Ready that carries it.
    pub fn restore(&mut self, snapshot: Snapshot<C>) {
        let index = snapshot.meta.last.index;
        let u = &mut self.unstable;
        u.offset = index + 1;
        u.entries.clear();
        u.in_progress = index + 1;
        u.snapshot = Some(Box::new(snapshot));
        u.snapshot_in_progress = false;
        self.committed = index;
    }

    /// The pending snapshot if it was not yet handed to the caller; marks it handed out.
    pub fn take_unpersisted_snapshot(&mut self) -> Option<Snapshot<C>> {
        let u = &mut self.unstable;
        if u.snapshot_in_progress {
            return None;
        }
        let snapshot = u.snapshot.as_deref()?.clone();
        u.snapshot_in_progress = true;
        Some(snapshot)
    }

    /// A snapshot received from the leader is not yet durable.
    pub fn has_pending_snapshot(&self) -> bool {
        self.unstable.snapshot.is_some()
    }

    pub fn has_unpersisted_snapshot(&self) -> bool {
        self.unstable.snapshot.is_some() && !self.unstable.snapshot_in_progress
    }

    /// The caller made the snapshot ending at `id` durable and installed it in the state machine.
    /// If a newer snapshot replaced it meanwhile, that one stays pending; but the caller did install this
    /// one, so the applied index moves either way.
    pub fn snapshot_stable(&mut self, id: LogId) {
        let u = &mut self.unstable;
        if u.snapshot.as_ref().map(|s| s.meta.last) == Some(id) {
            u.snapshot = None;
            u.snapshot_in_progress = false;
        }
        self.applied = self.applied.max(id.index);
    }

    /// Appends entries the leader created (no conflict possible). Returns the new last index.
    pub fn append(&mut self, entries: Vec<Entry<C>>) -> Index {
        self.unstable.truncate_and_append(entries);
        self.unstable
            .last_index()
            .unwrap_or(self.unstable.offset - 1)
    }

    /// The first index among `entries` whose term differs from ours (or that we lack), if any.
    pub fn find_conflict(&self, entries: &[Entry<C>]) -> Result<Option<Index>, StorageError> {
        for entry in entries {
            if self.term_if_present(entry.index)? != Some(entry.term) {
                return Ok(Some(entry.index));
            }
        }
        Ok(None)
    }

    /// For a rejected append at `index` with term `term`: the last index at or before `index` whose term is
    /// at most `term`. Both sides use it so that backtracking skips one whole term per round trip.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> Result<LogId, StorageError> {
        let mut index = index.min(self.last_index()?);
        loop {
            match self.term_if_present(index)? {
                Some(t) if t <= term => return Ok(LogId::new(t, index)),
                Some(_) if index > 0 => index -= 1,
                // Compacted (or index 0): the compaction point is the best we can say.
                _ => {
                    let point = self.first_index()?.saturating_sub(1).min(index);
                    let t = self.term_if_present(point)?.unwrap_or(0);
                    return Ok(LogId::new(t, point));
                }
            }
        }
    }

    /// Entries in `[low, high)` within a byte budget (at least one entry if `low < high`).
    pub fn slice(
        &self,
        low: Index,
        high: Index,
        max_bytes: usize,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        if low >= high {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let split = self.unstable.offset;
        if self.unstable.snapshot.is_some() && low < split {
            return Err(StorageError::Compacted { index: low });
        }
        if low < split {
            out = self.storage.entries(low, high.min(split), max_bytes)?;
            bytes = out.iter().map(Entry::size).sum();
            let want = (high.min(split) - low) as usize;
            if out.len() < want {
                return Ok(out); // budget reached inside the durable part
            }
        }
        let start = low.max(split);
        for index in start..high {
            let Some(entry) = self.unstable.get(index) else {
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

    /// Entries not yet handed to the caller for persistence; marks them handed out.
    pub fn take_unpersisted(&mut self) -> Vec<Entry<C>> {
        let u = &mut self.unstable;
        let from = u.in_progress.max(u.offset);
        let skip = (from - u.offset) as usize;
        if skip >= u.entries.len() {
            return Vec::new();
        }
        let out = u.entries[skip..].to_vec();
        u.in_progress = u.offset + u.entries.len() as Index;
        out
    }

    /// Releases spare capacity (for a hibernating replica).
    pub fn shrink(&mut self) {
        if self.unstable.entries.is_empty() {
            self.unstable.entries = Vec::new();
        }
    }

    pub fn has_unpersisted(&self) -> bool {
        let u = &self.unstable;
        u.in_progress < u.offset + u.entries.len() as Index
    }

    /// The caller made entries up to `id` durable: drop them from the unstable tail. If the tail was
    /// overwritten since (the term differs), nothing is dropped; the new entries will be persisted later.
    pub fn stable_to(&mut self, id: LogId) {
        let u = &mut self.unstable;
        if id.index < u.offset {
            return;
        }
        if u.get(id.index).map(|e| e.term) != Some(id.term) {
            return;
        }
        let n = (id.index + 1 - u.offset) as usize;
        u.entries.drain(..n);
        u.offset = id.index + 1;
        u.in_progress = u.in_progress.max(u.offset);
    }

    /// Commits up to `index` if the entry there has term `term` (Raft §5.4.2: a leader commits only entries
    /// of its own term by counting replicas).
    pub fn maybe_commit(&mut self, index: Index, term: Term) -> Result<bool, StorageError> {
        if index > self.committed && self.term_if_present(index)? == Some(term) {
            self.committed = index;
            return Ok(true);
        }
        Ok(false)
    }

    /// Raises the commit index (never lowers it) to at most the last index.
    pub fn commit_to(&mut self, index: Index) -> Result<(), StorageError> {
        let index = index.min(self.last_index()?);
        if index > self.committed {
            self.committed = index;
        }
        Ok(())
    }

    /// The highest index that may be applied now: committed and durable here.
    pub fn applicable_index(&self) -> Result<Index, StorageError> {
        Ok(self.committed.min(self.stable_last_index()?))
    }

    /// Committed, durable entries after `from` within a byte budget.
    pub fn committed_entries_after(
        &self,
        from: Index,
        max_bytes: usize,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        if self.unstable.snapshot.is_some() {
            return Ok(Vec::new()); // the snapshot is installed first
        }
        let hi = self.applicable_index()?;
        if hi <= from {
            return Ok(Vec::new());
        }
        self.slice(from + 1, hi + 1, max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_log::MemLog;
    use crate::types::test_config::T;
    use crate::types::{Membership, SnapshotMeta};

    fn snapshot(index: Index) -> Snapshot<T> {
        Snapshot {
            meta: SnapshotMeta {
                last: LogId::new(1, index),
                membership: Membership::new_voters([1]),
            },
            data: bytes::Bytes::new(),
        }
    }

    #[test]
    fn an_installed_snapshot_counts_as_applied_even_if_a_newer_one_replaced_it_meanwhile() {
        let mut log = RaftLog::<T, MemLog>::new(MemLog::new(&[1]), 0, 0).unwrap();
        log.restore(snapshot(10));
        let first = log.take_unpersisted_snapshot().unwrap();
        log.restore(snapshot(20)); // arrived while the first one was being written
        log.snapshot_stable(first.meta.last);
        assert_eq!(log.applied, 10, "the caller installed snapshot 10");
        assert!(
            log.has_pending_snapshot(),
            "snapshot 20 is still to be installed"
        );
        let second = log.take_unpersisted_snapshot().unwrap();
        log.snapshot_stable(second.meta.last);
        assert_eq!(log.applied, 20);
        assert!(!log.has_pending_snapshot());
    }
}
