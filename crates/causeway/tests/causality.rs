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

/// A session that read a write depends on everything the writing session did before
/// it, whatever keys those earlier writes touched: here a write of `c` then one of
/// `a`, both made at node 0. A second session reads `a` there, then `c` at node 1,
/// which has received neither (partitioned): it must not answer 404 for `c` (the first
/// write happened before the one it read) but refuse (400) until the partition heals.
#[test]
fn a_read_depends_on_the_earlier_writes_of_what_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(101, 2);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let cut = Partition::new(&a[..1], &a[1..]);
    let mut writer = Session::new();
    assert_eq!(writer.put(&a[0], "c", "first").0, 201);
    assert_eq!(writer.put(&a[0], "a", "second").0, 201);
    let mut reader = Session::new();
    let (code, j) = reader.get(&a[0], "a");
    assert_eq!(
        (code, value_of(&j).as_deref()),
        (200, Some("second")),
        "{j}"
    );
    let (code, j) = reader.get(&a[1], "c");
    assert_eq!(
        code, 400,
        "node 1 answered {code} for c, written before the a the session read: {j}"
    );
    cut.heal();
    wait_until(Duration::from_secs(5), || {
        value_of(&reader.get(&a[1], "c").1).as_deref() == Some("first")
    })
    .expect("the earlier write arrives once the partition heals");
}

/// libfaketime, from Debian's `faketime` package (installed by `scripts/test.sh`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Environment that skews a node's wall clock by `offset` (e.g. "+90s"); its
/// monotonic clock is left alone, as NTP leaves it.
fn skewed(offset: &'static str) -> Vec<(&'static str, &'static str)> {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install faketime"
    );
    vec![
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME", offset),
        ("DONT_FAKE_MONOTONIC", "1"),
    ]
}

#[test]
fn clock_skew_costs_no_write_and_never_reorders_a_causal_successor() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(42, 4);
    let clocks = [vec![], vec![], skewed("+90s"), skewed("-30s")];
    let _n: Vec<_> = a
        .iter()
        .zip(&clocks)
        .map(|(x, env)| NodeProc::start_with(x, &a, 2, dir.path(), env))
        .collect();
    let (ahead, behind) = (&a[2], &a[3]);
    let mut proxied = 0;
    for i in 0..16 {
        let key = format!("k{i}");
        // Session A writes through the node 90 s ahead.
        let mut alice = Session::new();
        let (code, j) = alice.put(ahead, &key, "from-alice");
        assert_eq!(code, 201, "{key}: {j}");
        // Session B learns of it (it starts from A's context, as if A told B), reads
        // it, then overwrites it through the node 30 s behind.
        let mut bob = Session {
            ctx: alice.ctx.clone(),
        };
        let mut read = None;
        wait_until(Duration::from_secs(5), || {
            let (code, j) = bob.get(behind, &key);
            assert!(matches!(code, 200 | 400), "{key}: went back in time: {j}");
            read = value_of(&j);
            code == 200
        })
        .expect("the read is answered once the write has spread");
        assert_eq!(read.as_deref(), Some("from-alice"), "{key}");
        let (code, j) = bob.put(behind, &key, "from-bob");
        assert_eq!(
            code, 200,
            "{key}: the write through the node behind failed: {j}"
        );
        if j.get("address").is_some() {
            proxied += 1;
        }
        // B's write follows A's causally: it wins on every replica, for everyone.
        for node in &a {
            let won = wait_until(Duration::from_secs(5), || {
                value_of(&Session::new().get(node, &key).1).as_deref() == Some("from-bob")
            });
            assert!(
                won.is_some(),
                "{key} at {node}: the causal successor lost: {}",
                Session::new().get(node, &key).1
            );
        }
    }
    assert!(proxied > 0, "some of the writes went to the other shard");
}

#[test]
fn the_read_rule_is_per_key_and_a_replica_lacking_the_sessions_write_says_updated() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(61, 2);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let (side1, side2) = (a[0].as_str(), a[1].as_str());
    let mut setup = Session::new();
    assert_eq!(setup.put(side1, "x", "long-ago").0, 201);
    wait_until(Duration::from_secs(5), || {
        value_of(&Session::new().get(side2, "x").1).as_deref() == Some("long-ago")
    })
    .expect("x reaches both replicas");

    let cut = Partition::new(&a[..1], &a[1..]);
    let mut s = Session {
        ctx: setup.ctx.clone(),
    };
    assert_eq!(s.put(side1, "y", "1").0, 201);
    // x's history is intact on side 2: the session's write of y does not matter to it.
    let (code, j) = s.get(side2, "x");
    assert_eq!(
        (code, value_of(&j).as_deref()),
        (200, Some("long-ago")),
        "{j}"
    );
    // y's own history is not: side 2 must not answer as if y did not exist.
    let (code, j) = s.get(side2, "y");
    assert_eq!(code, 400, "{j}");
    // The session added y through side 1; side 2 has not seen that, but the
    // session's context has: its PUT is an update.
    let (code, j) = s.put(side2, "y", "2");
    assert_eq!(
        (code, j["message"].as_str(), j["replaced"].as_bool()),
        (200, Some("Updated successfully"), Some(true)),
        "{j}"
    );
    // A key the session deleted through side 1 is gone for it on side 2 as well.
    assert_eq!(s.put(side1, "z", "1").0, 201);
    assert_eq!(s.delete(side1, "z").0, 200);
    let (code, j) = s.delete(side2, "z");
    assert_eq!(
        (code, j["error"].as_str()),
        (404, Some("Key does not exist")),
        "{j}"
    );
    cut.heal();
    wait_until(Duration::from_secs(5), || {
        let v1 = value_of(&Session::new().get(side1, "y").1);
        let v2 = value_of(&Session::new().get(side2, "y").1);
        v1.as_deref() == Some("2") && v2.as_deref() == Some("2")
    })
    .expect("the session's later write of y wins on both sides");
}
