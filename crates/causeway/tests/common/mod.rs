//! Harness for tests that run the real `causeway` binary: node processes on their own
//! loopback addresses, HTTP calls, SIGKILL/SIGSTOP, and real partitions made with
//! iptables rules between node addresses (clients on 127.0.0.1 still reach every node).
#![allow(dead_code)]

use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_causeway");

pub struct NodeProc {
    pub addr: String,
    pub data_dir: PathBuf,
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl NodeProc {
    /// Starts a durable node at `addr` with `view` and `repl`, and waits until it serves.
    pub fn start(addr: &str, view: &[String], repl: usize, data_dir: &Path) -> NodeProc {
        Self::start_with(addr, view, repl, data_dir, &[])
    }

    pub fn start_with(
        addr: &str,
        view: &[String],
        repl: usize,
        data_dir: &Path,
        extra: &[(&str, &str)],
    ) -> NodeProc {
        let mut env: Vec<(String, String)> = vec![
            ("ADDRESS".into(), addr.into()),
            ("VIEW".into(), view.join(",")),
            ("REPL_FACTOR".into(), repl.to_string()),
            (
                "DATA_DIR".into(),
                data_dir.join(addr.replace(':', "-")).display().to_string(),
            ),
            ("RUST_LOG".into(), "warn".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut n = NodeProc {
            addr: addr.into(),
            data_dir: data_dir.into(),
            env,
            child: None,
        };
        n.spawn();
        n
    }

    /// `causeway serve` with this node's environment, its stderr to `stderr`.
    fn command(&self, stderr: Stdio) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(&mut self) {
        let mut cmd = self.command(Stdio::inherit());
        self.child = Some(cmd.spawn().expect("start causeway"));
        wait_until(Duration::from_secs(10), || {
            call("GET", &self.addr, "/ready", None).is_some_and(|(s, _)| s == 200)
        })
        .unwrap_or_else(|| panic!("node {} did not become ready", self.addr));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Restarts with the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Restarts with the same data directory, expecting the node to refuse to start:
    /// the exit status and what it printed on stderr, if it exits within `within`
    /// (otherwise it is left running, and `None`).
    pub fn restart_refused(
        &mut self,
        within: Duration,
    ) -> Option<(std::process::ExitStatus, String)> {
        self.kill9();
        let mut child = self
            .command(Stdio::piped())
            .spawn()
            .expect("start causeway");
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return Some((status, err));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        None
    }

    /// Restarts with an empty data directory.
    pub fn wipe_and_restart(&mut self) {
        self.kill9();
        let dir = self
            .env
            .iter()
            .find(|(k, _)| k == "DATA_DIR")
            .unwrap()
            .1
            .clone();
        let _ = std::fs::remove_dir_all(&dir);
        self.spawn();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
        }
        self.kill9();
    }
}

/// `count` node addresses on the loopback block `127.<block>.0.x`, port 13800.
pub fn addrs(block: u8, count: usize) -> Vec<String> {
    (1..=count)
        .map(|i| format!("127.{block}.0.{i}:13800"))
        .collect()
}

/// One HTTP call with a JSON body; `None` on connection failure or timeout (6 s).
pub fn call(method: &str, addr: &str, path: &str, body: Option<&Json>) -> Option<(u16, Json)> {
    call_raw(
        method,
        addr,
        path,
        body.map(|b| b.to_string())
            .unwrap_or_else(|| "{}".into())
            .into_bytes(),
    )
}

pub fn call_raw(method: &str, addr: &str, path: &str, body: Vec<u8>) -> Option<(u16, Json)> {
    let (status, text) = call_text(method, addr, path, body)?;
    let json = serde_json::from_str(&text).unwrap_or_else(|_| json!({"__raw": text}));
    Some((status, json))
}

/// One HTTP call answered with the body's exact text (for checks that parsing into a
/// `serde_json::Value` would hide, such as a number's text).
pub fn call_text(method: &str, addr: &str, path: &str, body: Vec<u8>) -> Option<(u16, String)> {
    use std::sync::OnceLock;
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(6))
            .no_proxy()
            .build()
            .unwrap()
    });
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    });
    let url = format!("http://{addr}{path}");
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let req = client
        .request(m, url)
        .header("content-type", "application/json")
        .body(body);
    rt.block_on(async move {
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let text = resp.text().await.ok()?;
        Some((status, text))
    })
}

