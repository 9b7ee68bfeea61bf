//! Tests against real node processes (the `causeway` binary): the client contract byte
//! for byte, durability across SIGKILL, configuration errors, and multi-node scenarios
//! with real network partitions (iptables rules between node addresses).

mod common;

use common::*;
use serde_json::{json, Value as Json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The response without its causal-context (which must be a JSON object).
fn strip(j: &Json) -> Json {
    let mut j = j.clone();
    let ctx = j.as_object_mut().expect("object").remove("causal-context");
    assert!(
        ctx.is_some_and(|c| c.is_object()),
        "causal-context must be an object in {j}"
    );
    j
}

#[test]
fn contract_on_a_single_node() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(20, 1);
    let _n = NodeProc::start(&a[0], &a, 1, dir.path());
    let n = a[0].as_str();
    let body = |v: Json| Some(v);
    let req = |m: &str, p: &str, b: Option<Json>| call(m, n, p, b.as_ref()).unwrap();

    let (s, j) = req(
        "PUT",
        "/kv-store/keys/x",
        body(json!({"value": "1", "causal-context": {}})),
    );
    assert_eq!(
        (s, strip(&j)),
        (
            201,
            json!({"message": "Added successfully", "replaced": false})
        )
    );
    let (s, j) = req(
        "PUT",
        "/kv-store/keys/x",
        body(json!({"value": "2", "causal-context": j["causal-context"]})),
    );
    assert_eq!(
        (s, strip(&j)),
        (
            200,
            json!({"message": "Updated successfully", "replaced": true})
        )
    );
    let (s, j) = req("GET", "/kv-store/keys/x", body(json!({})));
    assert_eq!(
        (s, strip(&j)),
        (
            200,
            json!({"message": "Retrieved successfully", "doesExist": true, "value": "2"})
        )
    );
    let (s, j) = req(
        "PUT",
        "/kv-store/keys/x",
        body(json!({"causal-context": {}})),
    );
    assert_eq!(
        (s, strip(&j)),
        (
            400,
            json!({"message": "Error in PUT", "error": "Value is missing"})
        )
    );
    let long = "k".repeat(51);
    let (s, j) = req(
        "PUT",
        &format!("/kv-store/keys/{long}"),
        body(json!({"value": "v"})),
    );
    assert_eq!(
        (s, strip(&j)),
        (
            400,
            json!({"message": "Error in PUT", "error": "Key is too long"})
        )
    );
    let fifty = "k".repeat(50);
    assert_eq!(
        req(
            "PUT",
            &format!("/kv-store/keys/{fifty}"),
            body(json!({"value": "v"}))
        )
        .0,
        201
    );
    let (s, j) = req("GET", "/kv-store/keys/nope", body(json!({})));
    assert_eq!(
        (s, strip(&j)),
        (
            404,
            json!({"message": "Error in GET", "error": "Key does not exist", "doesExist": false})
        )
    );
    let (s, j) = req("DELETE", "/kv-store/keys/x", body(json!({})));
    assert_eq!(
        (s, strip(&j)),
        (
            200,
            json!({"message": "Deleted successfully", "doesExist": true})
        )
    );
    let (s, j) = req(
        "DELETE",
        "/kv-store/keys/x",
        body(json!({"causal-context": j["causal-context"]})),
    );
    assert_eq!(
        (s, strip(&j)),
        (
            404,
            json!({"message": "Error in DELETE", "error": "Key does not exist", "doesExist": false})
        )
    );
    let (s, _) = req("GET", "/kv-store/keys/x", body(json!({})));
    assert_eq!(s, 404, "deleted keys do not exist");
    for m in ["PUT", "GET", "DELETE"] {
        let (s, j) = call_raw(m, n, "/kv-store/keys/x", b"{not json".to_vec()).unwrap();
        assert_eq!(
            (s, strip(&j)),
            (
                400,
                json!({"message": format!("Error in {m}"), "error": "Failed to parse request body"})
            )
        );
    }
    // Numbers come back as numbers; the /kvs alias is the same store.
    assert_eq!(req("PUT", "/kvs/keys/n", body(json!({"value": 10}))).0, 201);
    let (_, j) = req("GET", "/kv-store/keys/n", body(json!({})));
    assert_eq!(j["value"], json!(10));
    // Cluster information.
    let (s, j) = req("GET", "/kv-store/key-count", None);
    assert_eq!(
        (s, strip(&j)),
        (
            200,
            json!({"message": "Key count retrieved successfully", "key-count": 2, "shard-id": "1"})
        )
    );
    let (s, j) = req("GET", "/kv-store/shards", None);
    assert_eq!(
        (s, strip(&j)),
        (
            200,
            json!({"message": "Shard membership retrieved successfully", "shards": ["1"]})
        )
    );
    let (s, j) = req("GET", "/kv-store/shards/1", None);
    assert_eq!(
        (s, strip(&j)),
        (
            200,
            json!({"message": "Shard information retrieved successfully", "shard-id": "1", "key-count": 2, "replicas": [n]})
        )
    );
    // Errors are JSON with a causal-context too.
    for (m, p, b, code) in [
        ("GET", "/kv-store/shards/9", b"{}".to_vec(), 404),
        ("GET", "/no/such/path", b"{}".to_vec(), 404),
        ("POST", "/kv-store/keys/x", b"{}".to_vec(), 405),
        ("PATCH", "/kv-store/shards", b"{}".to_vec(), 405),
        (
            "PUT",
            "/kv-store/keys/t",
            br#"{"value": true}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            "/kv-store/keys/t",
            br#"{"value": {"a": 1}}"#.to_vec(),
            400,
        ),
        ("PUT", "/kv-store/keys/t", br#"[1, 2]"#.to_vec(), 400),
        (
            "PUT",
            "/kv-store/keys/t",
            format!(r#"{{"value": "{}"}}"#, "v".repeat(3 << 20)).into_bytes(),
            413,
        ),
        (
            "PUT",
            "/kv-store/view-change",
            br#"{"view": "nope", "repl-factor": 1}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            "/kv-store/view-change",
            br#"{"view": 5}"#.to_vec(),
            400,
        ),
        ("POST", "/internal/rpc", b"garbage".to_vec(), 400),
        // The internal stream only upgrades; a plain GET gets a JSON error.
        ("GET", "/internal/stream", vec![], 400),
    ] {
        let (s, j) = call_raw(m, n, p, b).unwrap();
        assert_eq!(s, code, "{m} {p}: {j}");
        let j = strip(&j);
        assert!(
            j["message"].is_string() && j["error"].is_string(),
            "{m} {p}: {j}"
        );
    }
    assert_eq!(
        req("GET", "/health", None).0,
        200,
        "node still up after bad input"
    );
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(21, 1);
    let mut node = NodeProc::start(&a[0], &a, 1, dir.path());
    // Concurrent writers so that writes share syncs.
    let acked = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for t in 0..8 {
            let (acked, addr) = (acked.clone(), a[0].clone());
            s.spawn(move || {
                for i in 0..60 {
                    let key = format!("t{t}-{i}");
                    let (code, _) = call(
                        "PUT",
                        &addr,
                        &format!("/kv-store/keys/{key}"),
                        Some(&json!({"value": key})),
                    )
                    .unwrap();
                    assert_eq!(code, 201);
                    acked.lock().unwrap().push(key);
                }
            });
        }
    });
    let (code, _) = call("DELETE", &a[0], "/kv-store/keys/t0-0", None).unwrap();
    assert_eq!(code, 200);
    node.restart();
    let acked = acked.lock().unwrap();
    for key in acked.iter().filter(|k| *k != "t0-0") {
        let (code, j) = call("GET", &a[0], &format!("/kv-store/keys/{key}"), None).unwrap();
        assert_eq!(
            (code, value_of(&j).as_deref()),
            (200, Some(key.as_str())),
            "{key} lost"
        );
    }
    assert_eq!(
        call("GET", &a[0], "/kv-store/keys/t0-0", None).unwrap().0,
        404,
        "delete lost"
    );
    assert_eq!(key_count(&a[0]), Some(acked.len() as u64 - 1));
    // A write after restart continues the numbering: it replaces, never collides.
    let (code, _) = call(
        "PUT",
        &a[0],
        "/kv-store/keys/t1-1",
        Some(&json!({"value": "again"})),
    )
    .unwrap();
    assert_eq!(code, 200);
}

