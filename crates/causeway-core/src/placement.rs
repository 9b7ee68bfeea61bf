//! Placement: which shard owns a key, and which nodes form each shard.
//!
//! A [`View`] is the cluster membership at one epoch: nodes in `VIEW` order, grouped
//! `repl_factor` at a time into shards "1", "2", .... Keys map to shards by jump
//! consistent hashing of a 64-bit key hash, which keeps shards balanced and, when the
//! shard count grows from `n` to `n + 1`, moves only about `1 / (n + 1)` of the keys.
//!
//! Views are totally ordered by `(epoch, fingerprint)`; which view a node keeps also
//! depends on what it knows of their completion (see [`crate::views`]).

use crate::causal::ShardNo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub epoch: u64,
    pub nodes: Vec<String>,
    pub repl_factor: usize,
}

/// Low bits of a view epoch that hold a fingerprint of its membership (see
/// [`View::successor`]).
pub const EPOCH_FINGERPRINT_BITS: u32 = 32;

/// A fingerprint of a membership: the nodes in order and the replication factor.
fn fingerprint(nodes: &[String], repl_factor: usize) -> u64 {
    let mut h = Fnv::new();
    for n in nodes {
        h.write(n.as_bytes());
        h.write(b",");
    }
    h.write(&(repl_factor as u64).to_le_bytes());
    h.finish()
}

impl View {
    pub fn new(epoch: u64, nodes: Vec<String>, repl_factor: usize) -> View {
        View {
            epoch,
            nodes,
            repl_factor,
        }
    }

    pub fn shard_count(&self) -> usize {
        self.nodes.len().checked_div(self.repl_factor).unwrap_or(0)
    }

    /// Shard ids "1"..="n".
    pub fn shard_ids(&self) -> Vec<String> {
        (1..=self.shard_count()).map(|s| s.to_string()).collect()
    }

    /// Replicas of `shard` (1-based); empty for an unknown shard.
    pub fn replicas(&self, shard: ShardNo) -> &[String] {
        let s = shard as usize;
        if s == 0 || s > self.shard_count() {
            return &[];
        }
        &self.nodes[(s - 1) * self.repl_factor..s * self.repl_factor]
    }

    /// The shard `node` belongs to, if it is in the view.
    pub fn shard_of_node(&self, node: &str) -> Option<ShardNo> {
        let i = self.nodes.iter().position(|n| n == node)?;
        if self.repl_factor == 0 || i >= self.shard_count() * self.repl_factor {
            return None;
        }
        Some((i / self.repl_factor) as ShardNo + 1)
    }

    /// The shard that owns `key`.
    pub fn shard_of_key(&self, key: &str) -> ShardNo {
        jump_hash(key_hash(key), self.shard_count().max(1) as u32) + 1
    }

    /// Order key for racing views: epoch first, then a fingerprint of the membership.
    pub fn rank(&self) -> (u64, u64) {
        (self.epoch, fingerprint(&self.nodes, self.repl_factor))
    }

    /// The view that follows this one with `nodes` and `repl_factor`. Its epoch is the
    /// next *generation* (the high bits) joined with the new membership's fingerprint
    /// (the low [`EPOCH_FINGERPRINT_BITS`] bits), so two views proposed at once for the
    /// same generation carry different epochs: an epoch names one view, and comparing
    /// epochs orders views wherever they are compared (replication, forwarding, write
    /// identities, contexts). Generations stay below 2^21, so epochs stay exact in JSON.
    pub fn successor(&self, nodes: Vec<String>, repl_factor: usize) -> View {
        let generation = (self.epoch >> EPOCH_FINGERPRINT_BITS) + 1;
        let low = fingerprint(&nodes, repl_factor) & ((1 << EPOCH_FINGERPRINT_BITS) - 1);
        View::new(
            (generation << EPOCH_FINGERPRINT_BITS) | low,
            nodes,
            repl_factor,
        )
    }

    /// How many view changes led here (the high bits of the epoch).
    pub fn generation(&self) -> u64 {
        self.epoch >> EPOCH_FINGERPRINT_BITS
    }

    pub fn contains(&self, node: &str) -> bool {
        self.nodes.iter().any(|n| n == node)
    }

    /// The nodes that may still hand keys of `node`'s shard in this view over to it,
    /// after it moved here from `earlier` with `pending` still outstanding: every other
    /// node of the earlier view (any of them may hold keys that now map here) or still
    /// outstanding, except the replicas of `node`'s shard (they replicate instead).
    ///
    /// A node outside this view keeps the same set, though it waits for nothing now:
    /// it passes it on ([`crate::changes::Changes::handed_over`]) to the members that
    /// ask it, and takes it along if a later view brings it back. Old owners that were
    /// cut off, and members of a racing view that lost, may still hold keys written
    /// before this view; a member that never knew them learns of them only this way.
    pub fn hand_over_sources(
        &self,
        earlier: &View,
        node: &str,
        pending: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let mine: &[String] = match self.shard_of_node(node) {
            Some(shard) => self.replicas(shard),
            None => &[],
        };
        earlier
            .nodes
            .iter()
            .chain(pending)
            .filter(|n| *n != node && !mine.contains(n))
            .cloned()
            .collect()
    }

    /// True when every key `node` owns in this view it also owned in `earlier`. Jump
    /// hashing moves keys only to added shards, so that holds when the node stays in
    /// the same shard and the shard count does not shrink (or the node owns nothing).
    pub fn owns_only_what_it_owned_in(&self, earlier: &View, node: &str) -> bool {
        match (self.shard_of_node(node), earlier.shard_of_node(node)) {
            (None, _) => true,
            (Some(now), Some(before)) => {
                now == before && self.shard_count() >= earlier.shard_count()
            }
            (Some(_), None) => false,
        }
    }
}

