//! Causal guarantees outside the happy path, against real node processes with real
//! partitions (iptables): error answers keep the session's history, and clock skew
//! between nodes (libfaketime) costs neither availability nor the order of causal
//! successors.

mod common;

use common::*;
use serde_json::{json, Value as Json};
use std::time::Duration;

/// Every kind of error a client can provoke with a readable body, as (method, path,
/// body with the session's context).
fn provoked_errors(ctx: &Json) -> Vec<(&'static str, String, Json, u16)> {
    let long = "x".repeat(51);
    vec![
        // Value is missing.
        (
            "PUT",
            "/kv-store/keys/k".into(),
            json!({"causal-context": ctx}),
            400,
        ),
        // A value of object type, and of list type.
        (
            "PUT",
            "/kv-store/keys/k".into(),
            json!({"value": {"a": 1}, "causal-context": ctx}),
            400,
        ),
        (
            "PUT",
            "/kv-store/keys/k".into(),
            json!({"value": [1], "causal-context": ctx}),
            400,
        ),
        // A method the key path does not serve.
        (
            "POST",
            "/kv-store/keys/k".into(),
            json!({"value": "v", "causal-context": ctx}),
            405,
        ),
        // A key that is too long.
        (
            "PUT",
            format!("/kv-store/keys/{long}"),
            json!({"value": "v", "causal-context": ctx}),
            400,
        ),
        // A value over the limit (1 KiB on these nodes).
        (
            "PUT",
            "/kv-store/keys/k".into(),
            json!({"value": "v".repeat(2048), "causal-context": ctx}),
            413,
        ),
        // An unknown path, a wrong method on a known one, an unknown shard, a bad view.
        (
            "GET",
            "/kv-store/nowhere".into(),
            json!({"causal-context": ctx}),
            404,
        ),
        (
            "DELETE",
            "/kv-store/shards".into(),
            json!({"causal-context": ctx}),
            405,
        ),
        (
            "GET",
            "/kv-store/shards/99".into(),
            json!({"causal-context": ctx}),
            404,
        ),
        (
            "PUT",
            "/kv-store/view-change".into(),
            json!({"view": "not-an-address", "repl-factor": 1, "causal-context": ctx}),
            400,
        ),
    ]
}

#[test]
fn error_answers_keep_the_sessions_history() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(40, 2);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start_with(x, &a, 2, dir.path(), &[("MAX_VALUE_BYTES", "1024")]))
        .collect();
    let cut = Partition::new(&a[..1], &a[1..]);
    let mut s = Session::new();
    assert_eq!(s.put(&a[0], "k", "mine").0, 201);
    let after_write = s.ctx.clone();

    for (method, path, body, status) in provoked_errors(&after_write) {
        let (code, j) = call(method, &a[0], &path, Some(&body)).expect("an answer");
        assert_eq!(code, status, "{method} {path}: {j}");
        let ctx = j
            .get("causal-context")
            .unwrap_or_else(|| panic!("{method} {path}: no context in {j}"))
            .clone();
        // The error's context still carries the session's own write: on the replica
        // that has not received it, a read must not answer 404 (the write is the
        // session's own) but 400, until the partition heals.
        let (code, j) = call(
            "GET",
            &a[1],
            "/kv-store/keys/k",
            Some(&json!({"causal-context": ctx})),
        )
        .expect("an answer");
        assert_eq!(
            code, 400,
            "after {method} {path} answered {status}, its context lost the session's write: {j}"
        );
    }
    cut.heal();
    let mut s = Session { ctx: after_write };
    wait_until(Duration::from_secs(5), || {
        value_of(&s.get(&a[1], "k").1).as_deref() == Some("mine")
    })
    .expect("the write arrives once the partition heals");
}
