//! View change: installing a newer view, handing keys to their new owners, and
//! coordinating a change requested by an operator.
//!
//! Protocol (the receiving node coordinates):
//! 1. It first learns the newest view any member has (so a change is built on the
//!    newest one, never raced from behind), then builds the new view with the next
//!    epoch and sends `ApplyView` to every node of the old and the new view (itself
//!    included).
//! 2. Each node installs the view if it wins over its own under the rule of
//!    [`causeway_core::views`] (a later generation; within one, a view known completed;
//!    then the epoch: racing changes resolve to the same winner everywhere, and a stale
//!    coordinator cannot undo a completed change), then hands
//!    every key it holds but no longer owns to all replicas of the key's new shard
//!    (`Migrate`, in messages bounded by bytes as well as by count, each with a timeout
//!    that grows with its size), and drops a key only once a new owner has it, and
//!    only while the view it handed the key over for is still in force (a newer view
//!    that overtakes the hand-over may make it an owner again; see
//!    `committer::removal_holds`). The new owner re-dots what it receives as its own
//!    write, so normal replication spreads it to its peers. A node that first hears of
//!    a view in a hand-over adopts it (and hands over) as if told by its coordinator.
//! 3. The coordinator sends the view again (every [`RESEND_EVERY`], in the background)
//!    to the nodes that did not answer, until each answers or a newer view is in force.
//!    It answers with each shard's key count once all reachable nodes have finished; if
//!    every shard is complete, the change is completed: it says so (`ViewCompleted`,
//!    again until each node answers), and nodes keep that with the view (on disk too)
//!    and answer `CompletedView` wherever they answer with their view. A node refuses a
//!    view that loses; its answer names the winner, which the sender adopts.
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
use causeway_core::views::{offer, Offer};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Versions grouped by the shard that now owns them.
type ByShard = BTreeMap<ShardNo, Vec<(String, Version)>>;

