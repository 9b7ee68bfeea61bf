//! Durable storage: the one place that talks to the embedded engine (fjall).
//!
//! Invariant: [`Storage::commit`] returns only after its whole batch (versions, removals
//! and replica metadata: clock, last timestamp, view) is durable, atomically. The
//! committer (`node::committer`) groups many concurrent writes into one such call, so
//! one sync serves them all (group commit). What "durable" means is the
//! [`Durability`] setting: `sync` (the default) syncs the journal to disk before
//! returning, surviving power loss; `os` hands the batch to the operating system before
//! returning (surviving a crash or SIGKILL of the process) and syncs every 50 ms in the
//! background, so a power loss can lose the last 50 ms. A batch that installs a view
//! is synced before it returns under either setting: a node speaks in a view only once
//! its disk holds it (`causeway_core::recall` counts on that). In-memory mode keeps
//! nothing on disk and is meant for tests and demos.
//!
//! Write path: a commit is one record appended to this store's own write-ahead
//! [`journal`] (and synced there); the engine (fjall) is given the record afterwards,
//! by the *applier* thread, which syncs the engine every 4 MiB or 100 ms of records
//! (small syncs: one large one would hold the disk and delay the journal's). So the
//! engine's pauses (a
//! memtable flush or a compaction holds its version lock across a file sync, 10-30 ms
//! on a busy disk) delay the applier, not the acknowledgement of writes. The engine
//! stores the number of the last record it holds (`meta` key `journal_seq`, written in
//! the same engine batch), and opening the store first replays the journal records
//! after it. A journal segment is deleted once the engine has synced all of it. At most
//! [`AWAITING_LIMIT`] bytes of records wait for the engine; a commit then waits for
//! room. Readers never read the engine (the replica state is in memory): only a
//! restart does, after the replay.
//!
//! Layout: `journal/` holds the journal's segments; keyspace `kv` maps key bytes
//! to a postcard-encoded [`Version`] (encoded
//! versions of [`BLOB_THRESHOLD`] bytes or more are kept in fjall's blob files, so that
//! compaction rewrites their keys, not their values; data directories created before
//! that keep everything in the tree); keyspace
//! `meta` holds `incarnation`, `clock`, `last_ts`, `view`, `pending` (the nodes that
//! may still hand keys over to this one, see `node::state`) and `completed` (the epoch
//! of the newest view known completed, see `causeway_core::views`; a data directory
//! from before it has none, which means no view is known completed) and `lineage`
//! (the views this replica installed, see `causeway_core::state`; a data
//! directory from before it has none, which means only the view in force),
//! `peer_clocks` (the clock each shard peer last acknowledged, by view epoch, see
//! `node::replication`; none in a data directory from before it), and
//! `journal_seq` (the last journal record the engine holds; none in a data directory
//! from before the journal).
//!
//! Incarnations: a replica numbers its writes under an origin derived from its
//! incarnation, and its peers count those numbers as received. A disk can come back
//! older than what the peers already received: a power loss under `os` durability, a
//! restored backup, a copied data directory. Reusing those numbers would make the
//! replicas silently diverge. So every open takes a new random incarnation (synced
//! before anything is served): a process never reuses a write number of an earlier
//! one, whatever its disk holds, and its peers send back what it lost. The cost is one
//! clock entry per restart.

mod journal;

use crate::causal::{VClock, Version};
use crate::placement::View;
use causeway_core::recall::Seen;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use journal::{Journal, Op, Space};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// When a commit counts as durable (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Sync to disk before acknowledging (survives power loss).
    #[default]
    Sync,
    /// Hand to the OS before acknowledging, sync every 50 ms (survives process crashes).
    Os,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    #[error("corrupt record {what}: {err}")]
    Corrupt { what: String, err: postcard::Error },
    #[error("storage is closed (the node is shutting down)")]
    Closed,
    #[error("journal: {0}")]
    Journal(#[from] std::io::Error),
    #[error("storage failed earlier and takes no more writes: {0}")]
    Failed(String),
}

