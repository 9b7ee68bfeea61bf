//! The load itself: one keep-alive HTTP/1.1 connection per worker (hyper's bare client
//! connection, no pool, no locks between workers), workers spread round-robin over the nodes,
//! each counting into its own [`Tally`]. A worker either sends back to back (closed loop) or
//! follows a fixed schedule (paced), in which case a server that falls behind is charged for the
//! queue it causes (see [`paced_latency`]).
//!
//! With `--batch N` every request is a `POST /kv-store/batch` of N ops drawn like single
//! requests (same key space, same read ratio). Every answer's `causal-context` is measured
//! (its JSON text, in bytes); with `--sessions` each worker is a client session that sends
//! the context of its last answer with its next request. [`list`] pages through every key
//! (`GET /kv-store/keys`) with one cursor, carrying the context from page to page.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::summary::{
    is_error, latency_histogram, record_latency, Failure, ListSummary, Op, Tally,
};

/// A worker's connection; `None` until (re)connected.
pub(crate) type Conn = Option<SendRequest<Full<Bytes>>>;

/// How long a request may take before it counts as a timeout (the API's client timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connect, so a dead node is not hammered by a spinning worker.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
/// Tries per key in the preload before its write counts as failed.
const PRELOAD_TRIES: u32 = 3;
/// Tries per page of a listing before the listing gives up.
const LIST_TRIES: u32 = 3;
/// The context a request carries when it has none: "no history".
const EMPTY_CONTEXT: &[u8] = b"{}";

/// What every worker shares, read-only.
#[derive(Debug)]
pub(crate) struct Workload {
    pub nodes: Vec<String>,
    pub keys: u64,
    pub read_ratio: f64,
    /// The PUT body, the same for every key: `{"value": "...", "causal-context": {}}`.
    pub put_body: Bytes,
    /// Requests per second offered in total, when paced.
    pub rate: Option<f64>,
    pub concurrency: usize,
    /// The value every write carries, as a JSON string literal (quotes included).
    pub value_json: String,
    /// Ops per request when every request is a batch.
    pub batch: Option<usize>,
    /// Whether each worker sends back the context of its previous answer.
    pub sessions: bool,
}

impl Workload {
    pub fn new(
        nodes: Vec<String>,
        keys: u64,
        value_size: usize,
        read_ratio: f64,
        rate: Option<f64>,
        concurrency: usize,
    ) -> Self {
        let body = serde_json::json!({"value": "v".repeat(value_size), "causal-context": {}});
        Self {
            nodes,
            keys,
            read_ratio,
            put_body: Bytes::from(body.to_string()),
            rate,
            concurrency,
            value_json: serde_json::Value::String("v".repeat(value_size)).to_string(),
            batch: None,
            sessions: false,
        }
    }

    /// Every request a batch of `n` ops (`None`: single-key requests).
    pub fn with_batch(mut self, n: Option<usize>) -> Self {
        self.batch = n;
        self
    }

    /// Whether workers carry their context from answer to request.
    pub fn with_sessions(mut self, sessions: bool) -> Self {
        self.sessions = sessions;
        self
    }

    /// The node worker `id` talks to.
    pub fn node_of(&self, id: usize) -> &str {
        &self.nodes[id % self.nodes.len()]
    }
}

/// When worker `id` of `concurrency` sends its `k`-th request, as an offset from the start, for
/// a total offered `rate`: each worker sends every `concurrency / rate` seconds, and the workers
/// are staggered evenly inside that interval so the union is a steady stream.
pub(crate) fn scheduled_offset(id: usize, k: u64, concurrency: usize, rate: f64) -> Duration {
    let interval = concurrency as f64 / rate;
    let stagger = interval * id as f64 / concurrency as f64;
    Duration::from_secs_f64(k as f64 * interval + stagger)
}

