//! The Raft safety properties (Raft paper, Figure 3), checked as the simulation runs.

use std::collections::{BTreeMap, HashMap};

use crate::types::{Entry, EntryPayload, HardState, Index, Term};

use super::kv::SimTypes;

/// Global knowledge accumulated over a run, against which every observation is checked. Each method
/// returns `Err` with a description of the violated property.
///
/// - **Election safety**: at most one leader per term ([`leader`](Self::leader)).
/// - **Log matching**: every entry ever handed out for persistence is registered with the term of the
///   entry before it and its payload; two logs holding an entry with the same index and term therefore
///   agree on it and, by induction, on everything before it ([`appended`](Self::appended)).
/// - **State machine safety**: no two applications at one index differ ([`applied`](Self::applied)).
/// - **Leader completeness**: an entry committed in some term is in the log of every leader of a later term
///   ([`committed`](Self::committed), [`check_leader_log`](Self::check_leader_log)).
#[derive(Debug, Default)]
pub struct Invariants {
    leaders: BTreeMap<Term, u64>,
    // Lookups only: iteration order never reaches the outcome.
    entries: HashMap<(Index, Term), (Term, EntryPayload<SimTypes>)>,
    applied: Vec<(Term, EntryPayload<SimTypes>)>,
    /// Index → (entry term, the term of the leader that first reported it committed).
    commits: BTreeMap<Index, (Term, Term)>,
}

impl Invariants {
    /// A durable hard state may only move forward: the term never goes back, the vote never changes
    /// within a term, the commit index never goes back nor past the durable last index.
    pub fn durable_change(
        old: &HardState<SimTypes>,
        new: &HardState<SimTypes>,
        last_index: Index,
    ) -> Result<(), String> {
        if new.term < old.term {
            return Err(format!(
                "durable term went back from {} to {}",
                old.term, new.term
            ));
        }
        if new.term == old.term && old.vote.is_some() && new.vote != old.vote {
            return Err(format!(
                "durable vote changed from {:?} to {:?} within term {}",
                old.vote, new.vote, new.term
            ));
        }
        if new.commit < old.commit {
            return Err(format!(
                "durable commit index went back from {} to {}",
                old.commit, new.commit
            ));
        }
        if new.commit > last_index {
            return Err(format!(
                "durable commit index {} is past the durable last index {last_index}",
                new.commit
            ));
        }
        Ok(())
    }

