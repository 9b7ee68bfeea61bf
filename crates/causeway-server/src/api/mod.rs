//! The HTTP face of a node: the client API of `API.md` (under `/kv-store` and its
//! alias `/kvs`), operational endpoints (`/health`, `/ready`, `/metrics`) and the
//! internal node-to-node route (`/internal/rpc`, guarded by the cluster secret).
//!
//! Handlers only parse and validate requests; [`crate::node::Node`] decides, and
//! [`error`] turns every outcome into a response. Bodies are read with a size limit;
//! anything malformed gets a JSON error, never a panic.

pub mod batch;
pub mod console;
pub mod error;
pub mod raw;
pub mod service;

use crate::causal::{Context, Signer, Value};
use crate::node::Node;
use crate::transport::http::{RPC_PATH, SECRET_HEADER};
use crate::transport::stream::{STREAM_PATH, UPGRADE_PROTOCOL};
use crate::transport::{Envelope, KeyOp, KeyRequest};
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::Router;
use error::{json_response, key_response, method_name, ApiError};
use serde_json::{json, Value as Json};
use std::sync::Arc;
use std::time::Instant;

/// Request size limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest client request body.
    pub max_body_bytes: usize,
    /// Largest value (bytes of its string or number text).
    pub max_value_bytes: usize,
    /// Largest internal (node-to-node) message.
    pub max_internal_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 2 * 1024 * 1024,
            max_value_bytes: 1024 * 1024,
            max_internal_bytes: crate::transport::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Shared by every request handler (cloning it is one reference count).
pub type App = Arc<AppState>;

pub struct AppState {
    pub node: Arc<Node>,
    pub limits: Limits,
    pub secret: Option<String>,
    /// Signs client contexts when the cluster has a secret.
    pub signer: Option<Signer>,
    /// Answers to writes with an `Idempotency-Key`, for repeats.
    pub answers: crate::idempotency::Answers<Remembered>,
}

impl AppState {
    pub fn new(node: Arc<Node>, limits: Limits, secret: Option<String>) -> AppState {
        let window = node.cfg.idempotency_window;
        AppState {
            node,
            limits,
            signer: secret.as_deref().map(Signer::new),
            secret,
            answers: crate::idempotency::Answers::new(window),
        }
    }
}

/// What a node remembers of a request with an `Idempotency-Key`: its answer.
#[derive(Clone)]
pub enum Remembered {
    Key(crate::transport::KeyResponse),
    Batch(Arc<Vec<Option<error::BatchResult>>>, Context),
}

/// The request's `Idempotency-Key`: `Ok(None)` without one, `Err` when malformed.
pub(crate) fn idempotency_key(
    headers: &HeaderMap,
    method: &'static str,
) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if crate::idempotency::valid_key(k) => Ok(Some(k.to_string())),
            _ => Err(ApiError::BadRequest {
                method,
                error: "Invalid Idempotency-Key".into(),
            }),
        },
    }
}

