//! Expiry (`"ttl"` on PUT) against real node processes: a key that expires is gone on
//! every replica, stays gone across a restart and a partition heal, leaves listings and
//! `key-count`, and a session that has seen it expire never sees it alive again, even
//! on a node whose clock is behind (libfaketime).

mod common;

use common::*;
use serde_json::{json, Value as Json};
use std::time::Duration;

fn put_ttl(s: &mut Session, addr: &str, key: &str, value: &str, ttl: Json) -> (u16, Json) {
    let body = json!({"value": value, "ttl": ttl, "causal-context": s.ctx});
    let (code, j) = call("PUT", addr, &format!("/kv-store/keys/{key}"), Some(&body))
        .unwrap_or_else(|| panic!("PUT {key} at {addr}: no answer"));
    if let Some(c) = j.get("causal-context") {
        s.ctx = c.clone();
    }
    (code, j)
}

fn listed(addr: &str) -> Vec<String> {
    let (code, j) = call("GET", addr, "/kv-store/keys", None).expect("an answer");
    assert_eq!(code, 200, "{j}");
    j["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_expired_key_is_gone_everywhere_and_stays_gone_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(94, 2);
    let mut nodes: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let mut s = Session::new();
    assert_eq!(
        put_ttl(&mut s, &a[0], "brief", "soon gone", json!(3)).0,
        201
    );
    assert_eq!(s.put(&a[0], "lasting", "here").0, 201);

    // While it lives, a GET tells how long it has left; a key without ttl does not.
    let (code, j) = s.get(&a[1], "brief");
    assert_eq!(code, 200, "{j}");
    let left = j["ttl"].as_u64().unwrap_or_else(|| panic!("no ttl: {j}"));
    assert!(left <= 3, "{j}");
    assert!(s.get(&a[1], "lasting").1.get("ttl").is_none());
    assert_eq!(listed(&a[0]), ["brief", "lasting"]);
    assert_eq!(key_count(&a[0]), Some(2));

    std::thread::sleep(Duration::from_millis(3300));
    for at in &a {
        let (code, j) = s.get(at, "brief");
        assert_eq!(
            (code, j["doesExist"].clone()),
            (404, json!(false)),
            "{at}: {j}"
        );
        let (code, j) = Session::new().get(at, "brief");
        assert_eq!(code, 404, "a new session at {at}: {j}");
        assert_eq!(listed(at), ["lasting"], "{at}");
    }
    assert_eq!(Session::new().delete(&a[1], "brief").0, 404);
    // Reclaimed: key-count stops counting it.
    wait_until(Duration::from_secs(30), || {
        a.iter().all(|x| key_count(x) == Some(1))
    })
    .unwrap_or_else(|| {
        panic!(
            "key-count still counts the expired key: {:?}",
            a.iter().map(|x| key_count(x)).collect::<Vec<_>>()
        )
    });

    // A restart brings nothing back.
    nodes[0].kill9();
    nodes[0].restart();
    for at in &a {
        assert_eq!(Session::new().get(at, "brief").0, 404, "{at}");
        assert_eq!(key_count(at), Some(1), "{at}");
    }
    assert_eq!(s.get(&a[0], "lasting").0, 200);
}

#[test]
fn a_put_without_ttl_makes_the_key_permanent_again() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(95, 1);
    let _n = NodeProc::start(&a[0], &a, 1, dir.path());
    let mut s = Session::new();
    assert_eq!(put_ttl(&mut s, &a[0], "k", "v1", json!(1)).0, 201);
    assert_eq!(s.put(&a[0], "k", "v2").0, 200);
    // A TTL write over an expired key adds it anew.
    assert_eq!(put_ttl(&mut s, &a[0], "gone", "x", json!(0.5)).0, 201);
    std::thread::sleep(Duration::from_millis(1500));
    let (code, j) = s.get(&a[0], "k");
    assert_eq!((code, j["value"].clone()), (200, json!("v2")), "{j}");
    assert!(j.get("ttl").is_none(), "{j}");
    let (code, j) = put_ttl(&mut s, &a[0], "gone", "y", json!(100));
    assert_eq!((code, j["replaced"].clone()), (201, json!(false)), "{j}");

    for bad in [
        json!(0),
        json!(-1),
        json!("10"),
        json!(315_360_001),
        json!(null),
        json!([1]),
    ] {
        let (code, j) = put_ttl(&mut s, &a[0], "k", "v3", bad.clone());
        assert_eq!(code, 400, "ttl {bad}: {j}");
        assert_eq!(j["message"], json!("Error in PUT"), "{j}");
        assert_eq!(j["error"], json!("Invalid ttl"), "{j}");
    }
    assert_eq!(s.get(&a[0], "k").1["value"], json!("v2"), "nothing applied");
}

#[test]
fn expiry_survives_a_partition_heal_and_a_slow_clock() {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(lib).exists(),
        "{lib} is missing: apt-get install faketime"
    );
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(96, 2);
    let n1 = NodeProc::start(&a[0], &a, 2, dir.path());
    // Node 2's clock is 30 s behind.
    let n2 = NodeProc::start_with(
        &a[1],
        &a,
        2,
        dir.path(),
        &[
            ("LD_PRELOAD", lib),
            ("FAKETIME", "-30s"),
            ("DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let mut s = Session::new();
    {
        let _cut = Partition::new(&a[..1], &a[1..]);
        assert_eq!(put_ttl(&mut s, &a[0], "t", "v", json!(2)).0, 201);
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(s.get(&a[0], "t").0, 404);
    }
    // Healed: anti-entropy carries the write over, and it arrives already expired for
    // this session, although node 2's clock says it has 28 s to live.
    let mut reached = false;
    for _ in 0..100 {
        let (code, j) = s.get(&a[1], "t");
        match code {
            404 => {
                reached = true;
                break;
            }
            400 => std::thread::sleep(Duration::from_millis(100)),
            _ => panic!("the session saw t expire, node 2 answers {code}: {j}"),
        }
    }
    assert!(reached, "node 2 never caught up");
    // And it stays gone for the session however often it asks.
    for _ in 0..5 {
        assert_eq!(s.get(&a[1], "t").0, 404);
    }
    // Once node 2's own clock passes the expiry too, it reclaims it: key-count 0 on both.
    wait_until(Duration::from_secs(60), || {
        key_count(&a[0]) == Some(0) && key_count(&a[1]) == Some(0)
    })
    .unwrap_or_else(|| {
        panic!(
            "expired key still counted: {:?} {:?}",
            key_count(&a[0]),
            key_count(&a[1])
        )
    });
    drop((n1, n2));
}