    /// No knowledge yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` is leader in `term`.
    pub fn leader(&mut self, term: Term, node: u64) -> Result<(), String> {
        match self.leaders.get(&term) {
            Some(other) if *other != node => Err(format!(
                "election safety: nodes {other} and {node} are both leader in term {term}"
            )),
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(term, node);
                Ok(())
            }
        }
    }

    /// The number of terms that had a leader.
    pub fn leader_count(&self) -> usize {
        self.leaders.len()
    }

    /// `entries` are appended to `node`'s log right after an entry of term `prev_term`.
    pub fn appended(
        &mut self,
        node: u64,
        prev_term: Term,
        entries: &[Entry<SimTypes>],
    ) -> Result<(), String> {
        let mut prev = prev_term;
        for e in entries {
            if e.term < prev {
                return Err(format!(
                    "log of node {node}: entry {}@{} follows an entry of term {prev}",
                    e.index, e.term
                ));
            }
            match self.entries.get(&(e.index, e.term)) {
                Some((p, payload)) => {
                    if *p != prev || *payload != e.payload {
                        return Err(format!(
                            "log matching: node {node} holds entry {}@{} = {:?} after term {prev}, but another \
                             log holds {}@{} = {:?} after term {p}",
                            e.index, e.term, e.payload, e.index, e.term, payload
                        ));
                    }
                }
                None => {
                    self.entries
                        .insert((e.index, e.term), (prev, e.payload.clone()));
                }
            }
            prev = e.term;
        }
        Ok(())
    }

    /// `node` applied `entry` to its state machine. Returns true if no node had applied this index before.
    pub fn applied(&mut self, node: u64, entry: &Entry<SimTypes>) -> Result<bool, String> {
        let i = entry.index as usize;
        if i == 0 {
            return Err(format!("node {node} applied an entry at index 0"));
        }
        let mut new = false;
        if let Some((term, payload)) = self.applied.get(i - 1) {
            if *term != entry.term || *payload != entry.payload {
                return Err(format!(
                    "state machine safety: node {node} applied {}@{} = {:?}, but {}@{term} = {payload:?} was \
                     applied before",
                    entry.index, entry.term, entry.payload, entry.index
                ));
            }
        } else if i == self.applied.len() + 1 {
            self.applied.push((entry.term, entry.payload.clone()));
            new = true;
        } else {
            return Err(format!(
                "node {node} applied entry {} while only {} entries were ever applied",
                entry.index,
                self.applied.len()
            ));
        }
        if let Some((term, _)) = self.commits.get(&entry.index) {
            if *term != entry.term {
                return Err(format!(
                    "state machine safety: node {node} applied {}@{} but {}@{term} was committed",
                    entry.index, entry.term, entry.index
                ));
            }
        }
        Ok(new)
    }

    /// The term of the entry applied at `index`, if any node applied it.
    pub fn applied_term(&self, index: Index) -> Option<Term> {
        let i = usize::try_from(index).ok()?.checked_sub(1)?;
        self.applied.get(i).map(|(term, _)| *term)
    }

    /// The highest index any node applied.
    pub fn max_applied(&self) -> Index {
        self.applied.len() as Index
    }

    /// A leader of `commit_term` reports the entry `index@entry_term` committed. Returns true if this is
    /// news (the caller then checks the logs of leaders of later terms).
    pub fn committed(
        &mut self,
        index: Index,
        entry_term: Term,
        commit_term: Term,
    ) -> Result<bool, String> {
        if let Some((term, payload)) = self.applied.get(index as usize - 1) {
            if *term != entry_term {
                return Err(format!(
                    "leader of term {commit_term} committed {index}@{entry_term} but {index}@{term} = \
                     {payload:?} was applied"
                ));
            }
        }
        match self.commits.get_mut(&index) {
            Some((term, ct)) => {
                if *term != entry_term {
                    return Err(format!(
                        "leader of term {commit_term} committed {index}@{entry_term} but the leader of term \
                         {ct} committed {index}@{term}"
                    ));
                }
                if commit_term < *ct {
                    *ct = commit_term;
                    return Ok(true);
                }
                Ok(false)
            }
            None => {
                self.commits.insert(index, (entry_term, commit_term));
                Ok(true)
            }
        }
    }

    /// Leader completeness: the log of `node`, leader in `term` (`term_at(i)` gives the term of its entry
    /// at `i`; entries before `first_index` are compacted into its snapshot), holds every entry committed
    /// in an earlier term.
    pub fn check_leader_log(
        &self,
        node: u64,
        term: Term,
        first_index: Index,
        term_at: impl Fn(Index) -> Option<Term>,
    ) -> Result<(), String> {
        for (index, (entry_term, commit_term)) in self.commits.range(first_index..) {
            if *commit_term < term && term_at(*index) != Some(*entry_term) {
                return Err(format!(
                    "leader completeness: node {node}, leader in term {term}, has {:?} at index {index}, but \
                     {index}@{entry_term} was committed in term {commit_term}",
                    term_at(*index)
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(index: Index, term: Term) -> Entry<SimTypes> {
        Entry {
            term,
            index,
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut inv = Invariants::new();
        assert!(inv.leader(1, 1).is_ok());
        assert!(inv.leader(1, 1).is_ok());
        assert!(inv.leader(2, 2).is_ok());
        assert!(inv.leader(1, 3).is_err());
    }

    #[test]
    fn diverging_prefixes_are_caught() {
        let mut inv = Invariants::new();
        assert!(inv.appended(1, 0, &[blank(1, 1), blank(2, 2)]).is_ok());
        assert!(inv.appended(2, 0, &[blank(1, 1)]).is_ok());
        // Same index and term, different predecessor.
        assert!(inv.appended(3, 0, &[blank(1, 2), blank(2, 2)]).is_err());
    }

    #[test]
    fn divergent_applies_are_caught() {
        let mut inv = Invariants::new();
        assert_eq!(inv.applied(1, &blank(1, 1)), Ok(true));
        assert_eq!(inv.applied(2, &blank(1, 1)), Ok(false));
        assert!(inv.applied(2, &blank(1, 2)).is_err());
        assert!(inv.applied(2, &blank(3, 2)).is_err());
    }

    #[test]
    fn leaders_must_hold_earlier_commits() {
        let mut inv = Invariants::new();
        assert_eq!(inv.committed(1, 1, 1), Ok(true));
        assert!(inv
            .check_leader_log(2, 2, 1, |i| (i == 1).then_some(1))
            .is_ok());
        assert!(inv.check_leader_log(2, 2, 1, |_| None).is_err());
        // Compacted entries are covered by the snapshot.
        assert!(inv.check_leader_log(2, 2, 2, |_| None).is_ok());
        // A leader of the same term need not be checked against its own commits.
        assert!(inv.check_leader_log(1, 1, 1, |_| None).is_ok());
    }
}
