//! View change: installing a newer view, handing keys to their new owners, and
//! coordinating a change requested by an operator.
//!
//! Protocol (the receiving node coordinates):
//! 1. It first learns the newest view any member has (so a change is built on the
//!    newest one, never raced from behind), then builds the new view with the next
//!    epoch and sends `ApplyView` to every node of the old and the new view (itself
//!    included).
//! 2. Each node installs the view if it ranks higher than its own (epoch, then a
//!    fingerprint: racing changes resolve to the same winner everywhere), then hands
//!    every key it holds but no longer owns to all replicas of the key's new shard
//!    (`Migrate`, in messages bounded by bytes as well as by count, each with a timeout
//!    that grows with its size), and drops a key only once a new owner has it, and
//!    only while the view it handed the key over for is still in force (a newer view
//!    that overtakes the hand-over may make it an owner again; see
//!    `committer::removal_holds`). The new owner re-dots what it receives as its own
//!    write, so normal replication spreads it to its peers. A node that first hears of
//!    a view in a hand-over adopts it (and hands over) as if told by its coordinator.
//! 3. The coordinator answers with each shard's key count once all reachable nodes
//!    have finished.
//!
//! Writes are never lost in between: a write reaching a node that no longer owns the
//! key is forwarded to the new owners; a write accepted by an old owner before it
//! switched is in its store when it hands over; replication from a peer still in the
//! old view is refused (`WrongEpoch`), and that peer hands its own keys over when it
//! switches. A node that was down learns the view from its peers when it returns
//! (replication replies carry it) and hands over then.

use crate::causal::{ShardNo, Version};
use crate::node::committer::Job;
use crate::node::state::{split_by_budget, weight, Budget};
use crate::node::Node;
use crate::placement::View;
use crate::replication::sized_timeout;
use crate::transport::{Rpc, RpcReply};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Versions grouped by the shard that now owns them.
type ByShard = BTreeMap<ShardNo, Vec<(String, Version)>>;

/// Most in one hand-over message (but at least one version, whatever its size).
const MIGRATE_CHUNK: Budget = Budget {
    versions: 4000,
    bytes: 8 * 1024 * 1024,
};

#[derive(Debug, thiserror::Error)]
pub enum ViewChangeError {
    #[error("{0}")]
    Invalid(String),
    #[error("a concurrent view change (epoch {0}) won; this one was not applied")]
    Superseded(u64),
}

/// One shard of the view-change answer.
#[derive(Clone, Debug)]
pub struct ShardSummary {
    pub id: ShardNo,
    pub key_count: Option<u64>,
    pub replicas: Vec<String>,
    /// Every replica answered in the new view with nothing more to receive from old
    /// owners (see [`incomplete_shards`]).
    pub complete: bool,
}

/// How long a view change's coordinator keeps asking whether shards are complete
/// before it answers 202 (see [`incomplete_shards`]).
pub const SETTLE_PATIENCE: Duration = Duration::from_secs(5);

/// The shards of `view` whose hand-over is not known to be complete, from what each
/// node said about itself: a replica that did not answer, is in another view, or
/// still waits for old owners to hand keys over. They complete later, on their own.
pub fn incomplete_shards(
    view: &View,
    reports: &[(String, Option<crate::status::NodeStatus>)],
) -> Vec<ShardNo> {
    (1..=view.shard_count() as ShardNo)
        .filter(|&id| {
            view.replicas(id).iter().any(|r| {
                let report = reports
                    .iter()
                    .find(|(n, _)| n == r)
                    .and_then(|(_, s)| s.as_ref());
                !report.is_some_and(|s| s.epoch == view.epoch && s.waiting_for.is_empty())
            })
        })
        .collect()
}

/// Checks an operator's view: addresses, duplicates, replication factor.
pub fn validate_view(nodes: &[String], repl_factor: usize) -> Result<(), ViewChangeError> {
    if nodes.is_empty() {
        return Err(ViewChangeError::Invalid("view is empty".into()));
    }
    if repl_factor == 0 {
        return Err(ViewChangeError::Invalid(
            "repl-factor must be at least 1".into(),
        ));
    }
    if !nodes.len().is_multiple_of(repl_factor) {
        return Err(ViewChangeError::Invalid(format!(
            "view has {} nodes, not a multiple of repl-factor {repl_factor}",
            nodes.len()
        )));
    }
    let mut seen = HashSet::new();
    for n in nodes {
        if n.parse::<SocketAddr>().is_err() {
            return Err(ViewChangeError::Invalid(format!(
                "'{n}' is not an ip:port address"
            )));
        }
        if !seen.insert(n) {
            return Err(ViewChangeError::Invalid(format!(
                "'{n}' appears twice in the view"
            )));
        }
    }
    Ok(())
}

