//! `POST /kv-store/batch` (`API-EXTENSIONS.md`): many key operations in one request.
//!
//! Invariants:
//! - every op is validated before any is applied: one malformed op fails the whole
//!   batch with 400 (naming the op's index), and nothing changes;
//! - ops on one key run in the order given, each with the context the previous one
//!   left; ops on different keys run in parallel (across shards);
//! - the answer's context joins every op's context: it covers the request's and
//!   everything any op wrote or read;
//! - the whole batch answers within [`BATCH_BUDGET`]: an op not done by then gets 503;
//! - a number value is stored, and handed back, with exactly the text it came with.

use super::error::{batch_response, batch_result, ApiError, BatchResult};
use super::{raw, read_json_bytes, App, Remembered};
use crate::causal::{Context, Value};
use crate::idempotency::Seen;
use crate::transport::{KeyOp, KeyRequest};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most ops in one batch (413 above).
pub const MAX_BATCH_OPS: usize = 1000;
/// The whole batch answers within this (the client waits 5 s).
pub const BATCH_BUDGET: Duration = Duration::from_millis(4500);
/// Keys worked on at once.
const PARALLEL_KEYS: usize = 64;

/// One validated op: its method name (for messages), key and operation.
#[derive(Clone, Debug)]
pub struct Op {
    pub method: &'static str,
    pub key: String,
    pub op: KeyOp,
}

/// Validates a batch body (pure: see the module invariants): `body` parsed, and its
/// `bytes`, where a number value's exact text is read.
pub fn parse(
    bytes: &[u8],
    body: &Map<String, Json>,
    max_ops: usize,
    max_key_chars: usize,
    max_value_bytes: usize,
) -> Result<Vec<Op>, ApiError> {
    let bad = |error: String| ApiError::BadRequest {
        method: "BATCH",
        error,
    };
    let Some(ops) = body.get("ops").and_then(Json::as_array) else {
        return Err(bad("ops is missing or not a list".into()));
    };
    if ops.is_empty() {
        return Err(bad("ops is empty".into()));
    }
    if ops.len() > max_ops {
        return Err(ApiError::TooLarge {
            method: "BATCH",
            what: "Batch",
            limit: max_ops,
        });
    }
    let mut out = Vec::with_capacity(ops.len());
    // Each op's raw text, read the first time an op's value is a number.
    let mut raw_ops = None;
    for (i, op) in ops.iter().enumerate() {
        let Some(op) = op.as_object() else {
            return Err(bad(format!("op {i} is not an object")));
        };
        let Some(key) = op.get("key").and_then(Json::as_str) else {
            return Err(bad(format!("op {i}: key is missing or not a string")));
        };
        if key.chars().count() > max_key_chars {
            return Err(bad(format!("op {i}: Key is too long")));
        }
        let (method, kind) = match op.get("op").and_then(Json::as_str) {
            Some("get") => ("GET", KeyOp::Get),
            Some("delete") => ("DELETE", KeyOp::Delete),
            Some("put") => {
                let value = match op.get("value") {
                    None | Some(Json::Null) => {
                        return Err(bad(format!("op {i}: Value is missing")))
                    }
                    Some(Json::String(s)) => Some(Value::Str(s.as_str().into())),
                    // The parsed number has lost its text: read that from the bytes.
                    Some(Json::Number(_)) => raw_ops
                        .get_or_insert_with(|| raw::batch_ops(bytes).unwrap_or_default())
                        .get(i)
                        .and_then(|op| raw::op_number(op)),
                    Some(_) => None,
                }
                .ok_or_else(|| bad(format!("op {i}: Value must be a string or a number")))?;
                if value.len() > max_value_bytes {
                    return Err(bad(format!(
                        "op {i}: Value is too large (limit {max_value_bytes} bytes)"
                    )));
                }
                match super::put_op(value, op.get("ttl")) {
                    Some(put) => ("PUT", put),
                    None => return Err(bad(format!("op {i}: Invalid ttl"))),
                }
            }
            Some(other) => return Err(bad(format!("op {i}: unknown op {other:?}"))),
            None => return Err(bad(format!("op {i}: op is missing"))),
        };
        out.push(Op {
            method,
            key: key.to_string(),
            op: kind,
        });
    }
    Ok(out)
}