/// Builds the router for one node.
pub fn router(app: App) -> Router {
    // Both prefixes are routed directly (not nested) to keep the hot path free of
    // prefix stripping.
    let mut r = Router::new();
    for prefix in ["/kv-store", "/kvs"] {
        r = r
            .route(&format!("{prefix}/keys/{{key}}"), any(key_op))
            .route(&format!("{prefix}/key-count"), get(key_count))
            .route(&format!("{prefix}/shards"), get(shards))
            .route(&format!("{prefix}/shards/{{id}}"), get(shard))
            .route(&format!("{prefix}/view-change"), put(view_change))
            .route(&format!("{prefix}/batch"), post(batch::batch))
            .route(&format!("{prefix}/keys"), get(list_keys));
    }
    r.route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        .route("/ui", get(console::index))
        .route("/ui/", get(console::index))
        .route("/ui/console.js", get(console::script))
        .route("/ui/console.css", get(console::style))
        .route("/ui/lookup", post(console::lookup))
        .route(RPC_PATH, post(internal_rpc))
        .route(STREAM_PATH, get(internal_stream))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

async fn no_route(State(app): State<App>, method: Method, body: Body) -> Response {
    let ctx = request_context(&app, body, method_name(&method)).await;
    ApiError::NoRoute.with_context(&ctx, app.signer.as_ref())
}

async fn wrong_method(State(app): State<App>, method: Method, body: Body) -> Response {
    let ctx = request_context(&app, body, method_name(&method)).await;
    ApiError::MethodNotAllowed {
        method: method.as_str().to_string(),
    }
    .with_context(&ctx, app.signer.as_ref())
}

/// The causal context of a request whose body is otherwise of no interest (an error
/// answer echoes it); empty when the body cannot be read.
async fn request_context(app: &App, body: Body, method: &'static str) -> Context {
    match read_json(body, method, app.limits.max_body_bytes).await {
        Ok(b) => Context::from_signed_json(b.get("causal-context"), app.signer.as_ref()),
        Err(_) => Context::default(),
    }
}

/// Counts and times every request, by route template and status.
async fn observe(State(app): State<App>, req: Request, next: Next) -> Response {
    let route = route_label(req.extensions().get::<MatchedPath>().map(|p| p.as_str()));
    let method = method_name(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    record(&app, route, method, resp.status().as_u16(), start);
    resp
}

/// Counts one answered request and its time since `start`.
pub(crate) fn record(
    app: &App,
    route: &'static str,
    method: &'static str,
    status: u16,
    start: Instant,
) {
    let m = &app.node.metrics;
    m.count(route, method, status, start.elapsed().as_secs_f64());
    m.answers.inc();
    match status {
        400..=499 => drop(m.client_errors.inc()),
        500..=599 => drop(m.server_errors.inc()),
        _ => {}
    }
}

fn route_label(path: Option<&str>) -> &'static str {
    match path {
        Some(p) if p.ends_with("/keys/{key}") => "keys",
        Some(p) if p.ends_with("/key-count") => "key-count",
        Some(p) if p.ends_with("/shards") => "shards",
        Some(p) if p.ends_with("/shards/{id}") => "shard",
        Some(p) if p.ends_with("/view-change") => "view-change",
        Some(p) if p.ends_with("/batch") => "batch",
        Some(p) if p.ends_with("/keys") => "list",
        Some("/health") => "health",
        Some("/ready") => "ready",
        Some("/metrics") => "metrics",
        Some("/cluster") => "cluster",
        Some(p) if p.starts_with("/ui") => "ui",
        Some(RPC_PATH) | Some(STREAM_PATH) => "internal",
        _ => "other",
    }
}

/// Reads a JSON object body. An empty body reads as `{}`.
async fn read_json(
    body: Body,
    method: &'static str,
    limit: usize,
) -> Result<serde_json::Map<String, Json>, ApiError> {
    read_json_bytes(body, method, limit).await.map(|(_, m)| m)
}

/// [`read_json`], also handing back the body's bytes (where [`raw`] finds the exact
/// text of a number value).
async fn read_json_bytes(
    body: Body,
    method: &'static str,
    limit: usize,
) -> Result<(Bytes, serde_json::Map<String, Json>), ApiError> {
    let bytes = read_bytes(body, method, "Request body", limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok((bytes, serde_json::Map::new()));
    }
    match serde_json::from_slice::<Json>(&bytes) {
        Ok(Json::Object(m)) => Ok((bytes, m)),
        _ => Err(ApiError::BadBody { method }),
    }
}

/// Most bytes read (and discarded) from an oversized body before answering 413, so
/// that ordinary clients still read the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

async fn read_bytes(
    body: Body,
    method: &'static str,
    what: &'static str,
    limit: usize,
) -> Result<Bytes, ApiError> {
    use axum::body::HttpBody as _;
    use http_body_util::BodyExt;
    let mut body = body;
    // A body that arrives in one frame (a small one, usually) is kept as it is; a longer
    // one is gathered into one buffer sized from its length, when the request gives it.
    let mut first: Option<Bytes> = None;
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ApiError::BadBody { method });
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                if first.is_none() && buf.is_empty() {
                    first = Some(data);
                    continue;
                }
                if let Some(f) = first.take() {
                    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(0);
                    buf.reserve(
                        f.len()
                            .saturating_add(data.len())
                            .saturating_add(expected)
                            .min(limit),
                    );
                    buf.extend_from_slice(&f);
                }
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > limit {
        return Err(ApiError::TooLarge {
            method,
            what,
            limit,
        });
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buf)))
}