impl Node {
    /// Installs `view` if it ranks higher than the current one (durably, in commit
    /// order). Returns whether it was installed.
    pub(crate) async fn install_view(&self, view: View) -> bool {
        let installed = self
            .committer
            .submit(|reply| Job::SetView { view, reply })
            .await
            .unwrap_or(false);
        if installed {
            let v = self.view();
            tracing::info!(epoch = v.epoch, nodes = ?v.nodes, repl_factor = v.repl_factor, "installed view");
            self.metrics.view_epoch.set(v.epoch as i64);
            self.view_tx.send_replace(v);
        }
        installed
    }

    /// Installs `view` if newer, then hands over what this node no longer owns (waiting
    /// a bounded time for that). Returns the view in force afterwards.
    pub async fn apply_view(self: &Arc<Self>, view: View) -> Arc<View> {
        self.install_view(view).await;
        let me = self.clone();
        let handover = tokio::spawn(async move { me.migrate_out().await });
        self.tasks.lock().push(handover.abort_handle());
        let _ = tokio::time::timeout(self.cfg.timeouts.apply_view, handover).await;
        self.view()
    }

    /// Learns the view of `peer` (which claims a newer epoch) and adopts it if newer.
    pub(crate) async fn refresh_view_from(self: &Arc<Self>, peer: &str) {
        let msg = self.envelope(Rpc::GetView);
        if let Ok(RpcReply::View { view }) =
            self.transport.call(peer, msg, self.cfg.timeouts.sync).await
        {
            if view.rank() > self.view().rank() {
                self.adopt_view(view).await;
            }
        }
    }

    /// Installs a newer view learned from a peer and starts the hand-over in the background.
    pub(crate) async fn adopt_view(self: &Arc<Self>, view: View) {
        if self.install_view(view).await {
            let me = self.clone();
            let h = tokio::spawn(async move { me.migrate_out().await });
            self.tasks.lock().push(h.abort_handle());
        }
    }

