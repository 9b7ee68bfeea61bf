//! The bookkeeping of a run, with no I/O: what one worker counts while it runs ([`Tally`]), how
//! the tallies of all workers merge, and the figures a run reports ([`Summary`]) with their text
//! rendering. Latencies are recorded in microseconds in HDR histograms (3 significant digits), so
//! every percentile is exact to 0.1% whatever the spread.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies above this (60 s, far beyond the client's 5 s timeout) are recorded as this value.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Largest context size the histogram tells apart (16 MiB); larger ones are recorded as this.
const MAX_CONTEXT_BYTES: u64 = 16 << 20;

/// The operations the generator sends: single-key GETs and PUTs, and batches of them
/// (`POST /kv-store/batch`, `--batch`), whose ops are counted as GETs and PUTs too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Get,
    Put,
    Batch,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Put => "PUT",
            Op::Batch => "BATCH",
        }
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The TCP connection (or the HTTP handshake) could not be made.
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection broke while the request was in flight.
    Io,
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Io => "io",
        }
    }
}

/// Whether an answer is an error. A GET's 404 is the API's normal answer for a key never
/// written, so it is counted as a response, not as an error.
/// A batch is an error unless it answers 2xx; its ops are judged one by one like single-key
/// requests.
pub fn is_error(op: Op, status: u16) -> bool {
    let success = (200..300).contains(&status);
    let miss = op == Op::Get && status == 404;
    !(success || miss)
}

/// What one worker counted. Tallies merge, so each worker keeps its own and nothing is shared on
/// the hot path.
#[derive(Debug, Clone)]
pub struct Tally {
    get_latency: Histogram<u64>,
    put_latency: Histogram<u64>,
    batch_latency: Histogram<u64>,
    statuses: BTreeMap<(Op, u16), u64>,
    failures: BTreeMap<Failure, u64>,
    /// Statuses of the single ops inside answered batches.
    op_statuses: BTreeMap<(Op, u16), u64>,
    /// Bytes of the `causal-context` of every answer that carried one.
    context_bytes: Histogram<u64>,
    /// Bytes of the context each session (worker) held when it stopped.
    final_context_bytes: Vec<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            get_latency: new_histogram(),
            put_latency: new_histogram(),
            batch_latency: new_histogram(),
            statuses: BTreeMap::new(),
            failures: BTreeMap::new(),
            op_statuses: BTreeMap::new(),
            context_bytes: new_size_histogram(),
            final_context_bytes: Vec::new(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

pub(crate) fn new_size_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_CONTEXT_BYTES, 3).expect("static histogram bounds are valid")
}

impl Tally {
    /// Counts an answered request and its latency.
    pub fn record(&mut self, op: Op, status: u16, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let histogram = match op {
            Op::Get => &mut self.get_latency,
            Op::Put => &mut self.put_latency,
            Op::Batch => &mut self.batch_latency,
        };
        histogram.saturating_record(us);
        *self.statuses.entry((op, status)).or_default() += 1;
    }

    /// Counts the status of one op inside an answered batch.
    pub fn record_op(&mut self, op: Op, status: u16) {
        *self.op_statuses.entry((op, status)).or_default() += 1;
    }

    /// Counts the size of an answer's `causal-context` (its JSON text, in bytes).
    pub fn record_context(&mut self, bytes: usize) {
        self.context_bytes
            .saturating_record(u64::try_from(bytes).unwrap_or(u64::MAX).max(1));
    }

