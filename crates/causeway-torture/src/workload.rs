//! Client sessions: each one a sequential client that carries the causal
//! context of the last answer it got, and sends reads, writes and deletes
//! over a small hot key space to any live node, so conflicting writes and
//! cross-replica reads happen all the time.
//!
//! Every written value is unique (`s<session>-w<n>`), so a read names the
//! write it returns. Now and then a session hands its context over from
//! another session (a context that travelled between users); the history
//! records where each context came from.
//!
//! Besides single-key operations a session sometimes sends a batch of 2 to 5
//! gets, puts and deletes (`POST /kv-store/batch`), lists every key with its
//! value (`GET /kv-store/keys?values=true`), or writes with a short `ttl`
//! (1 to 4 s). With all three chances at 0 a session makes exactly the choices
//! it made before they existed (no extra draws from its random stream).
//!
//! A write (put, delete, or batch with a put or delete) may carry an
//! `Idempotency-Key` (`s<session>-k<n>`, unique per logical write). When such a
//! write gets no answer (timeout, connection error) or a 503, the session sends
//! the very same request again (same key, value, ttl, ops and context, same
//! `Idempotency-Key`) to another live node, at most [`MAX_RETRIES`] times; the
//! history marks each retry with `retry_of`, the first attempt's op. With the
//! chance at 0 no draw is made for it either.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::Reachable;
use crate::history::{self, BatchOp, Event, HistoryWriter, Invoke, OpId, OpKind, Response};
use crate::rng::Rng;

/// How sessions behave.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub seed: u64,
    pub sessions: u32,
    pub keys: Vec<String>,
    /// Mean pause between two operations of a session.
    pub think: Duration,
    /// Per-request client timeout (the API's 5 s).
    pub timeout: Duration,
    /// Chance that a session takes another session's context for its next op.
    pub handoff: f64,
    /// Chance that a PUT carries a large value: its name, `~`, then padding of a
    /// quarter of `large_bytes` up to `large_bytes` (the history keeps the name only).
    pub large_values: f64,
    pub large_bytes: usize,
    /// Chance that an operation is a batch of 2 to 5 ops.
    pub batches: f64,
    /// Chance that an operation is a listing of every key with its value.
    pub listings: f64,
    /// Chance that a put (single or in a batch) carries a ttl of 1 to 4 s.
    pub ttl_writes: f64,
    /// Chance that a write carries an `Idempotency-Key` (and is retried when it
    /// gets no answer or a 503).
    pub idempotent: f64,
    /// Batches may carry an `Idempotency-Key` too (else only single writes).
    pub idempotent_batches: bool,
}

/// Most times a keyed write is sent again after its first attempt.
pub const MAX_RETRIES: usize = 2;

/// What one attempt of a request came to.
struct Attempt {
    op: OpId,
    /// HTTP status; `None` when no answer arrived.
    status: Option<u16>,
    /// The context received, with the op that carried it.
    received: Option<(OpId, Value)>,
}

impl Attempt {
    /// No answer, or the documented 503: a keyed write is then sent again.
    fn worth_retrying(&self) -> bool {
        matches!(self.status, None | Some(503))
    }
}

/// Keys written with a ttl and the values so written: the final state's
/// replicas may disagree on them while their clocks disagree on the expiry.
#[derive(Debug, Clone, Default)]
pub struct TtlWrites {
    pub keys: HashSet<String>,
    pub values: HashSet<String>,
}

/// One request: what the history records, and how it is sent.
struct Request {
    kind: OpKind,
    key: String,
    /// A single put's value: its name and padding length.
    value: Option<(String, usize)>,
    ttl: Option<u64>,
    ops: Vec<BatchOp>,
}

/// The last context each session received, for hand-offs.
type Board = Mutex<Vec<Option<(OpId, Value)>>>;

/// Shared state of all sessions.
pub struct Workload {
    config: WorkloadConfig,
    reachable: Arc<Reachable>,
    history: Arc<HistoryWriter>,
    http: reqwest::Client,
    next_op: AtomicU64,
    board: Board,
    ttl_writes: Mutex<TtlWrites>,
}

impl Workload {
    pub fn new(
        config: WorkloadConfig,
        reachable: Arc<Reachable>,
        history: Arc<HistoryWriter>,
        http: reqwest::Client,
    ) -> Arc<Self> {
        let board = Mutex::new(vec![None; config.sessions as usize]);
        Arc::new(Workload {
            config,
            reachable,
            history,
            http,
            next_op: AtomicU64::new(1),
            board,
            ttl_writes: Mutex::new(TtlWrites::default()),
        })
    }