/// Most bytes of committed records that may wait for the engine (see the module docs).
pub const AWAITING_LIMIT: usize = 16 * 1024 * 1024;
/// The applier syncs the engine once this many bytes of records are applied since the
/// last sync, or [`ENGINE_SYNC_EVERY`] after it.
const ENGINE_SYNC_BYTES: usize = 4 * 1024 * 1024;
const ENGINE_SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Once a record arrives, the applier waits this long for more before it gives the
/// engine one batch of them all: one wake-up of its thread and one engine journal write
/// for many commits, not one per commit. It is off the acknowledgement path (the records
/// are durable in the journal and applied to the replica state already).
const APPLY_GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// Stored versions at least this large are kept out of the tree (see [`Storage::open`]).
pub const BLOB_THRESHOLD: u32 = 64 * 1024;

/// Replica metadata that must survive restarts together with the data.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    /// Random per data directory; origins are derived from it and the view epoch.
    pub incarnation: u64,
    pub clock: VClock,
    pub last_ts: u64,
    pub view: Option<View>,
    /// Nodes that may still hand keys of this node's shard over to it.
    pub pending: std::collections::BTreeSet<String>,
    /// The epoch of the newest view known completed.
    pub completed: Option<u64>,
    /// The views this replica installed (epoch and members).
    pub lineage: Option<std::collections::BTreeMap<u64, Vec<String>>>,
    /// The clock each shard peer last acknowledged, with the view epoch it was in.
    pub peer_clocks: PeerClocks,
    /// The newest view generation each other node was seen in (see
    /// `causeway_core::recall`).
    pub seen: Seen,
}

/// By shard peer: the view epoch and the clock the peer last acknowledged in it.
pub type PeerClocks = std::collections::BTreeMap<String, (u64, VClock)>;

/// What a restart finds on disk besides the versions (read with
/// [`Storage::for_each_version`], streamed so that a large store is not held twice).
pub struct Loaded {
    pub meta: Meta,
}

/// One atomic, durable batch of changes.
#[derive(Default)]
pub struct Batch<'a> {
    pub puts: Vec<(&'a str, &'a Version)>,
    pub removes: Vec<&'a str>,
    pub clock: Option<&'a VClock>,
    pub last_ts: Option<u64>,
    pub view: Option<&'a View>,
    pub pending: Option<&'a std::collections::BTreeSet<String>>,
    /// The epoch of a view now known completed.
    pub completed: Option<u64>,
    /// The replica's line of views (written with a new view).
    pub lineage: Option<&'a std::collections::BTreeMap<u64, Vec<String>>>,
    /// The clocks shard peers acknowledged (see [`Meta::peer_clocks`]).
    pub peer_clocks: Option<&'a PeerClocks>,
    /// The views other nodes were seen in (see [`Meta::seen`]).
    pub seen: Option<&'a Seen>,
}

/// Fault injection for tests: a stalled disk (every commit is delayed) or an engine
/// that panics inside a commit. Inert unless a test sets it (one atomic load per
/// commit); reached through [`Storage::faults`] or `Node::faults`.
#[derive(Clone, Default)]
pub struct Faults(Arc<FaultState>);

#[derive(Default)]
struct FaultState {
    commit_delay_ms: AtomicU64,
    panic_on_commit: AtomicBool,
    background_sync_paused: AtomicBool,
}

