//! One simulated node: a replica [`State`] changed only through the core's [`Changes`]
//! (then [`State::apply`], as the server's committer does), and the node's loops as
//! plain event handlers: client requests (served locally under the read rule, or
//! forwarded to the key's replicas), replication to shard peers with the claim rule,
//! tombstone collection, and its disk (what survives a crash).
//!
//! Owns: the node's volatile state (peers' clocks, requests in flight, forwarding
//! identities) and its durable state. Invariant: every protocol decision is a call
//! into `causeway_core`; handlers only move messages and keep the bookkeeping the
//! server's async shells keep. Handlers never read a clock or a random source of
//! their own: time comes in as `now` (simulated milliseconds), and what they want done
//! goes out as [`Out`] actions for the world to schedule.

use causeway_core::causal::context::{epochs_allow, read_is_safe};
use causeway_core::causal::version::{ts_of_ms, HLC_SHIFT, MAX_TS};
use causeway_core::causal::{Context, ShardNo, VClock, Value, Version, WriteId};
use causeway_core::changes::{Changes, ClientWrite, KeyRun};
use causeway_core::placement::View;
use causeway_core::replica::{self, Settled};
use causeway_core::state::{Budget, State};
use std::collections::BTreeMap;

/// The simulated clock's origin: 2026 in Unix milliseconds, as a node's wall clock reads.
pub const EPOCH_MS: u64 = 1_780_000_000_000;
/// Bounds on waits for other nodes (the server's defaults, in milliseconds).
pub const FETCH_MS: u64 = 700;
pub const PROXY_ATTEMPT_MS: u64 = 1800;
pub const PROXY_TOTAL_MS: u64 = 4000;
pub const SYNC_TIMEOUT_MS: u64 = 3000;
pub const HEARTBEAT_MS: u64 = 500;
/// How often the replication loop looks for new versions (the server's loop wakes on
/// every commit; this is that, batched by 20 ms).
pub const REPLICATE_EVERY_MS: u64 = 20;
/// How often tombstones are collected, and how often the disk syncs.
pub const COLLECT_EVERY_MS: u64 = 1000;
pub const DISK_SYNC_EVERY_MS: u64 = 1000;
pub const HAND_OVER_EVERY_MS: u64 = 200;
pub const ANNOUNCE_EVERY_MS: u64 = 1000;
/// With `announce_once`, how many times a node announces the end of its hand-over in
/// one view (a second apart): the server announces once and asks old owners (`Holds`)
/// when the word is lost; the simulator has no `Holds`, so it repeats a few times, for
/// members that had not installed the view yet.
pub const ANNOUNCE_ONCE_TIMES: u32 = 5;
/// Most versions in one hand-over message.
const HAND_OVER_BATCH: Budget = Budget {
    versions: 4,
    bytes: usize::MAX,
};
/// Most keys in one run of a full transfer (the server's `FULL_CHUNK`, scaled down).
const RUN_BUDGET: Budget = Budget {
    versions: 4,
    bytes: usize::MAX,
};

/// A client operation on one key.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Get,
    Put(String),
    Delete,
}

#[derive(Clone, Debug)]
pub struct KeyReq {
    pub key: String,
    pub op: Op,
    pub ctx: Context,
}

/// What a key request came to (the server's `KeyOutcome` and `KeyError`).
#[derive(Clone, Debug, PartialEq)]
pub enum KeyResult {
    Found(String),
    NotFound,
    Put { replaced: bool },
    Deleted,
    DeleteNotFound,
    Unsatisfiable,
    Unavailable,
}

#[derive(Clone, Debug)]
pub struct KeyResp {
    pub result: KeyResult,
    pub ctx: Context,
    /// The replica that served a forwarded request.
    pub served_by: Option<usize>,
}

/// Where an answer goes.
#[derive(Clone, Copy, Debug)]
pub enum ReplyTo {
    Client {
        session: u32,
        op: u64,
    },
    Node {
        node: usize,
        rid: u64,
        attempt: usize,
    },
}

/// Messages between nodes.
#[derive(Clone, Debug)]
pub enum Msg {
    Sync {
        epoch: u64,
        versions: Vec<(String, Version)>,
        claim: Option<(VClock, VClock)>,
        /// A run of the sender's keys (`versions` are all it held there) with its clock
        /// read with them: the server's full transfer (`SyncRun`).
        run: Option<(KeyRun, VClock)>,
        rid: u64,
    },
    /// The peer's clock after storing a batch; `None` with the peer's view when it is
    /// in another view or does not count the sender as a member.
    Synced {
        clock: Option<VClock>,
        /// The clock of what the replier's disk holds (when a crash may lose what is not
        /// synced: the server's `SyncedDurable`); tombstone collection counts it.
        durable: Option<VClock>,
        view: Option<View>,
        rid: u64,
    },
    /// A view to install if it ranks higher (a coordinator's word, or a peer's).
    ApplyView {
        view: View,
    },
    /// Keys handed over to a replica of their new shard, to be applied before
    /// `deadline` (simulated time: the server's budget, less the time the message was
    /// held, which its receiver estimates; see `causeway_server::transit`).
    Migrate {
        view: View,
        versions: Vec<(String, Version)>,
        rid: u64,
        deadline: u64,
    },
    Migrated {
        rid: u64,
        refused: Vec<String>,
    },
    /// The sender holds no more keys to hand over in view `epoch`; whom it still
    /// waits for and its line of views (see `Changes::handed_over`).
    HandedOver {
        epoch: u64,
        report: replica::HandOverReport,
    },
    /// The sender received every hand-over of view `epoch`; its clock then.
    Settled {
        epoch: u64,
        clock: VClock,
    },
    Fetch {
        key: String,
        ctx: Context,
        rid: u64,
    },
    /// `None`: the peer cannot answer safely.
    Fetched {
        rid: u64,
        version: Option<Option<Version>>,
    },
    Key {
        /// The sender's view (a newer one is adopted on arrival).
        view: View,
        req: KeyReq,
        hops: u8,
        write_id: Option<WriteId>,
        /// The sender stops waiting then (simulated ms): a later arrival is dropped.
        deadline: u64,
        rid: u64,
        attempt: usize,
    },
    KeyReply {
        rid: u64,
        attempt: usize,
        resp: KeyResp,
    },
}

impl Msg {
    /// The message's kind, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Sync { run: None, .. } => "sync",
            Msg::Sync { run: Some(_), .. } => "sync-run",
            Msg::Synced { .. } => "synced",
            Msg::Fetch { .. } => "fetch",
            Msg::Fetched { .. } => "fetched",
            Msg::Key { .. } => "key",
            Msg::KeyReply { .. } => "key-reply",
            Msg::ApplyView { .. } => "apply-view",
            Msg::Migrate { .. } => "migrate",
            Msg::Migrated { .. } => "migrated",
            Msg::HandedOver { .. } => "handed-over",
            Msg::Settled { .. } => "settled",
        }
    }
}

