//! Shared pieces of the benchmarks: a type config and the leanest possible in-memory durable log, so
//! that the figures measure tickraft and not a storage engine.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use tickraft::{
    Entry, HardState, Index, InitialState, LogView, Membership, RaftTypeConfig, Snapshot,
    StorageError, Term,
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct B;

impl RaftTypeConfig for B {
    type NodeId = u64;
    type GroupId = u64;
    type Data = Bytes;
    type Snapshot = Bytes;
}

/// A durable log in memory.
struct LogInner {
    hard_state: HardState<B>,
    membership: Membership<B>,
    entries: Vec<Entry<B>>,
}

#[derive(Clone)]
pub struct BenchLog(Rc<RefCell<LogInner>>);

impl BenchLog {
    pub fn new(membership: Membership<B>) -> Self {
        BenchLog(Rc::new(RefCell::new(LogInner {
            hard_state: HardState::default(),
            membership,
            entries: Vec::new(),
        })))
    }

    pub fn write(&self, entries: &[Entry<B>], hs: Option<&HardState<B>>) {
        self.write_owned(entries.to_vec(), hs);
    }

    /// Like `write`, moving the entries in.
    pub fn write_owned(&self, entries: Vec<Entry<B>>, hs: Option<&HardState<B>>) {
        let mut inner = self.0.borrow_mut();
        if let Some(first) = entries.first() {
            inner.entries.truncate((first.index - 1) as usize);
            inner.entries.extend(entries);
        }
        if let Some(hs) = hs {
            inner.hard_state = hs.clone();
        }
    }
}

impl LogView<B> for BenchLog {
    fn initial_state(&self) -> Result<InitialState<B>, StorageError> {
        let inner = self.0.borrow();
        Ok(InitialState {
            hard_state: inner.hard_state.clone(),
            membership: inner.membership.clone(),
        })
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index == 0 {
            return Ok(0);
        }
        let inner = self.0.borrow();
        inner
            .entries
            .get((index - 1) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable { index })
    }
    fn entries(&self, low: Index, high: Index, max: usize) -> Result<Vec<Entry<B>>, StorageError> {
        let inner = self.0.borrow();
        let mut out = Vec::new();
        let mut bytes = 0;
        for index in low..high {
            let e = inner
                .entries
                .get((index - 1) as usize)
                .ok_or(StorageError::Unavailable { index })?;
            if !out.is_empty() && bytes + e.size() > max {
                break;
            }
            bytes += e.size();
            out.push(e.clone());
        }
        Ok(out)
    }
    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(1)
    }
    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.0.borrow().entries.len() as Index)
    }
    fn snapshot(&self) -> Result<Option<Snapshot<B>>, StorageError> {
        Ok(None)
    }
}
