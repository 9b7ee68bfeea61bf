//! The transport seam: every node-to-node message goes through [`Transport`].
//!
//! The protocol is one request enum ([`Rpc`]) and one reply enum ([`RpcReply`]),
//! delivered to a [`Handler`] (a node, which answers them in one `match`). [`http::HttpTransport`]
//! carries them as postcard over pooled keep-alive HTTP connections to
//! `POST /internal/rpc`; [`stream::StreamTransport`], what nodes use, sends the
//! small requests on a client's path over one multiplexed connection per peer and
//! the rest over HTTP; [`memory::MemoryTransport`] delivers them in-process and can
//! cut links, so whole clusters run inside one test.
//!
//! Every call has a timeout: a dead or partitioned peer costs a bounded wait.

pub mod http;
pub mod memory;
pub mod stream;

use crate::causal::{Context, ShardNo, VClock, Version, WriteId};
use crate::placement::View;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A client key operation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum KeyOp {
    Get,
    Put(crate::causal::Value),
    Delete,
    /// A GET that waits up to `wait_ms` for a write or delete the context has not seen
    /// (`?wait=`); answered with [`KeyOutcome::Watched`].
    Watch {
        wait_ms: u64,
    },
    /// A PUT whose write expires `ttl_ms` after its timestamp (`"ttl"`).
    PutExpiring {
        value: crate::causal::Value,
        ttl_ms: u64,
    },
}