/// The latency to report for a paced request, and when the worker becomes free again, as if
/// every request had been sent exactly on time. The generator's timer ticks in milliseconds and
/// its thread may be descheduled, so actual send times drift; charging that drift to the server
/// would be wrong, and so would dropping the delay a slow answer causes to the requests queued
/// behind it (coordinated omission). So each request is taken to start at its scheduled time or
/// when the worker's previous request would have finished (whichever is later), and to take the
/// service time it actually took; its latency is counted from the scheduled time.
pub(crate) fn paced_latency(
    scheduled: Instant,
    free_at: Instant,
    service: Duration,
) -> (Duration, Instant) {
    let done = scheduled.max(free_at) + service;
    (done - scheduled, done)
}

/// Opens a keep-alive HTTP/1.1 connection to `node`.
pub(crate) async fn connect(node: &str) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(node).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        // Ends when the worker drops its sender or the server closes; either way the worker
        // sees it on its next request and reconnects.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request on `conn`, (re)connecting first if needed, and reads the whole answer so
/// the connection can be reused; returns its status and body. Any failure drops the
/// connection.
async fn send(
    conn: &mut Conn,
    node: &str,
    request: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), Failure> {
    let exchange = async {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = None;
            *conn = Some(connect(node).await.map_err(|_| Failure::Connect)?);
        }
        let sender = conn.as_mut().expect("connected above");
        sender.ready().await.map_err(|_| Failure::Io)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| Failure::Io)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| Failure::Io)?
            .to_bytes();
        Ok((status, body))
    };
    let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Timeout),
    };
    if outcome.is_err() {
        *conn = None;
    }
    if matches!(outcome, Err(Failure::Connect)) {
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
    outcome
}

fn request(node: &str, method: Method, uri: String, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(HOST, node)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("the request parts are valid")
}

/// A single-key request. Without a context to carry, the bodies are the fixed ones (`{}` and
/// the prepared PUT body); with one, they carry it.
fn key_request(
    node: &str,
    op: Op,
    key: u64,
    load: &Workload,
    context: Option<&[u8]>,
) -> Request<Full<Bytes>> {
    let (method, body) = match (op, context) {
        (Op::Get, None) => (Method::GET, Bytes::from_static(b"{}")),
        (_, None) => (Method::PUT, load.put_body.clone()),
        (Op::Get, Some(c)) => (Method::GET, key_body(Op::Get, &load.value_json, c)),
        (_, Some(c)) => (Method::PUT, key_body(Op::Put, &load.value_json, c)),
    };
    request(node, method, format!("/kv-store/keys/key{key}"), body)
}

fn batch_request(
    node: &str,
    ops: &[(Op, u64)],
    load: &Workload,
    context: &[u8],
) -> Request<Full<Bytes>> {
    let body = batch_body(ops, &load.value_json, context);
    request(node, Method::POST, "/kv-store/batch".into(), body)
}

/// The body of a single-key request carrying `context` (the raw JSON of a context): a GET's
/// `{"causal-context": C}`, a PUT's `{"value": V, "causal-context": C}`.
pub(crate) fn key_body(op: Op, value_json: &str, context: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(value_json.len() + context.len() + 32);
    body.push(b'{');
    if op != Op::Get {
        body.extend_from_slice(b"\"value\":");
        body.extend_from_slice(value_json.as_bytes());
        body.push(b',');
    }
    body.extend_from_slice(b"\"causal-context\":");
    body.extend_from_slice(context);
    body.push(b'}');
    Bytes::from(body)
}

/// The body of a batch: `{"ops": [{"op": "get", "key": "key5"}, {"op": "put", "key": "key7",
/// "value": V}, ...], "causal-context": C}`.
pub(crate) fn batch_body(ops: &[(Op, u64)], value_json: &str, context: &[u8]) -> Bytes {
    use std::io::Write;
    let mut body = Vec::with_capacity(ops.len() * (value_json.len() + 40) + context.len() + 40);
    body.extend_from_slice(b"{\"ops\":[");
    for (i, (op, key)) in ops.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        match op {
            Op::Get => write!(body, "{{\"op\":\"get\",\"key\":\"key{key}\"}}"),
            _ => write!(
                body,
                "{{\"op\":\"put\",\"key\":\"key{key}\",\"value\":{value_json}}}"
            ),
        }
        .expect("writing to a Vec cannot fail");
    }
    body.extend_from_slice(b"],\"causal-context\":");
    body.extend_from_slice(context);
    body.push(b'}');
    Bytes::from(body)
}

