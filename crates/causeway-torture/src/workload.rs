//! Client sessions: each one a sequential client that carries the causal
//! context of the last answer it got, and sends reads, writes and deletes
//! over a small hot key space to any live node, so conflicting writes and
//! cross-replica reads happen all the time.
//!
//! Every written value is unique (`s<session>-w<n>`), so a read names the
//! write it returns. Now and then a session hands its context over from
//! another session (a context that travelled between users); the history
//! records where each context came from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::Reachable;
use crate::history::{self, Event, HistoryWriter, Invoke, OpId, OpKind, Response};
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
        })
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
            let key = if rng.chance(0.5) {
                keys[rng.below(hot as u64) as usize].clone()
            } else {
                rng.pick(keys).clone()
            };
            let roll = rng.below(100);
            let (kind, value) = if roll < 50 {
                (OpKind::Get, None)
            } else if roll < 88 {
                writes += 1;
                let pad = if rng.chance(self.config.large_values) {
                    let max = self.config.large_bytes as u64;
                    rng.range(max / 4, max.max(1)) as usize
                } else {
                    0
                };
                (OpKind::Put, Some((format!("s{id}-w{writes}"), pad)))
            } else {
                (OpKind::Delete, None)
            };
            let alias = rng.chance(0.1);
            let answer = self
                .call(id, target, kind, &key, value, context.as_ref(), alias)
                .await;
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

    /// Sends one operation and records it; returns the context received.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        session: u32,
        target: usize,
        kind: OpKind,
        key: &str,
        value: Option<(String, usize)>,
        context: Option<&(OpId, Value)>,
        alias: bool,
    ) -> Option<(OpId, Value)> {
        let op = self.next_op.fetch_add(1, Ordering::SeqCst);
        let address = &self.reachable.addresses[target];
        let ctx = context.map_or_else(|| json!({}), |(_, c)| c.clone());
        let mut body = json!({ "causal-context": ctx });
        if let Some((name, pad)) = &value {
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
        let value = value.map(|(name, _)| name);
        self.history.record(&Event::Invoke(Invoke {
            op,
            session,
            t: self.history.now(),
            kind,
            key: key.to_string(),
            value,
            node: address.clone(),
            ctx_from: context.map(|(from, _)| *from),
            context: ctx,
        }));
        let prefix = if alias { "kvs" } else { "kv-store" };
        let url = format!("http://{address}/{prefix}/keys/{key}");
        let request = match kind {
            OpKind::Get => self.http.get(url),
            OpKind::Put => self.http.put(url),
            OpKind::Delete => self.http.delete(url),
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
        let received = response.context().cloned();
        self.history.record(&Event::Response(response));
        received.map(|c| (op, c))
    }
}

/// A response body with a large value cut back to the value's name (what the history
/// and the checker know writes by).
fn without_padding(mut body: Value) -> Value {
    if let Some(v) = body.get_mut("value") {
        if v.is_string() {
            *v = Value::String(history::value_name(v));
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