impl KeyOp {
    /// How long the operation may wait on purpose (a watch's wait; zero otherwise).
    pub fn wait(&self) -> Duration {
        match self {
            KeyOp::Watch { wait_ms } => Duration::from_millis(*wait_ms),
            _ => Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRequest {
    pub key: String,
    pub op: KeyOp,
    pub ctx: Context,
}

/// What happened to a key operation that was served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeyOutcome {
    Found(crate::causal::Value),
    NotFound,
    Put {
        replaced: bool,
    },
    Deleted,
    DeleteNotFound,
    /// A watch's answer: the key's value (`None`: it does not exist) and whether it
    /// holds a write the request's context had not seen.
    Watched {
        value: Option<crate::causal::Value>,
        changed: bool,
    },
}

/// Why a key operation was not served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum KeyError {
    #[error("Key is too long")]
    KeyTooLong,
    /// The replica cannot give a causally safe answer (400).
    #[error("Unable to satisfy request")]
    Unsatisfiable,
    /// No replica of the key's shard answered in time (503).
    #[error("Unable to satisfy request")]
    Unavailable,
    #[error("{0}")]
    Internal(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyResponse {
    pub result: Result<KeyOutcome, KeyError>,
    pub ctx: Context,
    /// The node that served it, when that is not the node the client asked.
    pub served_by: Option<String>,
}

/// What the forwarding node fixed about a key operation it forwards.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Forwarding {
    /// How long (ms) the sender still waits for this attempt from when it sent it: a
    /// write not applied by then must not be applied at all (the client may have been
    /// answered and moved on). A duration, never a wall-clock instant (see
    /// [`crate::transit`]).
    pub budget_ms: u64,
    /// The sender's monotonic clock when it sent the attempt ([`crate::transit::mono_ms`]).
    pub sent_ms: u64,
    /// A random number naming the sending process.
    pub sender: u64,
    /// For a write, its identity, fixed by the first node that forwarded it. An attempt
    /// whose answer was lost may still have been applied; the retry on another replica
    /// then carries the same identity, so replicas merge the two into one write instead
    /// of ordering a second copy after writes that followed the first.
    pub write_id: Option<WriteId>,
}

/// A node-to-node request, with the sender's address.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub from: String,
    pub rpc: Rpc,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Rpc {
    /// Serve a client key operation (proxied). `epoch` is the sender's view epoch.
    Key {
        epoch: u64,
        hops: u8,
        fwd: Forwarding,
        req: KeyRequest,
    },
    /// A replica's version of `key`, if it is safe for `ctx` there.
    Fetch {
        key: String,
        ctx: Context,
    },
    /// Anti-entropy / push: versions, and the sender's clock when the batch is
    /// complete relative to `assumed` (the receiver's clock as the sender knows it).
    Sync {
        epoch: u64,
        versions: Vec<(String, Version)>,
        claim: Option<(VClock, VClock)>,
    },
    /// Resharding hand-over: versions the receiver owns in `view`. Like a forwarded
    /// request, it carries how long its sender waits for it (`budget_ms`), its
    /// monotonic send time and the sending process ([`crate::transit`]): a hand-over
    /// held up past its sender's wait is refused, never applied late.
    Migrate {
        view: View,
        versions: Vec<(String, Version)>,
        budget_ms: u64,
        sent_ms: u64,
        sender: u64,
    },
    /// Install `view` (if newer), move away what this node no longer owns, then reply.
    ApplyView {
        view: View,
    },
    GetView,
    KeyCount,
    /// Wait (bounded) until every shard peer has everything this node has now.
    Settle,
    /// Does the receiver, in view `epoch`, still hold keys of `shard` that it must hand
    /// over (see `node::state::State::pending`)?
    Holds {
        epoch: u64,
        shard: ShardNo,
    },
    /// The sender, in view `epoch`, has handed over everything it held for others.
    HandedOver {
        epoch: u64,
    },
    /// What the receiver says about itself, for the cluster status document.
    Status,
    /// One shard's page of a key listing, if the receiver (a replica of `shard`) can
    /// honour `ctx` (see [`crate::listing`]).
    List {
        shard: ShardNo,
        query: crate::listing::Query,
        ctx: Context,
    },
    /// The sender, a replica of the receiver's shard in view `epoch`, has received
    /// every key its old owners had to hand over; `clock` is its clock since then.
    /// A replica whose own clock covers every peer's such clock has the whole shard
    /// (see `causal::context::epochs_allow`).
    Settled {
        epoch: u64,
        clock: VClock,
    },
    /// One shard's page of a key listing from whatever the receiver holds of `shard`
    /// (owned or still to hand over), deletes included: gathered from every node that
    /// may hold keys of a shard no replica has whole (see `listing::union`).
    ListHeld {
        shard: ShardNo,
        query: crate::listing::Query,
    },
    /// Install `view` (if it wins) knowing that its change completed: its coordinator
    /// saw every shard complete (see `causeway_core::views`). Answered like `ApplyView`.
    ViewCompleted {
        view: View,
    },
    /// `HandedOver`, with whom the sender still waits for hand-overs from and the
    /// newest views of its line (see `causeway_core::changes::Changes::handed_over`).
    HandedOverWith {
        epoch: u64,
        report: causeway_core::replica::HandOverReport,
    },
    /// A run of a full transfer: `versions` are every version the sender held in `run`
    /// when its clock was `clock`, so the receiver drops the live values it holds there
    /// that the sender saw deleted (see `causeway_core::changes::Changes::sync_run`);
    /// `claim` as in `Sync`. Answered like `Sync`.
    SyncRun {
        epoch: u64,
        versions: Vec<(String, Version)>,
        run: causeway_core::changes::KeyRun,
        clock: VClock,
        claim: Option<(VClock, VClock)>,
    },
    /// Which view generation did the receiver last see the sender in? Asked by a node
    /// restarting with a view on disk (see `node::recall`).
    Recall,
}

impl Rpc {
    /// The view epoch the sender says it is in, for the messages a node sends only in
    /// a view it installed (replication, hand-over, settling); what `node::recall`
    /// remembers of it.
    pub fn sender_epoch(&self) -> Option<u64> {
        match self {
            Rpc::Sync { epoch, .. }
            | Rpc::SyncRun { epoch, .. }
            | Rpc::HandedOver { epoch }
            | Rpc::HandedOverWith { epoch, .. }
            | Rpc::Holds { epoch, .. }
            | Rpc::Settled { epoch, .. } => Some(*epoch),
            Rpc::Migrate { view, .. } => Some(view.epoch),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RpcReply {
    Key(KeyResponse),
    Fetched(Option<Version>),
    /// The replica could not answer `Fetch` safely either.
    Unsafe,
    Synced {
        clock: VClock,
    },
    Migrated {
        refused: Vec<String>,
    },
    /// The receiver is in another view; here it is.
    WrongEpoch {
        view: View,
    },
    /// The receiver's view (it does not know whether that view's change completed).
    View {
        view: View,
    },
    KeyCount {
        epoch: u64,
        shard: Option<u32>,
        count: u64,
    },
    Settled {
        complete: bool,
    },
    Error(String),
    /// The answer to `Holds`, in the receiver's view epoch.
    Holds {
        epoch: u64,
        any: bool,
    },
    /// Received.
    Ack,
    Status(Box<crate::status::NodeStatus>),
    Listed {
        items: Vec<(String, Version)>,
        more: bool,
    },
    /// The replica cannot list its shard alone: its hand-over still runs.
    Incomplete,
    /// [`RpcReply::Synced`] from a replica whose commits are not synced before they are
    /// acknowledged (`os` durability): `durable` is the clock of what it has synced,
    /// what a power loss leaves it with (see `storage`). (Variants are only ever
    /// appended: the encodings of the earlier ones stay as they were.)
    SyncedDurable {
        clock: VClock,
        durable: VClock,
    },
    /// The receiver's view, which it knows completed (see `causeway_core::views`); the
    /// answer to `GetView`, `ApplyView` and `ViewCompleted` instead of `View` then.
    CompletedView {
        view: View,
    },
    /// `Holds`, with the receiver's report (see [`Rpc::HandedOverWith`]).
    HoldsWith {
        epoch: u64,
        any: bool,
        report: causeway_core::replica::HandOverReport,
    },
    /// The answer to `Recall`: the newest view generation the sender was seen in.
    Recalled {
        generation: Option<u64>,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("peer {0} unreachable: {1}")]
    Unreachable(String, String),
    #[error("peer {0} timed out")]
    Timeout(String),
    #[error("peer {0} refused: {1}")]
    Refused(String, String),
}

pub type RpcFuture = Pin<Box<dyn Future<Output = Result<RpcReply, TransportError>> + Send>>;

/// A handled message's reply, to come.
pub type ReplyFuture = Pin<Box<dyn Future<Output = RpcReply> + Send>>;

/// What the receiving side of a transport hands messages to: a node. The transport
/// knows nothing else of it.
pub trait Handler: Send + Sync + 'static {
    /// The address the handler is reached at.
    fn address(&self) -> &str;
    /// Handles one message and answers it.
    fn handle(self: std::sync::Arc<Self>, msg: Envelope) -> ReplyFuture;
}

/// Largest internal (node-to-node) message a node accepts unless configured otherwise.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024 * 1024;

/// Sends one request to one node and waits (at most `timeout`) for its reply.
pub trait Transport: Send + Sync + 'static {
    fn call(&self, to: &str, msg: Envelope, timeout: Duration) -> RpcFuture;
}