/// The single-key route, the hot path: the request's parts are read in place (no copy
/// of its headers, and its query is parsed only when it has one).
async fn key_op(
    State(app): State<App>,
    key: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    key_op_parts(&app, key.ok().map(|Path(k)| k), req).await
}

/// [`key_op`] with its key already taken from the path (`None`: not UTF-8), as
/// [`service`] calls it.
pub(crate) async fn key_op_parts(app: &App, key: Option<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method;
    let headers = &parts.headers;
    let query = parts
        .uri
        .query()
        .map(|_| axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri));
    let name = method_name(&method);
    let (bytes, mut body) = match read_json_bytes(body, name, app.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let ctx = Context::from_signed_json(body.get("causal-context"), app.signer.as_ref());
    // Every refusal from here on carries the request's context.
    let refuse = |e: ApiError| e.with_context(&ctx, app.signer.as_ref());
    if !matches!(method, Method::GET | Method::PUT | Method::DELETE) {
        return refuse(ApiError::MethodNotAllowed {
            method: method.to_string(),
        });
    }
    let Some(key) = key else {
        return refuse(ApiError::BadRequest {
            method: name,
            error: "Key is not valid UTF-8".into(),
        });
    };
    let wait = match query {
        Some(Ok(axum::extract::Query(params))) => params
            .iter()
            .find(|(k, _)| k == "wait")
            .map(|(_, v)| parse_wait(v)),
        Some(Err(_)) | None => None,
    };
    let wait = match (wait, &method) {
        (None, _) => None,
        (Some(Some(ms)), &Method::GET) => Some(ms),
        (Some(_), _) => {
            return refuse(ApiError::BadRequest {
                method: name,
                error: "Invalid wait".into(),
            })
        }
    };
    let op = match method {
        Method::GET => match wait {
            Some(wait_ms) => KeyOp::Watch { wait_ms },
            None => KeyOp::Get,
        },
        Method::DELETE => KeyOp::Delete,
        _ => {
            let value = match body.remove("value") {
                None | Some(Json::Null) => return refuse(ApiError::ValueMissing),
                Some(Json::String(s)) => Value::Str(s.into_boxed_str()),
                // The parsed number has lost its text: read that from the bytes.
                Some(Json::Number(_)) => match raw::value_number(&bytes) {
                    Some(v) => v,
                    None => return refuse(ApiError::ValueType),
                },
                Some(_) => return refuse(ApiError::ValueType),
            };
            if value.len() > app.limits.max_value_bytes {
                return refuse(ApiError::TooLarge {
                    method: name,
                    what: "Value",
                    limit: app.limits.max_value_bytes,
                });
            }
            match put_op(value, body.get("ttl")) {
                Some(op) => op,
                None => {
                    return refuse(ApiError::BadRequest {
                        method: name,
                        error: "Invalid ttl".into(),
                    })
                }
            }
        }
    };
    let idem = match &op {
        KeyOp::Put(_) | KeyOp::PutExpiring { .. } | KeyOp::Delete => {
            match idempotency_key(headers, name) {
                Ok(k) => k,
                Err(e) => return refuse(e),
            }
        }
        _ => None,
    };
    let Some(idem) = idem else {
        let resp = app.node.handle_key(KeyRequest { key, op, ctx }).await;
        return key_response(name, resp, app.signer.as_ref());
    };
    // The same request whatever the prefix (`/kvs` is an alias).
    let what = format!("{name} {key}");
    let now = Instant::now();
    match app.answers.seen(&idem, &what, now) {
        crate::idempotency::Seen::Repeat(Remembered::Key(mut first)) => {
            // The first answer; its context also covers what the request brought.
            first.ctx.join(&ctx);
            first.served_by = None;
            return key_response(name, first, app.signer.as_ref());
        }
        crate::idempotency::Seen::Repeat(Remembered::Batch(..))
        | crate::idempotency::Seen::Reused => return refuse(ApiError::KeyReused { method: name }),
        crate::idempotency::Seen::New => {}
    }
    let id = crate::idempotency::write_id(
        &idem,
        &what,
        0,
        ctx.ts,
        crate::node::committer::hlc_now(),
        app.answers.window(),
    );
    let resp = app
        .node
        .handle_key_as(KeyRequest { key, op, ctx }, id)
        .await;
    if resp.result.is_ok() {
        app.answers
            .remember(&idem, &what, Remembered::Key(resp.clone()), now);
    }
    key_response(name, resp, app.signer.as_ref())
}