impl Faults {
    /// Every later commit first waits `d` (zero: no delay).
    pub fn set_commit_delay(&self, d: std::time::Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.0.commit_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Under `os` durability, stops (or resumes) the background sync: what is committed
    /// meanwhile is in the operating system's hands only, as in the instants before a
    /// power loss.
    pub fn pause_background_sync(&self, paused: bool) {
        self.0
            .background_sync_paused
            .store(paused, Ordering::Relaxed);
    }

    fn background_sync_paused(&self) -> bool {
        self.0.background_sync_paused.load(Ordering::Relaxed)
    }

    /// The next commit panics (in the committer thread, as an engine bug would).
    pub fn panic_on_next_commit(&self) {
        self.0.panic_on_commit.store(true, Ordering::Relaxed);
    }

    fn before_commit(&self) {
        if self.0.panic_on_commit.swap(false, Ordering::Relaxed) {
            panic!("injected storage fault: panic in commit");
        }
        let ms = self.0.commit_delay_ms.load(Ordering::Relaxed);
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}

pub struct Storage {
    engine: Option<Engine>,
    faults: Faults,
    durability: Durability,
    /// Set by [`Storage::close`]: nothing is committed after a clean shutdown began.
    closed: std::sync::atomic::AtomicBool,
    /// Under `os` durability, the thread that syncs every 50 ms (stopped on drop).
    _syncer: Option<Syncer>,
    /// Under `os` durability, the clocks of what was committed and of what is synced.
    marks: Arc<Marks>,
}

/// Under `os` durability a commit is acknowledged before it is synced, so a replica's
/// clock says what it holds, not what a power loss leaves it with. The syncer records
/// the clock committed before each sync once that sync succeeds: the *durable clock*,
/// which peers use to decide what this replica will never lose (a tombstone may be
/// collected only once every peer holds it durably).
#[derive(Default)]
struct Marks {
    committed: parking_lot::Mutex<Option<VClock>>,
    durable: parking_lot::Mutex<Option<VClock>>,
}

/// Syncs the journal every 50 ms until dropped; dropping it waits for the thread, so
/// the journal is released when the [`Storage`] is.
struct Syncer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(
        journal: Arc<parking_lot::Mutex<Journal>>,
        marks: Arc<Marks>,
        faults: Faults,
    ) -> Syncer {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("causeway-syncer".into())
            .spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                let period = std::time::Duration::from_millis(50);
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    if faults.background_sync_paused() {
                        continue;
                    }
                    // Everything committed before this point is in the segment synced
                    // below, or in an earlier one (synced when it was sealed). The
                    // journal's lock is not held during the sync: commits go on.
                    let mark = marks.committed.lock().clone();
                    let segment = journal.lock().current_file();
                    match segment.sync_data() {
                        Ok(()) => {
                            if mark.is_some() {
                                *marks.durable.lock() = mark;
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "background sync failed"),
                    }
                }
            })
            .expect("spawn syncer thread");
        Syncer {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Engine {
    db: Database,
    kv: Keyspace,
    journal: Arc<parking_lot::Mutex<Journal>>,
    applier: Applier,
}

/// The thread that gives committed records to the engine, in order (see the module
/// docs), and deletes journal segments the engine has synced.
struct Applier {
    tx: Option<std::sync::mpsc::Sender<(u64, Vec<Op>, usize)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Applying>,
}

#[derive(Default)]
struct Applying {
    state: parking_lot::Mutex<ApplyState>,
    changed: parking_lot::Condvar,
}

#[derive(Default)]
struct ApplyState {
    /// Bytes of records committed but not yet in the engine.
    awaiting: usize,
    /// Why the engine or the journal failed: no later commit is taken.
    failure: Option<String>,
}

impl Applying {
    fn fail(&self, why: String) {
        tracing::error!(error = %why, "storage failed; refusing every later write");
        self.state.lock().failure.get_or_insert(why);
        self.changed.notify_all();
    }
}

impl Applier {
    fn start(
        db: Database,
        kv: Keyspace,
        meta: Keyspace,
        journal: Arc<parking_lot::Mutex<Journal>>,
    ) -> Applier {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, Vec<Op>, usize)>();
        let shared = Arc::new(Applying::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("causeway-applier".into())
            .spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                // The engine is synced a little at a time (every ENGINE_SYNC_BYTES or
                // ENGINE_SYNC_EVERY): one large sync when a segment is retired would
                // hold the disk long enough to delay the journal's own syncs.
                let mut unsynced = 0usize;
                let mut applied = 0u64;
                let mut synced = 0u64;
                let mut since_sync = std::time::Instant::now();
                loop {
                    let first = match rx.recv_timeout(ENGINE_SYNC_EVERY) {
                        Ok(r) => Some(r),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    if let Some(first) = first {
                        if first.2 < ENGINE_SYNC_BYTES {
                            std::thread::sleep(APPLY_GATHER);
                        }
                        let mut records = vec![first];
                        while records.len() < 1024 {
                            match rx.try_recv() {
                                Ok(r) => records.push(r),
                                Err(_) => break,
                            }
                        }
                        let last = records.last().map_or(0, |r| r.0);
                        let bytes: usize = records.iter().map(|r| r.2).sum();
                        let ops = records.into_iter().map(|(_, ops, _)| ops);
                        if let Err(e) = to_engine(&db, &kv, &meta, last, ops) {
                            s.fail(format!("engine: {e}"));
                            return;
                        }
                        s.state.lock().awaiting -= bytes;
                        s.changed.notify_all();
                        applied = last;
                        unsynced += bytes;
                    }
                    if applied > synced
                        && (unsynced >= ENGINE_SYNC_BYTES
                            || since_sync.elapsed() >= ENGINE_SYNC_EVERY)
                    {
                        if let Err(e) = db.persist(PersistMode::SyncData) {
                            s.fail(format!("engine: {e}"));
                            return;
                        }
                        synced = applied;
                        unsynced = 0;
                        since_sync = std::time::Instant::now();
                        // Segments wholly synced in the engine are retired.
                        let done = journal.lock().retire_through(synced);
                        for path in done {
                            if let Err(e) = std::fs::remove_file(&path) {
                                tracing::warn!(error = %e, path = %path.display(), "could not delete a journal segment");
                            }
                        }
                    }
                }
            })
            .expect("spawn applier thread");
        Applier {
            tx: Some(tx),
            thread: Some(thread),
            shared,
        }
    }

    /// Waits until the engine holds every committed record (or storage failed).
    fn drain(&self) {
        let mut st = self.shared.state.lock();
        while st.awaiting > 0 && st.failure.is_none() {
            self.shared.changed.wait(&mut st);
        }
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes records (their operations, in order) to the engine as one batch, with the
/// number of the last one as `journal_seq`; not synced (the applier and the replay
/// sync afterwards).
fn to_engine(
    db: &Database,
    kv: &Keyspace,
    meta: &Keyspace,
    last: u64,
    records: impl IntoIterator<Item = Vec<Op>>,
) -> Result<(), fjall::Error> {
    let mut b = db.batch().durability(None);
    for ops in records {
        for op in ops {
            let ks = match op.space {
                Space::Kv => kv,
                Space::Meta => meta,
            };
            match op.value {
                Some(v) => b.insert(ks, op.key, v),
                None => b.remove(ks, op.key),
            }
        }
    }
    b.insert(meta, "journal_seq", encode(&last));
    b.commit()
}

/// The journal operations of a batch (versions encoded once, here).
fn batch_ops(batch: &Batch<'_>) -> Vec<Op> {
    let meta = |key: &str, value: Vec<u8>| Op {
        space: Space::Meta,
        key: key.as_bytes().to_vec(),
        value: Some(value),
    };
    let mut ops = Vec::with_capacity(batch.puts.len() + batch.removes.len() + 2);
    for (k, v) in &batch.puts {
        ops.push(Op {
            space: Space::Kv,
            key: k.as_bytes().to_vec(),
            value: Some(encode(*v)),
        });
    }
    for k in &batch.removes {
        ops.push(Op {
            space: Space::Kv,
            key: k.as_bytes().to_vec(),
            value: None,
        });
    }
    if let Some(c) = batch.clock {
        ops.push(meta("clock", encode(c)));
    }
    if let Some(t) = batch.last_ts {
        ops.push(meta("last_ts", encode(&t)));
    }
    if let Some(p) = batch.pending {
        ops.push(meta("pending", encode(p)));
    }
    if let Some(v) = batch.view {
        ops.push(meta("view", encode(v)));
    }
    if let Some(c) = batch.completed {
        ops.push(meta("completed", encode(&c)));
    }
    if let Some(l) = batch.lineage {
        ops.push(meta("lineage", encode(l)));
    }
    if let Some(c) = batch.peer_clocks {
        ops.push(meta("peer_clocks", encode(c)));
    }
    if let Some(s) = batch.seen {
        ops.push(meta("seen", encode(s)));
    }
    ops
}

impl Storage {
    pub fn in_memory() -> (Storage, Loaded) {
        let meta = Meta {
            incarnation: rand::random(),
            ..Meta::default()
        };
        (
            Storage {
                engine: None,
                faults: Faults::default(),
                durability: Durability::Sync,
                closed: Default::default(),
                _syncer: None,
                marks: Default::default(),
            },
            Loaded { meta },
        )
    }

    /// Opens (or creates) the data directory and loads everything in it.
    pub fn open(dir: &Path, durability: Durability) -> Result<(Storage, Loaded), StorageError> {
        let db = Database::builder(dir).cache_size(4 * 1024 * 1024).open()?;
        // Values of at least `BLOB_THRESHOLD` bytes live in blob files beside the tree
        // (key-value separation): compaction then moves their keys, not the values.
        // (A keyspace keeps the options it was created with: a data directory created
        // without it stays so.)
        let kv = db.keyspace("kv", || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(8 * 1024 * 1024)
                .with_kv_separation(Some(
                    fjall::KvSeparationOptions::default().separation_threshold(BLOB_THRESHOLD),
                ))
        })?;
        let meta_ks = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        // The journal's records after the last one the engine holds (none in a data
        // directory from before the journal), then a fresh segment.
        let engine_seq: u64 = match meta_ks.get("journal_seq")? {
            Some(b) => decode("journal_seq", &b)?,
            None => 0,
        };
        let journal_dir = dir.join("journal");
        let replayed = journal::replay(&journal_dir, engine_seq, |record| {
            to_engine(&db, &kv, &meta_ks, record.seq, [record.ops])
        })
        .map_err(|e| match e {
            journal::ReplayError::Io(e) => StorageError::Journal(e),
            journal::ReplayError::Apply(e) => StorageError::Engine(e),
            gap => StorageError::Failed(gap.to_string()),
        })?;
        if replayed.last_seq > engine_seq {
            tracing::info!(
                records = replayed.last_seq - engine_seq,
                "replayed the journal into the engine"
            );
        }
        db.persist(PersistMode::SyncAll)?;
        let journal = Arc::new(parking_lot::Mutex::new(Journal::create(
            &journal_dir,
            replayed.last_seq + 1,
            replayed.segments,
        )?));
        // A new incarnation for every process lifetime (see the module docs).
        let mut meta = Meta {
            incarnation: rand::random(),
            ..Meta::default()
        };
        meta_ks.insert("incarnation", encode(&meta.incarnation))?;
        db.persist(PersistMode::SyncAll)?;
        if let Some(b) = meta_ks.get("clock")? {
            meta.clock = decode("clock", &b)?;
        }
        if let Some(b) = meta_ks.get("last_ts")? {
            meta.last_ts = decode("last_ts", &b)?;
        }
        if let Some(b) = meta_ks.get("pending")? {
            meta.pending = decode("pending", &b)?;
        }
        if let Some(b) = meta_ks.get("completed")? {
            meta.completed = Some(decode("completed", &b)?);
        }
        if let Some(b) = meta_ks.get("lineage")? {
            meta.lineage = Some(decode("lineage", &b)?);
        }
        if let Some(b) = meta_ks.get("peer_clocks")? {
            // Advisory (it only makes a restored peer noticed sooner): never a reason
            // not to start.
            match decode("peer_clocks", &b) {
                Ok(c) => meta.peer_clocks = c,
                Err(e) => tracing::warn!(error = %e, "ignoring the stored peer clocks"),
            }
        }
        if let Some(b) = meta_ks.get("seen")? {
            // Advisory too (it only lets a node whose disk went back be told so).
            match decode("seen", &b) {
                Ok(s) => meta.seen = s,
                Err(e) => tracing::warn!(error = %e, "ignoring the views other nodes were seen in"),
            }
        }
        if let Some(b) = meta_ks.get("view")? {
            meta.view = Some(decode("view", &b)?);
        }
        // What was loaded is synced (the open above synced everything).
        let marks = Arc::new(Marks {
            committed: parking_lot::Mutex::new(Some(meta.clock.clone())),
            durable: parking_lot::Mutex::new(Some(meta.clock.clone())),
        });
        let faults = Faults::default();
        let syncer = (durability == Durability::Os)
            .then(|| Syncer::start(journal.clone(), marks.clone(), faults.clone()));
        let applier = Applier::start(db.clone(), kv.clone(), meta_ks, journal.clone());
        Ok((
            Storage {
                engine: Some(Engine {
                    db,
                    kv,
                    journal,
                    applier,
                }),
                faults,
                durability,
                closed: Default::default(),
                _syncer: syncer,
                marks,
            },
            Loaded { meta },
        ))
    }

    /// Calls `f` with every stored version, in key order.
    pub fn for_each_version(&self, mut f: impl FnMut(&str, Version)) -> Result<(), StorageError> {
        let Some(e) = &self.engine else {
            return Ok(());
        };
        for kv_pair in e.kv.iter() {
            let (k, v) = kv_pair.into_inner()?;
            let key = String::from_utf8_lossy(&k);
            let version: Version = decode(&key, &v)?;
            f(&key, version);
        }
        Ok(())
    }

    /// Under `os` durability, the clock of what is synced to disk (see [`Marks`]);
    /// `None` when every commit is synced before it is acknowledged (or nothing is on
    /// disk at all), so that the replica's clock itself is what it will keep.
    pub fn durable_clock(&self) -> Option<VClock> {
        if self.engine.is_none() || self.durability != Durability::Os {
            return None;
        }
        self.marks.durable.lock().clone()
    }

    pub fn is_durable(&self) -> bool {
        self.engine.is_some()
    }

    /// Whether commits are acknowledged before they are synced (`os` durability on a
    /// disk): then only [`Self::durable_clock`] says what a power loss leaves.
    pub fn acknowledges_unsynced(&self) -> bool {
        self.engine.is_some() && self.durability == Durability::Os
    }

    /// The test fault knobs of this store (see [`Faults`]).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Writes the batch atomically and syncs it to disk before returning.
    pub fn commit(&self, batch: &Batch<'_>) -> Result<(), StorageError> {
        self.faults.before_commit();
        let Some(e) = &self.engine else {
            return Ok(());
        };
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let ops = batch_ops(batch);
        let size: usize = ops.iter().map(Op::size).sum();
        let shared = &e.applier.shared;
        {
            let mut st = shared.state.lock();
            while st.awaiting > 0 && st.awaiting + size > AWAITING_LIMIT && st.failure.is_none() {
                shared.changed.wait(&mut st);
            }
            if let Some(why) = &st.failure {
                return Err(StorageError::Failed(why.clone()));
            }
            st.awaiting += size;
        }
        let appended = e.journal.lock().append(
            &ops,
            self.durability == Durability::Sync || batch.view.is_some(),
        );
        let seq = match appended {
            Ok(seq) => seq,
            Err(err) => {
                // What reached the file is unknown: nothing more is written after it.
                shared.fail(format!("journal: {err}"));
                return Err(StorageError::Journal(err));
            }
        };
        let sent = e.applier.tx.as_ref().map(|tx| tx.send((seq, ops, size)));
        if !matches!(sent, Some(Ok(()))) {
            shared.fail("the applier thread stopped".into());
            return Err(StorageError::Failed("the applier thread stopped".into()));
        }
        if let (Durability::Os, Some(c)) = (self.durability, batch.clock) {
            *self.marks.committed.lock() = Some(c.clone());
        }
        Ok(())
    }

    /// Bytes on disk (0 in memory).
    pub fn disk_bytes(&self) -> u64 {
        self.engine.as_ref().map_or(0, |e| {
            let journal = e.journal.lock().bytes();
            e.db.disk_space().unwrap_or(0) + journal
        })
    }

    /// Clean shutdown: refuses every later commit, then syncs everything.
    pub fn close(&self) -> Result<(), StorageError> {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(e) = &self.engine {
            e.applier.drain();
            e.db.persist(PersistMode::SyncAll)?;
        }
        Ok(())
    }
}

/// Postcard of `v` in one allocation of its exact size (a size pass first: growing the
/// buffer by doubling copied a large value several times over).
fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let size = postcard::serialize_with_flavor(v, postcard::ser_flavors::Size::default())
        .expect("in-memory structures always encode");
    let out = postcard::to_extend(v, Vec::with_capacity(size))
        .expect("in-memory structures always encode");
    debug_assert_eq!(out.len(), size);
    out
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(b).map_err(|err| StorageError::Corrupt {
        what: what.to_string(),
        err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_open_takes_a_new_incarnation() {
        for durability in [Durability::Os, Durability::Sync] {
            for close_cleanly in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let (s, loaded) = Storage::open(dir.path(), durability).unwrap();
                let first = loaded.meta.incarnation;
                if close_cleanly {
                    s.close().unwrap();
                }
                drop(s);
                let (_s, loaded) = Storage::open(dir.path(), durability).unwrap();
                assert_ne!(
                    first, loaded.meta.incarnation,
                    "{durability:?}, clean: {close_cleanly}: write numbers could be reused"
                );
            }
        }
    }

    /// Peers' acknowledged clocks survive a restart, even one that found them only in
    /// the journal (killed before the engine held them); none in an older directory.
    #[test]
    fn peers_acknowledged_clocks_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut clock = VClock::new();
        clock.raise(7, 3);
        let clocks: PeerClocks = [("b:1".to_string(), (5, clock))].into();
        {
            let (s, loaded) = Storage::open(dir.path(), Durability::Sync).unwrap();
            assert!(loaded.meta.peer_clocks.is_empty());
            s.commit(&Batch {
                peer_clocks: Some(&clocks),
                ..Batch::default()
            })
            .unwrap();
            // No close: the engine may not hold it yet, only the journal.
        }
        let (_s, loaded) = Storage::open(dir.path(), Durability::Sync).unwrap();
        assert_eq!(loaded.meta.peer_clocks, clocks);
    }

    #[test]
    fn the_views_other_nodes_were_seen_in_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Seen::default();
        seen.note("b:1", 3 << causeway_core::placement::EPOCH_FINGERPRINT_BITS);
        {
            let (s, loaded) = Storage::open(dir.path(), Durability::Os).unwrap();
            assert_eq!(loaded.meta.seen, Seen::default());
            s.commit(&Batch {
                seen: Some(&seen),
                ..Batch::default()
            })
            .unwrap();
            // No close: what the journal got to the OS is what a crash leaves.
        }
        let (_s, loaded) = Storage::open(dir.path(), Durability::Sync).unwrap();
        assert_eq!(loaded.meta.seen, seen);
        assert_eq!(loaded.meta.seen.of("b:1"), Some(3));
    }