#[test]
fn bad_configuration_exits_with_one_line() {
    for (env, needle) in [
        (vec![("ADDRESS", "not-an-address")], "ADDRESS"),
        (
            vec![("ADDRESS", "127.0.0.1:1"), ("REPL_FACTOR", "0")],
            "REPL_FACTOR",
        ),
        (
            vec![("ADDRESS", "127.0.0.1:1"), ("REPL_FACTOR", "x")],
            "REPL_FACTOR",
        ),
        (
            vec![
                ("ADDRESS", "127.0.0.1:1"),
                ("VIEW", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"),
                ("REPL_FACTOR", "2"),
            ],
            "multiple",
        ),
        (
            vec![("ADDRESS", "127.0.0.1:1"), ("VIEW", "127.0.0.1:1,bogus")],
            "VIEW",
        ),
        (vec![("ADDRESS", "127.0.0.1:1"), ("PORT", "99999")], "PORT"),
    ] {
        let out = std::process::Command::new(BIN)
            .arg("serve")
            .arg("--in-memory")
            .env_remove("VIEW")
            .env_remove("REPL_FACTOR")
            .env_remove("PORT")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{env:?}: {err}");
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{env:?}: {err}"
        );
    }
}

#[test]
fn a_node_outside_the_view_starts_and_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(22, 3);
    let view = a[..2].to_vec();
    let _n1 = NodeProc::start(&a[0], &view, 2, dir.path());
    let _n2 = NodeProc::start(&a[1], &view, 2, dir.path());
    let _out = NodeProc::start(&a[2], &view, 2, dir.path());
    let mut s = Session::new();
    let (code, j) = s.put(&a[2], "k", "v");
    assert_eq!(code, 201);
    assert!(
        view.contains(&j["address"].as_str().unwrap().to_string()),
        "{j}"
    );
    let (code, j) = s.get(&a[2], "k");
    assert_eq!((code, value_of(&j).as_deref()), (200, Some("v")));
    let (_, j) = call("GET", &a[2], "/kv-store/shards/1", None).unwrap();
    assert_eq!(j["replicas"], json!(view));
    assert_eq!(j["key-count"], json!(1));
}

