//! Runs the generator against a small in-process server speaking the key API, and checks that
//! what the server saw is what the summary reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use causeway_bench::{BenchArgs, BenchError};
use serde_json::{json, Value};

#[derive(Default)]
struct Store {
    keys: Mutex<HashMap<String, String>>,
    requests: AtomicU64,
    /// Answer every PUT with this status instead of storing, when set.
    refuse_puts: Option<StatusCode>,
    /// Whether clients send contexts back (`--sessions`); otherwise a GET's body must be `{}`.
    sessions: bool,
    /// Batches received, and their ops.
    batches: AtomicU64,
    batch_ops: AtomicU64,
    /// The largest context counter a request carried.
    max_seen: AtomicU64,
}

/// The context of an answer: the request's counter plus one, padded so it grows with it
/// (`{"n": 3, "pad": "xxx"}`), as a session's context grows with what it has seen.
fn next_context(s: &Store, body: &Value) -> Value {
    let n = body["causal-context"]["n"].as_u64().unwrap_or(0);
    s.max_seen.fetch_max(n, Ordering::Relaxed);
    json!({"n": n + 1, "pad": "x".repeat(n as usize + 1)})
}

async fn get_key(
    State(s): State<Arc<Store>>,
    Path(k): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    s.requests.fetch_add(1, Ordering::Relaxed);
    if !s.sessions {
        assert_eq!(body, json!({}), "GET carries an empty JSON body");
    }
    let context = next_context(&s, &body);
    match s.keys.lock().unwrap().get(&k) {
        Some(v) => (
            StatusCode::OK,
            Json(json!({"value": v, "causal-context": context})),
        ),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"causal-context": context})),
        ),
    }
}

async fn put_key(
    State(s): State<Arc<Store>>,
    Path(k): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    s.requests.fetch_add(1, Ordering::Relaxed);
    if !s.sessions {
        assert_eq!(body["causal-context"], json!({}));
    }
    let context = next_context(&s, &body);
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
        Json(json!({"replaced": replaced, "causal-context": context})),
    )
}

async fn batch(State(s): State<Arc<Store>>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    s.batches.fetch_add(1, Ordering::Relaxed);
    let ops = body["ops"].as_array().expect("ops is an array");
    s.batch_ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
    let mut keys = s.keys.lock().unwrap();
    let results: Vec<Value> = ops
        .iter()
        .map(|op| {
            let key = op["key"].as_str().expect("a key").to_string();
            match op["op"].as_str() {
                Some("put") => {
                    let value = op["value"].as_str().expect("a value").to_string();
                    let replaced = keys.insert(key.clone(), value).is_some();
                    json!({"key": key, "status": if replaced { 200 } else { 201 }, "replaced": replaced})
                }
                Some("get") => match keys.get(&key) {
                    Some(v) => json!({"key": key, "status": 200, "value": v}),
                    None => json!({"key": key, "status": 404, "doesExist": false}),
                },
                other => panic!("unknown op {other:?}"),
            }
        })
        .collect();
    let context = next_context(&s, &body);
    (
        StatusCode::OK,
        Json(json!({"message": "Batch completed", "results": results, "causal-context": context})),
    )
}

async fn list(
    State(s): State<Arc<Store>>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let limit: usize = q["limit"].parse().unwrap();
    assert!((1..=1000).contains(&limit));
    let sorted: BTreeMap<String, String> = s.keys.lock().unwrap().clone().into_iter().collect();
    let after = q.get("start-after").cloned().unwrap_or_default();
    let page: Vec<String> = sorted
        .range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
        .map(|(k, _)| k.clone())
        .take(limit)
        .collect();
    let next = if page.len() == limit && sorted.keys().next_back() != page.last() {
        json!(page.last())
    } else {
        Value::Null
    };
    let context = next_context(&s, &body);
    (
        StatusCode::OK,
        Json(
            json!({"message": "Keys listed successfully", "keys": page, "next": next, "causal-context": context}),
        ),
    )
}

