//! The node's HTTP service: what `axum::serve` runs for every connection.
//!
//! The single-key route (`/kv-store/keys/{key}` and its alias `/kvs/keys/{key}`) is
//! most of the traffic, so it goes straight to its handler: no route table, no
//! middleware future, one boxed future per request. Every other request goes through
//! the [`super::router`]. Invariant: a request answers and is counted exactly as the
//! router would answer and count it (the router keeps the same route, for any path
//! this module does not take).

use super::{key_op_parts, record, App};
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tower_service::Service;

/// Serves one node's HTTP API (cloning it is two reference counts).
#[derive(Clone)]
pub struct Http {
    app: App,
    router: Router,
}

impl Http {
    pub fn new(app: App) -> Http {
        Http {
            router: super::router(app.clone()),
            app,
        }
    }
}

/// The raw (still percent-encoded) key of a single-key path, if `path` is one: one
/// non-empty segment after the route's prefix, as the router's `{key}` matches.
pub(crate) fn key_segment(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/kv-store/keys/")
        .or_else(|| path.strip_prefix("/kvs/keys/"))?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// A path segment percent-decoded as the router's `Path<String>` decodes it; `None`
/// when the bytes are not UTF-8.
fn decode(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service<Request> for Http {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Answer {
        match key_segment(req.uri().path()).map(decode) {
            Some(key) => {
                let app = self.app.clone();
                Box::pin(async move {
                    let method = super::error::method_name(req.method());
                    let start = Instant::now();
                    let resp = key_op_parts(&app, key, req).await;
                    record(&app, "keys", method, resp.status().as_u16(), start);
                    Ok(resp)
                })
            }
            None => {
                let mut router = self.router.clone();
                Box::pin(async move { router.call(req).await })
            }
        }
    }
}

/// `axum::serve` asks for a service per connection: the same one, cloned.
impl<'a, L: axum::serve::Listener> Service<axum::serve::IncomingStream<'a, L>> for Http {
    type Response = Http;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Http, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: axum::serve::IncomingStream<'a, L>) -> Self::Future {
        std::future::ready(Ok(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_non_empty_segment_after_either_prefix_is_a_key() {
        assert_eq!(key_segment("/kv-store/keys/a"), Some("a"));
        assert_eq!(key_segment("/kvs/keys/a%2Fb"), Some("a%2Fb"));
        for other in [
            "/kv-store/keys/",
            "/kv-store/keys",
            "/kv-store/keys/a/b",
            "/kvs/keys//",
            "/kv-store/key-count",
            "/kv-store/keysx/a",
            "/x/kv-store/keys/a",
        ] {
            assert_eq!(key_segment(other), None, "{other}");
        }
    }

    #[test]
    fn a_key_is_percent_decoded_and_must_be_utf8() {
        assert_eq!(decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(decode("%FF"), None);
    }
}
