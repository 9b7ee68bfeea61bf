//! [`Client`]: sends API [`Operation`]s to a list of nodes, carrying the causal
//! context from each response to the next request and failing over to the next
//! node when one cannot serve.
//!
//! Invariant: the context sent is always the `causal-context` of the last
//! answer that served an operation (a success, or 404 "Key does not exist"), or the
//! one set by the caller. An error answer (400, 405, 413, 503, ...) teaches nothing
//! new, so whatever context it carries never replaces the session's: one typo or one
//! unreachable shard cannot erase a session's history. So sequential calls through
//! one `Client` are causally consistent, whichever node serves them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::response::{
    BatchBody, BatchResult, GetBody, KeyCount, Page, PutBody, PutOutcome, Response, ShardInfo,
    ShardList, ViewChangeBody, Watched,
};

/// Per-request timeout unless [`ClientBuilder::timeout`] says otherwise: the API's
/// promise is that every request is answered within 5 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeout of a view change unless [`ClientBuilder::view_change_timeout`] says
/// otherwise. A view change answers only once every key has moved, which may take
/// longer than a key operation.
pub const DEFAULT_VIEW_CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest piece of an unexpected body kept in [`Error::Http`].
const MAX_ERROR_BODY: usize = 300;

/// One request of the API, independent of the node it is sent to.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// `GET /kv-store/keys/<key>`
    Get {
        /// The key.
        key: String,
    },
    /// `PUT /kv-store/keys/<key>` with a string or number value.
    Put {
        /// The key.
        key: String,
        /// The value, a JSON string or number. A `serde_json` number has already
        /// lost its text (`1e2` is sent as `100.0`): to store a number exactly as
        /// written, use [`Operation::PutNumber`].
        value: Value,
    },
    /// `GET /kv-store/keys/<key>?wait=<seconds>`: waits up to `wait` (at most 60 s)
    /// for a write or delete of the key that the session has not seen.
    Watch {
        /// The key.
        key: String,
        /// How long the node may hold the request.
        wait: Duration,
    },
    /// `PUT /kv-store/keys/<key>` with a number value sent exactly as written (the
    /// store hands it back with that text: `1e2` stays `1e2`).
    PutNumber {
        /// The key.
        key: String,
        /// The number's JSON text, e.g. `1e2`, `10.50`, `-0`; the attempt fails with
        /// [`Error::InvalidNumber`] if it is not one JSON number.
        number: String,
    },
    /// A [`Operation::Put`] or [`Operation::PutNumber`] whose write expires after
    /// `ttl` (the body's `"ttl"`, in seconds): then the key reads as deleted.
    PutWithTtl {
        /// The put.
        put: Box<Operation>,
        /// How long the written value lives.
        ttl: Duration,
    },
    /// `DELETE /kv-store/keys/<key>`
    Delete {
        /// The key.
        key: String,
    },
    /// `POST /kv-store/batch`: ops on one key run in order, other keys in parallel;
    /// one answer (and context) for all.
    Batch {
        /// The ops, in order (at most 1,000).
        ops: Vec<BatchOp>,
    },
    /// `GET /kv-store/keys?prefix=..&limit=..&start-after=..&values=..`: one page of
    /// keys in byte order across every shard.
    List {
        /// Only keys that start with this.
        prefix: String,
        /// Most keys in the page (1 to 1,000).
        limit: u32,
        /// Only keys after this one (the previous page's `next`).
        start_after: Option<String>,
        /// Also return each key's value.
        values: bool,
    },
    /// `GET /kv-store/key-count`
    KeyCount,
    /// `GET /kv-store/shards`
    Shards,
    /// `GET /kv-store/shards/<id>`
    Shard {
        /// Shard id, e.g. `"1"`.
        id: String,
    },
    /// `GET /cluster`: the cluster status document (any node gathers it).
    ClusterStatus,
    /// `PUT /kv-store/view-change`
    ViewChange {
        /// Every node of the new view, `ip:port`, in order.
        view: Vec<String>,
        /// Replicas per shard in the new view.
        repl_factor: u32,
    },
}

