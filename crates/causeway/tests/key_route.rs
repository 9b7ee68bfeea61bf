//! The single-key route's direct path (`api::service`, what the binary serves) answers
//! and counts every request exactly as the router does: the same requests, to two fresh
//! nodes, one served through the router and one through the direct path, get the same
//! statuses, headers that matter and bodies (their causal contexts aside: each node
//! names its own writes), and the same per-route request counts.

use causeway_server::api::service::Http;
use causeway_server::api::{router, AppState, Limits};
use causeway_server::node::{Node, NodeConfig};
use causeway_server::placement::View;
use causeway_server::storage::Storage;
use causeway_server::transport::memory::Network;
use serde_json::Value as Json;
use std::sync::Arc;

const ADDR: &str = "10.0.0.1:13800";

/// A request: method, path and query, headers, body.
type Req<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);

/// A fresh one-node store, served on a loopback port through the router or the direct
/// path; its base URL.
async fn serve(direct: bool) -> String {
    let net = Network::new();
    let (storage, loaded) = Storage::in_memory();
    let node = Node::start(
        NodeConfig::new(ADDR.to_string()),
        storage,
        loaded,
        View::new(0, vec![ADDR.into()], 1),
        net.transport(ADDR),
    )
    .expect("in-memory start");
    net.register(&node);
    let app = Arc::new(AppState::new(node, Limits::default(), None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    if direct {
        tokio::spawn(async move { axum::serve(listener, Http::new(app)).await });
    } else {
        tokio::spawn(async move { axum::serve(listener, router(app)).await });
    }
    url
}

/// What must match: status, content type, `allow`, and the body without its context
/// (and with only whether a `ttl` is left: the second answer comes later).
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    allow: Option<String>,
    body: Result<Json, String>,
}

async fn ask(
    client: &reqwest::Client,
    base: &str,
    (method, path, headers, body): &Req<'_>,
) -> Answer {
    let mut req = client.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{base}{path}"),
    );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (status, content_type, allow) = (
        resp.status().as_u16(),
        header("content-type"),
        header("allow"),
    );
    let text = resp.text().await.unwrap();
    let body = match serde_json::from_str::<Json>(&text) {
        Ok(mut j) => {
            if let Some(o) = j.as_object_mut() {
                let ctx = o.remove("causal-context");
                assert!(
                    ctx.is_some() || status == 404 && text.is_empty(),
                    "{method} {path}: every JSON answer carries a context: {text}"
                );
                // Seconds left of an expiring value: only whether there are some.
                if let Some(ttl) = o.remove("ttl") {
                    o.insert(
                        "ttl".into(),
                        Json::Bool(ttl.as_u64().is_some_and(|t| t > 0)),
                    );
                }
            }
            Ok(j)
        }
        Err(_) => Err(text),
    };
    Answer {
        status,
        content_type,
        allow,
        body,
    }
}

/// The requests' counts by route, method and status, from `/metrics`.
async fn counts(client: &reqwest::Client, base: &str) -> Vec<String> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            l.starts_with("causeway_http_requests_total{")
                || l.starts_with("causeway_http_request_duration_seconds_count{")
                || l.starts_with("causeway_answers_total")
                || l.starts_with("causeway_client_errors_total")
        })
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_key_route_answers_and_counts_as_the_router_does() {
    let json = vec![("content-type", "application/json")];
    let long = format!("/kv-store/keys/{}", "k".repeat(60));
    let requests: Vec<Req> = vec![
        (
            "PUT",
            "/kv-store/keys/a",
            json.clone(),
            r#"{"value":"x","causal-context":{}}"#,
        ),
        ("PUT", "/kvs/keys/a", json.clone(), r#"{"value":"y"}"#),
        ("GET", "/kv-store/keys/a", json.clone(), "{}"),
        ("GET", "/kvs/keys/a", vec![], ""),
        (
            "PUT",
            "/kv-store/keys/caf%C3%A9",
            json.clone(),
            r#"{"value":"é"}"#,
        ),
        ("GET", "/kv-store/keys/caf%C3%A9", vec![], ""),
        ("GET", "/kv-store/keys/caf%C3%A9x", vec![], ""),
        ("GET", "/kv-store/keys/%FF", vec![], ""),
        ("PATCH", "/kv-store/keys/a", json.clone(), "{}"),
        ("POST", "/kvs/keys/a", json.clone(), r#"{"value":"z"}"#),
        ("PUT", "/kv-store/keys/a", json.clone(), "not json"),
        (
            "PUT",
            "/kv-store/keys/a",
            json.clone(),
            r#"{"causal-context":{}}"#,
        ),
        ("PUT", "/kv-store/keys/a", json.clone(), r#"{"value":[1]}"#),
        (
            "PUT",
            "/kv-store/keys/a",
            json.clone(),
            r#"{"value":"v","causal-context":"bad"}"#,
        ),
        ("PUT", "/kv-store/keys/n", json.clone(), r#"{"value":1.50}"#),
        ("GET", "/kv-store/keys/n", vec![], ""),
        ("PUT", long.as_str(), json.clone(), r#"{"value":"v"}"#),
        (
            "PUT",
            "/kv-store/keys/t",
            json.clone(),
            r#"{"value":"v","ttl":-1}"#,
        ),
        (
            "PUT",
            "/kv-store/keys/t",
            json.clone(),
            r#"{"value":"v","ttl":60}"#,
        ),
        ("GET", "/kv-store/keys/t", vec![], ""),
        ("GET", "/kv-store/keys/a?wait=abc", vec![], ""),
        (
            "PUT",
            "/kv-store/keys/a?wait=10",
            json.clone(),
            r#"{"value":"w"}"#,
        ),
        ("GET", "/kv-store/keys/a?wait=20", vec![], ""),
        ("GET", "/kv-store/keys/a?other=1", vec![], ""),
        (
            "PUT",
            "/kv-store/keys/i",
            vec![("idempotency-key", "k-1")],
            r#"{"value":"1"}"#,
        ),
        (
            "PUT",
            "/kv-store/keys/i",
            vec![("idempotency-key", "k-1")],
            r#"{"value":"1"}"#,
        ),
        (
            "PUT",
            "/kv-store/keys/i",
            vec![("idempotency-key", "k-1")],
            r#"{"value":"2"}"#,
        ),
        (
            "PUT",
            "/kv-store/keys/i",
            vec![("idempotency-key", "")],
            r#"{"value":"1"}"#,
        ),
        ("DELETE", "/kv-store/keys/a", vec![], ""),
        ("DELETE", "/kv-store/keys/a", vec![], ""),
        ("GET", "/kv-store/keys/a", vec![], ""),
        // Not the single-key route: both take the router's way.
        ("GET", "/kv-store/keys/", vec![], ""),
        ("GET", "/kv-store/keys/a/b", vec![], ""),
        ("GET", "/kv-store/keys", vec![], ""),
        ("GET", "/kv-store/key-count", vec![], ""),
        ("GET", "/nowhere", vec![], ""),
    ];
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let (through_router, direct) = (serve(false).await, serve(true).await);
    for r in &requests {
        let expected = ask(&client, &through_router, r).await;
        let got = ask(&client, &direct, r).await;
        assert_eq!(got, expected, "{} {}", r.0, r.1);
    }
    assert_eq!(
        counts(&client, &direct).await,
        counts(&client, &through_router).await,
        "the same requests counted under the same routes, methods and statuses"
    );
    let keys = counts(&client, &direct).await;
    assert!(
        keys.iter()
            .any(|l| l.contains(r#"route="keys",method="PATCH",status="405""#)),
        "{keys:?}"
    );
}
