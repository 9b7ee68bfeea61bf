//! Clusters of 128 nodes (43 shards): a few seeds, judged like any other.

use causeway_sim::{run, Config};

#[test]
fn a_128_node_cluster_runs_clean() {
    for seed in 1..=3 {
        let mut cfg = Config::new(seed);
        cfg.nodes = 128;
        cfg.ops = 600;
        let out = run(cfg);
        if let Some(why) = out.failure() {
            panic!("{why}");
        }
        assert_eq!(out.counts.ops, 600);
    }
}