    #[test]
    fn a_view_completion_is_kept_and_absent_from_older_data_directories() {
        let dir = tempfile::tempdir().unwrap();
        let view = View::new(5, vec!["a:1".into()], 1);
        {
            // As a data directory written before completions were kept.
            let (s, loaded) = Storage::open(dir.path(), Durability::Sync).unwrap();
            assert_eq!(loaded.meta.completed, None);
            s.commit(&Batch {
                view: Some(&view),
                ..Batch::default()
            })
            .unwrap();
            s.close().unwrap();
        }
        let (s, loaded) = Storage::open(dir.path(), Durability::Sync).unwrap();
        assert_eq!(loaded.meta.view.as_ref(), Some(&view));
        assert_eq!(loaded.meta.completed, None, "no view known completed");
        s.commit(&Batch {
            completed: Some(5),
            ..Batch::default()
        })
        .unwrap();
        s.close().unwrap();
        drop(s);
        let (_s, loaded) = Storage::open(dir.path(), Durability::Sync).unwrap();
        assert_eq!(loaded.meta.completed, Some(5));
    }

    /// A version numbered `counter` (origin 1) holding `value`.
    fn version(counter: u64, value: String) -> Version {
        use crate::causal::{Deps, Dot, Value, WriteId};
        Version {
            id: WriteId {
                ts: counter,
                origin: 1,
                counter,
            },
            dot: Dot { origin: 1, counter },
            epoch: 0,
            past: Deps::new(),
            value: Some(Value::Str(value.into())),
        }
    }