impl Operation {
    fn method(&self) -> Method {
        match self {
            Operation::Get { .. }
            | Operation::Watch { .. }
            | Operation::List { .. }
            | Operation::KeyCount
            | Operation::Shards
            | Operation::ClusterStatus
            | Operation::Shard { .. } => Method::GET,
            Operation::Put { .. }
            | Operation::PutNumber { .. }
            | Operation::PutWithTtl { .. }
            | Operation::ViewChange { .. } => Method::PUT,
            Operation::Delete { .. } => Method::DELETE,
            Operation::Batch { .. } => Method::POST,
        }
    }

    /// Path segments after the host; each is percent-encoded when the URL is built,
    /// so a key may hold `/`, `?`, spaces, ...
    fn segments(&self) -> Vec<&str> {
        match self {
            Operation::Get { key }
            | Operation::Watch { key, .. }
            | Operation::Put { key, .. }
            | Operation::PutNumber { key, .. }
            | Operation::Delete { key } => vec!["kv-store", "keys", key],
            Operation::KeyCount => vec!["kv-store", "key-count"],
            Operation::Shards => vec!["kv-store", "shards"],
            Operation::Shard { id } => vec!["kv-store", "shards", id],
            Operation::ClusterStatus => vec!["cluster"],
            Operation::Batch { .. } => vec!["kv-store", "batch"],
            Operation::List { .. } => vec!["kv-store", "keys"],
            Operation::PutWithTtl { put, .. } => put.segments(),
            Operation::ViewChange { .. } => vec!["kv-store", "view-change"],
        }
    }

    /// The request body's JSON text.
    fn body(&self, context: Value) -> Result<Vec<u8>> {
        if let Operation::PutWithTtl { put, ttl } = self {
            // The put's own body (a number keeps its text), with "ttl" added last.
            let mut body = put.body(context)?;
            if body.pop() != Some(b'}') {
                unreachable!("a put's body is a JSON object");
            }
            body.extend_from_slice(format!(",\"ttl\":{}}}", ttl.as_secs_f64()).as_bytes());
            return Ok(body);
        }
        if let Operation::PutNumber { number, .. } = self {
            #[derive(serde::Serialize)]
            struct NumberBody<'a> {
                value: &'a RawValue,
                #[serde(rename = "causal-context")]
                context: Value,
            }
            let invalid = || Error::InvalidNumber {
                text: number.clone(),
            };
            // One JSON number (that `serde_json` reads as one), nothing around it.
            number
                .parse::<serde_json::Number>()
                .map_err(|_| invalid())?;
            let value = RawValue::from_string(number.clone()).map_err(|_| invalid())?;
            let body = NumberBody {
                value: &value,
                context,
            };
            return Ok(serde_json::to_vec(&body).expect("JSON values always serialise"));
        }
        let mut body = Map::new();
        match self {
            Operation::Put { value, .. } => {
                body.insert("value".into(), value.clone());
            }
            Operation::Batch { ops } => {
                body.insert(
                    "ops".into(),
                    Value::Array(ops.iter().map(BatchOp::to_json).collect()),
                );
            }
            Operation::ViewChange { view, repl_factor } => {
                body.insert("view".into(), Value::String(view.join(",")));
                body.insert("repl-factor".into(), json!(repl_factor));
            }
            _ => {}
        }
        body.insert("causal-context".into(), context);
        Ok(serde_json::to_vec(&body).expect("JSON values always serialise"))
    }

    /// A put, delete, or a batch with either (what an `Idempotency-Key` applies to).
    pub fn is_write(&self) -> bool {
        match self {
            Operation::Put { .. }
            | Operation::PutNumber { .. }
            | Operation::PutWithTtl { .. }
            | Operation::Delete { .. } => true,
            Operation::Batch { ops } => ops.iter().any(|o| !matches!(o, BatchOp::Get { .. })),
            _ => false,
        }
    }

    /// Whether the next node may be asked after this operation failed with `error`.
    ///
    /// A write (put, delete) is retried only when the failed attempt certainly did
    /// nothing: the connection was never made. After a timeout or a 503 the write may
    /// still be applied; sent again it would be a second write, which the store orders
    /// after whatever other clients wrote in between, so the caller decides. A view
    /// change that timed out may still be running; starting a second one would race it.
    ///
    /// A write sent with an `Idempotency-Key` (as [`Client::execute`] sends every
    /// write) is retried after any such failure: the store applies all its attempts as
    /// one write.
    fn may_retry_after(&self, error: &Error, keyed: bool) -> bool {
        if !error.is_retryable() {
            return false;
        }
        match self {
            _ if self.is_write() && keyed => true,
            Operation::Put { .. }
            | Operation::PutNumber { .. }
            | Operation::PutWithTtl { .. }
            | Operation::Batch { .. }
            | Operation::Delete { .. } => {
                matches!(error, Error::Transport { source, .. } if source.is_connect())
            }
            Operation::ViewChange { .. } => !matches!(error, Error::Timeout { .. }),
            _ => true,
        }
    }
}

