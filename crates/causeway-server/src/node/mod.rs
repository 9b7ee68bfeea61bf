//! A Causeway node: the replica it holds, how it serves key operations (locally or by
//! proxying to the owning shard), and the one `match` over node-to-node requests.
//!
//! Invariants:
//! - a node serves a key itself only if it is a replica of the key's shard in its
//!   current view; otherwise it forwards to a replica of that shard (at most two hops);
//! - a read is answered only when the read rule holds for it (`causal::read_is_safe`),
//!   or with a version fetched from a peer for which it holds; else 400;
//! - every wait on another node is bounded by a timeout from [`Timeouts`].
//!
//! Replication loops live in [`crate::replication`], resharding in
//! [`crate::view_change`]; both are `impl Node` blocks or tasks over an `Arc<Node>`.

pub mod committer;
pub mod recall;
pub mod replication;
pub mod view_change;
pub use causeway_core::state;
pub mod watches;

use crate::causal::context::{epochs_allow, has_seen};
use crate::causal::{read_is_safe, Context, ShardNo, VClock, Version, WriteId};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::placement::View;
use crate::storage::{Loaded, Storage};
use crate::transport::{
    Envelope, Forwarding, KeyError, KeyOp, KeyOutcome, KeyRequest, KeyResponse, Rpc, RpcReply,
    Transport,
};
use committer::{CommitError, Committer, Job};
use parking_lot::{Mutex, RwLock};
use state::State;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Bounds on every wait for another node.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// Asking shard peers for a newer version of a key during a read.
    pub fetch: Duration,
    /// One attempt to forward a request to one replica.
    pub proxy_attempt: Duration,
    /// All attempts of one forwarded request (stays under the client's 5 s).
    pub proxy_total: Duration,
    /// One replication message.
    pub sync: Duration,
    /// One resharding hand-over message.
    pub migrate: Duration,
    /// Idle replication heartbeat (anti-entropy when nothing new was written).
    pub heartbeat: Duration,
    /// How long a view-change coordinator waits for each node to install the view and
    /// hand over its keys (a node that does not answer catches up later). With
    /// [`Timeouts::settle`] it bounds how long a view change takes to answer (about
    /// 32 s by default; an unfinished change answers 202 with its incomplete shards).
    pub apply_view: Duration,
    /// How long a node waits for its shard peers to catch up at the end of a view change.
    pub settle: Duration,
    /// How long tombstones wait for old owners that never answer after a view change
    /// (a node removed while dead): past this, collection resumes without them, and a
    /// copy such a node hands over later could bring a deleted key back.
    pub handover_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            fetch: Duration::from_millis(700),
            proxy_attempt: Duration::from_millis(1800),
            proxy_total: Duration::from_millis(4000),
            sync: Duration::from_secs(3),
            migrate: Duration::from_secs(20),
            heartbeat: Duration::from_millis(500),
            apply_view: Duration::from_secs(20),
            settle: Duration::from_secs(10),
            handover_grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// The deadline of a client's key request that reached this node at `now`: `now` plus
/// [`Timeouts::proxy_total`] (4 s by default). A local write waits for its commit at
/// most that long (then 503), and so does everything the request does on this node: a
/// write that finds its key moved away is forwarded with what is left, and a request
/// forwarded from the start gets at most `proxy_total` anyway. So whichever way it
/// goes, the answer leaves within 4 s, and a second of the client's 5 s remains for
/// its network, the HTTP exchange and scheduling delays. (The replica that serves a
/// forwarded request stops waiting at its sender's deadline, at most
/// [`Timeouts::proxy_attempt`], so that the sender can still try another replica.)
pub fn client_deadline(t: &Timeouts, now: std::time::Instant) -> std::time::Instant {
    now + t.proxy_total
}

/// How a write the committer did not apply is answered; `None` when this node does not
/// own the key (any more) and the request must be routed again. Not committed in time
/// (a stalled disk, a full queue, a forwarded write that came too late) or no committer
/// at all, or a client context of a view outside this node's line of views, is 503
/// (`Unavailable`): the client may retry, here or elsewhere.
fn write_error(e: CommitError) -> Option<KeyError> {
    match e {
        CommitError::NotOwner(_) => None,
        CommitError::Expired
        | CommitError::UnknownView(_)
        | CommitError::TimedOut
        | CommitError::Died(_)
        | CommitError::Closed => Some(KeyError::Unavailable),
        CommitError::Storage(e) => Some(KeyError::Internal(e.to_string())),
    }
}

/// What a forwarded request carries, as the receiving node holds it: the sender's
/// budget turned into a local deadline on arrival (see [`crate::transit`]), and the
/// write's identity.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Forwarded {
    deadline: std::time::Instant,
    write_id: Option<WriteId>,
}

/// The timestamp a read judges expiry at: this node's clock, or the request's context
/// if it has seen a later time (so a session that saw a key expire on a node whose
/// clock is ahead never sees it alive again on one whose clock is behind).
pub fn read_now(ctx: &Context) -> u64 {
    committer::hlc_now().max(ctx.ts.min(committer::MAX_TS))
}

/// The value a read answers with from version `v` (`None`: no key, deleted or
/// expired), and the context after it: a read that found the write expired raises the
/// context's time to the expiry, which every later read of the session then honours.
fn live_value(v: Option<Version>, mut ctx: Context) -> (Option<crate::causal::Value>, Context) {
    let Some(v) = v else { return (None, ctx) };
    let now = read_now(&ctx);
    match v.value {
        Some(value) if v.expires().is_none_or(|at| now < at) => (Some(value), ctx),
        Some(value) => {
            ctx.ts = ctx.ts.max(value.expires().unwrap_or(0));
            (None, ctx)
        }
        None => (None, ctx),
    }
}

/// How often a settled replica tells its shard peers so (see [`Rpc::Settled`]).
pub const SETTLED_EVERY: Duration = Duration::from_secs(1);

/// How often a node reclaims expired writes, and how many per commit.
pub const RECLAIM_EVERY: Duration = Duration::from_secs(2);
const RECLAIM_BATCH: usize = 10_000;

/// How long before its request's deadline a watch stops waiting and answers.
pub const WATCH_MARGIN: Duration = Duration::from_millis(500);

/// How long the cluster status waits for each node.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(800);

/// What a node needs to know about itself.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `ip:port` as other nodes reach this one.
    pub address: String,
    pub max_key_chars: usize,
    pub timeouts: Timeouts,
    /// Test hook: answer reads without the read rule (fault-campaign self-check).
    pub broken_read_rule: bool,
    /// Test hook: a planted cross-epoch bug, a replica serves reads as if its shard were
    /// complete, ignoring what contexts depend on from before the view change (the
    /// fault campaign must catch it).
    pub ignore_old_contexts: bool,
    /// How long an `Idempotency-Key` is honoured (see [`crate::idempotency`]).
    pub idempotency_window: Duration,
}

