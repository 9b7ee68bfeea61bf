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

/// The two operations the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Get,
    Put,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Put => "PUT",
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
    statuses: BTreeMap<(Op, u16), u64>,
    failures: BTreeMap<Failure, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            get_latency: new_histogram(),
            put_latency: new_histogram(),
            statuses: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
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
        };
        histogram.saturating_record(us);
        *self.statuses.entry((op, status)).or_default() += 1;
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
        for (k, n) in &other.statuses {
            *self.statuses.entry(*k).or_default() += n;
        }
        for (k, n) in &other.failures {
            *self.failures.entry(*k).or_default() += n;
        }
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
        let per_sec = |n: u64| {
            if elapsed_secs > 0.0 {
                n as f64 / elapsed_secs
            } else {
                0.0
            }
        };
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
        writeln!(
            f,
            "causeway bench: {} node(s), {} connections, {:.1} s, read ratio {:.2}, {} keys, {}-byte values",
            s.nodes.len(),
            s.concurrency,
            self.elapsed_secs,
            s.read_ratio,
            s.keys,
            s.value_size
        )?;
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
        write_counts(f, "responses", &self.responses)?;
        write_counts(f, "errors", &self.errors)?;
        writeln!(f, "  latency in ms:")?;
        write_latency(f, "all", &self.latency)?;
        if let Some(l) = &self.get_latency {
            write_latency(f, "GET", l)?;
        }
        if let Some(l) = &self.put_latency {
            write_latency(f, "PUT", l)?;
        }
        Ok(())
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
}
