//! `causeway bench`: a load generator for the key API (`/kv-store/keys/<key>`), mounted by the
//! `causeway` binary as a subcommand.
//!
//! A run opens `--concurrency` keep-alive connections spread round-robin over `--nodes`,
//! optionally writes every key once (`--preload`), then for `--duration` seconds sends GETs
//! (body `{}`) and PUTs (body `{"value": "...", "causal-context": {}}`) of random keys
//! `key1..key<keys>` in the ratio `--read-ratio`, either back to back or at a fixed total
//! `--rate`. It reports throughput, answers and errors by status, and latency percentiles from
//! an HDR histogram.
//!
//! With `--batch N` each request is instead a `POST /kv-store/batch` of N ops drawn the same
//! way, and the run reports keys/s (ops answered) beside requests/s. The size of every answer's
//! `causal-context` is measured; with `--sessions` each connection is a client session that
//! sends back the context of its last answer, so the figure is the context sessions hold.
//! `--list` then pages through every key (`GET /kv-store/keys`, `--list-limit` keys a page) with
//! one cursor and reports keys/s and pages/s.
//!
//! Layout: [`summary`] is the pure bookkeeping (tallies, percentiles, rendering); `load` is
//! the connections and the workers; `progress` draws the bar on stderr.
//!
//! ```ignore
//! let summary = causeway_bench::run(args).await?;
//! causeway_bench::print(&summary, json);
//! ```

mod load;
mod progress;
pub mod summary;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use load::{Conn, Workload};
use progress::Progress;
use summary::Tally;
pub use summary::{ContextSummary, LatencySummary, ListSummary, PreloadSummary, RunShape, Summary};

/// Command-line options of `causeway bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Nodes to load, comma-separated ip:port; connections are spread over them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:13800")]
    pub nodes: Vec<String>,
    /// Concurrent keep-alive connections (one request in flight on each).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds of measured load (0 with --preload only loads).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Key space: keys are key1 .. key<KEYS>.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes in each written value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Fraction of requests that are GETs, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.5, value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Fixed total offered rate in requests per second (paced; latency counts from each
    /// request's scheduled send time, so queueing behind slow answers counts). Without it,
    /// every connection sends back to back.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write every key once before measuring.
    #[arg(long)]
    pub preload: bool,
    /// Threads of the load generator's own runtime (1, like `wrk -t1`, keeps it off the cores
    /// the servers need; raise it when one thread cannot keep up).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Send every request as a batch (`POST /kv-store/batch`) of this many ops (1 to 1,000),
    /// drawn like single requests: same key space, same read ratio. The preload then writes
    /// this many keys per batch. Throughput is reported as requests/s and keys/s.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Each connection is a client session: it sends the causal context of its last answer
    /// with its next request (otherwise every request sends `{}`).
    #[arg(long)]
    pub sessions: bool,
    /// After the preload and the measured phase, list every key with one cursor
    /// (`GET /kv-store/keys`, from the first node) and report keys/s and pages/s.
    #[arg(long)]
    pub list: bool,
    /// Keys per page of the listing (1 to 1,000).
    #[arg(long, default_value_t = 1000)]
    pub list_limit: u32,
    /// Only list keys starting with this prefix.
    #[arg(long, default_value = "")]
    pub list_prefix: String,
    /// List values too (`values=true`).
    #[arg(long)]
    pub list_values: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The API's default limit of ops in one batch.
const MAX_BATCH_OPS: usize = 1000;

fn parse_ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("{r} is not between 0.0 and 1.0"))
    }
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid option: {0}")]
    InvalidArgs(String),
    #[error("cannot connect to {node}: {source}")]
    Connect {
        node: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a load worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
    #[error("cannot start the load generator's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the load generator panicked")]
    Panicked,
}