impl NodeConfig {
    pub fn new(address: impl Into<String>) -> NodeConfig {
        NodeConfig {
            address: address.into(),
            max_key_chars: 50,
            timeouts: Timeouts::default(),
            broken_read_rule: false,
            ignore_old_contexts: false,
            idempotency_window: crate::idempotency::DEFAULT_WINDOW,
        }
    }
}

pub struct Node {
    pub cfg: NodeConfig,
    pub(crate) state: Arc<RwLock<State>>,
    pub(crate) committer: Committer,
    pub(crate) commits: watch::Receiver<u64>,
    pub(crate) storage: Arc<Storage>,
    pub(crate) transport: Arc<dyn Transport>,
    pub metrics: Arc<Metrics>,
    pub(crate) view_tx: watch::Sender<Arc<View>>,
    /// Shard peers' durable clocks as last reported to our replication loops (for
    /// tombstone collection and settling): what each will keep even after a power loss.
    pub(crate) peer_clocks: Mutex<HashMap<String, (u64, VClock)>>,
    /// The clock each shard peer last acknowledged to our replication loops, kept on
    /// disk too (see [`crate::replication::Acked`]).
    pub(crate) acked: Mutex<crate::replication::Acked>,
    /// The views other nodes were seen in, kept on disk too (see [`recall`]).
    pub(crate) noted: Mutex<recall::Noted>,
    pub(crate) migrate_lock: tokio::sync::Mutex<()>,
    /// Background tasks, aborted by [`Node::stop`].
    pub(crate) tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    rr: AtomicUsize,
    /// Identities this node gives the writes it forwards (see [`Forwarding::write_id`]):
    /// a random origin per process, a counter, and the last timestamp handed out.
    fwd_origin: u64,
    fwd_counter: AtomicU64,
    fwd_last_ts: Mutex<u64>,
    /// How long forwarded requests were held on their way here (see [`crate::transit`]).
    transit: Mutex<crate::transit::Transit>,
    /// When this node started.
    started: std::time::Instant,
    /// Until when this node must not say it holds nothing more to hand over, having
    /// restarted in the middle of a hand-over (see
    /// [`causeway_core::replica::largest_hand_over_message`]).
    pub(crate) quiet_until: Option<std::time::Instant>,
    /// Watches (long-polls) waiting for keys of this replica.
    watches: Arc<watches::Watches>,
    /// Idempotent writes this replica applied, by identity, for the window.
    applied: crate::idempotency::Answers<AppliedWrite>,
    /// What shard peers said when they settled in the current view (see
    /// [`Rpc::Settled`] and [`shard_complete`]).
    settled: Mutex<Settled>,
}

pub use causeway_core::replica::{complete_for, shard_complete, HandOverReport, Settled};

/// The keys a listing page of `q` scans on this replica, in byte order: from the
/// prefix, or after the cursor when that lies within it.
fn listing_keys<'a>(
    st: &'a State,
    q: &'a crate::listing::Query,
) -> impl Iterator<Item = (&'a str, &'a Version)> {
    use std::ops::Bound;
    let lower = match &q.start_after {
        Some(after) if after.as_str() >= q.prefix.as_str() => Bound::Excluded(after.as_str()),
        _ => Bound::Included(q.prefix.as_str()),
    };
    st.keys
        .range::<str, _>((lower, Bound::Unbounded))
        .map(|(k, v)| (&**k, v))
}

/// How a replica names an idempotent write it applied (see `Node::applied`).
fn applied_key(id: WriteId) -> String {
    format!("{:x}.{:x}", id.ts, id.origin)
}

/// A replica's own page of a listing, or why it has none.
enum LocalPage {
    Page((Vec<(String, Version)>, bool)),
    /// Its shard's hand-over still runs: it may lack keys.
    Incomplete,
    /// It cannot honour the context yet.
    Unsafe,
    NotReplica,
}

/// What a replica remembers of an idempotent write it applied: enough to answer a
/// repeat as the first attempt was answered.
#[derive(Clone, Debug)]
struct AppliedWrite {
    epoch: u64,
    shard: ShardNo,
    dot: crate::causal::Dot,
    tag: u32,
    live: bool,
    ts: u64,
    result: KeyOutcome,
}