/// What the generator reads from an answer: its context and, for a batch, each op's status.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(rename = "causal-context", borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(default)]
    results: Option<Vec<OpResult>>,
}

#[derive(Deserialize)]
struct OpResult {
    status: u16,
}

/// An answer's `causal-context` (its raw JSON text) and, for a batch answer, each op's status in
/// order. `None` when the body is not a JSON object.
pub(crate) fn parse_answer(body: &[u8]) -> Option<(Option<&[u8]>, Vec<u16>)> {
    let answer: Answer<'_> = serde_json::from_slice(body).ok()?;
    let context = answer.context.map(|c| c.get().as_bytes());
    let statuses = answer
        .results
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.status)
        .collect();
    Some((context, statuses))
}

/// One page of a listing, as the generator reads it.
#[derive(Deserialize)]
struct PageAnswer<'a> {
    #[serde(default)]
    keys: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    items: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    next: Option<String>,
    #[serde(rename = "causal-context", borrow, default)]
    context: Option<&'a RawValue>,
}

/// A page as read: how many keys, `next` (`None` at the end), the raw context.
pub(crate) type Page<'a> = (u64, Option<String>, Option<&'a [u8]>);

/// A page's key count, its `next` (`None` at the end) and its context. `None` when the body
/// is not a listing (neither `keys` nor `items`).
pub(crate) fn parse_page(body: &[u8]) -> Option<Page<'_>> {
    let page: PageAnswer<'_> = serde_json::from_slice(body).ok()?;
    let n = match (&page.keys, &page.items) {
        (Some(keys), _) => keys.len(),
        (None, Some(items)) => items.len(),
        (None, None) => return None,
    };
    let context = page.context.map(|c| c.get().as_bytes());
    Some((n as u64, page.next, context))
}

/// Percent-encodes a query component: everything but ASCII letters, digits and `-._~`.
pub(crate) fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path and query of one page of a listing.
pub(crate) fn list_path(
    prefix: &str,
    limit: u32,
    values: bool,
    start_after: Option<&str>,
) -> String {
    let mut path = format!("/kv-store/keys?limit={limit}");
    if !prefix.is_empty() {
        path.push_str("&prefix=");
        path.push_str(&encode_query(prefix));
    }
    if let Some(after) = start_after {
        path.push_str("&start-after=");
        path.push_str(&encode_query(after));
    }
    if values {
        path.push_str("&values=true");
    }
    path
}

