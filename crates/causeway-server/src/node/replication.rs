//! Replication within a shard: push and anti-entropy in one loop per shard peer.
//!
//! Each node runs one loop per peer of its shard. The loop keeps `known`, the peer's
//! clock as the peer last reported it, and sends the peer every version whose dot that
//! clock does not cover (the dot index makes this a range scan), together with a
//! *claim*: our clock, taken atomically with the versions. Because every write we
//! cover is in the batch or superseded by a version in the batch or one the peer
//! already covers, the peer may join our clock into its own once it has stored the
//! batch, provided its clock still covers `known` (a peer restarted with an empty
//! disk does not, and refuses the claim; its reply then resets `known`).
//!
//! The loop wakes on every local commit (so new writes go out at once, batched with
//! whatever accumulated while the previous message was in flight, over one pooled
//! connection) and on a heartbeat (so a lost message, a partition that healed, or a
//! wiped peer is repaired). Every message is bounded by bytes as well as by count,
//! and its timeout grows with its size. When the difference is too large for one
//! message it falls back to a full transfer in key order, which resumes after the
//! last key the peer stored when a message fails, and claims at the end the clock
//! taken at the start. A full transfer goes run by run, each with our clock read with
//! it, so the peer also drops the live values it holds in the run that we saw deleted
//! (`Changes::sync_run`); a peer whose reply shows it lost writes it had acknowledged
//! (its disk went back in time: a restored backup, a power loss under `os`) gets one,
//! since it may hold values whose tombstones are collected. A tombstone is collected
//! once every shard peer's durable clock covers it (under `os` durability a peer
//! reports the clock of what it has synced as well, since a power loss would take the
//! rest: see `storage`).
//!
//! The clock each peer last acknowledged is also kept on disk ([`Acked`], written at
//! most every [`ACKED_PERSIST_EVERY`] while it changes): after a restart, a loop's first
//! contact with its peer compares the peer's clock with it, so a peer whose disk went
//! back in time is noticed even when both nodes restarted (a rack's power cut, say).
//!
//! Each loop also tracks how far its peer is behind (versions and bytes it has not
//! acknowledged, from the delta against `known`, or during a full transfer from a walk
//! of what is left, at most once a second) in the `replication_behind_*` metrics, and
//! warns in the log, at most every 10 s, while the peer stays behind for over 5 s.

use crate::causal::VClock;
use crate::metrics::{OutcomeLabels, PeerLabels};
use crate::node::committer::{hlc_now, Job, HLC_SHIFT};
use crate::node::state::{weight, Budget};
use crate::node::Node;
use crate::storage::PeerClocks;
use crate::transport::{Rpc, RpcReply, TransportError};
use causeway_core::changes::KeyRun;
use causeway_core::replica::HandOverReport;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most in one incremental message; a larger difference goes as a full transfer.
const DELTA: Budget = Budget {
    versions: 20_000,
    bytes: 32 * 1024 * 1024,
};
/// Most in one message of a full transfer.
const FULL_CHUNK: Budget = Budget {
    versions: 5_000,
    bytes: 8 * 1024 * 1024,
};
/// How long one message between nodes (replication or hand-over) may take beyond its
/// base timeout, per MiB it carries (so its deadline follows its size: 10 MiB/s at the
/// slowest).
const PER_MIB: Duration = Duration::from_millis(100);
/// A peer behind for longer than this is reported in the log ...
const BEHIND_WARN_AFTER: Duration = Duration::from_secs(5);
/// ... at most this often.
const BEHIND_WARN_EVERY: Duration = Duration::from_secs(10);
/// How often a backlog larger than one message is walked to measure it.
const BEHIND_WALK_EVERY: Duration = Duration::from_secs(1);
/// How often the clocks peers acknowledged are written to disk while they change.
pub const ACKED_PERSIST_EVERY: Duration = Duration::from_millis(500);

