//! The committer: the single writer of a replica's state, and its group commit.
//!
//! Every change (client writes, replicated and migrated versions, removals, a new
//! view) is a [`Job`] sent to one dedicated thread. The thread drains whatever jobs
//! are waiting, computes their effects against the current state plus the batch so
//! far, writes the whole batch to disk with one sync, and only then applies it to the
//! in-memory state and answers the jobs. So:
//! - a write is acknowledged only after it is durable, and many writes share a sync;
//! - nothing that is not durable is ever visible to readers or to replication, so a
//!   crash can only lose writes nobody saw (and their counters may be reused safely);
//! - counters are assigned in one place, in order;
//! - a removal (a handed-over key, a collected tombstone) applies only in the view it
//!   was decided in ([`removal_holds`]): one that meets a newer view is skipped.
//!
//! The queue is bounded ([`QUEUE`] jobs): a submitter waits for room, and a write
//! waits (for room and for its commit) only until its deadline, then gives up with
//! [`CommitError::TimedOut`]; a stalled disk therefore gives errors, not hangs, and
//! holds no more than a queue's worth of jobs. A committer thread that panics is
//! recorded ([`Committer::failure`]); every later job fails with
//! [`CommitError::Died`], and the server stops the node (see `server::run`).

use super::state::{origin_for, State};
use super::watches::Watches;
use crate::causal::context::prior_past;
use crate::causal::{Context, Dot, VClock, Value, Version, WriteId};
use crate::placement::View;
use crate::storage::{Batch, Storage, StorageError};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Most jobs folded into one sync.
const MAX_BATCH: usize = 4096;
/// Most jobs waiting for the committer (besides the batch it is committing): enough to
/// fill the next batch, so a busy committer never waits for submitters.
pub const QUEUE: usize = MAX_BATCH;
pub use crate::causal::version::{HLC_SHIFT, MAX_TS};

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("this node does not own the key in view epoch {0}")]
    NotOwner(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the node is shutting down")]
    Closed,
    #[error("the forwarded write arrived after its sender gave up on it")]
    Expired,
    #[error("the change was not committed before its deadline")]
    TimedOut,
    #[error("the committer thread died: {0}")]
    Died(String),
}

/// A client write's result.
#[derive(Debug)]
pub struct WriteDone {
    /// The key held a live value before this write.
    pub existed: bool,
    /// The write's dot, timestamp and view epoch (what the client's context learns).
    pub dot: Dot,
    pub ts: u64,
    pub epoch: u64,
}

pub enum Job {
    /// A client PUT (`Some`) or DELETE (`None`) of a key this node owns.
    Write {
        key: String,
        value: Option<Value>,
        ctx: Context,
        /// When a forwarded write must no longer be applied (its sender gave up).
        deadline: Option<std::time::Instant>,
        /// The identity a forwarding node gave the write (else this replica makes one).
        id: Option<WriteId>,
        /// A PUT that expires this many milliseconds after its timestamp.
        ttl_ms: Option<u64>,
        reply: oneshot::Sender<Result<WriteDone, CommitError>>,
    },
    /// Versions from a shard peer, with the peer's clock when the batch was complete
    /// relative to `assumed` (our clock as the peer last knew it).
    Sync {
        /// The view epoch the peer sent them in (a claim of another one is ignored).
        epoch: u64,
        versions: Vec<(String, Version)>,
        claim: Option<(VClock, VClock)>,
        reply: oneshot::Sender<Result<VClock, CommitError>>,
    },
    /// Versions handed over by a previous owner during a view change; each accepted
    /// one is re-dotted as this replica's own. Replies with the keys refused (not owned).
    Migrate {
        versions: Vec<(String, Version)>,
        /// After this the hand-over is refused whole (its sender gave up on it).
        deadline: Option<std::time::Instant>,
        reply: oneshot::Sender<Result<Vec<String>, CommitError>>,
    },
    /// Removes keys whose version is still the given one (moved away, or collected),
    /// if the view is still the one the removal was decided in (see [`removal_holds`]).
    Remove {
        keys: Vec<(String, WriteId)>,
        /// The epoch of the view the removal was decided in.
        epoch: u64,
        reply: oneshot::Sender<Result<usize, CommitError>>,
    },
    /// Reclaims expired writes whose version is still the given one: each becomes a
    /// tombstone of the same write ([`Version::reclaimed`]), later collected like any.
    Reclaim {
        keys: Vec<(String, WriteId)>,
        /// The timestamp they must have expired by.
        now: u64,
        reply: oneshot::Sender<Result<usize, CommitError>>,
    },
    /// These nodes told us, in view `epoch`, that they hold no more keys to hand over
    /// to this node's shard.
    HandedOver {
        epoch: u64,
        nodes: Vec<String>,
        reply: oneshot::Sender<Result<(), CommitError>>,
    },
    /// Installs a newer view. Replies whether it was installed.
    SetView {
        view: View,
        reply: oneshot::Sender<Result<bool, CommitError>>,
    },
}