/// Longest `ttl`, in seconds: ten years.
pub const MAX_TTL_SECS: f64 = 10.0 * 365.0 * 24.0 * 3600.0;

/// A PUT's `ttl`: a positive JSON number of seconds up to [`MAX_TTL_SECS`], as
/// milliseconds (at least 1); `None` for anything else.
pub fn parse_ttl(v: &Json) -> Option<u64> {
    let secs = v.as_f64()?;
    (secs > 0.0 && secs <= MAX_TTL_SECS).then(|| ((secs * 1000.0).round() as u64).max(1))
}

/// The operation of a PUT of `value` with the body's `ttl` (if any); `None` when the
/// ttl is invalid (see [`parse_ttl`]).
pub fn put_op(value: Value, ttl: Option<&Json>) -> Option<KeyOp> {
    Some(match ttl {
        None => KeyOp::Put(value),
        Some(t) => KeyOp::PutExpiring {
            value,
            ttl_ms: parse_ttl(t)?,
        },
    })
}

/// Longest watch (`?wait=`), in seconds.
pub const MAX_WAIT_SECS: f64 = 60.0;

/// A watch's `wait` parameter: seconds from 0 to [`MAX_WAIT_SECS`] (fractions
/// allowed), as milliseconds; `None` for anything else.
pub fn parse_wait(v: &str) -> Option<u64> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && (0.0..=MAX_WAIT_SECS).contains(&secs))
        .then(|| (secs * 1000.0).round() as u64)
}

