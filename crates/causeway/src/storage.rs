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
//! Layout: keyspace `kv` maps key bytes to a postcard-encoded [`Version`]; keyspace
//! `meta` holds `incarnation`, `clock`, `last_ts` and `view`.

use crate::causal::{VClock, Version};
use crate::placement::View;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::Path;

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
}

/// Replica metadata that must survive restarts together with the data.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    /// Random per data directory; origins are derived from it and the view epoch.
    pub incarnation: u64,
    pub clock: VClock,
    pub last_ts: u64,
    pub view: Option<View>,
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
}

pub struct Storage {
    engine: Option<Engine>,
    durability: Durability,
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
                durability: Durability::Sync,
            },
            Loaded { meta },
        )
    }

    /// Opens (or creates) the data directory and loads everything in it.
    pub fn open(dir: &Path, durability: Durability) -> Result<(Storage, Loaded), StorageError> {
        let db = Database::builder(dir).cache_size(4 * 1024 * 1024).open()?;
        let kv = db.keyspace("kv", || {
            KeyspaceCreateOptions::default().max_memtable_size(8 * 1024 * 1024)
        })?;
        let meta_ks = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let mut meta = Meta::default();
        match meta_ks.get("incarnation")? {
            Some(b) => meta.incarnation = decode("incarnation", &b)?,
            None => {
                meta.incarnation = rand::random();
                let bytes = postcard::to_allocvec(&meta.incarnation).expect("encode u64");
                meta_ks.insert("incarnation", bytes)?;
                db.persist(PersistMode::SyncAll)?;
            }
        }
        if let Some(b) = meta_ks.get("clock")? {
            meta.clock = decode("clock", &b)?;
        }
        if let Some(b) = meta_ks.get("last_ts")? {
            meta.last_ts = decode("last_ts", &b)?;
        }
        if let Some(b) = meta_ks.get("view")? {
            meta.view = Some(decode("view", &b)?);
        }
        if durability == Durability::Os {
            let db = db.clone();
            std::thread::Builder::new()
                .name("causeway-syncer".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    if let Err(e) = db.persist(PersistMode::SyncData) {
                        tracing::error!(error = %e, "background sync failed");
                    }
                })
                .expect("spawn syncer thread");
        }
        Ok((
            Storage {
                engine: Some(Engine {
                    db,
                    kv,
                    meta: meta_ks,
                }),
                durability,
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

    pub fn is_durable(&self) -> bool {
        self.engine.is_some()
    }

    /// Writes the batch atomically and syncs it to disk before returning.
    pub fn commit(&self, batch: &Batch<'_>) -> Result<(), StorageError> {
        let Some(e) = &self.engine else {
            return Ok(());
        };
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
        if let Some(v) = batch.view {
            b.insert(&e.meta, "view", encode(v));
        }
        b.commit()?;
        Ok(())
    }

    /// Bytes on disk (0 in memory).
    pub fn disk_bytes(&self) -> u64 {
        self.engine
            .as_ref()
            .and_then(|e| e.db.disk_space().ok())
            .unwrap_or(0)
    }

    /// Syncs everything (used at shutdown).
    pub fn flush(&self) -> Result<(), StorageError> {
        if let Some(e) = &self.engine {
            e.db.persist(PersistMode::SyncAll)?;
        }
        Ok(())
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("in-memory structures always encode")
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(b).map_err(|err| StorageError::Corrupt {
        what: what.to_string(),
        err,
    })
}