/// Handle to send jobs; cloneable.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
    /// Why the committer thread died (`None` while it runs).
    failure: watch::Receiver<Option<String>>,
}

impl Committer {
    /// Starts the committer thread. `commits` is bumped after every applied batch.
    /// Waiters in `watches` are woken for every key a batch installs.
    pub fn start(
        state: Arc<RwLock<State>>,
        storage: Arc<Storage>,
        watches: Arc<Watches>,
    ) -> (Committer, watch::Receiver<u64>) {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let (seq_tx, seq_rx) = watch::channel(0u64);
        let (failed_tx, failure) = watch::channel(None);
        std::thread::Builder::new()
            .name("causeway-committer".into())
            .spawn(move || {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(rx, state, storage, seq_tx, &watches)
                }));
                if let Err(panic) = ran {
                    let why = panic_message(panic.as_ref());
                    tracing::error!(error = %why, "the committer thread died");
                    failed_tx.send_replace(Some(why));
                }
            })
            .expect("spawn committer thread");
        (Committer { tx, failure }, seq_rx)
    }

    /// Why the committer thread died, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Resolves with the reason once the committer thread has died (never while it runs).
    pub async fn died(&self) -> String {
        let mut f = self.failure.clone();
        let why = f.wait_for(Option::is_some).await.map(|why| why.clone());
        match why {
            Ok(why) => why.unwrap_or_default(),
            // The thread ended without a panic: every handle was dropped, so nobody waits.
            Err(_) => std::future::pending().await,
        }
    }

    /// Submits a job and waits for its result, however long that takes.
    pub async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CommitError>>) -> Job,
    ) -> Result<T, CommitError> {
        self.submit_by(None, make).await
    }

    /// Submits a job and waits for its result until `deadline` (waiting for room in
    /// the queue included); then [`CommitError::TimedOut`]. A job already queued may
    /// still be applied after that (as a write whose answer was lost may); a write
    /// should carry the same deadline for the committer to drop it if it is not begun.
    pub async fn submit_by<T>(
        &self,
        deadline: Option<tokio::time::Instant>,
        make: impl FnOnce(oneshot::Sender<Result<T, CommitError>>) -> Job,
    ) -> Result<T, CommitError> {
        let (tx, rx) = oneshot::channel();
        let job = make(tx);
        let sent = match deadline {
            Some(d) => match tokio::time::timeout_at(d, self.tx.send(job)).await {
                Ok(sent) => sent,
                Err(_) => return Err(CommitError::TimedOut),
            },
            None => self.tx.send(job).await,
        };
        if sent.is_err() {
            return Err(self.gone().await);
        }
        let answer = match deadline {
            Some(d) => match tokio::time::timeout_at(d, rx).await {
                Ok(answer) => answer,
                Err(_) => return Err(CommitError::TimedOut),
            },
            None => rx.await,
        };
        match answer {
            Ok(result) => result,
            Err(_) => Err(self.gone().await),
        }
    }

    /// Why a job got no answer: the thread is gone. A panicking thread drops its jobs
    /// while unwinding, just before it records why; wait for that record.
    async fn gone(&self) -> CommitError {
        let mut f = self.failure.clone();
        let why = f.wait_for(Option::is_some).await.map(|why| why.clone());
        match why {
            Ok(why) => CommitError::Died(why.unwrap_or_default()),
            Err(_) => CommitError::Closed,
        }
    }
}

/// The text of a panic's payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "panic".to_string(),
    }
}

/// Effects of one batch, computed before anything is written.
struct Pending {
    versions: HashMap<String, Option<Version>>,
    clock: VClock,
    last_ts: u64,
    view: Option<View>,
    /// The new set of nodes that may still hand keys over (when it changed).
    handover: Option<std::collections::BTreeSet<String>>,
    clock_dirty: bool,
}