/// `GET /kv-store/keys?prefix&limit&start-after&values`: a page of keys across every
/// shard (see [`crate::listing`]).
async fn list_keys(
    State(app): State<App>,
    params: Result<
        axum::extract::Query<std::collections::BTreeMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
    body: Body,
) -> Response {
    let body = match read_json(body, "LIST", app.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let ctx = Context::from_signed_json(body.get("causal-context"), app.signer.as_ref());
    let refuse = |error: String| {
        ApiError::BadRequest {
            method: "LIST",
            error,
        }
        .with_context(&ctx, app.signer.as_ref())
    };
    let Ok(axum::extract::Query(params)) = params else {
        return refuse("the query string is malformed".into());
    };
    let q = match crate::listing::Query::parse(&params) {
        Ok(q) => q,
        Err(e) => return refuse(e),
    };
    let values = q.values;
    match app.node.list(q, ctx.clone()).await {
        Ok((items, next, out)) if values => {
            error::list_items_response(&items, next, out.to_signed_json(app.signer.as_ref()))
        }
        Ok((items, next, out)) => {
            let listed: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
            json_response(
                StatusCode::OK,
                json!({"message": "Keys listed successfully", "keys": listed, "next": next}),
                out.to_signed_json(app.signer.as_ref()),
                None,
            )
        }
        Err(e) => error::list_error(&e, &ctx, app.signer.as_ref()),
    }
}

/// Echoes the client's context on informational answers.
async fn request_ctx(body: Body, limit: usize) -> Json {
    match read_json(body, "GET", limit).await {
        Ok(b) => b
            .get("causal-context")
            .filter(|c| c.is_object())
            .cloned()
            .unwrap_or_else(|| json!({})),
        Err(_) => json!({}),
    }
}

async fn key_count(State(app): State<App>, body: Body) -> Response {
    let ctx = request_ctx(body, app.limits.max_body_bytes).await;
    let (shard, count) = app.node.key_count();
    let fields = json!({
        "message": "Key count retrieved successfully",
        "key-count": count,
        "shard-id": shard.map(|s| s.to_string()),
    });
    json_response(StatusCode::OK, fields, ctx, None)
}

async fn shards(State(app): State<App>, body: Body) -> Response {
    let ctx = request_ctx(body, app.limits.max_body_bytes).await;
    let fields = json!({
        "message": "Shard membership retrieved successfully",
        "shards": app.node.view().shard_ids(),
    });
    json_response(StatusCode::OK, fields, ctx, None)
}

async fn shard(
    State(app): State<App>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Body,
) -> Response {
    // An id that is not even valid UTF-8 names no shard.
    let id = id.map(|Path(id)| id).unwrap_or_default();
    let ctx = request_ctx(body, app.limits.max_body_bytes).await;
    let refuse = |e: ApiError| {
        let c = Context::from_signed_json(Some(&ctx), app.signer.as_ref());
        e.with_context(&c, app.signer.as_ref())
    };
    let view = app.node.view();
    let Some(shard) = id
        .parse::<u32>()
        .ok()
        .filter(|s| *s >= 1 && (*s as usize) <= view.shard_count())
    else {
        return refuse(ApiError::ShardNotFound);
    };
    let Some(count) = app.node.shard_key_count(shard).await else {
        return refuse(ApiError::Unavailable { method: "GET" });
    };
    let fields = json!({
        "message": "Shard information retrieved successfully",
        "shard-id": shard.to_string(),
        "key-count": count,
        "replicas": view.replicas(shard),
    });
    json_response(StatusCode::OK, fields, ctx, None)
}

async fn view_change(State(app): State<App>, body: Body) -> Response {
    let body = match read_json(body, "PUT", app.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let ctx = Context::from_signed_json(body.get("causal-context"), app.signer.as_ref());
    let bad = |error: &str| {
        ApiError::BadRequest {
            method: "PUT",
            error: error.to_string(),
        }
        .with_context(&ctx, app.signer.as_ref())
    };
    let nodes: Vec<String> = match body.get("view") {
        Some(Json::String(s)) => s
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        Some(Json::Array(a)) => match a
            .iter()
            .map(|n| n.as_str().map(|s| s.trim().to_string()))
            .collect()
        {
            Some(v) => v,
            None => return bad("view must be a comma-separated string or a list of strings"),
        },
        Some(_) => return bad("view must be a comma-separated string or a list of strings"),
        None => return bad("view is missing"),
    };
    let repl = match body.get("repl-factor") {
        Some(Json::Number(n)) => n.as_u64(),
        Some(Json::String(s)) => s.trim().parse().ok(),
        None => Some(1),
        _ => None,
    };
    let Some(repl) = repl.and_then(|r| usize::try_from(r).ok()) else {
        return bad("repl-factor must be a positive integer");
    };
    match app.node.view_change(nodes, repl).await {
        Ok(shards) => {
            let incomplete: Vec<String> = shards
                .iter()
                .filter(|s| !s.complete)
                .map(|s| s.id.to_string())
                .collect();
            let shards: Vec<Json> = shards
                .into_iter()
                .map(|s| json!({"shard-id": s.id.to_string(), "key-count": s.key_count, "replicas": s.replicas}))
                .collect();
            // The answer covers the request's context; a context with no dependencies
            // moves to the new epoch.
            let mut ctx = ctx.clone();
            if ctx.deps.is_empty() {
                ctx.epoch = ctx.epoch.max(app.node.view().epoch);
            }
            // Only a finished change is "successful"; one whose hand-over still runs
            // (an old owner cut off, say) says so, and which shards wait.
            let (status, fields) = if incomplete.is_empty() {
                (
                    StatusCode::OK,
                    json!({"message": "View change successful", "shards": shards}),
                )
            } else {
                (
                    StatusCode::ACCEPTED,
                    json!({
                        "message": "View change in progress",
                        "incomplete-shards": incomplete,
                        "shards": shards,
                    }),
                )
            };
            json_response(
                status,
                fields,
                ctx.to_signed_json(app.signer.as_ref()),
                None,
            )
        }
        Err(crate::view_change::ViewChangeError::Invalid(e)) => bad(&e),
        Err(e) => ApiError::Conflict(e.to_string()).with_context(&ctx, app.signer.as_ref()),
    }
}

async fn health() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}), json!({}), None)
}

