//! Runs the generator against a small in-process server speaking the key API, and checks that
//! what the server saw is what the summary reports.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use causeway_bench::{BenchArgs, BenchError};
use serde_json::{json, Value};

#[derive(Default)]
struct Store {
    keys: Mutex<HashMap<String, String>>,
    requests: AtomicU64,
    /// Answer every PUT with this status instead of storing, when set.
    refuse_puts: Option<StatusCode>,
}

async fn get_key(
    State(s): State<Arc<Store>>,
    Path(k): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    s.requests.fetch_add(1, Ordering::Relaxed);
    assert_eq!(body, json!({}), "GET carries an empty JSON body");
    match s.keys.lock().unwrap().get(&k) {
        Some(v) => (
            StatusCode::OK,
            Json(json!({"value": v, "causal-context": {}})),
        ),
        None => (StatusCode::NOT_FOUND, Json(json!({"causal-context": {}}))),
    }
}

async fn put_key(
    State(s): State<Arc<Store>>,
    Path(k): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    s.requests.fetch_add(1, Ordering::Relaxed);
    assert_eq!(body["causal-context"], json!({}));
    if let Some(status) = s.refuse_puts {
        return (status, Json(json!({"causal-context": {}})));
    }
    let value = body["value"]
        .as_str()
        .expect("value is a string")
        .to_string();
    let replaced = s.keys.lock().unwrap().insert(k, value).is_some();
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (
        status,
        Json(json!({"replaced": replaced, "causal-context": {}})),
    )
}

async fn serve(store: Arc<Store>) -> String {
    let app = Router::new()
        .route("/kv-store/keys/{key}", get(get_key).put(put_key))
        .with_state(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn args(node: &str) -> BenchArgs {
    BenchArgs {
        nodes: vec![node.to_string()],
        concurrency: 4,
        duration: 0.3,
        keys: 500,
        value_size: 10,
        read_ratio: 0.5,
        rate: None,
        preload: false,
        threads: 1,
        json: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_writes_every_key_and_the_summary_counts_what_the_server_answered() {
    let store = Arc::new(Store::default());
    let node = serve(store.clone()).await;
    let summary = causeway_bench::run(BenchArgs {
        preload: true,
        ..args(&node)
    })
    .await
    .unwrap();

    let keys = store.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 500);
    assert!(keys.contains_key("key1") && keys.contains_key("key500"));
    assert!(keys.values().all(|v| v == "vvvvvvvvvv"));
    let preload = summary.preload.as_ref().unwrap();
    assert_eq!((preload.keys, preload.errors), (500, 0));

    assert!(summary.requests > 0);
    assert_eq!(
        store.requests.load(Ordering::Relaxed),
        500 + summary.requests,
        "the server saw the preload plus every counted request"
    );
    assert_eq!(summary.error_total, 0, "{:?}", summary.errors);
    let gets = summary.responses.get("GET 200").copied().unwrap_or(0);
    let puts = summary.responses.get("PUT 200").copied().unwrap_or(0);
    assert_eq!(gets + puts, summary.requests, "all keys exist: only 200s");
    assert!(gets > 0 && puts > 0, "both operations at ratio 0.5");
    assert_eq!(summary.latency.count, summary.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_rate_offers_that_many_requests() {
    let store = Arc::new(Store::default());
    let node = serve(store.clone()).await;
    let summary = causeway_bench::run(BenchArgs {
        rate: Some(200.0),
        duration: 1.0,
        ..args(&node)
    })
    .await
    .unwrap();
    assert!(
        (199..=201).contains(&summary.requests),
        "rate x duration: {}",
        summary.requests
    );
    assert!(
        (summary.throughput - 200.0).abs() < 20.0,
        "{}",
        summary.throughput
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_are_counted_by_status() {
    let store = Arc::new(Store {
        refuse_puts: Some(StatusCode::SERVICE_UNAVAILABLE),
        ..Store::default()
    });
    let node = serve(store).await;
    let summary = causeway_bench::run(BenchArgs {
        read_ratio: 0.0,
        ..args(&node)
    })
    .await
    .unwrap();
    assert!(summary.requests > 0);
    assert_eq!(summary.errors["PUT 503"], summary.requests);
    assert_eq!(summary.error_total, summary.requests);
    assert_eq!(summary.ok_throughput, 0.0);
}

#[tokio::test]
async fn an_unreachable_node_fails_the_run_up_front() {
    // Port 1 (tcpmux) has no listener on a loopback test machine.
    let err = causeway_bench::run(args("127.0.0.1:1")).await.unwrap_err();
    assert!(
        matches!(err, BenchError::Connect { ref node, .. } if node == "127.0.0.1:1"),
        "{err}"
    );
}
