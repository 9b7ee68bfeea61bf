//! `causeway-torture`: runs a fault campaign against a real Causeway cluster
//! (`causeway-torture [run] ...`) or re-checks a recorded history
//! (`causeway-torture check --history FILE`). Exits 0 when no anomaly was
//! found, 1 when some were, 2 when the campaign could not run.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use causeway_torture::campaign::{self, CampaignConfig};
use causeway_torture::checker::{self, AnomalyKind, CheckOptions, Report};
use causeway_torture::cluster::ClusterConfig;
use causeway_torture::history::{self, Event};
use causeway_torture::schedule::{parse_faults, FaultKind};

#[derive(Parser)]
#[command(
    name = "causeway-torture",
    version,
    about = "Fault campaign and history checker for Causeway"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a campaign (the default).
    Run(Box<RunArgs>),
    /// Check a recorded history.
    Check {
        #[arg(long)]
        history: PathBuf,
        /// Require the post-healing state in the history.
        #[arg(long)]
        require_final: bool,
        /// Anomalies of each kind printed in full.
        #[arg(long, default_value_t = 5)]
        show: usize,
    },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Seed of the fault schedule and of every session's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Length of the load phase: 90s, 10m, 1h (plain numbers are seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Number of node processes.
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// Number of shards (nodes / repl-factor); overrides --repl-factor.
    #[arg(long)]
    shards: Option<usize>,
    /// Replicas per shard.
    #[arg(long, default_value_t = 2)]
    repl_factor: usize,
    /// Concurrent client sessions.
    #[arg(long, default_value_t = 12)]
    sessions: u32,
    /// Size of the hot key space.
    #[arg(long, default_value_t = 16)]
    keys: usize,
    /// Mean pause between two operations of one session.
    #[arg(long, default_value = "15ms", value_parser = parse_duration)]
    think: Duration,
    /// Chance that an operation carries another session's context.
    #[arg(long, default_value_t = 0.03)]
    handoff: f64,
    /// Chance that a PUT carries a large value (see --large-bytes).
    #[arg(long, default_value_t = 0.0)]
    large_values: f64,
    /// Largest large value, in bytes (values range from a quarter of it up to it).
    #[arg(long, default_value_t = 1_000_000)]
    large_bytes: usize,
    /// Chance that an operation is a batch of 2 to 5 gets, puts and deletes.
    #[arg(long, default_value_t = 0.05)]
    batches: f64,
    /// Chance that an operation lists every key with its value.
    #[arg(long, default_value_t = 0.05)]
    listings: f64,
    /// Chance that a put (single or in a batch) expires after 1 to 4 s.
    #[arg(long, default_value_t = 0.05)]
    ttl_writes: f64,
    /// Chance that a write (put, delete, batch with a write) carries an
    /// `Idempotency-Key`; such a write left unanswered or answered 503 is retried
    /// up to twice on another node, as the same request (0: none, and the same
    /// random choices as before the option existed).
    #[arg(long, default_value_t = 0.5)]
    idempotent: f64,
    /// Send `Idempotency-Key` with single puts and deletes only, never with batches.
    #[arg(long)]
    no_idempotent_batches: bool,
    /// Fault kinds to inject: all, none, or a list of partition, kill, pause,
    /// view-change, clock, cut-view-change.
    #[arg(long, default_value = "all", value_parser = parse_fault_list)]
    faults: FaultList,
    /// Mean time between the starts of two fault episodes.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    fault_gap: Duration,
    /// Most nodes killed or paused at the same time (default: nodes/2 - 1, at least 1).
    #[arg(long)]
    max_down: Option<usize>,
    /// Let view changes start while partitions, kills and pauses are in force (by
    /// default each view change waits for a quiet cluster and holds off other faults).
    #[arg(long)]
    overlap_view_changes: bool,
    /// Where to write the history (JSON lines).
    #[arg(long, default_value = "torture-history.jsonl")]
    history: PathBuf,
    /// The causeway binary (default: CAUSEWAY_BIN, then <workspace>/target/release/causeway, then debug).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Address of the first node; the others take the next addresses.
    #[arg(long, default_value = "127.0.0.2")]
    first_ip: Ipv4Addr,
    /// Port every node listens on (each node has its own address).
    #[arg(long, default_value_t = 13800)]
    port: u16,
    /// Directory for node data and logs (default: a new temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the temporary directory even when no anomaly is found.
    #[arg(long)]
    keep: bool,
    /// Start nodes with CAUSEWAY_TEST_BROKEN_READ_RULE=1 (needs a node built
    /// with the `test-hooks` feature): the campaign must then find anomalies.
    #[arg(long)]
    broken_read_rule: bool,
    /// Start nodes with CAUSEWAY_TEST_IGNORE_OLD_CONTEXTS=1 (needs a node built with
    /// the `test-hooks` feature): replicas ignore contexts from before a view change,
    /// and the campaign must then find anomalies across epochs.
    #[arg(long)]
    ignore_old_contexts: bool,
    /// The iptables program.
    #[arg(long, default_value = "iptables")]
    iptables: String,
    /// How long to wait for replicas to converge after healing.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    converge_timeout: Duration,
    /// Anomalies of each kind printed in full (with history excerpts).
    #[arg(long, default_value_t = 3)]
    show: usize,
}

