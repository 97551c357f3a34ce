//! What a leader knows about each follower's log, and how fast it may send to it.

use std::collections::VecDeque;

use crate::types::{Index, LogId};

/// How a leader replicates to one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// The leader does not know where the follower's log matches. It sends one append at a time and
    /// waits for the answer (or the next heartbeat) before sending another.
    Probe,
    /// The follower's log matches up to `match_index`; appends stream optimistically, up to the inflight
    /// window.
    Replicate,
    /// The entries the follower needs are compacted: it catches up from the snapshot ending at `snapshot`,
    /// sent in chunks; `next_offset` is where the next chunk starts.
    NeedsSnapshot { snapshot: LogId, next_offset: u64 },
}

/// The leader's view of one follower.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The highest index known to be replicated (durably) on the follower.
    pub match_index: Index,
    /// The index of the next entry to send.
    pub next_index: Index,
    pub state: ProgressState,
    /// In `Probe`: an append is outstanding; in `NeedsSnapshot`: a chunk is. Wait for its answer or the
    /// next heartbeat answer.
    pub probe_sent: bool,
    /// In `Replicate`: the last index of each append message not yet acknowledged.
    inflights: VecDeque<Index>,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// The highest read sequence number the follower acknowledged in this term.
    pub read_seq: u64,
    /// The leader's tick when sending last paused this follower (a probe or snapshot chunk went out, or
    /// the window filled): a heartbeat answer retries only once a retry interval has passed since.
    pub paused_at: u64,
    /// In `Replicate`: how many appends may be in flight now. It starts at 1 when replication (re)starts
    /// and doubles with every acknowledgement up to the configured maximum (slow start): answers to an
    /// older window that arrive late can then restart replication without releasing a full window each.
    window: usize,
    /// The highest commit index this follower was told (for `Config::broadcast_commit`).
    pub commit_sent: Index,
}

impl Progress {
    pub fn new(next_index: Index) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: VecDeque::new(),
            recent_active: false,
            read_seq: 0,
            paused_at: 0,
            window: 1,
            commit_sent: 0,
        }
    }

    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.clear();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.clear();
        self.window = 1;
    }

    pub fn become_needs_snapshot(&mut self, snapshot: LogId) {
        self.state = ProgressState::NeedsSnapshot {
            snapshot,
            next_offset: 0,
        };
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// Records an acknowledgement up to `index`. Returns true if the match index moved.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
            self.window = self.window.saturating_mul(2);
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflights.front().is_some_and(|last| *last <= index) {
            self.inflights.pop_front();
        }
        updated
    }

    /// Handles a rejection of the append whose previous entry was at `rejected`; `hint` is the index up to
    /// which the logs may match. Returns false if the rejection is stale (answers an older append).
    pub fn maybe_decrease_to(&mut self, rejected: Index, hint: Index) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                // Entries past the match index were lost or conflict: fall back to probing.
                self.become_probe();
                true
            }
            // We sent no append: a rejection is an answer to an older one.
            ProgressState::NeedsSnapshot { .. } => false,
            ProgressState::Probe => {
                if self.next_index == 0 || rejected != self.next_index - 1 {
                    return false;
                }
                self.next_index = rejected.min(hint + 1).max(self.match_index + 1);
                self.probe_sent = false;
                true
            }
        }
    }

    /// Records that an append ending at `last` (or carrying no entries) was sent.
    pub fn sent_append(&mut self, last: Option<Index>, max_inflight: usize, now: u64) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next_index = last + 1;
                    self.inflights.push_back(last);
                    debug_assert!(self.inflights.len() <= max_inflight);
                    if self.inflights.len() >= max_inflight.min(self.window) {
                        self.paused_at = now;
                    }
                }
            }
            ProgressState::Probe => self.pause(now),
            ProgressState::NeedsSnapshot { .. } => {}
        }
    }

    /// One message (a probe or a snapshot chunk) is in flight: wait for its answer.
    pub fn pause(&mut self, now: u64) {
        self.probe_sent = true;
        self.paused_at = now;
    }

    /// True when the leader must not send another append now.
    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe | ProgressState::NeedsSnapshot { .. } => self.probe_sent,
            ProgressState::Replicate => self.inflights.len() >= max_inflight.min(self.window),
        }
    }

    /// A heartbeat answer proves the follower is reachable: if the window is full (its messages may have
    /// been lost), free one slot so that replication cannot stall forever.
    ///
    /// Only once `retry_after` ticks have passed since the pause: with a round trip longer than the
    /// heartbeat interval, retrying at every heartbeat answer would put one more message in flight per
    /// answer, and with a reordering network each of their answers can start more (a message storm).
    pub fn on_heartbeat_response(&mut self, max_inflight: usize, now: u64, retry_after: u64) {
        self.recent_active = true;
        if now.saturating_sub(self.paused_at) < retry_after {
            return;
        }
        self.probe_sent = false;
        if self.state == ProgressState::Replicate
            && self.inflights.len() >= max_inflight.min(self.window)
        {
            self.inflights.pop_front();
            self.paused_at = now;
        }
    }

    /// The number of unacknowledged append messages in the window.
    pub fn inflight_count(&self) -> usize {
        self.inflights.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_window_fills_and_drains() {
        let mut pr = Progress::new(1);
        pr.become_replicate();
        // Slow start: one append in flight, then the window doubles with each acknowledgement.
        pr.sent_append(Some(1), 3, 0);
        assert!(pr.is_paused(3));
        assert!(pr.maybe_update(1));
        assert!(!pr.maybe_update(1));
        pr.window = 4;
        for last in [2, 4, 6] {
            assert!(!pr.is_paused(3));
            pr.sent_append(Some(last), 3, 0);
        }
        assert!(pr.is_paused(3));
        assert_eq!(pr.next_index, 7);
        assert!(pr.maybe_update(4));
        assert_eq!(pr.inflight_count(), 1);
        assert!(!pr.is_paused(3));
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut pr = Progress::new(10);
        pr.probe_sent = true;
        // The probe carried prev index 9; a rejection for prev 5 answers an older message.
        assert!(!pr.maybe_decrease_to(5, 3));
        assert!(pr.maybe_decrease_to(9, 3));
        assert_eq!(pr.next_index, 4);
        assert!(!pr.probe_sent);
    }

    #[test]
    fn replicate_rejection_at_or_below_match_is_stale() {
        let mut pr = Progress::new(1);
        pr.maybe_update(5);
        pr.become_replicate();
        assert!(!pr.maybe_decrease_to(5, 0));
        assert!(pr.maybe_decrease_to(7, 6));
        assert_eq!(pr.state, ProgressState::Probe);
        assert_eq!(pr.next_index, 6);
    }
}