#[test]
fn alice_bob_carol_with_a_real_partition() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(23, 2);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let (side1, side2) = (a[0].as_str(), a[1].as_str());
    let mut setup = Session::new();
    setup.put(side1, "a", "old");
    wait_until(Duration::from_secs(2), || {
        value_of(&Session::new().get(side2, "a").1).as_deref() == Some("old")
    })
    .unwrap();

    let cut = Partition::new(&a[..1], &a[1..]);
    let mut alice = Session::new();
    assert_eq!(alice.put(side1, "a", "new").0, 200);
    let mut bob = Session::new();
    assert_eq!(value_of(&bob.get(side1, "a").1).as_deref(), Some("new"));
    let t = std::time::Instant::now();
    assert_eq!(
        bob.put(side2, "b", "from-bob").0,
        201,
        "writes never wait for missing dependencies"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    let mut carol = Session::new();
    assert_eq!(
        value_of(&carol.get(side2, "b").1).as_deref(),
        Some("from-bob")
    );
    let (code, j) = carol.get(side2, "a");
    assert_eq!(
        (code, strip(&j)),
        (
            400,
            json!({"message": "Error in GET", "error": "Unable to satisfy request"})
        )
    );
    assert_eq!(alice.put(side2, "a", "newer").0, 200);
    let (code, j) = carol.get(side2, "a");
    assert_eq!((code, value_of(&j).as_deref()), (200, Some("newer")));

    // Concurrent writes of one key on both sides: both acknowledged as if alone.
    assert_eq!(Session::new().put(side1, "c", "left").0, 201);
    assert_eq!(Session::new().put(side2, "c", "right").0, 201);
    cut.heal();
    wait_until(Duration::from_secs(3), || {
        let v1 = value_of(&Session::new().get(side1, "c").1);
        let v2 = value_of(&Session::new().get(side2, "c").1);
        v1.is_some()
            && v1 == v2
            && value_of(&Session::new().get(side1, "a").1).as_deref() == Some("newer")
    })
    .expect("replicas converge after the partition heals");
}

