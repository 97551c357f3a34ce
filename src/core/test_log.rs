//! An in-memory durable log for the crate's unit tests (the storage crates hold the real backends).

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;

use crate::error::StorageError;
use crate::storage::{InitialState, LogView};
use crate::types::test_config::T;
use crate::types::{Entry, EntryPayload, HardState, Index, Membership, Snapshot, Term};

#[derive(Default)]
pub(crate) struct MemLogInner {
    pub(crate) hard_state: HardState<T>,
    pub(crate) membership: Membership<T>,
    /// Entries from `offset` on; `offset - 1` is the compaction point with term `compacted_term`.
    pub(crate) offset: Index,
    pub(crate) compacted_term: Term,
    pub(crate) entries: Vec<Entry<T>>,
    pub(crate) snapshot: Option<Snapshot<T>>,
}

#[derive(Clone, Default)]
pub(crate) struct MemLog(pub(crate) Rc<RefCell<MemLogInner>>);

impl MemLog {
    pub(crate) fn new(voters: &[u64]) -> Self {
        let log = MemLog::default();
        {
            let mut inner = log.0.borrow_mut();
            inner.offset = 1;
            inner.membership = Membership::new_voters(voters.iter().copied());
        }
        log
    }

    /// A log already holding entries of the given terms at indexes 1, 2, ...
    pub(crate) fn with_terms(voters: &[u64], terms: &[Term]) -> Self {
        let log = MemLog::new(voters);
        let entries: Vec<Entry<T>> = terms
            .iter()
            .enumerate()
            .map(|(i, t)| entry(*t, i as Index + 1))
            .collect();
        log.write(&entries, None);
        if let Some(last) = terms.last() {
            log.0.borrow_mut().hard_state.term = *last;
        }
        log
    }

    pub(crate) fn write(&self, entries: &[Entry<T>], hs: Option<&HardState<T>>) {
        let mut inner = self.0.borrow_mut();
        if let Some(first) = entries.first() {
            let keep = (first.index - inner.offset) as usize;
            inner.entries.truncate(keep);
            inner.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hs {
            inner.hard_state = hs.clone();
        }
    }

    pub(crate) fn terms(&self) -> Vec<Term> {
        self.0.borrow().entries.iter().map(|e| e.term).collect()
    }

    /// Stores `snapshot` and drops the log up to its last index (what a caller does after taking a
    /// snapshot at its applied index).
    pub(crate) fn compact_with(&self, snapshot: Snapshot<T>) {
        let mut inner = self.0.borrow_mut();
        let index = snapshot.meta.last.index;
        let drop = (index + 1 - inner.offset) as usize;
        inner.compacted_term = snapshot.meta.last.term;
        inner.entries.drain(..drop);
        inner.offset = index + 1;
        inner.snapshot = Some(snapshot);
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub(crate) fn install(&self, snapshot: &Snapshot<T>) {
        let mut inner = self.0.borrow_mut();
        inner.entries.clear();
        inner.offset = snapshot.meta.last.index + 1;
        inner.compacted_term = snapshot.meta.last.term;
        inner.membership = snapshot.meta.membership.clone();
        inner.snapshot = Some(snapshot.clone());
    }
}

impl LogView<T> for MemLog {
    fn initial_state(&self) -> Result<InitialState<T>, StorageError> {
        let inner = self.0.borrow();
        Ok(InitialState {
            hard_state: inner.hard_state.clone(),
            membership: inner.membership.clone(),
        })
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        let inner = self.0.borrow();
        if index + 1 == inner.offset {
            return Ok(inner.compacted_term);
        }
        if index < inner.offset {
            return Err(StorageError::Compacted { index });
        }
        inner
            .entries
            .get((index - inner.offset) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable { index })
    }

    fn entries(
        &self,
        low: Index,
        high: Index,
        max_bytes: usize,
    ) -> Result<Vec<Entry<T>>, StorageError> {
        let inner = self.0.borrow();
        if low < inner.offset {
            return Err(StorageError::Compacted { index: low });
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for index in low..high {
            let e = inner
                .entries
                .get((index - inner.offset) as usize)
                .ok_or(StorageError::Unavailable { index })?;
            if !out.is_empty() && bytes + e.size() > max_bytes {
                break;
            }
            bytes += e.size();
            out.push(e.clone());
        }
        Ok(out)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.0.borrow().offset)
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        let inner = self.0.borrow();
        Ok(inner.offset + inner.entries.len() as Index - 1)
    }

    fn snapshot(&self) -> Result<Option<Snapshot<T>>, StorageError> {
        Ok(self.0.borrow().snapshot.clone())
    }
}

/// The tests' state machine is the list of applied commands; a snapshot is that list joined by ','.
pub(crate) fn encode_state(applied: &[Bytes]) -> Bytes {
    let parts: Vec<&[u8]> = applied.iter().map(|b| b.as_ref()).collect();
    Bytes::from(parts.join(&b","[..]))
}

pub(crate) fn decode_state(data: &Bytes) -> Vec<Bytes> {
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|b| *b == b',')
        .map(Bytes::copy_from_slice)
        .collect()
}

/// A normal entry whose payload names its position.
pub(crate) fn entry(term: Term, index: Index) -> Entry<T> {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(Bytes::from(format!("t{term}i{index}"))),
    }
}