    /// Every key and value written with a ttl so far.
    pub fn ttl_writes(&self) -> TtlWrites {
        self.ttl_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs every session until `deadline`; returns the number of operations.
    pub async fn run(self: &Arc<Self>, deadline: Instant) -> u64 {
        let tasks: Vec<_> = (0..self.config.sessions)
            .map(|s| {
                let w = Arc::clone(self);
                tokio::spawn(async move { w.session(s, deadline).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("session task");
        }
        self.next_op.load(Ordering::SeqCst) - 1
    }

    async fn session(&self, id: u32, deadline: Instant) {
        let mut rng = Rng::derive(self.config.seed, 1 + id as u64);
        let mut context: Option<(OpId, Value)> = None;
        let mut node: Option<usize> = None;
        let mut writes = 0u64;
        let mut keyed = 0u64;
        let keys = &self.config.keys;
        let hot = (keys.len() / 4).max(1);
        let think_ms = self.config.think.as_millis() as u64;
        while Instant::now() < deadline {
            let up = self.reachable.up_nodes();
            if up.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            // Mostly stay on one node, sometimes hop: hops are what expose
            // replicas that lag behind a context.
            let target = match node {
                Some(n) if up.contains(&n) && rng.chance(0.6) => n,
                _ => *rng.pick(&up),
            };
            node = Some(target);
            if rng.chance(self.config.handoff) {
                let other = rng.below(self.config.sessions as u64) as usize;
                let taken = self.board.lock().unwrap_or_else(|e| e.into_inner())[other].clone();
                if taken.is_some() {
                    context = taken;
                }
            }
            let cfg = &self.config;
            let pick_key = |rng: &mut Rng| {
                if rng.chance(0.5) {
                    keys[rng.below(hot as u64) as usize].clone()
                } else {
                    rng.pick(keys).clone()
                }
            };
            let ttl = |rng: &mut Rng| {
                (cfg.ttl_writes > 0.0 && rng.chance(cfg.ttl_writes)).then(|| rng.range(1, 5))
            };
            let request = if cfg.batches > 0.0 && rng.chance(cfg.batches) {
                let n = rng.range(2, 6);
                let ops = (0..n)
                    .map(|_| {
                        let key = pick_key(&mut rng);
                        let roll = rng.below(100);
                        if roll < 50 {
                            BatchOp {
                                kind: OpKind::Get,
                                key,
                                value: None,
                                ttl: None,
                            }
                        } else if roll < 88 {
                            writes += 1;
                            BatchOp {
                                kind: OpKind::Put,
                                key,
                                value: Some(format!("s{id}-w{writes}")),
                                ttl: ttl(&mut rng),
                            }
                        } else {
                            BatchOp {
                                kind: OpKind::Delete,
                                key,
                                value: None,
                                ttl: None,
                            }
                        }
                    })
                    .collect();
                Request {
                    kind: OpKind::Batch,
                    key: String::new(),
                    value: None,
                    ttl: None,
                    ops,
                }
            } else if cfg.listings > 0.0 && rng.chance(cfg.listings) {
                Request {
                    kind: OpKind::List,
                    key: String::new(),
                    value: None,
                    ttl: None,
                    ops: vec![],
                }
            } else {
                let key = pick_key(&mut rng);
                let roll = rng.below(100);
                let (kind, value, ttl) = if roll < 50 {
                    (OpKind::Get, None, None)
                } else if roll < 88 {
                    writes += 1;
                    let pad = if rng.chance(cfg.large_values) {
                        let max = cfg.large_bytes as u64;
                        rng.range(max / 4, max.max(1)) as usize
                    } else {
                        0
                    };
                    let ttl = ttl(&mut rng);
                    (OpKind::Put, Some((format!("s{id}-w{writes}"), pad)), ttl)
                } else {
                    (OpKind::Delete, None, None)
                };
                Request {
                    kind,
                    key,
                    value,
                    ttl,
                    ops: vec![],
                }
            };
            let alias = rng.chance(0.1);
            let writing = request.kind.is_write()
                || (cfg.idempotent_batches && request.ops.iter().any(|o| o.kind.is_write()));
            let idempotency_key = (cfg.idempotent > 0.0 && writing && rng.chance(cfg.idempotent))
                .then(|| {
                    keyed += 1;
                    format!("s{id}-k{keyed}")
                });
            let sent = context.clone();
            let mut attempt = self
                .call(
                    id,
                    target,
                    &request,
                    sent.as_ref(),
                    alias,
                    idempotency_key.as_deref(),
                    None,
                )
                .await;
            let first = attempt.op;
            let mut answer = attempt.received.take();
            if idempotency_key.is_some() {
                let mut last = target;
                for _ in 0..MAX_RETRIES {
                    if !attempt.worth_retrying() || Instant::now() >= deadline {
                        break;
                    }
                    // Another live node if there is one.
                    let up = self.reachable.up_nodes();
                    let others: Vec<usize> = up.iter().copied().filter(|&n| n != last).collect();
                    let candidates = if others.is_empty() { up } else { others };
                    if candidates.is_empty() {
                        break;
                    }
                    let next = *rng.pick(&candidates);
                    last = next;
                    node = Some(next);
                    attempt = self
                        .call(
                            id,
                            next,
                            &request,
                            sent.as_ref(),
                            alias,
                            idempotency_key.as_deref(),
                            Some(first),
                        )
                        .await;
                    if let Some(received) = attempt.received.take() {
                        answer = Some(received);
                    }
                }
            }
            if let Some(received) = answer {
                self.board.lock().unwrap_or_else(|e| e.into_inner())[id as usize] =
                    Some(received.clone());
                context = Some(received);
            }
            if think_ms > 0 {
                tokio::time::sleep(Duration::from_millis(rng.range(0, 2 * think_ms))).await;
            }
        }
    }

    /// Sends one attempt of an operation (with `idempotency_key` if given; a
    /// retry of op `retry_of` if given) and records it.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        session: u32,
        target: usize,
        req: &Request,
        context: Option<&(OpId, Value)>,
        alias: bool,
        idempotency_key: Option<&str>,
        retry_of: Option<OpId>,
    ) -> Attempt {
        let op = self.next_op.fetch_add(1, Ordering::SeqCst);
        let address = &self.reachable.addresses[target];
        let ctx = context.map_or_else(|| json!({}), |(_, c)| c.clone());
        let mut body = json!({ "causal-context": ctx });
        if let Some((name, pad)) = &req.value {
            body["value"] = if *pad > 0 {
                json!(format!(
                    "{name}{}{}",
                    history::PADDING_MARK,
                    "x".repeat(*pad)
                ))
            } else {
                json!(name)
            };
        }
        if let Some(ttl) = req.ttl {
            body["ttl"] = json!(ttl);
        }
        if req.kind == OpKind::Batch {
            let ops: Vec<Value> = req
                .ops
                .iter()
                .map(|o| {
                    let mut op = json!({"op": o.kind.method().to_lowercase(), "key": o.key});
                    if let Some(v) = &o.value {
                        op["value"] = json!(v);
                    }
                    if let Some(ttl) = o.ttl {
                        op["ttl"] = json!(ttl);
                    }
                    op
                })
                .collect();
            body["ops"] = Value::Array(ops);
        }
        {
            let mut ttl_writes = self.ttl_writes.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some(_), Some((name, _))) = (req.ttl, &req.value) {
                ttl_writes.keys.insert(req.key.clone());
                ttl_writes.values.insert(name.clone());
            }
            for o in req.ops.iter().filter(|o| o.ttl.is_some()) {
                ttl_writes.keys.insert(o.key.clone());
                ttl_writes.values.extend(o.value.clone());
            }
        }
        let kind = req.kind;
        let key = req.key.clone();
        self.history.record(&Event::Invoke(Invoke {
            op,
            session,
            t: self.history.now(),
            kind,
            key: key.clone(),
            value: req.value.as_ref().map(|(name, _)| name.clone()),
            ttl: req.ttl,
            ops: req.ops.clone(),
            node: address.clone(),
            ctx_from: context.map(|(from, _)| *from),
            context: ctx,
            idempotency_key: idempotency_key.map(String::from),
            retry_of,
        }));
        let prefix = if alias { "kvs" } else { "kv-store" };
        let base = format!("http://{address}/{prefix}");
        let request = match kind {
            OpKind::Get => self.http.get(format!("{base}/keys/{key}")),
            OpKind::Put => self.http.put(format!("{base}/keys/{key}")),
            OpKind::Delete => self.http.delete(format!("{base}/keys/{key}")),
            OpKind::Batch => self.http.post(format!("{base}/batch")),
            OpKind::List => self.http.get(format!("{base}/keys?values=true&limit=1000")),
        };
        let request = match idempotency_key {
            Some(k) => request.header("Idempotency-Key", k),
            None => request,
        };
        let result = request
            .json(&body)
            .timeout(self.config.timeout)
            .send()
            .await;
        let (status, parsed, error) = match result {
            Err(e) => (None, None, Some(describe(&e))),
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Err(e) => (Some(status), None, Some(format!("body: {}", describe(&e)))),
                    Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                        Ok(v) => (Some(status), Some(v), None),
                        Err(_) => (
                            Some(status),
                            None,
                            Some(format!(
                                "body is not JSON: {:?}",
                                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                            )),
                        ),
                    },
                }
            }
        };
        let response = Response {
            op,
            t: self.history.now(),
            status,
            body: parsed.map(without_padding),
            error,
        };
        let received = response.context().cloned().map(|c| (op, c));
        self.history.record(&Event::Response(response));
        Attempt {
            op,
            status,
            received,
        }
    }
}

/// A response body with every large value (of a GET, of a batch's results, of a
/// listing's items) cut back to the value's name (what the history and the checker
/// know writes by).
fn without_padding(mut body: Value) -> Value {
    fn cut(holder: &mut Value) {
        if let Some(v) = holder.get_mut("value") {
            if v.is_string() {
                *v = Value::String(history::value_name(v));
            }
        }
    }
    cut(&mut body);
    for list in ["results", "items"] {
        if let Some(Value::Array(entries)) = body.get_mut(list) {
            entries.iter_mut().for_each(cut);
        }
    }
    body
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        format!("connect: {e}")
    } else {
        format!("request: {e}")
    }
}