impl Pending {
    fn new(st: &State) -> Pending {
        Pending {
            versions: HashMap::new(),
            clock: st.clock.clone(),
            last_ts: st.last_ts,
            view: None,
            handover: None,
            clock_dirty: false,
        }
    }

    fn get<'a>(&'a self, st: &'a State, key: &str) -> Option<&'a Version> {
        match self.versions.get(key) {
            Some(v) => v.as_ref(),
            None => st.get(key),
        }
    }

    fn next_dot(&mut self, st: &State) -> Dot {
        let origin = st.origin();
        let counter = self.clock.get(origin) + 1;
        self.clock.raise(origin, counter);
        self.clock_dirty = true;
        Dot { origin, counter }
    }

    fn observe_ts(&mut self, ts: u64) {
        if ts > self.last_ts {
            self.last_ts = ts;
        }
    }
}

enum Reply {
    Write(
        oneshot::Sender<Result<WriteDone, CommitError>>,
        Result<WriteDone, CommitError>,
    ),
    Sync(oneshot::Sender<Result<VClock, CommitError>>),
    Migrate(
        oneshot::Sender<Result<Vec<String>, CommitError>>,
        Vec<String>,
    ),
    Remove(oneshot::Sender<Result<usize, CommitError>>, usize),
    HandedOver(oneshot::Sender<Result<(), CommitError>>),
    SetView(oneshot::Sender<Result<bool, CommitError>>, bool),
}

fn run(
    mut rx: mpsc::Receiver<Job>,
    state: Arc<RwLock<State>>,
    storage: Arc<Storage>,
    seq: watch::Sender<u64>,
    watches: &Watches,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // A view change is a batch of its own: the jobs after it must see the new view.
        let mut segment = Vec::new();
        for job in jobs {
            if matches!(job, Job::SetView { .. }) {
                if !segment.is_empty() {
                    commit_batch(
                        std::mem::take(&mut segment),
                        &state,
                        &storage,
                        &seq,
                        watches,
                    );
                }
                commit_batch(vec![job], &state, &storage, &seq, watches);
            } else {
                segment.push(job);
            }
        }
        if !segment.is_empty() {
            commit_batch(segment, &state, &storage, &seq, watches);
        }
    }
}

fn commit_batch(
    jobs: Vec<Job>,
    state: &Arc<RwLock<State>>,
    storage: &Storage,
    seq: &watch::Sender<u64>,
    watches: &Watches,
) {
    let mut replies = Vec::with_capacity(jobs.len());
    let pending = {
        let st = state.read();
        let mut p = Pending::new(&st);
        for job in jobs {
            replies.push(compute(job, &st, &mut p));
        }
        p
    };
    let result = {
        let puts: Vec<(&str, &Version)> = pending
            .versions
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.as_str(), v)))
            .collect();
        let removes: Vec<&str> = pending
            .versions
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.as_str())
            .collect();
        let batch = Batch {
            puts,
            removes,
            clock: pending.clock_dirty.then_some(&pending.clock),
            last_ts: Some(pending.last_ts),
            view: pending.view.as_ref(),
            pending: pending.handover.as_ref(),
        };
        if batch.puts.is_empty()
            && batch.removes.is_empty()
            && batch.clock.is_none()
            && batch.view.is_none()
            && batch.pending.is_none()
        {
            Ok(())
        } else {
            storage.commit(&batch)
        }
    };
    match result {
        Ok(()) => {
            let view_changed = pending.view.is_some();
            let touched: Vec<String> = {
                let mut st = state.write();
                // Under the write lock: a waiter that read the old state registered
                // before that read, so it is counted here (see `watches`).
                let touched = if watches.any() {
                    pending.versions.keys().cloned().collect()
                } else {
                    Vec::new()
                };
                for (k, v) in pending.versions {
                    st.set(&k, v);
                }
                // The pending clock started from this one and only grew, unless a new
                // view reset it (see `Job::SetView`).
                st.clock = pending.clock;
                st.last_ts = st.last_ts.max(pending.last_ts);
                if let Some(v) = pending.view {
                    st.view = Arc::new(v);
                }
                if let Some(h) = pending.handover {
                    st.pending = h;
                }
                touched
            };
            seq.send_modify(|s| *s += 1);
            if view_changed {
                // Keys may have moved: every waiter checks where its key lives now.
                watches.wake_all();
            } else {
                watches.touched(touched.iter().map(String::as_str));
            }
            let clock = state.read().clock.clone();
            for r in replies {
                match r {
                    Reply::Write(tx, res) => drop(tx.send(res)),
                    Reply::Sync(tx) => drop(tx.send(Ok(clock.clone()))),
                    Reply::Migrate(tx, refused) => drop(tx.send(Ok(refused))),
                    Reply::Remove(tx, n) => drop(tx.send(Ok(n))),
                    Reply::HandedOver(tx) => drop(tx.send(Ok(()))),
                    Reply::SetView(tx, b) => drop(tx.send(Ok(b))),
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "commit failed; answering the batch with an error");
            let msg = e.to_string();
            let err = || {
                CommitError::Storage(StorageError::Engine(fjall::Error::Io(
                    std::io::Error::other(msg.clone()),
                )))
            };
            for r in replies {
                match r {
                    Reply::Write(tx, _) => drop(tx.send(Err(err()))),
                    Reply::Sync(tx) => drop(tx.send(Err(err()))),
                    Reply::Migrate(tx, _) => drop(tx.send(Err(err()))),
                    Reply::Remove(tx, _) => drop(tx.send(Err(err()))),
                    Reply::HandedOver(tx) => drop(tx.send(Err(err()))),
                    Reply::SetView(tx, _) => drop(tx.send(Err(err()))),
                }
            }
        }
    }
}