impl BenchArgs {
    fn validate(&self) -> Result<(), BenchError> {
        let invalid = |m: &str| Err(BenchError::InvalidArgs(m.to_string()));
        if self.nodes.is_empty() || self.nodes.iter().any(|n| n.trim().is_empty()) {
            return invalid("--nodes needs at least one ip:port");
        }
        if self.concurrency == 0 {
            return invalid("--concurrency must be at least 1");
        }
        if self.threads == 0 {
            return invalid("--threads must be at least 1");
        }
        if self.keys == 0 {
            return invalid("--keys must be at least 1");
        }
        if !(self.duration.is_finite() && self.duration >= 0.0) {
            return invalid("--duration must be a number of seconds >= 0");
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return invalid("--read-ratio must be between 0.0 and 1.0");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return invalid("--rate must be a positive number of requests per second");
        }
        if self
            .batch
            .is_some_and(|n| !(1..=MAX_BATCH_OPS).contains(&n))
        {
            return invalid("--batch must be from 1 to 1000 ops");
        }
        if !(1..=1000).contains(&self.list_limit) {
            return invalid("--list-limit must be from 1 to 1000");
        }
        Ok(())
    }
}

/// Runs one benchmark and returns its figures. Fails only if the options are invalid or a node
/// cannot be reached at the start; failures during the load are counted in the summary.
///
/// The load runs on its own runtime of `--threads` threads, so what the generator costs does
/// not depend on the runtime of the caller.
pub async fn run(args: BenchArgs) -> Result<Summary, BenchError> {
    args.validate()?;
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(args.threads);
        builder
    }
    .enable_all()
    .build()
    .map_err(BenchError::Runtime)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("causeway-bench".into())
        .spawn(move || {
            let _ = tx.send(runtime.block_on(run_here(args)));
        })
        .map_err(BenchError::Runtime)?;
    rx.await.map_err(|_| BenchError::Panicked)?
}

/// The run itself, on the current runtime.
async fn run_here(args: BenchArgs) -> Result<Summary, BenchError> {
    let nodes: Vec<String> = args.nodes.iter().map(|n| n.trim().to_string()).collect();
    let load = Arc::new(
        Workload::new(
            nodes.clone(),
            args.keys,
            args.value_size,
            args.read_ratio,
            args.rate,
            args.concurrency,
        )
        .with_batch(args.batch)
        .with_sessions(args.sessions),
    );
    let shape = RunShape {
        nodes,
        concurrency: args.concurrency,
        keys: args.keys,
        value_size: args.value_size,
        read_ratio: args.read_ratio,
        offered_rate: args.rate,
        batch: args.batch,
        sessions: args.sessions,
    };

    let mut conns = connect_all(&load).await?;

    let preload = if args.preload {
        let done = Arc::new(AtomicU64::new(0));
        let progress = Progress::counted("preload", args.keys, done.clone());
        let start = Instant::now();
        let (failed, after) = in_parallel(conns, |id, conn| {
            load::preload(id, conn, load.clone(), done.clone())
        })
        .await?;
        conns = after;
        progress.finish();
        let elapsed = start.elapsed().as_secs_f64();
        Some(PreloadSummary {
            keys: args.keys,
            elapsed_secs: elapsed,
            rate: args.keys as f64 / elapsed,
            errors: failed.iter().sum(),
        })
    } else {
        None
    };

    let mut tally = Tally::default();
    let mut elapsed = Duration::ZERO;
    if args.duration > 0.0 {
        let duration = Duration::from_secs_f64(args.duration);
        let done = Arc::new(AtomicU64::new(0));
        let progress = Progress::timed("bench", duration, done.clone());
        let start = Instant::now();
        let deadline = start + duration;
        let (tallies, after) = in_parallel(conns, |id, conn| {
            load::measure(id, conn, load.clone(), start, deadline, done.clone())
        })
        .await?;
        conns = after;
        elapsed = start.elapsed();
        progress.finish();
        for t in &tallies {
            tally.merge(t);
        }
    }
    let mut summary = Summary::new(shape, preload, &tally, elapsed);

    if args.list {
        let options = load::ListOptions {
            prefix: args.list_prefix.clone(),
            limit: args.list_limit,
            values: args.list_values,
        };
        let done = Arc::new(AtomicU64::new(0));
        let progress = Progress::counted("list", args.keys, done.clone());
        let conn = conns.swap_remove(0);
        let node = load.node_of(0).to_string();
        let (listed, _) = load::list(conn, &node, &options, done).await;
        progress.finish();
        summary.list = Some(listed);
    }
    Ok(summary)
}

