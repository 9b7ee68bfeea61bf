//! The client's error type: every way a request can fail, one variant per
//! outcome a caller may want to act on differently.
//!
//! Node answers that are part of the API contract (404 "Key does not exist",
//! 400 "Unable to satisfy request", other 400s, 503) become their own variants
//! and keep the node's full [`Response`], so a caller can still print it or
//! read its `causal-context`. Failures below the API (connection refused,
//! timeout, a body that is not a JSON object) name the node they happened on.

use std::time::Duration;

use crate::response::Response;

/// The error string a node uses when a read depends on a write it has not received yet.
pub(crate) const UNSATISFIABLE: &str = "Unable to satisfy request";
/// The error string of a 404 on a key operation.
pub(crate) const KEY_DOES_NOT_EXIST: &str = "Key does not exist";

/// Why a request failed. See the variants for which ones are retried on the next node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404 `"Key does not exist"`: the key was never written or has been deleted.
    #[error("key does not exist")]
    KeyNotFound {
        /// The node's answer.
        response: Box<Response>,
    },

    /// 400 `"Unable to satisfy request"`: the replica has not yet received a write
    /// of this key that the causal context depends on. Another replica (or the same
    /// one a little later) can answer; the client tries the next node.
    #[error("unable to satisfy request: {} has not yet received a write this session depends on", response.node)]
    Unsatisfiable {
        /// The node's answer.
        response: Box<Response>,
    },

    /// Any other 400: the request itself is wrong (key too long, value missing, ...).
    #[error("bad request: {message}: {error}")]
    BadRequest {
        /// The response's `message`, e.g. `"Error in PUT"`.
        message: String,
        /// The response's `error`, e.g. `"Key is too long"`.
        error: String,
        /// The node's answer.
        response: Box<Response>,
    },

    /// 503: the node could not reach the shard that owns the request in time.
    /// The client tries the next node.
    #[error("{} is unavailable: {}", response.node, response.error().unwrap_or("HTTP 503"))]
    Unavailable {
        /// The node's answer.
        response: Box<Response>,
    },

    /// A JSON answer with a status the API does not give for this request (e.g. 404
    /// for a shard id that does not exist). 5xx statuses are retried on the next node.
    #[error("unexpected HTTP {} from {}: {}", response.status, response.node, describe(response))]
    Unexpected {
        /// The node's answer.
        response: Box<Response>,
    },

    /// A non-JSON answer with an error status (e.g. a proxy's error page).
    /// 5xx statuses are retried on the next node.
    #[error("unexpected HTTP {status} from {node}: {body}")]
    Http {
        /// Address the request was sent to.
        node: String,
        /// HTTP status code.
        status: u16,
        /// The body, as text (possibly truncated).
        body: String,
    },

    /// The request did not complete: connection refused or reset, DNS, ...
    /// The client tries the next node.
    #[error("cannot reach {node}: {}", causes(source))]
    Transport {
        /// Address the request was sent to.
        node: String,
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },

    /// No complete answer within the per-request timeout. The client tries the next node.
    #[error("{node} did not answer within {timeout:?}")]
    Timeout {
        /// Address the request was sent to.
        node: String,
        /// The timeout that expired.
        timeout: Duration,
    },

    /// The node answered with something that is not the JSON object the API promises.
    #[error("cannot decode the response of {node}: {reason}")]
    Decode {
        /// Address the request was sent to.
        node: String,
        /// What was wrong with it.
        reason: String,
    },

    /// Every node was tried and each one failed with a retryable error (listed in order).
    /// Only returned when more than one node was tried; with a single node its own
    /// error is returned.
    #[error("all {} nodes failed: {}", failures.len(), summarize(failures))]
    AllNodesFailed {
        /// One entry per node tried, in the order they were tried.
        failures: Vec<Error>,
    },

    /// A node address is not `host:port`.
    #[error("invalid node address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },

    /// [`Operation::PutNumber`](crate::Operation::PutNumber) was given text that is
    /// not one JSON number (nothing was sent).
    #[error("{text:?} is not a JSON number")]
    InvalidNumber {
        /// The text as given.
        text: String,
    },
}

fn describe(response: &Response) -> String {
    match (response.message(), response.error()) {
        (Some(m), Some(e)) => format!("{m}: {e}"),
        (Some(m), None) | (None, Some(m)) => m.to_owned(),
        (None, None) => response.to_json().to_string(),
    }
}

/// The causes of a transport error: reqwest's own message ("error sending request
/// for url ...") does not say what went wrong, its sources do.
fn causes(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

fn summarize(failures: &[Error]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// Whether the next node may be able to serve the request this node failed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unsatisfiable { .. }
            | Error::Unavailable { .. }
            | Error::Transport { .. }
            | Error::Timeout { .. } => true,
            Error::Http { status, .. } => *status >= 500,
            Error::Unexpected { response } => response.status >= 500,
            Error::KeyNotFound { .. }
            | Error::BadRequest { .. }
            | Error::Decode { .. }
            | Error::AllNodesFailed { .. }
            | Error::InvalidAddress { .. }
            | Error::InvalidNumber { .. } => false,
        }
    }

    /// The node's answer, when the error is one (404, 400, 503).
    pub fn response(&self) -> Option<&Response> {
        match self {
            Error::KeyNotFound { response }
            | Error::Unsatisfiable { response }
            | Error::BadRequest { response, .. }
            | Error::Unavailable { response }
            | Error::Unexpected { response } => Some(response),
            _ => None,
        }
    }

    /// Classifies a node's non-success answer. `response.status` must not be 2xx.
    pub(crate) fn from_response(response: Response) -> Error {
        let response = Box::new(response);
        match response.status {
            404 if response.error() == Some(KEY_DOES_NOT_EXIST) => Error::KeyNotFound { response },
            400 if response.error() == Some(UNSATISFIABLE) => Error::Unsatisfiable { response },
            400 => Error::BadRequest {
                message: response.message().unwrap_or_default().to_owned(),
                error: response.error().unwrap_or_default().to_owned(),
                response,
            },
            503 => Error::Unavailable { response },
            _ => Error::Unexpected { response },
        }
    }
}

/// Result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