async fn ready(State(app): State<App>) -> Response {
    if let Some(why) = app.node.failure() {
        return ApiError::NotReady(format!(
            "the committer thread died ({why}); this node cannot commit writes and is stopping"
        ))
        .into_response();
    }
    let view = app.node.view();
    let (shard, keys) = app.node.key_count();
    json_response(
        StatusCode::OK,
        json!({
            "status": "ready",
            "epoch": view.epoch,
            "view": view.nodes,
            "repl-factor": view.repl_factor,
            "shard-id": shard.map(|s| s.to_string()),
            "keys": keys,
            "durable": app.node.is_durable(),
        }),
        json!({}),
        None,
    )
}

/// The cluster status document (see `crate::status`), gathered from every node.
async fn cluster(State(app): State<App>, body: Body) -> Response {
    let ctx = request_ctx(body, app.limits.max_body_bytes).await;
    let doc = app.node.cluster_status().await;
    let mut resp = json_response(StatusCode::OK, doc, ctx, None);
    // The console falls back to other nodes when its own stops answering.
    resp.headers_mut().insert(
        axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        axum::http::HeaderValue::from_static("*"),
    );
    resp
}

async fn metrics(State(app): State<App>) -> Response {
    let m = &app.node.metrics;
    m.keys.set(app.node.key_count().1 as i64);
    m.view_epoch.set(app.node.view().epoch as i64);
    m.storage_bytes.set(app.node.disk_bytes() as i64);
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        m.encode(),
    )
        .into_response()
}

/// Whether an internal request carries the cluster secret (when one is configured).
fn internal_allowed(app: &App, headers: &HeaderMap) -> bool {
    app.secret.as_ref().is_none_or(|secret| {
        let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes());
        given.is_some_and(|g| crate::causal::context::constant_time_eq(g, secret.as_bytes()))
    })
}