/// Groups ops by key, each group in the given order, remembering every op's index.
pub fn by_key(ops: Vec<Op>) -> BTreeMap<String, Vec<(usize, Op)>> {
    let mut groups: BTreeMap<String, Vec<(usize, Op)>> = BTreeMap::new();
    for (i, op) in ops.into_iter().enumerate() {
        groups.entry(op.key.clone()).or_default().push((i, op));
    }
    groups
}

pub async fn batch(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let (bytes, body) = match read_json_bytes(body, "BATCH", app.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let ctx = Context::from_signed_json(body.get("causal-context"), app.signer.as_ref());
    let idem = match super::idempotency_key(&headers, "BATCH") {
        Ok(k) => k,
        Err(e) => return e.with_context(&ctx, app.signer.as_ref()),
    };
    let now = std::time::Instant::now();
    if let Some(k) = &idem {
        match app.answers.seen(k, BATCH_REQUEST, now) {
            Seen::Repeat(Remembered::Batch(results, first)) => {
                let mut out = first;
                out.join(&ctx);
                return batch_response((*results).clone(), out.to_signed_json(app.signer.as_ref()));
            }
            Seen::Repeat(Remembered::Key(_)) | Seen::Reused => {
                return ApiError::KeyReused { method: "BATCH" }
                    .with_context(&ctx, app.signer.as_ref())
            }
            Seen::New => {}
        }
    }
    let ops = match parse(
        &bytes,
        &body,
        MAX_BATCH_OPS,
        app.node.cfg.max_key_chars,
        app.limits.max_value_bytes,
    ) {
        Ok(ops) => ops,
        Err(e) => return e.with_context(&ctx, app.signer.as_ref()),
    };
    let n = ops.len();
    let deadline = tokio::time::Instant::now() + BATCH_BUDGET;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL_KEYS));
    let mut groups = tokio::task::JoinSet::new();
    // With a key, every op's identity is fixed by the key, the op and the time of the
    // context it runs with (see `crate::idempotency`): a repeat is the same writes. That
    // context is the request's, moved on by the ops before it on the same key, so a put
    // is ordered after whatever a get before it in the batch read.
    let hlc = crate::node::committer::hlc_now();
    let window = app.answers.window();
    for (_, group) in by_key(ops) {
        let (node, slots, start) = (app.node.clone(), slots.clone(), ctx.clone());
        let idem = idem.clone();
        groups.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let mut ctx = start;
            let mut results = Vec::with_capacity(group.len());
            for (i, op) in group {
                let id = idem.as_deref().and_then(|k| {
                    let what = format!("BATCH {i} {} {}", op.method, op.key);
                    crate::idempotency::write_id(k, &what, i as u64, ctx.ts, hlc, window)
                });
                let req = KeyRequest {
                    key: op.key,
                    op: op.op,
                    ctx: ctx.clone(),
                };
                let key = req.key.clone();
                let resp =
                    match tokio::time::timeout_at(deadline, node.handle_key_as(req, id)).await {
                        Ok(resp) => resp,
                        Err(_) => crate::transport::KeyResponse {
                            result: Err(crate::transport::KeyError::Unavailable),
                            ctx: ctx.clone(),
                            served_by: None,
                        },
                    };
                let (result, next) = batch_result(op.method, key, resp);
                results.push((i, result));
                ctx = next;
            }
            (results, ctx)
        });
    }
    let mut results: Vec<Option<BatchResult>> = (0..n).map(|_| None).collect();
    let mut out = ctx;
    while let Some(done) = groups.join_next().await {
        let Ok((rs, group_ctx)) = done else { continue };
        for (i, r) in rs {
            results[i] = Some(r);
        }
        out.join(&group_ctx);
    }
    if let Some(k) = &idem {
        // Remembered once every op was served (a failed op may be retried).
        if results
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r.status() < 500))
        {
            let first = Remembered::Batch(std::sync::Arc::new(results.clone()), out.clone());
            app.answers.remember(k, BATCH_REQUEST, first, now);
        }
    }
    batch_response(results, out.to_signed_json(app.signer.as_ref()))
}