#[test]
fn partition_heals_thousands_of_keys_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(24, 2);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let cut = Partition::new(&a[..1], &a[1..]);
    std::thread::scope(|s| {
        for (side, addr) in a.iter().enumerate() {
            s.spawn(move || {
                for i in 0..1500 {
                    let (code, _) = call(
                        "PUT",
                        addr,
                        &format!("/kv-store/keys/s{side}-{i}"),
                        Some(&json!({"value": "v"})),
                    )
                    .unwrap();
                    assert_eq!(code, 201);
                }
            });
        }
    });
    assert_eq!(key_count(&a[0]), Some(1500));
    let healed = std::time::Instant::now();
    cut.heal();
    wait_until(Duration::from_secs(2), || {
        key_count(&a[0]) == Some(3000) && key_count(&a[1]) == Some(3000)
    })
    .expect("3000 divergent keys converge within 2 s of healing");
    println!("converged {:?} after healing", healed.elapsed());
}

#[test]
fn wiped_replica_and_sigkill_under_load_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(25, 2);
    let mut nodes: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    // Load on node 1 while node 1 is killed: every acknowledged write survives.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| {
        for t in 0..4 {
            let (acked, stop, addr) = (acked.clone(), stop.clone(), a[0].clone());
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("w{t}-{i}");
                    if let Some((201, _)) = call(
                        "PUT",
                        &addr,
                        &format!("/kv-store/keys/{key}"),
                        Some(&json!({"value": key})),
                    ) {
                        acked.lock().unwrap().insert(key);
                    }
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(700));
        nodes[0].kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    nodes[0].restart();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "load ran ({} writes)", acked.len());
    // Writes that were durable but whose answer the kill cut off may exist too.
    let total = key_count(&a[0]).unwrap();
    assert!(total >= acked.len() as u64);
    wait_until(Duration::from_secs(3), || key_count(&a[1]) == Some(total))
        .expect("replica caught up");
    // Wipe node 2 and restart it empty: anti-entropy repairs it.
    nodes[1].wipe_and_restart();
    wait_until(Duration::from_secs(5), || key_count(&a[1]) == Some(total))
        .expect("wiped replica repaired");
    for key in &acked {
        for addr in &a {
            let (code, j) = call("GET", addr, &format!("/kv-store/keys/{key}"), None).unwrap();
            assert_eq!(
                (code, value_of(&j)),
                (200, Some(key.clone())),
                "{key} on {addr}"
            );
        }
    }
}

#[test]
fn view_change_under_write_load_and_proxy_failover() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(26, 6);
    let old = a[..4].to_vec();
    let mut nodes: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &old, 2, dir.path()))
        .collect();
    for i in 0..120 {
        let (code, _) = call(
            "PUT",
            &a[i % 4],
            &format!("/kv-store/keys/key{i}"),
            Some(&json!({"value": format!("v{i}")})),
        )
        .unwrap();
        assert_eq!(code, 201);
    }
    let before: Vec<u64> = (0..4).map(|i| key_count(&a[i]).unwrap()).collect();
    // Writes keep coming while the view changes.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let resp = std::thread::scope(|s| {
        let (acked2, stop2, addrs2) = (acked.clone(), stop.clone(), a.clone());
        s.spawn(move || {
            let mut i = 0;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("live{i}");
                if let Some((201, _)) = call(
                    "PUT",
                    &addrs2[i % 6],
                    &format!("/kv-store/keys/{key}"),
                    Some(&json!({"value": key})),
                ) {
                    acked2.lock().unwrap().push(key);
                }
                i += 1;
            }
        });
        let r = call(
            "PUT",
            &a[4],
            "/kv-store/view-change",
            Some(&json!({"view": a.join(","), "repl-factor": 2})),
        );
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    let (code, j) = resp.expect("view change answered");
    assert_eq!(code, 200, "{j}");
    assert_eq!(j["message"], "View change successful");
    let shards = j["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    let moved_to_3 = shards[2]["key-count"].as_u64().unwrap();
    println!("view change 2 -> 3 shards: before {before:?}, after {j}");
    let acked = acked.lock().unwrap().clone();
    let total = 120 + acked.len();
    wait_until(Duration::from_secs(5), || {
        (0..6).map(|i| key_count(&a[i]).unwrap_or(0)).sum::<u64>() == 2 * total as u64
    })
    .expect("every key on exactly two replicas");
    assert!(
        moved_to_3 as f64
            <= 1.1
                * (shards
                    .iter()
                    .map(|s| s["key-count"].as_u64().unwrap())
                    .sum::<u64>() as f64)
                / 3.0
    );
    for i in (0..120).step_by(5) {
        for n in &a {
            let (code, j) = call("GET", n, &format!("/kv-store/keys/key{i}"), None).unwrap();
            assert_eq!(
                (code, value_of(&j)),
                (200, Some(format!("v{i}"))),
                "key{i} from {n}"
            );
        }
    }
    for key in &acked {
        let (code, j) = call("GET", &a[0], &format!("/kv-store/keys/{key}"), None).unwrap();
        assert_eq!(
            (code, value_of(&j)),
            (200, Some(key.clone())),
            "acknowledged {key} lost in the view change"
        );
    }
    // Proxy failover: kill one replica of shard 3; requests through shard 1 still served.
    nodes[4].kill9();
    let key = (0..120).map(|i| format!("key{i}")).find(|k| {
        call("GET", &a[0], &format!("/kv-store/keys/{k}"), None)
            .is_some_and(|(_, j)| j["address"] == json!(a[5]))
    });
    let key = key.expect("a key of shard 3");
    for _ in 0..4 {
        let (code, j) = call("GET", &a[0], &format!("/kv-store/keys/{key}"), None).unwrap();
        assert_eq!(code, 200);
        assert_eq!(j["address"], json!(a[5]));
    }
    // The view is durable: a restarted node comes back in the new view.
    nodes[0].restart();
    let (_, j) = call("GET", &a[0], "/kv-store/shards", None).unwrap();
    assert_eq!(j["shards"], json!(["1", "2", "3"]));
}