    /// Hands every key this node holds but does not own to its new owners, until none
    /// is left. Runs one pass at a time.
    pub(crate) async fn migrate_out(self: &Arc<Self>) {
        let _guard = self.migrate_lock.lock().await;
        let mut backoff = Duration::from_millis(100);
        loop {
            let (view, groups) = self.foreign_keys();
            if groups.is_empty() {
                self.announce_handed_over(&view);
                return;
            }
            let mut progress = false;
            for (shard, items) in groups {
                let replicas = view.replicas(shard).to_vec();
                for chunk in split_by_budget(&items, MIGRATE_CHUNK) {
                    let accepted = self.hand_over(&view, &replicas, chunk).await;
                    if accepted.is_empty() {
                        continue;
                    }
                    let n = accepted.len();
                    // Skipped if a newer view came meanwhile: the next pass looks at
                    // these keys again in that view.
                    let removed = self
                        .committer
                        .submit(|reply| Job::Remove {
                            keys: accepted,
                            epoch: view.epoch,
                            reply,
                        })
                        .await;
                    if let Ok(r) = removed {
                        self.metrics.migrated_out.inc_by(r as u64);
                    }
                    progress |= n > 0;
                }
            }
            if !progress {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }

    /// Asks every member of the current view for its view (in parallel, bounded) and
    /// adopts the newest if it ranks above ours.
    async fn learn_newest_view(self: &Arc<Self>) {
        let mine = self.view();
        let mut asks = tokio::task::JoinSet::new();
        for n in mine.nodes.iter().filter(|n| **n != self.cfg.address) {
            let msg = self.envelope(Rpc::GetView);
            asks.spawn(self.transport.call(n, msg, self.cfg.timeouts.proxy_attempt));
        }
        let mut newest: Option<View> = None;
        while let Some(r) = asks.join_next().await {
            if let Ok(Ok(RpcReply::View { view })) = r {
                if view.rank() > newest.as_ref().map_or(mine.rank(), View::rank) {
                    newest = Some(view);
                }
            }
        }
        if let Some(v) = newest {
            tracing::info!(epoch = v.epoch, "learned a newer view before coordinating");
            self.adopt_view(v).await;
        }
    }

    /// Tells every member of `view` (best effort, in the background) that this node
    /// holds nothing more to hand over, so they may collect tombstones again (they also
    /// ask, with `Holds`, when this message is lost).
    fn announce_handed_over(&self, view: &View) {
        for n in view.nodes.iter().filter(|n| **n != self.cfg.address) {
            let msg = self.envelope(Rpc::HandedOver { epoch: view.epoch });
            tokio::spawn(self.transport.call(n, msg, self.cfg.timeouts.sync));
        }
    }

    /// Keys held here that the current view places elsewhere, grouped by new shard.
    fn foreign_keys(&self) -> (Arc<View>, ByShard) {
        let st = self.state.read();
        (st.view.clone(), causeway_core::replica::foreign_keys(&st))
    }

    /// Sends one chunk to every replica of its new shard; returns the keys (with the
    /// version ids sent) that at least one replica accepted.
    async fn hand_over(
        &self,
        view: &View,
        replicas: &[String],
        chunk: &[(String, Version)],
    ) -> Vec<(String, crate::causal::WriteId)> {
        let bytes = chunk.iter().map(|(k, v)| weight(k, v)).sum();
        let timeout = sized_timeout(self.cfg.timeouts.migrate, bytes);
        let mut tasks = tokio::task::JoinSet::new();
        for r in replicas {
            let msg = self.envelope(Rpc::Migrate {
                view: view.clone(),
                versions: chunk.to_vec(),
                budget_ms: timeout.as_millis() as u64,
                sent_ms: crate::transit::mono_ms(),
                sender: self.process_id(),
            });
            tasks.spawn(self.transport.call(r, msg, timeout));
        }
        let mut accepted_by_any: HashSet<String> = HashSet::new();
        while let Some(r) = tasks.join_next().await {
            if let Ok(Ok(RpcReply::Migrated { refused })) = r {
                let refused: HashSet<String> = refused.into_iter().collect();
                for (k, _) in chunk {
                    if !refused.contains(k) {
                        accepted_by_any.insert(k.clone());
                    }
                }
            }
        }
        chunk
            .iter()
            .filter(|(k, _)| accepted_by_any.contains(k))
            .map(|(k, v)| (k.clone(), v.id))
            .collect()
    }

    /// Coordinates an operator's view change (see the module docs).
    pub async fn view_change(
        self: &Arc<Self>,
        nodes: Vec<String>,
        repl_factor: usize,
    ) -> Result<Vec<ShardSummary>, ViewChangeError> {
        validate_view(&nodes, repl_factor)?;
        // A coordinator that missed a change would propose a successor of a stale view;
        // learn the newest view any member has first, so a completed change is built on,
        // never raced from behind.
        self.learn_newest_view().await;
        let current = self.view();
        let view = current.successor(nodes, repl_factor);
        let mut targets: Vec<String> = Vec::new();
        for n in current.nodes.iter().chain(view.nodes.iter()) {
            if *n != self.cfg.address && !targets.contains(n) {
                targets.push(n.clone());
            }
        }
        tracing::info!(epoch = view.epoch, nodes = ?view.nodes, repl_factor, "coordinating view change");
        let mut tasks = tokio::task::JoinSet::new();
        for t in targets {
            let msg = self.envelope(Rpc::ApplyView { view: view.clone() });
            let fut = self.transport.call(
                &t,
                msg,
                self.cfg.timeouts.apply_view + Duration::from_secs(1),
            );
            tasks.spawn(async move { (t, fut.await) });
        }
        let local = self.apply_view(view.clone()).await;
        let mut winner = local;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok((_, Ok(RpcReply::View { view: v }))) => {
                    if v.rank() > winner.rank() {
                        winner = Arc::new(v);
                    }
                }
                Ok((t, other)) => {
                    tracing::warn!(node = %t, ?other, "node did not confirm the view change")
                }
                Err(e) => tracing::warn!(error = %e, "view change task failed"),
            }
        }
        if winner.rank() != view.rank() {
            if winner.rank() > self.view().rank() {
                self.adopt_view((*winner).clone()).await;
            }
            return Err(ViewChangeError::Superseded(winner.epoch));
        }
        // Every key has reached at least one new owner; now let each shard's replicas
        // bring each other up to date, so the answer describes a finished change.
        let mut settling = tokio::task::JoinSet::new();
        for n in view.nodes.iter().filter(|n| **n != self.cfg.address) {
            let msg = self.envelope(Rpc::Settle);
            settling.spawn(self.transport.call(
                n,
                msg,
                self.cfg.timeouts.settle + Duration::from_secs(1),
            ));
        }
        if view.contains(&self.cfg.address) {
            self.settle(self.cfg.timeouts.settle).await;
        }
        while settling.join_next().await.is_some() {}
        // Old owners' "handed over" messages (and replicas' checks) may still be on
        // their way: look again for a few seconds before calling a shard incomplete.
        let patience = tokio::time::Instant::now() + SETTLE_PATIENCE;
        let incomplete = loop {
            let reports = self.node_reports(&view.nodes).await;
            let incomplete = incomplete_shards(&view, &reports);
            if incomplete.is_empty() || tokio::time::Instant::now() >= patience {
                break incomplete;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let mut shards = Vec::new();
        for id in 1..=view.shard_count() as ShardNo {
            shards.push(ShardSummary {
                id,
                key_count: self.exact_shard_count(&view, id).await,
                replicas: view.replicas(id).to_vec(),
                complete: !incomplete.contains(&id),
            });
        }
        Ok(shards)
    }

    /// Waits until every shard peer's clock covers this node's clock as it is now (so
    /// they hold everything this node holds), or `within` passes. Returns whether they do.
    pub(crate) async fn settle(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let (target, epoch, peers) = {
            let st = self.state.read();
            let peers: Vec<String> = match st.my_shard() {
                Some(s) => st
                    .view
                    .replicas(s)
                    .iter()
                    .filter(|p| **p != st.me)
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            (st.clock.clone(), st.view.epoch, peers)
        };
        loop {
            let done = {
                let clocks = self.peer_clocks.lock();
                peers.iter().all(|p| {
                    clocks
                        .get(p)
                        .is_some_and(|(e, c)| *e == epoch && c.covers(&target))
                })
            };
            if done {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The largest count reported by the shard's replicas (they all received every
    /// handed-over key; a lagging one can only report fewer).
    async fn exact_shard_count(&self, view: &View, shard: ShardNo) -> Option<u64> {
        let mut best = None;
        for r in view.replicas(shard) {
            let count = if *r == self.cfg.address {
                Some(self.key_count().1)
            } else {
                let msg = self.envelope(Rpc::KeyCount);
                match self
                    .transport
                    .call(r, msg, self.cfg.timeouts.proxy_attempt)
                    .await
                {
                    Ok(RpcReply::KeyCount { count, .. }) => Some(count),
                    _ => None,
                }
            };
            best = best.max(count);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_incomplete_until_every_replica_reports_its_hand_over_done() {
        let nodes: Vec<String> = (1..=4).map(|i| format!("10.0.0.{i}:1")).collect();
        let view = View::new(9, nodes.clone(), 2);
        let report = |n: &String, epoch, waiting: &[&str]| crate::status::NodeStatus {
            address: n.clone(),
            epoch,
            shard: None,
            keys: 0,
            ready: true,
            durable: true,
            version: String::new(),
            uptime_s: 0,
            requests: 0,
            client_errors: 0,
            server_errors: 0,
            replication_bytes: 0,
            behind: Vec::new(),
            handing_over: 0,
            waiting_for: waiting.iter().map(|s| s.to_string()).collect(),
        };
        let e = view.epoch;
        let mut reports: Vec<_> = nodes
            .iter()
            .map(|n| (n.clone(), Some(report(n, e, &[]))))
            .collect();
        assert!(incomplete_shards(&view, &reports).is_empty());
        // Shard 2's second replica still waits for an old owner.
        reports[3].1 = Some(report(&nodes[3], e, &["10.0.0.9:1"]));
        assert_eq!(incomplete_shards(&view, &reports), [2]);
        // Shard 1's first replica does not answer, or lags in an older view.
        reports[0].1 = None;
        assert_eq!(incomplete_shards(&view, &reports), [1, 2]);
        reports[0].1 = Some(report(&nodes[0], e - 1, &[]));
        assert_eq!(incomplete_shards(&view, &reports), [1, 2]);
    }

    #[test]
    fn rejects_bad_views() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(validate_view(&v(&["1.2.3.4:1", "1.2.3.5:1"]), 2).is_ok());
        assert!(validate_view(&v(&[]), 1).is_err());
        assert!(validate_view(&v(&["1.2.3.4:1"]), 0).is_err());
        assert!(validate_view(&v(&["1.2.3.4:1", "1.2.3.5:1", "1.2.3.6:1"]), 2).is_err());
        assert!(validate_view(&v(&["nope"]), 1).is_err());
        assert!(validate_view(&v(&["1.2.3.4:1", "1.2.3.4:1"]), 1).is_err());
    }
}