/// Bytes of message framing counted on top of each message's payload: the sender's
/// address and process id, the epoch, a request id and the message kind, as the
/// server's envelope carries them (an estimate; the transport's own headers are not
/// counted).
pub const HEADER_BYTES: usize = 48;

fn encoded<T: serde::Serialize + ?Sized>(x: &T) -> usize {
    postcard::to_allocvec(x).map_or(0, |b| b.len())
}

fn req_bytes(req: &KeyReq) -> usize {
    let value = match &req.op {
        Op::Put(v) => v.len(),
        Op::Get | Op::Delete => 0,
    };
    1 + req.key.len() + value + encoded(&req.ctx)
}

impl Msg {
    /// The message's size on the wire: [`HEADER_BYTES`] plus its payload, the
    /// versions, clocks, views and contexts in the postcard encoding the server uses,
    /// integers as 8 bytes.
    pub fn wire_bytes(&self) -> usize {
        HEADER_BYTES
            + match self {
                Msg::Sync {
                    versions,
                    claim,
                    run,
                    ..
                } => 8 + encoded(versions) + encoded(claim) + encoded(run),
                Msg::Synced {
                    clock,
                    durable,
                    view,
                    ..
                } => 8 + encoded(clock) + encoded(durable) + encoded(view),
                Msg::ApplyView { view } => encoded(view),
                Msg::Migrate { view, versions, .. } => 16 + encoded(view) + encoded(versions),
                Msg::Migrated { refused, .. } => 8 + encoded(refused),
                Msg::HandedOver { report, .. } => 8 + encoded(report),
                Msg::Settled { clock, .. } => 8 + encoded(clock),
                Msg::Fetch { key, ctx, .. } => 8 + key.len() + encoded(ctx),
                Msg::Fetched { version, .. } => 8 + encoded(version),
                Msg::Key {
                    view,
                    req,
                    write_id,
                    ..
                } => 33 + encoded(view) + req_bytes(req) + encoded(write_id),
                Msg::KeyReply { resp, .. } => {
                    let value = match &resp.result {
                        KeyResult::Found(v) => v.len(),
                        _ => 0,
                    };
                    17 + value + encoded(&resp.ctx)
                }
            }
    }
}

/// Node timers.
#[derive(Clone, Copy, Debug)]
pub enum Timer {
    Replicate,
    Collect,
    DiskSync,
    FetchTimeout(u64),
    ProxyTimeout(u64, usize),
    /// One pass of the hand-over of keys this node no longer owns.
    HandOver,
    /// Announcements: hand-over done, settled.
    Announce,
}

/// What a handler wants done.
#[derive(Debug)]
pub enum Out {
    Send { to: usize, msg: Msg },
    Reply { to: ReplyTo, resp: KeyResp },
    Timer { after: u64, timer: Timer },
}

/// Replication towards one shard peer.
#[derive(Default, Debug)]
struct PeerLoop {
    known: Option<VClock>,
    inflight: Option<(u64, u64)>,
    last_sent: u64,
    /// What the message in flight was.
    sent: Option<Sent>,
    /// A full transfer under way.
    transfer: Option<Transfer>,
    /// Until the first contact: what the peer acknowledged before this loop started.
    floor: Option<VClock>,
}

/// A replication message in flight, as its reply is read.
#[derive(Debug)]
enum Sent {
    /// Incremental, with the claim it made (`None` on first contact).
    Delta(Option<(VClock, VClock)>),
    /// A run of a full transfer ending at this key (the last run: `None`).
    Run(Option<String>),
}

/// A full transfer to one peer, as the server's replication loop runs it: our keys in
/// runs (`Changes::sync_run`), resumed after the last run the peer acknowledged, then
/// the claim of the clock taken at the start. It starts when the difference exceeds
/// [`SimNode::delta_budget`], or when the peer's reply shows it lost writes it had acknowledged.
#[derive(Debug)]
struct Transfer {
    clock: VClock,
    assumed: VClock,
    cursor: Option<String>,
}

/// A request waiting for peers.
enum Pending {
    Read {
        req: KeyReq,
        /// The context in this replica's epoch.
        ctx: Context,
        local: Option<Version>,
        write_id: Option<WriteId>,
        to: ReplyTo,
        waiting: usize,
    },
    Proxy {
        req: KeyReq,
        hops: u8,
        first_id: Option<WriteId>,
        replicas: Vec<usize>,
        start: usize,
        attempt: usize,
        deadline: u64,
        to: ReplyTo,
    },
}

