//! The campaign's record of what clients saw: one JSON object per line.
//!
//! Every operation appears twice: an `invoke` line (written before the request
//! is sent, with the causal context sent and the operation whose response that
//! context came from) and a `response` line (the HTTP status and body, or the
//! client-side failure). Fault injections, view changes and the final
//! per-replica reads taken after healing are recorded in the same stream, in
//! the order they happened, so the checker needs nothing but this file.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Identifier of one client operation, unique within a history.
pub type OpId = u64;

/// What a client operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Get,
    Put,
    Delete,
    /// `POST /kv-store/batch`: the invocation's `ops`, answered by one result each.
    Batch,
    /// `GET /kv-store/keys?values=true`: every key with its value.
    List,
}

impl OpKind {
    /// The HTTP method name, as the API's error messages spell it (`BATCH` and
    /// `LIST` for the two multi-key requests).
    pub fn method(self) -> &'static str {
        match self {
            OpKind::Get => "GET",
            OpKind::Put => "PUT",
            OpKind::Delete => "DELETE",
            OpKind::Batch => "BATCH",
            OpKind::List => "LIST",
        }
    }

    /// True for a single-key write.
    pub fn is_write(self) -> bool {
        matches!(self, OpKind::Put | OpKind::Delete)
    }
}

/// One op of a batch, as sent (values by name, as for single puts).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchOp {
    /// `get`, `put` or `delete`.
    pub kind: OpKind,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Seconds the put lives (an expiring write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// The version of the history format this crate writes (in [`Meta`]). Version 1
/// (no field) has single-key operations only; version 2 adds `ttl` on puts,
/// batches (`kind: "batch"` with `ops`) and listings (`kind: "list"`). Writes
/// may carry an `idempotency_key` and retries a `retry_of` (optional fields: a
/// history without them reads as before).
pub const HISTORY_FORMAT: u32 = 2;

/// A request about to be sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Invoke {
    pub op: OpId,
    pub session: u32,
    /// Milliseconds since the campaign started.
    pub t: f64,
    pub kind: OpKind,
    pub key: String,
    /// The value written (puts only); unique across the history but for the
    /// retries of a write, which send it again (`retry_of`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Seconds an expiring put lives (`"ttl"` in the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// A batch's ops, in the order sent (batches only; `key` is then empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<BatchOp>,
    /// The node (`ip:port`) the request is sent to.
    pub node: String,
    /// The operation whose response carried the context sent (none: `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx_from: Option<OpId>,
    /// The causal context sent, as received (opaque).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub context: Value,
    /// The `Idempotency-Key` header sent with a write (put, delete, batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// A retry: the first attempt of the same logical write. A retry is the same
    /// request (same key, value, ops, ttl and context, same `Idempotency-Key`) sent
    /// again after the first attempt got no answer or a 503; every attempt of one
    /// logical write is one write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<OpId>,
}

/// The outcome of a request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub op: OpId,
    pub t: f64,
    /// HTTP status, absent when no HTTP answer arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The parsed body (absent when it was not JSON or no answer arrived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Client-side failure: `timeout`, `connect: ...`, `body: ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// The `causal-context` of the answer, if it has one.
    pub fn context(&self) -> Option<&Value> {
        self.body
            .as_ref()
            .and_then(|b| b.get("causal-context"))
            .filter(|c| c.is_object())
    }

    /// The `value` of a successful GET, as a string (numbers are rendered).
    pub fn value(&self) -> Option<String> {
        self.body
            .as_ref()
            .and_then(|b| b.get("value"))
            .map(value_string)
    }

    /// A batch answer's `results` (one per op, in order; `null` for an op the
    /// node gave no result for), if the answer has them.
    pub fn results(&self) -> Option<&Vec<Value>> {
        self.body
            .as_ref()
            .and_then(|b| b.get("results"))
            .and_then(Value::as_array)
    }

    /// A listing's `items` as (key, value) pairs (`None`: a `null` value) and its
    /// `next` (`Some(None)`: `null`, the listing is complete; `None`: no string or
    /// `null` there), if the answer has items.
    #[allow(clippy::type_complexity)]
    pub fn items(&self) -> Option<(Vec<(String, Option<String>)>, Option<Option<String>>)> {
        let body = self.body.as_ref()?;
        let items = body.get("items")?.as_array()?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let key = item.get("key")?.as_str()?.to_string();
            let value = item.get("value").filter(|v| !v.is_null()).map(value_string);
            out.push((key, value));
        }
        let next = match body.get("next") {
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(Value::Null) => Some(None),
            _ => None,
        };
        Some((out, next))
    }
}

