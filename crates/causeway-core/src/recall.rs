//! What other nodes remember of a node's views, and the restart rule that reads it.
//!
//! A node only moves up the order of views (see [`crate::views`]), and it installs a
//! view on disk before it says anything in it. So when a node restarts with a view of
//! an earlier *generation* than one it was seen in, its disk went back in time: a
//! backup restored, or a disk copied from elsewhere. Such a disk may hold keys the node
//! already handed over (and whose deletes were collected since), or values re-dotted as
//! new once it installs the newer view again: both would bring deleted keys back, and
//! nothing in the cluster remembers those deletes any more.
//!
//! Every node keeps, on disk, the newest generation each other node showed itself in
//! ([`Seen`], raised by [`Seen::note`] on replication, hand-over and settling
//! messages). A restarting node with a view on disk asks the others what they saw
//! ([`disk_went_back`]); it does not start on a disk that went back unless its operator
//! says so.
//!
//! Invariant: a generation recorded for a node is one that node had installed on its
//! disk (the sender's view is durable before its messages carry it), so the rule never
//! refuses a node whose disk merely lost nothing.

use crate::placement::EPOCH_FINGERPRINT_BITS;
use std::collections::BTreeMap;

/// The generation of a view epoch (its high bits; see `View::successor`).
pub fn generation(epoch: u64) -> u64 {
    epoch >> EPOCH_FINGERPRINT_BITS
}

/// By node: the newest view generation the node showed itself in.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Seen(pub BTreeMap<String, u64>);

impl Seen {
    /// Records that `node` sent a message in view `epoch`; true when that raised what
    /// is known of it (the record then needs writing).
    pub fn note(&mut self, node: &str, epoch: u64) -> bool {
        let g = generation(epoch);
        match self.0.get_mut(node) {
            Some(known) if *known >= g => false,
            Some(known) => {
                *known = g;
                true
            }
            None => {
                self.0.insert(node.to_string(), g);
                true
            }
        }
    }

    /// The newest generation `node` was seen in, if any.
    pub fn of(&self, node: &str) -> Option<u64> {
        self.0.get(node).copied()
    }
}

/// For a node restarting with a view of epoch `disk_epoch` on disk: the newest
/// generation other nodes saw it in (`recalled`, one per node that answered), when that
/// is later than its disk's; `None` when the disk is not known to have gone back.
pub fn disk_went_back(disk_epoch: u64, recalled: impl IntoIterator<Item = u64>) -> Option<u64> {
    recalled
        .into_iter()
        .max()
        .filter(|g| *g > generation(disk_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::View;
    use proptest::prelude::*;

    fn nodes(n: u8) -> Vec<String> {
        (1..=n).map(|i| format!("10.0.0.{i}:1")).collect()
    }

    #[test]
    fn a_node_seen_in_a_later_generation_than_its_disk_went_back() {
        let v0 = View::new(0, nodes(2), 2);
        let v1 = v0.successor(nodes(1), 1);
        let v2 = v1.successor(nodes(2), 2);
        let mut seen = Seen::default();
        assert!(seen.note("a", v1.epoch));
        assert!(seen.note("a", v2.epoch));
        assert!(!seen.note("a", v1.epoch), "never lowered");
        let recalled = seen.of("a");
        assert_eq!(disk_went_back(v0.epoch, recalled), Some(2));
        assert_eq!(disk_went_back(v1.epoch, recalled), Some(2));
        assert_eq!(disk_went_back(v2.epoch, recalled), None);
        // Nobody answered, or nobody saw it: nothing is known.
        assert_eq!(disk_went_back(v0.epoch, None), None);
    }

    #[test]
    fn a_racing_view_of_the_same_generation_is_not_a_regression() {
        // Within a generation a node may move to a view of a lower epoch (a completed
        // one beats a higher-ranked one: `views`), so only generations are compared.
        let v0 = View::new(0, nodes(4), 2);
        let a = v0.successor(nodes(2), 1);
        let b = v0.successor(nodes(4), 1);
        let (low, high) = if a.epoch < b.epoch { (a, b) } else { (b, a) };
        let mut seen = Seen::default();
        seen.note("x", high.epoch);
        assert_eq!(disk_went_back(low.epoch, seen.of("x")), None);
    }

    proptest! {
        /// What is recorded for a node only grows, and a node whose disk holds the
        /// newest view it was seen in is never said to have gone back.
        #[test]
        fn the_record_only_grows_and_never_refuses_an_up_to_date_disk(
            epochs in proptest::collection::vec(0u64..(8 << EPOCH_FINGERPRINT_BITS), 1..20)
        ) {
            let mut seen = Seen::default();
            let mut newest = 0;
            for e in &epochs {
                let before = seen.of("a");
                seen.note("a", *e);
                prop_assert!(seen.of("a") >= before);
                newest = newest.max(*e);
            }
            prop_assert_eq!(seen.of("a"), Some(generation(newest)));
            prop_assert_eq!(disk_went_back(newest, seen.of("a")), None);
        }
    }
}
