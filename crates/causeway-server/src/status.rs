//! Cluster status: what each node reports about itself ([`NodeStatus`]), and the one
//! document of the whole cluster that any node serves at `GET /cluster`
//! ([`assemble`]), gathered from every node with a short timeout.
//!
//! Invariant: the document never waits on a node longer than the gathering timeout; a
//! node that does not answer in time is shown as down, never waited for. Assembly is
//! a pure function of the view and the reports, so it is tested without sockets.

use crate::causal::ShardNo;
use crate::placement::View;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

/// What one node says about itself (the answer to `Rpc::Status`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub address: String,
    /// The view this node is in (it may lag behind, or be ahead of, the asker's).
    pub epoch: u64,
    pub shard: Option<ShardNo>,
    /// Live keys this node holds.
    pub keys: u64,
    /// Serving: its committer is alive.
    pub ready: bool,
    pub durable: bool,
    pub version: String,
    pub uptime_s: u64,
    /// HTTP requests answered, and of those, 4xx and 5xx answers.
    pub requests: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    /// Bytes of replication messages sent to shard peers.
    pub replication_bytes: u64,
    /// For each shard peer, how far behind it is (versions, bytes not yet acknowledged,
    /// and for how many seconds it has been behind).
    pub behind: Vec<(String, u64, u64, u64)>,
    /// Keys this node still has to hand over to their new owners.
    pub handing_over: u64,
    /// Old owners this node still waits for to finish handing keys over to it.
    pub waiting_for: Vec<String>,
}