/// A parsed `--faults` list (one argument, comma-separated).
#[derive(Clone, Debug)]
struct FaultList(Vec<FaultKind>);

fn parse_fault_list(s: &str) -> Result<FaultList, String> {
    parse_faults(s).map(FaultList)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn find_bin(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(b) = explicit.or_else(|| std::env::var_os("CAUSEWAY_BIN").map(PathBuf::from)) {
        return if b.is_file() {
            Ok(b)
        } else {
            Err(format!("causeway binary {} does not exist", b.display()))
        };
    }
    let mut candidates = vec![
        workspace_dir().join("target/release/causeway"),
        workspace_dir().join("target/debug/causeway"),
    ];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("causeway"));
    }
    candidates.into_iter().find(|c| c.is_file()).ok_or_else(|| {
        "no causeway binary found: build it with `cargo build -p causeway --release` or pass --bin".to_string()
    })
}

/// Prints the report, then up to `show` anomalies of each kind in full.
fn print_report(report: &Report, events: &[Event], history: &Path, show: usize) {
    println!("{report}");
    for (kind, total) in report.anomaly_counts() {
        for (i, a) in report
            .anomalies
            .iter()
            .filter(|a| a.kind == kind)
            .take(show)
            .enumerate()
        {
            println!("{kind:?} {}/{total}: {}", i + 1, a.detail);
            for line in history::excerpt(history, &a.ops).unwrap_or_default() {
                println!("    {line}");
            }
            let pair = match (a.kind, a.ops.as_slice()) {
                (AnomalyKind::StaleRead, [_, w, f]) => {
                    Some((*w, *f, "why the read depends on the newer write"))
                }
                (AnomalyKind::LostWrite, [w, f, ..]) => {
                    Some((*w, *f, "why the lost write supersedes the final one"))
                }
                _ => None,
            };
            if let Some((w, f, why)) = pair {
                if let Some(chain) = checker::causal_chain(events, w, f) {
                    println!("  {why}:");
                    for line in checker::describe_chain(events, &chain, f) {
                        println!("    {line}");
                    }
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let bin = match find_bin(args.bin.clone()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("torture: {e}");
            return ExitCode::from(2);
        }
    };
    let repl_factor = match args.shards {
        Some(s) if s > 0 && args.nodes.is_multiple_of(s) => args.nodes / s,
        Some(s) => {
            eprintln!("torture: {} nodes cannot form {s} equal shards", args.nodes);
            return ExitCode::from(2);
        }
        None => args.repl_factor,
    };
    if repl_factor == 0 || !args.nodes.is_multiple_of(repl_factor) {
        eprintln!(
            "torture: repl-factor {repl_factor} does not divide {} nodes",
            args.nodes
        );
        return ExitCode::from(2);
    }
    let temp = match &args.work_dir {
        Some(_) => None,
        None => match tempfile::Builder::new()
            .prefix("causeway-torture-")
            .tempdir()
        {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("torture: cannot create a temporary directory: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("temp dir").path().to_path_buf());
    let config =
        CampaignConfig {
            cluster: ClusterConfig {
                bin,
                work_dir: work_dir.clone(),
                first_ip: args.first_ip,
                port: args.port,
                nodes: args.nodes,
                repl_factor,
                cluster_secret: format!("torture-{}", args.seed),
                broken_read_rule: args.broken_read_rule,
                ignore_old_contexts: args.ignore_old_contexts,
                ready_timeout: Duration::from_secs(30),
                clock_offsets: args.faults.0.contains(&FaultKind::Clock).then(|| {
                    causeway_torture::schedule::initial_clock_offsets(args.seed, args.nodes)
                }),
            },
            seed: args.seed,
            duration: args.duration,
            sessions: args.sessions,
            keys: args.keys.max(1),
            think: args.think,
            handoff: args.handoff,
            faults: args.faults.0.clone(),
            large_values: args.large_values,
            large_bytes: args.large_bytes,
            batches: args.batches,
            listings: args.listings,
            ttl_writes: args.ttl_writes,
            idempotent: args.idempotent,
            idempotent_batches: !args.no_idempotent_batches,
            mean_gap: args.fault_gap,
            history: args.history.clone(),
            iptables: args.iptables.clone(),
            firewall_tag: causeway_torture::partition::RULE_COMMENT.to_string(),
            converge_timeout: args.converge_timeout,
            max_down: args
                .max_down
                .unwrap_or((args.nodes / 2).saturating_sub(1).max(1)),
            overlap_view_changes: args.overlap_view_changes,
        };
    let outcome = tokio::select! {
        r = campaign::run(config) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("torture: interrupted; nodes stopped, partition rules removed");
            return ExitCode::from(2);
        }
    };
    let keep = |reason: &str| {
        if let Some(t) = temp {
            let path = t.keep();
            eprintln!(
                "torture: {reason}; node data and logs kept in {}",
                path.display()
            );
        } else {
            eprintln!("torture: node data and logs in {}", work_dir.display());
        }
    };
    match outcome {
        Err(e) => {
            eprintln!("torture: campaign failed: {e}");
            keep("campaign failed");
            ExitCode::from(2)
        }
        Ok(outcome) => {
            print_report(&outcome.report, &outcome.events, &args.history, args.show);
            println!("history: {}", args.history.display());
            if outcome.report.anomalies.is_empty() {
                if args.keep {
                    keep("--keep");
                }
                ExitCode::SUCCESS
            } else {
                keep("anomalies found");
                ExitCode::from(1)
            }
        }
    }
}

fn check(path: &Path, require_final: bool, show: usize) -> ExitCode {
    let events = match history::read_history_compact(path) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("torture: {e}");
            return ExitCode::from(2);
        }
    };
    let report = checker::check(&events, CheckOptions { require_final });
    print_report(&report, &events, path, show);
    if report.anomalies.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check {
            history,
            require_final,
            show,
        }) => check(&history, require_final, show),
        Some(Command::Run(args)) => run(*args).await,
        None => run(cli.run).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "causeway-torture",
            "--duration",
            "90",
            "--faults",
            "kill,pause",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.duration, Duration::from_secs(90));
        assert_eq!(cli.run.faults.0, vec![FaultKind::Kill, FaultKind::Pause]);
        let cli =
            Cli::try_parse_from(["causeway-torture", "check", "--history", "h.jsonl"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Check { .. })));
        assert!(Cli::try_parse_from(["causeway-torture", "--faults", "meteor"]).is_err());
        let cli = Cli::try_parse_from([
            "causeway-torture",
            "--faults",
            "partition,view-change,cut-view-change",
        ])
        .unwrap();
        assert_eq!(
            cli.run.faults.0,
            vec![
                FaultKind::Partition,
                FaultKind::ViewChange,
                FaultKind::CutViewChange
            ]
        );
        let cli = Cli::try_parse_from(["causeway-torture"]).unwrap();
        assert_eq!(cli.run.faults.0, FaultKind::ALL.to_vec());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("15ms").unwrap(), Duration::from_millis(15));
        assert!(parse_duration("10x").is_err());
    }
}