/// One op of a batch ([`Operation::Batch`]).
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOp {
    /// Read a key.
    Get {
        /// The key.
        key: String,
    },
    /// Write a key (a JSON string or number).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Value,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
}

impl BatchOp {
    fn to_json(&self) -> Value {
        match self {
            BatchOp::Get { key } => json!({"op": "get", "key": key}),
            BatchOp::Put { key, value } => json!({"op": "put", "key": key, "value": value}),
            BatchOp::Delete { key } => json!({"op": "delete", "key": key}),
        }
    }
}

/// Configures a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    nodes: Vec<String>,
    timeout: Duration,
    view_change_timeout: Duration,
    context: Value,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            nodes: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            view_change_timeout: DEFAULT_VIEW_CHANGE_TIMEOUT,
            context: empty_context(),
        }
    }
}

impl ClientBuilder {
    /// Adds node addresses (`ip:port`, tried in this order). Each item may itself be a
    /// comma-separated list, as in `CAUSEWAY_NODE=a:13800,b:13800`.
    pub fn nodes<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for item in nodes {
            self.nodes.extend(
                item.as_ref()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        self
    }

    /// Time one attempt on one node may take, connection included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time a view change may take (default 60 s).
    pub fn view_change_timeout(mut self, timeout: Duration) -> Self {
        self.view_change_timeout = timeout;
        self
    }

    /// Starts from a causal context saved earlier (see [`Client::context`]).
    pub fn context(mut self, context: Value) -> Self {
        self.context = context;
        self
    }

    /// Checks the addresses and builds the client.
    pub fn build(self) -> Result<Client> {
        if self.nodes.is_empty() {
            return Err(Error::InvalidAddress {
                address: String::new(),
                reason: "no node address given".into(),
            });
        }
        let nodes = self
            .nodes
            .iter()
            .map(|a| normalize_address(a))
            .collect::<Result<Vec<_>>>()?;
        let http = reqwest::Client::builder()
            // Nodes are addressed directly; a proxy from the environment would only get in the way.
            .no_proxy()
            .build()
            .map_err(|source| Error::Transport {
                node: "(client setup)".into(),
                source,
            })?;
        Ok(Client {
            nodes,
            http,
            timeout: self.timeout,
            view_change_timeout: self.view_change_timeout,
            context: Mutex::new(self.context),
            preferred: AtomicUsize::new(0),
        })
    }
}

/// A session with a Causeway cluster. See the [crate documentation](crate).
///
/// Calls take `&self`; the causal context is shared by every call, so one
/// `Client` is one causal session. Concurrent calls on one `Client` are allowed,
/// but the context kept is that of whichever response arrived last.
#[derive(Debug)]
pub struct Client {
    nodes: Vec<String>,
    http: reqwest::Client,
    timeout: Duration,
    view_change_timeout: Duration,
    context: Mutex<Value>,
    /// Index of the node that served last; the next request starts there, so a dead
    /// first address costs one failed attempt, not one per request.
    preferred: AtomicUsize,
}

impl Client {
    /// A client for these nodes (`ip:port`, or comma lists of them), default settings,
    /// no causal history.
    pub fn new<I, S>(nodes: I) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Client::builder().nodes(nodes).build()
    }

