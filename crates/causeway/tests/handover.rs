//! Hand-over of large values during a view change, against real node processes: the
//! messages that carry keys to their new owners are bounded by bytes, so a shard of
//! 1 MiB values moves to new replicas even when all of it together is far over the
//! node-to-node message limit.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn a_view_change_moves_many_large_values() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(44, 4);
    let (old, new) = (&a[..2], &a[2..]);
    // Every node starts in the old view; nodes 3 and 4 wait outside it to be added. With
    // a 64 MiB message limit, handing over the 150 MiB below in one message is refused.
    let _n: Vec<_> = a
        .iter()
        .map(|x| {
            NodeProc::start_with(
                x,
                old,
                2,
                dir.path(),
                &[("DURABILITY", "os"), ("MAX_INTERNAL_BYTES", "67108864")],
            )
        })
        .collect();
    const KEYS: usize = 150;
    let value = "v".repeat(1024 * 1024 - 16);
    std::thread::scope(|s| {
        for w in 0..4 {
            let (node, value) = (&old[w % 2], &value);
            s.spawn(move || {
                for i in (w..KEYS).step_by(4) {
                    let body = json!({"value": format!("{i:08}{value}"), "causal-context": {}});
                    let (code, j) =
                        call("PUT", node, &format!("/kv-store/keys/big{i}"), Some(&body))
                            .expect("an answer within 6 s");
                    assert_eq!(code, 201, "{j}");
                }
            });
        }
    });
    // The whole shard moves to two other nodes.
    let started = Instant::now();
    let body = json!({"view": new.join(","), "repl-factor": 2});
    let answer = call("PUT", &old[0], "/kv-store/view-change", Some(&body));
    eprintln!(
        "view change answered {:?} after {:.1} s",
        answer.as_ref().map(|(c, _)| *c),
        started.elapsed().as_secs_f64()
    );
    let moved = wait_until(Duration::from_secs(60), || {
        new.iter().all(|n| key_count(n) == Some(KEYS as u64))
    });
    assert!(
        moved.is_some(),
        "60 s after the view change the new replicas hold {:?} of {KEYS} keys",
        new.iter().map(|n| key_count(n)).collect::<Vec<_>>()
    );
    eprintln!(
        "moved {KEYS} MiB in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Every key is readable, whole, on each of its new replicas.
    for n in new {
        for i in 0..KEYS {
            let (code, j) = call("GET", n, &format!("/kv-store/keys/big{i}"), None)
                .unwrap_or_else(|| panic!("GET big{i} at {n}: no answer"));
            assert_eq!(code, 200, "big{i} at {n}: {j}");
            let v = j["value"].as_str().unwrap();
            assert_eq!(
                (v.len(), &v[..8]),
                (value.len() + 8, format!("{i:08}").as_str()),
                "big{i} at {n}"
            );
        }
    }
}
