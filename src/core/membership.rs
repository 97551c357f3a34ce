//! The memberships recorded in the log, so that the one in force can be found at any index and restored
//! when an uncommitted membership entry is overwritten.

use crate::types::{Index, Membership, RaftTypeConfig};

/// Membership configurations in index order. The first is the base: the newest one at or below the applied
/// index (or the bootstrap / snapshot configuration). Later ones come from log entries not yet applied.
#[derive(Debug, Clone)]
pub struct MembershipLog<C: RaftTypeConfig> {
    configs: Vec<(Index, Membership<C>)>,
}

impl<C: RaftTypeConfig> MembershipLog<C> {
    pub fn new(index: Index, base: Membership<C>) -> Self {
        MembershipLog {
            configs: vec![(index, base)],
        }
    }

    /// The configuration in force: the newest in the log, committed or not (Raft thesis §4.1).
    pub fn current(&self) -> &Membership<C> {
        &self.configs[self.configs.len() - 1].1
    }

    /// The index of the entry that carried the current configuration.
    pub fn current_index(&self) -> Index {
        self.configs[self.configs.len() - 1].0
    }

    /// The configuration in force at `index`.
    pub fn at(&self, index: Index) -> &Membership<C> {
        let pos = self.configs.partition_point(|(i, _)| *i <= index);
        &self.configs[pos.saturating_sub(1)].1
    }

    pub fn push(&mut self, index: Index, membership: Membership<C>) {
        self.truncate_from(index);
        self.configs.push((index, membership));
    }

    /// Forgets configurations from entries at or after `index`, which a new leader overwrote. The base
    /// is never dropped: it is at or below the commit index, which no leader overwrites.
    pub fn truncate_from(&mut self, index: Index) {
        let keep = self.configs.partition_point(|(i, _)| *i < index).max(1);
        self.configs.truncate(keep);
    }

    /// True if a configuration newer than `committed` is in the log.
    pub fn has_uncommitted(&self, committed: Index) -> bool {
        self.current_index() > committed
    }

    /// Drops configurations superseded at or below `applied`.
    pub fn prune(&mut self, applied: Index) {
        let pos = self.configs.partition_point(|(i, _)| *i <= applied);
        if pos > 1 {
            self.configs.drain(..pos - 1);
        }
    }

    /// Replaces everything with the configuration of an installed snapshot.
    pub fn reset(&mut self, index: Index, membership: Membership<C>) {
        self.configs.clear();
        self.configs.push((index, membership));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_config::T;

    fn m(voters: &[u64]) -> Membership<T> {
        Membership::new_voters(voters.iter().copied())
    }

    #[test]
    fn an_overwritten_configuration_reverts_to_the_previous_one() {
        let mut log = MembershipLog::<T>::new(0, m(&[1, 2, 3]));
        log.push(5, m(&[1, 2, 3, 4]));
        assert_eq!(log.current(), &m(&[1, 2, 3, 4]));
        assert!(log.has_uncommitted(4));
        log.truncate_from(5);
        assert_eq!(log.current(), &m(&[1, 2, 3]));
        assert!(!log.has_uncommitted(4));
    }

    #[test]
    fn configuration_at_an_index_and_pruning() {
        let mut log = MembershipLog::<T>::new(0, m(&[1]));
        log.push(3, m(&[1, 2]));
        log.push(7, m(&[1, 2, 3]));
        assert_eq!(log.at(2), &m(&[1]));
        assert_eq!(log.at(3), &m(&[1, 2]));
        assert_eq!(log.at(9), &m(&[1, 2, 3]));
        log.prune(5);
        assert_eq!(log.at(5), &m(&[1, 2]));
        assert_eq!(log.current(), &m(&[1, 2, 3]));
        log.truncate_from(1);
        assert_eq!(log.current(), &m(&[1, 2]), "the base is never dropped");
    }
}