/// One connection per worker, all opened before the clock starts; the first node that cannot be
/// reached fails the run.
async fn connect_all(load: &Arc<Workload>) -> Result<Vec<Conn>, BenchError> {
    let mut set = JoinSet::new();
    for id in 0..load.concurrency {
        let node = load.node_of(id).to_string();
        set.spawn(async move {
            let conn = load::connect(&node).await;
            (id, node, conn)
        });
    }
    let mut conns: Vec<Conn> = (0..load.concurrency).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (id, node, conn) = joined?;
        conns[id] = Some(conn.map_err(|source| BenchError::Connect { node, source })?);
    }
    Ok(conns)
}

/// Runs `worker(id, conn)` for every connection at once; returns each worker's result and its
/// connection (to reuse in the next phase), in worker order.
async fn in_parallel<T, F, Fut>(
    conns: Vec<Conn>,
    worker: F,
) -> Result<(Vec<T>, Vec<Conn>), BenchError>
where
    T: Send + 'static,
    F: Fn(usize, Conn) -> Fut,
    Fut: Future<Output = (T, Conn)> + Send + 'static,
{
    let n = conns.len();
    let mut set = JoinSet::new();
    for (id, conn) in conns.into_iter().enumerate() {
        let work = worker(id, conn);
        set.spawn(async move { (id, work.await) });
    }
    let mut results: Vec<Option<(T, Conn)>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (id, result) = joined?;
        results[id] = Some(result);
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every worker reported"))
        .unzip())
}

/// Prints a summary to stdout: the text report, or JSON.
pub fn print(summary: &Summary, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(summary).expect("a summary always serializes")
        );
    } else {
        print!("{summary}");
    }
}

/// Runs a benchmark and prints it as the options say: the whole of `causeway bench`.
pub async fn execute(args: BenchArgs) -> Result<Summary, BenchError> {
    let json = args.json;
    let summary = run(args).await?;
    print(&summary, json);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.nodes, ["127.0.0.1:13800"]);
        assert_eq!(a.concurrency, 32);
        assert_eq!(a.duration, 10.0);
        assert_eq!(a.keys, 10_000);
        assert_eq!(a.value_size, 100);
        assert_eq!(a.read_ratio, 0.5);
        assert_eq!(a.rate, None);
        assert_eq!(a.threads, 1);
        assert!(!a.preload && !a.json);
    }

    #[test]
    fn nodes_are_a_comma_list() {
        let a = parse(&["--nodes", "127.0.0.2:13800,127.0.0.3:13800"]).unwrap();
        assert_eq!(a.nodes, ["127.0.0.2:13800", "127.0.0.3:13800"]);
    }

    #[test]
    fn out_of_range_options_are_refused() {
        assert!(parse(&["--read-ratio", "1.5"]).is_err());
        assert!(parse(&["--read-ratio", "-0.1"]).is_err());
        let zero_rate = parse(&["--rate", "0"]).unwrap();
        assert!(matches!(
            zero_rate.validate(),
            Err(BenchError::InvalidArgs(_))
        ));
        let no_conns = parse(&["--concurrency", "0"]).unwrap();
        assert!(matches!(
            no_conns.validate(),
            Err(BenchError::InvalidArgs(_))
        ));
        let no_keys = parse(&["--keys", "0"]).unwrap();
        assert!(matches!(
            no_keys.validate(),
            Err(BenchError::InvalidArgs(_))
        ));
    }
}