#[test]
fn nodes_that_leave_and_rejoin_the_view_are_refilled() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(29, 6);
    let first = a[..4].to_vec();
    let _nodes: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &first, 2, dir.path()))
        .collect();
    for i in 0..200 {
        let (code, _) = call(
            "PUT",
            &a[i % 4],
            &format!("/kv-store/keys/key{i}"),
            Some(&json!({"value": format!("v{i}")})),
        )
        .unwrap();
        assert_eq!(code, 201);
    }
    // 4x2, then 2x1 (nodes 2 and 4 leave, keeping their data directories), back to
    // 4x2, then 3x1, then 6x2.
    let steps: [(&[usize], usize); 4] = [
        (&[0, 2], 1),
        (&[0, 1, 2, 3], 2),
        (&[0, 1, 2], 1),
        (&[0, 1, 2, 3, 4, 5], 2),
    ];
    for (nodes, repl) in steps {
        let view: Vec<String> = nodes.iter().map(|&i| a[i].clone()).collect();
        let (code, j) = call(
            "PUT",
            &a[0],
            "/kv-store/view-change",
            Some(&json!({"view": view.join(","), "repl-factor": repl})),
        )
        .expect("view change answered");
        assert_eq!(code, 200, "{j}");
        let answered: Vec<u64> = j["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["key-count"].as_u64().unwrap())
            .collect();
        assert_eq!(answered.iter().sum::<u64>(), 200, "{view:?} x{repl}: {j}");
        // Every member holds its shard's keys, as key-count and /shards/<id> say.
        for (i, n) in a.iter().enumerate() {
            let shard = view.iter().position(|m| m == n).map(|p| p / repl + 1);
            let expected = shard.map_or(0, |id| answered[id - 1]);
            let mut got = None;
            let ok = wait_until(Duration::from_secs(5), || {
                got = key_count(n);
                got == Some(expected)
            });
            assert!(
                ok.is_some(),
                "{view:?} x{repl}: node {i} holds {got:?} keys, not {expected}"
            );
            if let Some(id) = shard {
                let (_, j) = call("GET", n, &format!("/kv-store/shards/{id}"), None).unwrap();
                assert_eq!(j["key-count"].as_u64(), Some(expected), "node {i}: {j}");
            }
        }
        for i in 0..200 {
            for n in &a {
                let (code, j) = call("GET", n, &format!("/kv-store/keys/key{i}"), None).unwrap();
                assert_eq!(
                    (code, value_of(&j)),
                    (200, Some(format!("v{i}"))),
                    "{view:?} x{repl}: key{i} from {n}"
                );
            }
        }
    }
}

