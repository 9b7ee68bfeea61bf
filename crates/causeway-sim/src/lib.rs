//! # causeway-sim: a deterministic simulator of whole Causeway clusters
//!
//! N nodes (6 by default, up to 128) run in one thread on simulated time. Each node is
//! the protocol core (`causeway_core`) driven by an event loop: its replica state
//! changes only through the core's `Changes` and `State::apply`, as the server's
//! committer does; reads follow the core's read rule; replication uses the core's
//! deltas and claim rule; tombstones go by the core's collection rule. Around the nodes
//! the simulator provides what the server's async shells and the operating system do:
//! a network that loses, delays, reorders and duplicates messages and cuts links
//! (symmetric, asymmetric and one-way partitions), disks (crashes keep everything
//! written, or with `lossy_crashes` only what was synced), pauses, clock skews and
//! jumps, and client sessions like the fault campaign's. Every run is recorded in the
//! campaign's history format and judged by the campaign's checker, plus a comparison of
//! the replicas' states after healing.
//!
//! Modules: [`node`] (one node's handlers), [`session`] (clients), [`world`] (time,
//! network, faults, lifecycles), [`scale`] (scale figures from fault-free runs). A run
//! is a function of its [`Config`]: the same seed gives the same history, byte for byte.

pub mod node;
pub mod scale;
pub mod session;
pub mod world;

pub use causeway_core::plant::Plant;
use causeway_torture::checker::{self, Anomaly, AnomalyKind, CheckOptions, Report};
use causeway_torture::history::Event;
use std::path::Path;

/// What one run does.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// Nodes (1 to 128), in shards of 3 replicas.
    pub nodes: usize,
    /// Client requests in the run (retries not counted).
    pub ops: u64,
    /// A bound on events processed (a run that reaches it stops early).
    pub max_steps: u64,
    /// Inject faults (partitions, crashes, pauses, clock skew, loss and duplication).
    pub faults: bool,
    /// Crashes may lose what the node had not synced to disk.
    pub lossy_crashes: bool,
    /// Clock faults: skews and jumps of the nodes' clocks.
    pub clock_faults: bool,
    /// View changes: a coordinator proposes a new node set (any size, growing or
    /// shrinking), sometimes two race; the word reaches whom the network lets it.
    pub view_changes: bool,
    /// Client sessions (default: half the nodes, 3 to 16).
    pub sessions: Option<u32>,
    pub keys: usize,
    /// Mean pause between a session's requests (ms).
    pub think_ms: u64,
    /// The idempotency window (ms): an idempotent write's identity holds this long
    /// (the server's default, 10 minutes: longer than any run).
    pub window_ms: u64,
    /// How old a tombstone must be before it is collected (ms). The server keeps them
    /// twice the idempotency window; the simulator keeps them 30 s so that runs collect
    /// them, which is safe here because its clients retry a write for at most 15 s and
    /// clocks are at most `world::MAX_SKEW_MS` off.
    pub tombstone_age_ms: u64,
    /// The chance that a write carries an `Idempotency-Key` (and is retried).
    pub idempotent: f64,
    /// A planted bug (only with the `planted-bugs` feature).
    pub plant: Option<Plant>,
    /// Replicas per shard (3; fewer nodes than that make one shard of all of them).
    pub repl_factor: usize,
    /// Count the bytes of every message the network carries, per sending node and
    /// kind (`world::Counts::traffic`). Off by default: sizing costs an encoding.
    pub count_bytes: bool,
    /// A node announces that it handed everything over once per view, as the server
    /// does, instead of every [`node::ANNOUNCE_EVERY_MS`] (the default, which makes up
    /// for lost messages in runs with faults).
    pub announce_once: bool,
    /// Most versions in one incremental replication message; a larger difference goes
    /// as a full transfer, run by run, as the server's does past its own, larger limit.
    /// The server's limit by default (a short run's backlogs never reach it: a full
    /// transfer then follows only a replica that lost acknowledged writes); a small one
    /// makes every partition end in full transfers.
    pub delta_versions: usize,
    /// Print every change of this key's version (and of each node's view) on stderr,
    /// with the event that made it: the way to follow a failing seed.
    pub trace_key: Option<String>,
}

impl Config {
    pub fn new(seed: u64) -> Config {
        Config {
            seed,
            nodes: 6,
            ops: 400,
            max_steps: 5_000_000,
            faults: true,
            lossy_crashes: false,
            clock_faults: true,
            view_changes: false,
            sessions: None,
            keys: 12,
            think_ms: 150,
            window_ms: 600_000,
            tombstone_age_ms: 30_000,
            idempotent: 0.5,
            plant: None,
            repl_factor: 3,
            count_bytes: false,
            delta_versions: 20_000,
            announce_once: false,
            trace_key: None,
        }
    }

