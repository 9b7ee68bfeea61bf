//! View changes (growing, shrinking, racing, partially delivered) among the other
//! faults: every node ends in one view, each key lives on the replicas of its shard, and
//! the checker finds nothing, across every epoch.

use causeway_sim::{run, Config};

#[test]
fn twenty_seeds_with_view_changes_show_no_anomaly() {
    let mut changes = 0;
    for seed in 1..=20 {
        let mut cfg = Config::new(seed);
        cfg.view_changes = true;
        let out = run(cfg);
        changes += out.counts.faults.get("view-change").copied().unwrap_or(0)
            + out
                .counts
                .faults
                .get("view-change-racing")
                .copied()
                .unwrap_or(0);
        let scratch = std::env::temp_dir().join(format!("causeway-sim-vc-{seed}.jsonl"));
        assert!(
            !out.failed(),
            "{}\n{}",
            out.config.command(),
            out.explain(&scratch).join("\n")
        );
    }
    assert!(changes >= 100, "only {changes} view changes");
}