/// The clock each shard peer last acknowledged to our replication loops, with the view
/// epoch it was acknowledged in, as loaded from disk and updated since; `dirty` while
/// the disk holds an older copy. Invariant: a clock here was acknowledged by its peer
/// (so a later reply of that peer, in the same view, that does not cover it means the
/// peer lost writes: see `sync_once`).
#[derive(Debug, Default)]
pub struct Acked {
    clocks: PeerClocks,
    dirty: bool,
}

impl Acked {
    pub fn loaded(clocks: PeerClocks) -> Acked {
        Acked {
            clocks,
            dirty: false,
        }
    }

    /// What `peer` last acknowledged in view `epoch`, if known.
    fn floor(&self, peer: &str, epoch: u64) -> Option<VClock> {
        match self.clocks.get(peer) {
            Some((e, c)) if *e == epoch => Some(c.clone()),
            _ => None,
        }
    }

    fn record(&mut self, peer: &str, epoch: u64, clock: &VClock) {
        if matches!(self.clocks.get(peer), Some((e, c)) if *e == epoch && c == clock) {
            return;
        }
        self.clocks.insert(peer.to_string(), (epoch, clock.clone()));
        self.dirty = true;
    }

    /// The clocks to write now, if they changed: those of view `epoch` (others can no
    /// longer be compared with anything).
    fn take_dirty(&mut self, epoch: u64) -> Option<PeerClocks> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        self.clocks.retain(|_, (e, _)| *e == epoch);
        Some(self.clocks.clone())
    }
}

/// Starts the replication supervisor and the tombstone collector; they run until
/// [`Node::stop`].
pub fn spawn(node: Arc<Node>) {
    let n = node.clone();
    let a = tokio::spawn(async move { supervise(n).await });
    let n = node.clone();
    let b = tokio::spawn(async move { collect_tombstones(n).await });
    let n = node.clone();
    let c = tokio::spawn(async move { persist_peer_records(n).await });
    node.tasks
        .lock()
        .extend([a.abort_handle(), b.abort_handle(), c.abort_handle()]);
}

/// Writes what this node keeps of other nodes to disk (the clocks peers acknowledged,
/// the views nodes were seen in: `node::recall`), every [`ACKED_PERSIST_EVERY`] while
/// they change (a failed write is tried again next time).
async fn persist_peer_records(node: Arc<Node>) {
    loop {
        tokio::time::sleep(ACKED_PERSIST_EVERY).await;
        let epoch = node.view().epoch;
        let clocks = node.acked.lock().take_dirty(epoch);
        let seen = node.noted.lock().take_dirty();
        if clocks.is_none() && seen.is_none() {
            continue;
        }
        let (had_clocks, had_seen) = (clocks.is_some(), seen.is_some());
        let by = tokio::time::Instant::now() + node.cfg.timeouts.sync;
        let written = node
            .committer
            .submit_by(Some(by), |reply| Job::PeerRecords {
                clocks,
                seen,
                reply,
            })
            .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "recording what this node keeps of its peers failed");
            if had_clocks {
                node.acked.lock().dirty = true;
            }
            if had_seen {
                node.noted.lock().mark_dirty();
            }
        }
    }
}

/// Aborts the task when dropped, so a stopped supervisor takes its loops with it.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps one loop per current shard peer; restarts them all when the view changes.
async fn supervise(node: Arc<Node>) {
    let mut views = node.view_tx.subscribe();
    let mut loops: HashMap<String, Abort> = HashMap::new();
    loop {
        let view = views.borrow_and_update().clone();
        loops.clear();
        node.peer_clocks.lock().clear();
        node.metrics.behind_versions.clear();
        node.metrics.behind_bytes.clear();
        node.metrics.behind_seconds.clear();
        let epoch = view.epoch;
        if let Some(shard) = view.shard_of_node(node.address()) {
            for peer in view.replicas(shard) {
                if peer != node.address() {
                    let (n, p) = (node.clone(), peer.clone());
                    loops.insert(
                        peer.clone(),
                        Abort(tokio::spawn(async move { peer_loop(n, p, epoch).await })),
                    );
                }
            }
        } else if let Some(first) = view.nodes.first() {
            // Outside the view: keep learning views from a member so proxying stays right.
            let (n, p) = (node.clone(), first.clone());
            loops.insert(
                p.clone(),
                Abort(tokio::spawn(async move { watch_view(n, p).await })),
            );
        }
        if views.changed().await.is_err() {
            return;
        }
    }
}