fn compute(job: Job, st: &State, p: &mut Pending) -> Reply {
    match job {
        Job::Write {
            key,
            value,
            ctx,
            deadline,
            id,
            ttl_ms,
            reply,
        } => {
            let res = if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                Err(CommitError::Expired)
            } else {
                write(&key, value, ttl_ms, ctx, id, st, p)
            };
            Reply::Write(reply, res)
        }
        Job::Sync {
            epoch: sent_in,
            versions,
            claim,
            reply,
        } => {
            let epoch = st.view.epoch;
            for (key, mut incoming) in versions {
                p.observe_ts(incoming.id.ts);
                // A peer still handing over keys of an old view may send some this
                // shard does not own; their old owners hand them to the right place.
                if !st.owns(&key) {
                    continue;
                }
                if incoming.epoch != epoch {
                    incoming.epoch = epoch;
                    incoming.past = prior_past();
                }
                let current = p.get(st, &key);
                // Our clock covers this write yet we hold nothing for the key: we held
                // it or a version that superseded it, and that was collected (a delete
                // whose tombstone every replica had). The message is a late one (held
                // in the network, say); taking the version back would undo the delete.
                if current.is_none() && p.clock.contains(incoming.dot) {
                    continue;
                }
                let shard = st.view.shard_of_key(&key);
                if let Some(mut v) = crate::causal::version::merge(current, &incoming, shard) {
                    if sent_in != epoch {
                        // Sent before a view change that reached us first: its claim is
                        // ignored, so its dot may be one no clock of this epoch covers
                        // (ours may have been reset), and peers would send it back and
                        // forth forever. Keep it as our own, as a hand-over does.
                        v.dot = p.next_dot(st);
                    }
                    p.versions.insert(key, Some(v));
                }
            }
            if let Some((clock, assumed)) = claim.filter(|_| sent_in == epoch) {
                // The peer's claim holds only if we still have what it assumed we have
                // (a replica restarted with an empty disk does not), and only in the
                // view it was made in (a new view may have reset our clock).
                if p.clock.covers(&assumed) && !p.clock.covers(&clock) {
                    p.clock.join(&clock);
                    p.clock_dirty = true;
                }
            }
            Reply::Sync(reply)
        }
        Job::Migrate {
            versions,
            deadline,
            reply,
        } => {
            if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                let all = versions.into_iter().map(|(k, _)| k).collect();
                return Reply::Migrate(reply, all);
            }
            let mut refused = Vec::new();
            for (key, incoming) in versions {
                if !st.owns(&key) {
                    refused.push(key);
                    continue;
                }
                p.observe_ts(incoming.id.ts);
                if p.get(st, &key).is_some_and(|cur| cur.id >= incoming.id) {
                    continue;
                }
                let dot = p.next_dot(st);
                let v = Version {
                    id: incoming.id,
                    dot,
                    epoch: st.view.epoch,
                    past: prior_past(),
                    value: incoming.value,
                };
                p.versions.insert(key, Some(v));
            }
            Reply::Migrate(reply, refused)
        }
        Job::Reclaim { keys, now, reply } => {
            let mut n = 0;
            for (key, id) in keys {
                let Some(cur) = p.get(st, &key) else { continue };
                if cur.id == id && cur.expires().is_some_and(|at| now >= at) {
                    let tomb = cur.reclaimed();
                    p.versions.insert(key, Some(tomb));
                    n += 1;
                }
            }
            Reply::Remove(reply, n)
        }
        Job::Remove { keys, epoch, reply } => {
            let mut n = 0;
            for (key, id) in keys {
                if removal_holds(epoch, st.view.epoch, p.get(st, &key), id) {
                    p.versions.insert(key, None);
                    n += 1;
                }
            }
            Reply::Remove(reply, n)
        }
        Job::HandedOver {
            epoch,
            nodes,
            reply,
        } => {
            if epoch == st.view.epoch {
                let mut h = p.handover.clone().unwrap_or_else(|| st.pending.clone());
                let before = h.len();
                for n in &nodes {
                    h.remove(n);
                }
                if h.len() != before {
                    p.handover = Some(h);
                }
            }
            Reply::HandedOver(reply)
        }
        Job::SetView { view, reply } => {
            let newer = view.rank() > st.view.rank();
            if newer {
                let outstanding = p.handover.as_ref().unwrap_or(&st.pending);
                p.handover = Some(view.hand_over_sources(&st.view, &st.me, outstanding));
                // Our clock covers writes of keys we no longer hold (handed over when
                // we left their shard, or covered by a peer's claim). In a view that may
                // give us such keys again it would tell our new peers, who send only
                // what it does not cover, that we have them. So start a clock that
                // covers only what we hold: re-dot every version as this epoch's own
                // (as a hand-over does), and our peers send us everything else.
                if !view.owns_only_what_it_owned_in(&st.view, &st.me) {
                    let origin = origin_for(st.incarnation, view.epoch);
                    let mut counter = p.clock.get(origin);
                    for (key, v) in &st.keys {
                        counter += 1;
                        let v = Version {
                            dot: Dot { origin, counter },
                            epoch: view.epoch,
                            past: prior_past(),
                            ..v.clone()
                        };
                        p.versions.insert(key.to_string(), Some(v));
                    }
                    p.clock = [(origin, counter)].into_iter().collect();
                    p.clock_dirty = true;
                }
                p.view = Some(view);
            }
            Reply::SetView(reply, newer)
        }
    }
}

