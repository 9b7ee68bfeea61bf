//! The one place where outcomes and errors become HTTP responses.
//!
//! Every response is a JSON object with a `causal-context`; key operations carry
//! exactly the fields of the client contract (`API.md`), plus `address` when another
//! node served them.

use crate::causal::{Context, Signer};
use crate::transport::{KeyError, KeyOutcome, KeyResponse};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value as Json};

/// A JSON response body: fields, then `causal-context` and optional `address`.
pub fn json_response(
    status: StatusCode,
    fields: Json,
    ctx: Json,
    address: Option<&str>,
) -> Response {
    let mut body = match fields {
        Json::Object(m) => m,
        _ => Map::new(),
    };
    body.insert("causal-context".into(), ctx);
    if let Some(a) = address {
        body.insert("address".into(), Json::String(a.to_string()));
    }
    (status, axum::Json(Json::Object(body))).into_response()
}

/// A key operation's answer, serialised straight to the body: exactly the contract's
/// fields for each outcome, then `causal-context`, and `address` when proxied.
#[derive(serde::Serialize)]
struct KeyBody<'a> {
    message: std::borrow::Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(rename = "doesExist", skip_serializing_if = "Option::is_none")]
    does_exist: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replaced: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<ValueOut<'a>>,
    /// A watch's answer only (`?wait=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<bool>,
    /// Whole seconds left, for a key written with a `ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u64>,
    #[serde(rename = "causal-context")]
    ctx: crate::causal::context::WireContext<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<&'a str>,
}

/// A stored value as the client sent it: a JSON string, or the number's own text
/// written verbatim (`1e2` stays `1e2`, never `100.0`).
pub struct ValueOut<'a>(pub &'a crate::causal::Value);

impl serde::Serialize for ValueOut<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            crate::causal::Value::Str(s) => ser.serialize_str(s),
            // serde_json's serializer writes a `RawValue` as its text, unchanged. A
            // stored number is always valid number text (`Value::number` checked it);
            // were it not, `null` is still valid JSON.
            crate::causal::Value::Num(text) => {
                match serde_json::value::RawValue::from_string(text.to_string()) {
                    Ok(raw) => raw.serialize(ser),
                    Err(_) => ser.serialize_unit(),
                }
            }
            crate::causal::Value::Expiring(v, _) => ValueOut(v).serialize(ser),
        }
    }
}

/// Whole seconds `value` has left to live, as the answer's context sees the time;
/// `None` for a value without a `ttl`.
fn ttl_left(value: &crate::causal::Value, ctx: &Context) -> Option<u64> {
    let at = value.expires()?;
    Some(crate::causal::version::secs_between(
        crate::node::read_now(ctx),
        at,
    ))
}

/// Maps a served (or refused) key operation to its response.
pub fn key_response(method: &str, resp: KeyResponse, signer: Option<&Signer>) -> Response {
    let (status, message, error, does_exist, replaced) = outcome_fields(method, &resp);
    let (found, changed) = match &resp.result {
        Ok(KeyOutcome::Found(v)) => (Some(ValueOut(v)), None),
        Ok(KeyOutcome::Watched { value, changed }) => {
            (value.as_ref().map(ValueOut), Some(*changed))
        }
        _ => (None, None),
    };
    let ttl = found.as_ref().and_then(|v| ttl_left(v.0, &resp.ctx));
    let body = KeyBody {
        message,
        error,
        does_exist,
        replaced,
        value: found,
        changed,
        ttl,
        ctx: resp.ctx.wire(signer),
        address: resp.served_by.as_deref(),
    };
    json_answer(status, &body)
}