/// One request with extra headers and a client timeout of `timeout` (for long polls),
/// on a runtime of its own (so it can run on any thread); panics when no answer comes.
/// Returns the status, the JSON body and how long the answer took.
pub fn request(
    method: &str,
    addr: &str,
    path: &str,
    body: &Json,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> (u16, Json, Duration) {
    let url = format!("http://{addr}{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .unwrap();
        let mut req = client
            .request(method, &url)
            .header("content-type", "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let started = Instant::now();
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let body: Json = resp.json().await.expect("a JSON body");
        (status, body, started.elapsed())
    })
}

/// A client session: carries the causal context from response to request.
#[derive(Clone, Default)]
pub struct Session {
    pub ctx: Json,
}

impl Session {
    pub fn new() -> Session {
        Session { ctx: json!({}) }
    }

    pub fn put(&mut self, addr: &str, key: &str, value: &str) -> (u16, Json) {
        let body = json!({"value": value, "causal-context": self.ctx});
        self.send("PUT", addr, key, &body)
    }

    pub fn get(&mut self, addr: &str, key: &str) -> (u16, Json) {
        let body = json!({"causal-context": self.ctx});
        self.send("GET", addr, key, &body)
    }

    pub fn delete(&mut self, addr: &str, key: &str) -> (u16, Json) {
        let body = json!({"causal-context": self.ctx});
        self.send("DELETE", addr, key, &body)
    }

    fn send(&mut self, method: &str, addr: &str, key: &str, body: &Json) -> (u16, Json) {
        let (s, j) = call(method, addr, &format!("/kv-store/keys/{key}"), Some(body))
            .unwrap_or_else(|| panic!("{method} {key} at {addr}: no answer"));
        if let Some(c) = j.get("causal-context") {
            self.ctx = c.clone();
        }
        (s, j)
    }
}

/// Polls `f` every 20 ms until it returns `true` or the deadline passes.
pub fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return Some(());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real network partition between two groups of node addresses (iptables DROP rules
/// on loopback, both directions); removed when dropped.
pub struct Partition {
    rules: Vec<(String, String)>,
}

fn ip(addr: &str) -> String {
    addr.rsplit_once(':').unwrap().0.to_string()
}

fn iptables(action: &str, src: &str, dst: &str) -> bool {
    Command::new("iptables")
        .args([
            action,
            "INPUT",
            "-s",
            src,
            "-d",
            dst,
            "-j",
            "DROP",
            "-m",
            "comment",
            "--comment",
            "causeway-test",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Partition {
    pub fn new(a: &[String], b: &[String]) -> Partition {
        let mut rules = Vec::new();
        for x in a {
            for y in b {
                for (s, d) in [(ip(x), ip(y)), (ip(y), ip(x))] {
                    assert!(
                        iptables("-I", &s, &d),
                        "iptables failed: partition tests need root and iptables (apt-get install iptables)"
                    );
                    rules.push((s, d));
                }
            }
        }
        Partition { rules }
    }

    pub fn heal(self) {}
}

impl Drop for Partition {
    fn drop(&mut self) {
        for (s, d) in &self.rules {
            while iptables("-D", s, d) {}
        }
    }
}

pub fn key_count(addr: &str) -> Option<u64> {
    let (s, j) = call("GET", addr, "/kv-store/key-count", None)?;
    (s == 200).then(|| j["key-count"].as_u64()).flatten()
}

/// A key that `shard` owns in a view of `shards` shards (found by asking a node).
pub fn value_of(j: &Json) -> Option<String> {
    j.get("value").and_then(|v| v.as_str()).map(String::from)
}
