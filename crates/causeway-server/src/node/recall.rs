//! The server side of `causeway_core::recall`: what this node remembers of the views
//! other nodes were seen in ([`Noted`], written to disk with the acknowledged clocks by
//! `replication`), and the check a restarting node makes before it starts
//! ([`check_disk`]): does any node remember it in a later view than its disk holds?
//!
//! Invariant: a node with a view on disk starts only if no node that answered within
//! [`RECALL_TIMEOUT`] saw it in a later generation, or its operator allowed it
//! (`--allow-stale-disk`). Nodes that do not answer (down, cut off, of an earlier
//! version) count as knowing nothing: the check never keeps a node from starting
//! because others are away.

use crate::transport::{Envelope, Rpc, RpcReply, Transport};
use causeway_core::recall::{disk_went_back, Seen};
use std::collections::BTreeSet;
use std::time::Duration;

/// How long a restarting node waits for each other node's answer (asked in parallel).
pub const RECALL_TIMEOUT: Duration = Duration::from_secs(1);

/// The views other nodes were seen in, as loaded from disk and raised since; `dirty`
/// while the disk holds an older copy.
#[derive(Debug, Default)]
pub struct Noted {
    seen: Seen,
    dirty: bool,
}

impl Noted {
    pub fn loaded(seen: Seen) -> Noted {
        Noted { seen, dirty: false }
    }

    /// `node` sent a message in view `epoch`.
    pub fn note(&mut self, node: &str, epoch: u64) {
        if self.seen.note(node, epoch) {
            self.dirty = true;
        }
    }

    /// The newest generation `node` was seen in.
    pub fn of(&self, node: &str) -> Option<u64> {
        self.seen.of(node)
    }

    /// The record to write now, if it changed.
    pub fn take_dirty(&mut self) -> Option<Seen> {
        std::mem::take(&mut self.dirty).then(|| self.seen.clone())
    }

    /// Writing it failed: try again next time.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }
}

/// A disk that went back in time: the node was seen in a later view than it holds.
#[derive(Debug, thiserror::Error)]
#[error(
    "this node's data directory went back in time: it holds a view of generation {disk}, \
     but {witness} saw this node in generation {seen} (a restored backup or an old copy \
     of the disk?). Starting on it could bring back keys deleted since, so the node does \
     not start. Start it on an empty data directory (its replicas send it what it owns), \
     or, knowing that risk (say, every replica was restored from the same backup), pass \
     --allow-stale-disk (ALLOW_STALE_DISK=1)"
)]
pub struct StaleDisk {
    pub disk: u64,
    pub seen: u64,
    pub witness: String,
}

/// Asks every node this one may have shared a view with (`others`: the members of
/// the views its disk remembers and of its configured view) which view generation they
/// last saw it in, and refuses when one saw it in a later generation than the disk's
/// view (epoch `disk_epoch`).
pub async fn check_disk(
    transport: &dyn Transport,
    me: &str,
    disk_epoch: u64,
    others: impl IntoIterator<Item = String>,
) -> Result<(), StaleDisk> {
    let others: BTreeSet<String> = others.into_iter().filter(|n| n != me).collect();
    let mut asks = tokio::task::JoinSet::new();
    for n in others {
        let msg = Envelope {
            from: me.to_string(),
            rpc: Rpc::Recall,
        };
        let call = transport.call(&n, msg, RECALL_TIMEOUT);
        asks.spawn(async move { (n, call.await) });
    }
    let mut recalled = Vec::new();
    while let Some(Ok((n, reply))) = asks.join_next().await {
        if let Ok(RpcReply::Recalled {
            generation: Some(g),
        }) = reply
        {
            recalled.push((g, n));
        }
    }
    let seen = disk_went_back(disk_epoch, recalled.iter().map(|(g, _)| *g));
    match seen {
        Some(seen) => Err(StaleDisk {
            disk: causeway_core::recall::generation(disk_epoch),
            seen,
            witness: recalled
                .into_iter()
                .find(|(g, _)| *g == seen)
                .map(|(_, n)| n)
                .unwrap_or_default(),
        }),
        None => Ok(()),
    }
}
