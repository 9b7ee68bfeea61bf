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

use super::watches::Watches;
use crate::causal::{Context, VClock, Value, Version, WriteId};
use crate::placement::View;
use crate::state::State;
use crate::storage::{Batch, PeerClocks, Storage, StorageError};
pub use causeway_core::changes::{removal_holds, WriteDone};
use causeway_core::changes::{Changes, ClientWrite, KeyRun, Refused};
use causeway_core::recall::Seen;
use causeway_core::replica::HandOverReport;
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
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
    #[error("the client's context is of a view outside this node's line of views (epoch {0})")]
    UnknownView(u64),
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
    /// A run of a shard peer's keys in a full transfer (see
    /// `causeway_core::changes::Changes::sync_run`): merged like `Sync`, and what we
    /// hold in the run that the peer saw deleted goes. Then the claim, as `Sync`'s.
    SyncRun {
        epoch: u64,
        versions: Vec<(String, Version)>,
        run: KeyRun,
        /// The peer's clock when it read the run.
        clock: VClock,
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
    /// to this node's shard; what they reported with it (see
    /// `causeway_core::replica::HandOverReport`).
    HandedOver {
        epoch: u64,
        nodes: Vec<String>,
        report: HandOverReport,
        reply: oneshot::Sender<Result<(), CommitError>>,
    },
    /// Installs a view that wins over the one in force, or records that the view in
    /// force completed (see `causeway_core::views`). Replies whether it was installed.
    SetView {
        view: View,
        completed: bool,
        reply: oneshot::Sender<Result<bool, CommitError>>,
    },
    /// Records what this node keeps of other nodes: the clocks shard peers
    /// acknowledged (see `node::replication`) and the views nodes were seen in (see
    /// `causeway_core::recall`), whichever is given; replica state is not touched.
    PeerRecords {
        clocks: Option<PeerClocks>,
        seen: Option<Seen>,
        reply: oneshot::Sender<Result<(), CommitError>>,
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
        batches: Counter,
    ) -> (Committer, watch::Receiver<u64>) {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let (seq_tx, seq_rx) = watch::channel(0u64);
        let (failed_tx, failure) = watch::channel(None);
        std::thread::Builder::new()
            .name("causeway-committer".into())
            .spawn(move || {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(rx, state, storage, seq_tx, &watches, &batches)
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
    PeerRecords(oneshot::Sender<Result<(), CommitError>>),
}

fn run(
    mut rx: mpsc::Receiver<Job>,
    state: Arc<RwLock<State>>,
    storage: Arc<Storage>,
    seq: watch::Sender<u64>,
    watches: &Watches,
    batches: &Counter,
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
                        batches,
                    );
                }
                commit_batch(vec![job], &state, &storage, &seq, watches, batches);
            } else {
                segment.push(job);
            }
        }
        if !segment.is_empty() {
            commit_batch(segment, &state, &storage, &seq, watches, batches);
        }
    }
}

fn commit_batch(
    jobs: Vec<Job>,
    state: &Arc<RwLock<State>>,
    storage: &Storage,
    seq: &watch::Sender<u64>,
    watches: &Watches,
    batches: &Counter,
) {
    let mut replies = Vec::with_capacity(jobs.len());
    let (mut peer_clocks, mut seen) = (None, None);
    let pending = {
        let st = state.read();
        let mut p = Changes::new(&st);
        for job in jobs {
            replies.push(match job {
                Job::PeerRecords {
                    clocks,
                    seen: s,
                    reply,
                } => {
                    peer_clocks = clocks.or(peer_clocks);
                    seen = s.or(seen);
                    Reply::PeerRecords(reply)
                }
                job => compute(job, &st, &mut p),
            });
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
            completed: pending.completed,
            lineage: pending.lineage.as_ref(),
            peer_clocks: peer_clocks.as_ref(),
            seen: seen.as_ref(),
        };
        if batch.puts.is_empty()
            && batch.removes.is_empty()
            && batch.clock.is_none()
            && batch.view.is_none()
            && batch.pending.is_none()
            && batch.completed.is_none()
            && batch.peer_clocks.is_none()
            && batch.seen.is_none()
        {
            Ok(())
        } else {
            let committed = storage.commit(&batch);
            if committed.is_ok() {
                batches.inc();
            }
            committed
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
                st.apply(pending);
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
                    Reply::PeerRecords(tx) => drop(tx.send(Ok(()))),
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
                    Reply::PeerRecords(tx) => drop(tx.send(Err(err()))),
                }
            }
        }
    }
}

fn compute(job: Job, st: &State, p: &mut Changes) -> Reply {
    let expired = |d: Option<std::time::Instant>| d.is_some_and(|d| std::time::Instant::now() > d);
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
            let res = if expired(deadline) {
                Err(CommitError::Expired)
            } else {
                let write = ClientWrite {
                    key: &key,
                    value,
                    ttl_ms,
                    ctx,
                    id,
                };
                p.write(st, write, hlc_now()).map_err(|r| match r {
                    Refused::NotOwner(epoch) => CommitError::NotOwner(epoch),
                    Refused::UnknownView(epoch) => CommitError::UnknownView(epoch),
                })
            };
            Reply::Write(reply, res)
        }
        Job::Sync {
            epoch,
            versions,
            claim,
            reply,
        } => {
            p.sync(st, epoch, versions, claim);
            Reply::Sync(reply)
        }
        Job::SyncRun {
            epoch,
            versions,
            run,
            clock,
            claim,
            reply,
        } => {
            let dropped = p.sync_run(st, epoch, versions, &run, &clock);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "dropped versions a shard peer saw deleted (this replica's disk is older \
                     than what it had acknowledged: a restored backup?)"
                );
            }
            p.sync(st, epoch, Vec::new(), claim);
            Reply::Sync(reply)
        }
        Job::Migrate {
            versions,
            deadline,
            reply,
        } => {
            if expired(deadline) {
                let all = versions.into_iter().map(|(k, _)| k).collect();
                return Reply::Migrate(reply, all);
            }
            let refused = p.migrate(st, versions);
            Reply::Migrate(reply, refused)
        }
        Job::Reclaim { keys, now, reply } => {
            let n = p.reclaim(st, keys, now);
            Reply::Remove(reply, n)
        }
        Job::Remove { keys, epoch, reply } => {
            let n = p.remove(st, keys, epoch);
            Reply::Remove(reply, n)
        }
        Job::HandedOver {
            epoch,
            nodes,
            report,
            reply,
        } => {
            p.handed_over(st, epoch, &nodes, &report);
            Reply::HandedOver(reply)
        }
        Job::SetView {
            view,
            completed,
            reply,
        } => {
            let installed = p.set_view(st, view, completed);
            Reply::SetView(reply, installed)
        }
        Job::PeerRecords { reply, .. } => {
            // (Taken out in `commit_batch`: it changes no replica state.)
            Reply::PeerRecords(reply)
        }
    }
}

/// The timestamp for a new write, now (see [`causeway_core::changes::next_ts`]).
pub fn next_ts(last: u64, ctx_ts: u64) -> u64 {
    causeway_core::changes::next_ts(last, ctx_ts, hlc_now())
}

/// Hybrid logical clock reading: wall-clock milliseconds shifted left [`HLC_SHIFT`] bits.
pub fn hlc_now() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms << HLC_SHIFT
}