/// What a batch's `Idempotency-Key` names (one path, one method).
const BATCH_REQUEST: &str = "POST /kv-store/batch";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses the body `{"ops": ops}` as the handler does.
    fn parse_ops(ops: Json, max_ops: usize) -> Result<Vec<Op>, ApiError> {
        parse_text(&json!({ "ops": ops }).to_string(), max_ops)
    }

    fn parse_text(text: &str, max_ops: usize) -> Result<Vec<Op>, ApiError> {
        let body: Map<String, Json> = serde_json::from_str(text).unwrap();
        parse(text.as_bytes(), &body, max_ops, 50, 100)
    }

    #[test]
    fn valid_ops_parse_in_order() {
        let ops = parse_ops(
            json!([
                {"op": "put", "key": "a", "value": "1"},
                {"op": "get", "key": "b"},
                {"op": "delete", "key": "a"},
                {"op": "put", "key": "n", "value": 10}
            ]),
            10,
        )
        .unwrap();
        let kinds: Vec<_> = ops.iter().map(|o| (o.method, o.key.as_str())).collect();
        assert_eq!(
            kinds,
            [("PUT", "a"), ("GET", "b"), ("DELETE", "a"), ("PUT", "n")]
        );
        let groups = by_key(ops);
        let a: Vec<usize> = groups["a"].iter().map(|(i, _)| *i).collect();
        assert_eq!(a, [0, 2], "same-key ops keep their order");
    }

    #[test]
    fn one_bad_op_fails_the_batch_and_names_its_index() {
        let long = "k".repeat(51);
        for (ops, expected) in [
            (
                json!([{"op": "get", "key": "a"}, {"op": "nope", "key": "b"}]),
                "op 1: unknown op",
            ),
            (json!([{"op": "put", "key": "a"}]), "op 0: Value is missing"),
            (
                json!([{"op": "put", "key": "a", "value": "v", "ttl": 0}]),
                "op 0: Invalid ttl",
            ),
            (
                json!([{"op": "put", "key": "a", "value": [1]}]),
                "op 0: Value must be",
            ),
            (json!([{"op": "get"}]), "op 0: key is missing"),
            (json!([{"op": "get", "key": 5}]), "op 0: key is missing"),
            (json!([{"op": "get", "key": long}]), "op 0: Key is too long"),
            (
                json!([{"op": "put", "key": "a", "value": "x".repeat(101)}]),
                "op 0: Value is too large",
            ),
            (json!([{"key": "a"}]), "op 0: op is missing"),
            (json!([]), "ops is empty"),
            (json!("x"), "ops is missing"),
        ] {
            let err = parse_ops(ops, 10).unwrap_err();
            assert!(err.to_string().starts_with(expected), "{err} / {expected}");
        }
    }

    #[test]
    fn too_many_ops_is_413() {
        let ops: Vec<Json> = (0..11)
            .map(|i| json!({"op": "get", "key": format!("k{i}")}))
            .collect();
        let err = parse_ops(Json::Array(ops), 10).unwrap_err();
        assert!(matches!(err, ApiError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn number_values_keep_their_exact_text() {
        let text = r#"{"ops": [
            {"op": "put", "key": "s", "value": "1e2"},
            {"op": "get", "key": "g"},
            {"op": "put", "key": "a", "value": 1e2},
            {"op": "put", "key": "b", "value" : 10.50 },
            {"op": "put", "key": "c", "value": -0},
            {"op": "put", "key": "d", "value": 123456789012345678901234567890}
        ], "causal-context": {}}"#;
        let values: Vec<Option<Value>> = parse_text(text, 10)
            .unwrap()
            .into_iter()
            .map(|o| match o.op {
                KeyOp::Put(v) => Some(v),
                _ => None,
            })
            .collect();
        let num = |t: &str| Some(Value::Num(t.into()));
        assert_eq!(
            values,
            [
                Some(Value::Str("1e2".into())),
                None,
                num("1e2"),
                num("10.50"),
                num("-0"),
                num("123456789012345678901234567890"),
            ]
        );
        // A number's size is its text's.
        let long = format!(
            r#"{{"ops": [{{"op": "put", "key": "a", "value": 1{}}}]}}"#,
            "0".repeat(100)
        );
        let err = parse_text(&long, 10).unwrap_err();
        assert!(
            err.to_string().starts_with("op 0: Value is too large"),
            "{err}"
        );
    }
}
