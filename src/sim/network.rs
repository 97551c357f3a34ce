//! The virtual network: delay, loss, duplication, reordering and partitions, all driven by the seed.

use std::collections::BTreeMap;

use crate::message::Message;

use super::faults::FaultMix;
use super::kv::SimTypes;
use super::rng::SimRng;

/// A message on its way.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    pub from: u64,
    pub to: u64,
    pub message: Message<SimTypes>,
}

/// Messages in flight, keyed by delivery tick and send order, and the links that are cut.
#[derive(Debug, Default)]
pub(crate) struct Network {
    queue: BTreeMap<(u64, u64), InFlight>,
    next_seq: u64,
    /// The latest delivery tick scheduled on each link, to keep links FIFO when reordering is off.
    link_tail: BTreeMap<(u64, u64), u64>,
    /// Cut directed links and the tick at which they heal.
    cuts: BTreeMap<(u64, u64), u64>,
    pub sent: u64,
    pub dropped: u64,
    pub delivered: u64,
}

impl Network {
    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cuts.contains_key(&(from, to))
    }

    /// Cuts the link `from → to` until `until` (extending an existing cut).
    pub fn cut(&mut self, from: u64, to: u64, until: u64) {
        let end = self.cuts.entry((from, to)).or_insert(until);
        *end = (*end).max(until);
    }

    /// Heals the links whose cut has expired (all of them with `now == u64::MAX`).
    pub fn heal(&mut self, now: u64) {
        self.cuts.retain(|_, until| *until > now);
    }

    /// Sends a message subject to the fault mix.
    pub fn send(
        &mut self,
        now: u64,
        from: u64,
        to: u64,
        message: Message<SimTypes>,
        faults: &FaultMix,
        rng: &mut SimRng,
    ) {
        self.sent += 1;
        if self.is_cut(from, to) || rng.chance(faults.loss_ppm) {
            self.dropped += 1;
            return;
        }
        if rng.chance(faults.duplicate_ppm) {
            let copy = InFlight {
                from,
                to,
                message: message.clone(),
            };
            self.schedule(now, copy, faults, rng);
        }
        self.schedule(now, InFlight { from, to, message }, faults, rng);
    }

    fn schedule(&mut self, now: u64, msg: InFlight, faults: &FaultMix, rng: &mut SimRng) {
        let mut at = now + rng.range_inclusive(1, faults.max_delay.max(1));
        if faults.reorder {
            // Now and then a message is held back for long, so that it arrives after much newer ones.
            if rng.range(0, 50) == 0 {
                at += rng.range_inclusive(1, 10 * faults.max_delay.max(2));
            }
        } else {
            let tail = self.link_tail.entry((msg.from, msg.to)).or_insert(0);
            at = at.max(*tail);
            *tail = at;
        }
        self.queue.insert((at, self.next_seq), msg);
        self.next_seq += 1;
    }

    /// The number of messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// The next message due at or before `now`, unless its link is cut (then it is dropped).
    pub fn pop_due(&mut self, now: u64) -> Option<InFlight> {
        loop {
            let entry = self.queue.first_entry()?;
            if entry.key().0 > now {
                return None;
            }
            let msg = entry.remove();
            if self.is_cut(msg.from, msg.to) {
                self.dropped += 1;
                continue;
            }
            self.delivered += 1;
            return Some(msg);
        }
    }
}