/// A value as the history compares it: strings as-is, anything else as JSON.
pub fn value_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A large value is sent as its name, [`PADDING_MARK`], then `x` repeated; the
/// history knows writes by name.
pub const PADDING_MARK: char = '~';

/// The name a value is known by: [`value_string`] with a large value's padding
/// cut off. Padding that is not all `x` is kept, so a damaged value never passes
/// for the write it came from.
pub fn value_name(v: &Value) -> String {
    let mut s = value_string(v);
    if let Some(i) = s.find(PADDING_MARK) {
        if s[i + 1..].bytes().all(|b| b == b'x') {
            s.truncate(i);
        }
    }
    s
}

/// A fault or cluster event, with the time it took effect.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRecord {
    pub t: f64,
    #[serde(flatten)]
    pub fault: Fault,
}

/// What happened to the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// Traffic between these node pairs is dropped (both directions).
    PartitionStart {
        name: String,
        links: Vec<(String, String)>,
        /// The view change (its `id`) this cut surrounds: a cut view change
        /// episode (new replicas cut off from old owners of keys moving to them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        view_change: Option<u32>,
    },
    PartitionEnd {
        name: String,
        links: Vec<(String, String)>,
    },
    /// SIGKILL sent; the node is down until `restarted`.
    Kill {
        node: String,
    },
    /// The node was restarted (on the same data directory) and is ready.
    Restarted {
        node: String,
    },
    /// SIGSTOP sent; the node hangs until `resumed`.
    Pause {
        node: String,
    },
    Resumed {
        node: String,
    },
    /// A view change request was sent (to `node`, its coordinator; absent in
    /// histories from before it was recorded).
    ViewChangeStart {
        id: u32,
        view: Vec<String>,
        repl_factor: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// The view change request answered (or failed). 200: every shard got all
    /// its keys; 202: the change is in force but `incomplete_shards` still wait
    /// for an old owner to hand keys over (it completes by itself); anything
    /// else (with the body as `error`) or no answer: it failed.
    ViewChangeEnd {
        id: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The `incomplete-shards` of a 202 answer.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        incomplete_shards: Vec<String>,
        ms: f64,
    },
    /// A node process exited without being told to.
    NodeExited {
        node: String,
        status: String,
    },
    /// A node's log shows a panic.
    NodePanicked {
        node: String,
        line: String,
    },
    /// The node's wall clock now reads real time plus `offset_s` seconds.
    Clock {
        node: String,
        offset_s: i64,
    },
    /// Every fault was removed; the convergence phase begins.
    HealAll,
}

/// One replica's answer to a final read (empty context, after healing).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FinalRead {
    pub node: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The value read (absent when the key does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// True when the node served the key itself (no `address` in the answer).
    pub local: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One node's `/kv-store/key-count` after healing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyCount {
    pub node: String,
    pub shard: String,
    pub count: u64,
}

/// Campaign parameters, written first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Meta {
    /// [`HISTORY_FORMAT`] of the writer (absent: 1).
    #[serde(default = "format_v1")]
    pub format: u32,
    pub seed: u64,
    pub nodes: Vec<String>,
    pub view: Vec<String>,
    pub repl_factor: usize,
    pub sessions: u32,
    pub keys: Vec<String>,
    #[serde(default)]
    pub broken_read_rule: bool,
}