    /// A builder for the other settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The node addresses, in the order given.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The causal context that the next request will send: the `causal-context` of the
    /// last response received. Save it to continue the session later.
    pub fn context(&self) -> Value {
        self.context
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the causal context, e.g. with one saved by [`Client::context`].
    pub fn set_context(&self, context: Value) {
        *self.context.lock().unwrap_or_else(|e| e.into_inner()) = context;
    }

    /// Reads a key: its value as stored, a JSON string or number.
    pub async fn get(&self, key: &str) -> Result<Value> {
        let response = self.execute(&Operation::Get { key: key.into() }).await?;
        Ok(response.decode::<GetBody>()?.value)
    }

    /// Waits up to `wait` (at most 60 s) for the key to change beyond what this
    /// session has seen: a write or delete made through any node. Answers at once when
    /// the node already holds one. Loop on it (the session's context advances with
    /// each answer) to see every change, or a later one that supersedes it.
    pub async fn watch(&self, key: &str, wait: Duration) -> Result<Watched> {
        let op = Operation::Watch {
            key: key.into(),
            wait,
        };
        let response = match self.execute(&op).await {
            Ok(response) => response,
            Err(Error::KeyNotFound { response }) => *response,
            Err(e) => return Err(e),
        };
        Watched::try_from(&response)
    }

    /// Runs `ops` as one batch: ops on one key in order, other keys in parallel; one
    /// result per op, in order. The session's context afterwards covers every op.
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<Vec<BatchResult>> {
        let response = self.execute(&Operation::Batch { ops }).await?;
        Ok(response.decode::<BatchBody>()?.results)
    }

    /// One page of keys (and values, with `values`) in byte order across every shard,
    /// at most `limit` (1 to 1,000) that start with `prefix` and come after
    /// `start_after`; [`Page::next`] names where the next page starts.
    pub async fn list(
        &self,
        prefix: &str,
        limit: u32,
        start_after: Option<&str>,
        values: bool,
    ) -> Result<Page> {
        let op = Operation::List {
            prefix: prefix.into(),
            limit,
            start_after: start_after.map(str::to_owned),
            values,
        };
        Page::try_from(&self.execute(&op).await?)
    }

    /// Writes a key whose value expires after `ttl` (more than 0, at most ten years):
    /// from then on it reads as deleted, on every node.
    pub async fn put_with_ttl(
        &self,
        key: &str,
        value: impl Into<Value>,
        ttl: Duration,
    ) -> Result<PutOutcome> {
        let op = Operation::PutWithTtl {
            put: Box::new(Operation::Put {
                key: key.into(),
                value: value.into(),
            }),
            ttl,
        };
        PutOutcome::try_from(&self.execute(&op).await?)
    }

    /// Writes a key. `value` should be a string or a number (`"v".into()`, `10.into()`).
    pub async fn put(&self, key: &str, value: impl Into<Value>) -> Result<PutOutcome> {
        let op = Operation::Put {
            key: key.into(),
            value: value.into(),
        };
        PutOutcome::try_from(&self.execute(&op).await?)
    }

    /// Deletes a key; [`Error::KeyNotFound`] if it does not exist.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.execute(&Operation::Delete { key: key.into() })
            .await
            .map(drop)
    }