#[test]
fn cluster_secret_guards_internal_routes_and_metrics_move() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(27, 2);
    let _n: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start_with(x, &a, 2, dir.path(), &[("CLUSTER_SECRET", "s3cret")]))
        .collect();
    // Replication works with the secret...
    let mut s = Session::new();
    assert_eq!(s.put(&a[0], "k", "v").0, 201);
    wait_until(Duration::from_secs(2), || key_count(&a[1]) == Some(1))
        .expect("replicated with the secret");
    // Contexts are signed: a client cannot forge dependencies (which would otherwise
    // travel into stored versions and block other clients' reads).
    assert!(s.ctx["sig"].is_string(), "signed context: {}", s.ctx);
    // The session's write of k is named in the context (`recent`: shard, origin,
    // counter, key hash, live): claim a far later write of k instead.
    let mut forged = s.ctx.clone();
    assert!(forged["recent"][0].is_array(), "{forged}");
    forged["recent"][0][2] = json!(1_000_000_000u64);
    let (code, j) = call(
        "GET",
        &a[1],
        "/kv-store/keys/k",
        Some(&json!({"causal-context": forged})),
    )
    .unwrap();
    assert_eq!(
        (code, value_of(&j).as_deref()),
        (200, Some("v")),
        "a forged context reads as empty: {j}"
    );
    // ...and the internal route refuses anyone without it.
    let (code, j) = call_raw("POST", &a[0], "/internal/rpc", b"anything".to_vec()).unwrap();
    assert_eq!(code, 401, "{j}");
    assert!(j["causal-context"].is_object());
    let (code, j) = call_raw("GET", &a[0], "/internal/stream", vec![]).unwrap();
    assert_eq!(code, 401, "{j}");
    // Metrics move with load.
    for i in 0..20 {
        s.put(&a[1], &format!("m{i}"), "v");
    }
    let (code, m) = call("GET", &a[1], "/metrics", None).unwrap();
    assert_eq!(code, 200);
    let metrics = m["__raw"].as_str().expect("Prometheus text").to_string();
    let puts = metrics
        .lines()
        .find(|l| {
            l.starts_with("causeway_http_requests_total{")
                && l.contains("route=\"keys\"")
                && l.contains("status=\"201\"")
        })
        .expect("a counter of 201 answers");
    let n: f64 = puts.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 20.0, "{puts}");
    assert!(metrics.contains("causeway_replication_sync_rounds_total{outcome=\"ok\"}"));
    assert!(metrics.contains("causeway_replication_batch_versions_bucket"));
    assert!(metrics.contains("causeway_keys 21"), "key gauge: {metrics}");
    // Every acknowledged write went through a durable commit, which is counted.
    let batches = metrics
        .lines()
        .find(|l| l.starts_with("causeway_commit_batches_total "))
        .expect("a counter of commits");
    let n: f64 = batches.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{batches}");
}

#[test]
fn demo_starts_serves_and_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    let mut demo = std::process::Command::new(BIN)
        .args(["demo", "--base-port", "24801"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert!(
        banner.contains("6 nodes, 3 shards x 2 replicas"),
        "{banner}"
    );
    let nodes: Vec<String> = (0..6).map(|i| format!("127.0.0.1:{}", 24801 + i)).collect();
    let mut s = Session::new();
    assert_eq!(s.put(&nodes[0], "demo-key", "v").0, 201);
    assert_eq!(
        value_of(&s.get(&nodes[5], "demo-key").1).as_deref(),
        Some("v")
    );
    let (_, j) = call("GET", &nodes[3], "/kv-store/shards", None).unwrap();
    assert_eq!(j["shards"], json!(["1", "2", "3"]));
    // Ctrl-C stops everything.
    let status = std::process::Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = demo.wait().unwrap();
    assert!(exit.success(), "demo exit: {exit}");
    for n in &nodes {
        assert!(
            call("GET", n, "/health", None).is_none(),
            "{n} still up after the demo stopped"
        );
    }
}

#[test]
fn sigterm_stops_a_node_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(28, 1);
    let mut node = NodeProc::start(&a[0], &a, 1, dir.path());
    assert_eq!(Session::new().put(&a[0], "k", "v").0, 201);
    node.signal("TERM");
    let pid = node.pid();
    wait_until(Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{pid}/status")).exists() || {
            // A zombie until reaped counts as exited.
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.contains("State:\tZ"))
        }
    })
    .expect("node exits on SIGTERM");
    node.restart();
    assert_eq!(
        value_of(&Session::new().get(&a[0], "k").1).as_deref(),
        Some("v")
    );
}