fn format_v1() -> u32 {
    1
}

/// One line of the history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    Meta(Meta),
    Invoke(Invoke),
    Response(Response),
    Fault(FaultRecord),
    /// The final view (shard id -> replicas), as the cluster reports it.
    FinalView {
        shards: Vec<(String, Vec<String>)>,
    },
    Final(FinalRead),
    KeyCount(KeyCount),
}

/// Errors reading or writing a history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("history line {line}: {source}")]
    Parse {
        line: usize,
        source: serde_json::Error,
    },
}

/// Appends events to a JSON-lines file; shared by every session task.
pub struct HistoryWriter {
    out: Mutex<BufWriter<File>>,
    start: Instant,
}

impl HistoryWriter {
    /// Creates (truncates) the file at `path`.
    pub fn create(path: &Path) -> Result<Self, HistoryError> {
        Ok(HistoryWriter {
            out: Mutex::new(BufWriter::new(File::create(path)?)),
            start: Instant::now(),
        })
    }

    /// Milliseconds since the writer was created: the history's clock.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// Appends one event. Events are written in the order of this call, so the
    /// file order is a real-time order of what the campaign did and saw.
    pub fn record(&self, event: &Event) {
        let line = serde_json::to_string(event).expect("history events serialize");
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk would make the verdict meaningless; fail loudly.
        writeln!(out, "{line}").expect("write history");
    }

    /// Stamps `fault` with the current time and records it.
    pub fn fault(&self, fault: Fault) {
        self.record(&Event::Fault(FaultRecord {
            t: self.now(),
            fault,
        }));
    }

    /// Flushes buffered lines to the file.
    pub fn flush(&self) -> Result<(), HistoryError> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.flush()?;
        Ok(())
    }
}

/// Reads a history file.
pub fn read_history(path: &Path) -> Result<Vec<Event>, HistoryError> {
    read_with(path, |e| e)
}

/// Reads a history file without the causal contexts (replaced by `{}` in
/// answers and dropped from invocations): the checker needs only whether an
/// answer carried one, and a long campaign's contexts would not fit in memory.
pub fn read_history_compact(path: &Path) -> Result<Vec<Event>, HistoryError> {
    read_with(path, |mut e| {
        match &mut e {
            Event::Invoke(inv) => inv.context = Value::Null,
            Event::Response(resp) => {
                if let Some(Value::Object(body)) = resp.body.as_mut() {
                    if let Some(ctx) = body.get_mut("causal-context") {
                        if ctx.is_object() {
                            *ctx = Value::Object(Default::default());
                        }
                    }
                }
            }
            _ => {}
        }
        e
    })
}

fn read_with(path: &Path, mut map: impl FnMut(Event) -> Event) -> Result<Vec<Event>, HistoryError> {
    let reader = BufReader::new(File::open(path)?);
    let mut events = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            line: i + 1,
            source,
        })?;
        events.push(map(event));
    }
    Ok(events)
}

