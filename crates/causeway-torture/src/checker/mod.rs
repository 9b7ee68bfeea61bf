//! The history checker: from client-observed history only (black box), it
//! decides whether the store kept its promises. See `causal` for the
//! happens-before construction and the staleness rules, `convergence` for
//! the post-healing state, `answers` for availability and the API contract.

mod answers;
mod bitset;
mod causal;
mod convergence;
mod explain;
mod report;
mod timeline;

pub use answers::{check_answer, check_batch_results, CLIENT_TIMEOUT_MS};
pub use explain::{causal_chain, describe_chain, Link};
pub use report::{Anomaly, AnomalyKind, Report};
pub use timeline::{OpRecord, Timeline};

use std::collections::{HashMap, HashSet};

use crate::history::{Event, Fault};

/// What the checker must find in the history besides client operations.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// A history without final (post-healing) reads is an anomaly: a
    /// campaign always ends with them.
    pub require_final: bool,
}

/// Checks a whole history.
pub fn check(events: &[Event], options: CheckOptions) -> Report {
    let timeline = Timeline::build(events);
    let mut report = Report::default();
    count_faults(events, &mut report);
    answers::check_answers(&timeline, &mut report);
    let mut causal = causal::CausalChecker::new(&timeline);
    causal.run(events, &mut report);
    let finals = convergence::check_convergence(events, &ttl_sets(events), &mut report);
    if options.require_final && finals.is_empty() {
        report.add(
            AnomalyKind::FinalReadFailed,
            "the history holds no final state to compare".into(),
            vec![],
        );
    }
    for f in &finals {
        for outcome in &f.outcomes {
            causal.final_state(
                &f.key,
                outcome.as_deref(),
                f.outcomes.len() == 1,
                &mut report,
            );
        }
    }
    causal.check_arbitration(&mut report);
    report
}

/// Checks only the post-healing state (final reads and key counts): whether
/// the replicas have converged.
pub fn check_final_state(events: &[Event]) -> Report {
    check_final_state_with_ttl(events, &HashSet::new(), &HashSet::new())
}

/// [`check_final_state`] knowing which keys and values were written with a ttl
/// (those may be expired on some replicas and not yet on others).
pub fn check_final_state_with_ttl(
    events: &[Event],
    ttl_keys: &HashSet<String>,
    ttl_values: &HashSet<String>,
) -> Report {
    let mut report = Report::default();
    let ttl = convergence::TtlSets {
        keys: ttl_keys.iter().map(String::as_str).collect(),
        values: ttl_values.iter().map(String::as_str).collect(),
    };
    convergence::check_convergence(events, &ttl, &mut report);
    report
}

/// The keys and values the history's invocations wrote with a ttl.
fn ttl_sets(events: &[Event]) -> convergence::TtlSets<'_> {
    let mut sets = convergence::TtlSets::default();
    for event in events {
        let Event::Invoke(inv) = event else { continue };
        if let (Some(_), Some(v)) = (inv.ttl, &inv.value) {
            sets.keys.insert(inv.key.as_str());
            sets.values.insert(v.as_str());
        }
        for op in inv.ops.iter().filter(|o| o.ttl.is_some()) {
            sets.keys.insert(op.key.as_str());
            if let Some(v) = &op.value {
                sets.values.insert(v.as_str());
            }
        }
    }
    sets
}

/// Counts fault episodes by kind (a cut view change once, as
/// `cut-view-change`, not also as a partition and a view change), reports
/// crashes and view changes that were not accepted: 200, or 202 naming the
/// shards whose hand-over still runs.
fn count_faults(events: &[Event], report: &mut Report) {
    let mut cut_view_changes: HashSet<u32> = HashSet::new();
    // Per view change: its coordinator, and whether that node was killed or paused
    // (or exited) while the request ran: then its failure is expected.
    let mut coordinator: HashMap<u32, (String, bool)> = HashMap::new();
    for event in events {
        let Event::Fault(rec) = event else { continue };
        match &rec.fault {
            Fault::ViewChangeStart {
                id, node: Some(n), ..
            } => {
                coordinator.insert(*id, (n.clone(), false));
            }
            Fault::Kill { node } | Fault::Pause { node } | Fault::NodeExited { node, .. } => {
                for (n, down) in coordinator.values_mut() {
                    *down |= n == node;
                }
            }
            _ => {}
        }
        let name = match &rec.fault {
            Fault::PartitionStart {
                view_change: Some(id),
                ..
            } => {
                cut_view_changes.insert(*id);
                "cut-view-change"
            }
            Fault::PartitionStart { .. } => "partition",
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::ViewChangeStart { id, .. } if cut_view_changes.contains(id) => continue,
            Fault::ViewChangeStart { .. } => "view-change",
            Fault::Clock { .. } => "clock",
            Fault::NodeExited { node, status } => {
                report.add(
                    AnomalyKind::NodeCrash,
                    format!("node {node} exited on its own: {status}"),
                    vec![],
                );
                continue;
            }
            Fault::NodePanicked { node, line } => {
                report.add(
                    AnomalyKind::NodeCrash,
                    format!("node {node} panicked: {line}"),
                    vec![],
                );
                continue;
            }
            Fault::ViewChangeEnd {
                id,
                status,
                error,
                incomplete_shards,
                ms,
            } => {
                let coordinator_down = coordinator.remove(id).is_some_and(|(_, down)| down);
                match status {
                    Some(200) if incomplete_shards.is_empty() => {}
                    Some(202) if !incomplete_shards.is_empty() => {
                        report.view_changes_in_progress += 1;
                    }
                    // The campaign killed or paused the node it had asked.
                    None if coordinator_down => {}
                    _ => report.add(
                        AnomalyKind::ViewChangeFailed,
                        format!(
                            "view change {id} answered {status:?} {} after {ms:.0} ms",
                            error.as_deref().unwrap_or("")
                        ),
                        vec![],
                    ),
                }
                continue;
            }
            _ => continue,
        };
        *report.faults.entry(name.to_string()).or_insert(0) += 1;
    }
}