    #[test]
    fn encoding_in_one_exact_allocation_is_postcard() {
        use crate::causal::{Dot, Value, WriteId};
        let mut past = crate::causal::context::prior_past();
        past.add(
            3,
            Dot {
                origin: 9,
                counter: 4,
            },
        );
        for value in [
            None,
            Some(Value::Str("v".repeat(100).into())),
            Some(Value::Num("-1.5e3".into())),
            Some(Value::Str("x".repeat(1 << 20).into())),
        ] {
            let v = Version {
                id: WriteId {
                    ts: 1 << 40,
                    origin: 7,
                    counter: 300,
                },
                dot: Dot {
                    origin: 7,
                    counter: 300,
                },
                epoch: 2,
                past: past.clone(),
                value,
            };
            let bytes = encode(&v);
            assert_eq!(bytes, postcard::to_allocvec(&v).unwrap());
            assert_eq!(bytes.len(), bytes.capacity());
            assert_eq!(decode::<Version>("v", &bytes).unwrap(), v);
        }
    }

    #[test]
    fn values_above_the_blob_threshold_survive_restarts_and_overwrites() {
        let version = |counter: u64, bytes: usize| version(counter, "x".repeat(bytes));
        let dir = tempfile::tempdir().unwrap();
        let big = BLOB_THRESHOLD as usize * 4;
        let (v1, v2, small) = (version(1, big), version(2, big + 1), version(3, 100));
        for (durability, v) in [(Durability::Sync, &v1), (Durability::Os, &v2)] {
            let (s, _) = Storage::open(dir.path(), durability).unwrap();
            s.commit(&Batch {
                puts: vec![("big", v), ("small", &small)],
                ..Batch::default()
            })
            .unwrap();
            s.close().unwrap();
            drop(s);
            let (s, _) = Storage::open(dir.path(), durability).unwrap();
            let mut seen = Vec::new();
            s.for_each_version(|k, v| seen.push((k.to_string(), v)))
                .unwrap();
            assert_eq!(
                seen,
                vec![
                    ("big".to_string(), v.clone()),
                    ("small".to_string(), small.clone())
                ]
            );
        }
    }

