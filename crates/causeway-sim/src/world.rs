//! The world: simulated time, the event queue, the network, the nodes' lifecycles, the
//! client sessions and the fault schedule, all driven by one seed.
//!
//! Owns: everything outside the nodes' protocol state. Invariant: a run is a function of
//! its [`Config`] alone. Every random draw comes from [`Rng`] streams derived from the
//! seed, events at one instant run in the order they were scheduled (a sequence number
//! breaks ties), and everything that reaches the history is iterated in a fixed order.

use crate::node::{KeyReq, KeyResp, KeyResult, Msg, Op, Out, ReplyTo, SimNode, Timer};
use crate::session::{Call, Session};
use crate::Config;
use causeway_core::placement::View;
use causeway_core::state::Budget;
use causeway_torture::history::{
    Event, Fault, FaultRecord, FinalRead, Invoke, Meta, OpKind, Response, HISTORY_FORMAT,
};
use causeway_torture::rng::Rng;
use serde_json::{json, Value as Json};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

/// Clients give up on a request after this long (ms), as the campaign's do.
pub const CLIENT_TIMEOUT_MS: u64 = 5000;
/// The most a node's clock is off simulated time, either way (ms).
pub const MAX_SKEW_MS: u64 = 4000;
/// After healing, how long the cluster runs before the final state is read (ms).
pub const QUIESCE_MS: u64 = 6000;

enum Ev {
    Deliver {
        from: usize,
        to: usize,
        msg: Msg,
    },
    Arrive {
        node: usize,
        session: u32,
        op: u64,
        req: KeyReq,
        idem: Option<String>,
    },
    Answer {
        session: u32,
        op: u64,
        resp: KeyResp,
    },
    ClientTimeout {
        session: u32,
        op: u64,
    },
    SessionNext {
        session: u32,
    },
    Timer {
        node: usize,
        gen: u64,
        timer: Timer,
    },
    NextFault,
    EndFault(u64),
    Heal,
}

struct Item {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    // Reversed: the heap pops the earliest.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.t, o.seq).cmp(&(self.t, self.seq))
    }
}

/// A fault in force, until its end event.
enum Episode {
    Cut {
        name: String,
        links: Vec<(usize, usize)>,
    },
    Crash {
        node: usize,
        lose_unsynced: bool,
    },
    Pause {
        node: usize,
    },
    Lossy,
}

/// A replica's live keys with the identity of each one's version.
type LiveVersions = BTreeSet<(String, causeway_core::causal::WriteId)>;

/// What a run did, besides its history.
#[derive(Default, Debug, Clone)]
pub struct Counts {
    pub ops: u64,
    pub faults: BTreeMap<String, u64>,
    pub messages: u64,
    pub dropped: u64,
    pub steps: u64,
    pub sim_ms: u64,
    /// With `Config::count_bytes`: messages and bytes sent, by sending node and kind
    /// (counted when sent, whether or not the network then loses them).
    pub traffic: BTreeMap<(usize, &'static str), Traffic>,
}

/// Messages and bytes of one kind from one node.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub messages: u64,
    pub bytes: u64,
}

pub struct World {
    cfg: Config,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Item>,
    rng: Rng,
    names: Vec<String>,
    pub nodes: Vec<SimNode>,
    down: Vec<bool>,
    paused: Vec<bool>,
    /// Events for a paused node, delivered when it resumes.
    held: Vec<Vec<Ev>>,
    gen: Vec<u64>,
    cuts: BTreeMap<(usize, usize), u32>,
    loss: f64,
    dup: f64,
    episodes: BTreeMap<u64, Episode>,
    next_episode: u64,
    sessions: Vec<Session>,
    keys: Vec<String>,
    issued: u64,
    next_op: u64,
    healing: bool,
    heal_at: Option<u64>,
    vc_id: u32,
    pub events: Vec<Event>,
    pub counts: Counts,
}

