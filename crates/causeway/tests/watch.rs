//! Watching a key (`GET /kv-store/keys/<key>?wait=S`) against real node processes: a
//! long-poll held by a replica of the key's shard, woken by a write or delete made
//! through another node, answering `"changed": false` when `S` runs out, and never
//! later than asked.

mod common;

use common::*;
use serde_json::{json, Value as Json};
use std::time::{Duration, Instant};

/// One GET with a wait, through a client whose own timeout is well past any wait.
fn watch(addr: &str, key: &str, wait: &str, ctx: &Json) -> (u16, Json, Duration) {
    request(
        "GET",
        addr,
        &format!("/kv-store/keys/{key}?wait={wait}"),
        &json!({"causal-context": ctx}),
        &[],
        Duration::from_secs(70),
    )
}

/// A 4-node cluster (2 shards of 2) and, for `key`, a node that replicates it and one
/// that must forward to its shard.
fn cluster(block: u8, dir: &std::path::Path) -> (Vec<String>, Vec<NodeProc>) {
    let a = addrs(block, 4);
    let nodes = a.iter().map(|x| NodeProc::start(x, &a, 2, dir)).collect();
    (a, nodes)
}

/// The nodes that serve `key` themselves (their answers carry no `address`).
fn replicas_of(a: &[String], key: &str) -> Vec<String> {
    a.iter()
        .filter(|x| {
            let (_, j) = call("GET", x, &format!("/kv-store/keys/{key}"), None).unwrap();
            j.get("address").is_none()
        })
        .cloned()
        .collect()
}

#[test]
fn a_watch_is_woken_by_a_write_through_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _nodes) = cluster(90, dir.path());
    let mut s = Session::new();
    assert_eq!(s.put(&a[0], "w", "v1").0, 201);
    let reps = replicas_of(&a, "w");
    assert_eq!(reps.len(), 2, "two replicas of w: {reps:?}");
    let other: Vec<String> = a.iter().filter(|x| !reps.contains(x)).cloned().collect();

    // Nothing new for this session: the watch waits, on a node that forwards it.
    let ctx = s.ctx.clone();
    let at = other[0].clone();
    let waiter = std::thread::spawn(move || watch(&at, "w", "20", &ctx));
    std::thread::sleep(Duration::from_millis(1500));
    let mut writer = Session::new();
    assert_eq!(writer.put(&other[1], "w", "v2").0, 200);
    let written = Instant::now();
    let (status, body, took) = waiter.join().unwrap();
    let woke_after = written.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], json!(true), "{body}");
    assert_eq!(body["value"], json!("v2"), "{body}");
    assert_eq!(body["doesExist"], json!(true), "{body}");
    assert!(
        took >= Duration::from_millis(1400),
        "answered before the write: {took:?}"
    );
    assert!(
        woke_after < Duration::from_secs(3),
        "the watch answered {woke_after:?} after the write"
    );

    // With the answer's context, a delete through the other replica wakes it again.
    let ctx = body["causal-context"].clone();
    let at = reps[0].clone();
    let waiter = std::thread::spawn(move || watch(&at, "w", "20", &ctx));
    std::thread::sleep(Duration::from_millis(1000));
    let mut deleter = Session::new();
    deleter.get(&reps[1], "w");
    assert_eq!(deleter.delete(&reps[1], "w").0, 200);
    let (status, body, took) = waiter.join().unwrap();
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["changed"], json!(true), "{body}");
    assert_eq!(body["doesExist"], json!(false), "{body}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_watch_with_nothing_new_answers_unchanged_when_the_wait_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _nodes) = cluster(91, dir.path());
    let mut s = Session::new();
    assert_eq!(s.put(&a[1], "quiet", "v1").0, 201);

    // Without a context the write is news: the answer is immediate.
    let (status, body, took) = watch(&a[2], "quiet", "10", &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], json!(true), "{body}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // With it, every node waits out the full wait, then answers with the value.
    for at in &a {
        let (status, body, took) = watch(at, "quiet", "1.5", &s.ctx);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["changed"], json!(false), "{body}");
        assert_eq!(body["value"], json!("v1"), "{body}");
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_millis(3000),
            "{at}: {took:?}"
        );
        assert!(body.get("causal-context").is_some_and(|c| c.is_object()));
    }

    // A key nobody wrote: nothing to report until the wait ends, then 404.
    let (status, body, took) = watch(&a[0], "never", "1", &s.ctx);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["changed"], json!(false), "{body}");
    assert!(took >= Duration::from_millis(1000), "{took:?}");

    // `wait=0` is a plain read with the flag.
    let (status, body, took) = watch(&a[3], "quiet", "0", &s.ctx);
    assert_eq!((status, body["changed"].clone()), (200, json!(false)));
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn a_bad_wait_is_refused_with_the_session_context() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _nodes) = cluster(92, dir.path());
    let mut s = Session::new();
    assert_eq!(s.put(&a[0], "k", "v").0, 201);
    for bad in ["61", "-1", "soon", "", "NaN", "inf"] {
        let (status, body, _) = watch(&a[1], "k", bad, &s.ctx);
        assert_eq!(status, 400, "wait={bad}: {body}");
        assert_eq!(body["message"], json!("Error in GET"), "{body}");
        assert_eq!(body["error"], json!("Invalid wait"), "{body}");
        assert_eq!(body["causal-context"], s.ctx, "the context is kept");
    }
    let (status, body) = call(
        "PUT",
        &a[1],
        "/kv-store/keys/k?wait=5",
        Some(&json!({"value": "x", "causal-context": s.ctx})),
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], json!("Invalid wait"), "{body}");
}

#[test]
fn the_cli_prints_each_change_as_it_happens() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(93, 2);
    let _nodes: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let session = dir.path().join("session.json");
    let mut child = std::process::Command::new(BIN)
        .args(["watch", "cli-key", "--wait", "10", "--count", "3"])
        .args(["--node", &a[0], "--session"])
        .arg(&session)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    std::thread::sleep(Duration::from_millis(500));
    // Each change is written through the other node once the previous one is printed.
    let mut writer = Session::new();
    assert_eq!(writer.put(&a[1], "cli-key", "first").0, 201);
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    assert_eq!(writer.put(&a[1], "cli-key", "second").0, 200);
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert_eq!(writer.delete(&a[1], "cli-key").0, 200);
    assert_eq!(lines.next().unwrap().unwrap(), "(deleted)");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The session file holds the context of the last answer: the delete is seen.
    let saved: Json = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    let (code, body, took) = watch(&a[0], "cli-key", "1", &saved["causal-context"]);
    assert_eq!(
        (code, body["changed"].clone()),
        (404, json!(false)),
        "{body}"
    );
    assert!(took >= Duration::from_secs(1));
}