    /// Notes the size of the context a session held when it stopped.
    pub fn record_final_context(&mut self, bytes: usize) {
        self.final_context_bytes
            .push(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// Counts a request that got no answer.
    pub fn record_failure(&mut self, failure: Failure) {
        *self.failures.entry(failure).or_default() += 1;
    }

    /// Adds another worker's counts to these.
    pub fn merge(&mut self, other: &Tally) {
        self.get_latency
            .add(&other.get_latency)
            .expect("histograms share bounds");
        self.put_latency
            .add(&other.put_latency)
            .expect("histograms share bounds");
        self.batch_latency
            .add(&other.batch_latency)
            .expect("histograms share bounds");
        self.context_bytes
            .add(&other.context_bytes)
            .expect("histograms share bounds");
        self.final_context_bytes
            .extend_from_slice(&other.final_context_bytes);
        for (k, n) in &other.statuses {
            *self.statuses.entry(*k).or_default() += n;
        }
        for (k, n) in &other.failures {
            *self.failures.entry(*k).or_default() += n;
        }
        for (k, n) in &other.op_statuses {
            *self.op_statuses.entry(*k).or_default() += n;
        }
    }

    /// Single keys read or written: one per single-key answer, one per op result of a batch.
    pub fn key_ops(&self) -> u64 {
        let single: u64 = self
            .statuses
            .iter()
            .filter(|((op, _), _)| *op != Op::Batch)
            .map(|(_, n)| n)
            .sum();
        single + self.op_statuses.values().sum::<u64>()
    }

    /// Of [`Tally::key_ops`], those whose status is not an error.
    pub fn ok_key_ops(&self) -> u64 {
        self.statuses
            .iter()
            .chain(self.op_statuses.iter())
            .filter(|((op, status), _)| *op != Op::Batch && !is_error(*op, *status))
            .map(|(_, n)| n)
            .sum()
    }

    /// Ops inside answered batches whose status is an error.
    pub fn op_error_total(&self) -> u64 {
        self.op_statuses
            .iter()
            .filter(|((op, status), _)| is_error(*op, *status))
            .map(|(_, n)| n)
            .sum()
    }

    /// Answered requests, of any status.
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Answers that are errors plus requests with no answer.
    pub fn error_total(&self) -> u64 {
        let statuses: u64 = self
            .statuses
            .iter()
            .filter(|((op, status), _)| is_error(*op, *status))
            .map(|(_, n)| n)
            .sum();
        statuses + self.failures.values().sum::<u64>()
    }
}

/// Latency percentiles of a set of requests, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    /// Reads the percentiles of a histogram recorded in microseconds. An empty histogram gives
    /// all zeros (never NaN).
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                count: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Sizes of the `causal-context` JSON text the answers carried, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContextSummary {
    /// Answers that carried a context.
    pub answers: u64,
    pub mean_bytes: f64,
    pub p50_bytes: u64,
    pub p99_bytes: u64,
    pub max_bytes: u64,
    /// Whether each connection sent back the context of its previous answer (`--sessions`);
    /// otherwise every request sent `{}` and each answer's context covers that request only.
    pub carried: bool,
    /// Sessions (connections) that held a context at the end.
    pub sessions: usize,
    /// Mean and largest size of the context each session held at the end of the run.
    pub final_mean_bytes: f64,
    pub final_max_bytes: u64,
}

impl ContextSummary {
    /// The sizes of a histogram of bytes and of the sessions' final contexts; `None` when no
    /// answer carried a context.
    pub fn new(sizes: &Histogram<u64>, finals: &[u64], carried: bool) -> Option<Self> {
        if sizes.is_empty() {
            return None;
        }
        let final_mean_bytes = if finals.is_empty() {
            0.0
        } else {
            finals.iter().sum::<u64>() as f64 / finals.len() as f64
        };
        Some(Self {
            answers: sizes.len(),
            mean_bytes: sizes.mean(),
            p50_bytes: sizes.value_at_quantile(0.50),
            p99_bytes: sizes.value_at_quantile(0.99),
            max_bytes: sizes.max(),
            carried,
            sessions: finals.len(),
            final_mean_bytes,
            final_max_bytes: finals.iter().copied().max().unwrap_or(0),
        })
    }
}

/// The listing phase (`--list`): every key paged through with one cursor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListSummary {
    pub node: String,
    pub prefix: String,
    pub limit: u32,
    pub values: bool,
    /// Keys listed (sum of the page sizes).
    pub keys: u64,
    pub pages: u64,
    pub elapsed_secs: f64,
    pub keys_per_sec: f64,
    pub pages_per_sec: f64,
    /// Whether the listing reached `"next": null`; false when a page failed after retries.
    pub complete: bool,
    /// Pages that failed (no answer, an error status or an unreadable body), retries included.
    pub errors: u64,
    /// Time per page answer.
    pub page_latency: LatencySummary,
    /// Bytes of the `causal-context` of the last page (carried from page to page).
    pub final_context_bytes: usize,
}

impl ListSummary {
    /// Rates from the counts and the wall time of the listing (zero for a zero time).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: String,
        prefix: String,
        limit: u32,
        values: bool,
        keys: u64,
        pages: u64,
        elapsed: Duration,
        page_latency: &Histogram<u64>,
        complete: bool,
        errors: u64,
        final_context_bytes: usize,
    ) -> Self {
        let elapsed_secs = elapsed.as_secs_f64();
        let per_sec = |n: u64| per_second(n, elapsed_secs);
        Self {
            node,
            prefix,
            limit,
            values,
            keys,
            pages,
            elapsed_secs,
            keys_per_sec: per_sec(keys),
            pages_per_sec: per_sec(pages),
            complete,
            errors,
            page_latency: LatencySummary::from_histogram(page_latency),
            final_context_bytes,
        }
    }
}

