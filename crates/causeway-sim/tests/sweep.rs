//! The CI sweep: 200 seeds of a 6-node cluster under every default fault, each judged
//! by the campaign's checker and the replicas' states after healing.

use causeway_sim::{run, Config};
use std::time::Instant;

#[test]
fn two_hundred_seeds_show_no_anomaly() {
    let started = Instant::now();
    let mut failing = Vec::new();
    let mut ops = 0;
    for seed in 1..=200 {
        let out = run(Config::new(seed));
        ops += out.counts.ops;
        assert!(
            out.counts.faults.values().sum::<u64>() > 0,
            "seed {seed} injected no fault"
        );
        if out.failed() {
            let scratch = std::env::temp_dir().join(format!("causeway-sim-test-{seed}.jsonl"));
            failing.push(format!(
                "{}\n{}",
                out.config.command(),
                out.explain(&scratch).join("\n")
            ));
        }
    }
    println!(
        "200 seeds, {ops} ops, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(failing.is_empty(), "failing seeds:\n{}", failing.join("\n"));
}