/// A small fast generator (SplitMix64) so each worker draws keys without shared state.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// Worker `id`'s measured phase: requests until `deadline`, closed loop or on schedule.
pub(crate) async fn measure(
    id: usize,
    mut conn: Conn,
    load: Arc<Workload>,
    start: Instant,
    deadline: Instant,
    done: Arc<AtomicU64>,
) -> (Tally, Conn) {
    let node = load.node_of(id);
    let mut rng = Rng(0x5EED ^ ((id as u64) << 32));
    let mut tally = Tally::default();
    // The session's context: what it sends when it carries one (`--sessions`).
    let mut context = Bytes::from_static(EMPTY_CONTEXT);
    let mut ops: Vec<(Op, u64)> = Vec::with_capacity(load.batch.unwrap_or(1));
    // When this worker's previous request would have finished had every send been on time.
    let mut free_at = start;
    for k in 0u64.. {
        let scheduled = match load.rate {
            Some(rate) => {
                let at = start + scheduled_offset(id, k, load.concurrency, rate);
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at).await;
                Some(at)
            }
            None if Instant::now() >= deadline => break,
            None => None,
        };
        ops.clear();
        for _ in 0..load.batch.unwrap_or(1) {
            let op = if rng.unit() < load.read_ratio {
                Op::Get
            } else {
                Op::Put
            };
            ops.push((op, 1 + rng.below(load.keys)));
        }
        let carried = load.sessions.then_some(&context[..]);
        let (kind, request) = match load.batch {
            Some(_) => (
                Op::Batch,
                batch_request(node, &ops, &load, carried.unwrap_or(EMPTY_CONTEXT)),
            ),
            None => (
                ops[0].0,
                key_request(node, ops[0].0, ops[0].1, &load, carried),
            ),
        };
        let sent = Instant::now();
        let outcome = send(&mut conn, node, request).await;
        let mut latency = sent.elapsed();
        if let Some(at) = scheduled {
            (latency, free_at) = paced_latency(at, free_at, latency);
        }
        match outcome {
            Ok((status, body)) => {
                tally.record(kind, status, latency);
                if let Some((answer_context, statuses)) = parse_answer(&body) {
                    if let Some(c) = answer_context {
                        tally.record_context(c.len());
                        if load.sessions && !is_error(kind, status) {
                            context = Bytes::copy_from_slice(c);
                        }
                    }
                    if kind == Op::Batch && !is_error(kind, status) {
                        for ((op, _), status) in ops.iter().zip(statuses) {
                            tally.record_op(*op, status);
                        }
                    }
                }
            }
            Err(failure) => tally.record_failure(failure),
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    if load.sessions {
        tally.record_final_context(context.len());
    }
    (tally, conn)
}

/// Worker `id`'s share of the preload: keys `id+1`, `id+1+concurrency`, ... each written once
/// (retried on failure or error status), one key per request or, with `--batch N`, N keys per
/// batch. Returns how many keys could not be written.
pub(crate) async fn preload(
    id: usize,
    mut conn: Conn,
    load: Arc<Workload>,
    done: Arc<AtomicU64>,
) -> (u64, Conn) {
    let node = load.node_of(id);
    let mut failed = 0;
    let per_request = load.batch.unwrap_or(1) as u64;
    let step = load.concurrency as u64;
    let mut key = id as u64 + 1;
    while key <= load.keys {
        let mut pending: Vec<(Op, u64)> = (0..per_request)
            .map(|i| key + i * step)
            .take_while(|k| *k <= load.keys)
            .map(|k| (Op::Put, k))
            .collect();
        let count = pending.len() as u64;
        for _ in 0..PRELOAD_TRIES {
            if pending.is_empty() {
                break;
            }
            if load.batch.is_none() {
                let (_, k) = pending[0];
                let request = key_request(node, Op::Put, k, &load, None);
                if let Ok((status, _)) = send(&mut conn, node, request).await {
                    if !is_error(Op::Put, status) {
                        pending.clear();
                    }
                }
                continue;
            }
            let request = batch_request(node, &pending, &load, EMPTY_CONTEXT);
            if let Ok((status, body)) = send(&mut conn, node, request).await {
                if is_error(Op::Batch, status) {
                    continue;
                }
                if let Some((_, statuses)) = parse_answer(&body) {
                    if statuses.len() == pending.len() {
                        pending = pending
                            .into_iter()
                            .zip(statuses)
                            .filter(|(_, status)| is_error(Op::Put, *status))
                            .map(|(op, _)| op)
                            .collect();
                    }
                }
            }
        }
        failed += pending.len() as u64;
        done.fetch_add(count, Ordering::Relaxed);
        key += per_request * step;
    }
    (failed, conn)
}

/// What to list and how.
#[derive(Debug, Clone)]
pub(crate) struct ListOptions {
    pub prefix: String,
    pub limit: u32,
    pub values: bool,
}

/// Pages through every key with one cursor on `conn` (node `node`): `limit` keys a page,
/// each page's `next` as the following page's `start-after`, each page's context sent with
/// the next, until `"next": null`. A page that fails is retried; after [`LIST_TRIES`] the
/// listing stops, incomplete.
pub(crate) async fn list(
    mut conn: Conn,
    node: &str,
    options: &ListOptions,
    done: Arc<AtomicU64>,
) -> (ListSummary, Conn) {
    let mut latency = latency_histogram();
    let mut context = Bytes::from_static(EMPTY_CONTEXT);
    let mut start_after: Option<String> = None;
    let (mut keys, mut pages, mut errors) = (0u64, 0u64, 0u64);
    let mut complete = false;
    let start = Instant::now();
    'pages: loop {
        let path = list_path(
            &options.prefix,
            options.limit,
            options.values,
            start_after.as_deref(),
        );
        let mut tries = 0;
        let (n, next) = loop {
            let body = key_body(Op::Get, "", &context);
            let sent = Instant::now();
            let outcome = send(
                &mut conn,
                node,
                request(node, Method::GET, path.clone(), body),
            )
            .await;
            if let Ok((200, body)) = &outcome {
                record_latency(&mut latency, sent.elapsed());
                if let Some((n, next, page_context)) = parse_page(body) {
                    if let Some(c) = page_context {
                        context = Bytes::copy_from_slice(c);
                    }
                    break (n, next);
                }
            }
            errors += 1;
            tries += 1;
            if tries >= LIST_TRIES {
                break 'pages;
            }
        };
        keys += n;
        pages += 1;
        done.fetch_add(n, Ordering::Relaxed);
        match next {
            None => {
                complete = true;
                break;
            }
            // A cursor that does not move would loop for ever.
            Some(next) if start_after.as_deref() == Some(next.as_str()) => break,
            Some(next) => start_after = Some(next),
        }
    }
    let summary = ListSummary::new(
        node.to_string(),
        options.prefix.clone(),
        options.limit,
        options.values,
        keys,
        pages,
        start.elapsed(),
        &latency,
        complete,
        errors,
        context.len(),
    );
    (summary, conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_offers_the_rate_evenly() {
        let (concurrency, rate, secs) = (8, 1000.0, 2.0);
        let mut offsets: Vec<f64> = (0..concurrency)
            .flat_map(|id| {
                (0u64..)
                    .map(move |k| scheduled_offset(id, k, concurrency, rate).as_secs_f64())
                    .take_while(|t| *t < secs)
            })
            .collect();
        assert_eq!(offsets.len(), 2000, "rate x duration requests");
        offsets.sort_by(f64::total_cmp);
        for pair in offsets.windows(2) {
            let gap = pair[1] - pair[0];
            assert!((gap - 0.001).abs() < 1e-9, "gap {gap}: not a steady stream");
        }
    }

    #[test]
    fn slow_answers_delay_the_requests_behind_them_and_timer_drift_does_not() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // On time, idle worker: latency is the service time.
        let (latency, free) = paced_latency(t0, t0, ms(1));
        assert_eq!((latency, free), (ms(1), t0 + ms(1)));
        // A 25 ms answer to a request due at 0; the next ones are due every 10 ms and take
        // 1 ms each: they queue behind it, 16 ms then 7 ms, then the queue is gone.
        let (_, free) = paced_latency(t0, t0, ms(25));
        let (l1, free) = paced_latency(t0 + ms(10), free, ms(1));
        let (l2, free) = paced_latency(t0 + ms(20), free, ms(1));
        let (l3, _) = paced_latency(t0 + ms(30), free, ms(1));
        assert_eq!((l1, l2, l3), (ms(16), ms(7), ms(1)));
        // However late the timer actually woke the worker, only the service time counts.
        let (latency, _) = paced_latency(t0 + ms(10), t0 + ms(1), ms(2));
        assert_eq!(latency, ms(2));
    }

    #[test]
    fn keys_and_ratio_are_drawn_uniformly() {
        let mut rng = Rng(7);
        let mut hits = [0u32; 10];
        let mut reads = 0;
        for _ in 0..100_000 {
            hits[rng.below(10) as usize] += 1;
            if rng.unit() < 0.3 {
                reads += 1;
            }
        }
        for h in hits {
            assert!((9_500..10_500).contains(&h), "bucket {h} of 10000 expected");
        }
        assert!((29_000..31_000).contains(&reads), "reads {reads}");
    }

    #[test]
    fn put_body_is_the_api_shape() {
        let load = Workload::new(vec!["a:1".into()], 5, 4, 0.5, None, 1);
        let v: serde_json::Value = serde_json::from_slice(&load.put_body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"value": "vvvv", "causal-context": {}})
        );
    }

    #[test]
    fn workers_are_spread_round_robin_over_nodes() {
        let load = Workload::new(vec!["a:1".into(), "b:2".into()], 5, 1, 0.5, None, 4);
        let nodes: Vec<&str> = (0..4).map(|id| load.node_of(id)).collect();
        assert_eq!(nodes, ["a:1", "b:2", "a:1", "b:2"]);
    }

    #[test]
    fn bodies_carry_the_context_and_the_value() {
        let value = serde_json::Value::String("v\"x".into()).to_string();
        let ctx = br#"{"epoch":1,"deps":{"1":{"ab":5}}}"#;
        let get: serde_json::Value =
            serde_json::from_slice(&key_body(Op::Get, &value, ctx)).unwrap();
        assert_eq!(
            get,
            serde_json::json!({"causal-context": {"epoch": 1, "deps": {"1": {"ab": 5}}}})
        );
        let put: serde_json::Value =
            serde_json::from_slice(&key_body(Op::Put, &value, b"{}")).unwrap();
        assert_eq!(
            put,
            serde_json::json!({"value": "v\"x", "causal-context": {}})
        );
    }

    #[test]
    fn a_batch_body_is_the_api_shape() {
        let load = Workload::new(vec!["a:1".into()], 5, 3, 0.5, None, 1);
        let ops = [(Op::Put, 7), (Op::Get, 5), (Op::Put, 7)];
        let body = batch_body(&ops, &load.value_json, b"{}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ops": [
                {"op": "put", "key": "key7", "value": "vvv"},
                {"op": "get", "key": "key5"},
                {"op": "put", "key": "key7", "value": "vvv"},
            ], "causal-context": {}})
        );
    }

    #[test]
    fn answers_give_their_raw_context_and_op_statuses() {
        let body = br#"{"message":"Batch completed","results":[{"key":"a","status":201,"replaced":false},{"key":"b","status":404,"error":"x"}],"causal-context":{"epoch":2,"recent":[[1,"o",3,99,true]]}}"#;
        let (ctx, statuses) = parse_answer(body).unwrap();
        assert_eq!(ctx.unwrap(), br#"{"epoch":2,"recent":[[1,"o",3,99,true]]}"#);
        assert_eq!(statuses, [201, 404]);
        let (ctx, statuses) = parse_answer(br#"{"value":"v","causal-context":{}}"#).unwrap();
        assert_eq!(ctx.unwrap(), b"{}");
        assert!(statuses.is_empty());
        assert_eq!(parse_answer(br#"{"message":"x"}"#).unwrap().0, None);
        assert!(parse_answer(b"Bad Gateway").is_none());
    }

    #[test]
    fn pages_give_their_count_next_and_context() {
        let (n, next, ctx) =
            parse_page(br#"{"message":"Keys listed successfully","keys":["k1","k2"],"next":"k2","causal-context":{"ts":5}}"#)
                .unwrap();
        assert_eq!(
            (n, next.as_deref(), ctx),
            (2, Some("k2"), Some(&br#"{"ts":5}"#[..]))
        );
        let (n, next, _) =
            parse_page(br#"{"items":[{"key":"a","value":"1"}],"next":null,"causal-context":{}}"#)
                .unwrap();
        assert_eq!((n, next), (1, None));
        let (_, next, _) = parse_page(br#"{"keys":["a\"b"],"next":"a\"b"}"#).unwrap();
        assert_eq!(next.as_deref(), Some("a\"b"), "next is unescaped");
        assert!(parse_page(br#"{"message":"Error in LIST","error":"limit"}"#).is_none());
    }

    #[test]
    fn list_paths_encode_their_parameters() {
        assert_eq!(
            list_path("", 1000, false, None),
            "/kv-store/keys?limit=1000"
        );
        assert_eq!(
            list_path("a b", 10, true, Some("key9&x=1/é")),
            "/kv-store/keys?limit=10&prefix=a%20b&start-after=key9%26x%3D1%2F%C3%A9&values=true"
        );
        assert_eq!(encode_query("Az09-._~"), "Az09-._~");
    }
}