/// The cluster document (see the module docs). `reports` holds, for every node asked,
/// its report, or `None` when it did not answer in time. `asked_by` is the node that
/// gathered it.
pub fn assemble(view: &View, asked_by: &str, reports: &[(String, Option<NodeStatus>)]) -> Json {
    let report = |a: &str| -> Option<&NodeStatus> {
        reports
            .iter()
            .find(|(n, _)| n == a)
            .and_then(|(_, r)| r.as_ref())
    };
    let nodes: Vec<Json> = reports
        .iter()
        .map(|(address, r)| match r {
            Some(r) => json!({
                "address": address,
                "up": true,
                "ready": r.ready,
                "durable": r.durable,
                "version": r.version,
                "uptime-s": r.uptime_s,
                "epoch": r.epoch,
                "in-view": view.contains(address),
                "shard-id": r.shard.map(|s| s.to_string()),
                "key-count": r.keys,
                "requests": r.requests,
                "client-errors": r.client_errors,
                "server-errors": r.server_errors,
                "replication-bytes": r.replication_bytes,
                "handing-over": r.handing_over,
            }),
            None => json!({
                "address": address,
                "up": false,
                "in-view": view.contains(address),
            }),
        })
        .collect();
    let shards: Vec<Json> = (1..=view.shard_count() as ShardNo)
        .map(|s| {
            let replicas = view.replicas(s);
            let entries: Vec<Json> = replicas
                .iter()
                .map(|r| {
                    // How far this replica is behind, as its peers measure it.
                    let (mut versions, mut bytes, mut secs) = (0u64, 0u64, 0u64);
                    for peer in replicas.iter().filter(|p| *p != r) {
                        if let Some(pr) = report(peer) {
                            for (to, v, b, s) in &pr.behind {
                                if to == r {
                                    versions = versions.max(*v);
                                    bytes = bytes.max(*b);
                                    secs = secs.max(*s);
                                }
                            }
                        }
                    }
                    let me = report(r);
                    json!({
                        "address": r,
                        "up": me.is_some(),
                        "key-count": me.map(|m| m.keys),
                        "behind-versions": versions,
                        "behind-bytes": bytes,
                        "behind-seconds": secs,
                    })
                })
                .collect();
            // The shard's key count: the most any live replica holds (a replica that is
            // behind holds fewer).
            let count = replicas
                .iter()
                .filter_map(|r| report(r).map(|m| m.keys))
                .max();
            // The view change's progress here: old owners the replicas still wait
            // for to hand keys over.
            let mut waiting_for: Vec<&String> = replicas
                .iter()
                .filter_map(|r| report(r))
                .flat_map(|m| m.waiting_for.iter())
                .collect();
            waiting_for.sort();
            waiting_for.dedup();
            json!({
                "shard-id": s.to_string(),
                "key-count": count,
                "replicas": entries,
                "waiting-for": waiting_for,
                "hand-over-complete": waiting_for.is_empty(),
            })
        })
        .collect();
    let handing_over: Vec<&String> = reports
        .iter()
        .filter(|(_, r)| r.as_ref().is_some_and(|r| r.handing_over > 0))
        .map(|(a, _)| a)
        .collect();
    let waiting: Vec<Json> = reports
        .iter()
        .filter_map(|(a, r)| {
            let r = r.as_ref()?;
            (!r.waiting_for.is_empty()).then(|| json!({"node": a, "waiting-for": r.waiting_for}))
        })
        .collect();
    let lagging_views: Vec<&String> = reports
        .iter()
        .filter(|(_, r)| r.as_ref().is_some_and(|r| r.epoch != view.epoch))
        .map(|(a, _)| a)
        .collect();
    let settled = handing_over.is_empty() && waiting.is_empty() && lagging_views.is_empty();
    json!({
        "message": "Cluster status retrieved successfully",
        "asked": asked_by,
        "view": {
            "epoch": view.epoch,
            "generation": view.generation(),
            "repl-factor": view.repl_factor,
            "nodes": view.nodes,
        },
        "nodes": nodes,
        "shards": shards,
        "view-change": {
            "epoch": view.epoch,
            "complete": settled,
            "handing-over": handing_over,
            "waiting": waiting,
            "in-another-view": lagging_views,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(
        address: &str,
        shard: u32,
        keys: u64,
        behind: Vec<(String, u64, u64, u64)>,
    ) -> NodeStatus {
        NodeStatus {
            address: address.into(),
            epoch: 1,
            shard: Some(shard),
            keys,
            ready: true,
            durable: true,
            version: "0.1.0".into(),
            uptime_s: 5,
            requests: 10,
            client_errors: 1,
            server_errors: 0,
            replication_bytes: 0,
            behind,
            handing_over: 0,
            waiting_for: vec![],
        }
    }

    #[test]
    fn a_node_that_did_not_answer_is_down_and_lag_is_what_its_peers_measure() {
        let view = View::new(
            1,
            vec!["a:1".into(), "b:1".into(), "c:1".into(), "d:1".into()],
            2,
        );
        let reports = vec![
            (
                "a:1".to_string(),
                Some(report("a:1", 1, 10, vec![("b:1".into(), 4, 4096, 12)])),
            ),
            ("b:1".to_string(), Some(report("b:1", 1, 6, vec![]))),
            ("c:1".to_string(), Some(report("c:1", 2, 7, vec![]))),
            ("d:1".to_string(), None),
        ];
        let doc = assemble(&view, "a:1", &reports);
        assert_eq!(doc["nodes"][3]["up"], json!(false));
        assert_eq!(doc["nodes"][0]["up"], json!(true));
        assert_eq!(doc["shards"][0]["key-count"], json!(10));
        assert_eq!(doc["shards"][0]["replicas"][1]["behind-versions"], json!(4));
        assert_eq!(doc["shards"][0]["replicas"][1]["behind-bytes"], json!(4096));
        assert_eq!(doc["shards"][0]["replicas"][1]["behind-seconds"], json!(12));
        assert_eq!(doc["shards"][0]["replicas"][0]["behind-versions"], json!(0));
        assert_eq!(doc["shards"][1]["replicas"][1]["up"], json!(false));
        assert_eq!(doc["view-change"]["complete"], json!(true));
    }

    #[test]
    fn a_change_in_progress_is_shown() {
        let view = View::new(2, vec!["a:1".into(), "b:1".into()], 1);
        let mut a = report("a:1", 1, 3, vec![]);
        a.epoch = 2;
        a.waiting_for = vec!["c:1".into()];
        let mut b = report("b:1", 2, 3, vec![]);
        b.epoch = 1;
        b.handing_over = 12;
        let doc = assemble(
            &view,
            "a:1",
            &[("a:1".into(), Some(a)), ("b:1".into(), Some(b))],
        );
        let vc = &doc["view-change"];
        assert_eq!(vc["complete"], json!(false));
        assert_eq!(vc["handing-over"], json!(["b:1"]));
        assert_eq!(vc["in-another-view"], json!(["b:1"]));
        assert_eq!(vc["waiting"][0]["waiting-for"], json!(["c:1"]));
        assert_eq!(doc["shards"][0]["waiting-for"], json!(["c:1"]));
        assert_eq!(doc["shards"][0]["hand-over-complete"], json!(false));
        assert_eq!(doc["shards"][1]["hand-over-complete"], json!(true));
    }
}
