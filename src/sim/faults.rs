//! Which faults a simulation injects, and how often.

use std::fmt;

use super::rng::SimRng;

/// The faults of one simulation run and their rates. Rates named `*_ppm` are chances in parts per
/// million: per message for loss and duplication, per tick of the cluster for the events.
///
/// Swarm testing ([`FaultMix::swarm`]) switches each fault on or off per seed and picks its rate, so that
/// across many seeds every combination occurs, including the quiet ones in which rare interleavings are
/// not drowned by noise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultMix {
    /// Chance that a message is dropped.
    pub loss_ppm: u32,
    /// Chance that a message is delivered twice.
    pub duplicate_ppm: u32,
    /// Messages on one link may overtake each other (otherwise each link is FIFO).
    pub reorder: bool,
    /// Network delay: each message takes between 1 and `max_delay` ticks.
    pub max_delay: u64,
    /// Chance per tick that a symmetric partition splits the cluster in two for a while.
    pub partition_ppm: u32,
    /// Chance per tick that one direction of one link is cut for a while.
    pub one_way_ppm: u32,
    /// Chance per tick that the current leader is cut off from everyone for a while.
    pub isolate_leader_ppm: u32,
    /// The longest a partition, a cut link or an isolation lasts, in ticks.
    pub max_partition_ticks: u64,
    /// Chance per tick that a node crashes, losing every write that is not durable; it restarts from its
    /// disk after up to `max_down_ticks`.
    pub crash_ppm: u32,
    /// The longest a crashed node stays down.
    pub max_down_ticks: u64,
    /// Slow persistence: a write completes between 0 and `max_write_delay` ticks after it starts.
    pub max_write_delay: u64,
    /// Nodes tick at different rates (between 0.5 and 1.5 ticks per cluster tick).
    pub clock_skew: bool,
    /// Chance per tick that the leader is asked to transfer leadership to a random voter.
    pub transfer_ppm: u32,
    /// Chance per tick that a random node snapshots its state machine and compacts its log up to the
    /// applied index (not a fault, but it sends lagging followers down the snapshot path). Goes on in the
    /// liveness phase.
    pub compact_ppm: u32,
    /// Chance per tick that the leader proposes a random membership change: add or remove a voter or a
    /// learner, or replace the whole configuration (joint consensus). Nodes that are not members keep
    /// running. Requires pre-vote or check-quorum, without which a removed node that never learned of its
    /// removal disrupts the cluster forever (Raft thesis §4.2.3).
    pub membership_ppm: u32,
}

impl Default for FaultMix {
    fn default() -> Self {
        FaultMix::none()
    }
}

impl FaultMix {
    /// A perfect world: every message arrives, in order, one tick after it was sent.
    pub fn none() -> Self {
        FaultMix {
            loss_ppm: 0,
            duplicate_ppm: 0,
            reorder: false,
            max_delay: 1,
            partition_ppm: 0,
            one_way_ppm: 0,
            isolate_leader_ppm: 0,
            max_partition_ticks: 200,
            crash_ppm: 0,
            max_down_ticks: 200,
            max_write_delay: 0,
            clock_skew: false,
            transfer_ppm: 0,
            compact_ppm: 0,
            membership_ppm: 0,
        }
    }

    /// Every fault on at a moderate rate.
    pub fn all() -> Self {
        FaultMix {
            loss_ppm: 20_000,
            duplicate_ppm: 10_000,
            reorder: true,
            max_delay: 5,
            partition_ppm: 3_000,
            one_way_ppm: 3_000,
            isolate_leader_ppm: 3_000,
            max_partition_ticks: 200,
            crash_ppm: 2_000,
            max_down_ticks: 200,
            max_write_delay: 5,
            clock_skew: true,
            transfer_ppm: 2_000,
            compact_ppm: 20_000,
            membership_ppm: 2_000,
        }
    }