    /// Number of keys in the shard of the node that answers.
    pub async fn key_count(&self) -> Result<KeyCount> {
        self.execute(&Operation::KeyCount).await?.decode()
    }

    /// Ids of every shard.
    pub async fn shards(&self) -> Result<Vec<String>> {
        Ok(self
            .execute(&Operation::Shards)
            .await?
            .decode::<ShardList>()?
            .shards)
    }

    /// One shard's key count and replicas.
    pub async fn shard(&self, id: &str) -> Result<ShardInfo> {
        self.execute(&Operation::Shard { id: id.into() })
            .await?
            .decode()
    }

    /// Changes the cluster's membership and replication factor; returns the new shards
    /// once every key has moved.
    pub async fn view_change(&self, view: &[String], repl_factor: u32) -> Result<Vec<ShardInfo>> {
        let op = Operation::ViewChange {
            view: view.to_vec(),
            repl_factor,
        };
        Ok(self.execute(&op).await?.decode::<ViewChangeBody>()?.shards)
    }

    /// Sends `op` to the nodes in turn until one serves it, and returns that
    /// successful (2xx) response whole. The typed methods are built on this; use it
    /// to see every field of a response.
    ///
    /// A node that is unreachable, times out, answers 5xx or cannot satisfy the
    /// request's causal dependencies yet is skipped for the next one, a write too: it
    /// carries an `Idempotency-Key` (see the crate docs). If they all fail: that error
    /// when there is one node, [`Error::AllNodesFailed`] otherwise.
    pub async fn execute(&self, op: &Operation) -> Result<Response> {
        let key = op.is_write().then(fresh_idempotency_key);
        self.execute_keyed(op, key.as_deref()).await
    }

    /// [`Client::execute`] with the `Idempotency-Key` given (for a write): to retry a
    /// write whose outcome is unknown after [`Client::execute`] failed, even from
    /// another process, within the store's window (10 minutes by default), send it
    /// again with the same key and the same context. `None` sends none.
    pub async fn execute_keyed(&self, op: &Operation, key: Option<&str>) -> Result<Response> {
        let count = self.nodes.len();
        let start = self.preferred.load(Ordering::Relaxed) % count;
        let mut failures = Vec::new();
        // Every attempt carries the same context: with the key, that makes them one
        // write on whichever replica they land.
        let context = self.context();
        for i in (start..count).chain(0..start) {
            match self.attempt(&self.nodes[i], op, key, &context).await {
                Ok(response) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(error) => {
                    if !op.may_retry_after(&error, key.is_some()) {
                        return Err(error);
                    }
                    failures.push(error);
                }
            }
        }
        if failures.len() == 1 {
            Err(failures.remove(0))
        } else {
            Err(Error::AllNodesFailed { failures })
        }
    }