    #[test]
    fn journal_records_the_engine_never_got_are_replayed_on_open() {
        let version = |counter: u64| version(counter, format!("v{counter}"));
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(dir.path(), Durability::Sync).unwrap();
        s.commit(&Batch {
            puts: vec![("a", &version(1))],
            ..Batch::default()
        })
        .unwrap();
        s.close().unwrap();
        drop(s);
        // As a crash would leave it: records 1 and 2 in the journal (the open above
        // deleted what the engine held), the engine holding only the first.
        let mut clock = VClock::default();
        clock.raise(1, 3);
        let mut j = journal::Journal::create(&dir.path().join("journal"), 2, Vec::new()).unwrap();
        let kv = |k: &str, v: Option<&Version>| Op {
            space: Space::Kv,
            key: k.as_bytes().to_vec(),
            value: v.map(encode),
        };
        j.append(&[kv("b", Some(&version(2))), kv("a", None)], true)
            .unwrap();
        j.append(
            &[
                kv("c", Some(&version(3))),
                Op {
                    space: Space::Meta,
                    key: b"clock".to_vec(),
                    value: Some(encode(&clock)),
                },
            ],
            true,
        )
        .unwrap();
        drop(j);
        for _ in 0..2 {
            let (s, loaded) = Storage::open(dir.path(), Durability::Sync).unwrap();
            let mut seen = Vec::new();
            s.for_each_version(|k, v| seen.push((k.to_string(), v)))
                .unwrap();
            assert_eq!(
                seen,
                vec![("b".to_string(), version(2)), ("c".to_string(), version(3))]
            );
            assert_eq!(loaded.meta.clock, clock);
            // The replayed segments are written over or deleted, not replayed again
            // (the second round opens what the first one left).
            let segments = std::fs::read_dir(dir.path().join("journal"))
                .unwrap()
                .count();
            assert!(segments <= 1 + journal::SPARES, "{segments} segments");
            s.close().unwrap();
        }
    }

