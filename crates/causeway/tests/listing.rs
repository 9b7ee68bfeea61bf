//! Listing keys (`GET /kv-store/keys?...`) against real node processes: pages in byte
//! order across shards, prefixes, values, deleted keys left out, and the session's
//! context honoured shard by shard under a real partition.

mod common;

use common::*;
use serde_json::{json, Value as Json};
use std::time::Duration;

fn list(addr: &str, query: &str, ctx: &Json) -> (u16, Json) {
    call(
        "GET",
        addr,
        &format!("/kv-store/keys{query}"),
        Some(&json!({"causal-context": ctx})),
    )
    .expect("an answer")
}

fn keys(j: &Json) -> Vec<String> {
    j["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys in {j}"))
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pages_cover_every_shard_in_byte_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(51, 4);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let mut s = Session::new();
    for i in 0..25 {
        assert!(matches!(
            s.put(&a[i % 4], &format!("p{i:02}"), &format!("v{i}")).0,
            200 | 201
        ));
    }
    for i in 0..5 {
        s.put(&a[i % 4], &format!("q{i}"), "other");
    }
    assert_eq!(s.delete(&a[1], "p13").0, 200);

    let expected: Vec<String> = (0..25)
        .filter(|i| *i != 13)
        .map(|i| format!("p{i:02}"))
        .collect();
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let query = match &after {
            Some(k) => format!("?prefix=p&limit=10&start-after={k}"),
            None => "?prefix=p&limit=10".to_string(),
        };
        let (code, j) = list(&a[2], &query, &s.ctx);
        assert_eq!(code, 200, "{j}");
        assert_eq!(j["message"], json!("Keys listed successfully"));
        got.extend(keys(&j));
        match j["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(
        got, expected,
        "every live key with the prefix, once, in order"
    );
    // Values, and everything without a prefix.
    let (code, j) = list(&a[0], "?prefix=q&values=true", &s.ctx);
    assert_eq!(code, 200, "{j}");
    assert_eq!(j["items"][0], json!({"key": "q0", "value": "other"}));
    assert_eq!(j["items"].as_array().unwrap().len(), 5);
    let (_, j) = list(&a[3], "?limit=1000", &s.ctx);
    assert_eq!(keys(&j).len(), 29);
    assert_eq!(j["next"], Json::Null);
    // Bad parameters.
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?limit=x",
        "?values=maybe",
        "?colour=red",
    ] {
        let (code, j) = list(&a[0], bad, &s.ctx);
        assert_eq!(
            (code, j["message"].clone()),
            (400, json!("Error in LIST")),
            "{bad}: {j}"
        );
    }
}

#[test]
fn a_replica_that_lacks_the_sessions_writes_does_not_list_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(52, 2);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let mut s = Session::new();
    s.put(&a[0], "old", "1");
    wait_until(Duration::from_secs(5), || key_count(&a[1]) == Some(1)).unwrap();
    let cut = Partition::new(&a[..1], &a[1..]);
    assert_eq!(s.put(&a[0], "new", "2").0, 201);
    // Side 2 cannot list the shard without the session's write, and cannot fetch it.
    let (code, j) = list(&a[1], "", &s.ctx);
    assert_eq!(
        (code, j["error"].clone()),
        (400, json!("Unable to satisfy request")),
        "{j}"
    );
    // Without that history it lists what it has; side 1 lists both.
    let (code, j) = list(&a[1], "", &json!({}));
    assert_eq!((code, keys(&j)), (200, vec!["old".to_string()]));
    let (code, j) = list(&a[0], "", &s.ctx);
    assert_eq!(
        (code, keys(&j)),
        (200, vec!["new".to_string(), "old".to_string()])
    );
    cut.heal();
    wait_until(Duration::from_secs(5), || list(&a[1], "", &s.ctx).0 == 200)
        .expect("side 2 lists once the write arrives");
}