impl World {
    pub fn new(cfg: Config) -> World {
        let mut rng = Rng::derive(cfg.seed, 0);
        let n = cfg.nodes;
        let names: Vec<String> = (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, 1 + i % 250))
            .collect();
        let rf = n.min(cfg.repl_factor);
        let view = View::new(0, names.clone(), rf);
        let age = cfg.tombstone_age_ms;
        let nodes = (0..n)
            .map(|i| {
                let mut node = SimNode::new(
                    i,
                    names.clone(),
                    view.clone(),
                    rng.next_u64(),
                    rng.next_u64(),
                    age,
                );
                node.disk_copies = cfg.lossy_crashes;
                node.announce_once = cfg.announce_once;
                node.delta_budget = Budget {
                    versions: cfg.delta_versions,
                    bytes: usize::MAX,
                };
                node
            })
            .collect();
        let sessions_n = cfg.sessions.unwrap_or((n as u32 / 2).clamp(3, 16));
        let keys: Vec<String> = (0..cfg.keys).map(|i| format!("k{i}")).collect();
        let sessions = (0..sessions_n)
            .map(|id| Session::new(cfg.seed, id))
            .collect();
        let mut w = World {
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            names: names.clone(),
            nodes,
            down: vec![false; n],
            paused: vec![false; n],
            held: (0..n).map(|_| Vec::new()).collect(),
            gen: vec![0; n],
            cuts: BTreeMap::new(),
            loss: 0.0,
            dup: 0.0,
            episodes: BTreeMap::new(),
            next_episode: 0,
            sessions,
            keys: keys.clone(),
            issued: 0,
            next_op: 0,
            healing: false,
            heal_at: None,
            vc_id: 0,
            events: Vec::new(),
            counts: Counts::default(),
            cfg,
        };
        w.events.push(Event::Meta(Meta {
            format: HISTORY_FORMAT,
            seed: w.cfg.seed,
            nodes: names.clone(),
            view: names,
            repl_factor: rf,
            sessions: sessions_n,
            keys,
            broken_read_rule: false,
        }));
        for i in 0..n {
            w.start_timers(i);
        }
        for s in 0..sessions_n {
            let t = w.rng.below(50);
            w.at(t, Ev::SessionNext { session: s });
        }
        if w.cfg.faults {
            let t = w.rng.range(100, 800);
            w.at(t, Ev::NextFault);
        }
        w
    }

    fn at(&mut self, after: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Item {
            t: self.now + after,
            seq: self.seq,
            ev,
        });
    }

    fn start_timers(&mut self, node: usize) {
        let gen = self.gen[node];
        for (timer, spread) in [
            (Timer::Replicate, 20),
            (Timer::Collect, 1000),
            (Timer::DiskSync, 1000),
            (Timer::Announce, 1000),
            (Timer::HandOver, 200),
        ] {
            let t = self.rng.below(spread);
            self.at(t, Ev::Timer { node, gen, timer });
        }
    }

    fn t(&self) -> f64 {
        self.now as f64
    }

    fn fault(&mut self, fault: Fault) {
        self.events
            .push(Event::Fault(FaultRecord { t: self.t(), fault }));
    }

    /// Runs the whole scenario: workload with faults, healing, quiescence, final reads.
    pub fn run(mut self) -> World {
        while let Some(item) = self.queue.pop() {
            self.now = item.t;
            self.counts.steps += 1;
            if self.counts.steps > self.cfg.max_steps {
                break;
            }
            if let Some(h) = self.heal_at {
                if self.now >= h + QUIESCE_MS + if self.cfg.view_changes { 10_000 } else { 0 } {
                    break;
                }
            }
            self.dispatch(item.ev);
        }
        self.counts.sim_ms = self.now;
        self.final_state();
        self
    }

    /// Simulated time (ms).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Runs every event up to simulated time `t` (for the scale runs, which drive the
    /// world themselves: no sessions, no faults).
    pub fn run_until(&mut self, t: u64) {
        while self.queue.peek().is_some_and(|i| i.t <= t) {
            let item = self.queue.pop().expect("peeked");
            self.now = item.t;
            self.counts.steps += 1;
            self.dispatch(item.ev);
        }
        self.now = self.now.max(t);
    }

    /// A client's write of `key` arriving at `node` now (the request path of any
    /// client write: served there, or forwarded to a replica). Its answer goes nowhere.
    pub fn client_write(&mut self, node: usize, key: &str, value: String) {
        let req = KeyReq {
            key: key.to_string(),
            op: Op::Put(value),
            ctx: causeway_core::causal::Context::default(),
        };
        let to = ReplyTo::Client {
            session: u32::MAX,
            op: 0,
        };
        let outs = self.nodes[node].client_request(self.now, req, None, to);
        self.perform(node, outs);
    }

    /// A coordinator (`node`) proposes `view`: it installs it and sends it to every
    /// member of its old view and of the new one.
    pub fn propose(&mut self, node: usize, view: &View) {
        let old = self.nodes[node].st.view.clone();
        let mut outs = Vec::new();
        self.nodes[node].adopt(view, &mut outs);
        self.perform(node, outs);
        let mut to: BTreeSet<usize> = BTreeSet::new();
        for n in old.nodes.iter().chain(view.nodes.iter()) {
            to.insert(self.index_of(n));
        }
        for t in to.into_iter().filter(|&t| t != node) {
            self.send(node, t, Msg::ApplyView { view: view.clone() });
        }
    }

    /// The index of the node at address `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.names.iter().position(|x| x == name).expect("a node")
    }

    fn node_of(ev: &Ev) -> Option<usize> {
        match ev {
            Ev::Deliver { to, .. } => Some(*to),
            Ev::Arrive { node, .. } => Some(*node),
            Ev::Timer { node, .. } => Some(*node),
            _ => None,
        }
    }

    /// Handles one event; with `Config::trace_key`, prints each node's change of that
    /// key (and of its view) with the event that made it.
    fn dispatch(&mut self, ev: Ev) {
        let Some(key) = self.cfg.trace_key.clone() else {
            return self.dispatch_inner(ev);
        };
        let what = match &ev {
            Ev::Deliver { from, to, msg } => format!("{} {from}->{to}", msg.kind()),
            Ev::Arrive { node, op, req, .. } => {
                format!("op {op} {} at {node}", method(&req.op))
            }
            Ev::Timer { node, timer, .. } => format!("{timer:?} at {node}"),
            Ev::NextFault | Ev::EndFault(_) | Ev::Heal => "fault".to_string(),
            _ => "client".to_string(),
        };
        let before: Vec<String> = self.nodes.iter().map(|n| key_trace(n, &key)).collect();
        self.dispatch_inner(ev);
        for (i, n) in self.nodes.iter().enumerate() {
            let after = key_trace(n, &key);
            if after != before[i] {
                eprintln!("t={} node {i} [{what}] {} => {after}", self.now, before[i]);
            }
        }
    }

    fn dispatch_inner(&mut self, ev: Ev) {
        if let Some(n) = Self::node_of(&ev) {
            if let Ev::Timer { gen, .. } = ev {
                if gen != self.gen[n] {
                    return;
                }
            }
            if self.down[n] {
                return;
            }
            if self.paused[n] {
                self.held[n].push(ev);
                return;
            }
        }
        match ev {
            Ev::Deliver { from, to, msg } => {
                let outs = self.nodes[to].receive(self.now, from, msg);
                self.perform(to, outs);
            }
            Ev::Arrive {
                node,
                session,
                op,
                req,
                idem,
            } => {
                // The identity an `Idempotency-Key` gives the write, as the API computes it.
                let what = format!("{} {}", method(&req.op), req.key);
                let write_id = idem.and_then(|k| {
                    causeway_core::identity::write_id(
                        &k,
                        &what,
                        0,
                        req.ctx.ts,
                        self.nodes[node].hlc(self.now),
                        Duration::from_millis(self.cfg.window_ms),
                    )
                });
                let outs = self.nodes[node].client_request(
                    self.now,
                    req,
                    write_id,
                    ReplyTo::Client { session, op },
                );
                self.perform(node, outs);
            }
            Ev::Timer { node, timer, .. } => {
                let outs = self.nodes[node].timer(self.now, timer);
                self.perform(node, outs);
            }
            Ev::Answer { session, op, resp } => self.answer(session, op, Some(resp)),
            Ev::ClientTimeout { session, op } => self.answer(session, op, None),
            Ev::SessionNext { session } => self.session_next(session),
            Ev::NextFault => self.next_fault(),
            Ev::EndFault(id) => self.end_fault(id),
            Ev::Heal => self.heal(),
        }
    }

    fn perform(&mut self, node: usize, outs: Vec<Out>) {
        for out in outs {
            match out {
                Out::Send { to, msg } => self.send(node, to, msg),
                Out::Reply {
                    to:
                        ReplyTo::Node {
                            node: to,
                            rid,
                            attempt,
                        },
                    resp,
                } => self.send(node, to, Msg::KeyReply { rid, attempt, resp }),
                Out::Reply {
                    to: ReplyTo::Client { session, op },
                    resp,
                } => {
                    let d = self.rng.range(1, 4);
                    self.at(d, Ev::Answer { session, op, resp });
                }
                Out::Timer { after, timer } => {
                    let gen = self.gen[node];
                    self.at(after.max(1), Ev::Timer { node, gen, timer });
                }
            }
        }
    }

    /// Sends a message between nodes through the faulty network: it may be cut, lost,
    /// delayed (and so reordered) or duplicated.
    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        self.counts.messages += 1;
        if self.cfg.count_bytes {
            let t = self.counts.traffic.entry((from, msg.kind())).or_default();
            t.messages += 1;
            t.bytes += msg.wire_bytes() as u64;
        }
        if self.cuts.contains_key(&(from, to)) || (self.loss > 0.0 && self.rng.chance(self.loss)) {
            self.counts.dropped += 1;
            return;
        }
        let copies = if self.dup > 0.0 && self.rng.chance(self.dup) {
            2
        } else {
            1
        };
        for i in 0..copies {
            let delay = if self.rng.chance(0.03) {
                self.rng.range(50, 600)
            } else {
                self.rng.range(1, 8)
            };
            let msg = msg.clone();
            let _ = i;
            self.at(delay, Ev::Deliver { from, to, msg });
        }
    }

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| !self.down[i]).collect()
    }

    fn session_next(&mut self, s: u32) {
        if self.issued >= self.cfg.ops || self.healing {
            self.sessions[s as usize].done = true;
            if self.sessions.iter().all(|s| s.done) && self.heal_at.is_none() {
                self.at(1, Ev::Heal);
            }
            return;
        }
        let up = self.up_nodes();
        if up.is_empty() {
            self.at(50, Ev::SessionNext { session: s });
            return;
        }
        self.issued += 1;
        self.counts.ops += 1;
        let keys = self.keys.clone();
        let idempotent = self.cfg.idempotent;
        let call = self.sessions[s as usize].next_call(&up, &keys, idempotent);
        self.invoke(s, call);
    }

    /// Sends the session's current call (a first attempt or a retry) and records it.
    fn invoke(&mut self, s: u32, mut call: Call) {
        self.next_op += 1;
        let op = self.next_op;
        call.op = op;
        if call.first == 0 {
            call.first = op;
        }
        let sess = &self.sessions[s as usize];
        let (kind, value) = match &call.op_kind {
            Op::Get => (OpKind::Get, None),
            Op::Put(v) => (OpKind::Put, Some(v.clone())),
            Op::Delete => (OpKind::Delete, None),
        };
        self.events.push(Event::Invoke(Invoke {
            op,
            session: s,
            t: self.t(),
            kind,
            key: call.key.clone(),
            value,
            ttl: None,
            ops: vec![],
            node: self.names[call.target].clone(),
            ctx_from: sess.ctx_from,
            context: if sess.ctx_from.is_some() {
                sess.ctx.to_json()
            } else {
                Json::Null
            },
            idempotency_key: call.idem.clone(),
            retry_of: (call.first != op).then_some(call.first),
        }));
        let req = KeyReq {
            key: call.key.clone(),
            op: call.op_kind.clone(),
            ctx: sess.ctx.clone(),
        };
        let idem = call.idem.clone();
        let target = call.target;
        self.sessions[s as usize].call = Some(call);
        let d = self.rng.range(1, 4);
        self.at(
            d,
            Ev::Arrive {
                node: target,
                session: s,
                op,
                req,
                idem,
            },
        );
        self.at(CLIENT_TIMEOUT_MS, Ev::ClientTimeout { session: s, op });
    }

    fn answer(&mut self, s: u32, op: u64, resp: Option<KeyResp>) {
        // Writes of the scale runs come from no session: their answers go nowhere.
        let Some(sess) = self.sessions.get_mut(s as usize) else {
            return;
        };
        let Some(call) = sess.call.as_mut() else {
            return;
        };
        if call.op != op || call.answered {
            return;
        }
        call.answered = true;
        let kind = call.op_kind.clone();
        let (status, body, error) = match &resp {
            Some(r) => {
                let (status, body) = body(&kind, r, &self.names);
                (Some(status), Some(body), None)
            }
            None => (None, None, Some("timeout".to_string())),
        };
        self.events.push(Event::Response(Response {
            op,
            t: self.now as f64,
            status,
            body,
            error,
        }));
        let retry = matches!(status, None | Some(503));
        if let Some(r) = resp {
            call.answer = Some((op, r.ctx));
        }
        let (retriable, last) = (
            call.idem.is_some() && call.retries < crate::session::MAX_RETRIES,
            call.target,
        );
        if retry && retriable {
            let up = self.up_nodes();
            let others: Vec<usize> = up.iter().copied().filter(|&n| n != last).collect();
            let candidates = if others.is_empty() { up } else { others };
            if !candidates.is_empty() {
                let sess = &mut self.sessions[s as usize];
                let mut call = sess.call.take().expect("a call");
                call.retries += 1;
                call.answered = false;
                call.target = *sess.rng.pick(&candidates);
                sess.node = Some(call.target);
                self.invoke(s, call);
                return;
            }
        }
        let sess = &mut self.sessions[s as usize];
        let call = sess.call.take().expect("a call");
        if let Some((from, ctx)) = call.answer {
            sess.ctx_from = Some(from);
            sess.ctx = ctx;
        }
        let think = sess.rng.range(0, 2 * self.cfg.think_ms);
        self.at(think.max(1), Ev::SessionNext { session: s });
    }

    fn next_fault(&mut self) {
        if self.healing {
            return;
        }
        let n = self.nodes.len();
        let id = self.next_episode;
        self.next_episode += 1;
        let roll = self.rng.below(100);
        // Mostly short episodes, some outages longer than tombstones are kept.
        let duration = if self.rng.chance(0.1) {
            self.rng
                .range(self.cfg.tombstone_age_ms, 2 * self.cfg.tombstone_age_ms)
        } else {
            self.rng.range(200, 4000)
        };
        let node = self.rng.below(n as u64) as usize;
        let name = |w: &World, i: usize| w.names[i].clone();
        let episode = if roll < 30 {
            // Partitions: symmetric (two sides), asymmetric (one node cut from some
            // others, both ways: not transitive), one-way (some links, one direction).
            let style = self.rng.below(3);
            let mut links = Vec::new();
            let label = match style {
                0 => {
                    let mut order: Vec<usize> = (0..n).collect();
                    self.rng.shuffle(&mut order);
                    let cut = self.rng.range(1, n as u64) as usize;
                    for &a in &order[..cut] {
                        for &b in &order[cut..] {
                            links.push((a, b));
                            links.push((b, a));
                        }
                    }
                    "symmetric"
                }
                1 => {
                    for b in 0..n {
                        if b != node && self.rng.chance(0.5) {
                            links.push((node, b));
                            links.push((b, node));
                        }
                    }
                    "asymmetric"
                }
                _ => {
                    for a in 0..n {
                        for b in 0..n {
                            if a != b && self.rng.chance(0.15) {
                                links.push((a, b));
                            }
                        }
                    }
                    "one-way"
                }
            };
            for l in &links {
                *self.cuts.entry(*l).or_default() += 1;
            }
            let pairs = links
                .iter()
                .map(|&(a, b)| (name(self, a), name(self, b)))
                .collect();
            let label = format!("{label}-{id}");
            self.fault(Fault::PartitionStart {
                name: label.clone(),
                links: pairs,
                view_change: None,
            });
            self.bump(match style {
                0 => "partition-symmetric",
                1 => "partition-asymmetric",
                _ => "partition-one-way",
            });
            Some(Episode::Cut { name: label, links })
        } else if roll < 48 {
            if self.down[node] {
                None
            } else {
                let lose_unsynced = self.cfg.lossy_crashes && self.rng.chance(0.5);
                self.down[node] = true;
                self.paused[node] = false;
                self.held[node].clear();
                self.gen[node] += 1;
                self.fault(Fault::Kill {
                    node: name(self, node),
                });
                self.bump(if lose_unsynced {
                    "crash-losing-unsynced"
                } else {
                    "crash"
                });
                Some(Episode::Crash {
                    node,
                    lose_unsynced,
                })
            }
        } else if roll < 62 {
            if self.down[node] || self.paused[node] {
                None
            } else {
                self.paused[node] = true;
                self.fault(Fault::Pause {
                    node: name(self, node),
                });
                self.bump("pause");
                Some(Episode::Pause { node })
            }
        } else if roll >= 92 && self.cfg.view_changes {
            self.view_change();
            None
        } else if roll < 80 && !self.cfg.clock_faults {
            None
        } else if roll < 80 {
            // Skew (a steady offset) or a jump (a sudden step, either way).
            // Offsets stay within MAX_SKEW_MS either way, well inside the idempotency
            // window (a retry's identity holds while its context is younger than that).
            let jump = self.rng.chance(0.4);
            let step = if jump {
                self.rng.range(500, MAX_SKEW_MS)
            } else {
                self.rng.range(0, MAX_SKEW_MS)
            } as i64;
            let signed = if self.rng.chance(0.5) { -step } else { step };
            let skew = if jump {
                self.nodes[node].skew_ms + signed
            } else {
                signed
            };
            self.nodes[node].skew_ms = skew.clamp(-(MAX_SKEW_MS as i64), MAX_SKEW_MS as i64);
            let offset_s = self.nodes[node].skew_ms / 1000;
            self.fault(Fault::Clock {
                node: name(self, node),
                offset_s,
            });
            self.bump(if jump { "clock-jump" } else { "clock-skew" });
            None
        } else {
            self.loss = self.rng.range(1, 30) as f64 / 100.0;
            self.dup = self.rng.range(0, 20) as f64 / 100.0;
            self.bump("loss-duplication");
            Some(Episode::Lossy)
        };
        if let Some(e) = episode {
            self.episodes.insert(id, e);
            self.at(duration, Ev::EndFault(id));
        }
        let gap = self.rng.range(100, 1500);
        self.at(gap, Ev::NextFault);
    }

    /// A coordinator (any node up) proposes the successor of its view with a random
    /// node set of any size; sometimes a second one races it. Each installs its view and
    /// sends it to every member of the old and new views through the network.
    fn view_change(&mut self) {
        let up = self.up_nodes();
        let racing = if self.rng.chance(0.3) { 2 } else { 1 };
        for _ in 0..racing {
            if up.is_empty() {
                return;
            }
            let c = *self.rng.pick(&up);
            let mut order: Vec<usize> = (0..self.nodes.len()).collect();
            self.rng.shuffle(&mut order);
            let k = self.rng.range(1, self.nodes.len() as u64) as usize;
            let mut members: Vec<usize> = order[..k].to_vec();
            members.sort();
            let names: Vec<String> = members.iter().map(|&i| self.names[i].clone()).collect();
            let rf = names.len().min(3);
            let old = self.nodes[c].st.view.clone();
            let view = old.successor(names.clone(), rf);
            self.vc_id += 1;
            let id = self.vc_id;
            self.fault(Fault::ViewChangeStart {
                id,
                view: names,
                repl_factor: rf,
                node: Some(self.names[c].clone()),
            });
            let mut outs = Vec::new();
            self.nodes[c].adopt(&view, &mut outs);
            self.perform(c, outs);
            let mut to: BTreeSet<usize> = BTreeSet::new();
            for n in old.nodes.iter().chain(view.nodes.iter()) {
                to.insert(self.names.iter().position(|x| x == n).expect("a node"));
            }
            for t in to.into_iter().filter(|&t| t != c) {
                self.send(c, t, Msg::ApplyView { view: view.clone() });
            }
            let incomplete_shards = view.shard_ids();
            self.fault(Fault::ViewChangeEnd {
                id,
                status: Some(202),
                error: None,
                incomplete_shards,
                ms: 0.0,
            });
            self.bump(if racing > 1 {
                "view-change-racing"
            } else {
                "view-change"
            });
        }
    }

    /// The highest-ranked view any node holds.
    fn newest_view(&self) -> View {
        self.nodes
            .iter()
            .map(|n| (*n.st.view).clone())
            .max_by_key(|v| v.rank())
            .expect("nodes")
    }

    fn bump(&mut self, what: &str) {
        *self.counts.faults.entry(what.to_string()).or_default() += 1;
    }

    fn end_fault(&mut self, id: u64) {
        let Some(e) = self.episodes.remove(&id) else {
            return;
        };
        match e {
            Episode::Cut { name, links } => {
                for l in &links {
                    if let Some(c) = self.cuts.get_mut(l) {
                        *c -= 1;
                        if *c == 0 {
                            self.cuts.remove(l);
                        }
                    }
                }
                let pairs = links
                    .iter()
                    .map(|&(a, b)| (self.names[a].clone(), self.names[b].clone()))
                    .collect();
                self.fault(Fault::PartitionEnd { name, links: pairs });
            }
            Episode::Crash {
                node,
                lose_unsynced,
            } => {
                let (inc, origin) = (self.rng.next_u64(), self.rng.next_u64());
                self.nodes[node].restart(self.now, lose_unsynced, inc, origin);
                self.down[node] = false;
                self.start_timers(node);
                self.fault(Fault::Restarted {
                    node: self.names[node].clone(),
                });
            }
            Episode::Pause { node } => {
                self.paused[node] = false;
                let held = std::mem::take(&mut self.held[node]);
                for ev in held {
                    self.at(0, ev);
                }
                self.fault(Fault::Resumed {
                    node: self.names[node].clone(),
                });
            }
            Episode::Lossy => {
                self.loss = 0.0;
                self.dup = 0.0;
            }
        }
    }

    fn heal(&mut self) {
        self.healing = true;
        let ids: Vec<u64> = self.episodes.keys().copied().collect();
        for id in ids {
            self.end_fault(id);
        }
        // The newest view reaches every node (its coordinator's word is repeated).
        let view = self.newest_view();
        for i in 0..self.nodes.len() {
            let mut outs = Vec::new();
            self.nodes[i].adopt(&view, &mut outs);
            self.perform(i, outs);
        }
        self.fault(Fault::HealAll);
        self.heal_at = Some(self.now);
    }

    /// Every replica's answer for every key (empty context, read locally), and the
    /// final view.
    fn final_state(&mut self) {
        let view = self.newest_view();
        let shards: Vec<(String, Vec<String>)> = (1..=view.shard_count() as u32)
            .map(|s| (s.to_string(), view.replicas(s).to_vec()))
            .collect();
        self.events.push(Event::FinalView { shards });
        let keys = self.keys.clone();
        for key in &keys {
            let shard = view.shard_of_key(key);
            for r in view.replicas(shard) {
                let i = self.names.iter().position(|n| n == r).expect("a node");
                let node = &self.nodes[i];
                let at = node.hlc(self.now);
                let value = node
                    .st
                    .get(key)
                    .and_then(|v| v.live_value(at))
                    .map(crate::node::value_text);
                self.events.push(Event::Final(FinalRead {
                    node: r.clone(),
                    key: key.clone(),
                    status: Some(if value.is_some() { 200 } else { 404 }),
                    value,
                    local: true,
                    error: None,
                }));
            }
        }
    }

    /// Replicas of a shard whose live versions differ after quiescence (the store's
    /// convergence, judged on the states themselves).
    pub fn divergent_shards(&self) -> Vec<String> {
        let view = &self.newest_view();
        let mut out = Vec::new();
        let mut by_shard: BTreeMap<u32, Vec<(String, LiveVersions)>> = BTreeMap::new();
        for n in &self.nodes {
            let Some(shard) = n.shard() else { continue };
            let live =
                n.st.keys
                    .iter()
                    .filter(|(_, v)| !v.is_tombstone())
                    .map(|(k, v)| (k.to_string(), v.id))
                    .collect();
            by_shard
                .entry(shard)
                .or_default()
                .push((n.st.me.clone(), live));
        }
        for (shard, replicas) in by_shard {
            if let Some((first, base)) = replicas.first() {
                for (other, live) in &replicas[1..] {
                    if live != base {
                        let only_first: Vec<_> =
                            base.difference(live).map(|(k, _)| k.clone()).collect();
                        let only_other: Vec<_> =
                            live.difference(base).map(|(k, _)| k.clone()).collect();
                        out.push(format!(
                            "shard {} ({} replicas): {first} and {other} hold different versions (only on {first}: {only_first:?}; only on {other}: {only_other:?})",
                            shard,
                            view.replicas(shard).len()
                        ));
                    }
                }
            }
        }
        out
    }
}

