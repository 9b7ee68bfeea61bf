//! The scale properties that matter, on small fault-free runs: per-node replication and
//! anti-entropy traffic stays flat as the cluster grows (it is O(replication factor),
//! not O(cluster size)), idle and at a fixed write rate per node; and adding a shard
//! moves about the fewest keys any placement could, 1/(n+1).

use causeway_sim::scale::{self, ScaleOptions};

fn opts() -> ScaleOptions {
    ScaleOptions {
        keys: 20_000,
        traffic_keys_per_shard: 50,
        window_ms: 3_000,
        settle_ms: 6_000,
        ..ScaleOptions::full()
    }
}

#[test]
fn per_node_traffic_does_not_grow_with_the_cluster() {
    let o = opts();
    for rf in [2, 3] {
        let (idle_small, loaded_small) = scale::traffic(6, rf, &o);
        let (idle_large, loaded_large) = scale::traffic(128, rf, &o);
        assert!(idle_small.mean_bytes_s > 0.0 && loaded_small.writes > 0);
        assert!(
            loaded_small.mean_bytes_s > 10.0 * idle_small.mean_bytes_s,
            "rf {rf}: the writes are replicated ({loaded_small:?})"
        );
        for (what, small, large) in [
            ("idle", &idle_small, &idle_large),
            ("loaded", &loaded_small, &loaded_large),
        ] {
            assert!(
                large.mean_bytes_s <= 1.5 * small.mean_bytes_s,
                "rf {rf}, {what}: {:.0} bytes/s per node at 128 nodes against {:.0} at 6\n128: {large:?}\n6: {small:?}",
                large.mean_bytes_s,
                small.mean_bytes_s
            );
            assert!(
                large.max_bytes_s <= 1.5 * small.max_bytes_s,
                "rf {rf}, {what}: the busiest node sends {:.0} bytes/s at 128 nodes against {:.0} at 6",
                large.max_bytes_s,
                small.max_bytes_s
            );
        }
    }
}

#[test]
fn adding_a_shard_moves_about_one_in_n_plus_one_keys() {
    let o = ScaleOptions {
        keys: 5_000,
        ..opts()
    };
    for (nodes, rf) in [(6, 2), (6, 3), (24, 3)] {
        let (added, removed, add_ms, remove_ms) = scale::view_changes(nodes, rf, &o);
        assert_eq!(added.keys, o.keys as u64);
        let off = (added.fraction() - added.ideal).abs() / added.ideal;
        assert!(
            off <= 0.10,
            "{nodes} nodes, rf {rf}: {:.4} of the keys moved adding a shard, ideal {:.4}",
            added.fraction(),
            added.ideal
        );
        // Removing the shard just added moves back exactly the keys it took.
        assert_eq!(removed.moved, added.moved, "{nodes} nodes, rf {rf}");
        assert!(
            add_ms.is_some() && remove_ms.is_some(),
            "both view changes end"
        );
    }
}