/// Whether a removal of a key's version `id`, decided in the view with epoch
/// `decided_in`, still holds when the view in force has epoch `now_in` and the key's
/// version is `current`: only in the view it was decided in, and only while the version
/// is still that one.
///
/// A hand-over drops a key once a new owner has it; but a newer view that overtakes the
/// hand-over may make this node an owner of the key again. It then holds the key
/// (re-dotted for the new view, or merged with the copies its new peers and the key's
/// other old owners send it), its clock covers every copy, and no peer would ever send
/// the key back: dropping it then would leave this replica short of the key for good
/// (or, when the other side handed the key back here and dropped it, lose it). Likewise
/// a tombstone is collected because the shard peers of one view hold it. So a removal
/// that meets a newer view is skipped; the hand-over looks at its keys again in the
/// view now in force (and the collector at its tombstones).
pub fn removal_holds(decided_in: u64, now_in: u64, current: Option<&Version>, id: WriteId) -> bool {
    decided_in == now_in && current.is_some_and(|v| v.id == id)
}

/// Applies a client write. `forwarded` is the identity a forwarding node gave it; such
/// a write may be a second copy of one applied elsewhere (an attempt whose answer was
/// lost), or may be older than what this replica holds, so it merges like replicated
/// versions do. A write this replica names itself is newer than everything it holds.
fn write(
    key: &str,
    value: Option<Value>,
    ttl_ms: Option<u64>,
    ctx: Context,
    forwarded: Option<WriteId>,
    st: &State,
    p: &mut Pending,
) -> Result<WriteDone, CommitError> {
    let view = &st.view;
    let shard = match st.my_shard() {
        Some(s) if s == view.shard_of_key(key) => s,
        _ => return Err(CommitError::NotOwner(view.epoch)),
    };
    // A context of a later view than ours (we lag) names nothing we can record.
    let ctx = if ctx.epoch > view.epoch {
        Context {
            epoch: view.epoch,
            ts: ctx.ts,
            ..Context::default()
        }
    } else {
        ctx.in_epoch(view.epoch)
    };
    let dot = p.next_dot(st);
    let id = forwarded.unwrap_or_else(|| WriteId {
        ts: next_ts(p.last_ts, ctx.ts),
        origin: dot.origin,
        counter: dot.counter,
    });
    p.observe_ts(id.ts);
    // Expiry is part of the write: its own timestamp plus the ttl, the same on every
    // replica (and on every attempt of a forwarded write, which keeps its id).
    let value = match (value, ttl_ms) {
        (Some(v), Some(ttl)) => Some(Value::expiring(
            v,
            id.ts.saturating_add(crate::causal::version::ts_of_ms(ttl)),
        )),
        (Some(Value::Expiring(v, _)), None) => Some(*v),
        (Some(v), None) => Some(v),
        (None, _) => None,
    };
    // The write's causal past: what the client depended on, and what the version it
    // replaces already superseded.
    let mut past = ctx.all_deps();
    // Our own earlier writes are implied by the new dot.
    past.remove(shard, dot.origin);
    let version = Version {
        id,
        dot,
        epoch: view.epoch,
        past,
        value,
    };
    let prev = p.get(st, key);
    // Whether the key existed, as the client knows it: its context may name a later
    // write of the key than this replica has received (made through another replica).
    let known = ctx.recent_of(shard, key).filter(|r| {
        !p.clock.contains(r.dot)
            && !prev.is_some_and(|v| v.supersedes(shard, r.dot.origin, r.dot.counter))
    });
    let existed = match known {
        Some(r) => r.live,
        // An expired write left no key behind.
        None => prev.is_some_and(|v| v.is_live(id.ts)),
    };
    let survivor = match crate::causal::version::merge(prev, &version, shard) {
        Some(v) => v,
        // What this replica holds wins; it now also supersedes this write.
        None => {
            let mut v = prev.expect("merge keeps an existing version").clone();
            v.absorb(shard, &version);
            v
        }
    };
    let done = WriteDone {
        existed,
        dot,
        ts: id.ts,
        epoch: view.epoch,
    };
    p.versions.insert(key.to_string(), Some(survivor));
    Ok(done)
}