/// Most in one hand-over message (but at least one version, whatever its size).
pub(crate) const MIGRATE_CHUNK: Budget = Budget {
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

/// How often a view change's coordinator sends its view again to the nodes that did
/// not answer (see `Node::resend_view`).
pub const RESEND_EVERY: Duration = Duration::from_secs(1);

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
    /// Installs `view` if it wins over the current one under the rule of
    /// [`causeway_core::views`], knowing it `completed` or not (durably, in commit
    /// order); records a completion of the view in force. Returns whether `view` was
    /// installed.
    pub(crate) async fn install_view(&self, view: View, completed: bool) -> bool {
        let installed = self
            .committer
            .submit(|reply| Job::SetView {
                view,
                completed,
                reply,
            })
            .await
            .unwrap_or(false);
        if installed {
            let v = self.view();
            tracing::info!(epoch = v.epoch, nodes = ?v.nodes, repl_factor = v.repl_factor, completed, "installed view");
            self.metrics.view_epoch.set(v.epoch as i64);
            self.view_tx.send_replace(v);
        }
        installed
    }

    /// The view in force and whether this node knows its change completed.
    pub fn view_knowledge(&self) -> (Arc<View>, bool) {
        let st = self.state.read();
        (st.view.clone(), st.view_completed())
    }

    /// This node's answer to `GetView`, `ApplyView` and `ViewCompleted`: its view, with
    /// what it knows of its completion.
    pub(crate) fn view_reply(&self) -> RpcReply {
        let (view, completed) = self.view_knowledge();
        let view = (*view).clone();
        if completed {
            RpcReply::CompletedView { view }
        } else {
            RpcReply::View { view }
        }
    }

    /// Installs `view` if it wins, then hands over what this node no longer owns
    /// (waiting a bounded time for that). Returns the view in force afterwards.
    pub async fn apply_view(self: &Arc<Self>, view: View) -> Arc<View> {
        self.receive_view(view, false).await
    }

    /// [`Node::apply_view`], knowing whether the view's change `completed`. A view that
    /// loses is refused; the sender learns the winner from the answer ([`Node::view_reply`]).
    pub(crate) async fn receive_view(self: &Arc<Self>, view: View, completed: bool) -> Arc<View> {
        self.install_view(view, completed).await;
        let me = self.clone();
        let handover = tokio::spawn(async move { me.migrate_out().await });
        self.tasks.lock().push(handover.abort_handle());
        let _ = tokio::time::timeout(self.cfg.timeouts.apply_view, handover).await;
        self.view()
    }

    /// Learns the view of `peer` (which claims a newer epoch) and adopts it if it wins.
    pub(crate) async fn refresh_view_from(self: &Arc<Self>, peer: &str) {
        let msg = self.envelope(Rpc::GetView);
        let reply = self.transport.call(peer, msg, self.cfg.timeouts.sync).await;
        self.learn_from_reply(peer, reply).await;
    }

    /// Takes in the view a peer answered with (`View` or `CompletedView`), if any.
    /// Returns whether the answer carried a view.
    pub(crate) async fn learn_from_reply(
        self: &Arc<Self>,
        peer: &str,
        reply: Result<RpcReply, crate::transport::TransportError>,
    ) -> bool {
        match reply {
            Ok(RpcReply::View { view }) => {
                self.consider_view(peer, view, false).await;
                true
            }
            Ok(RpcReply::CompletedView { view }) => {
                self.consider_view(peer, view, true).await;
                true
            }
            _ => false,
        }
    }

    /// Considers the view a peer holds (whose completion it does not know): adopts it
    /// if it wins; tells the peer ours if it loses.
    pub(crate) async fn offer_view(self: &Arc<Self>, peer: &str, view: View) {
        self.consider_view(peer, view, false).await;
    }

    /// Considers the view `peer` holds, knowing it `completed` or not (see
    /// [`causeway_core::views::offer`]): adopts it (with a hand-over) if it wins,
    /// records its completion if it is ours, and tells the peer ours if it loses.
    async fn consider_view(self: &Arc<Self>, peer: &str, view: View, completed: bool) {
        let (current, current_completed) = self.view_knowledge();
        match offer(&current, current_completed, &view, completed) {
            Offer::Install => self.adopt_view(view, completed).await,
            Offer::Complete => {
                self.install_view(view, true).await;
            }
            Offer::Keep { tell: true } => self.tell_view(peer),
            Offer::Keep { tell: false } => {}
        }
    }

    /// Tells `peer` (in the background) the view in force, as a completed view if this
    /// node knows it completed; takes in the view the peer answers with.
    fn tell_view(self: &Arc<Self>, peer: &str) {
        let me = self.clone();
        let peer = peer.to_string();
        tokio::spawn(async move {
            let (view, completed) = me.view_knowledge();
            let view = (*view).clone();
            let rpc = if completed {
                Rpc::ViewCompleted { view }
            } else {
                Rpc::ApplyView { view }
            };
            let wait = me.cfg.timeouts.apply_view + Duration::from_secs(1);
            let reply = me.transport.call(&peer, me.envelope(rpc), wait).await;
            // The peer answers with the view it keeps: the winner, unless it is ours.
            if let Ok(RpcReply::View { view } | RpcReply::CompletedView { view }) = &reply {
                if *view != *me.view() {
                    me.learn_from_reply(&peer, reply).await;
                }
            }
        });
    }

    /// Installs a view learned from a peer if it wins and starts the hand-over in the
    /// background.
    pub(crate) async fn adopt_view(self: &Arc<Self>, view: View, completed: bool) {
        if self.install_view(view, completed).await {
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
                if let Some(until) = self.quiet_until.filter(|_| self.in_quiet_period()) {
                    // Restarted mid-hand-over: a batch of the previous process may
                    // still be applied until then (and a new view may bring more keys).
                    tokio::time::sleep_until(until.into()).await;
                    continue;
                }
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
    /// adopts each that wins over ours (see [`causeway_core::views`]).
    async fn learn_newest_view(self: &Arc<Self>) {
        let mine = self.view();
        let mut asks = tokio::task::JoinSet::new();
        for n in mine.nodes.iter().filter(|n| **n != self.cfg.address) {
            let msg = self.envelope(Rpc::GetView);
            let call = self.transport.call(n, msg, self.cfg.timeouts.proxy_attempt);
            let n = n.clone();
            asks.spawn(async move { (n, call.await) });
        }
        while let Some(r) = asks.join_next().await {
            if let Ok((n, reply)) = r {
                self.learn_from_reply(&n, reply).await;
            }
        }
        if self.view().rank() != mine.rank() {
            tracing::info!(
                epoch = self.view().epoch,
                "learned a newer view before coordinating"
            );
        }
    }

    /// Sends `view` to each of `targets` that has not answered yet, again and again in
    /// the background (every [`RESEND_EVERY`], the first time at once unless
    /// `wait_first`; one call per target at a time), until each answers, this node
    /// leaves `view`, or [`Timeouts::handover_grace`] passes (the patience given to old
    /// owners that never answer: a node removed while dead); as `ViewCompleted` when
    /// this node knows the change completed. Each answer's view is taken in (a refusal
    /// names the winner).
    ///
    /// [`Timeouts::handover_grace`]: crate::node::Timeouts::handover_grace
    fn resend_view(self: &Arc<Self>, view: View, mut targets: Vec<String>, wait_first: bool) {
        if targets.is_empty() {
            return;
        }
        let me = self.clone();
        let h = tokio::spawn(async move {
            let give_up = tokio::time::Instant::now() + me.cfg.timeouts.handover_grace;
            let mut first = true;
            while !targets.is_empty() && tokio::time::Instant::now() < give_up {
                if wait_first || !first {
                    tokio::time::sleep(RESEND_EVERY).await;
                }
                first = false;
                let (current, completed) = me.view_knowledge();
                if *current != view {
                    return;
                }
                let mut tasks = tokio::task::JoinSet::new();
                for t in targets.drain(..) {
                    let view = view.clone();
                    let rpc = if completed {
                        Rpc::ViewCompleted { view }
                    } else {
                        Rpc::ApplyView { view }
                    };
                    let call = me.transport.call(
                        &t,
                        me.envelope(rpc),
                        me.cfg.timeouts.apply_view + Duration::from_secs(1),
                    );
                    tasks.spawn(async move { (t, call.await) });
                }
                while let Some(r) = tasks.join_next().await {
                    let Ok((t, reply)) = r else { continue };
                    if !me.learn_from_reply(&t, reply).await {
                        targets.push(t);
                    }
                }
            }
        });
        self.tasks.lock().push(h.abort_handle());
    }

    /// Tells every member of `view` (best effort, in the background) that this node
    /// holds nothing more to hand over, so they may collect tombstones again (they also
    /// ask, with `Holds`, when this message is lost).
    fn announce_handed_over(&self, view: &View) {
        let report = {
            let st = self.state.read();
            if st.view.epoch == view.epoch {
                causeway_core::replica::hand_over_report(&st)
            } else {
                Default::default()
            }
        };
        for n in view.nodes.iter().filter(|n| **n != self.cfg.address) {
            // (The older message when there is nothing to pass on: a node of an
            // earlier version reads it.)
            let rpc = if report == Default::default() {
                Rpc::HandedOver { epoch: view.epoch }
            } else {
                Rpc::HandedOverWith {
                    epoch: view.epoch,
                    report: report.clone(),
                }
            };
            let msg = self.envelope(rpc);
            tokio::spawn(self.transport.call(n, msg, self.cfg.timeouts.sync));
        }
    }

    /// Whether this node restarted in the middle of a hand-over recently enough that a
    /// batch its previous process sent may still be applied (see `quiet_until`).
    pub(crate) fn in_quiet_period(&self) -> bool {
        self.quiet_until
            .is_some_and(|t| std::time::Instant::now() < t)
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
        for t in targets.clone() {
            let msg = self.envelope(Rpc::ApplyView { view: view.clone() });
            let fut = self.transport.call(
                &t,
                msg,
                self.cfg.timeouts.apply_view + Duration::from_secs(1),
            );
            tasks.spawn(async move { (t, fut.await) });
        }
        self.apply_view(view.clone()).await;
        // Each answer names the view its node keeps: ours, or one that wins over it (a
        // racing change, or a completed one this coordinator did not know of), which
        // this node then adopts too.
        let mut unanswered = Vec::new();
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok((t, reply)) => {
                    if !matches!(
                        reply,
                        Ok(RpcReply::View { .. } | RpcReply::CompletedView { .. })
                    ) {
                        tracing::warn!(node = %t, ?reply, "node did not confirm the view change");
                    }
                    if !self.learn_from_reply(&t, reply).await {
                        unanswered.push(t);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "view change task failed"),
            }
        }
        if *self.view() != view {
            return Err(ViewChangeError::Superseded(self.view().epoch));
        }
        // Nodes that did not answer (cut off, or their answer was lost) are told again
        // until they answer: nothing else may reach them soon.
        self.resend_view(view.clone(), unanswered, true);
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
        if incomplete.is_empty() && *self.view() == view {
            self.complete_change(view.clone(), targets).await;
        } else if *self.view() == view {
            // Answered 202: the shards complete on their own; watch them, and complete
            // the change once they have.
            self.complete_later(view.clone(), targets);
        }
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

    /// Every shard of `view` is complete: the change to it is final for its generation.
    /// Says so to every node it concerned (`targets`), until each has heard.
    async fn complete_change(self: &Arc<Self>, view: View, targets: Vec<String>) {
        self.install_view(view.clone(), true).await;
        tracing::info!(epoch = view.epoch, "view change completed");
        self.resend_view(view, targets, false);
    }

    /// After a change answered 202: checks every [`RESEND_EVERY`] (in the background)
    /// whether every shard of `view` is complete now, and completes the change then
    /// ([`Self::complete_change`]); stops when `view` is no longer in force or
    /// [`Timeouts::handover_grace`] passes.
    ///
    /// [`Timeouts::handover_grace`]: crate::node::Timeouts::handover_grace
    fn complete_later(self: &Arc<Self>, view: View, targets: Vec<String>) {
        let me = self.clone();
        let h = tokio::spawn(async move {
            let give_up = tokio::time::Instant::now() + me.cfg.timeouts.handover_grace;
            while tokio::time::Instant::now() < give_up {
                tokio::time::sleep(RESEND_EVERY).await;
                if *me.view() != view {
                    return;
                }
                let reports = me.node_reports(&view.nodes).await;
                if incomplete_shards(&view, &reports).is_empty() {
                    if *me.view() == view {
                        me.complete_change(view, targets).await;
                    }
                    return;
                }
            }
        });
        self.tasks.lock().push(h.abort_handle());
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
