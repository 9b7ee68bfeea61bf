//! In-process transport for cluster tests: delivers envelopes straight to the target
//! node's handler (after an encode/decode round trip, so messages stay serialisable),
//! and can cut links in one or both directions. A cut link behaves like a dropped
//! packet: the call waits out its timeout. A link can also lose only its replies: the
//! request is handled, the caller hears nothing and times out.
//!
//! Like the real transport's receiver (`POST /internal/rpc` reads at most
//! `Limits::max_internal_bytes`), it refuses a request whose postcard encoding is larger
//! than the network's limit (1 GiB unless set otherwise), so in-process clusters see
//! oversize messages too. Replies are not limited, as over HTTP.

use super::{Envelope, Handler, RpcFuture, Transport, TransportError};
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub struct Network {
    nodes: RwLock<HashMap<String, Weak<dyn Handler>>>,
    /// (from, to) pairs that drop traffic.
    cut: RwLock<HashSet<(String, String)>>,
    /// (from, to) pairs whose requests arrive but whose replies are lost.
    mute: RwLock<HashSet<(String, String)>>,
    /// Largest request delivered, in encoded bytes.
    max_message_bytes: usize,
}

impl Network {
    /// A network with the real transport's default message limit.
    pub fn new() -> Arc<Network> {
        Self::with_max_message_bytes(super::DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// A network that refuses requests larger than `max_message_bytes` once encoded.
    pub fn with_max_message_bytes(max_message_bytes: usize) -> Arc<Network> {
        Arc::new(Network {
            nodes: Default::default(),
            cut: Default::default(),
            mute: Default::default(),
            max_message_bytes,
        })
    }

    pub fn register<H: Handler>(&self, node: &Arc<H>) {
        let node: Arc<dyn Handler> = node.clone();
        self.nodes
            .write()
            .insert(node.address().to_string(), Arc::downgrade(&node));
    }

    pub fn unregister(&self, address: &str) {
        self.nodes.write().remove(address);
    }

    /// Cuts traffic both ways between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        let mut cut = self.cut.write();
        for x in a {
            for y in b {
                cut.insert((x.to_string(), y.to_string()));
                cut.insert((y.to_string(), x.to_string()));
            }
        }
    }

    /// Requests from `from` to each of `to` are handled, but their replies are lost.
    pub fn lose_replies(&self, from: &str, to: &[&str]) {
        let mut mute = self.mute.write();
        for y in to {
            mute.insert((from.to_string(), y.to_string()));
        }
    }

    /// Restores traffic both ways between `a` and `b` only.
    pub fn reconnect(&self, a: &str, b: &str) {
        let mut cut = self.cut.write();
        cut.remove(&(a.to_string(), b.to_string()));
        cut.remove(&(b.to_string(), a.to_string()));
    }

    pub fn heal(&self) {
        self.cut.write().clear();
        self.mute.write().clear();
    }

    /// The transport a node at `address` uses.
    pub fn transport(self: &Arc<Self>, address: &str) -> Arc<MemoryTransport> {
        Arc::new(MemoryTransport {
            net: self.clone(),
            me: address.to_string(),
        })
    }
}

pub struct MemoryTransport {
    net: Arc<Network>,
    me: String,
}

impl Transport for MemoryTransport {
    fn call(&self, to: &str, msg: Envelope, timeout: Duration) -> RpcFuture {
        let link = (self.me.clone(), to.to_string());
        let cut = self.net.cut.read().contains(&link);
        let mute = self.net.mute.read().contains(&link);
        let target = self.net.nodes.read().get(to).and_then(Weak::upgrade);
        let to = to.to_string();
        let limit = self.net.max_message_bytes;
        Box::pin(async move {
            if cut {
                tokio::time::sleep(timeout).await;
                return Err(TransportError::Timeout(to));
            }
            let Some(node) = target else {
                return Err(TransportError::Unreachable(to, "no such node".into()));
            };
            let bytes = postcard::to_allocvec(&msg).expect("envelopes always encode");
            if bytes.len() > limit {
                return Err(TransportError::Refused(
                    to,
                    format!(
                        "413 Payload Too Large: message of {} bytes is over the limit of {limit}",
                        bytes.len()
                    ),
                ));
            }
            let msg: Envelope = postcard::from_bytes(&bytes).expect("envelopes round-trip");
            let started = tokio::time::Instant::now();
            match tokio::time::timeout(timeout, node.handle(msg)).await {
                Ok(_) if mute => {
                    tokio::time::sleep_until(started + timeout).await;
                    Err(TransportError::Timeout(to))
                }
                Ok(reply) => Ok(reply),
                Err(_) => Err(TransportError::Timeout(to)),
            }
        })
    }
}