/// A JSON answer serialized once into a buffer sized for a key operation's answer
/// (axum's `Json` starts at 128 bytes and grows). Same status, body and
/// `content-type` as `(status, axum::Json(body))`.
pub fn json_answer(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut buf = Vec::with_capacity(256);
    match serde_json::to_writer(&mut buf, body) {
        Ok(()) => {
            let mut resp = Response::new(axum::body::Body::from(buf));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            resp
        }
        // What axum's `Json` answers when a body cannot be serialized.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The status and contract fields of a key operation's outcome (one mapping for the
/// single-key answer and for each result of a batch).
#[allow(clippy::type_complexity)]
fn outcome_fields(
    method: &str,
    resp: &KeyResponse,
) -> (
    StatusCode,
    std::borrow::Cow<'static, str>,
    Option<String>,
    Option<bool>,
    Option<bool>,
) {
    match &resp.result {
        Ok(KeyOutcome::Found(_) | KeyOutcome::Watched { value: Some(_), .. }) => (
            StatusCode::OK,
            "Retrieved successfully".into(),
            None,
            Some(true),
            None,
        ),
        Ok(KeyOutcome::NotFound | KeyOutcome::Watched { value: None, .. }) => (
            StatusCode::NOT_FOUND,
            "Error in GET".into(),
            Some("Key does not exist".to_string()),
            Some(false),
            None,
        ),
        Ok(KeyOutcome::Put { replaced: false }) => (
            StatusCode::CREATED,
            "Added successfully".into(),
            None,
            None,
            Some(false),
        ),
        Ok(KeyOutcome::Put { replaced: true }) => (
            StatusCode::OK,
            "Updated successfully".into(),
            None,
            None,
            Some(true),
        ),
        Ok(KeyOutcome::Deleted) => (
            StatusCode::OK,
            "Deleted successfully".into(),
            None,
            Some(true),
            None,
        ),
        Ok(KeyOutcome::DeleteNotFound) => (
            StatusCode::NOT_FOUND,
            "Error in DELETE".into(),
            Some("Key does not exist".to_string()),
            Some(false),
            None,
        ),
        Err(e) => {
            let status = match e {
                KeyError::KeyTooLong | KeyError::Unsatisfiable => StatusCode::BAD_REQUEST,
                KeyError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                KeyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (
                status,
                format!("Error in {method}").into(),
                Some(e.to_string()),
                None,
                None,
            )
        }
    }
}

/// One result of a batch: `key`, `status`, and exactly the fields of the single-key
/// answer, without `causal-context` and `address`. Fields are in name order, as
/// batch answers have always been written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BatchResult {
    #[serde(rename = "doesExist", skip_serializing_if = "Option::is_none")]
    does_exist: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    key: String,
    message: std::borrow::Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replaced: Option<bool>,
    status: u16,
    /// Whole seconds left, for a key written with a `ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "value_out")]
    value: Option<crate::causal::Value>,
}

fn value_out<S: serde::Serializer>(
    v: &Option<crate::causal::Value>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&v.as_ref().map(ValueOut), ser)
}

impl BatchResult {
    /// The op's HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }
}

/// The result of one op of a batch (see [`BatchResult`]); the response's context is
/// handed back for the next op on the same key.
pub fn batch_result(method: &str, key: String, resp: KeyResponse) -> (BatchResult, Context) {
    let (status, message, error, does_exist, replaced) = outcome_fields(method, &resp);
    let value = match resp.result {
        Ok(KeyOutcome::Found(v)) => Some(v),
        _ => None,
    };
    let ttl = value.as_ref().and_then(|v| ttl_left(v, &resp.ctx));
    let result = BatchResult {
        does_exist,
        error,
        key,
        message,
        replaced,
        status: status.as_u16(),
        ttl,
        value,
    };
    (result, resp.ctx)
}

/// The answer to a batch: every op's result in the order given (`null` for an op
/// whose task failed). Fields in name order, as [`json_response`] writes them.
pub fn batch_response(results: Vec<Option<BatchResult>>, ctx: Json) -> Response {
    #[derive(serde::Serialize)]
    struct BatchBody {
        #[serde(rename = "causal-context")]
        ctx: Json,
        message: &'static str,
        results: Vec<Option<BatchResult>>,
    }
    let body = BatchBody {
        ctx,
        message: "Batch completed",
        results,
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// A page of a listing with values (`values=true`): each key with its value (`null`
/// for a key a listing found deleted). Fields in name order, as [`json_response`]
/// writes them.
pub fn list_items_response(
    items: &[(String, crate::causal::Version)],
    next: Option<String>,
    ctx: Json,
) -> Response {
    #[derive(serde::Serialize)]
    struct Item<'a> {
        key: &'a str,
        value: Option<ValueOut<'a>>,
    }
    #[derive(serde::Serialize)]
    struct ListBody<'a> {
        #[serde(rename = "causal-context")]
        ctx: Json,
        items: Vec<Item<'a>>,
        message: &'static str,
        next: Option<String>,
    }
    let body = ListBody {
        ctx,
        items: items
            .iter()
            .map(|(key, v)| Item {
                key,
                value: v.value.as_ref().map(ValueOut),
            })
            .collect(),
        message: "Keys listed successfully",
        next,
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// A listing that a shard could not serve: 503 when a shard was unreachable, 400 when
/// no reachable replica could honour the context.
pub fn list_error(e: &KeyError, ctx: &Context, signer: Option<&Signer>) -> Response {
    let status = match e {
        KeyError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        KeyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        KeyError::KeyTooLong | KeyError::Unsatisfiable => StatusCode::BAD_REQUEST,
    };
    json_response(
        status,
        json!({"message": "Error in LIST", "error": e.to_string()}),
        ctx.to_signed_json(signer),
        None,
    )
}

/// Errors found before an operation reaches the store.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Failed to parse request body")]
    BadBody { method: &'static str },
    #[error("Value is missing")]
    ValueMissing,
    #[error("Value must be a string or a number")]
    ValueType,
    #[error("{what} is too large (limit {limit} bytes)")]
    TooLarge {
        method: &'static str,
        what: &'static str,
        limit: usize,
    },
    #[error("{error}")]
    BadRequest { method: &'static str, error: String },
    #[error("Shard does not exist")]
    ShardNotFound,
    #[error("Not found")]
    NoRoute,
    #[error("Method not allowed")]
    MethodNotAllowed { method: String },
    #[error("Missing or wrong cluster secret")]
    Unauthorized,
    #[error("Unable to satisfy request")]
    Unavailable { method: &'static str },
    #[error("{0}")]
    Conflict(String),
    /// An `Idempotency-Key` already named another request (422).
    #[error("Idempotency-Key reused for another request")]
    KeyReused { method: &'static str },
    /// The node cannot serve (`/ready`); why.
    #[error("{0}")]
    NotReady(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadBody { .. }
            | ApiError::ValueMissing
            | ApiError::ValueType
            | ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ShardNotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable { .. } | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::KeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::BadBody { method }
            | ApiError::TooLarge { method, .. }
            | ApiError::BadRequest { method, .. }
            | ApiError::KeyReused { method }
            | ApiError::Unavailable { method } => format!("Error in {method}"),
            ApiError::ValueMissing | ApiError::ValueType => "Error in PUT".into(),
            ApiError::ShardNotFound => "Error in GET".into(),
            ApiError::MethodNotAllowed { method } => format!("Error in {method}"),
            ApiError::Conflict(_) => "Error in PUT".into(),
            ApiError::NoRoute | ApiError::Unauthorized => "Error".into(),
            ApiError::NotReady(_) => "Not ready".into(),
        }
    }
}

impl ApiError {
    /// The error's response, carrying the request's causal context: an error teaches
    /// the client nothing new, and must not make it forget what it had seen.
    pub fn with_context(self, ctx: &Context, signer: Option<&Signer>) -> Response {
        let fields = json!({"message": self.message(), "error": self.to_string()});
        json_response(self.status(), fields, ctx.to_signed_json(signer), None)
    }
}

/// Only for errors found before the request's body could be read (so it has no
/// context to echo): the answer carries an empty context.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.with_context(&Context::default(), None)
    }
}

/// The method name used in `"Error in <METHOD>"` messages.
pub fn method_name(m: &axum::http::Method) -> &'static str {
    match *m {
        axum::http::Method::GET => "GET",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::POST => "POST",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::Value;

    fn found(v: Value) -> KeyResponse {
        KeyResponse {
            result: Ok(KeyOutcome::Found(v)),
            ctx: Context::default(),
            served_by: None,
        }
    }

    async fn body_text(resp: Response) -> String {
        use http_body_util::BodyExt;
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn values_are_written_as_they_came() {
        for (v, text) in [
            (Value::Num("1e2".into()), "1e2"),
            (Value::Num("1E+2".into()), "1E+2"),
            (Value::Num("10.50".into()), "10.50"),
            (Value::Num("-0".into()), "-0"),
            (
                Value::Num("123456789012345678901234567890".into()),
                "123456789012345678901234567890",
            ),
            (Value::Num("0.1e-7".into()), "0.1e-7"),
            (Value::Str("1e2".into()), r#""1e2""#),
            (Value::Str("a\"b".into()), r#""a\"b""#),
            // Not number text (never stored): still valid JSON.
            (Value::Num("1e2}".into()), "null"),
        ] {
            assert_eq!(serde_json::to_string(&ValueOut(&v)).unwrap(), text);
        }
    }

    #[tokio::test]
    async fn a_key_answer_carries_the_number_text() {
        let resp = key_response("GET", found(Value::Num("1E+2".into())), None);
        let text = body_text(resp).await;
        assert!(
            text.starts_with(r#"{"message":"Retrieved successfully","doesExist":true,"value":1E+2,"causal-context":"#),
            "{text}"
        );
    }

    #[test]
    fn batch_results_keep_their_fields_in_name_order() {
        let (r, _) = batch_result("GET", "k".into(), found(Value::Num("10.50".into())));
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"doesExist":true,"key":"k","message":"Retrieved successfully","status":200,"value":10.50}"#
        );
        let missing = KeyResponse {
            result: Ok(KeyOutcome::NotFound),
            ctx: Context::default(),
            served_by: None,
        };
        let (r, _) = batch_result("GET", "k".into(), missing);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"doesExist":false,"error":"Key does not exist","key":"k","message":"Error in GET","status":404}"#
        );
    }

    #[tokio::test]
    async fn batch_and_listing_answers_carry_the_number_text() {
        let (r, _) = batch_result("GET", "k".into(), found(Value::Num("-0".into())));
        let text = body_text(batch_response(vec![Some(r), None], json!({}))).await;
        assert_eq!(
            text,
            r#"{"causal-context":{},"message":"Batch completed","results":[{"doesExist":true,"key":"k","message":"Retrieved successfully","status":200,"value":-0},null]}"#
        );

        let version = |value| crate::causal::Version {
            id: crate::causal::WriteId {
                ts: 1,
                origin: 1,
                counter: 1,
            },
            dot: crate::causal::Dot {
                origin: 1,
                counter: 1,
            },
            epoch: 0,
            past: Default::default(),
            value,
        };
        let items = vec![
            ("a".to_string(), version(Some(Value::Num("0.1e-7".into())))),
            ("b".to_string(), version(Some(Value::Str("s".into())))),
            ("c".to_string(), version(None)),
        ];
        let text = body_text(list_items_response(&items, Some("c".into()), json!({}))).await;
        assert_eq!(
            text,
            r#"{"causal-context":{},"items":[{"key":"a","value":0.1e-7},{"key":"b","value":"s"},{"key":"c","value":null}],"message":"Keys listed successfully","next":"c"}"#
        );
    }
}