/// A latency histogram in microseconds, as the tallies use.
pub fn latency_histogram() -> Histogram<u64> {
    new_histogram()
}

/// Records one latency into a histogram made by [`latency_histogram`].
pub fn record_latency(h: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    h.saturating_record(us);
}

/// The preload phase: every key written once before measuring.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreloadSummary {
    pub keys: u64,
    pub elapsed_secs: f64,
    /// Keys written per second.
    pub rate: f64,
    /// Keys whose write failed (after retries).
    pub errors: u64,
}

/// What the run was asked to do, echoed in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunShape {
    pub nodes: Vec<String>,
    pub concurrency: usize,
    pub keys: u64,
    pub value_size: usize,
    pub read_ratio: f64,
    /// Fixed offered rate in requests per second, when the run was paced.
    pub offered_rate: Option<f64>,
    /// Ops per request when every request is a batch (`--batch`); `None` for single-key
    /// requests.
    pub batch: Option<usize>,
    /// Whether each connection carries its causal context from answer to request.
    pub sessions: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub shape: RunShape,
    pub preload: Option<PreloadSummary>,
    /// Wall time of the measured phase, from start until the last worker stopped.
    pub elapsed_secs: f64,
    /// Requests that got an HTTP answer, of any status.
    pub requests: u64,
    /// `requests` per second.
    pub throughput: f64,
    /// Answers that are not errors, per second.
    pub ok_throughput: f64,
    /// Answers by `"<METHOD> <status>"`.
    pub responses: BTreeMap<String, u64>,
    /// Errors by `"<METHOD> <status>"` or by failure kind (`connect`, `timeout`, `io`).
    pub errors: BTreeMap<String, u64>,
    pub error_total: u64,
    /// All answered requests. When paced, counted from each request's scheduled send time as
    /// if sent on time, so time queued behind a slow answer counts (no coordinated omission)
    /// and the generator's own timer drift does not.
    pub latency: LatencySummary,
    pub get_latency: Option<LatencySummary>,
    pub put_latency: Option<LatencySummary>,
    /// Single keys read or written: one per single-key answer, one per op of an answered
    /// batch (equal to `requests` without `--batch`).
    pub key_ops: u64,
    /// `key_ops` per second.
    pub keys_per_sec: f64,
    /// Key ops whose status is not an error, per second.
    pub ok_keys_per_sec: f64,
    /// Statuses of the ops inside batches, by `"<METHOD> <status>"`.
    pub op_responses: BTreeMap<String, u64>,
    /// Ops inside answered batches whose status is an error.
    pub op_error_total: u64,
    pub batch_latency: Option<LatencySummary>,
    /// Sizes of the `causal-context` the answers carried.
    pub context: Option<ContextSummary>,
    /// The listing phase, with `--list`.
    pub list: Option<ListSummary>,
}