    /// One attempt on one node. Keeps the context of an answer that served the
    /// operation (see the module docs).
    async fn attempt(
        &self,
        node: &str,
        op: &Operation,
        key: Option<&str>,
        context: &Value,
    ) -> Result<Response> {
        let timeout = match op {
            Operation::ViewChange { .. } => self.view_change_timeout,
            Operation::Watch { wait, .. } => self.timeout + *wait,
            _ => self.timeout,
        };
        let url = url_for(node, op)?;
        let request_body = op.body(context.clone())?;
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                Error::Timeout {
                    node: node.to_owned(),
                    timeout,
                }
            } else {
                Error::Transport {
                    node: node.to_owned(),
                    source,
                }
            }
        };
        let mut request = self
            .http
            .request(op.method(), url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(k) = key {
            request = request.header("idempotency-key", k);
        }
        let reply = request.body(request_body).send().await.map_err(transport)?;
        let status = reply.status().as_u16();
        let bytes = reply.bytes().await.map_err(transport)?;

        let body = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(body)) => body,
            parsed if (200..300).contains(&status) => {
                let reason = match parsed {
                    Ok(_) => "the body is not a JSON object".to_owned(),
                    Err(e) => format!("the body is not JSON: {e}"),
                };
                return Err(Error::Decode {
                    node: node.to_owned(),
                    reason,
                });
            }
            _ => {
                return Err(Error::Http {
                    node: node.to_owned(),
                    status,
                    body: if bytes.is_empty() {
                        "(empty body)".to_owned()
                    } else {
                        truncate(&String::from_utf8_lossy(&bytes))
                    },
                })
            }
        };
        let value_number = match body.get("value") {
            Some(Value::Number(_)) => number_text(&bytes),
            _ => None,
        };
        let response = Response {
            node: node.to_owned(),
            status,
            body,
            value_number,
        };
        let served = (200..300).contains(&status)
            || (status == 404 && response.body.get("doesExist") == Some(&Value::Bool(false)));
        if served {
            if let Some(context) = response.causal_context() {
                self.set_context(context.clone());
            }
        }
        if (200..300).contains(&status) {
            Ok(response)
        } else {
            Err(Error::from_response(response))
        }
    }
}

impl TryFrom<&Response> for PutOutcome {
    type Error = Error;

    fn try_from(response: &Response) -> Result<PutOutcome> {
        Ok(PutOutcome {
            replaced: response.decode::<PutBody>()?.replaced,
            address: response.address().map(str::to_owned),
        })
    }
}

/// The exact text of the number in the `value` field of a response body.
fn number_text(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ValueText<'a> {
        #[serde(borrow)]
        value: Option<&'a RawValue>,
    }
    let raw = serde_json::from_slice::<ValueText>(body).ok()?.value?;
    Some(raw.get().to_owned())
}

/// A new `Idempotency-Key`: 128 random bits, in hex.
pub fn fresh_idempotency_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let part = || {
        // `RandomState` is seeded from the OS's randomness.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish()
    };
    format!("cw-{:016x}{:016x}", part(), part())
}

/// The context of a client with no history.
pub fn empty_context() -> Value {
    Value::Object(Map::new())
}

/// Accepts `host:port`, tolerating a leading `http://` and a trailing `/`.
fn normalize_address(address: &str) -> Result<String> {
    let invalid = |reason: &str| Error::InvalidAddress {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let bare = address.trim();
    let bare = bare.strip_prefix("http://").unwrap_or(bare);
    let bare = bare.trim_end_matches('/');
    let (host, port) = bare
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected ip:port"))?;
    if host.is_empty() {
        return Err(invalid("the host is empty"));
    }
    port.parse::<u16>()
        .map_err(|_| invalid("the port is not a number from 0 to 65535"))?;
    let url = Url::parse(&format!("http://{bare}/")).map_err(|e| invalid(&e.to_string()))?;
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err(invalid("expected ip:port"));
    }
    Ok(bare.to_owned())
}

