//! The cluster status document (`GET /cluster`) and `causeway status`, against real
//! node processes: a node that is stopped shows as down within 2 s, from any node.

mod common;

use common::*;
use serde_json::Value as Json;
use std::process::Command;
use std::time::{Duration, Instant};

fn node_up(doc: &Json, address: &str) -> Option<bool> {
    doc["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["address"] == address)
        .and_then(|n| n["up"].as_bool())
}

#[test]
fn any_node_shows_the_whole_cluster_and_a_dead_node_as_down() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(47, 4);
    let mut nodes: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start(x, &a, 2, dir.path()))
        .collect();
    let mut s = Session::new();
    for i in 0..40 {
        assert!(matches!(
            s.put(&a[i % 4], &format!("k{i}"), "v").0,
            200 | 201
        ));
    }
    wait_until(Duration::from_secs(5), || {
        a.iter().filter_map(|n| key_count(n)).sum::<u64>() == 80
    })
    .expect("every key on both replicas of its shard");

    let (code, doc) = call("GET", &a[3], "/cluster", None).unwrap();
    assert_eq!(code, 200, "{doc}");
    let listed = doc["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 4, "{doc}");
    for n in listed {
        assert_eq!(
            (n["up"].as_bool(), n["in-view"].as_bool()),
            (Some(true), Some(true)),
            "{n}"
        );
    }
    let counts: Vec<u64> = doc["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key-count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 40, "{doc}");
    assert_eq!(doc["view-change"]["complete"], Json::Bool(true), "{doc}");
    assert!(doc["causal-context"].is_object());

    // Stop node 2: within 2 s every other node shows it down.
    nodes[1].kill9();
    for n in [&a[0], &a[2], &a[3]] {
        let asked = Instant::now();
        let (code, doc) = call("GET", n, "/cluster", None).unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
        assert_eq!(code, 200);
        assert_eq!(node_up(&doc, &a[1]), Some(false), "{doc}");
        assert_eq!(node_up(&doc, &a[0]), Some(true), "{doc}");
    }

    // The command-line view of the same document.
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["status", "--node", &a[2]])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "status took {:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.contains(a[1].as_str()))
        .unwrap_or_else(|| panic!("no line for {}:\n{text}", a[1]));
    assert!(line.contains("down"), "{text}");
    let up = text.lines().find(|l| l.contains(a[0].as_str())).unwrap();
    assert!(up.contains("up"), "{text}");
    // --json prints the document itself.
    let out = Command::new(BIN)
        .args(["status", "--json", "--node", &a[2]])
        .output()
        .unwrap();
    let doc: Json = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(node_up(&doc, &a[1]), Some(false), "{doc}");
}