/// The timestamp for a new write: after the wall clock, after `last` (the last one
/// this node issued or saw) and after the client's context timestamp, however far
/// ahead of our clock that lies (another node's clock may be minutes ahead): a causal
/// successor is always ordered after what it follows. Only a timestamp no node could
/// have issued (at or above 2^53) is ignored.
pub fn next_ts(last: u64, ctx_ts: u64) -> u64 {
    let ctx_ts = if ctx_ts < MAX_TS { ctx_ts } else { 0 };
    hlc_now()
        .max(ctx_ts.saturating_add(1))
        .max(last.saturating_add(1))
}

/// Hybrid logical clock reading: wall-clock milliseconds shifted left [`HLC_SHIFT`] bits.
pub fn hlc_now() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms << HLC_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::Deps;

    #[test]
    fn a_successor_follows_a_timestamp_minutes_ahead() {
        for minutes in [1u64, 2, 10, 60 * 24] {
            let ahead = hlc_now() + ((minutes * 60_000) << HLC_SHIFT);
            assert!(next_ts(0, ahead) > ahead, "{minutes} min ahead");
            assert!(
                next_ts(ahead, 0) > ahead,
                "{minutes} min ahead, seen before"
            );
        }
    }

    #[test]
    fn timestamps_only_grow() {
        let mut last = 0;
        for ctx in [0, 5, hlc_now() + (1 << 40), 3] {
            let ts = next_ts(last, ctx);
            assert!(ts > last && ts > ctx);
            last = ts;
        }
    }

    #[test]
    fn a_removal_holds_only_in_its_view_and_for_its_version() {
        let id = |counter| WriteId {
            ts: 10,
            origin: 1,
            counter,
        };
        let v = Version {
            id: id(1),
            dot: Dot {
                origin: 2,
                counter: 7,
            },
            epoch: 5,
            past: Deps::new(),
            value: Some(Value::Str("x".into())),
        };
        assert!(removal_holds(5, 5, Some(&v), id(1)));
        // A newer view overtook the hand-over (it may give the key back to this node).
        assert!(!removal_holds(4, 5, Some(&v), id(1)));
        // The key changed since, or is gone already.
        assert!(!removal_holds(5, 5, Some(&v), id(2)));
        assert!(!removal_holds(5, 5, None, id(1)));
    }

    #[test]
    fn a_timestamp_no_node_could_issue_is_ignored() {
        let ts = next_ts(0, u64::MAX - 1);
        assert!(ts < MAX_TS);
    }
}