/// A stable 64-bit hash of a key (FNV-1a, then a splitmix64 finaliser for avalanche).
pub fn key_hash(key: &str) -> u64 {
    let mut h = Fnv::new();
    h.write(key.as_bytes());
    let mut z = h.finish();
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Jump consistent hash (Lamping and Veach, 2014): a bucket in `0..buckets`.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: usize, r: usize) -> View {
        View::new(1, (0..n).map(|i| format!("10.0.0.{i}:13800")).collect(), r)
    }

    #[test]
    fn shards_follow_view_order() {
        let v = view(6, 2);
        assert_eq!(v.shard_ids(), vec!["1", "2", "3"]);
        assert_eq!(v.replicas(2), &["10.0.0.2:13800", "10.0.0.3:13800"]);
        assert_eq!(v.shard_of_node("10.0.0.5:13800"), Some(3));
        assert_eq!(v.shard_of_node("10.0.0.9:13800"), None);
        assert!(v.replicas(0).is_empty() && v.replicas(4).is_empty());
    }

    #[test]
    fn balanced_over_three_shards() {
        let v = view(3, 1);
        let mut counts = [0usize; 3];
        for i in 0..10_000 {
            counts[(v.shard_of_key(&format!("key{i}")) - 1) as usize] += 1;
        }
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        println!("10,000 keys over 3 shards: {counts:?}");
        assert!(max as f64 <= min as f64 * 1.10, "unbalanced: {counts:?}");
    }

    #[test]
    fn growing_two_to_three_shards_moves_about_a_third() {
        let (two, three) = (view(2, 1), view(3, 1));
        let n = 10_000;
        let moved = (0..n)
            .filter(|i| {
                let k = format!("key{i}");
                two.shard_of_key(&k) != three.shard_of_key(&k)
            })
            .count();
        println!(
            "2 -> 3 shards moved {moved} of {n} keys ({:.3} of a third)",
            moved as f64 / (n as f64 / 3.0)
        );
        assert!((moved as f64) <= 1.1 * n as f64 / 3.0, "moved {moved}");
        // Keys that move only go to the new shard.
        for i in 0..n {
            let k = format!("key{i}");
            if two.shard_of_key(&k) != three.shard_of_key(&k) {
                assert_eq!(three.shard_of_key(&k), 3);
            }
        }
    }

    #[test]
    fn racing_successors_carry_different_epochs_and_generations_order_them() {
        let nodes = |ns: &[&str]| ns.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let base = View::new(0, nodes(&["a:1", "b:1"]), 1);
        let x = base.successor(nodes(&["a:1", "b:1"]), 2);
        let y = base.successor(nodes(&["b:1", "a:1"]), 1);
        assert_ne!(x.epoch, y.epoch, "one epoch, one view");
        assert_eq!((x.generation(), y.generation()), (1, 1));
        // Whatever the fingerprints, a later generation ranks above an earlier one.
        for v in [&x, &y] {
            let next = v.successor(nodes(&["a:1"]), 1);
            assert_eq!(next.generation(), 2);
            assert!(next.rank() > x.rank() && next.rank() > y.rank());
            assert!(next.epoch < 1 << 53, "exact in JSON");
        }
        // A view from before generations (a small epoch) is followed by a larger one.
        assert!(
            View::new(7, nodes(&["a:1"]), 1)
                .successor(nodes(&["a:1"]), 1)
                .epoch
                > 7
        );
    }

    #[test]
    fn hand_over_sources_are_the_other_nodes_of_the_earlier_view() {
        let v = |epoch, nodes: &[&str], r| {
            View::new(epoch, nodes.iter().map(|n| n.to_string()).collect(), r)
        };
        let old = v(1, &["a:1", "b:1", "c:1", "d:1"], 2);
        let new = v(2, &["a:1", "c:1"], 1);
        let set = |ns: &[&str]| ns.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        // a's shard is {a}: b, c and d may all hold keys that now map to it.
        assert_eq!(
            new.hand_over_sources(&old, "a:1", &set(&[])),
            set(&["b:1", "c:1", "d:1"])
        );
        // Replicas of the node's own shard replicate instead; outstanding ones stay.
        let new2 = v(2, &["a:1", "b:1", "e:1", "f:1"], 2);
        assert_eq!(
            new2.hand_over_sources(&old, "a:1", &set(&["x:1", "b:1"])),
            set(&["c:1", "d:1", "x:1"])
        );
        // A node outside the view keeps whom it may still be owed by, to pass on.
        assert_eq!(
            new.hand_over_sources(&old, "b:1", &set(&["x:1"])),
            set(&["a:1", "c:1", "d:1", "x:1"])
        );
    }

    #[test]
    fn which_nodes_may_gain_keys() {
        let (four, six) = (view(4, 2), view(6, 2));
        let two = View::new(1, four.nodes[..2].to_vec(), 1);
        let n = |i: usize| four.nodes[i].as_str();
        assert!(six.owns_only_what_it_owned_in(&four, n(0)), "more shards");
        assert!(!four.owns_only_what_it_owned_in(&six, n(0)), "fewer shards");
        assert!(!four.owns_only_what_it_owned_in(&two, n(2)), "rejoins");
        assert!(!two.owns_only_what_it_owned_in(&four, n(1)), "other shard");
        assert!(two.owns_only_what_it_owned_in(&four, n(3)), "leaves");
    }

    #[test]
    fn rank_orders_racing_views() {
        let a = View::new(2, vec!["a:1".into()], 1);
        let b = View::new(2, vec!["b:1".into()], 1);
        assert_ne!(a.rank(), b.rank());
        assert!(View::new(3, vec![], 1).rank() > a.rank().max(b.rank()));
    }
}
