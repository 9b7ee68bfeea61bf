//! The operator's web console at `/ui`: static assets embedded in the binary (no CDN,
//! no build step), and the one route the page needs beyond the API: a key lookup by
//! POST, since a browser cannot send a GET with a body.
//!
//! The page itself reads `GET /cluster` (served with `Access-Control-Allow-Origin: *`
//! so it can fall back to another node when its own stops answering).

use super::App;
use crate::causal::Context;
use crate::transport::{KeyOp, KeyRequest};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

pub async fn index() -> Response {
    ([("content-type", "text/html; charset=utf-8")], INDEX).into_response()
}

pub async fn script() -> Response {
    ([("content-type", "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

pub async fn style() -> Response {
    ([("content-type", "text/css; charset=utf-8")], STYLE).into_response()
}

/// `POST /ui/lookup` `{"key": "k", "causal-context": {...}}`: exactly the answer of
/// `GET /kv-store/keys/k` with that context.
pub async fn lookup(State(app): State<App>, body: Body) -> Response {
    let body = match super::read_json(body, "GET", app.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let ctx = Context::from_signed_json(body.get("causal-context"), app.signer.as_ref());
    let Some(key) = body.get("key").and_then(|k| k.as_str()).map(str::to_string) else {
        return super::error::ApiError::BadRequest {
            method: "GET",
            error: "key is missing".into(),
        }
        .with_context(&ctx, app.signer.as_ref());
    };
    let resp = app
        .node
        .handle_key(KeyRequest {
            key,
            op: KeyOp::Get,
            ctx,
        })
        .await;
    super::error::key_response("GET", resp, app.signer.as_ref())
}
