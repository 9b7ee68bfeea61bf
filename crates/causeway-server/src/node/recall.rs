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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::memory::Network;
    use crate::transport::{Handler, ReplyFuture};
    use causeway_core::placement::EPOCH_FINGERPRINT_BITS;
    use std::sync::Arc;

    /// A node that remembers the asker in generation `seen` (`None`: never saw it).
    struct Witness {
        address: String,
        seen: Option<u64>,
    }

    impl Handler for Witness {
        fn address(&self) -> &str {
            &self.address
        }

        fn handle(self: Arc<Self>, msg: Envelope) -> ReplyFuture {
            Box::pin(async move {
                match msg.rpc {
                    Rpc::Recall => RpcReply::Recalled {
                        generation: self.seen,
                    },
                    _ => RpcReply::Error("unexpected".into()),
                }
            })
        }
    }

    #[tokio::test]
    async fn a_disk_is_refused_only_when_a_node_that_answers_saw_a_later_generation() {
        let net = Network::new();
        let gen = |g: u64| g << EPOCH_FINGERPRINT_BITS;
        let b = Arc::new(Witness {
            address: "b:1".into(),
            seen: Some(2),
        });
        let c = Arc::new(Witness {
            address: "c:1".into(),
            seen: None,
        });
        net.register(&b);
        net.register(&c);
        let t = net.transport("a:1");
        // Nobody listens at d.
        let others = || ["a:1", "b:1", "c:1", "d:1"].map(String::from);

        let e = check_disk(&*t, "a:1", gen(1) | 7, others())
            .await
            .unwrap_err();
        assert_eq!((e.disk, e.seen, e.witness.as_str()), (1, 2, "b:1"));
        let said = e.to_string();
        assert!(
            said.contains("went back") && said.contains("ALLOW_STALE_DISK"),
            "{said}"
        );

        // A disk of the generation it was seen in starts.
        assert!(check_disk(&*t, "a:1", gen(2), others()).await.is_ok());
        // So does any disk when the one node that saw more does not answer.
        net.partition(&["a:1"], &["b:1"]);
        assert!(check_disk(&*t, "a:1", gen(1), others()).await.is_ok());
    }
}