/// Upgrades to a multiplexed internal stream (see `transport::stream`).
async fn internal_stream(State(app): State<App>, mut req: Request) -> Response {
    if !internal_allowed(&app, req.headers()) {
        return ApiError::Unauthorized.into_response();
    }
    let wants = req
        .headers()
        .get(axum::http::header::UPGRADE)
        .is_some_and(|v| {
            v.as_bytes()
                .eq_ignore_ascii_case(UPGRADE_PROTOCOL.as_bytes())
        });
    if !wants {
        return ApiError::BadRequest {
            method: "GET",
            error: format!("expected Upgrade: {UPGRADE_PROTOCOL}"),
        }
        .into_response();
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let node = app.node.clone();
    let max_frame = app.limits.max_internal_bytes;
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => {
                crate::transport::stream::serve(hyper_util::rt::TokioIo::new(io), node, max_frame)
                    .await
            }
            Err(e) => tracing::debug!(error = %e, "internal stream upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(axum::http::header::CONNECTION, "upgrade")
        .header(axum::http::header::UPGRADE, UPGRADE_PROTOCOL)
        .body(Body::empty())
        .expect("static response")
}

async fn internal_rpc(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    if !internal_allowed(&app, &headers) {
        return ApiError::Unauthorized.into_response();
    }
    let bytes = match read_bytes(
        body,
        "POST",
        "Internal message",
        app.limits.max_internal_bytes,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Ok(env) = postcard::from_bytes::<Envelope>(&bytes) else {
        return ApiError::BadBody { method: "POST" }.into_response();
    };
    let reply = app.node.handle_rpc(env).await;
    let bytes = postcard::to_allocvec(&reply).expect("replies always encode");
    ([("content-type", "application/octet-stream")], bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::{parse_ttl, parse_wait, read_bytes, ApiError};
    use axum::body::{Body, Bytes};
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body delivered in the given frames, the way a client's chunks arrive.
    struct Frames(VecDeque<Bytes>);

    impl axum::body::HttpBody for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }

    fn body(frames: &[&'static str]) -> Body {
        Body::new(Frames(
            frames
                .iter()
                .map(|f| Bytes::from_static(f.as_bytes()))
                .collect(),
        ))
    }

    #[tokio::test]
    async fn a_body_reads_whole_in_one_frame_or_many_and_over_its_limit_is_refused() {
        let one = read_bytes(body(&[r#"{"value":"v"}"#]), "PUT", "Request body", 64).await;
        assert_eq!(one.unwrap(), Bytes::from_static(br#"{"value":"v"}"#));
        let many = read_bytes(
            body(&[r#"{"val"#, "", r#"ue":"#, r#""v"}"#]),
            "PUT",
            "Request body",
            64,
        );
        assert_eq!(many.await.unwrap(), Bytes::from_static(br#"{"value":"v"}"#));
        assert!(read_bytes(body(&[]), "PUT", "Request body", 64)
            .await
            .unwrap()
            .is_empty());
        for frames in [
            &["0123456789"][..],
            &["01234", "56789"],
            &["0123", "", "456789"],
        ] {
            assert_eq!(
                read_bytes(body(frames), "PUT", "Request body", 10)
                    .await
                    .unwrap(),
                Bytes::from_static(b"0123456789")
            );
        }
        for frames in [
            &["0123456789x"][..],
            &["01234", "56789", "x"],
            &["0123456789", "x"],
        ] {
            let over = read_bytes(body(frames), "PUT", "Request body", 10).await;
            assert!(
                matches!(over, Err(ApiError::TooLarge { limit: 10, .. })),
                "{frames:?}"
            );
        }
    }

    #[test]
    fn a_ttl_is_a_positive_number_of_seconds_up_to_ten_years() {
        use serde_json::json;
        assert_eq!(parse_ttl(&json!(30)), Some(30_000));
        assert_eq!(parse_ttl(&json!(0.25)), Some(250));
        assert_eq!(parse_ttl(&json!(0.0001)), Some(1));
        assert_eq!(parse_ttl(&json!(315_360_000)), Some(315_360_000_000));
        for bad in [
            json!(0),
            json!(-1),
            json!(315_360_001),
            json!("10"),
            json!(null),
            json!([1]),
            json!({}),
        ] {
            assert_eq!(parse_ttl(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_wait_is_zero_to_sixty_seconds() {
        assert_eq!(parse_wait("0"), Some(0));
        assert_eq!(parse_wait("1.5"), Some(1500));
        assert_eq!(parse_wait("60"), Some(60_000));
        for bad in ["60.001", "-1", "-0.5", "", "soon", "NaN", "inf", "1e400"] {
            assert_eq!(parse_wait(bad), None, "{bad:?}");
        }
    }
}