impl Summary {
    /// Builds the figures from the merged tally of all workers.
    pub fn new(
        shape: RunShape,
        preload: Option<PreloadSummary>,
        tally: &Tally,
        elapsed: Duration,
    ) -> Self {
        let elapsed_secs = elapsed.as_secs_f64();
        let per_sec = |n: u64| per_second(n, elapsed_secs);
        let requests = tally.answered();
        let error_total = tally.error_total();
        let answered_errors: u64 = tally
            .statuses
            .iter()
            .filter(|((op, status), _)| is_error(*op, *status))
            .map(|(_, n)| n)
            .sum();
        let responses = tally
            .statuses
            .iter()
            .map(|((op, status), n)| (format!("{} {status}", op.name()), *n))
            .collect();
        let errors = tally
            .statuses
            .iter()
            .filter(|((op, status), _)| is_error(*op, *status))
            .map(|((op, status), n)| (format!("{} {status}", op.name()), *n))
            .chain(
                tally
                    .failures
                    .iter()
                    .map(|(f, n)| (f.name().to_string(), *n)),
            )
            .collect();
        let mut all = tally.get_latency.clone();
        all.add(&tally.put_latency)
            .expect("histograms share bounds");
        all.add(&tally.batch_latency)
            .expect("histograms share bounds");
        let key_ops = tally.key_ops();
        let op_responses = tally
            .op_statuses
            .iter()
            .map(|((op, status), n)| (format!("{} {status}", op.name()), *n))
            .collect();
        let context = ContextSummary::new(
            &tally.context_bytes,
            &tally.final_context_bytes,
            shape.sessions,
        );
        let per_op =
            |h: &Histogram<u64>| (!h.is_empty()).then(|| LatencySummary::from_histogram(h));
        Self {
            shape,
            preload,
            elapsed_secs,
            requests,
            throughput: per_sec(requests),
            ok_throughput: per_sec(requests - answered_errors),
            responses,
            errors,
            error_total,
            latency: LatencySummary::from_histogram(&all),
            get_latency: per_op(&tally.get_latency),
            put_latency: per_op(&tally.put_latency),
            key_ops,
            keys_per_sec: per_sec(key_ops),
            ok_keys_per_sec: per_sec(tally.ok_key_ops()),
            op_responses,
            op_error_total: tally.op_error_total(),
            batch_latency: per_op(&tally.batch_latency),
            context,
            list: None,
        }
    }
}

fn write_latency(f: &mut fmt::Formatter<'_>, label: &str, l: &LatencySummary) -> fmt::Result {
    writeln!(
        f,
        "  {label:<11}p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
    )
}

fn write_counts(
    f: &mut fmt::Formatter<'_>,
    label: &str,
    counts: &BTreeMap<String, u64>,
) -> fmt::Result {
    write!(f, "  {label:<11}")?;
    if counts.is_empty() {
        write!(f, "none")?;
    }
    for (i, (k, n)) in counts.iter().enumerate() {
        if i > 0 {
            write!(f, "  ")?;
        }
        write!(f, "{k}: {n}")?;
    }
    writeln!(f)
}

/// The human-readable report `causeway bench` prints.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shape;
        write!(
            f,
            "causeway bench: {} node(s), {} connections, {:.1} s, read ratio {:.2}, {} keys, {}-byte values",
            s.nodes.len(),
            s.concurrency,
            self.elapsed_secs,
            s.read_ratio,
            s.keys,
            s.value_size
        )?;
        if let Some(n) = s.batch {
            write!(f, ", batches of {n} ops")?;
        }
        if s.sessions {
            write!(f, ", sessions carry their context")?;
        }
        writeln!(f)?;
        if let Some(p) = &self.preload {
            writeln!(
                f,
                "  {:<11}{} keys in {:.2} s ({:.0} keys/s), {} errors",
                "preload", p.keys, p.elapsed_secs, p.rate, p.errors
            )?;
        }
        writeln!(
            f,
            "  {:<11}{} ({:.1} req/s), ok {:.1} req/s",
            "requests", self.requests, self.throughput, self.ok_throughput
        )?;
        if let Some(rate) = s.offered_rate {
            writeln!(
                f,
                "  {:<11}{rate:.1} req/s (achieved {:.1})",
                "offered", self.throughput
            )?;
        }
        if s.batch.is_some() {
            writeln!(
                f,
                "  {:<11}{} ({:.1} keys/s), ok {:.1} keys/s",
                "keys", self.key_ops, self.keys_per_sec, self.ok_keys_per_sec
            )?;
        }
        write_counts(f, "responses", &self.responses)?;
        if s.batch.is_some() {
            write_counts(f, "batch ops", &self.op_responses)?;
        }
        write_counts(f, "errors", &self.errors)?;
        if s.batch.is_some() {
            writeln!(f, "  {:<11}{}", "op errors", self.op_error_total)?;
        }
        if let Some(c) = &self.context {
            writeln!(
                f,
                "  {:<11}{} answers: mean {:.0} B, p50 {} B, p99 {} B, max {} B",
                "context", c.answers, c.mean_bytes, c.p50_bytes, c.p99_bytes, c.max_bytes
            )?;
            if c.carried {
                writeln!(
                    f,
                    "  {:<11}{} sessions, after ~{:.0} requests each: mean {:.0} B, max {} B",
                    "held",
                    c.sessions,
                    self.requests as f64 / c.sessions.max(1) as f64,
                    c.final_mean_bytes,
                    c.final_max_bytes
                )?;
            }
        }
        if let Some(l) = &self.list {
            writeln!(
                f,
                "  {:<11}{} keys in {} pages of <= {} in {:.2} s: {:.0} keys/s, {:.1} pages/s, {}, {} errors",
                "list",
                l.keys,
                l.pages,
                l.limit,
                l.elapsed_secs,
                l.keys_per_sec,
                l.pages_per_sec,
                if l.complete { "complete" } else { "INCOMPLETE" },
                l.errors
            )?;
            write_latency(f, "page, ms", &l.page_latency)?;
        }
        writeln!(f, "  latency in ms:")?;
        write_latency(f, "all", &self.latency)?;
        if let Some(l) = &self.get_latency {
            write_latency(f, "GET", l)?;
        }
        if let Some(l) = &self.put_latency {
            write_latency(f, "PUT", l)?;
        }
        if let Some(l) = &self.batch_latency {
            write_latency(f, "BATCH", l)?;
        }
        Ok(())
    }
}