async fn serve(store: Arc<Store>) -> String {
    let app = Router::new()
        .route("/kv-store/keys/{key}", get(get_key).put(put_key))
        .route("/kv-store/batch", post(batch))
        .route("/kv-store/keys", get(list))
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
        batch: None,
        sessions: false,
        list: false,
        list_limit: 1000,
        list_prefix: String::new(),
        list_values: false,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_preload_in_batches_and_count_every_op_as_a_key() {
    let store = Arc::new(Store::default());
    let node = serve(store.clone()).await;
    let summary = causeway_bench::run(BenchArgs {
        preload: true,
        batch: Some(7),
        ..args(&node)
    })
    .await
    .unwrap();
    let keys = store.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 500, "the preload wrote every key");
    assert_eq!(summary.preload.as_ref().unwrap().errors, 0);
    assert_eq!(store.requests.load(Ordering::Relaxed), 0, "only batches");
    // 4 workers, 125 keys each: 17 full batches of 7 and one of 6.
    let preload_batches = 4 * 18;
    assert_eq!(
        store.batches.load(Ordering::Relaxed),
        preload_batches + summary.requests
    );
    assert_eq!(
        store.batch_ops.load(Ordering::Relaxed),
        500 + summary.key_ops,
        "the server saw the preload plus every counted op"
    );
    assert!(summary.requests > 0);
    assert_eq!(summary.key_ops, 7 * summary.requests);
    assert_eq!(summary.responses["BATCH 200"], summary.requests);
    assert_eq!((summary.error_total, summary.op_error_total), (0, 0));
    let gets = summary.op_responses.get("GET 200").copied().unwrap_or(0);
    let puts = summary.op_responses.get("PUT 200").copied().unwrap_or(0);
    assert_eq!(gets + puts, summary.key_ops);
    assert!(summary.keys_per_sec > 6.9 * summary.throughput);
    assert_eq!(summary.batch_latency.unwrap().count, summary.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_send_back_their_context_and_its_size_is_reported() {
    let store = Arc::new(Store {
        sessions: true,
        ..Store::default()
    });
    let node = serve(store.clone()).await;
    let summary = causeway_bench::run(BenchArgs {
        sessions: true,
        rate: Some(200.0),
        duration: 0.5,
        ..args(&node)
    })
    .await
    .unwrap();
    // 100 requests over 4 sessions: each sent back the context of its previous answer.
    let per_session = summary.requests / 4;
    assert!(per_session >= 24, "{}", summary.requests);
    assert!(store.max_seen.load(Ordering::Relaxed) >= per_session - 1);
    let c = summary.context.unwrap();
    assert!(c.carried);
    assert_eq!(c.answers, summary.requests);
    assert_eq!(c.sessions, 4);
    // The n-th answer's context is {"n":n,"pad":"x"*n}: 15 bytes + digits + n.
    let size = |n: u64| 15 + n.to_string().len() as u64 + n;
    assert!(c.final_max_bytes >= size(per_session), "{c:?}");
    assert!(c.max_bytes >= c.final_max_bytes);
    assert!(c.mean_bytes < c.max_bytes as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sessions_every_request_sends_an_empty_context() {
    let store = Arc::new(Store::default());
    let node = serve(store.clone()).await;
    let summary = causeway_bench::run(args(&node)).await.unwrap();
    assert_eq!(store.max_seen.load(Ordering::Relaxed), 0);
    let c = summary.context.unwrap();
    assert!(!c.carried);
    assert_eq!(c.max_bytes, 17, r#"every answer is {{"n":1,"pad":"x"}}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_pages_through_every_key() {
    let store = Arc::new(Store::default());
    let node = serve(store.clone()).await;
    let summary = causeway_bench::run(BenchArgs {
        preload: true,
        batch: Some(50),
        keys: 2_345,
        duration: 0.0,
        list: true,
        list_limit: 100,
        ..args(&node)
    })
    .await
    .unwrap();
    let list = summary.list.unwrap();
    assert!(list.complete);
    assert_eq!(list.keys, 2_345);
    assert_eq!(list.pages, 24);
    assert_eq!(list.errors, 0);
    assert_eq!(list.page_latency.count, 24);
    assert!(list.keys_per_sec > 0.0 && list.pages_per_sec > 0.0);
    // Each page carried the previous page's context: the 24th answer has n = 24.
    assert_eq!(store.max_seen.load(Ordering::Relaxed), 23);
    assert_eq!(list.final_context_bytes, 15 + 2 + 24);
    assert_eq!(summary.requests, 0, "no measured phase");
}
