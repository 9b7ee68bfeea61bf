//! The state after healing: every replica of a shard holds the same data,
//! each key lives on exactly the replicas of one shard of the final view,
//! and `key-count` agrees with what the shard serves.

use std::collections::{BTreeMap, BTreeSet};

use super::report::{AnomalyKind, Report};
use crate::history::{Event, FinalRead, KeyCount};

/// What the replicas agreed on for one key, or each distinct outcome if they
/// did not (`None`: not found).
pub struct KeyFinal {
    pub key: String,
    pub outcomes: Vec<Option<String>>,
}

/// Checks the final reads; returns each key's outcomes for the lost-write check.
pub fn check_convergence(events: &[Event], report: &mut Report) -> Vec<KeyFinal> {
    let mut reads: BTreeMap<&str, Vec<&FinalRead>> = BTreeMap::new();
    let mut counts: Vec<&KeyCount> = Vec::new();
    let mut view: Option<&Vec<(String, Vec<String>)>> = None;
    for event in events {
        match event {
            Event::Final(f) => reads.entry(f.key.as_str()).or_default().push(f),
            Event::KeyCount(c) => counts.push(c),
            Event::FinalView { shards } => view = Some(shards),
            _ => {}
        }
    }
    let mut finals = Vec::new();
    // shard id -> number of existing keys it serves
    let mut present: BTreeMap<String, u64> = BTreeMap::new();
    for (key, rs) in &reads {
        report.final_keys += 1;
        for r in rs {
            let failed = r.error.is_some() || !matches!(r.status, Some(200) | Some(404));
            if failed {
                report.add(
                    AnomalyKind::FinalReadFailed,
                    format!(
                        "final read of {key:?} on {} failed: status {:?} {}",
                        r.node,
                        r.status,
                        r.error.as_deref().unwrap_or("")
                    ),
                    vec![],
                );
            }
        }
        let local: Vec<&&FinalRead> = rs
            .iter()
            .filter(|r| r.local && matches!(r.status, Some(200) | Some(404)))
            .collect();
        if local.is_empty() {
            report.add(
                AnomalyKind::Placement,
                format!("after healing no node serves key {key:?} itself"),
                vec![],
            );
            continue;
        }
        let outcomes: BTreeSet<Option<String>> = local.iter().map(|r| r.value.clone()).collect();
        if outcomes.len() > 1 {
            let per_node: Vec<String> = local
                .iter()
                .map(|r| format!("{}={}", r.node, r.value.as_deref().unwrap_or("<not found>")))
                .collect();
            report.add(
                AnomalyKind::Divergence,
                format!(
                    "replicas disagree on key {key:?} after healing: {}",
                    per_node.join(", ")
                ),
                vec![],
            );
        }
        let holders: BTreeSet<&str> = local.iter().map(|r| r.node.as_str()).collect();
        if let Some(shards) = view {
            let owner = shards.iter().find(|(_, replicas)| {
                replicas.iter().map(String::as_str).collect::<BTreeSet<_>>() == holders
            });
            match owner {
                Some((id, _)) => {
                    if outcomes.iter().all(Option::is_some) {
                        *present.entry(id.clone()).or_insert(0) += 1;
                    }
                }
                None => report.add(
                    AnomalyKind::Placement,
                    format!(
                        "key {key:?} is served by {holders:?}, which are not the replicas of one shard of the final view {shards:?}"
                    ),
                    vec![],
                ),
            }
        }
        finals.push(KeyFinal {
            key: key.to_string(),
            outcomes: outcomes.into_iter().collect(),
        });
    }
    let mut by_shard: BTreeMap<&str, Vec<&KeyCount>> = BTreeMap::new();
    for c in &counts {
        by_shard.entry(c.shard.as_str()).or_default().push(c);
    }
    for (shard, cs) in by_shard {
        let distinct: BTreeSet<u64> = cs.iter().map(|c| c.count).collect();
        let expected = view.map(|_| present.get(shard).copied().unwrap_or(0));
        let serves = expected
            .map(|e| format!(" (the shard serves {e} existing keys)"))
            .unwrap_or_default();
        if distinct.len() > 1 {
            let per_node: Vec<String> = cs
                .iter()
                .map(|c| format!("{}={}", c.node, c.count))
                .collect();
            report.add(
                AnomalyKind::Divergence,
                format!(
                    "replicas of shard {shard} report different key counts: {}{serves}",
                    per_node.join(", ")
                ),
                vec![],
            );
        } else if let Some(expected) = expected {
            let got = *distinct.iter().next().expect("non-empty");
            if got != expected {
                report.add(
                    AnomalyKind::KeyCountMismatch,
                    format!(
                        "shard {shard} reports key-count {got} but serves {expected} existing keys"
                    ),
                    vec![],
                );
            }
        }
    }
    finals
}