fn url_for(node: &str, op: &Operation) -> Result<Url> {
    let mut url = Url::parse(&format!("http://{node}/")).map_err(|e| Error::InvalidAddress {
        address: node.to_owned(),
        reason: e.to_string(),
    })?;
    url.path_segments_mut()
        .expect("an http URL has a path")
        .clear()
        .extend(op.segments());
    match op {
        Operation::Watch { wait, .. } => {
            url.query_pairs_mut()
                .append_pair("wait", &format!("{}", wait.as_secs_f64()));
        }
        Operation::List {
            prefix,
            limit,
            start_after,
            values,
        } => {
            let mut q = url.query_pairs_mut();
            if !prefix.is_empty() {
                q.append_pair("prefix", prefix);
            }
            q.append_pair("limit", &limit.to_string());
            if let Some(after) = start_after {
                q.append_pair("start-after", after);
            }
            if *values {
                q.append_pair("values", "true");
            }
        }
        _ => {}
    }
    Ok(url)
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_BODY) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_normalized() {
        assert_eq!(
            normalize_address("127.0.0.1:13800").unwrap(),
            "127.0.0.1:13800"
        );
        assert_eq!(
            normalize_address("http://10.0.0.2:80/").unwrap(),
            "10.0.0.2:80"
        );
        assert_eq!(normalize_address("localhost:1").unwrap(), "localhost:1");
        for bad in ["127.0.0.1", ":13800", "a:b", "a:70000", "a:1/x"] {
            assert!(
                matches!(normalize_address(bad), Err(Error::InvalidAddress { .. })),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn builder_splits_comma_lists() {
        let c = Client::builder()
            .nodes(["a:1, b:2", "c:3", ""])
            .build()
            .unwrap();
        assert_eq!(c.nodes(), ["a:1", "b:2", "c:3"]);
        assert!(matches!(
            Client::new(Vec::<String>::new()),
            Err(Error::InvalidAddress { .. })
        ));
    }

    #[test]
    fn keys_are_percent_encoded_into_one_segment() {
        let op = Operation::Get {
            key: "a/b c?d#e".into(),
        };
        assert_eq!(
            url_for("n:1", &op).unwrap().as_str(),
            "http://n:1/kv-store/keys/a%2Fb%20c%3Fd%23e"
        );
        assert_eq!(
            url_for("n:1", &Operation::Shard { id: "2".into() })
                .unwrap()
                .as_str(),
            "http://n:1/kv-store/shards/2"
        );
    }

    #[test]
    fn bodies_follow_the_api() {
        let ctx = json!({"v": [1]});
        let body = |op: &Operation, ctx: &Value| -> Value {
            serde_json::from_slice(&op.body(ctx.clone()).unwrap()).unwrap()
        };
        let put = Operation::Put {
            key: "k".into(),
            value: json!(10),
        };
        assert_eq!(
            body(&put, &ctx),
            json!({"value": 10, "causal-context": {"v": [1]}})
        );
        let vc = Operation::ViewChange {
            view: vec!["a:1".into(), "b:2".into()],
            repl_factor: 2,
        };
        assert_eq!(
            body(&vc, &ctx),
            json!({"view": "a:1,b:2", "repl-factor": 2, "causal-context": {"v": [1]}})
        );
        assert_eq!(
            body(&Operation::KeyCount, &ctx),
            json!({"causal-context": {"v": [1]}})
        );
    }

    #[test]
    fn a_ttl_is_added_to_the_puts_body() {
        let put = Operation::PutWithTtl {
            put: Box::new(Operation::PutNumber {
                key: "k".into(),
                number: "1e2".into(),
            }),
            ttl: Duration::from_millis(1500),
        };
        let sent = String::from_utf8(put.body(json!({})).unwrap()).unwrap();
        assert_eq!(sent, r#"{"value":1e2,"causal-context":{},"ttl":1.5}"#);
        assert_eq!(put.segments(), ["kv-store", "keys", "k"]);
        assert_eq!(put.method(), Method::PUT);
    }

    #[test]
    fn a_number_is_sent_as_written() {
        let put = |number: &str| Operation::PutNumber {
            key: "k".into(),
            number: number.into(),
        };
        let sent = put("1E+2").body(json!({"v": [1]})).unwrap();
        assert_eq!(
            String::from_utf8(sent).unwrap(),
            r#"{"value":1E+2,"causal-context":{"v":[1]}}"#
        );
        for bad in ["ten", "01", "1,\"x\":2", "[1]", "\"1\"", " 1", ""] {
            assert!(
                matches!(put(bad).body(json!({})), Err(Error::InvalidNumber { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_numbers_text_is_read_from_the_body() {
        assert_eq!(
            number_text(br#"{"message":"m","value":1e2,"causal-context":{}}"#).as_deref(),
            Some("1e2")
        );
        assert_eq!(number_text(br#"{"message":"m"}"#), None);
    }
}