async fn watch_view(node: Arc<Node>, peer: String) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        node.refresh_view_from(&peer).await;
    }
}

/// A full transfer under way to one peer: it resumes after the last key the peer
/// acknowledged, not from the first key, when a message fails. Each message is a run of
/// our keys ([`Rpc::SyncRun`]), so the peer also drops what it holds that we saw
/// deleted (a peer whose disk went back in time holds such keys).
struct FullTransfer {
    /// Our clock when the transfer started (claimed once every key was sent).
    clock: VClock,
    /// The peer's clock as we knew it then.
    assumed: VClock,
    /// The last key the peer has stored.
    cursor: Option<String>,
    /// When it started (the peer holds what we held then once it is done).
    started: Instant,
    /// The peer could not read a run (a node of an earlier version): plain `Sync`s.
    plain: bool,
}

impl FullTransfer {
    fn new(clock: VClock, assumed: VClock, started: Instant) -> FullTransfer {
        FullTransfer {
            clock,
            assumed,
            cursor: None,
            started,
            plain: false,
        }
    }
}

/// How far behind one peer is, as its loop last measured it; mirrored in the metrics
/// and, while it lasts, in the log.
struct Lag {
    labels: PeerLabels,
    /// The last moment at which the peer held (and acknowledged) all that we held.
    caught_up_at: Instant,
    last_walk: Option<Instant>,
    /// While warning: when the peer fell behind, and the last warning.
    warned: Option<(Instant, Instant)>,
}

impl Lag {
    fn new(peer: &str) -> Lag {
        Lag {
            labels: PeerLabels {
                peer: peer.to_string(),
            },
            caught_up_at: Instant::now(),
            last_walk: None,
            warned: None,
        }
    }

    /// Records that the peer lacks `versions` versions of `bytes` bytes in all.
    fn record(&mut self, node: &Node, versions: usize, bytes: usize) {
        let m = &node.metrics;
        m.behind_versions
            .get_or_create(&self.labels)
            .set(versions as i64);
        m.behind_bytes.get_or_create(&self.labels).set(bytes as i64);
        let now = Instant::now();
        let behind_for = now - self.caught_up_at;
        let secs = if versions == 0 {
            0
        } else {
            behind_for.as_secs()
        };
        m.behind_seconds
            .get_or_create(&self.labels)
            .set(secs as i64);
        if versions == 0 {
            if let Some((since, _)) = self.warned.take() {
                let behind_secs = (now - since).as_secs();
                tracing::info!(peer = %self.labels.peer, behind_secs, "shard peer caught up");
            }
            self.caught_up_at = now;
        } else if behind_for >= BEHIND_WARN_AFTER
            && self
                .warned
                .is_none_or(|(_, last)| now - last >= BEHIND_WARN_EVERY)
        {
            tracing::warn!(
                peer = %self.labels.peer,
                versions,
                bytes,
                behind_secs = behind_for.as_secs(),
                "shard peer is behind"
            );
            let since = self.warned.map_or(self.caught_up_at, |(since, _)| since);
            self.warned = Some((since, now));
        }
    }

    /// The peer acknowledged everything we held at `as_of`.
    fn acknowledged(&mut self, as_of: Instant) {
        self.caught_up_at = self.caught_up_at.max(as_of);
    }

