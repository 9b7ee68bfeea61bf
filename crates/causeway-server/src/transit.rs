//! Deadlines between nodes without synchronized clocks.
//!
//! A node that forwards a request stops waiting for it after a while, and a write it
//! gave up on must not be applied afterwards: the client may have been answered and
//! moved on. Comparing the sender's wall-clock deadline with the receiver's wall clock
//! breaks as soon as the clocks disagree (a node 90 s ahead refuses everything). So a
//! forwarded request carries a *budget*, a duration, and the reading of the sender's
//! monotonic clock when it was sent, with a random number naming the sending process.
//!
//! The monotonic clocks of two processes differ by an unknown offset that does not
//! change while both run. The receiver keeps, per sending process, the smallest
//! `arrival - sent` it has seen: the offset plus the fastest transit. A message that
//! arrives later than that was held somewhere (queued behind a partition, or its
//! receiver was paused), and the time it was held comes off its budget.
//!
//! Invariant: a request is served only while its sender may still be waiting for it,
//! give or take the fastest transit time observed, whatever the wall clocks say (they
//! are never read here). Monotonic clocks never jump, unlike wall clocks.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds of this process's monotonic clock (since it first read it).
pub fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Sending processes remembered at most; past that the table starts afresh (a
/// forgotten sender's next message counts as not held).
const MAX_SENDERS: usize = 4096;

/// Per sending process, the smallest `arrival - sent` seen (see the module docs).
#[derive(Debug, Default)]
pub struct Transit {
    fastest: HashMap<u64, i128>,
}

impl Transit {
    /// How long (ms) a message from process `sender`, sent at its monotonic `sent_ms`
    /// and arriving at our monotonic `arrival_ms`, was held beyond the fastest transit
    /// seen from that process.
    pub fn held_for(&mut self, sender: u64, sent_ms: u64, arrival_ms: u64) -> u64 {
        let gap = arrival_ms as i128 - sent_ms as i128;
        if self.fastest.len() >= MAX_SENDERS && !self.fastest.contains_key(&sender) {
            self.fastest.clear();
        }
        let fastest = self.fastest.entry(sender).or_insert(gap);
        if gap < *fastest {
            *fastest = gap;
        }
        (gap - *fastest) as u64
    }
}

/// What is left of a budget of `budget_ms` for a message held `held_ms`.
pub fn remaining_ms(budget_ms: u64, held_ms: u64) -> u64 {
    budget_ms.saturating_sub(held_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_clock_offset_between_processes_cancels_out() {
        // The sender's clock reads 90 s more than ours, or 30 s less: neither matters.
        for offset in [90_000i64, -30_000, 0] {
            let mut t = Transit::default();
            let sent = |ours: u64| (ours as i64 + offset + 1_000_000) as u64;
            assert_eq!(t.held_for(7, sent(100), 101), 0);
            assert_eq!(t.held_for(7, sent(200), 201), 0);
            // Held 4 s behind a partition: the whole 4 s are seen, whatever the offset.
            assert_eq!(t.held_for(7, sent(300), 4_301), 4_000);
        }
    }

    #[test]
    fn a_faster_message_lowers_the_baseline() {
        let mut t = Transit::default();
        assert_eq!(t.held_for(1, 0, 50), 0);
        assert_eq!(t.held_for(1, 100, 101), 0);
        assert_eq!(t.held_for(1, 200, 251), 50);
    }

    #[test]
    fn senders_are_kept_apart() {
        let mut t = Transit::default();
        assert_eq!(t.held_for(1, 0, 10), 0);
        assert_eq!(t.held_for(2, 1_000_000, 20), 0);
        assert_eq!(t.held_for(1, 100, 1_110), 1_000);
    }

    #[test]
    fn budget_left() {
        assert_eq!(remaining_ms(1_800, 300), 1_500);
        assert_eq!(remaining_ms(1_800, 5_000), 0);
    }

    proptest! {
        #[test]
        fn held_time_is_exact_once_a_fastest_message_was_seen(
            offset in -10_000_000i64..10_000_000,
            base in 0u64..5,
            delays in proptest::collection::vec(0u64..10_000, 1..20),
        ) {
            let mut t = Transit::default();
            let start = 20_000_000u64;
            // The fastest possible message first (transit `base`).
            let sent0 = (start as i64 + offset) as u64;
            t.held_for(9, sent0, start + base);
            for (i, d) in delays.iter().enumerate() {
                let ours = start + 1_000 * (i as u64 + 1);
                let sent = (ours as i64 + offset) as u64;
                prop_assert_eq!(t.held_for(9, sent, ours + base + d), *d);
            }
        }
    }
}
