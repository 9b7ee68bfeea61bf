//! `POST /kv-store/batch` against real node processes: results in order with the
//! single-key answers' statuses and fields, same-key order kept, one context that
//! covers every op, validation before anything is applied, and the op limit.

mod common;

use common::*;
use serde_json::{json, Value as Json};

fn batch(addr: &str, ops: Json, ctx: &Json) -> (u16, Json) {
    call(
        "POST",
        addr,
        "/kv-store/batch",
        Some(&json!({"ops": ops, "causal-context": ctx})),
    )
    .expect("an answer")
}

#[test]
fn a_batch_runs_every_op_in_order_and_answers_one_context() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(49, 4);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let (code, j) = batch(
        &a[0],
        json!([
            {"op": "put", "key": "a", "value": "1"},
            {"op": "put", "key": "b", "value": 2},
            {"op": "get", "key": "a"},
            {"op": "delete", "key": "c"},
            {"op": "put", "key": "a", "value": "3"},
            {"op": "get", "key": "a"},
            {"op": "delete", "key": "b"},
            {"op": "get", "key": "b"}
        ]),
        &json!({}),
    );
    assert_eq!(code, 200, "{j}");
    assert_eq!(j["message"], json!("Batch completed"));
    let r = j["results"].as_array().unwrap();
    assert_eq!(
        r[0],
        json!({"key": "a", "status": 201, "message": "Added successfully", "replaced": false})
    );
    assert_eq!(r[1]["status"], json!(201));
    assert_eq!(
        r[2],
        json!({"key": "a", "status": 200, "message": "Retrieved successfully", "doesExist": true, "value": "1"})
    );
    assert_eq!(
        r[3],
        json!({"key": "c", "status": 404, "message": "Error in DELETE", "error": "Key does not exist", "doesExist": false})
    );
    assert_eq!(
        (r[4]["status"].clone(), r[4]["replaced"].clone()),
        (json!(200), json!(true))
    );
    assert_eq!(r[5]["value"], json!("3"));
    assert_eq!(r[6]["message"], json!("Deleted successfully"));
    assert_eq!(r[7]["status"], json!(404));
    // The answer's context covers every op: read-your-writes anywhere, at once.
    let mut s = Session {
        ctx: j["causal-context"].clone(),
    };
    for n in &a {
        let (code, got) = s.get(n, "a");
        assert!(
            code == 200 && value_of(&got).as_deref() == Some("3") || code == 400,
            "{n}: {got}"
        );
        let (code, got) = s.get(n, "b");
        assert!(
            code == 404 || code == 400,
            "{n}: b was deleted in the batch: {got}"
        );
    }
    // The alias works too.
    let (code, j) = call(
        "POST",
        &a[3],
        "/kvs/batch",
        Some(&json!({"ops": [{"op": "get", "key": "a"}], "causal-context": s.ctx})),
    )
    .unwrap();
    assert_eq!(
        (code, j["results"][0]["value"].clone()),
        (200, json!("3")),
        "{j}"
    );
}

#[test]
fn a_bad_op_applies_nothing_and_too_many_ops_is_413() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(50, 2);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 1, dir.path()))
        .collect();
    let (code, j) = batch(
        &a[0],
        json!([
            {"op": "put", "key": "x", "value": "1"},
            {"op": "put", "key": "y", "value": "1"},
            {"op": "put", "key": "z"}
        ]),
        &json!({}),
    );
    assert_eq!(
        (code, j["message"].clone(), j["error"].clone()),
        (
            400,
            json!("Error in BATCH"),
            json!("op 2: Value is missing")
        ),
        "{j}"
    );
    assert!(j["causal-context"].is_object());
    for k in ["x", "y"] {
        for n in &a {
            assert_eq!(Session::new().get(n, k).0, 404, "{k} was applied at {n}");
        }
    }
    let ops: Vec<Json> = (0..1001)
        .map(|i| json!({"op": "get", "key": format!("k{i}")}))
        .collect();
    let (code, j) = batch(&a[1], Json::Array(ops), &json!({}));
    assert_eq!(
        (code, j["message"].clone()),
        (413, json!("Error in BATCH")),
        "{j}"
    );
    let (code, j) = call("POST", &a[0], "/kv-store/batch", None).unwrap();
    assert_eq!(code, 400, "{j}");
}