    /// Whether to walk a large backlog again now (at most every [`BEHIND_WALK_EVERY`]).
    fn walk_due(&mut self) -> bool {
        let now = Instant::now();
        let due = self.last_walk.is_none_or(|t| now - t >= BEHIND_WALK_EVERY);
        if due {
            self.last_walk = Some(now);
        }
        due
    }
}

async fn peer_loop(node: Arc<Node>, peer: String, epoch: u64) {
    let mut commits = node.commits.clone();
    let mut known: Option<VClock> = None;
    // What the peer acknowledged before this loop started (before a restart of ours).
    let mut floor = node.acked.lock().floor(&peer, epoch);
    let mut transfer: Option<FullTransfer> = None;
    let mut backoff = Duration::from_millis(50);
    let mut last_sent = Instant::now() - Duration::from_secs(60);
    let mut lag = Lag::new(&peer);
    loop {
        let round = match transfer.as_mut() {
            Some(t) => {
                if lag.walk_due() {
                    let sent = t.cursor.as_deref().map(|c| (c, &t.clock));
                    let (versions, bytes) = node.state.read().behind(&t.assumed, sent);
                    lag.record(&node, versions, bytes);
                }
                let started = t.started;
                full_transfer_step(&node, &peer, epoch, t)
                    .await
                    .map(|done| {
                        if done.is_some() {
                            known = done;
                            lag.acknowledged(started);
                            transfer = None;
                            last_sent = Instant::now();
                        }
                        true
                    })
            }
            None => {
                sync_once(
                    &node,
                    &peer,
                    epoch,
                    (&mut known, &mut floor),
                    &mut last_sent,
                    &mut transfer,
                    &mut lag,
                )
                .await
            }
        };
        // (Not while a full transfer runs: if the peer lost writes, what it had
        // acknowledged stays the mark until the transfer has told it what it lacks, so
        // a restart of ours in between notices again.)
        if let (Some(k), None) = (&known, &transfer) {
            node.acked.lock().record(&peer, epoch, k);
        }
        match round {
            Ok(true) => {
                backoff = Duration::from_millis(50);
                continue;
            }
            Ok(false) => backoff = Duration::from_millis(50),
            Err(()) => {
                node.metrics
                    .sync_rounds
                    .get_or_create(&OutcomeLabels { outcome: "failed" })
                    .inc();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        }
        tokio::select! {
            _ = commits.changed() => {}
            _ = tokio::time::sleep(node.cfg.timeouts.heartbeat) => {}
        }
    }
}

/// One round. `Ok(true)`: more to send at once; `Ok(false)`: peer is up to date.
/// `known` is the peer's clock as it last reported it to this loop; `floor`, before the
/// first contact, what it acknowledged before this loop started.
async fn sync_once(
    node: &Arc<Node>,
    peer: &str,
    epoch: u64,
    (known, floor): (&mut Option<VClock>, &mut Option<VClock>),
    last_sent: &mut Instant,
    transfer: &mut Option<FullTransfer>,
    lag: &mut Lag,
) -> Result<bool, ()> {
    let Some(assumed) = known.clone() else {
        // First contact: learn the peer's clock.
        let as_of = Instant::now();
        let ours = node.state.read().clock.clone();
        let clock = send(node, peer, epoch, Vec::new(), None).await?;
        if let Some(before) = floor.take() {
            if !clock.covers(&before) {
                // As below, noticed across a restart of ours.
                tracing::warn!(
                    peer,
                    "shard peer lost writes it had acknowledged before this node restarted; \
                     full transfer"
                );
                *transfer = Some(FullTransfer::new(ours, clock.clone(), as_of));
            }
        }
        *known = Some(clock);
        return Ok(true);
    };
    let as_of = Instant::now();
    let (clock, delta) = {
        let st = node.state.read();
        (st.clock.clone(), st.delta(&assumed, DELTA))
    };
    match delta {
        Some(versions) => {
            let bytes = versions.iter().map(|(k, v)| weight(k, v)).sum();
            lag.record(node, versions.len(), bytes);
            let idle = versions.is_empty() && assumed.covers(&clock);
            if idle && last_sent.elapsed() < node.cfg.timeouts.heartbeat {
                return Ok(false);
            }
            if let Some(oldest) = versions.iter().map(|(_, v)| v.id.ts).min() {
                let age_ms = (hlc_now().saturating_sub(oldest) >> HLC_SHIFT) as f64;
                node.metrics.sync_lag_seconds.observe(age_ms / 1000.0);
            }
            node.metrics
                .sync_batch_versions
                .observe(versions.len() as f64);
            let n = versions.len();
            let reply = send(
                node,
                peer,
                epoch,
                versions,
                Some((clock.clone(), assumed.clone())),
            )
            .await?;
            *last_sent = Instant::now();
            if !reply.covers(&assumed) {
                // The peer no longer has what it told us it had: its disk went back in
                // time (a restored backup, a power loss under `os` durability). It may
                // hold keys we saw deleted and whose tombstones are gone; only a full
                // transfer, run by run, tells it (see `Changes::sync_run`).
                tracing::warn!(
                    peer,
                    "shard peer lost writes it had acknowledged; full transfer"
                );
                *transfer = Some(FullTransfer::new(clock, reply.clone(), as_of));
                *known = Some(reply);
                return Ok(true);
            }
            lag.acknowledged(as_of);
            *known = Some(reply);
            Ok(n > 0)
        }
        None => {
            tracing::info!(peer, "full transfer to shard peer");
            *transfer = Some(FullTransfer::new(clock, assumed, as_of));
            Ok(true)
        }
    }
}

/// Sends the next chunk of a full transfer, in key order. Once every key was sent,
/// claims the clock taken at the start and returns the peer's clock.
async fn full_transfer_step(
    node: &Arc<Node>,
    peer: &str,
    epoch: u64,
    t: &mut FullTransfer,
) -> Result<Option<VClock>, ()> {
    // The run and our clock, read together: the peer may drop what it holds in the run
    // that this clock covers and the run lacks.
    let (chunk, clock) = {
        let st = node.state.read();
        (
            st.chunk_after(t.cursor.as_deref(), FULL_CHUNK),
            st.clock.clone(),
        )
    };
    let last = chunk.last().map(|(k, _)| k.clone());
    let run = KeyRun {
        after: t.cursor.clone(),
        through: last.clone(),
    };
    // After the last run, the claim: the clock taken at the start.
    let claim = last.is_none().then(|| (t.clock.clone(), t.assumed.clone()));
    node.metrics.versions_repaired.inc_by(chunk.len() as u64);
    let rpc = if t.plain {
        Rpc::Sync {
            epoch,
            versions: chunk,
            claim,
        }
    } else {
        Rpc::SyncRun {
            epoch,
            versions: chunk,
            run,
            clock,
            claim,
        }
    };
    let reply = match call(node, peer, epoch, rpc).await {
        Err(SyncError::Unreadable) if !t.plain => {
            tracing::info!(
                peer,
                "shard peer cannot read runs (an earlier version); plain transfer"
            );
            t.plain = true;
            return Err(());
        }
        other => other.map_err(|_| ())?,
    };
    match last {
        Some(last) => {
            t.cursor = Some(last);
            Ok(None)
        }
        None => Ok(Some(reply)),
    }
}

/// The timeout of a message between nodes that carries `bytes`: `base`, plus
/// [`PER_MIB`] for every MiB.
pub(crate) fn sized_timeout(base: Duration, bytes: usize) -> Duration {
    base + PER_MIB * (bytes >> 20) as u32
}

async fn send(
    node: &Arc<Node>,
    peer: &str,
    epoch: u64,
    versions: Vec<(String, crate::causal::Version)>,
    claim: Option<(VClock, VClock)>,
) -> Result<VClock, ()> {
    let rpc = Rpc::Sync {
        epoch,
        versions,
        claim,
    };
    call(node, peer, epoch, rpc).await.map_err(|_| ())
}

/// Why a replication message failed.
enum SyncError {
    /// The peer could not decode it (a node of an earlier version, for a newer kind).
    Unreadable,
    /// Anything else: the round is retried.
    Failed,
}

/// Sends a `Sync` or `SyncRun` (`rpc`, in view `epoch`) and returns the peer's clock.
async fn call(node: &Arc<Node>, peer: &str, epoch: u64, rpc: Rpc) -> Result<VClock, SyncError> {
    let bytes: usize = match &rpc {
        Rpc::Sync { versions, .. } | Rpc::SyncRun { versions, .. } => {
            versions.iter().map(|(k, v)| weight(k, v)).sum()
        }
        _ => 0,
    };
    let timeout = sized_timeout(node.cfg.timeouts.sync, bytes);
    node.metrics.replication_bytes.inc_by(bytes as u64);
    let msg = node.envelope(rpc);
    match node.transport.call(peer, msg, timeout).await {
        Ok(reply @ (RpcReply::Synced { .. } | RpcReply::SyncedDurable { .. })) => {
            node.metrics
                .sync_rounds
                .get_or_create(&OutcomeLabels { outcome: "ok" })
                .inc();
            // What the peer holds tells what to send it next; what it holds durably
            // is what tombstone collection and settling may count on.
            let (clock, durable) = match reply {
                RpcReply::SyncedDurable { clock, durable } => (clock, durable),
                RpcReply::Synced { clock } => (clock.clone(), clock),
                _ => unreachable!("matched above"),
            };
            node.peer_clocks
                .lock()
                .insert(peer.to_string(), (epoch, durable));
            Ok(clock)
        }
        Ok(RpcReply::WrongEpoch { view }) => {
            // Adopt the peer's view if it wins; tell the peer ours if it loses (it
            // hands over what it must when it switches).
            node.offer_view(peer, view).await;
            Err(SyncError::Failed)
        }
        Ok(other) => {
            tracing::debug!(peer, ?other, "unexpected sync reply");
            Err(SyncError::Failed)
        }
        Err(TransportError::Refused(_, why)) if why.starts_with("400") => {
            tracing::debug!(peer, why, "sync refused");
            Err(SyncError::Unreadable)
        }
        Err(e) => {
            tracing::debug!(peer, error = %e, "sync failed");
            Err(SyncError::Failed)
        }
    }
}

/// Stops waiting for the old owners still outstanding (see `Timeouts::handover_grace`).
async fn give_up_on_hand_overs(node: &Arc<Node>) {
    let (pending, epoch) = {
        let st = node.state.read();
        (st.pending.clone(), st.view.epoch)
    };
    tracing::warn!(
        nodes = ?pending,
        "old owners never reported their hand-over complete; collecting tombstones without them"
    );
    let _ = node
        .committer
        .submit(|reply| Job::HandedOver {
            epoch,
            nodes: pending.into_iter().collect(),
            report: Default::default(),
            reply,
        })
        .await;
}

/// True when no node may still hand keys of this node's shard over to it. Asks each
/// node still outstanding (in parallel, bounded) and records those that are done. A
/// node that does not answer stays outstanding: its tombstones wait for it.
pub(crate) async fn hand_overs_done(node: &Arc<Node>) -> bool {
    let (pending, epoch, shard) = {
        let st = node.state.read();
        (st.pending.clone(), st.view.epoch, st.my_shard())
    };
    if pending.is_empty() {
        return true;
    }
    let Some(shard) = shard else {
        return false;
    };
    let mut asks = tokio::task::JoinSet::new();
    for p in &pending {
        let msg = node.envelope(Rpc::Holds { epoch, shard });
        let call = node.transport.call(p, msg, node.cfg.timeouts.sync);
        let p = p.clone();
        asks.spawn(async move { (p, call.await) });
    }
    let mut done = Vec::new();
    let mut report = HandOverReport::default();
    while let Some(Ok((p, reply))) = asks.join_next().await {
        let (e, r) = match reply {
            Ok(RpcReply::Holds { epoch, any: false }) => (epoch, HandOverReport::default()),
            Ok(RpcReply::HoldsWith {
                epoch,
                any: false,
                report,
            }) => (epoch, report),
            _ => continue,
        };
        if e == epoch {
            done.push(p);
            report.waiting.extend(r.waiting);
            report.views.extend(r.views);
        }
    }
    if done.is_empty() {
        return false;
    }
    let _ = node
        .committer
        .submit(|reply| Job::HandedOver {
            epoch,
            nodes: done,
            report,
            reply,
        })
        .await;
    // Done once nobody is left: those who answered may have named others.
    node.state.read().pending.is_empty()
}

/// Removes tombstones that every shard peer's clock covers.
async fn collect_tombstones(node: Arc<Node>) {
    // Since when old owners have kept this node's tombstones waiting.
    let mut waiting_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let has_tombstones = !node.state.read().tombstones.is_empty();
        if has_tombstones && !hand_overs_done(&node).await {
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() < node.cfg.timeouts.handover_grace {
                continue;
            }
            give_up_on_hand_overs(&node).await;
        }
        waiting_since = None;
        let (epoch, doomed): (u64, Vec<(String, crate::causal::WriteId)>) = {
            let st = node.state.read();
            if st.tombstones.is_empty() {
                continue;
            }
            let clocks = node.peer_clocks.lock();
            let Some(peer_clocks) =
                causeway_core::replica::shard_peer_clocks(&st, |p| clocks.get(p))
            else {
                continue;
            };
            // A tombstone outlives every idempotent retry of what it deleted (twice the
            // window, for clock skew): such a retry is that write again, which the
            // tombstone supersedes, and would bring the key back without it.
            let old_enough =
                crate::node::committer::hlc_now().saturating_sub(crate::causal::version::ts_of_ms(
                    2 * node.cfg.idempotency_window.as_millis() as u64,
                ));
            let doomed = causeway_core::replica::collectable_tombstones(
                &st,
                &peer_clocks,
                old_enough,
                10_000,
            );
            (st.view.epoch, doomed)
        };
        if doomed.is_empty() {
            continue;
        }
        if let Ok(n) = node
            .committer
            .submit(|reply| Job::Remove {
                keys: doomed,
                epoch,
                reply,
            })
            .await
        {
            node.metrics.tombstones_collected.inc_by(n as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(counter: u64) -> VClock {
        let mut c = VClock::new();
        c.raise(9, counter);
        c
    }

    #[test]
    fn a_peer_acknowledgement_counts_only_in_its_view() {
        let mut a = Acked::loaded([("p".to_string(), (4, clock(3)))].into());
        assert_eq!(a.floor("p", 4), Some(clock(3)));
        assert_eq!(a.floor("p", 5), None, "another view: not comparable");
        assert_eq!(a.floor("q", 4), None);
        assert_eq!(a.take_dirty(4), None, "loaded: nothing to write");
        a.record("p", 4, &clock(3));
        assert_eq!(a.take_dirty(4), None, "unchanged: nothing to write");
        a.record("p", 4, &clock(5));
        a.record("q", 6, &clock(1));
        let written = a.take_dirty(6).expect("changed");
        assert_eq!(
            written,
            [("q".to_string(), (6, clock(1)))].into(),
            "only the view in force is kept"
        );
        assert_eq!(a.take_dirty(6), None);
        assert_eq!(a.floor("p", 4), None, "dropped with its view");
    }
}
