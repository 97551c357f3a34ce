//! Quorum arithmetic as pure functions: the committed index and the outcome of a vote, for a majority
//! configuration and for a joint one (both majorities required).

use std::collections::BTreeSet;

use crate::types::Index;

/// The outcome of counting votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum granted.
    Won,
    /// Enough voters rejected that a quorum can no longer grant.
    Lost,
    /// Neither yet: some voters have not answered.
    Pending,
}

/// The highest index that a majority of `voters` has acknowledged, where `acked(id)` is the index `id`
/// has acknowledged (absent counts as 0). An empty configuration places no constraint: `Index::MAX`.
pub fn majority_committed<Id: Ord + Copy>(
    voters: &BTreeSet<Id>,
    acked: impl Fn(Id) -> Index,
) -> Index {
    let n = voters.len();
    if n == 0 {
        return Index::MAX;
    }
    // Most groups have at most 7 voters: sort on the stack.
    let mut small = [0 as Index; 7];
    let mut large;
    let indexes: &mut [Index] = if n <= small.len() {
        &mut small[..n]
    } else {
        large = vec![0; n];
        &mut large[..]
    };
    for (slot, id) in indexes.iter_mut().zip(voters.iter()) {
        *slot = acked(*id);
    }
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    // With the indexes in descending order, the one at position n/2 is held by n/2 + 1 voters: a majority.
    indexes[n / 2]
}

/// The committed index under a possibly-joint configuration: both majorities must have acknowledged it.
pub fn joint_committed<Id: Ord + Copy>(
    incoming: &BTreeSet<Id>,
    outgoing: &BTreeSet<Id>,
    acked: impl Fn(Id) -> Index + Copy,
) -> Index {
    majority_committed(incoming, acked).min(majority_committed(outgoing, acked))
}

/// The outcome of a vote in a majority configuration. `vote(id)` is `Some(true)` for a grant,
/// `Some(false)` for a rejection and `None` when `id` has not answered. An empty configuration wins.
pub fn majority_vote<Id: Ord + Copy>(
    voters: &BTreeSet<Id>,
    vote: impl Fn(Id) -> Option<bool>,
) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0, 0);
    for id in voters {
        match vote(*id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if granted >= quorum {
        VoteResult::Won
    } else if granted + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// The outcome of a vote under a possibly-joint configuration: won only if both halves win, lost if either
/// half loses.
pub fn joint_vote<Id: Ord + Copy>(
    incoming: &BTreeSet<Id>,
    outgoing: &BTreeSet<Id>,
    vote: impl Fn(Id) -> Option<bool> + Copy,
) -> VoteResult {
    match (majority_vote(incoming, vote), majority_vote(outgoing, vote)) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A table row: voters, per-voter input, expected outcome.
    type Case<'a, V, R> = (&'a [u64], &'a [(u64, V)], R);

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn majority_committed_table() {
        // (voters, acked indexes by voter, expected committed index)
        let cases: &[Case<Index, Index>] = &[
            (&[], &[], Index::MAX),
            (&[1], &[(1, 5)], 5),
            (&[1], &[], 0),
            (&[1, 2], &[(1, 5), (2, 3)], 3),
            (&[1, 2, 3], &[(1, 5), (2, 3)], 3),
            (&[1, 2, 3], &[(1, 5)], 0),
            (&[1, 2, 3], &[(1, 9), (2, 9), (3, 1)], 9),
            (&[1, 2, 3, 4], &[(1, 9), (2, 8), (3, 7), (4, 1)], 7),
            (
                &[1, 2, 3, 4, 5],
                &[(1, 9), (2, 8), (3, 7), (4, 1), (5, 2)],
                7,
            ),
            (
                &[1, 2, 3, 4, 5, 6, 7, 8, 9],
                &[(1, 9), (2, 8), (3, 7), (4, 6), (5, 5)],
                5,
            ),
            // Acks from non-voters do not count.
            (&[1, 2, 3], &[(4, 9), (5, 9), (1, 9)], 0),
        ];
        for (voters, acked, want) in cases {
            let acked: BTreeMap<u64, Index> = acked.iter().copied().collect();
            let got = majority_committed(&set(voters), |id| acked.get(&id).copied().unwrap_or(0));
            assert_eq!(got, *want, "voters {voters:?} acked {acked:?}");
        }
    }

    #[test]
    fn joint_committed_needs_both_majorities() {
        let acked: BTreeMap<u64, Index> = [(1, 9), (2, 9), (3, 2), (4, 3), (5, 1)].into();
        let f = |id| acked.get(&id).copied().unwrap_or(0);
        // Incoming {1,2,3} has 9 on a majority; outgoing {3,4,5} only 2.
        assert_eq!(joint_committed(&set(&[1, 2, 3]), &set(&[3, 4, 5]), f), 2);
        // Not joint: the outgoing half is empty and places no constraint.
        assert_eq!(joint_committed(&set(&[1, 2, 3]), &set(&[]), f), 9);
    }

    #[test]
    fn majority_vote_table() {
        use VoteResult::*;
        // (voters, votes, expected)
        let cases: &[Case<bool, VoteResult>] = &[
            (&[], &[], Won),
            (&[1], &[(1, true)], Won),
            (&[1], &[(1, false)], Lost),
            (&[1], &[], Pending),
            (&[1, 2, 3], &[(1, true)], Pending),
            (&[1, 2, 3], &[(1, true), (2, true)], Won),
            (&[1, 2, 3], &[(1, true), (2, false)], Pending),
            (&[1, 2, 3], &[(1, false), (2, false)], Lost),
            (&[1, 2, 3, 4], &[(1, true), (2, true)], Pending),
            (&[1, 2, 3, 4], &[(1, true), (2, false), (3, false)], Lost),
            (&[1, 2, 3, 4], &[(1, true), (2, true), (3, true)], Won),
            // Votes from non-voters are ignored.
            (&[1, 2, 3], &[(1, true), (7, true), (8, true)], Pending),
        ];
        for (voters, votes, want) in cases {
            let votes: BTreeMap<u64, bool> = votes.iter().copied().collect();
            let got = majority_vote(&set(voters), |id| votes.get(&id).copied());
            assert_eq!(got, *want, "voters {voters:?} votes {votes:?}");
        }
    }

    #[test]
    fn joint_vote_needs_both_halves() {
        use VoteResult::*;
        let votes: BTreeMap<u64, bool> = [(1, true), (2, true), (4, false), (5, false)].into();
        let f = |id| votes.get(&id).copied();
        assert_eq!(joint_vote(&set(&[1, 2, 3]), &set(&[3, 4, 5]), f), Lost);
        assert_eq!(joint_vote(&set(&[1, 2, 3]), &set(&[1, 2, 4]), f), Won);
        assert_eq!(joint_vote(&set(&[1, 2, 3]), &set(&[3, 6, 7]), f), Pending);
        assert_eq!(joint_vote(&set(&[1, 2, 3]), &set(&[]), f), Won);
    }
}
