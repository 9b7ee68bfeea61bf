//! Catch-up of a large backlog after a partition, against real node processes: the
//! replica that was cut off while hundreds of megabytes were written receives all of
//! it once the partition heals, in byte-bounded batches, and quickly.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn a_replica_cut_off_during_a_large_backlog_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(43, 2);
    let _n: Vec<_> = a
        .iter()
        .map(|x| {
            NodeProc::start_with(
                x,
                &a,
                2,
                dir.path(),
                &[("DURABILITY", "os"), ("MAX_INTERNAL_BYTES", "67108864")],
            )
        })
        .collect();
    let cut = Partition::new(&a[..1], &a[1..]);
    // 240 values of 1 MiB (the default limit) through 4 writers.
    const KEYS: usize = 240;
    let value = "v".repeat(1024 * 1024 - 16);
    std::thread::scope(|s| {
        for w in 0..4 {
            let (node, value) = (&a[0], &value);
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
    assert_eq!(key_count(&a[1]), Some(0), "the partition held");
    let healed = Instant::now();
    cut.heal();
    let caught_up = wait_until(Duration::from_secs(60), || {
        key_count(&a[1]) == Some(KEYS as u64)
    });
    let secs = healed.elapsed().as_secs_f64();
    assert!(
        caught_up.is_some(),
        "the cut-off replica holds {:?} of {KEYS} keys 60 s after healing",
        key_count(&a[1])
    );
    eprintln!(
        "caught up {} MB in {secs:.1} s ({:.0} MB/s)",
        KEYS,
        KEYS as f64 / secs
    );
    // Every value arrived whole.
    for i in [0, KEYS / 2, KEYS - 1] {
        let (code, j) = call("GET", &a[1], &format!("/kv-store/keys/big{i}"), None).unwrap();
        assert_eq!(code, 200);
        let v = j["value"].as_str().unwrap();
        assert_eq!(
            (v.len(), &v[..8]),
            (value.len() + 8, format!("{i:08}").as_str())
        );
    }
}