/// The raw lines (with contexts) of the invocations and answers of `ops`.
pub fn excerpt(path: &Path, ops: &[OpId]) -> Result<Vec<String>, HistoryError> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        op: Option<OpId>,
    }
    let reader = BufReader::new(File::open(path)?);
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line?;
        let Ok(head) = serde_json::from_str::<Head>(&line) else {
            continue;
        };
        let is_op = head.kind == "invoke" || head.kind == "response";
        if is_op && head.op.is_some_and(|op| ops.contains(&op)) {
            out.push(line);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_version_1_history_still_reads() {
        let meta: super::Event = serde_json::from_str(
            r#"{"type":"meta","seed":1,"nodes":[],"view":[],"repl_factor":2,"sessions":1,"keys":[]}"#,
        )
        .unwrap();
        assert!(matches!(meta, super::Event::Meta(m) if m.format == 1));
        let inv: super::Event = serde_json::from_str(
            r#"{"type":"invoke","op":1,"session":0,"t":1.0,"kind":"put","key":"k","value":"v","node":"n"}"#,
        )
        .unwrap();
        assert!(matches!(inv, super::Event::Invoke(i) if i.ttl.is_none() && i.ops.is_empty()));
    }

    #[test]
    fn a_large_value_is_known_by_its_name() {
        use serde_json::json;
        assert_eq!(super::value_name(&json!("s1-w2~xxxx")), "s1-w2");
        assert_eq!(super::value_name(&json!("s1-w2")), "s1-w2");
        assert_eq!(super::value_name(&json!("s1-w2~xxyx")), "s1-w2~xxyx");
        assert_eq!(super::value_name(&json!(12)), "12");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let events = vec![
            Event::Invoke(Invoke {
                op: 1,
                session: 0,
                t: 1.5,
                kind: OpKind::Put,
                key: "k1".into(),
                value: Some("s0-w1".into()),
                ttl: None,
                ops: vec![],
                node: "127.0.0.2:13800".into(),
                ctx_from: None,
                context: json!({}),
                idempotency_key: None,
                retry_of: None,
            }),
            Event::Response(Response {
                op: 1,
                t: 2.0,
                status: Some(201),
                body: Some(
                    json!({"message": "Added successfully", "replaced": false, "causal-context": {}}),
                ),
                error: None,
            }),
            Event::Invoke(Invoke {
                op: 2,
                session: 0,
                t: 2.5,
                kind: OpKind::Batch,
                key: String::new(),
                value: None,
                ttl: None,
                ops: vec![
                    BatchOp {
                        kind: OpKind::Put,
                        key: "k1".into(),
                        value: Some("s0-w2".into()),
                        ttl: Some(3),
                    },
                    BatchOp {
                        kind: OpKind::Get,
                        key: "k2".into(),
                        value: None,
                        ttl: None,
                    },
                ],
                node: "127.0.0.2:13800".into(),
                ctx_from: Some(1),
                context: json!({}),
                idempotency_key: Some("s0-w2".into()),
                retry_of: None,
            }),
            Event::Fault(FaultRecord {
                t: 3.0,
                fault: Fault::PartitionStart {
                    name: "isolate".into(),
                    links: vec![("a".into(), "b".into())],
                    view_change: None,
                },
            }),
            Event::Fault(FaultRecord {
                t: 4.0,
                fault: Fault::PartitionStart {
                    name: "cut-view-change".into(),
                    links: vec![("b".into(), "c".into())],
                    view_change: Some(2),
                },
            }),
            Event::Fault(FaultRecord {
                t: 5.0,
                fault: Fault::ViewChangeEnd {
                    id: 2,
                    status: Some(202),
                    error: None,
                    incomplete_shards: vec!["1".into()],
                    ms: 12.0,
                },
            }),
        ];
        let w = HistoryWriter::create(&path).unwrap();
        for e in &events {
            w.record(e);
        }
        w.flush().unwrap();
        assert_eq!(read_history(&path).unwrap(), events);
        let compact = read_history_compact(&path).unwrap();
        match &compact[0] {
            Event::Invoke(inv) => assert!(inv.context.is_null()),
            other => panic!("{other:?}"),
        }
        assert_eq!(excerpt(&path, &[1]).unwrap().len(), 2);
        assert_eq!(excerpt(&path, &[2]).unwrap().len(), 1);
        let compact = read_history_compact(&path).unwrap();
        match &compact[0] {
            Event::Invoke(inv) => assert!(inv.context.is_null()),
            other => panic!("{other:?}"),
        }
        assert_eq!(excerpt(&path, &[1]).unwrap().len(), 2);
        assert!(excerpt(&path, &[3]).unwrap().is_empty());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().contains(r#""type":"invoke""#));
        assert!(text.contains(
            r#""kind":"batch","key":"","ops":[{"kind":"put","key":"k1","value":"s0-w2","ttl":3}"#
        ));
        assert!(text.contains(r#""fault":"partition-start""#));
    }
}