/// `n` per second over `elapsed_secs` (0 for an empty run).
fn per_second(n: u64, elapsed_secs: f64) -> f64 {
    if elapsed_secs > 0.0 {
        n as f64 / elapsed_secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> RunShape {
        RunShape {
            nodes: vec!["127.0.0.1:1".into()],
            concurrency: 2,
            keys: 10,
            value_size: 1,
            read_ratio: 0.5,
            offered_rate: None,
            batch: None,
            sessions: false,
        }
    }

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected * 0.002
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut t = Tally::default();
        for us in 1..=10_000u64 {
            t.record(Op::Get, 200, Duration::from_micros(us));
        }
        let l = LatencySummary::from_histogram(&t.get_latency);
        assert_eq!(l.count, 10_000);
        assert!(close(l.p50_ms, 5.0), "p50 {}", l.p50_ms);
        assert!(close(l.p90_ms, 9.0), "p90 {}", l.p90_ms);
        assert!(close(l.p99_ms, 9.9), "p99 {}", l.p99_ms);
        assert!(close(l.p999_ms, 9.99), "p99.9 {}", l.p999_ms);
        assert!(close(l.max_ms, 10.0), "max {}", l.max_ms);
        assert!(close(l.mean_ms, 5.0005), "mean {}", l.mean_ms);
    }

    #[test]
    fn a_tail_shows_in_high_percentiles_only() {
        let mut t = Tally::default();
        for _ in 0..990 {
            t.record(Op::Put, 201, Duration::from_micros(100));
        }
        for _ in 0..10 {
            t.record(Op::Put, 201, Duration::from_millis(50));
        }
        let l = LatencySummary::from_histogram(&t.put_latency);
        assert!(close(l.p50_ms, 0.1));
        assert!(close(l.p90_ms, 0.1));
        assert!(close(l.p99_ms, 0.1), "p99 is the 990th value: {}", l.p99_ms);
        assert!(close(l.p999_ms, 50.0), "p99.9 {}", l.p999_ms);
        assert!(close(l.max_ms, 50.0));
    }

    #[test]
    fn empty_histogram_reads_as_zeros() {
        let l = LatencySummary::from_histogram(&new_histogram());
        assert_eq!(l.count, 0);
        assert_eq!(l.p99_ms, 0.0);
        assert_eq!(l.mean_ms, 0.0);
    }

    #[test]
    fn latencies_beyond_the_range_saturate_and_zero_counts_as_one_microsecond() {
        let mut t = Tally::default();
        t.record(Op::Get, 200, Duration::from_secs(3600));
        t.record(Op::Get, 200, Duration::ZERO);
        let l = LatencySummary::from_histogram(&t.get_latency);
        assert_eq!(l.count, 2);
        assert!(close(l.max_ms, 60_000.0), "max {}", l.max_ms);
        assert!(close(l.p50_ms, 0.001), "p50 {}", l.p50_ms);
    }

    #[test]
    fn merged_tallies_add_up_and_classify_errors() {
        let mut a = Tally::default();
        a.record(Op::Put, 201, Duration::from_micros(100));
        a.record(Op::Get, 404, Duration::from_micros(100));
        a.record(Op::Get, 200, Duration::from_micros(300));
        let mut b = Tally::default();
        b.record(Op::Put, 503, Duration::from_micros(200));
        b.record(Op::Get, 400, Duration::from_micros(200));
        b.record_failure(Failure::Timeout);
        b.record_failure(Failure::Timeout);
        a.merge(&b);
        assert_eq!(a.answered(), 5);
        assert_eq!(a.error_total(), 4, "PUT 503, GET 400 and two timeouts");

        let s = Summary::new(shape(), None, &a, Duration::from_secs(2));
        assert_eq!(s.requests, 5);
        assert_eq!(s.throughput, 2.5);
        assert_eq!(s.ok_throughput, 1.5, "GET 404 is a miss, not an error");
        assert_eq!(s.error_total, 4);
        assert_eq!(s.responses["GET 404"], 1);
        assert_eq!(s.responses["PUT 201"], 1);
        assert_eq!(s.errors["PUT 503"], 1);
        assert_eq!(s.errors["GET 400"], 1);
        assert_eq!(s.errors["timeout"], 2);
        assert!(!s.errors.contains_key("GET 404"));
        assert_eq!(s.latency.count, 5);
        assert_eq!(s.get_latency.unwrap().count, 3);
        assert_eq!(s.put_latency.unwrap().count, 2);
    }

    #[test]
    fn a_run_with_no_requests_has_no_rates_and_no_per_op_latency() {
        let s = Summary::new(shape(), None, &Tally::default(), Duration::ZERO);
        assert_eq!(s.throughput, 0.0);
        assert_eq!(s.get_latency, None);
        assert_eq!(s.put_latency, None);
        assert!(s.to_string().contains("errors     none"));
    }

    #[test]
    fn json_has_the_flat_shape_and_the_figures() {
        let mut t = Tally::default();
        t.record(Op::Put, 201, Duration::from_micros(250));
        let s = Summary::new(shape(), None, &t, Duration::from_secs(1));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["concurrency"], 2);
        assert_eq!(v["throughput"], 1.0);
        assert_eq!(v["responses"]["PUT 201"], 1);
        assert_eq!(v["latency"]["count"], 1);
        assert!(v["get_latency"].is_null());
    }

    #[test]
    fn batches_count_their_ops_as_keys() {
        let mut t = Tally::default();
        // Two batches of 3 ops answered, one refused as a whole.
        for _ in 0..2 {
            t.record(Op::Batch, 200, Duration::from_micros(1000));
            t.record_op(Op::Put, 201);
            t.record_op(Op::Put, 200);
            t.record_op(Op::Get, 404);
        }
        t.record(Op::Batch, 413, Duration::from_micros(10));
        let mut other = Tally::default();
        other.record(Op::Batch, 200, Duration::from_micros(500));
        other.record_op(Op::Put, 503);
        other.record_op(Op::Put, 201);
        other.record_op(Op::Get, 200);
        t.merge(&other);
        assert_eq!(t.key_ops(), 9, "the ops of the three answered batches");
        assert_eq!(t.ok_key_ops(), 8, "one PUT 503; the GET 404 is a miss");
        assert_eq!(t.op_error_total(), 1);

        let s = Summary::new(
            RunShape {
                batch: Some(3),
                ..shape()
            },
            None,
            &t,
            Duration::from_secs(3),
        );
        assert_eq!(s.requests, 4);
        assert_eq!(s.key_ops, 9);
        assert_eq!(s.keys_per_sec, 3.0);
        assert!(close(s.ok_keys_per_sec, 8.0 / 3.0));
        assert!(close(s.throughput, 4.0 / 3.0));
        assert_eq!(s.error_total, 1, "the 413 batch");
        assert_eq!(s.errors["BATCH 413"], 1);
        assert_eq!(s.op_error_total, 1);
        assert_eq!(s.op_responses["PUT 201"], 3);
        assert_eq!(s.op_responses["GET 404"], 2);
        assert_eq!(s.batch_latency.unwrap().count, 4);
        assert_eq!(s.latency.count, 4);
        assert_eq!(s.get_latency, None);
        let text = s.to_string();
        assert!(text.contains("batches of 3 ops"), "{text}");
        assert!(text.contains("keys       9 (3.0 keys/s)"), "{text}");
        assert!(text.contains("op errors  1"), "{text}");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["batch"], 3);
        assert_eq!(v["keys_per_sec"], 3.0);
        assert_eq!(v["op_responses"]["PUT 503"], 1);
    }

    #[test]
    fn single_requests_are_one_key_each() {
        let mut t = Tally::default();
        t.record(Op::Put, 201, Duration::from_micros(100));
        t.record(Op::Put, 503, Duration::from_micros(100));
        t.record(Op::Get, 404, Duration::from_micros(100));
        t.record_failure(Failure::Io);
        let s = Summary::new(shape(), None, &t, Duration::from_secs(1));
        assert_eq!(s.key_ops, s.requests);
        assert_eq!(s.keys_per_sec, s.throughput);
        assert_eq!(s.ok_keys_per_sec, s.ok_throughput);
        assert!(
            !s.to_string().contains("keys/s"),
            "no keys line without --batch"
        );
    }

    #[test]
    fn context_sizes_summarise_answers_and_what_sessions_hold() {
        let mut a = Tally::default();
        for bytes in [100, 200, 300] {
            a.record_context(bytes);
        }
        a.record_final_context(300);
        let mut b = Tally::default();
        b.record_context(1000);
        b.record_final_context(1000);
        a.merge(&b);
        let mut t = Tally::default();
        for _ in 0..4 {
            t.record(Op::Get, 200, Duration::from_micros(100));
        }
        t.merge(&a);
        let s = Summary::new(
            RunShape {
                sessions: true,
                ..shape()
            },
            None,
            &t,
            Duration::from_secs(1),
        );
        let c = s.context.clone().unwrap();
        assert_eq!(c.answers, 4);
        assert!(close(c.mean_bytes, 400.0), "mean {}", c.mean_bytes);
        assert!(
            (c.max_bytes as f64 - 1000.0).abs() <= 1.0,
            "max {}",
            c.max_bytes
        );
        assert!(
            (c.p50_bytes as f64 - 200.0).abs() <= 1.0,
            "p50 {}",
            c.p50_bytes
        );
        assert!(c.carried);
        assert_eq!(c.sessions, 2);
        assert_eq!(c.final_mean_bytes, 650.0);
        assert_eq!(c.final_max_bytes, 1000);
        let text = s.to_string();
        assert!(text.contains("context    4 answers: mean 400 B"), "{text}");
        assert!(
            text.contains("held       2 sessions, after ~2 requests each: mean 650 B, max 1000 B"),
            "{text}"
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["context"]["final_max_bytes"], 1000);
        assert_eq!(v["sessions"], true);
    }

    #[test]
    fn no_context_seen_means_no_context_figure() {
        assert_eq!(ContextSummary::new(&new_size_histogram(), &[], false), None);
        let mut t = Tally::default();
        t.record_context(0);
        t.record_context(usize::MAX);
        let c = ContextSummary::new(&t.context_bytes, &[], false).unwrap();
        assert_eq!(
            c.answers, 2,
            "an empty context counts as 1 byte, a huge one saturates"
        );
        assert_eq!(
            (c.sessions, c.final_mean_bytes, c.final_max_bytes),
            (0, 0.0, 0)
        );
    }

    #[test]
    fn a_listing_reports_keys_and_pages_per_second() {
        let mut h = latency_histogram();
        for ms in [10, 20, 30, 40] {
            record_latency(&mut h, Duration::from_millis(ms));
        }
        let l = ListSummary::new(
            "n:1".into(),
            String::new(),
            1000,
            false,
            3_500,
            4,
            Duration::from_secs(2),
            &h,
            true,
            1,
            120,
        );
        assert_eq!(l.keys_per_sec, 1_750.0);
        assert_eq!(l.pages_per_sec, 2.0);
        assert_eq!(l.page_latency.count, 4);
        assert!(close(l.page_latency.max_ms, 40.0));
        let zero = ListSummary::new(
            "n:1".into(),
            String::new(),
            1000,
            false,
            0,
            0,
            Duration::ZERO,
            &latency_histogram(),
            false,
            3,
            2,
        );
        assert_eq!((zero.keys_per_sec, zero.pages_per_sec), (0.0, 0.0));

        let mut s = Summary::new(shape(), None, &Tally::default(), Duration::ZERO);
        s.list = Some(l);
        let text = s.to_string();
        assert!(
            text.contains("list       3500 keys in 4 pages of <= 1000 in 2.00 s: 1750 keys/s, 2.0 pages/s, complete, 1 errors"),
            "{text}"
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["list"]["keys_per_sec"], 1750.0);
    }
}