/// A copy of a [`State`] (what a disk holds).
pub fn copy_state(st: &State) -> State {
    let mut c = State::new(
        st.me.clone(),
        st.incarnation,
        (*st.view).clone(),
        st.clock.clone(),
        st.last_ts,
    );
    c.bulk_load(
        st.keys
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    c.pending = st.pending.clone();
    c
}

/// A hand-over batch in flight (the server's `hand_over` call to each replica of the
/// batch's shard): its view epoch, keys and identities, when it was sent, and how many
/// replicas have not answered. It stays in flight until every replica answered or
/// [`SYNC_TIMEOUT_MS`] passed, as the server waits for every call before it goes on;
/// a `Migrate` that arrives after that is not applied (the server's arrival deadline).
struct HandOverBatch {
    epoch: u64,
    ids: Vec<(String, WriteId)>,
    sent: u64,
    waiting: usize,
}

impl HandOverBatch {
    fn in_flight(&self, now: u64) -> bool {
        self.waiting > 0 && now < self.sent + SYNC_TIMEOUT_MS
    }
}

pub struct SimNode {
    pub id: usize,
    pub st: State,
    /// What the disk holds once synced (the `--durability os` case: writes reach it
    /// every [`DISK_SYNC_EVERY_MS`]).
    pub synced: State,
    /// This node's clock minus simulated time, in ms (skew and jumps).
    pub skew_ms: i64,
    /// Every node's address, by index.
    names: Vec<String>,
    peers: BTreeMap<usize, PeerLoop>,
    peer_clocks: BTreeMap<String, (u64, VClock)>,
    /// The clock each shard peer last acknowledged, with its view epoch (the server's
    /// `replication::Acked`), and the copy on disk (taken at each disk sync; a restart
    /// finds that one).
    acked: BTreeMap<usize, (u64, VClock)>,
    acked_on_disk: BTreeMap<usize, (u64, VClock)>,
    settled: Settled,
    pending: BTreeMap<u64, Pending>,
    /// Hand-over batches in flight.
    handing: BTreeMap<u64, HandOverBatch>,
    next_rid: u64,
    rr: usize,
    fwd_origin: u64,
    fwd_counter: u64,
    fwd_last_ts: u64,
    /// How old a tombstone must be to be collected (ms).
    pub tombstone_age_ms: u64,
    /// Keep a copy of the state as the disk holds it (needed only when a crash may lose
    /// what was not synced; off, [`Self::synced`] is left as it was).
    pub disk_copies: bool,
    /// Most in one incremental replication message (see `Config::delta_versions`).
    pub delta_budget: Budget,
    /// Announce the end of the hand-over once per view (see `Config::announce_once`).
    pub announce_once: bool,
    /// The view epoch whose end of hand-over this node announced, and how often.
    announced: Option<(u64, u32)>,
    /// Restarted in the middle of a hand-over: says it holds nothing more only from
    /// then on (see `replica::largest_hand_over_message`; every budget here is
    /// [`SYNC_TIMEOUT_MS`]).
    quiet_until: u64,
}

impl SimNode {
    pub fn new(
        id: usize,
        names: Vec<String>,
        view: View,
        incarnation: u64,
        fwd_origin: u64,
        tombstone_age_ms: u64,
    ) -> SimNode {
        let st = State::new(names[id].clone(), incarnation, view, VClock::new(), 0);
        let synced = copy_state(&st);
        SimNode {
            id,
            st,
            synced,
            skew_ms: 0,
            names,
            peers: BTreeMap::new(),
            peer_clocks: BTreeMap::new(),
            acked: BTreeMap::new(),
            acked_on_disk: BTreeMap::new(),
            settled: Settled::default(),
            pending: BTreeMap::new(),
            handing: BTreeMap::new(),
            next_rid: 1,
            rr: 0,
            fwd_origin,
            fwd_counter: 0,
            fwd_last_ts: 0,
            tombstone_age_ms,
            disk_copies: true,
            delta_budget: Budget {
                versions: usize::MAX,
                bytes: usize::MAX,
            },
            announce_once: false,
            announced: None,
            quiet_until: 0,
        }
    }

    /// The node's hybrid clock at simulated time `now`, as `hlc_now` reads it.
    pub fn hlc(&self, now: u64) -> u64 {
        let ms = (EPOCH_MS as i64 + now as i64 + self.skew_ms).max(0) as u64;
        ms << HLC_SHIFT
    }

    /// A restart after a crash: the disk's state (all of it, or with `lose_unsynced`
    /// only what was synced), a new incarnation, nothing volatile.
    pub fn restart(&mut self, now: u64, lose_unsynced: bool, incarnation: u64, fwd_origin: u64) {
        if lose_unsynced {
            self.st = copy_state(&self.synced);
        }
        // (Every message's budget here is the same, whatever its size.)
        if replica::foreign(&self.st).next().is_some() {
            self.quiet_until = now + SYNC_TIMEOUT_MS;
        }
        // Every open takes a new incarnation, synced at once (see the server's storage).
        self.st.incarnation = incarnation;
        self.synced.incarnation = incarnation;
        self.peers.clear();
        self.peer_clocks.clear();
        self.acked = self.acked_on_disk.clone();
        self.settled = Settled::default();
        self.pending.clear();
        self.handing.clear();
        self.fwd_origin = fwd_origin;
        self.fwd_counter = 0;
        self.fwd_last_ts = 0;
    }

    /// Installs `view` if it ranks higher than this node's (as the committer's
    /// `SetView`); then replication starts over and the hand-over runs.
    pub fn adopt(&mut self, view: &View, out: &mut Vec<Out>) -> bool {
        if view.rank() <= self.st.view.rank() {
            return false;
        }
        let mut c = Changes::new(&self.st);
        // The simulator does not model completion announcements (see its README).
        if !c.set_view(&self.st, view.clone(), false) {
            return false;
        }
        self.st.apply(c);
        // A view is synced as it is installed (the server's storage), and with it
        // everything committed before it.
        if self.disk_copies {
            self.synced = copy_state(&self.st);
        }
        self.peers.clear();
        self.peer_clocks.clear();
        self.settled = Settled::default();
        // (Batches in flight stay: as the server's hand-over lock, they hold the next
        // pass and the announcement back until answered; removals in their view's
        // epoch no longer apply.)
        out.push(Out::Timer {
            after: 1,
            timer: Timer::HandOver,
        });
        true
    }

    fn rid(&mut self) -> u64 {
        self.next_rid += 1;
        self.next_rid
    }

    fn index_of(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("a node of the cluster")
    }

    fn shard_peers(&self) -> Vec<usize> {
        let Some(shard) = self.st.my_shard() else {
            return Vec::new();
        };
        self.st
            .view
            .replicas(shard)
            .iter()
            .filter(|p| **p != self.st.me)
            .map(|p| self.index_of(p))
            .collect()
    }

    /// Whether this node's shard is complete in its view: nothing pending from old
    /// owners and every shard peer settled (`replica::shard_complete`).
    pub fn complete(&self) -> bool {
        let Some(shard) = self.st.my_shard() else {
            return false;
        };
        let peers: Vec<&String> = self
            .st
            .view
            .replicas(shard)
            .iter()
            .filter(|p| **p != self.st.me)
            .collect();
        replica::shard_complete(
            self.st.pending.is_empty(),
            self.st.view.epoch,
            &self.st.clock,
            &peers,
            &self.settled,
        )
    }

    /// A client's request arrives (`write_id`: the identity its idempotency key gives it).
    pub fn client_request(
        &mut self,
        now: u64,
        req: KeyReq,
        write_id: Option<WriteId>,
        to: ReplyTo,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        let deadline = now + PROXY_TOTAL_MS;
        self.route(now, req, 0, write_id, deadline, to, &mut out);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        now: u64,
        req: KeyReq,
        hops: u8,
        write_id: Option<WriteId>,
        deadline: u64,
        to: ReplyTo,
        out: &mut Vec<Out>,
    ) {
        if self.st.owns(&req.key) {
            self.serve_local(now, req, write_id, to, out);
        } else {
            self.proxy(now, req, hops, write_id, deadline, to, out);
        }
    }

    fn serve_local(
        &mut self,
        now: u64,
        req: KeyReq,
        write_id: Option<WriteId>,
        to: ReplyTo,
        out: &mut Vec<Out>,
    ) {
        match req.op.clone() {
            Op::Put(value) => {
                let resp = self.write(now, &req.key, Some(value), &req.ctx, write_id);
                out.push(Out::Reply { to, resp });
            }
            Op::Get | Op::Delete => {
                let Some(shard) = self.st.my_shard() else {
                    out.push(Out::Reply {
                        to,
                        resp: unavailable(&req.ctx),
                    });
                    return;
                };
                let ctx = req.ctx.in_epoch(self.st.view.epoch);
                let local = self.st.get(&req.key).cloned();
                let safe = read_is_safe(&ctx, shard, &req.key, &self.st.clock, local.as_ref())
                    && epochs_allow(
                        &ctx,
                        replica::complete_for(&self.st, req.ctx.epoch, self.complete()),
                    );
                if safe {
                    self.finish_read(now, req, Ok((local, ctx)), write_id, to, out);
                    return;
                }
                let peers = self.shard_peers();
                if peers.is_empty() {
                    self.finish_read(now, req, Err(()), write_id, to, out);
                    return;
                }
                let rid = self.rid();
                for &p in &peers {
                    out.push(Out::Send {
                        to: p,
                        msg: Msg::Fetch {
                            key: req.key.clone(),
                            ctx: ctx.clone(),
                            rid,
                        },
                    });
                }
                out.push(Out::Timer {
                    after: FETCH_MS,
                    timer: Timer::FetchTimeout(rid),
                });
                self.pending.insert(
                    rid,
                    Pending::Read {
                        req,
                        ctx,
                        local,
                        write_id,
                        to,
                        waiting: peers.len(),
                    },
                );
            }
        }
    }

    /// Ends a read (a GET, or the read a DELETE starts with): `Ok` with the version to
    /// answer with and the context in this epoch, `Err` when no safe answer came.
    fn finish_read(
        &mut self,
        now: u64,
        req: KeyReq,
        found: Result<(Option<Version>, Context), ()>,
        write_id: Option<WriteId>,
        to: ReplyTo,
        out: &mut Vec<Out>,
    ) {
        let Some(shard) = self
            .st
            .my_shard()
            .filter(|s| *s == self.st.view.shard_of_key(&req.key))
        else {
            // The view changed while the read waited for peers.
            out.push(Out::Reply {
                to,
                resp: unavailable(&req.ctx),
            });
            return;
        };
        let last_ts = self.st.last_ts;
        let found = found.map(|(v, mut ctx)| {
            if let Some(v) = &v {
                ctx.observe(v, shard, &req.key);
                ctx.ts = replica::answer_ts(ctx.ts, last_ts);
            }
            (v, ctx)
        });
        let read_now = |ctx: &Context| self.hlc(now).max(ctx.ts.min(MAX_TS));
        let resp = match (&req.op, found) {
            (Op::Get, Ok((v, ctx))) => {
                let at = read_now(&ctx);
                let result = match v.as_ref().and_then(|v| v.live_value(at)) {
                    Some(value) => KeyResult::Found(value_text(value)),
                    None => KeyResult::NotFound,
                };
                KeyResp {
                    result,
                    ctx,
                    served_by: None,
                }
            }
            (Op::Get, Err(())) => KeyResp {
                result: KeyResult::Unsatisfiable,
                ctx: req.ctx.clone(),
                served_by: None,
            },
            (Op::Delete, Ok((v, after)))
                if !v.as_ref().is_some_and(|v| v.is_live(read_now(&after))) =>
            {
                KeyResp {
                    result: KeyResult::DeleteNotFound,
                    ctx: after,
                    served_by: None,
                }
            }
            (Op::Delete, Ok((v, after))) => {
                let ctx = replica::delete_context(&req.ctx, after, v.as_ref(), write_id);
                self.write(now, &req.key, None, &ctx, write_id)
            }
            (Op::Delete, Err(())) => {
                let st = &self.st;
                let says_deleted = req.ctx.epoch == st.view.epoch
                    && req.ctx.recent_of(shard, &req.key).is_some_and(|r| !r.live);
                if says_deleted {
                    KeyResp {
                        result: KeyResult::DeleteNotFound,
                        ctx: req.ctx.clone(),
                        served_by: None,
                    }
                } else {
                    self.write(now, &req.key, None, &req.ctx, write_id)
                }
            }
            (Op::Put(_), _) => unreachable!("a put does not read"),
        };
        out.push(Out::Reply { to, resp });
    }

    fn write(
        &mut self,
        now: u64,
        key: &str,
        value: Option<String>,
        ctx: &Context,
        id: Option<WriteId>,
    ) -> KeyResp {
        let is_put = value.is_some();
        let mut c = Changes::new(&self.st);
        let done = c.write(
            &self.st,
            ClientWrite {
                key,
                value: value.map(|v| Value::Str(v.into())),
                ttl_ms: None,
                ctx: ctx.clone(),
                id,
            },
            self.hlc(now),
        );
        let Ok(done) = done else {
            // Only a view change moves keys, and this simulator's views do not change.
            return KeyResp {
                result: KeyResult::Unavailable,
                ctx: ctx.clone(),
                served_by: None,
            };
        };
        self.st.apply(c);
        let shard = self.st.my_shard().unwrap_or(0);
        let ctx = replica::context_after_write(ctx, &done, shard, key, is_put, self.st.last_ts);
        let result = if is_put {
            KeyResult::Put {
                replaced: done.existed,
            }
        } else {
            KeyResult::Deleted
        };
        KeyResp {
            result,
            ctx,
            served_by: None,
        }
    }

    /// A client's write with an empty context, served here (the node must own `key`):
    /// how the scale runs load keys without client traffic.
    pub fn load(&mut self, now: u64, key: &str, value: String) -> bool {
        let resp = self.write(now, key, Some(value), &Context::default(), None);
        matches!(resp.result, KeyResult::Put { .. })
    }

    fn mint_id(&mut self, now: u64, ctx: &Context) -> WriteId {
        let id = replica::forwarded_write_id(
            self.fwd_last_ts,
            ctx.ts,
            self.hlc(now),
            self.fwd_origin,
            self.fwd_counter,
        );
        self.fwd_counter += 1;
        self.fwd_last_ts = id.ts;
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn proxy(
        &mut self,
        now: u64,
        req: KeyReq,
        hops: u8,
        outer: Option<WriteId>,
        deadline: u64,
        to: ReplyTo,
        out: &mut Vec<Out>,
    ) {
        let first_id = match req.op {
            Op::Get => None,
            Op::Put(_) | Op::Delete => Some(match outer {
                Some(id) => id,
                None => self.mint_id(now, &req.ctx),
            }),
        };
        let view = self.st.view.clone();
        let replicas: Vec<usize> = view
            .replicas(view.shard_of_key(&req.key))
            .iter()
            .filter(|r| **r != self.st.me)
            .map(|r| self.index_of(r))
            .collect();
        let deadline = deadline.min(now + PROXY_TOTAL_MS);
        if hops >= 3 || replicas.is_empty() {
            out.push(Out::Reply {
                to,
                resp: unavailable(&req.ctx),
            });
            return;
        }
        let start = self.rr;
        self.rr += 1;
        let rid = self.rid();
        self.pending.insert(
            rid,
            Pending::Proxy {
                req,
                hops,
                first_id,
                replicas,
                start,
                attempt: 0,
                deadline,
                to,
            },
        );
        self.proxy_attempt(now, rid, out);
    }

    fn proxy_attempt(&mut self, now: u64, rid: u64, out: &mut Vec<Out>) {
        let Some(Pending::Proxy {
            req,
            hops,
            first_id,
            replicas,
            start,
            attempt,
            deadline,
            to,
        }) = self.pending.get(&rid)
        else {
            return;
        };
        let (i, deadline, to) = (*attempt, *deadline, *to);
        if i >= replicas.len() || now >= deadline {
            let resp = unavailable(&req.ctx);
            self.pending.remove(&rid);
            out.push(Out::Reply { to, resp });
            return;
        }
        let target = replicas[(start + i) % replicas.len()];
        let (req, hops, first_id) = (req.clone(), *hops, *first_id);
        let budget = (deadline - now).min(PROXY_ATTEMPT_MS);
        let write_id = first_id
            .map(|first| replica::attempt_write_id(first, i, || self.mint_id(now, &req.ctx)));
        out.push(Out::Send {
            to: target,
            msg: Msg::Key {
                view: (*self.st.view).clone(),
                req,
                hops: hops + 1,
                write_id,
                deadline: now + budget,
                rid,
                attempt: i,
            },
        });
        out.push(Out::Timer {
            after: budget,
            timer: Timer::ProxyTimeout(rid, i),
        });
    }

    fn next_attempt(&mut self, now: u64, rid: u64, failed: usize, out: &mut Vec<Out>) {
        if let Some(Pending::Proxy { attempt, .. }) = self.pending.get_mut(&rid) {
            if *attempt == failed {
                *attempt += 1;
                self.proxy_attempt(now, rid, out);
            }
        }
    }

    /// A timer fired.
    pub fn timer(&mut self, now: u64, timer: Timer) -> Vec<Out> {
        let mut out = Vec::new();
        match timer {
            Timer::Replicate => {
                self.replicate(now, &mut out);
                out.push(Out::Timer {
                    after: REPLICATE_EVERY_MS,
                    timer: Timer::Replicate,
                });
            }
            Timer::Collect => {
                self.collect_tombstones(now);
                out.push(Out::Timer {
                    after: COLLECT_EVERY_MS,
                    timer: Timer::Collect,
                });
            }
            Timer::DiskSync => {
                if self.disk_copies {
                    self.synced = copy_state(&self.st);
                }
                self.acked_on_disk = self.acked.clone();
                out.push(Out::Timer {
                    after: DISK_SYNC_EVERY_MS,
                    timer: Timer::DiskSync,
                });
            }
            Timer::FetchTimeout(rid) => {
                if let Some(Pending::Read { .. }) = self.pending.get(&rid) {
                    let Some(Pending::Read {
                        req, write_id, to, ..
                    }) = self.pending.remove(&rid)
                    else {
                        unreachable!()
                    };
                    self.finish_read(now, req, Err(()), write_id, to, &mut out);
                }
            }
            Timer::ProxyTimeout(rid, attempt) => self.next_attempt(now, rid, attempt, &mut out),
            Timer::HandOver => self.hand_over(now, &mut out),
            Timer::Announce => {
                self.announce(now, &mut out);
                out.push(Out::Timer {
                    after: ANNOUNCE_EVERY_MS,
                    timer: Timer::Announce,
                });
            }
        }
        out
    }

    /// One pass of the hand-over (the server's `migrate_out`): every key this node
    /// holds but no longer owns goes, in batches, to every replica of its new shard; a
    /// batch is removed here once one of them accepted it. Runs until nothing is left.
    fn hand_over(&mut self, now: u64, out: &mut Vec<Out>) {
        let groups = replica::foreign_keys(&self.st);
        if groups.is_empty() {
            return;
        }
        self.handing.retain(|_, b| b.in_flight(now));
        if self.handing.is_empty() {
            let epoch = self.st.view.epoch;
            let (batches, dropped) = replica::hand_over_plan(groups, HAND_OVER_BATCH);
            if !dropped.is_empty() {
                let mut c = Changes::new(&self.st);
                c.remove(&self.st, dropped, epoch);
                self.st.apply(c);
            }
            let view = (*self.st.view).clone();
            for (shard, batch) in batches {
                let rid = self.rid();
                let ids = batch.iter().map(|(k, v)| (k.clone(), v.id)).collect();
                let replicas = view.replicas(shard).to_vec();
                self.handing.insert(
                    rid,
                    HandOverBatch {
                        epoch,
                        ids,
                        sent: now,
                        waiting: replicas.len(),
                    },
                );
                for r in replicas {
                    let to = self.index_of(&r);
                    out.push(Out::Send {
                        to,
                        msg: Msg::Migrate {
                            view: view.clone(),
                            versions: batch.clone(),
                            rid,
                            deadline: now + SYNC_TIMEOUT_MS,
                        },
                    });
                }
            }
        }
        out.push(Out::Timer {
            after: HAND_OVER_EVERY_MS,
            timer: Timer::HandOver,
        });
    }

    /// Tells the view's members when this node has nothing more to hand over, and its
    /// shard peers its clock once it received every hand-over (the server's
    /// `announce_handed_over` and `announce_settled`, repeated as messages get lost).
    fn announce(&mut self, now: u64, out: &mut Vec<Out>) {
        let view = self.st.view.clone();
        let times = match self.announced {
            Some((epoch, n)) if epoch == view.epoch => n,
            _ => 0,
        };
        let repeat = !self.announce_once || times < ANNOUNCE_ONCE_TIMES;
        // (Not while a batch is in flight: the server announces once every call of its
        // hand-over returned, so no `Migrate` of it can be applied after the word.)
        let in_flight = self.handing.values().any(|b| b.in_flight(now));
        let quiet = now < self.quiet_until;
        if repeat && !in_flight && !quiet && replica::foreign_keys(&self.st).is_empty() {
            self.announced = Some((view.epoch, times + 1));
            for n in view.nodes.iter().filter(|n| **n != self.st.me) {
                let to = self.index_of(n);
                out.push(Out::Send {
                    to,
                    msg: Msg::HandedOver {
                        epoch: view.epoch,
                        report: replica::hand_over_report(&self.st),
                    },
                });
            }
        }
        if self.st.my_shard().is_some() && self.st.pending.is_empty() {
            for p in self.shard_peers() {
                out.push(Out::Send {
                    to: p,
                    msg: Msg::Settled {
                        epoch: view.epoch,
                        clock: self.st.clock.clone(),
                    },
                });
            }
        }
    }

    /// One round of the replication loops: to each shard peer with no message in
    /// flight, what its clock does not cover (or a heartbeat), with our clock as the claim.
    fn replicate(&mut self, now: u64, out: &mut Vec<Out>) {
        let epoch = self.st.view.epoch;
        for p in self.shard_peers() {
            let rid = self.rid();
            if !self.peers.contains_key(&p) {
                // What the peer acknowledged before this loop started (a restart of ours).
                let floor = match self.acked.get(&p) {
                    Some((e, c)) if *e == epoch => Some(c.clone()),
                    _ => None,
                };
                let lp = PeerLoop {
                    floor,
                    ..PeerLoop::default()
                };
                self.peers.insert(p, lp);
            }
            let lp = self.peers.get_mut(&p).expect("just made");
            if let Some((_, sent)) = lp.inflight {
                if now < sent + SYNC_TIMEOUT_MS {
                    continue;
                }
                lp.inflight = None;
            }
            let mut delta = None;
            if lp.transfer.is_none() {
                match &lp.known {
                    // First contact: learn the peer's clock.
                    None => delta = Some((Vec::new(), None)),
                    Some(known) => match self.st.delta(known, self.delta_budget) {
                        Some(versions) => {
                            let idle = versions.is_empty() && known.covers(&self.st.clock);
                            if idle && now < lp.last_sent + HEARTBEAT_MS {
                                continue;
                            }
                            delta = Some((versions, Some((self.st.clock.clone(), known.clone()))));
                        }
                        None => {
                            lp.transfer = Some(Transfer {
                                clock: self.st.clock.clone(),
                                assumed: known.clone(),
                                cursor: None,
                            })
                        }
                    },
                }
            }
            let (versions, claim, run) = match (delta, &lp.transfer) {
                (Some((versions, claim)), _) => {
                    lp.sent = Some(Sent::Delta(claim.clone()));
                    (versions, claim, None)
                }
                (None, Some(t)) => {
                    let versions = self.st.chunk_after(t.cursor.as_deref(), RUN_BUDGET);
                    let through = versions.last().map(|(k, _)| k.clone());
                    let claim = through
                        .is_none()
                        .then(|| (t.clock.clone(), t.assumed.clone()));
                    let keys = KeyRun {
                        after: t.cursor.clone(),
                        through: through.clone(),
                    };
                    lp.sent = Some(Sent::Run(through));
                    (versions, claim, Some((keys, self.st.clock.clone())))
                }
                (None, None) => unreachable!("a delta or a transfer"),
            };
            lp.inflight = Some((rid, now));
            lp.last_sent = now;
            out.push(Out::Send {
                to: p,
                msg: Msg::Sync {
                    epoch,
                    versions,
                    claim,
                    run,
                    rid,
                },
            });
        }
    }

    fn collect_tombstones(&mut self, now: u64) {
        let st = &self.st;
        // While an old owner may still hand keys of this shard over, no tombstone goes
        // (a late hand-over of a deleted key's old copy would bring it back).
        if st.tombstones.is_empty() || !st.pending.is_empty() {
            return;
        }
        let Some(peer_clocks) = replica::shard_peer_clocks(st, |p| self.peer_clocks.get(p)) else {
            return;
        };
        let old_enough = self
            .hlc(now)
            .saturating_sub(ts_of_ms(self.tombstone_age_ms));
        let doomed = replica::collectable_tombstones(st, &peer_clocks, old_enough, 10_000);
        if doomed.is_empty() {
            return;
        }
        let epoch = st.view.epoch;
        let mut c = Changes::new(st);
        c.remove(st, doomed, epoch);
        self.st.apply(c);
    }

    /// A message from node `from` arrives.
    pub fn receive(&mut self, now: u64, from: usize, msg: Msg) -> Vec<Out> {
        let mut out = Vec::new();
        match msg {
            Msg::Sync {
                epoch,
                versions,
                claim,
                run,
                rid,
            } => {
                let from_name = &self.names[from];
                let (clock, view) = if epoch != self.st.view.epoch
                    || self.st.view.shard_of_node(from_name).is_none()
                {
                    (None, Some((*self.st.view).clone()))
                } else {
                    let mut c = Changes::new(&self.st);
                    match run {
                        Some((keys, clock)) => {
                            c.sync_run(&self.st, epoch, versions, &keys, &clock);
                            c.sync(&self.st, epoch, Vec::new(), claim);
                        }
                        None => c.sync(&self.st, epoch, versions, claim),
                    }
                    self.st.apply(c);
                    (Some(self.st.clock.clone()), None)
                };
                // (With `disk_copies`, a crash may lose what is not synced, as under the
                // server's `os` durability, and the reply says what the disk holds.)
                let durable =
                    (clock.is_some() && self.disk_copies).then(|| self.synced.clock.clone());
                out.push(Out::Send {
                    to: from,
                    msg: Msg::Synced {
                        clock,
                        durable,
                        view,
                        rid,
                    },
                });
            }
            Msg::Synced {
                clock,
                durable,
                view,
                rid,
            } => {
                if let Some(view) = view {
                    if view.rank() < self.st.view.rank() {
                        // The peer is behind: tell it.
                        out.push(Out::Send {
                            to: from,
                            msg: Msg::ApplyView {
                                view: (*self.st.view).clone(),
                            },
                        });
                    } else {
                        self.adopt(&view, &mut out);
                    }
                    if let Some(lp) = self.peers.get_mut(&from) {
                        lp.inflight = None;
                    }
                    return out;
                }
                let epoch = self.st.view.epoch;
                let name = self.names[from].clone();
                if let Some(lp) = self.peers.get_mut(&from) {
                    if lp.inflight.is_some_and(|(r, _)| r == rid) {
                        lp.inflight = None;
                        if let Some(clock) = clock {
                            let held = durable.unwrap_or_else(|| clock.clone());
                            self.peer_clocks.insert(name, (epoch, held));
                            match (lp.sent.take(), lp.transfer.as_mut()) {
                                (Some(Sent::Run(Some(through))), Some(t)) => {
                                    t.cursor = Some(through);
                                }
                                (Some(Sent::Run(None)), Some(_)) => lp.transfer = None,
                                (Some(Sent::Delta(Some((ours, assumed)))), None)
                                    if !clock.covers(&assumed) =>
                                {
                                    // The peer lost writes it had acknowledged (its disk
                                    // went back in time): a full transfer tells it what
                                    // we saw deleted since.
                                    lp.transfer = Some(Transfer {
                                        clock: ours,
                                        assumed: clock.clone(),
                                        cursor: None,
                                    });
                                }
                                (Some(Sent::Delta(None)), None)
                                    if lp.floor.take().is_some_and(|f| !clock.covers(&f)) =>
                                {
                                    // The same, noticed at the first contact after a
                                    // restart of ours.
                                    lp.transfer = Some(Transfer {
                                        clock: self.st.clock.clone(),
                                        assumed: clock.clone(),
                                        cursor: None,
                                    });
                                }
                                _ => {}
                            }
                            // (Kept while a full transfer runs, as in the server.)
                            if lp.transfer.is_none() {
                                self.acked.insert(from, (epoch, clock.clone()));
                            }
                            lp.known = Some(clock);
                        }
                    }
                }
            }
            Msg::Fetch { key, ctx, rid } => {
                let st = &self.st;
                let version = match st.my_shard().filter(|s| *s == st.view.shard_of_key(&key)) {
                    None => None,
                    Some(shard) => {
                        let complete = replica::complete_for(st, ctx.epoch, self.complete());
                        let ctx = ctx.in_epoch(st.view.epoch);
                        let local = st.get(&key);
                        (read_is_safe(&ctx, shard, &key, &st.clock, local)
                            && epochs_allow(&ctx, complete))
                        .then(|| local.cloned())
                    }
                };
                out.push(Out::Send {
                    to: from,
                    msg: Msg::Fetched { rid, version },
                });
            }
            Msg::Fetched { rid, version } => {
                let Some(Pending::Read { waiting, .. }) = self.pending.get_mut(&rid) else {
                    return out;
                };
                *waiting -= 1;
                if version.is_none() && *waiting > 0 {
                    return out;
                }
                let Some(Pending::Read {
                    req,
                    ctx,
                    local,
                    write_id,
                    to,
                    ..
                }) = self.pending.remove(&rid)
                else {
                    unreachable!()
                };
                let found = match version {
                    Some(fetched) => Ok((replica::read_answer(local, fetched), ctx)),
                    None => Err(()),
                };
                self.finish_read(now, req, found, write_id, to, &mut out);
            }
            Msg::ApplyView { view } => {
                self.adopt(&view, &mut out);
            }
            Msg::Migrate {
                view,
                versions,
                rid,
                deadline,
            } => {
                // A view first heard of in a hand-over is adopted like any other.
                self.adopt(&view, &mut out);
                if now >= deadline {
                    // Its sender has stopped waiting and may have said it holds nothing
                    // more (its replicas may then collect tombstones): too late to apply.
                    return out;
                }
                let mut c = Changes::new(&self.st);
                let refused = c.migrate(&self.st, versions);
                self.st.apply(c);
                out.push(Out::Send {
                    to: from,
                    msg: Msg::Migrated { rid, refused },
                });
            }
            Msg::Migrated { rid, refused } => {
                let Some(batch) = self.handing.get_mut(&rid) else {
                    return out;
                };
                batch.waiting = batch.waiting.saturating_sub(1);
                let epoch = batch.epoch;
                let accepted: Vec<(String, WriteId)> = batch
                    .ids
                    .iter()
                    .filter(|(k, _)| !refused.contains(k))
                    .cloned()
                    .collect();
                if batch.waiting == 0 {
                    self.handing.remove(&rid);
                }
                // (Dropped on the first acceptance; the server drops them once every
                // replica answered. Either way nothing is announced before that.)
                if !accepted.is_empty() {
                    let mut c = Changes::new(&self.st);
                    c.remove(&self.st, accepted, epoch);
                    self.st.apply(c);
                }
            }
            Msg::HandedOver { epoch, report } => {
                let name = self.names[from].clone();
                let mut c = Changes::new(&self.st);
                c.handed_over(&self.st, epoch, &[name], &report);
                self.st.apply(c);
            }
            Msg::Settled { epoch, clock } => {
                if epoch == self.st.view.epoch {
                    if self.settled.epoch != epoch {
                        self.settled = Settled {
                            epoch,
                            clocks: Default::default(),
                        };
                    }
                    let name = self.names[from].clone();
                    self.settled.clocks.entry(name).or_insert(clock);
                }
            }
            Msg::Key {
                view,
                req,
                hops,
                write_id,
                deadline,
                rid,
                attempt,
            } => {
                // The sender gave up on it: a write arriving now could land after
                // the client was answered (the server abandons it likewise).
                if now > deadline {
                    return out;
                }
                self.adopt(&view, &mut out);
                let to = ReplyTo::Node {
                    node: from,
                    rid,
                    attempt,
                };
                self.route(now, req, hops, write_id, deadline, to, &mut out);
            }
            Msg::KeyReply {
                rid,
                attempt,
                mut resp,
            } => {
                let current = matches!(self.pending.get(&rid), Some(Pending::Proxy { attempt: a, .. }) if *a == attempt);
                if !current {
                    return out;
                }
                if resp.result == KeyResult::Unavailable {
                    self.next_attempt(now, rid, attempt, &mut out);
                    return out;
                }
                let Some(Pending::Proxy {
                    replicas,
                    start,
                    to,
                    ..
                }) = self.pending.remove(&rid)
                else {
                    unreachable!()
                };
                resp.served_by
                    .get_or_insert(replicas[(start + attempt) % replicas.len()]);
                out.push(Out::Reply { to, resp });
            }
        }
        out
    }

    /// Shard number of this node, if any.
    pub fn shard(&self) -> Option<ShardNo> {
        self.st.my_shard()
    }
}

fn unavailable(ctx: &Context) -> KeyResp {
    KeyResp {
        result: KeyResult::Unavailable,
        ctx: ctx.clone(),
        served_by: None,
    }
}

/// A stored value as the client reads it.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Str(s) | Value::Num(s) => s.to_string(),
        Value::Expiring(v, _) => value_text(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 10_000;

    /// Node 0 alone in view 0 holds `k`; view 1 gives every key to nodes 1 and 2.
    fn old_owner() -> (SimNode, View) {
        let names: Vec<String> = (0..3).map(|i| format!("10.0.0.{i}:8080")).collect();
        let v0 = View::new(0, vec![names[0].clone()], 1);
        let mut n = SimNode::new(0, names.clone(), v0.clone(), 1, 7, 30_000);
        assert!(n.load(T0, "k", "v".into()));
        let v1 = v0.successor(vec![names[1].clone(), names[2].clone()], 2);
        let mut out = Vec::new();
        assert!(n.adopt(&v1, &mut out));
        (n, v1)
    }

    fn migrates(out: &[Out]) -> Vec<(usize, u64, u64)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Send {
                    to,
                    msg: Msg::Migrate { rid, deadline, .. },
                } => Some((*to, *rid, *deadline)),
                _ => None,
            })
            .collect()
    }

    fn announced(n: &mut SimNode, now: u64) -> Vec<usize> {
        n.timer(now, Timer::Announce)
            .iter()
            .filter_map(|o| match o {
                Out::Send {
                    to,
                    msg: Msg::HandedOver { .. },
                } => Some(*to),
                _ => None,
            })
            .collect()
    }

    /// The server's old owner says it handed everything over only once every call of
    /// its hand-over returned (answered or timed out); a `Migrate` still on its way
    /// could otherwise be applied after a replica, told there is nothing more to come,
    /// collected the key's tombstone (seed 902 of `--view-changes --delta-versions 2`).
    #[test]
    fn no_word_of_a_finished_hand_over_while_a_batch_is_on_its_way() {
        let (mut n, _) = old_owner();
        let sent = migrates(&n.timer(T0, Timer::HandOver));
        assert_eq!(sent.iter().map(|m| m.0).collect::<Vec<_>>(), [1, 2]);
        let rid = sent[0].1;
        assert!(announced(&mut n, T0 + 5).is_empty(), "nothing answered yet");
        n.receive(
            T0 + 10,
            1,
            Msg::Migrated {
                rid,
                refused: vec![],
            },
        );
        assert!(
            !n.st.keys.contains_key("k"),
            "dropped once a replica took it"
        );
        assert!(
            announced(&mut n, T0 + 20).is_empty(),
            "node 2 has not answered and may still apply it"
        );
        n.receive(
            T0 + 30,
            2,
            Msg::Migrated {
                rid,
                refused: vec![],
            },
        );
        assert_eq!(announced(&mut n, T0 + 40), [1, 2]);
    }

    #[test]
    fn an_unanswered_batch_holds_the_word_back_until_its_deadline() {
        let (mut n, _) = old_owner();
        let sent = migrates(&n.timer(T0, Timer::HandOver));
        let rid = sent[0].1;
        n.receive(
            T0 + 10,
            1,
            Msg::Migrated {
                rid,
                refused: vec![],
            },
        );
        assert!(announced(&mut n, sent[1].2 - 1).is_empty());
        assert_eq!(announced(&mut n, sent[1].2), [1, 2]);
    }

    /// The rid of the replication message `out` sends to `to`, and whether it is a run.
    fn sync_to(out: &[Out], to: usize) -> (u64, bool) {
        out.iter()
            .find_map(|o| match o {
                Out::Send {
                    to: t,
                    msg: Msg::Sync { rid, run, .. },
                } if *t == to => Some((*rid, run.is_some())),
                _ => None,
            })
            .expect("a replication message")
    }

    /// A node restarted while it still held keys to hand over: a batch its previous
    /// process sent may still be applied until its deadline, so the word that it holds
    /// nothing more waits until then, though the new batch was answered at once.
    #[test]
    fn a_restart_in_the_middle_of_a_hand_over_holds_the_word_back() {
        let (mut n, _) = old_owner();
        let before = migrates(&n.timer(T0, Timer::HandOver));
        let old_deadline = before[0].2;
        let restart = T0 + 100;
        n.restart(restart, false, 2, 8);
        let sent = migrates(&n.timer(restart + 10, Timer::HandOver));
        for (to, rid, _) in &sent {
            n.receive(
                restart + 20,
                *to,
                Msg::Migrated {
                    rid: *rid,
                    refused: vec![],
                },
            );
        }
        assert!(n.st.keys.is_empty(), "handed over");
        assert!(announced(&mut n, restart + 30).is_empty());
        assert!(announced(&mut n, old_deadline).is_empty());
        assert_eq!(announced(&mut n, restart + SYNC_TIMEOUT_MS), [1, 2]);
    }

    /// As the server keeps the clock each peer acknowledged on disk: a peer whose clock
    /// went back is sent a full transfer (runs) even when the loop's memory of it went
    /// with a restart of ours.
    #[test]
    fn a_peer_that_lost_acknowledged_writes_is_noticed_across_our_restart() {
        let names: Vec<String> = (0..2).map(|i| format!("10.0.0.{i}:8080")).collect();
        let view = View::new(0, names.clone(), 2);
        let mut acked = VClock::new();
        acked.raise(5, 3);
        for restarted in [false, true] {
            let mut n = SimNode::new(0, names.clone(), view.clone(), 1, 7, 30_000);
            let synced = |clock: &VClock, rid| Msg::Synced {
                clock: Some(clock.clone()),
                durable: None,
                view: None,
                rid,
            };
            let (rid, _) = sync_to(&n.timer(T0, Timer::Replicate), 1);
            n.receive(T0 + 1, 1, synced(&acked, rid));
            n.timer(T0 + 2, Timer::DiskSync);
            if restarted {
                n.restart(T0 + 2, false, 2, 8);
            } else {
                n.peers.clear();
                n.acked.clear();
            }
            // First contact again: the peer's clock is back to nothing.
            let (rid, run) = sync_to(&n.timer(T0 + 3, Timer::Replicate), 1);
            assert!(!run);
            n.receive(T0 + 4, 1, synced(&VClock::new(), rid));
            let (_, run) = sync_to(&n.timer(T0 + 600, Timer::Replicate), 1);
            assert_eq!(run, restarted, "restarted: {restarted}");
        }
    }

    /// The other half: a replica applies no `Migrate` that arrives at or after its
    /// deadline (its sender no longer waits for it), and answers nothing.
    #[test]
    fn a_migrate_past_its_deadline_is_not_applied() {
        let (mut old, v1) = old_owner();
        let out = old.timer(T0, Timer::HandOver);
        let msg = out
            .into_iter()
            .find_map(|o| match o {
                Out::Send { to: 1, msg } => Some(msg),
                _ => None,
            })
            .expect("a migrate to node 1");
        let Msg::Migrate { deadline, .. } = msg else {
            panic!("{}", msg.kind())
        };
        let names = old.names.clone();
        for (at, applied) in [(deadline, false), (deadline - 1, true)] {
            let mut r = SimNode::new(1, names.clone(), v1.clone(), 1, 8, 30_000);
            let out = r.receive(at, 0, msg.clone());
            assert_eq!(r.st.keys.contains_key("k"), applied, "at {at}");
            let answered = out.iter().any(|o| {
                matches!(
                    o,
                    Out::Send {
                        to: 0,
                        msg: Msg::Migrated { .. }
                    }
                )
            });
            assert_eq!(answered, applied, "at {at}");
        }
    }
}
