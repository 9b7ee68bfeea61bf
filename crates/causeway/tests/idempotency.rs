//! Idempotent retries (`Idempotency-Key`) against real node processes: a repeat never
//! takes effect twice, on the node that saw the first attempt (it answers as the first
//! time) or on another replica (it applies the same write, which merges with the
//! first), including the retry hazard: A writes v1, B overwrites it with v2, A's retry
//! of v1 lands on a replica cut off from both; after healing every replica holds v2.

mod common;

use common::*;
use serde_json::{json, Value as Json};
use std::time::Duration;

/// One request with an optional `Idempotency-Key`.
fn send(method: &str, addr: &str, path: &str, body: &Json, key: Option<&str>) -> (u16, Json) {
    let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    let (status, body, _) = request(method, addr, path, body, &headers, Duration::from_secs(10));
    (status, body)
}

fn put(addr: &str, key: &str, value: &str, ctx: &Json, idem: Option<&str>) -> (u16, Json) {
    send(
        "PUT",
        addr,
        &format!("/kv-store/keys/{key}"),
        &json!({"value": value, "causal-context": ctx}),
        idem,
    )
}

fn without_context(mut j: Json) -> Json {
    j.as_object_mut().unwrap().remove("causal-context");
    j.as_object_mut().unwrap().remove("address");
    j
}

#[test]
fn a_repeat_on_the_same_node_answers_as_the_first_time_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(97, 2);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 1, dir.path()))
        .collect();
    let mut s = Session::new();
    s.put(&a[0], "warm", "up");
    let ctx_a = s.ctx.clone();
    let (c1, first) = put(&a[0], "k", "v1", &ctx_a, Some("req-1"));
    assert_eq!(c1, 201, "{first}");
    // Someone else overwrites it, having read it.
    let mut b = Session::new();
    b.get(&a[1], "k");
    assert_eq!(b.put(&a[1], "k", "v2").0, 200);
    // The repeat, through either node, is answered as the first attempt was.
    for at in &a {
        let (c, again) = put(at, "k", "v1", &ctx_a, Some("req-1"));
        assert_eq!(c, 201, "{at}: {again}");
        assert_eq!(
            without_context(again.clone()),
            without_context(first.clone()),
            "{at}"
        );
        // Its context covers the first attempt's write: the session reads its write or
        // a later one, never nothing.
        let (c, read) = send(
            "GET",
            at,
            "/kv-store/keys/k",
            &json!({"causal-context": again["causal-context"]}),
            None,
        );
        assert_eq!((c, read["value"].clone()), (200, json!("v2")), "{read}");
    }
    assert_eq!(Session::new().get(&a[0], "k").1["value"], json!("v2"));

    // A delete repeated: the first answer again, not a 404.
    let (c, _) = send(
        "DELETE",
        &a[1],
        "/kv-store/keys/k",
        &json!({"causal-context": b.ctx}),
        Some("del-1"),
    );
    assert_eq!(c, 200);
    let (c, again) = send(
        "DELETE",
        &a[1],
        "/kv-store/keys/k",
        &json!({"causal-context": b.ctx}),
        Some("del-1"),
    );
    assert_eq!(
        (c, again["message"].clone()),
        (200, json!("Deleted successfully"))
    );
}

#[test]
fn a_key_reused_for_another_request_or_malformed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(98, 1);
    let _n = NodeProc::start(&a[0], &a, 1, dir.path());
    assert_eq!(put(&a[0], "k", "v", &json!({}), Some("once")).0, 201);
    let (c, j) = put(&a[0], "other", "v", &json!({}), Some("once"));
    assert_eq!(c, 422, "{j}");
    assert_eq!(j["message"], json!("Error in PUT"));
    assert_eq!(
        j["error"],
        json!("Idempotency-Key reused for another request")
    );
    let (c, j) = send(
        "DELETE",
        &a[0],
        "/kv-store/keys/k",
        &json!({}),
        Some("once"),
    );
    assert_eq!(
        (c, j["message"].clone()),
        (422, json!("Error in DELETE")),
        "{j}"
    );
    assert_eq!(
        Session::new().get(&a[0], "k").1["value"],
        json!("v"),
        "nothing applied"
    );

    let long = "x".repeat(256);
    for bad in ["", "has space", long.as_str(), "tab\there"] {
        let (c, j) = put(&a[0], "k", "w", &json!({}), Some(bad));
        assert_eq!(c, 400, "{bad:?}: {j}");
        assert_eq!(j["error"], json!("Invalid Idempotency-Key"), "{j}");
    }
    let ok = "~".repeat(255);
    assert_eq!(put(&a[0], "k2", "w", &json!({}), Some(&ok)).0, 201);
}

