//! Faults injected into a real node process (the `causeway` binary built with the
//! `test-hooks` feature): a committer that dies stops the node with a clear message and
//! a non-zero status, after answering 503s. Without the feature these tests say so and
//! skip (`cargo test -p causeway --features test-hooks --test fault_hooks` runs them).

#[cfg(feature = "test-hooks")]
mod common;

#[cfg(not(feature = "test-hooks"))]
#[test]
fn a_dead_committer_stops_the_node_with_an_error() {
    eprintln!("skipped: needs the `test-hooks` feature (cargo test -p causeway --features test-hooks --test fault_hooks)");
}

#[cfg(feature = "test-hooks")]
#[test]
fn a_dead_committer_stops_the_node_with_an_error() {
    use common::*;
    use serde_json::json;
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let a = addrs(44, 1);
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("ADDRESS", &a[0])
        .env("VIEW", &a[0])
        .env("DATA_DIR", dir.path().join("data"))
        .env("RUST_LOG", "error")
        .env("CAUSEWAY_TEST_PANIC_ON_COMMIT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start causeway");
    wait_until(Duration::from_secs(10), || {
        call("GET", &a[0], "/ready", None).is_some_and(|(s, _)| s == 200)
    })
    .expect("node ready");

    let (s, j) = call(
        "PUT",
        &a[0],
        "/kv-store/keys/k",
        Some(&json!({"value": "v", "causal-context": {}})),
    )
    .expect("an answer");
    assert_eq!(s, 503, "{j}");
    assert_eq!(j["error"], "Unable to satisfy request", "{j}");
    let (s, j) = call("GET", &a[0], "/ready", None).expect("an answer");
    assert_eq!(s, 503, "{j}");
    assert!(j["error"].as_str().unwrap().contains("committer"), "{j}");

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the node did not exit after its committer died");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "exit status {status}");
    assert!(
        stderr.contains("causeway: server error: the committer thread died"),
        "stderr: {stderr}"
    );
}
