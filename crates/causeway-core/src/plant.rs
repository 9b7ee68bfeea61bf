//! Planted bugs: deliberately broken variants of the protocol rules, to show that the
//! deterministic simulator (and the fault campaign) find them.
//!
//! Owns: which broken rule, if any, is active on this thread. Invariant: without the
//! `planted-bugs` feature nothing can be planted and [`active`] is always false; with
//! it, the correct rule still runs unless a test or the simulator planted a bug on its
//! own thread with [`plant`].

/// A broken variant of one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Plant {
    /// The read rule always answers "safe" ([`crate::causal::read_is_safe`]).
    ReadRuleSkipped,
    /// A tombstone is collected once any one shard peer (rather than every one) has it
    /// ([`crate::replica::collectable_tombstones`]).
    EarlyTombstoneCollection,
    /// Two writes with one timestamp: the one that arrived last wins
    /// ([`crate::causal::version::merge`]).
    MergeTieByArrival,
    /// A forwarded write retried on another replica gets a new identity
    /// ([`crate::replica::attempt_write_id`]).
    RetryMintsNewIdentity,
    /// A hand-over pass drops its last batch: removed here, never sent
    /// ([`crate::replica::hand_over_plan`]).
    HandOverDropsLastBatch,
    /// A replica serves contexts from before a view change as if its shard were
    /// complete ([`crate::replica::shard_complete`]).
    IgnoresOldContexts,
    /// A run of a peer's keys drops whatever it lacks, whether or not the peer's clock
    /// covers it ([`crate::changes::Changes::sync_run`]).
    RunDropsUncovered,
}

impl Plant {
    /// Every planted bug, with the name the simulator's `--plant` takes.
    pub const ALL: [(Plant, &'static str); 7] = [
        (Plant::ReadRuleSkipped, "read-rule-skipped"),
        (
            Plant::EarlyTombstoneCollection,
            "early-tombstone-collection",
        ),
        (Plant::MergeTieByArrival, "merge-tie-by-arrival"),
        (Plant::RetryMintsNewIdentity, "retry-mints-new-identity"),
        (Plant::HandOverDropsLastBatch, "hand-over-drops-last-batch"),
        (Plant::IgnoresOldContexts, "ignores-old-contexts"),
        (Plant::RunDropsUncovered, "run-drops-uncovered"),
    ];

    /// The bug named `name` (see [`Plant::ALL`]).
    pub fn from_name(name: &str) -> Option<Plant> {
        Plant::ALL.iter().find(|(_, n)| *n == name).map(|(p, _)| *p)
    }

    /// This bug's name.
    pub fn name(self) -> &'static str {
        Plant::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }
}

#[cfg(feature = "planted-bugs")]
thread_local! {
    static PLANTED: std::cell::Cell<Option<Plant>> = const { std::cell::Cell::new(None) };
}

/// Plants `bug` (or, with `None`, removes it) on this thread.
#[cfg(feature = "planted-bugs")]
pub fn plant(bug: Option<Plant>) {
    PLANTED.with(|p| p.set(bug));
}

/// True when `bug` is planted on this thread (never without the `planted-bugs` feature).
#[inline]
pub fn active(bug: Plant) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        PLANTED.with(|p| p.get() == Some(bug))
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_planted_by_default() {
        for (p, name) in Plant::ALL {
            assert!(!active(p));
            assert_eq!(Plant::from_name(name), Some(p));
            assert_eq!(p.name(), name);
        }
    }
}
