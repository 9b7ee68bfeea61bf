//! The checker's verdict: counts of what happened and the anomalies found.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::history::OpId;

/// The kinds of broken promises the checker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyKind {
    /// A read returned a version its causal past had already superseded
    /// (read-your-writes, monotonic reads/writes, writes-follow-reads).
    StaleRead,
    /// Observations order concurrent writes of a key inconsistently: a client
    /// saw a winner and its causal future went back to the loser.
    ArbitrationCycle,
    /// A read returned a value no client wrote (for that key) before it.
    PhantomRead,
    /// An expired write showed alive: to a session whose causal past had seen it
    /// expire (the key read "not found" with that ttl write as the latest write),
    /// or after healing, long after its ttl ran out whatever the clocks said.
    ResurrectedExpired,
    /// An acknowledged write is gone after healing without a write that could
    /// supersede it.
    LostWrite,
    /// Replicas of a shard hold different data after healing.
    Divergence,
    /// `key-count` disagrees with the keys a shard serves.
    KeyCountMismatch,
    /// After healing a key is not served by exactly the replicas of a shard.
    Placement,
    /// A request got no answer within 5 s (or the node could not be reached)
    /// although the node it was sent to was up and running.
    Unavailable,
    /// A 5xx other than the documented 503.
    ServerError,
    /// An answer that breaks the API contract (shape, fields, status).
    Protocol,
    /// A node process died or panicked on its own.
    NodeCrash,
    /// A view change was not accepted: no answer, or neither 200 nor 202 with
    /// the `incomplete-shards` whose hand-over still runs.
    ViewChangeFailed,
    /// The final state could not be read.
    FinalReadFailed,
    /// One value sent by two writes that are not attempts of one logical write,
    /// or a retry that is not the same request as its first attempt: reads could
    /// not name the write they saw (a workload or history fault).
    DuplicateWrite,
}

/// One anomaly, with the operations involved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub detail: String,
    pub ops: Vec<OpId>,
}

/// Everything the checker found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub operations: u64,
    /// `"GET 200"` -> count; `"PUT failed"` for answers that never came.
    pub outcomes: BTreeMap<String, u64>,
    /// Answers 400 "Unable to satisfy request" (allowed, counted).
    pub refused_400: u64,
    /// Answers 503 (allowed, counted).
    pub unavailable_503: u64,
    /// Client-side failures explained by a killed or paused target node.
    pub excused_failures: u64,
    pub max_latency_ms: f64,
    pub p99_latency_ms: f64,
    /// Fault kind -> times injected.
    pub faults: BTreeMap<String, u64>,
    /// View changes answered 202: accepted, with some shard's hand-over still
    /// running (it completes by itself).
    pub view_changes_in_progress: u64,
    /// Keys whose final state was compared across replicas.
    pub final_keys: u64,
    /// Reads (GETs, batch gets, listings) that found a ttl write of their causal
    /// past expired: each makes that write's value forbidden to their future.
    pub expired_seen: u64,
    /// Writes sent with an `Idempotency-Key` (first attempts).
    pub keyed_writes: u64,
    /// Keyed writes sent more than once, and their retries: all of them, those
    /// that got an HTTP answer, and those acknowledged (the write done).
    pub retried_writes: u64,
    pub retries: u64,
    pub retries_answered: u64,
    pub retries_acknowledged: u64,
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    pub(crate) fn add(&mut self, kind: AnomalyKind, detail: String, ops: Vec<OpId>) {
        self.anomalies.push(Anomaly { kind, detail, ops });
    }

    /// Number of anomalies of each kind.
    pub fn anomaly_counts(&self) -> BTreeMap<AnomalyKind, u64> {
        let mut m = BTreeMap::new();
        for a in &self.anomalies {
            *m.entry(a.kind).or_insert(0) += 1;
        }
        m
    }

    /// True when some anomaly of `kind` was found.
    pub fn has(&self, kind: AnomalyKind) -> bool {
        self.anomalies.iter().any(|a| a.kind == kind)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "operations: {}", self.operations)?;
        for (outcome, n) in &self.outcomes {
            writeln!(f, "  {outcome}: {n}")?;
        }
        writeln!(
            f,
            "400 (unable to satisfy): {}, 503: {}, failures on killed/paused nodes: {}",
            self.refused_400, self.unavailable_503, self.excused_failures
        )?;
        writeln!(
            f,
            "latency: p99 {:.1} ms, max {:.1} ms",
            self.p99_latency_ms, self.max_latency_ms
        )?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        writeln!(
            f,
            "faults injected: {}",
            if faults.is_empty() {
                "none".into()
            } else {
                faults.join(", ")
            }
        )?;
        writeln!(
            f,
            "view changes answered 202 (hand-over still running): {}",
            self.view_changes_in_progress
        )?;
        writeln!(f, "keys compared after healing: {}", self.final_keys)?;
        writeln!(
            f,
            "reads that saw a ttl write of their past expire: {}",
            self.expired_seen
        )?;
        writeln!(
            f,
            "keyed writes: {}, retried: {} ({} retries: {} answered, {} acknowledged)",
            self.keyed_writes,
            self.retried_writes,
            self.retries,
            self.retries_answered,
            self.retries_acknowledged
        )?;
        writeln!(f, "anomalies: {}", self.anomalies.len())?;
        for (kind, n) in self.anomaly_counts() {
            writeln!(f, "  {kind:?}: {n}")?;
        }
        Ok(())
    }
}
