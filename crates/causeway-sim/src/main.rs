//! `causeway-sim`: sweeps seeds of the deterministic simulator and reports each failing
//! seed with the command that reproduces it and the shortest history excerpt that
//! shows its anomaly.

use causeway_sim::scale::{self, ScaleOptions};
use causeway_sim::{run, Config, Plant};
use clap::Parser;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Deterministic simulation of Causeway clusters")]
struct Args {
    /// Seeds: one (`7`) or a range (`1..1000`, end excluded; `1..=1000` included).
    #[arg(long, default_value = "1..201")]
    seeds: String,
    /// Nodes per cluster (1 to 128).
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// Client requests per run.
    #[arg(long, default_value_t = 400)]
    ops: u64,
    /// Most events one run may process.
    #[arg(long, default_value_t = 5_000_000)]
    steps: u64,
    /// No faults at all.
    #[arg(long)]
    no_faults: bool,
    /// View changes (growing, shrinking, racing) among the other faults.
    #[arg(long)]
    view_changes: bool,
    /// No clock skews or jumps.
    #[arg(long)]
    no_clock_faults: bool,
    /// Crashes may lose what the node had not synced to disk (not in the default sweep).
    #[arg(long)]
    lossy_crashes: bool,
    /// Most versions in one incremental replication message; past it, a full transfer
    /// run by run (small values make every partition end in one).
    #[arg(long, default_value_t = 20_000)]
    delta_versions: usize,
    /// A planted bug (built with --features planted-bugs): read-rule-skipped,
    /// early-tombstone-collection, merge-tie-by-arrival, retry-mints-new-identity,
    /// hand-over-drops-last-batch, ignores-old-contexts, run-drops-uncovered.
    #[arg(long)]
    plant: Option<String>,
    /// Print every change of this key's version at every node (and of the nodes' views),
    /// with the event that made it, on stderr.
    #[arg(long)]
    trace_key: Option<String>,
    /// The chance that a write carries an Idempotency-Key (and is retried).
    #[arg(long, default_value_t = 0.5)]
    idempotent: f64,
    /// Print every anomaly of a failing seed, not only the one shown with its excerpt.
    #[arg(long)]
    all: bool,
    /// Write the (last) run's history to this file.
    #[arg(long)]
    history: Option<std::path::PathBuf>,
    /// Scale figures instead of a sweep: keys moved, view change time, per-node traffic
    /// and messages per write for each cluster size and replication factor, without
    /// faults (a markdown table on stdout, and a CSV).
    #[arg(long)]
    scale: bool,
    /// With --scale: fewer keys (20,000) and 5 s traffic windows instead of 1M and 60 s.
    #[arg(long)]
    quick: bool,
    /// With --scale: cluster sizes.
    #[arg(long, value_delimiter = ',', default_value = "6,24,64,128")]
    scale_nodes: Vec<usize>,
    /// With --scale: replication factors.
    #[arg(long, value_delimiter = ',', default_value = "2,3")]
    scale_rf: Vec<usize>,
    /// With --scale: keys loaded before the view changes (overrides the default).
    #[arg(long)]
    scale_keys: Option<usize>,
    /// With --scale: where to write the CSV.
    #[arg(long, default_value = "docs/bench/scale.csv")]
    csv: std::path::PathBuf,
}

fn scale(args: &Args) {
    let mut opts = if args.quick {
        ScaleOptions::quick()
    } else {
        ScaleOptions::full()
    };
    if let Some(k) = args.scale_keys {
        opts.keys = k;
    }
    let mut rows = Vec::new();
    for &rf in &args.scale_rf {
        for &n in &args.scale_nodes {
            let started = Instant::now();
            let r = scale::row(n, rf, &opts);
            eprintln!(
                "{n} nodes, rf {rf}: {:.1} s",
                started.elapsed().as_secs_f64()
            );
            rows.push(r);
        }
    }
    print!("{}", scale::markdown(&rows, &opts));
    if let Some(dir) = args.csv.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&args.csv, scale::csv(&rows, &opts)) {
        eprintln!("writing {}: {e}", args.csv.display());
        std::process::exit(1);
    }
    eprintln!("wrote {}", args.csv.display());
}

fn seeds(spec: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("--seeds {spec:?}: a number or a range a..b");
    if let Some((a, b)) = spec.split_once("..=") {
        let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        return Ok((a..=b).collect());
    }
    if let Some((a, b)) = spec.split_once("..") {
        let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        return Ok((a..b).collect());
    }
    Ok(vec![spec.parse().map_err(|_| bad())?])
}

fn main() {
    let args = Args::parse();
    if args.scale {
        scale(&args);
        return;
    }
    let seeds = match seeds(&args.seeds) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let plant = match args.plant.as_deref() {
        None => None,
        Some(name) => match Plant::from_name(name) {
            Some(p) if cfg!(feature = "planted-bugs") => Some(p),
            Some(_) => {
                eprintln!("--plant needs a build with --features planted-bugs");
                std::process::exit(2);
            }
            None => {
                eprintln!("unknown bug {name:?}");
                std::process::exit(2);
            }
        },
    };
    let started = Instant::now();
    let (mut ops, mut failing) = (0u64, 0u64);
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut anomalies: BTreeMap<String, u64> = BTreeMap::new();
    for &seed in &seeds {
        let mut cfg = Config::new(seed);
        cfg.nodes = args.nodes;
        cfg.ops = args.ops;
        cfg.max_steps = args.steps;
        cfg.faults = !args.no_faults;
        cfg.lossy_crashes = args.lossy_crashes;
        cfg.delta_versions = args.delta_versions;
        cfg.plant = plant;
        cfg.idempotent = args.idempotent;
        cfg.clock_faults = !args.no_clock_faults;
        cfg.view_changes = args.view_changes;
        cfg.trace_key = args.trace_key.clone();
        let out = run(cfg);
        ops += out.counts.ops;
        for (k, n) in &out.counts.faults {
            *faults.entry(k.clone()).or_default() += n;
        }
        if let Some(path) = &args.history {
            if let Err(e) = std::fs::write(path, out.history()) {
                eprintln!("writing {}: {e}", path.display());
            }
        }
        if out.failed() {
            failing += 1;
            for a in &out.report.anomalies {
                *anomalies.entry(format!("{:?}", a.kind)).or_default() += 1;
            }
            println!("FAIL seed {seed}: {}", out.config.command());
            let scratch = std::env::temp_dir()
                .join(format!("causeway-sim-{}-{seed}.jsonl", std::process::id()));
            for line in out.explain(&scratch) {
                println!("{line}");
            }
            if args.all {
                for a in &out.report.anomalies {
                    println!("  {:?}: {} (ops {:?})", a.kind, a.detail, a.ops);
                }
            }
        }
    }
    println!(
        "seeds {}, failing {failing}, ops {ops}, faults {faults:?}, anomalies {anomalies:?}, {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    if failing > 0 {
        std::process::exit(1);
    }
}