#[test]
fn a_retry_on_a_replica_that_saw_neither_write_does_not_undo_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(99, 2);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let mut s = Session::new();
    s.put(&a[0], "warm", "up");
    let ctx_a = s.ctx.clone();
    {
        let _cut = Partition::new(&a[..1], &a[1..]);
        // A's first attempt lands on node 1 (say its answer is lost).
        assert_eq!(put(&a[0], "k", "v1", &ctx_a, Some("a-write")).0, 201);
        // B reads it there and overwrites it.
        let mut b = Session::new();
        assert_eq!(b.get(&a[0], "k").1["value"], json!("v1"));
        assert_eq!(b.put(&a[0], "k", "v2").0, 200);
        // A retries on node 2, which has seen neither.
        std::thread::sleep(Duration::from_millis(300));
        let (c, j) = put(&a[1], "k", "v1", &ctx_a, Some("a-write"));
        assert!(matches!(c, 200 | 201), "{j}");
    }
    // Healed: one write of v1 (in the place of the first attempt), superseded by v2.
    let settled = wait_until(Duration::from_secs(30), || {
        a.iter()
            .all(|x| Session::new().get(x, "k").1["value"] == json!("v2"))
    });
    let values: Vec<Json> = a
        .iter()
        .map(|x| Session::new().get(x, "k").1["value"].clone())
        .collect();
    assert!(
        settled.is_some(),
        "replicas hold {values:?}, not v2 everywhere"
    );
}

#[test]
fn a_repeat_after_the_window_is_a_new_request() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(99, 5)[4..].to_vec();
    let _n = NodeProc::start_with(&a[0], &a, 1, dir.path(), &[("IDEMPOTENCY_WINDOW", "2s")]);
    let mut s = Session::new();
    s.put(&a[0], "warm", "up");
    let ctx_a = s.ctx.clone();
    assert_eq!(put(&a[0], "k", "v1", &ctx_a, Some("late")).0, 201);
    let mut b = Session::new();
    b.get(&a[0], "k");
    assert_eq!(b.put(&a[0], "k", "v2").0, 200);
    // Within the window the repeat is the first attempt again.
    assert_eq!(put(&a[0], "k", "v1", &ctx_a, Some("late")).0, 201);
    assert_eq!(Session::new().get(&a[0], "k").1["value"], json!("v2"));
    std::thread::sleep(Duration::from_millis(2500));
    // Past it, the same request is a new write.
    let (c, j) = put(&a[0], "k", "v1", &ctx_a, Some("late"));
    assert_eq!((c, j["replaced"].clone()), (200, json!(true)), "{j}");
    assert_eq!(Session::new().get(&a[0], "k").1["value"], json!("v1"));
}

#[test]
fn a_repeated_batch_takes_effect_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(99, 7)[5..].to_vec();
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 1, dir.path()))
        .collect();
    let mut s = Session::new();
    s.put(&a[0], "warm", "up");
    let body = json!({
        "ops": [
            {"op": "put", "key": "x", "value": "1"},
            {"op": "put", "key": "x", "value": "2"},
            {"op": "put", "key": "y", "value": "1"}
        ],
        "causal-context": s.ctx,
    });
    let (c, first) = send("POST", &a[0], "/kv-store/batch", &body, Some("batch-1"));
    assert_eq!(c, 200, "{first}");
    // Ops on one key keep their order: the second put of x wins.
    assert_eq!(Session::new().get(&a[1], "x").1["value"], json!("2"));
    let mut b = Session::new();
    b.get(&a[1], "y");
    assert_eq!(b.put(&a[1], "y", "later").0, 200);
    for at in &a {
        let (c, again) = send("POST", at, "/kv-store/batch", &body, Some("batch-1"));
        assert_eq!(c, 200, "{again}");
        if at == &a[0] {
            assert_eq!(
                again["results"], first["results"],
                "answered as the first time"
            );
        }
    }
    assert_eq!(Session::new().get(&a[0], "y").1["value"], json!("later"));
    assert_eq!(Session::new().get(&a[0], "x").1["value"], json!("2"));
    // The key now names a batch: a PUT with it is another request.
    let (c, j) = put(&a[0], "x", "3", &s.ctx, Some("batch-1"));
    assert_eq!(c, 422, "{j}");
}

#[test]
fn a_keyed_batch_puts_after_what_its_own_get_read() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(99, 9)[8..].to_vec();
    let _n = NodeProc::start(&a[0], &a, 1, dir.path());
    let mut s = Session::new();
    s.put(&a[0], "warm", "up");
    let old_ctx = s.ctx.clone();
    std::thread::sleep(Duration::from_millis(50));
    // Another session writes k after the context was issued.
    assert_eq!(Session::new().put(&a[0], "k", "theirs").0, 201);
    let body = json!({
        "ops": [
            {"op": "get", "key": "k"},
            {"op": "put", "key": "k", "value": "mine"}
        ],
        "causal-context": old_ctx,
    });
    let (c, j) = send(
        "POST",
        &a[0],
        "/kv-store/batch",
        &body,
        Some("read-then-write"),
    );
    assert_eq!(c, 200, "{j}");
    assert_eq!(j["results"][0]["value"], json!("theirs"));
    // The put follows the get that saw "theirs": it wins.
    let (c, j) = send(
        "GET",
        &a[0],
        "/kv-store/keys/k",
        &json!({"causal-context": j["causal-context"]}),
        None,
    );
    assert_eq!((c, j["value"].clone()), (200, json!("mine")), "{j}");
}