    /// A random mix: each fault is on with probability 1/2, at a rate picked from a few levels.
    pub fn swarm(rng: &mut SimRng) -> Self {
        fn pick<T: Copy>(rng: &mut SimRng, off: T, levels: &[T]) -> T {
            if rng.coin() {
                levels[rng.index(levels.len())]
            } else {
                off
            }
        }
        FaultMix {
            loss_ppm: pick(rng, 0, &[1_000, 10_000, 50_000, 200_000]),
            duplicate_ppm: pick(rng, 0, &[1_000, 10_000, 50_000]),
            reorder: rng.coin(),
            max_delay: pick(rng, 1, &[2, 4, 8, 20]),
            partition_ppm: pick(rng, 0, &[1_000, 4_000, 15_000]),
            one_way_ppm: pick(rng, 0, &[1_000, 4_000, 15_000]),
            isolate_leader_ppm: pick(rng, 0, &[1_000, 4_000, 15_000]),
            max_partition_ticks: [20, 100, 400][rng.index(3)],
            crash_ppm: pick(rng, 0, &[500, 2_000, 8_000]),
            max_down_ticks: [10, 100, 400][rng.index(3)],
            max_write_delay: pick(rng, 0, &[1, 3, 10, 30]),
            clock_skew: rng.coin(),
            transfer_ppm: pick(rng, 0, &[1_000, 5_000, 20_000]),
            compact_ppm: pick(rng, 0, &[2_000, 20_000, 200_000]),
            membership_ppm: pick(rng, 0, &[1_000, 5_000, 20_000]),
        }
    }

    /// The calm version used for the liveness phase: no loss, duplication, partitions, crashes, transfers
    /// or skew, and delays short enough for elections to finish.
    pub fn calm(&self, election_timeout_min: u64) -> Self {
        let cap = (election_timeout_min / 4).max(1);
        FaultMix {
            reorder: self.reorder,
            max_delay: self.max_delay.min(cap),
            max_write_delay: self.max_write_delay.min(cap.saturating_sub(1)),
            compact_ppm: self.compact_ppm,
            ..FaultMix::none()
        }
    }
}

impl fmt::Display for FaultMix {
    /// A compact list of the faults that are on, e.g. `loss=1% dup=0.1% reorder delay<=8 crash=0.2%/tick`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn pct(ppm: u32) -> String {
            format!("{}%", f64::from(ppm) / 10_000.0)
        }
        let mut parts = Vec::new();
        if self.loss_ppm > 0 {
            parts.push(format!("loss={}", pct(self.loss_ppm)));
        }
        if self.duplicate_ppm > 0 {
            parts.push(format!("dup={}", pct(self.duplicate_ppm)));
        }
        if self.reorder {
            parts.push("reorder".to_string());
        }
        if self.max_delay > 1 {
            parts.push(format!("delay<={}", self.max_delay));
        }
        if self.partition_ppm > 0 {
            parts.push(format!("partition={}/tick", pct(self.partition_ppm)));
        }
        if self.one_way_ppm > 0 {
            parts.push(format!("one-way={}/tick", pct(self.one_way_ppm)));
        }
        if self.isolate_leader_ppm > 0 {
            parts.push(format!(
                "isolate-leader={}/tick",
                pct(self.isolate_leader_ppm)
            ));
        }
        if self.partition_ppm + self.one_way_ppm + self.isolate_leader_ppm > 0 {
            parts.push(format!("cut<={}t", self.max_partition_ticks));
        }
        if self.crash_ppm > 0 {
            parts.push(format!(
                "crash={}/tick down<={}t",
                pct(self.crash_ppm),
                self.max_down_ticks
            ));
        }
        if self.max_write_delay > 0 {
            parts.push(format!("slow-disk<={}t", self.max_write_delay));
        }
        if self.clock_skew {
            parts.push("skew".to_string());
        }
        if self.transfer_ppm > 0 {
            parts.push(format!("transfer={}/tick", pct(self.transfer_ppm)));
        }
        if self.membership_ppm > 0 {
            parts.push(format!("membership={}/tick", pct(self.membership_ppm)));
        }
        if self.compact_ppm > 0 {
            parts.push(format!("compact={}/tick", pct(self.compact_ppm)));
        }
        if parts.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&parts.join(" "))
    }
}
