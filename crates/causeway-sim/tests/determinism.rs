//! The same seed gives the same run, bit for bit; another seed gives another run.

use causeway_sim::{run, Config};

#[test]
fn one_seed_twice_gives_the_same_history_byte_for_byte() {
    for seed in [7, 1234] {
        let a = run(Config::new(seed)).history();
        let b = run(Config::new(seed)).history();
        assert!(
            a.lines().count() > 400,
            "a real run: {} lines",
            a.lines().count()
        );
        assert!(a == b, "seed {seed}: two runs differ");
        let other = run(Config::new(seed + 1)).history();
        assert_ne!(a, other, "seeds {seed} and {} ran alike", seed + 1);
    }
}

/// Following a key (`--trace-key`) only prints: the run stays the same.
#[test]
fn tracing_a_key_changes_nothing() {
    let plain = run(Config::new(7)).history();
    let mut cfg = Config::new(7);
    cfg.trace_key = Some("k3".into());
    assert!(run(cfg).history() == plain, "tracing changed the run");
}