    #[test]
    fn a_journal_longer_than_a_segment_is_retired_once_the_engine_has_it() {
        let version = |counter: u64| version(counter, "x".repeat(1 << 20));
        let dir = tempfile::tempdir().unwrap();
        let journal_bytes = || {
            std::fs::read_dir(dir.path().join("journal"))
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum::<u64>()
        };
        let n = 3 * journal::SEGMENT_BYTES / (1 << 20) + 8;
        let (s, _) = Storage::open(dir.path(), Durability::Os).unwrap();
        for i in 0..n {
            let v = version(i + 1);
            s.commit(&Batch {
                puts: vec![(&format!("k{}", i % 10), &v)],
                ..Batch::default()
            })
            .unwrap();
        }
        s.close().unwrap();
        // Spares are kept, the rest deleted: the journal does not grow with the data.
        let most = (journal::SPARES as u64 + 2) * (journal::SEGMENT_BYTES + (2 << 20));
        assert!(
            journal_bytes() <= most,
            "{} bytes of journal",
            journal_bytes()
        );
        drop(s);
        let (s, _) = Storage::open(dir.path(), Durability::Os).unwrap();
        let mut seen = Vec::new();
        s.for_each_version(|k, v| seen.push((k.to_string(), v.id.counter)))
            .unwrap();
        let expect: Vec<(String, u64)> = (0..10)
            .map(|k| {
                let last = (0..n).filter(|i| i % 10 == k).max().unwrap();
                (format!("k{k}"), last + 1)
            })
            .collect();
        assert_eq!(seen, expect);
    }

    #[test]
    fn nothing_commits_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(dir.path(), Durability::Sync).unwrap();
        s.close().unwrap();
        let err = s.commit(&Batch {
            last_ts: Some(1),
            ..Batch::default()
        });
        assert!(matches!(err, Err(StorageError::Closed)));
    }
}