impl Node {
    /// Builds a node over what storage loaded and starts its background tasks
    /// (replication, tombstone collection, resharding hand-over). `initial_view` is used
    /// unless storage holds a view from a later view change.
    pub fn start(
        cfg: NodeConfig,
        storage: Storage,
        loaded: Loaded,
        initial_view: View,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Node>, crate::storage::StorageError> {
        let had_view = loaded.meta.view.is_some();
        let view = match loaded.meta.view {
            Some(v) if v.rank() > initial_view.rank() => v,
            _ => initial_view,
        };
        let mut st = State::new(
            cfg.address.clone(),
            loaded.meta.incarnation,
            view.clone(),
            loaded.meta.clock,
            loaded.meta.last_ts,
        );
        let mut versions = Vec::new();
        storage.for_each_version(|k, v| {
            st.last_ts = st.last_ts.max(v.id.ts);
            versions.push((Arc::from(k), v));
        })?;
        st.bulk_load(versions);
        st.pending = loaded.meta.pending;
        st.completed = loaded.meta.completed;
        match loaded.meta.lineage {
            Some(l) => {
                st.lineage = l;
                st.lineage.insert(view.epoch, view.nodes.clone());
            }
            // A data directory from an earlier version, which kept no lineage.
            None => st.older_views_known = had_view,
        }
        st.waited = st.pending.clone();
        let started = std::time::Instant::now();
        let quiet_until = causeway_core::replica::largest_hand_over_message(
            &st,
            view_change::MIGRATE_CHUNK.bytes,
        )
        .map(|bytes| started + crate::replication::sized_timeout(cfg.timeouts.migrate, bytes));
        let acked = crate::replication::Acked::loaded(loaded.meta.peer_clocks);
        let noted = recall::Noted::loaded(loaded.meta.seen);
        let state = Arc::new(RwLock::new(st));
        let storage = Arc::new(storage);
        let watches = Arc::new(watches::Watches::default());
        let cfg_window = cfg.idempotency_window;
        let metrics = Arc::new(Metrics::new());
        let (committer, commits) = Committer::start(
            state.clone(),
            storage.clone(),
            watches.clone(),
            metrics.commit_batches.clone(),
        );
        let (view_tx, _) = watch::channel(Arc::new(view));
        let node = Arc::new(Node {
            cfg,
            state,
            committer,
            commits,
            storage,
            transport,
            metrics,
            view_tx,
            peer_clocks: Mutex::new(HashMap::new()),
            acked: Mutex::new(acked),
            noted: Mutex::new(noted),
            migrate_lock: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
            rr: AtomicUsize::new(0),
            // Top bit clear: that bit marks idempotent writes (`crate::idempotency`).
            fwd_origin: rand::random::<u64>() >> 1,
            fwd_counter: AtomicU64::new(0),
            fwd_last_ts: Mutex::new(0),
            transit: Mutex::new(Default::default()),
            started,
            quiet_until,
            watches,
            applied: crate::idempotency::Answers::new(cfg_window),
            settled: Mutex::new(Settled::default()),
        });
        crate::replication::spawn(node.clone());
        let n = node.clone();
        let h = tokio::spawn(async move { n.reclaim_expired().await });
        node.tasks.lock().push(h.abort_handle());
        let n = node.clone();
        let h = tokio::spawn(async move { n.announce_settled().await });
        node.tasks.lock().push(h.abort_handle());
        // A node restarted mid-change still holds keys it must hand over.
        let n = node.clone();
        let h = tokio::spawn(async move { n.migrate_out().await });
        node.tasks.lock().push(h.abort_handle());
        Ok(node)
    }

    /// Turns expired writes into tombstones of themselves, every [`RECLAIM_EVERY`], so
    /// their values leave storage and `key-count`; tombstone collection removes them
    /// later. Judged by this node's clock alone: reads never depend on it (an expired
    /// value is not answered, reclaimed or not).
    async fn reclaim_expired(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RECLAIM_EVERY).await;
            loop {
                let now = committer::hlc_now();
                let due = self.state.read().expired(now, RECLAIM_BATCH);
                if due.is_empty() {
                    break;
                }
                let full = due.len() == RECLAIM_BATCH;
                let keys = due.into_iter().map(|(k, id)| (k.to_string(), id)).collect();
                let by = tokio::time::Instant::now() + self.cfg.timeouts.sync;
                match self
                    .committer
                    .submit_by(Some(by), |reply| Job::Reclaim { keys, now, reply })
                    .await
                {
                    Ok(n) => tracing::debug!(reclaimed = n, "expired writes reclaimed"),
                    Err(e) => {
                        tracing::warn!(error = %e, "reclaiming expired writes failed");
                        break;
                    }
                }
                if !full {
                    break;
                }
            }
        }
    }

    /// Stops the node's background work (replication, collection, hand-over).
    pub fn stop(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }

    pub fn address(&self) -> &str {
        &self.cfg.address
    }

    pub fn view(&self) -> Arc<View> {
        self.state.read().view.clone()
    }

    /// (shard of this node, live keys it holds).
    pub fn key_count(&self) -> (Option<ShardNo>, u64) {
        let st = self.state.read();
        (st.my_shard(), st.live as u64)
    }

    pub fn is_durable(&self) -> bool {
        self.storage.is_durable()
    }

    /// Why this node can no longer commit anything (its committer thread died), if so.
    pub fn failure(&self) -> Option<String> {
        self.committer.failure()
    }

    /// Resolves with the reason once the node can no longer commit anything.
    pub async fn failed(&self) -> String {
        self.committer.died().await
    }

    /// The storage fault knobs (tests: a stalled disk, a panicking commit).
    pub fn faults(&self) -> &crate::storage::Faults {
        self.storage.faults()
    }

    pub fn disk_bytes(&self) -> u64 {
        self.storage.disk_bytes()
    }

    /// Clean shutdown: stops background work and closes storage (see
    /// [`Storage::close`]); later changes are refused.
    pub fn close(&self) -> Result<(), crate::storage::StorageError> {
        self.stop();
        self.storage.close()
    }

    /// A random number naming this process (see [`crate::transit`]).
    pub(crate) fn process_id(&self) -> u64 {
        self.fwd_origin
    }

    /// The local deadline of a message that `sender` sent at its monotonic `sent_ms`
    /// with `budget_ms` to go: the budget starts on arrival, less the time the message
    /// was held on the way (see [`crate::transit`]).
    fn arrival_deadline(&self, sender: u64, sent_ms: u64, budget_ms: u64) -> std::time::Instant {
        let held = self
            .transit
            .lock()
            .held_for(sender, sent_ms, crate::transit::mono_ms());
        let left = crate::transit::remaining_ms(budget_ms, held);
        std::time::Instant::now() + Duration::from_millis(left)
    }

    pub(crate) fn envelope(&self, rpc: Rpc) -> Envelope {
        Envelope {
            from: self.cfg.address.clone(),
            rpc,
        }
    }

    /// Serves a client key operation: locally if this node is a replica of the key's
    /// shard, otherwise by forwarding it.
    ///
    /// The request has until [`client_deadline`]: a local write not committed by then
    /// answers 503, and a forwarded one shares the same budget.
    /// A watch has its wait on top.
    pub async fn handle_key(&self, req: KeyRequest) -> KeyResponse {
        self.handle_key_as(req, None).await
    }

    /// [`Node::handle_key`] for a write whose identity the caller fixed (an idempotent
    /// write's, see [`crate::idempotency`]): every replica that applies it applies that
    /// one write.
    pub async fn handle_key_as(&self, req: KeyRequest, write_id: Option<WriteId>) -> KeyResponse {
        let arrived = Forwarded {
            deadline: client_deadline(&self.cfg.timeouts, std::time::Instant::now())
                + req.op.wait(),
            write_id,
        };
        self.route_key(req, 0, Some(arrived)).await
    }

    /// `fwd` is what the node that forwarded the request fixed about it (or, for a
    /// client's request, what [`Node::handle_key`] fixed): its deadline (a write still
    /// unapplied by then is abandoned, so that a forwarded write that arrives late, say
    /// retransmitted after a partition heals, cannot land after the client was answered
    /// and moved on; and nobody waits for a commit past it) and, for a write, its identity.
    async fn route_key(&self, req: KeyRequest, hops: u8, fwd: Option<Forwarded>) -> KeyResponse {
        let owns = self.state.read().owns(&req.key);
        if owns {
            match self.serve_local(req.clone(), fwd).await {
                Some(resp) => return resp,
                // The view changed under us: route again with the new one.
                None => return Box::pin(self.proxy(req, hops, fwd)).await,
            }
        }
        self.proxy(req, hops, fwd).await
    }

    /// A fresh identity for a write this node forwards: its timestamp is above the
    /// client's context (so the write beats everything the client has seen) and above
    /// every identity this node handed out before.
    fn forwarded_write_id(&self, ctx: &Context) -> WriteId {
        let mut last = self.fwd_last_ts.lock();
        let id = causeway_core::replica::forwarded_write_id(
            *last,
            ctx.ts,
            committer::hlc_now(),
            self.fwd_origin,
            self.fwd_counter.fetch_add(1, Ordering::Relaxed),
        );
        *last = id.ts;
        id
    }

    /// Forwards to the replicas of the key's shard, spreading load over them and failing
    /// over within the time budget. 503 (`Unavailable`) only if none answers in time.
    async fn proxy(&self, req: KeyRequest, hops: u8, outer: Option<Forwarded>) -> KeyResponse {
        let t = &self.cfg.timeouts;
        // A watch is held by the replica: every attempt also has the wait.
        let wait = req.op.wait();
        let mut total = t.proxy_total + wait;
        if let Some(outer) = outer {
            total = total.min(
                outer
                    .deadline
                    .saturating_duration_since(std::time::Instant::now()),
            );
        }
        // Every attempt (on any replica) carries the same identity: at most one write.
        let write_id = match req.op {
            KeyOp::Get | KeyOp::Watch { .. } => None,
            KeyOp::Put(_) | KeyOp::PutExpiring { .. } | KeyOp::Delete => Some(
                outer
                    .and_then(|f| f.write_id)
                    .unwrap_or_else(|| self.forwarded_write_id(&req.ctx)),
            ),
        };
        let deadline = tokio::time::Instant::now() + total;
        let view = self.view();
        let replicas: Vec<String> = view
            .replicas(view.shard_of_key(&req.key))
            .iter()
            .filter(|r| **r != self.cfg.address)
            .cloned()
            .collect();
        if hops < 3 && !replicas.is_empty() {
            let start = self.rr.fetch_add(1, Ordering::Relaxed);
            for i in 0..replicas.len() {
                let to = &replicas[(start + i) % replicas.len()];
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                let attempt = left.min(t.proxy_attempt + wait);
                let write_id = write_id.map(|first| {
                    causeway_core::replica::attempt_write_id(first, i, || {
                        self.forwarded_write_id(&req.ctx)
                    })
                });
                let msg = self.envelope(Rpc::Key {
                    epoch: view.epoch,
                    hops: hops + 1,
                    fwd: Forwarding {
                        budget_ms: attempt.as_millis() as u64,
                        sent_ms: crate::transit::mono_ms(),
                        sender: self.fwd_origin,
                        write_id,
                    },
                    req: req.clone(),
                });
                match self.transport.call(to, msg, attempt).await {
                    Ok(RpcReply::Key(mut resp)) if resp.result != Err(KeyError::Unavailable) => {
                        self.metrics
                            .proxied
                            .get_or_create(&OutcomeLabels { outcome: "ok" })
                            .inc();
                        resp.served_by.get_or_insert_with(|| to.clone());
                        return resp;
                    }
                    Ok(other) => tracing::debug!(to, ?other, "proxy attempt not served"),
                    Err(e) => tracing::debug!(to, error = %e, "proxy attempt failed"),
                }
            }
        }
        self.metrics
            .proxied
            .get_or_create(&OutcomeLabels {
                outcome: "unavailable",
            })
            .inc();
        KeyResponse {
            result: Err(KeyError::Unavailable),
            ctx: req.ctx,
            served_by: None,
        }
    }

    /// Serves a key operation on this replica; `None` if it does not own the key
    /// (any more).
    async fn serve_local(&self, req: KeyRequest, fwd: Option<Forwarded>) -> Option<KeyResponse> {
        let KeyRequest { key, op, ctx } = req;
        if let Some(first) = self.applied_before(&op, fwd, &ctx) {
            return Some(first);
        }
        match op {
            KeyOp::Get => {
                let (v, ctx) = match self.safe_read(&key, &ctx).await? {
                    Ok(found) => found,
                    Err(e) => {
                        return Some(KeyResponse {
                            result: Err(e),
                            ctx,
                            served_by: None,
                        })
                    }
                };
                let (value, ctx) = live_value(v, ctx);
                let result = match value {
                    Some(value) => KeyOutcome::Found(value),
                    None => KeyOutcome::NotFound,
                };
                Some(KeyResponse {
                    result: Ok(result),
                    ctx,
                    served_by: None,
                })
            }
            KeyOp::Watch { wait_ms } => self.watch(key, wait_ms, ctx, fwd).await,
            KeyOp::Put(_) | KeyOp::PutExpiring { .. }
                if key.chars().count() > self.cfg.max_key_chars =>
            {
                Some(KeyResponse {
                    result: Err(KeyError::KeyTooLong),
                    ctx,
                    served_by: None,
                })
            }
            KeyOp::Put(value) => self.write(key, Some(value), None, ctx, fwd).await,
            KeyOp::PutExpiring { value, ttl_ms } => {
                self.write(key, Some(value), Some(ttl_ms), ctx, fwd).await
            }
            KeyOp::Delete => {
                let ctx = match self.safe_read(&key, &ctx).await? {
                    Ok((v, after)) if !v.as_ref().is_some_and(|v| v.is_live(read_now(&after))) => {
                        let (_, after) = live_value(v, after);
                        return Some(KeyResponse {
                            result: Ok(KeyOutcome::DeleteNotFound),
                            ctx: after,
                            served_by: None,
                        });
                    }
                    Ok((v, after)) => causeway_core::replica::delete_context(
                        &ctx,
                        after,
                        v.as_ref(),
                        fwd.and_then(|f| f.write_id),
                    ),
                    // The client's own context says its last known write of the key
                    // deleted it: answer so, even where that delete has not arrived.
                    Err(_) if self.context_says_deleted(&key, &ctx) => {
                        return Some(KeyResponse {
                            result: Ok(KeyOutcome::DeleteNotFound),
                            ctx,
                            served_by: None,
                        });
                    }
                    // Not known to be absent: delete anyway (writes are never refused).
                    Err(_) => ctx,
                };
                self.write(key, None, None, ctx, fwd).await
            }
        }
    }

    /// Serves a watch on this replica: reads `key` as a GET would, and answers once it
    /// holds a write or delete `ctx` has not seen ([`has_seen`]), or when `wait_ms` has
    /// passed (stopping [`WATCH_MARGIN`] before the request's deadline, so the answer
    /// still reaches whoever forwarded it). `None` if the key is not ours (any more).
    async fn watch(
        &self,
        key: String,
        wait_ms: u64,
        ctx: Context,
        fwd: Option<Forwarded>,
    ) -> Option<KeyResponse> {
        let now = std::time::Instant::now();
        let mut until = now + Duration::from_millis(wait_ms);
        if let Some(f) = fwd {
            until = until.min(f.deadline.checked_sub(WATCH_MARGIN).unwrap_or(now));
        }
        let watch = self.watches.watch(&key);
        loop {
            // Enabled before the read: a commit after the read wakes it (see `watches`).
            let notified = watch.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (v, out) = match self.safe_read(&key, &ctx).await? {
                Ok(found) => found,
                Err(e) => {
                    return Some(KeyResponse {
                        result: Err(e),
                        ctx,
                        served_by: None,
                    })
                }
            };
            let changed = {
                let st = self.state.read();
                let shard = st.my_shard()?;
                !has_seen(&ctx.in_epoch(st.view.epoch), shard, &key, v.as_ref())
            };
            if changed || std::time::Instant::now() >= until {
                let (value, out) = live_value(v, out);
                return Some(KeyResponse {
                    result: Ok(KeyOutcome::Watched { value, changed }),
                    ctx: out,
                    served_by: None,
                });
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    async fn write(
        &self,
        key: String,
        value: Option<crate::causal::Value>,
        ttl_ms: Option<u64>,
        ctx: Context,
        fwd: Option<Forwarded>,
    ) -> Option<KeyResponse> {
        let is_put = value.is_some();
        let tag = crate::causal::context::key_tag(&key);
        let written = key.clone();
        let idem = fwd
            .and_then(|f| f.write_id)
            .filter(crate::idempotency::is_idempotent)
            .map(applied_key);
        let res = self
            .committer
            .submit_by(fwd.map(|f| f.deadline.into()), |reply| Job::Write {
                key,
                value,
                ctx: ctx.clone(),
                deadline: fwd.map(|f| f.deadline),
                id: fwd.and_then(|f| f.write_id),
                ttl_ms,
                reply,
            })
            .await;
        match res {
            Ok(done) => {
                let (shard, last_ts) = {
                    let st = self.state.read();
                    let shard = st.view.shard_of_node(&self.cfg.address).unwrap_or(0);
                    (shard, st.last_ts)
                };
                let out = causeway_core::replica::context_after_write(
                    &ctx, &done, shard, &written, is_put, last_ts,
                );
                let result = if is_put {
                    KeyOutcome::Put {
                        replaced: done.existed,
                    }
                } else {
                    KeyOutcome::Deleted
                };
                if let Some(k) = idem {
                    let first = AppliedWrite {
                        epoch: done.epoch,
                        shard,
                        dot: done.dot,
                        tag,
                        live: is_put,
                        ts: done.ts,
                        result: result.clone(),
                    };
                    self.applied
                        .remember(&k, "", first, std::time::Instant::now());
                }
                Some(KeyResponse {
                    result: Ok(result),
                    ctx: out,
                    served_by: None,
                })
            }
            Err(e) => Some(KeyResponse {
                result: Err(write_error(e)?),
                ctx,
                served_by: None,
            }),
        }
    }

    /// The answer a replica gave an idempotent write it already applied (in this view):
    /// a repeat of it is answered alike, not applied again (see [`crate::idempotency`]).
    fn applied_before(
        &self,
        op: &KeyOp,
        fwd: Option<Forwarded>,
        ctx: &Context,
    ) -> Option<KeyResponse> {
        if !matches!(
            op,
            KeyOp::Put(_) | KeyOp::PutExpiring { .. } | KeyOp::Delete
        ) {
            return None;
        }
        let id = fwd?.write_id.filter(crate::idempotency::is_idempotent)?;
        let k = applied_key(id);
        let crate::idempotency::Seen::Repeat(first) =
            self.applied.seen(&k, "", std::time::Instant::now())
        else {
            return None;
        };
        if first.epoch != self.view().epoch {
            return None;
        }
        let mut out = ctx.in_epoch(first.epoch);
        out.ts = out.ts.max(first.ts);
        out.add_recent_tagged(first.shard, first.dot, first.tag, first.live);
        Some(KeyResponse {
            result: Ok(first.result),
            ctx: out,
            served_by: None,
        })
    }

    /// The version to answer a read with, and the client's context after it; `Err` when
    /// no causally safe answer can be given in time. `None` if the key is not ours.
    async fn safe_read(
        &self,
        key: &str,
        ctx: &Context,
    ) -> Option<Result<(Option<Version>, Context), KeyError>> {
        let (shard, ctx, local, safe, view, last_ts) = {
            let st = self.state.read();
            let shard = st.my_shard()?;
            if st.view.shard_of_key(key) != shard {
                return None;
            }
            // (The planted bug of `ignore_old_contexts`: a replica that takes itself
            // for complete, ignoring what the context depends on from before the view.)
            let complete =
                complete_for(&st, ctx.epoch, self.complete(&st)) || self.ignores_old_contexts();
            let ctx = ctx.in_epoch(st.view.epoch);
            let local = st.get(key).cloned();
            let safe = read_is_safe(&ctx, shard, key, &st.clock, local.as_ref())
                && epochs_allow(&ctx, complete);
            (shard, ctx, local, safe, st.view.clone(), st.last_ts)
        };
        let answer = |v: Option<Version>, mut ctx: Context| {
            if let Some(v) = &v {
                ctx.observe(v, shard, key);
                ctx.ts = causeway_core::replica::answer_ts(ctx.ts, last_ts);
            }
            Ok((v, ctx))
        };
        if safe || self.broken_read_rule() {
            return Some(answer(local, ctx));
        }
        let peers: Vec<String> = view
            .replicas(shard)
            .iter()
            .filter(|r| **r != self.cfg.address)
            .cloned()
            .collect();
        match self.fetch_from_peers(key, &ctx, peers).await {
            Some(fetched) => {
                self.metrics
                    .read_fetches
                    .get_or_create(&OutcomeLabels { outcome: "ok" })
                    .inc();
                let best = causeway_core::replica::read_answer(local, fetched);
                Some(answer(best, ctx))
            }
            None => {
                self.metrics
                    .read_fetches
                    .get_or_create(&OutcomeLabels {
                        outcome: "unsatisfiable",
                    })
                    .inc();
                Some(Err(KeyError::Unsatisfiable))
            }
        }
    }

    /// True when the client's last known write of `key` (of this replica's shard, in
    /// this epoch) was a delete.
    fn context_says_deleted(&self, key: &str, ctx: &Context) -> bool {
        let st = self.state.read();
        let Some(shard) = st.my_shard() else {
            return false;
        };
        ctx.epoch == st.view.epoch && ctx.recent_of(shard, key).is_some_and(|r| !r.live)
    }

    /// Records that `from` handed over everything it held in view `epoch`, with what
    /// it reported.
    async fn handed_over(&self, epoch: u64, from: String, report: HandOverReport) {
        let _ = self
            .committer
            .submit(|reply| Job::HandedOver {
                epoch,
                nodes: vec![from],
                report,
                reply,
            })
            .await;
    }

    /// [`shard_complete`] for this replica now (`st` is its state, read-locked).
    fn complete(&self, st: &State) -> bool {
        let Some(shard) = st.my_shard() else {
            return false;
        };
        let peers: Vec<&String> = st
            .view
            .replicas(shard)
            .iter()
            .filter(|p| **p != self.cfg.address)
            .collect();
        shard_complete(
            st.pending.is_empty(),
            st.view.epoch,
            &st.clock,
            &peers,
            &self.settled.lock(),
        )
    }

    /// Once this replica has received every hand-over of the current view, tells its
    /// shard peers its clock (again every [`SETTLED_EVERY`], as messages get lost and
    /// peers restart; each keeps the first it gets per view).
    /// Until then it asks the old owners it waits for whether they still hold keys of
    /// its shard (one that holds none is done, whether or not it said so).
    async fn announce_settled(self: Arc<Self>) {
        loop {
            tokio::time::sleep(SETTLED_EVERY).await;
            if !crate::replication::hand_overs_done(&self).await {
                continue;
            }
            let (epoch, clock, peers) = {
                let st = self.state.read();
                let Some(shard) = st.my_shard() else { continue };
                if !st.pending.is_empty() {
                    continue;
                }
                let peers: Vec<String> = st
                    .view
                    .replicas(shard)
                    .iter()
                    .filter(|p| **p != self.cfg.address)
                    .cloned()
                    .collect();
                (st.view.epoch, st.clock.clone(), peers)
            };
            for p in peers {
                let msg = self.envelope(Rpc::Settled {
                    epoch,
                    clock: clock.clone(),
                });
                tokio::spawn(self.transport.call(&p, msg, self.cfg.timeouts.sync));
            }
        }
    }

    fn broken_read_rule(&self) -> bool {
        cfg!(feature = "test-hooks") && self.cfg.broken_read_rule
    }

    fn ignores_old_contexts(&self) -> bool {
        cfg!(feature = "test-hooks") && self.cfg.ignore_old_contexts
    }

    /// Asks every shard peer at once; the first safe answer wins. `Some(None)` means a
    /// peer safely says the key does not exist.
    async fn fetch_from_peers(
        &self,
        key: &str,
        ctx: &Context,
        peers: Vec<String>,
    ) -> Option<Option<Version>> {
        let mut tasks = tokio::task::JoinSet::new();
        for p in peers {
            let msg = self.envelope(Rpc::Fetch {
                key: key.to_string(),
                ctx: ctx.clone(),
            });
            let fut = self.transport.call(&p, msg, self.cfg.timeouts.fetch);
            tasks.spawn(fut);
        }
        while let Some(r) = tasks.join_next().await {
            if let Ok(Ok(RpcReply::Fetched(v))) = r {
                return Some(v);
            }
        }
        None
    }

    /// Whether everything this replica holds now is synced to disk (at once unless
    /// commits are acknowledged before they are synced, `os` durability), waiting for
    /// the background sync until `deadline`.
    async fn synced_by(&self, deadline: std::time::Instant) -> bool {
        if !self.storage.acknowledges_unsynced() {
            return true;
        }
        let held = self.state.read().clock.clone();
        loop {
            let durable = self.storage.durable_clock().unwrap_or_default();
            if durable.covers(&held) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stores what a shard peer sent in view `epoch` (`job`: a `Sync` or `SyncRun`) and
    /// answers with our clock (and under `os` durability the clock of what is synced),
    /// or with our view when the sender is not a peer in it.
    async fn synced(
        &self,
        from: &str,
        epoch: u64,
        job: impl FnOnce(tokio::sync::oneshot::Sender<Result<VClock, CommitError>>) -> Job,
    ) -> RpcReply {
        let view = self.view();
        if epoch != view.epoch || view.shard_of_node(from).is_none() {
            return RpcReply::WrongEpoch {
                view: (*view).clone(),
            };
        }
        let by = tokio::time::Instant::now() + self.cfg.timeouts.sync;
        match self.committer.submit_by(Some(by), job).await {
            Ok(clock) => match self.storage.durable_clock() {
                Some(durable) => RpcReply::SyncedDurable { clock, durable },
                None => RpcReply::Synced { clock },
            },
            Err(e) => RpcReply::Error(e.to_string()),
        }
    }

    /// The one handler of node-to-node requests.
    pub async fn handle_rpc(self: &Arc<Self>, env: Envelope) -> RpcReply {
        let Envelope { from, rpc } = env;
        if let Some(epoch) = rpc.sender_epoch() {
            self.noted.lock().note(&from, epoch);
        }
        match rpc {
            Rpc::Key {
                epoch,
                hops,
                fwd,
                req,
            } => {
                let fwd = Forwarded {
                    deadline: self.arrival_deadline(fwd.sender, fwd.sent_ms, fwd.budget_ms),
                    write_id: fwd.write_id,
                };
                if epoch > self.view().epoch {
                    self.refresh_view_from(&from).await;
                }
                RpcReply::Key(self.route_key(req, hops, Some(fwd)).await)
            }
            Rpc::Fetch { key, ctx } => {
                let st = self.state.read();
                let Some(shard) = st.my_shard().filter(|s| *s == st.view.shard_of_key(&key)) else {
                    return RpcReply::Unsafe;
                };
                let complete = complete_for(&st, ctx.epoch, self.complete(&st));
                let ctx = ctx.in_epoch(st.view.epoch);
                let local = st.get(&key);
                if read_is_safe(&ctx, shard, &key, &st.clock, local) && epochs_allow(&ctx, complete)
                {
                    RpcReply::Fetched(local.cloned())
                } else {
                    RpcReply::Unsafe
                }
            }
            Rpc::Sync {
                epoch,
                versions,
                claim,
            } => {
                self.synced(&from, epoch, |reply| Job::Sync {
                    epoch,
                    versions,
                    claim,
                    reply,
                })
                .await
            }
            Rpc::SyncRun {
                epoch,
                versions,
                run,
                clock,
                claim,
            } => {
                self.synced(&from, epoch, |reply| Job::SyncRun {
                    epoch,
                    versions,
                    run,
                    clock,
                    claim,
                    reply,
                })
                .await
            }
            Rpc::Migrate {
                view,
                versions,
                budget_ms,
                sent_ms,
                sender,
            } => {
                let deadline = self.arrival_deadline(sender, sent_ms, budget_ms);
                // A view first heard of in a hand-over (its coordinator's word may never
                // come) is adopted like any other: with a hand-over of its own.
                if view != *self.view() {
                    self.offer_view(&from, view).await;
                }
                let by = tokio::time::Instant::from_std(deadline);
                match self
                    .committer
                    .submit_by(Some(by), |reply| Job::Migrate {
                        versions,
                        deadline: Some(deadline),
                        reply,
                    })
                    .await
                {
                    // The old owner drops what we accept on this answer: under `os`
                    // durability it waits until a sync holds it (else a power loss
                    // here would lose keys no node has any more).
                    Ok(refused) if self.synced_by(deadline).await => RpcReply::Migrated { refused },
                    Ok(_) => RpcReply::Error("the hand-over is not synced yet".into()),
                    Err(e) => RpcReply::Error(e.to_string()),
                }
            }
            Rpc::HandedOver { epoch } => {
                self.handed_over(epoch, from, Default::default()).await;
                RpcReply::Ack
            }
            Rpc::HandedOverWith { epoch, report } => {
                self.handed_over(epoch, from, report).await;
                RpcReply::Ack
            }
            Rpc::Settled { epoch, clock } => {
                let mut settled = self.settled.lock();
                if epoch == self.view().epoch {
                    if settled.epoch != epoch {
                        *settled = Settled {
                            epoch,
                            clocks: HashMap::new(),
                        };
                    }
                    settled.clocks.entry(from).or_insert(clock);
                }
                RpcReply::Ack
            }
            Rpc::Holds { epoch, shard } => {
                if epoch > self.view().epoch {
                    self.refresh_view_from(&from).await;
                }
                let st = self.state.read();
                let any = st.view.epoch != epoch
                    || st.my_shard() == Some(shard)
                    || st.keys.keys().any(|k| st.view.shard_of_key(k) == shard)
                    || self.in_quiet_period();
                let report = causeway_core::replica::hand_over_report(&st);
                if report == Default::default() {
                    RpcReply::Holds {
                        epoch: st.view.epoch,
                        any,
                    }
                } else {
                    RpcReply::HoldsWith {
                        epoch: st.view.epoch,
                        any,
                        report,
                    }
                }
            }
            Rpc::ApplyView { view } => {
                self.receive_view(view, false).await;
                self.view_reply()
            }
            Rpc::ViewCompleted { view } => {
                self.receive_view(view, true).await;
                self.view_reply()
            }
            Rpc::GetView => self.view_reply(),
            Rpc::Recall => RpcReply::Recalled {
                generation: self.noted.lock().of(&from),
            },
            Rpc::Settle => RpcReply::Settled {
                complete: self.settle(self.cfg.timeouts.settle).await,
            },
            Rpc::Status => RpcReply::Status(Box::new(self.self_status())),
            Rpc::ListHeld { shard, query } => {
                let (items, more) = self.held_page(shard, &query);
                RpcReply::Listed { items, more }
            }
            Rpc::List { shard, query, ctx } => match self.list_local(shard, &query, &ctx) {
                LocalPage::Page((items, more)) => RpcReply::Listed { items, more },
                LocalPage::Incomplete => RpcReply::Incomplete,
                LocalPage::Unsafe | LocalPage::NotReplica => RpcReply::Unsafe,
            },
            Rpc::KeyCount => {
                let st = self.state.read();
                RpcReply::KeyCount {
                    epoch: st.view.epoch,
                    shard: st.my_shard(),
                    count: st.live as u64,
                }
            }
        }
    }

    /// This replica's page of `shard` for a listing, or `None` when it is not a replica
    /// of `shard` or cannot honour `ctx` (see [`crate::listing`]).
    fn list_local(&self, shard: ShardNo, q: &crate::listing::Query, ctx: &Context) -> LocalPage {
        let st = self.state.read();
        if st.my_shard() != Some(shard) {
            return LocalPage::NotReplica;
        }
        let known = complete_for(&st, ctx.epoch, true);
        let ctx = ctx.in_epoch(st.view.epoch);
        if !self.broken_read_rule() {
            // A replica without its whole shard (hand-over running) would leave keys
            // out: the shard is then gathered from every holder (`list_gathered`).
            if !self.complete(&st) {
                return LocalPage::Incomplete;
            }
            if !known
                || !crate::listing::may_list(&ctx, shard, &st.clock)
                || !epochs_allow(&ctx, true)
            {
                return LocalPage::Unsafe;
            }
        }
        let keys = listing_keys(&st, q);
        LocalPage::Page(crate::listing::page(
            keys,
            q,
            |k| st.view.shard_of_key(k) == shard,
            read_now(&ctx),
        ))
    }

    /// One shard's page: from this node if it is a replica that can honour `ctx`, else
    /// from the other replicas in turn, within the proxy timeouts.
    async fn list_shard(
        &self,
        shard: ShardNo,
        q: &crate::listing::Query,
        ctx: &Context,
    ) -> Result<(Vec<(String, Version)>, bool), KeyError> {
        let mut incomplete = false;
        let mut refused = false;
        match self.list_local(shard, q, ctx) {
            LocalPage::Page(page) => return Ok(page),
            LocalPage::Incomplete => incomplete = true,
            LocalPage::Unsafe => refused = true,
            LocalPage::NotReplica => {}
        }
        let replicas: Vec<String> = self
            .view()
            .replicas(shard)
            .iter()
            .filter(|r| **r != self.cfg.address)
            .cloned()
            .collect();
        let t = &self.cfg.timeouts;
        // Half the budget for the replicas; the rest, if need be, for gathering.
        let deadline = tokio::time::Instant::now() + t.proxy_total / 2;
        for r in replicas {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let msg = self.envelope(Rpc::List {
                shard,
                query: q.clone(),
                ctx: ctx.clone(),
            });
            match self
                .transport
                .call(&r, msg, left.min(t.proxy_attempt))
                .await
            {
                Ok(RpcReply::Listed { items, more }) => return Ok((items, more)),
                Ok(RpcReply::Incomplete) => incomplete = true,
                Ok(_) => refused = true,
                Err(_) => {}
            }
        }
        if incomplete {
            // A view change's hand-over still runs: gather the shard from every node
            // that may hold its keys.
            return self.list_gathered(shard, q).await;
        }
        Err(if refused {
            KeyError::Unsatisfiable
        } else {
            KeyError::Unavailable
        })
    }

    /// A page of `shard` gathered while its hand-over runs: first from every node that
    /// may still hold keys of it (the view's other nodes, and the old owners its
    /// replicas wait for), then from every replica; each key is at an old owner until a
    /// replica has accepted it, so asking in that order misses none. The newest version
    /// of each key wins, deletes included (see [`crate::listing::union`]). Every one of
    /// them must answer (503 otherwise). The context is not checked here: the union
    /// holds every acknowledged write of the shard.
    async fn list_gathered(
        &self,
        shard: ShardNo,
        q: &crate::listing::Query,
    ) -> Result<(Vec<(String, Version)>, bool), KeyError> {
        let view = self.view();
        let replicas = view.replicas(shard).to_vec();
        let mut holders: std::collections::BTreeSet<String> = view
            .nodes
            .iter()
            .filter(|n| !replicas.contains(n))
            .cloned()
            .collect();
        for (_, report) in self.node_reports(&replicas).await {
            let Some(r) = report else {
                return Err(KeyError::Unavailable);
            };
            holders.extend(r.waiting_for);
        }
        let mut pages = self
            .gather_held(holders.into_iter().collect(), shard, q)
            .await?;
        pages.extend(self.gather_held(replicas, shard, q).await?);
        Ok(crate::listing::union(pages, q.limit))
    }

    /// Every node's held page of `shard`; `Err` if one does not answer in time.
    async fn gather_held(
        &self,
        nodes: Vec<String>,
        shard: ShardNo,
        q: &crate::listing::Query,
    ) -> Result<Vec<(Vec<(String, Version)>, bool)>, KeyError> {
        let mut asks = tokio::task::JoinSet::new();
        let mut pages = Vec::new();
        for n in nodes {
            if n == self.cfg.address {
                pages.push(self.held_page(shard, q));
                continue;
            }
            let msg = self.envelope(Rpc::ListHeld {
                shard,
                query: q.clone(),
            });
            // Each of the two rounds gets a sixth of the budget (after the replicas'
            // half and the status round), so a listing still answers in time.
            asks.spawn(
                self.transport
                    .call(&n, msg, self.cfg.timeouts.proxy_total / 6),
            );
        }
        while let Some(r) = asks.join_next().await {
            match r {
                Ok(Ok(RpcReply::Listed { items, more })) => pages.push((items, more)),
                _ => return Err(KeyError::Unavailable),
            }
        }
        Ok(pages)
    }

    /// What this node holds of `shard` for a gathered listing (see [`Rpc::ListHeld`]).
    fn held_page(
        &self,
        shard: ShardNo,
        q: &crate::listing::Query,
    ) -> (Vec<(String, Version)>, bool) {
        let st = self.state.read();
        let keys = listing_keys(&st, q);
        crate::listing::held_page(
            keys,
            q,
            |k| st.view.shard_of_key(k) == shard,
            committer::hlc_now(),
        )
    }

    /// A page of the keys of every shard, merged in byte order, and the context after
    /// it (which has seen every listed version).
    pub async fn list(
        self: &Arc<Self>,
        q: crate::listing::Query,
        ctx: Context,
    ) -> Result<(Vec<(String, Version)>, Option<String>, Context), KeyError> {
        let view = self.view();
        let mut shards = tokio::task::JoinSet::new();
        for s in 1..=view.shard_count() as ShardNo {
            let (me, q, ctx) = (self.clone(), q.clone(), ctx.clone());
            shards.spawn(async move { (s, me.list_shard(s, &q, &ctx).await) });
        }
        let mut pages = Vec::new();
        let mut failure = None;
        while let Some(done) = shards.join_next().await {
            match done {
                Ok((_, Ok(page))) => pages.push(page),
                // 503 (a shard unreachable) wins over 400.
                Ok((_, Err(e))) => {
                    if failure != Some(KeyError::Unavailable) {
                        failure = Some(e)
                    }
                }
                Err(_) => failure = Some(KeyError::Unavailable),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let (items, next) = crate::listing::merge(pages, q.limit);
        let mut out = ctx.in_epoch(view.epoch);
        let items = crate::listing::leave_out_expired(items, read_now(&ctx), &mut out);
        for (k, v) in &items {
            out.observe(v, view.shard_of_key(k), k);
        }
        Ok((items, next, out))
    }

    /// What this node says about itself (see [`crate::status`]).
    pub fn self_status(&self) -> crate::status::NodeStatus {
        let m = &self.metrics;
        let (epoch, shard, keys, peers, handing_over, waiting_for) = {
            let st = self.state.read();
            let shard = st.my_shard();
            let peers: Vec<String> = shard
                .map(|s| {
                    st.view
                        .replicas(s)
                        .iter()
                        .filter(|p| **p != self.cfg.address)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            // Counting means a walk of every key: only while a hand-over runs.
            let handing_over = self.migrate_lock.try_lock().is_err();
            let foreign = if handing_over {
                st.keys
                    .keys()
                    .filter(|k| Some(st.view.shard_of_key(k)) != shard)
                    .count() as u64
            } else {
                0
            };
            let waiting: Vec<String> = st.pending.iter().cloned().collect();
            (
                st.view.epoch,
                shard,
                st.live as u64,
                peers,
                foreign,
                waiting,
            )
        };
        let behind = peers
            .into_iter()
            .map(|peer| {
                let labels = crate::metrics::PeerLabels { peer };
                let v = m.behind_versions.get_or_create(&labels).get().max(0) as u64;
                let b = m.behind_bytes.get_or_create(&labels).get().max(0) as u64;
                let s = m.behind_seconds.get_or_create(&labels).get().max(0) as u64;
                (labels.peer, v, b, s)
            })
            .collect();
        crate::status::NodeStatus {
            address: self.cfg.address.clone(),
            epoch,
            shard,
            keys,
            ready: self.failure().is_none(),
            durable: self.is_durable(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            requests: m.answers.get(),
            client_errors: m.client_errors.get(),
            server_errors: m.server_errors.get(),
            replication_bytes: m.replication_bytes.get(),
            behind,
            handing_over,
            waiting_for,
        }
    }

    /// The cluster status document: every node of the view (and this one) asked at
    /// once, each for at most [`STATUS_TIMEOUT`]; a node that does not answer is down.
    pub async fn cluster_status(&self) -> serde_json::Value {
        let view = self.view();
        let mut nodes = view.nodes.clone();
        if !nodes.contains(&self.cfg.address) {
            nodes.push(self.cfg.address.clone());
        }
        let reports = self.node_reports(&nodes).await;
        crate::status::assemble(&view, &self.cfg.address, &reports)
    }

    /// What each of `nodes` says about itself (this node included), each asked for at
    /// most [`STATUS_TIMEOUT`], all at once; `None` for a node that did not answer.
    pub async fn node_reports(
        &self,
        nodes: &[String],
    ) -> Vec<(String, Option<crate::status::NodeStatus>)> {
        let mut asks = tokio::task::JoinSet::new();
        for (i, n) in nodes.iter().enumerate() {
            if *n == self.cfg.address {
                continue;
            }
            let call = self
                .transport
                .call(n, self.envelope(Rpc::Status), STATUS_TIMEOUT);
            asks.spawn(async move { (i, call.await) });
        }
        let mut reports: Vec<(String, Option<crate::status::NodeStatus>)> =
            nodes.iter().map(|n| (n.clone(), None)).collect();
        if let Some(me) = nodes.iter().position(|n| *n == self.cfg.address) {
            reports[me].1 = Some(self.self_status());
        }
        while let Some(r) = asks.join_next().await {
            if let Ok((i, Ok(RpcReply::Status(s)))) = r {
                reports[i].1 = Some(*s);
            }
        }
        reports
    }

    /// Live keys of `shard`, from this node if it is a replica, else from one that is.
    pub async fn shard_key_count(&self, shard: ShardNo) -> Option<u64> {
        let (mine, count, replicas) = {
            let st = self.state.read();
            (
                st.my_shard() == Some(shard),
                st.live as u64,
                st.view.replicas(shard).to_vec(),
            )
        };
        if mine {
            return Some(count);
        }
        let deadline = tokio::time::Instant::now() + self.cfg.timeouts.proxy_total;
        for r in replicas {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let msg = self.envelope(Rpc::KeyCount);
            if let Ok(RpcReply::KeyCount { count, .. }) = self
                .transport
                .call(&r, msg, left.min(self.cfg.timeouts.proxy_attempt))
                .await
            {
                return Some(count);
            }
        }
        None
    }
}

impl crate::transport::Handler for Node {
    fn address(&self) -> &str {
        Node::address(self)
    }

    fn handle(self: Arc<Self>, msg: Envelope) -> crate::transport::ReplyFuture {
        Box::pin(async move { self.handle_rpc(msg).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_not_committed_in_time_or_without_a_committer_is_unavailable() {
        for e in [
            CommitError::Expired,
            CommitError::TimedOut,
            CommitError::Died("boom".into()),
            CommitError::Closed,
            CommitError::UnknownView(2),
        ] {
            assert_eq!(write_error(e), Some(KeyError::Unavailable));
        }
        assert_eq!(write_error(CommitError::NotOwner(3)), None);
    }

    #[test]
    fn a_client_request_ends_a_second_before_the_clients_5_s() {
        let now = std::time::Instant::now();
        let t = Timeouts::default();
        assert!(client_deadline(&t, now) + Duration::from_secs(1) <= now + Duration::from_secs(5));
    }
}
