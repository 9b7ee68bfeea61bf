//! Each planted bug (see `causeway_core::plant`) is found within 200 seeds: some seed's
//! run fails with the bug planted and passes without it. The four bugs that need no view
//! change run the default scenario; the hand-over and old-context bugs run with view
//! changes; the run bug with full transfers (`delta_versions` 2).
#![cfg(feature = "planted-bugs")]

use causeway_sim::{run, Config, Plant};

fn config(seed: u64, bug: Plant) -> Config {
    let mut cfg = Config::new(seed);
    cfg.view_changes = matches!(
        bug,
        Plant::HandOverDropsLastBatch | Plant::IgnoresOldContexts
    );
    // Runs of keys go only in full transfers: make partitions end in them.
    if bug == Plant::RunDropsUncovered {
        cfg.delta_versions = 2;
    }
    cfg
}

fn first_seed_that_shows(bug: Plant) -> Option<u64> {
    (1..=200).find(|&seed| {
        let mut planted = config(seed, bug);
        planted.plant = Some(bug);
        run(planted).failed() && !run(config(seed, bug)).failed()
    })
}

#[test]
fn every_planted_bug_is_found_within_200_seeds() {
    let mut missed = Vec::new();
    for (bug, name) in Plant::ALL {
        match first_seed_that_shows(bug) {
            Some(seed) => println!("{name}: found at seed {seed}"),
            None => missed.push(name),
        }
    }
    assert!(missed.is_empty(), "not found within 200 seeds: {missed:?}");
}

#[test]
fn planting_nothing_changes_nothing() {
    let mut cfg = Config::new(7);
    let plain = run(cfg.clone()).history();
    cfg.plant = None;
    assert_eq!(plain, run(cfg).history());
}
