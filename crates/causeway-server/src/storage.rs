//! Durable storage: the one place that talks to the embedded engine (fjall).
//!
//! Invariant: [`Storage::commit`] returns only after its whole batch (versions, removals
//! and replica metadata: clock, last timestamp, view) is durable, atomically. The
//! committer (`node::committer`) groups many concurrent writes into one such call, so
//! one sync serves them all (group commit). What "durable" means is the
//! [`Durability`] setting: `sync` (the default) syncs the journal to disk before
//! returning, surviving power loss; `os` hands the batch to the operating system before
//! returning (surviving a crash or SIGKILL of the process) and syncs every 50 ms in the
//! background, so a power loss can lose the last 50 ms. In-memory mode keeps nothing
//! on disk and is meant for tests and demos.
//!
//! Layout: keyspace `kv` maps key bytes to a postcard-encoded [`Version`] (encoded
//! versions of [`BLOB_THRESHOLD`] bytes or more are kept in fjall's blob files, so that
//! compaction rewrites their keys, not their values; data directories created before
//! that keep everything in the tree); keyspace
//! `meta` holds `incarnation`, `clock`, `last_ts`, `view`, `pending` (the nodes that
//! may still hand keys over to this one, see `node::state`) and `completed` (the epoch
//! of the newest view known completed, see `causeway_core::views`; a data directory
//! from before it has none, which means no view is known completed) and `lineage`
//! (the views this replica installed, see `causeway_core::state`; a data
//! directory from before it has none, which means only the view in force).
//!
//! Incarnations: a replica numbers its writes under an origin derived from its
//! incarnation, and its peers count those numbers as received. A disk can come back
//! older than what the peers already received: a power loss under `os` durability, a
//! restored backup, a copied data directory. Reusing those numbers would make the
//! replicas silently diverge. So every open takes a new random incarnation (synced
//! before anything is served): a process never reuses a write number of an earlier
//! one, whatever its disk holds, and its peers send back what it lost. The cost is one
//! clock entry per restart.

use crate::causal::{VClock, Version};
use crate::placement::View;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
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
}

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
}

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

/// Syncs the database every 50 ms until dropped; dropping it waits for the thread, so
/// the database is released when the [`Storage`] is.
struct Syncer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(db: Database, marks: Arc<Marks>, faults: Faults) -> Syncer {
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
                    // Everything committed before this point is in the journal the
                    // sync below makes durable.
                    let mark = marks.committed.lock().clone();
                    match db.persist(PersistMode::SyncData) {
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
    meta: Keyspace,
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
            .then(|| Syncer::start(db.clone(), marks.clone(), faults.clone()));
        Ok((
            Storage {
                engine: Some(Engine {
                    db,
                    kv,
                    meta: meta_ks,
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
        let mode = match self.durability {
            Durability::Sync => PersistMode::SyncData,
            Durability::Os => PersistMode::Buffer,
        };
        let mut b = e.db.batch().durability(Some(mode));
        for (k, v) in &batch.puts {
            b.insert(&e.kv, k.as_bytes(), encode(*v));
        }
        for k in &batch.removes {
            b.remove(&e.kv, k.as_bytes());
        }
        if let Some(c) = batch.clock {
            b.insert(&e.meta, "clock", encode(c));
        }
        if let Some(t) = batch.last_ts {
            b.insert(&e.meta, "last_ts", encode(&t));
        }
        if let Some(p) = batch.pending {
            b.insert(&e.meta, "pending", encode(p));
        }
        if let Some(v) = batch.view {
            b.insert(&e.meta, "view", encode(v));
        }
        if let Some(c) = batch.completed {
            b.insert(&e.meta, "completed", encode(&c));
        }
        if let Some(l) = batch.lineage {
            b.insert(&e.meta, "lineage", encode(l));
        }
        b.commit()?;
        if let (Durability::Os, Some(c)) = (self.durability, batch.clock) {
            *self.marks.committed.lock() = Some(c.clone());
        }
        Ok(())
    }

    /// Bytes on disk (0 in memory).
    pub fn disk_bytes(&self) -> u64 {
        self.engine
            .as_ref()
            .and_then(|e| e.db.disk_space().ok())
            .unwrap_or(0)
    }

    /// Clean shutdown: refuses every later commit, then syncs everything.
    pub fn close(&self) -> Result<(), StorageError> {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(e) = &self.engine {
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
        use crate::causal::{Deps, Dot, Value, WriteId};
        let version = |counter: u64, bytes: usize| Version {
            id: WriteId {
                ts: counter,
                origin: 1,
                counter,
            },
            dot: Dot { origin: 1, counter },
            epoch: 0,
            past: Deps::new(),
            value: Some(Value::Str("x".repeat(bytes).into())),
        };
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
