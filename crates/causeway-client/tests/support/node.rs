//! Real node processes for tests: `causeway serve --in-memory` on fixed loopback
//! ports (each test uses its own ports in 21000-21999), killed when the guard drops.
//!
//! The binary is `$CAUSEWAY_BIN`, or `<workspace>/target/debug/causeway`
//! (`cargo build -p causeway`); a test that needs it fails if it is missing.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to start answering `/ready`.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Path of the node binary; panics with instructions when it does not exist.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("CAUSEWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/causeway")
        });
    assert!(
        path.is_file(),
        "node binary not found at {}: build it with `cargo build -p causeway` or set CAUSEWAY_BIN",
        path.display()
    );
    path
}

/// A running node; killed (and reaped) on drop.
pub struct Node {
    pub addr: String,
    child: Child,
    log: PathBuf,
}

impl Node {
    /// The node's process id (to stop and resume it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `causeway serve` for `addr` in a cluster of `view`, keys in memory.
    /// Does not wait for it: see [`Node::wait_ready`].
    pub fn spawn(addr: &str, view: &[String], repl_factor: u32) -> Node {
        let log = std::env::temp_dir().join(format!(
            "causeway-client-node-{}-{}.log",
            addr.replace([':', '.'], "_"),
            std::process::id()
        ));
        let child = Command::new(binary())
            .arg("serve")
            .args(["--address", addr])
            .args(["--view", &view.join(",")])
            .args(["--repl-factor", &repl_factor.to_string()])
            .arg("--in-memory")
            // Only the flags above configure the node.
            .env_remove("ADDRESS")
            .env_remove("VIEW")
            .env_remove("REPL_FACTOR")
            .env_remove("PORT")
            .env_remove("LISTEN")
            .env_remove("DATA_DIR")
            .env_remove("CLUSTER_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        Node {
            addr: addr.to_owned(),
            child,
            log,
        }
    }

    /// Polls `GET /ready` until it answers 200; panics with the node's log if the
    /// process exits or the deadline passes.
    pub async fn wait_ready(&mut self) {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("http://{}/ready", self.addr);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("node {} exited ({status}):\n{}", self.addr, self.log_text());
            }
            let ready = http
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} not ready after {START_DEADLINE:?}:\n{}",
                self.addr,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Addresses `127.0.0.1:<first_port + i>` for `count` nodes.
pub fn addresses(first_port: u16, count: u16) -> Vec<String> {
    (0..count)
        .map(|i| format!("127.0.0.1:{}", first_port + i))
        .collect()
}

/// Starts every node of `view` and waits until all are ready.
pub async fn cluster(view: &[String], repl_factor: u32) -> Vec<Node> {
    let mut nodes: Vec<Node> = view
        .iter()
        .map(|addr| Node::spawn(addr, view, repl_factor))
        .collect();
    for node in &mut nodes {
        node.wait_ready().await;
    }
    nodes
}
