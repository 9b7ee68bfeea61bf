//! Numbers exactly as they came (`API-EXTENSIONS.md`), against real node processes:
//! a numeric value is handed back with the very text it was sent with, on the node
//! written, on the other replica, after a restart, after a hand-over, in a batch and
//! in a listing. Every check reads the raw response bytes: parsing them into a
//! `serde_json::Value` would itself normalise the number.

mod common;

use common::*;
use std::time::Duration;

/// Number texts as the client sends them, each one kept byte for byte.
const NUMBERS: [&str; 7] = [
    "1e2",
    "1E+2",
    "10.50",
    "-0",
    "123456789012345678901234567890",
    "0.1e-7",
    "10",
];

fn key(i: usize) -> String {
    format!("num{i}")
}

fn get_text(addr: &str, key: &str) -> (u16, String) {
    call_text(
        "GET",
        addr,
        &format!("/kv-store/keys/{key}"),
        br#"{"causal-context": {}}"#.to_vec(),
    )
    .unwrap_or_else(|| panic!("GET {key} at {addr}: no answer"))
}

/// Whether `addr` answers every key with its number's exact text.
fn holds_all(addr: &str) -> bool {
    NUMBERS.iter().enumerate().all(|(i, n)| {
        let (code, body) = get_text(addr, &key(i));
        code == 200 && body.contains(&format!(r#""value":{n},"#))
    })
}

fn assert_holds_all(addr: &str, when: &str) {
    for (i, n) in NUMBERS.iter().enumerate() {
        let (code, body) = get_text(addr, &key(i));
        assert_eq!(code, 200, "{when}: GET {} at {addr}: {body}", key(i));
        assert!(
            body.contains(&format!(r#""value":{n},"#)),
            "{when}: GET {} at {addr} should give back {n} exactly: {body}",
            key(i)
        );
    }
}

fn assert_batch_get(addr: &str, when: &str) {
    let ops: Vec<String> = (0..NUMBERS.len())
        .map(|i| format!(r#"{{"op": "get", "key": "{}"}}"#, key(i)))
        .collect();
    let body = format!(r#"{{"ops": [{}], "causal-context": {{}}}}"#, ops.join(","));
    let (code, text) = call_text("POST", addr, "/kv-store/batch", body.into_bytes())
        .unwrap_or_else(|| panic!("batch at {addr}: no answer"));
    assert_eq!(code, 200, "{when}: batch at {addr}: {text}");
    for n in NUMBERS {
        assert!(
            text.contains(&format!(r#""value":{n}}}"#)),
            "{when}: batch get at {addr} should give back {n} exactly: {text}"
        );
    }
}

fn assert_listing(addr: &str, when: &str) {
    let (code, text) = call_text(
        "GET",
        addr,
        "/kv-store/keys?prefix=num&values=true",
        br#"{"causal-context": {}}"#.to_vec(),
    )
    .unwrap_or_else(|| panic!("listing at {addr}: no answer"));
    assert_eq!(code, 200, "{when}: listing at {addr}: {text}");
    for (i, n) in NUMBERS.iter().enumerate() {
        let item = format!(r#"{{"key":"{}","value":{n}}}"#, key(i));
        assert!(
            text.contains(&item),
            "{when}: the listing at {addr} should hold {item}: {text}"
        );
    }
}

fn put_text(addr: &str, key: &str, body: &str) -> (u16, String) {
    call_text(
        "PUT",
        addr,
        &format!("/kv-store/keys/{key}"),
        body.as_bytes().to_vec(),
    )
    .unwrap_or_else(|| panic!("PUT {key} at {addr}: no answer"))
}

#[test]
fn numbers_come_back_as_they_came_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(100, 4);
    let (old, new) = (&a[..2], &a[2..]);
    // Nodes 3 and 4 wait outside the view until the hand-over adds them.
    let mut nodes: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, old, 2, dir.path()))
        .collect();

    for (i, n) in NUMBERS.iter().enumerate() {
        // Odd spacing around the number: only the number's own text is kept.
        let body = format!(r#"{{"value" :  {n} , "causal-context": {{}}}}"#);
        let (code, text) = put_text(&old[0], &key(i), &body);
        assert_eq!(code, 201, "PUT {n}: {text}");
    }
    // A string that looks like a number stays a string.
    let (code, text) = put_text(&old[0], "str", r#"{"value": "1e2"}"#);
    assert_eq!(code, 201, "{text}");
    assert!(get_text(&old[0], "str").1.contains(r#""value":"1e2","#));

    assert_holds_all(&old[0], "on the node written");
    assert_batch_get(&old[0], "on the node written");
    assert_listing(&old[0], "on the node written");

    wait_until(Duration::from_secs(10), || holds_all(&old[1]))
        .expect("the other replica receives every number");
    assert_holds_all(&old[1], "on the other replica");

    // Restart (SIGKILL): the numbers come back from disk as they were.
    nodes[1].restart();
    assert_holds_all(&old[1], "after a restart");
    assert_batch_get(&old[1], "after a restart");
    assert_listing(&old[1], "after a restart");

    // Batch writes keep the text too.
    let body = r#"{"ops": [{"op": "put", "key": "bnum", "value": 2.50E-3}], "causal-context": {}}"#;
    let (code, text) = call_text("POST", &old[0], "/kv-store/batch", body.into()).unwrap();
    assert_eq!(code, 200, "{text}");
    assert!(get_text(&old[0], "bnum").1.contains(r#""value":2.50E-3,"#));

    // Hand-over: the whole shard moves to the two nodes outside the old view.
    let body = format!(r#"{{"view": "{}", "repl-factor": 2}}"#, new.join(","));
    let (code, text) = call_text("PUT", &old[0], "/kv-store/view-change", body.into()).unwrap();
    assert_eq!(code, 200, "view change: {text}");
    let expected = NUMBERS.len() as u64 + 2;
    wait_until(Duration::from_secs(30), || {
        new.iter().all(|n| key_count(n) == Some(expected))
    })
    .expect("the new replicas receive every key");
    for n in new {
        assert_holds_all(n, "after the hand-over");
        assert_batch_get(n, "after the hand-over");
        assert_listing(n, "after the hand-over");
    }
    assert!(get_text(&new[1], "bnum").1.contains(r#""value":2.50E-3,"#));
}

#[test]
fn malformed_numbers_and_other_types_get_the_same_errors() {
    let dir = tempfile::tempdir().unwrap();
    // One node, on the block's fifth address (the other test uses the first four).
    let a = vec!["127.100.0.5:13800".to_string()];
    let _n = NodeProc::start(&a[0], &a, 1, dir.path());
    let bad_body = r#""error":"Failed to parse request body","message":"Error in PUT""#;
    let bad_type = r#""error":"Value must be a string or a number","message":"Error in PUT""#;
    let missing = r#""error":"Value is missing","message":"Error in PUT""#;
    for (value, expected) in [
        ("01", bad_body),
        ("1.", bad_body),
        (".5", bad_body),
        ("+1", bad_body),
        ("1e", bad_body),
        ("0x10", bad_body),
        ("NaN", bad_body),
        ("Infinity", bad_body),
        ("1e400", bad_body),
        ("true", bad_type),
        ("[1e2]", bad_type),
        (r#"{"n": 1e2}"#, bad_type),
        ("null", missing),
    ] {
        let (code, text) = put_text(&a[0], "k", &format!(r#"{{"value": {value}}}"#));
        assert_eq!(code, 400, "{value}: {text}");
        assert!(text.contains(expected), "{value}: {text}");
    }
    for (value, expected) in [
        (
            "01",
            r#""error":"Failed to parse request body","message":"Error in BATCH""#,
        ),
        (
            "true",
            r#""error":"op 0: Value must be a string or a number","message":"Error in BATCH""#,
        ),
    ] {
        let body = format!(r#"{{"ops": [{{"op": "put", "key": "k", "value": {value}}}]}}"#);
        let (code, text) = call_text("POST", &a[0], "/kv-store/batch", body.into()).unwrap();
        assert_eq!(code, 400, "{value}: {text}");
        assert!(text.contains(expected), "{value}: {text}");
    }
    // Nothing was written.
    assert_eq!(get_text(&a[0], "k").0, 404);
}