fn method(op: &Op) -> &'static str {
    match op {
        Op::Get => "GET",
        Op::Put(_) => "PUT",
        Op::Delete => "DELETE",
    }
}

/// The HTTP status and body the API answers `resp` with.
fn body(op: &Op, resp: &KeyResp, names: &[String]) -> (u16, Json) {
    let m = method(op);
    let (status, mut b) = match (&resp.result, op) {
        (KeyResult::Found(v), _) => (
            200,
            json!({"message": "Retrieved successfully", "doesExist": true, "value": v}),
        ),
        (KeyResult::NotFound, _) | (KeyResult::DeleteNotFound, _) => (
            404,
            json!({"message": format!("Error in {m}"), "error": "Key does not exist", "doesExist": false}),
        ),
        (KeyResult::Put { replaced: false }, _) => (
            201,
            json!({"message": "Added successfully", "replaced": false}),
        ),
        (KeyResult::Put { replaced: true }, _) => (
            200,
            json!({"message": "Updated successfully", "replaced": true}),
        ),
        (KeyResult::Deleted, _) => (
            200,
            json!({"message": "Deleted successfully", "doesExist": true}),
        ),
        (KeyResult::Unsatisfiable, _) => (
            400,
            json!({"message": format!("Error in {m}"), "error": "Unable to satisfy request"}),
        ),
        (KeyResult::Unavailable, _) => (
            503,
            json!({"message": format!("Error in {m}"), "error": "Unable to satisfy request"}),
        ),
    };
    let obj = b.as_object_mut().expect("an object");
    obj.insert("causal-context".into(), resp.ctx.to_json());
    if let Some(n) = resp.served_by {
        obj.insert("address".into(), Json::from(names[n].clone()));
    }
    (status, b)
}

/// One node's view generation, pending old owners, and version of `key` (live or a
/// tombstone, its timestamp in ms, its dot, the generation of its past), for
/// `--trace-key`.
fn key_trace(n: &SimNode, key: &str) -> String {
    let st = &n.st;
    let version = match st.keys.get(key) {
        Some(v) => format!(
            "{} ts={} dot={:x}:{} past-gen={}",
            if v.value.is_some() {
                "live"
            } else {
                "tombstone"
            },
            v.id.ts >> causeway_core::causal::version::HLC_SHIFT,
            v.dot.origin & 0xffff,
            v.dot.counter,
            v.epoch >> causeway_core::placement::EPOCH_FINGERPRINT_BITS
        ),
        None => "-".to_string(),
    };
    format!(
        "gen {} pending {} {version}",
        st.view.generation(),
        st.pending.len()
    )
}