    /// The command that reproduces this run.
    pub fn command(&self) -> String {
        let mut c = format!(
            "cargo run --release -p causeway-sim{} -- --seeds {} --nodes {} --ops {}",
            if self.plant.is_some() {
                " --features planted-bugs"
            } else {
                ""
            },
            self.seed,
            self.nodes,
            self.ops
        );
        if !self.faults {
            c.push_str(" --no-faults");
        }
        if self.idempotent != 0.5 {
            c.push_str(&format!(" --idempotent {}", self.idempotent));
        }
        if self.view_changes {
            c.push_str(" --view-changes");
        }
        if !self.clock_faults {
            c.push_str(" --no-clock-faults");
        }
        if self.delta_versions != 20_000 {
            c.push_str(&format!(" --delta-versions {}", self.delta_versions));
        }
        if self.lossy_crashes {
            c.push_str(" --lossy-crashes");
        }
        if let Some(p) = self.plant {
            c.push_str(&format!(" --plant {}", p.name()));
        }
        c.push_str(&format!(" --history sim-{}.jsonl", self.seed));
        c
    }
}

/// A run's history, what it did, and the verdict.
pub struct Outcome {
    pub config: Config,
    pub events: Vec<Event>,
    pub counts: world::Counts,
    pub report: Report,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        !self.report.anomalies.is_empty()
    }

    /// The history as JSON lines (the campaign's format).
    pub fn history(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            out.push_str(&serde_json::to_string(e).expect("events serialize"));
            out.push('\n');
        }
        out
    }

    /// The anomaly shown for a failing run: the one with the fewest operations (the
    /// shortest excerpt), operations named first.
    pub fn shown(&self) -> Option<&Anomaly> {
        self.report
            .anomalies
            .iter()
            .min_by_key(|a| (a.ops.is_empty(), a.ops.len()))
    }

    /// For a failing run, the command that reproduces it and what [`Self::explain`]
    /// prints (the excerpt cut from a scratch file in the temporary directory); `None`
    /// when it passed. What tests print.
    pub fn failure(&self) -> Option<String> {
        if !self.failed() {
            return None;
        }
        let scratch = std::env::temp_dir().join(format!(
            "causeway-sim-{}-{}.jsonl",
            std::process::id(),
            self.config.seed
        ));
        Some(format!(
            "{}\n{}",
            self.config.command(),
            self.explain(&scratch).join("\n")
        ))
    }

    /// What to print for a failing run: the anomaly, the causal chain that shows it
    /// (when it involves two operations) and the history lines of its operations.
    /// `scratch`: where to write the history to cut the excerpt from.
    pub fn explain(&self, scratch: &Path) -> Vec<String> {
        let Some(a) = self.shown() else {
            return Vec::new();
        };
        let mut lines = vec![format!("{:?}: {}", a.kind, a.detail)];
        let mut ops = a.ops.clone();
        if let (Some(&from), Some(&to)) = (a.ops.first(), a.ops.last()) {
            if from != to {
                if let Some(chain) = checker::causal_chain(&self.events, from, to) {
                    lines.extend(
                        checker::describe_chain(&self.events, &chain, to)
                            .into_iter()
                            .map(|l| format!("  {l}")),
                    );
                    ops = chain.iter().map(|(o, _)| *o).chain([to]).collect();
                }
            }
        }
        if !ops.is_empty() && std::fs::write(scratch, self.history()).is_ok() {
            if let Ok(ex) = causeway_torture::history::excerpt(scratch, &ops) {
                lines.extend(ex.into_iter().map(|l| format!("  {l}")));
            }
            let _ = std::fs::remove_file(scratch);
        }
        lines
    }
}

/// Runs one seed and judges it: the campaign's checker over the whole history (every
/// epoch), then the replicas' states after healing (same live versions on every replica
/// of a shard).
pub fn run(config: Config) -> Outcome {
    assert!((1..=128).contains(&config.nodes), "1 to 128 nodes");
    #[cfg(feature = "planted-bugs")]
    causeway_core::plant::plant(config.plant);
    #[cfg(not(feature = "planted-bugs"))]
    assert!(
        config.plant.is_none(),
        "planting a bug needs the planted-bugs feature"
    );
    let w = world::World::new(config.clone()).run();
    #[cfg(feature = "planted-bugs")]
    causeway_core::plant::plant(None);
    let mut report = checker::check(
        &w.events,
        CheckOptions {
            require_final: true,
        },
    );
    for d in w.divergent_shards() {
        report.anomalies.push(Anomaly {
            kind: AnomalyKind::Divergence,
            detail: format!("after healing and {} ms of quiet, {d}", world::QUIESCE_MS),
            ops: vec![],
        });
    }
    if w.counts.steps > config.max_steps {
        report.anomalies.push(Anomaly {
            kind: AnomalyKind::FinalReadFailed,
            detail: format!("the run did not end within {} events", config.max_steps),
            ops: vec![],
        });
    }
    Outcome {
        config,
        counts: w.counts.clone(),
        events: w.events,
        report,
    }
}
