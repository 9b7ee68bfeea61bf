//! The state after healing: every replica of a shard holds the same data,
//! each key lives on exactly the replicas of one shard of the final view,
//! and `key-count` agrees with what the shard serves.
//!
//! Keys written with a ttl are judged with the clocks in mind: replicas whose
//! clocks disagree also disagree, for a while, on whether a ttl write has
//! expired, so one replica holding a ttl write while another finds the key
//! absent is no divergence; and such a key may or may not be counted by
//! `key-count` (expired keys stop being counted within a minute).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::report::{AnomalyKind, Report};
use crate::history::{Event, FinalRead, KeyCount};

/// What the replicas agreed on for one key, or each distinct outcome if they
/// did not (`None`: not found).
pub struct KeyFinal {
    pub key: String,
    pub outcomes: Vec<Option<String>>,
}

/// What was written with a ttl: keys, and values (by name).
#[derive(Debug, Default)]
pub struct TtlSets<'a> {
    pub keys: HashSet<&'a str>,
    pub values: HashSet<&'a str>,
}

/// Checks the final reads; returns each key's outcomes for the lost-write check.
pub fn check_convergence(
    events: &[Event],
    ttl: &TtlSets<'_>,
    report: &mut Report,
) -> Vec<KeyFinal> {
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
    // shard id -> keys written with a ttl that it may or may not count
    let mut uncertain: BTreeMap<String, u64> = BTreeMap::new();
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
        // A ttl write on some replicas, absent on the others: their clocks
        // disagree on its expiry.
        let expiring = outcomes.len() == 2
            && outcomes.contains(&None)
            && outcomes
                .iter()
                .flatten()
                .all(|v| ttl.values.contains(v.as_str()));
        if outcomes.len() > 1 && !expiring {
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
                    let live = outcomes.iter().all(|o| {
                        o.as_ref()
                            .is_some_and(|v| !ttl.values.contains(v.as_str()))
                    });
                    if live {
                        *present.entry(id.clone()).or_insert(0) += 1;
                    } else if ttl.keys.contains(key) {
                        *uncertain.entry(id.clone()).or_insert(0) += 1;
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
        let maybe = uncertain.get(shard).copied().unwrap_or(0);
        if let (Some(lo), true) = (expected, maybe > 0) {
            // Each ttl key may or may not be counted, on each replica alike.
            for c in &cs {
                if c.count < lo || c.count > lo + maybe {
                    report.add(
                        AnomalyKind::KeyCountMismatch,
                        format!(
                            "{} (shard {shard}) reports key-count {} but serves {lo} existing keys and {maybe} written with a ttl",
                            c.node, c.count
                        ),
                        vec![],
                    );
                }
            }
            continue;
        }
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
