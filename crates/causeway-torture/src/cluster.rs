//! The cluster under test: real `causeway serve` processes, one per loopback
//! address, each with its own durable data directory and log file.
//!
//! The cluster owns the processes and knows the current view. It is the only
//! place that kills, restarts, pauses and resumes nodes, and it records each
//! of those in the history at the moment it happens (before the signal for
//! faults, after readiness for recoveries), so the checker can tell which
//! client failures a fault explains. Clients consult `Reachable` to avoid
//! nodes that are known to be down.

use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::history::{Fault, HistoryWriter};

/// Errors managing node processes.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot start node {node} from {bin}: {source}")]
    Spawn {
        node: String,
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("node {node} did not become ready within {secs} s (log: {log})")]
    NotReady {
        node: String,
        secs: u64,
        log: PathBuf,
    },
    #[error("node {node} exited during start-up: {status} (log: {log})")]
    ExitedEarly {
        node: String,
        status: String,
        log: PathBuf,
    },
    #[error("signal to node {node}: {source}")]
    Signal { node: String, source: nix::Error },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// libfaketime, from Debian's `faketime` package.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// How to start nodes.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `causeway` binary.
    pub bin: PathBuf,
    /// Where data directories and logs go.
    pub work_dir: PathBuf,
    /// First node address; the others follow (127.0.0.2, 127.0.0.3, ...).
    pub first_ip: Ipv4Addr,
    pub port: u16,
    pub nodes: usize,
    pub repl_factor: usize,
    pub cluster_secret: String,
    /// Sets CAUSEWAY_TEST_BROKEN_READ_RULE=1 for every node.
    pub broken_read_rule: bool,
    /// Sets CAUSEWAY_TEST_IGNORE_OLD_CONTEXTS=1 for every node (a planted cross-epoch
    /// bug: replicas drop contexts from before a view change).
    pub ignore_old_contexts: bool,
    /// Each node's initial wall-clock offset in seconds; `None`: real clocks. With
    /// offsets, nodes run under libfaketime and [`Cluster::set_clock`] jumps them.
    pub clock_offsets: Option<Vec<i64>>,
    /// How long a node may take to answer `/ready`.
    pub ready_timeout: Duration,
}

impl ClusterConfig {
    /// The node addresses, in launch order (which is the initial view).
    pub fn addresses(&self) -> Vec<String> {
        (0..self.nodes)
            .map(|i| {
                format!(
                    "{}:{}",
                    Ipv4Addr::from(u32::from(self.first_ip) + i as u32),
                    self.port
                )
            })
            .collect()
    }
}

/// Which nodes clients may currently send requests to.
#[derive(Debug)]
pub struct Reachable {
    pub addresses: Vec<String>,
    up: Vec<AtomicBool>,
}

impl Reachable {
    pub fn new(addresses: Vec<String>) -> Self {
        let up = addresses.iter().map(|_| AtomicBool::new(false)).collect();
        Reachable { addresses, up }
    }

    pub fn set(&self, i: usize, up: bool) {
        self.up[i].store(up, Ordering::SeqCst);
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.up[i].load(Ordering::SeqCst)
    }

    /// Indices of nodes that are up.
    pub fn up_nodes(&self) -> Vec<usize> {
        (0..self.up.len()).filter(|&i| self.is_up(i)).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Killed,
    Paused,
}

struct Node {
    address: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    state: State,
}

/// The running cluster.
pub struct Cluster {
    config: ClusterConfig,
    nodes: Vec<Mutex<Node>>,
    view: Mutex<(Vec<String>, usize)>,
    pub reachable: Arc<Reachable>,
    history: Arc<HistoryWriter>,
    http: reqwest::Client,
    view_changes: std::sync::atomic::AtomicU32,
}

/// A plain HTTP client for talking to nodes (no proxy: loopback only).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

impl Cluster {
    /// Starts every node with the initial view and waits until all are ready.
    pub async fn start(
        config: ClusterConfig,
        history: Arc<HistoryWriter>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let addresses = config.addresses();
        std::fs::create_dir_all(&config.work_dir)?;
        let nodes = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| {
                Mutex::new(Node {
                    address: a.clone(),
                    data_dir: config.work_dir.join(format!("node{i}-data")),
                    log: config.work_dir.join(format!("node{i}.log")),
                    child: None,
                    state: State::Killed,
                })
            })
            .collect();
        let cluster = Arc::new(Cluster {
            view: Mutex::new((addresses.clone(), config.repl_factor)),
            reachable: Arc::new(Reachable::new(addresses)),
            config,
            nodes,
            history,
            http: http_client(),
            view_changes: std::sync::atomic::AtomicU32::new(0),
        });
        if let Some(offsets) = &cluster.config.clock_offsets {
            if !Path::new(LIBFAKETIME).exists() {
                return Err(ClusterError::Io(std::io::Error::other(format!(
                    "the clock nemesis needs {LIBFAKETIME} (apt-get install faketime)"
                ))));
            }
            for (i, offset) in offsets.iter().enumerate() {
                cluster.set_clock(i, *offset)?;
            }
        }
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i).await?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ready(i).await?;
            cluster.reachable.set(i, true);
        }
        Ok(cluster)
    }

    /// True when nodes run under libfaketime (the clock nemesis is on).
    pub fn clocks_faked(&self) -> bool {
        self.config.clock_offsets.is_some()
    }

    fn clock_file(&self, i: usize) -> PathBuf {
        self.config.work_dir.join(format!("node{i}.faketime"))
    }

    /// Sets node `i`'s wall clock to real time plus `offset_s` seconds (it takes
    /// effect within a second: libfaketime re-reads the file).
    pub fn set_clock(&self, i: usize, offset_s: i64) -> Result<(), ClusterError> {
        let file = self.clock_file(i);
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset_s:+}\n"))?;
        std::fs::rename(&tmp, &file)?;
        self.history.fault(Fault::Clock {
            node: self.address(i).to_string(),
            offset_s,
        });
        Ok(())
    }

    /// Number of node processes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn address(&self, i: usize) -> &str {
        &self.reachable.addresses[i]
    }

    /// The current view and replication factor.
    pub async fn view(&self) -> (Vec<String>, usize) {
        self.view.lock().await.clone()
    }

    async fn spawn(&self, i: usize) -> Result<(), ClusterError> {
        let (view, rf) = self.view().await;
        let mut node = self.nodes[i].lock().await;
        std::fs::create_dir_all(&node.data_dir)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = Command::new(&self.config.bin);
        cmd.arg("serve")
            .env("ADDRESS", &node.address)
            .env("VIEW", view.join(","))
            .env("REPL_FACTOR", rf.to_string())
            .env("DATA_DIR", &node.data_dir)
            .env("CLUSTER_SECRET", &self.config.cluster_secret)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if self.config.broken_read_rule {
            cmd.env("CAUSEWAY_TEST_BROKEN_READ_RULE", "1");
        }
        if self.config.ignore_old_contexts {
            cmd.env("CAUSEWAY_TEST_IGNORE_OLD_CONTEXTS", "1");
        }
        if self.config.clock_offsets.is_some() {
            // Only the wall clock moves (as NTP moves it); monotonic clocks never jump.
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", self.clock_file(i))
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
            node: node.address.clone(),
            bin: self.config.bin.clone(),
            source,
        })?;
        node.child = Some(child);
        node.state = State::Running;
        Ok(())
    }

    async fn wait_ready(&self, i: usize) -> Result<(), ClusterError> {
        let address = self.address(i).to_string();
        let deadline = Instant::now() + self.config.ready_timeout;
        loop {
            {
                let mut node = self.nodes[i].lock().await;
                let log = node.log.clone();
                if let Some(child) = node.child.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(ClusterError::ExitedEarly {
                            node: address,
                            status: status.to_string(),
                            log,
                        });
                    }
                }
            }
            let ready = self
                .http
                .get(format!("http://{address}/ready"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.nodes[i].lock().await.log.clone();
                return Err(ClusterError::NotReady {
                    node: address,
                    secs: self.config.ready_timeout.as_secs(),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs node `i`. Returns false if it was not running.
    pub async fn kill(&self, i: usize) -> bool {
        let mut node = self.nodes[i].lock().await;
        if node.state != State::Running {
            return false;
        }
        self.reachable.set(i, false);
        self.history.fault(Fault::Kill {
            node: node.address.clone(),
        });
        if let Some(mut child) = node.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        node.state = State::Killed;
        true
    }

    /// Restarts a killed node on its data directory and waits until ready.
    pub async fn restart(&self, i: usize) -> Result<(), ClusterError> {
        if self.nodes[i].lock().await.state != State::Killed {
            return Ok(());
        }
        self.spawn(i).await?;
        self.wait_ready(i).await?;
        self.history.fault(Fault::Restarted {
            node: self.address(i).to_string(),
        });
        self.reachable.set(i, true);
        Ok(())
    }

    /// SIGSTOPs node `i`. Returns false if it was not running.
    pub async fn pause(&self, i: usize) -> Result<bool, ClusterError> {
        let mut node = self.nodes[i].lock().await;
        if node.state != State::Running {
            return Ok(false);
        }
        self.reachable.set(i, false);
        self.history.fault(Fault::Pause {
            node: node.address.clone(),
        });
        signal(&node, Signal::SIGSTOP)?;
        node.state = State::Paused;
        Ok(true)
    }

    /// SIGCONTs a paused node.
    pub async fn resume(&self, i: usize) -> Result<(), ClusterError> {
        let mut node = self.nodes[i].lock().await;
        if node.state != State::Paused {
            return Ok(());
        }
        signal(&node, Signal::SIGCONT)?;
        node.state = State::Running;
        self.history.fault(Fault::Resumed {
            node: node.address.clone(),
        });
        self.reachable.set(i, true);
        Ok(())
    }

    /// Resumes paused nodes and restarts killed ones.
    pub async fn heal_nodes(&self) -> Result<(), ClusterError> {
        for i in 0..self.nodes.len() {
            self.resume(i).await?;
            self.restart(i).await?;
        }
        Ok(())
    }

    /// Finds nodes that exited on their own, records that, and restarts them
    /// so the campaign goes on. Returns how many were found.
    pub async fn reap_crashed(&self) -> Result<usize, ClusterError> {
        let mut crashed = 0;
        for i in 0..self.nodes.len() {
            let exited = {
                let mut node = self.nodes[i].lock().await;
                if node.state == State::Killed {
                    continue;
                }
                let status = match node.child.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(status))) => status.to_string(),
                    _ => continue,
                };
                self.reachable.set(i, false);
                node.child = None;
                node.state = State::Killed;
                self.history.fault(Fault::NodeExited {
                    node: node.address.clone(),
                    status: status.clone(),
                });
                status
            };
            eprintln!(
                "torture: node {} exited on its own ({exited}); restarting it",
                self.address(i)
            );
            crashed += 1;
            self.restart(i).await?;
        }
        Ok(crashed)
    }

    /// A fresh view change id (for [`Cluster::view_change_with_id`]).
    pub fn next_view_change_id(&self) -> u32 {
        self.view_changes.fetch_add(1, Ordering::SeqCst)
    }

    /// Sends a view change to a reachable node and waits for its answer.
    /// True when the change was accepted: 200 (complete) or 202 (in force, some
    /// shards still wait for an old owner's hand-over and complete by
    /// themselves). The requested view is the one used for later restarts.
    pub async fn view_change(&self, view: Vec<String>, repl_factor: usize) -> bool {
        let id = self.next_view_change_id();
        self.view_change_with_id(id, view, repl_factor).await
    }

    /// [`Cluster::view_change`] recorded under `id` (from
    /// [`Cluster::next_view_change_id`]), so a fault recorded before it can name it.
    pub async fn view_change_with_id(
        &self,
        id: u32,
        view: Vec<String>,
        repl_factor: usize,
    ) -> bool {
        let (current, _) = self.view().await;
        let up = self.reachable.up_nodes();
        let target = up
            .iter()
            .copied()
            .find(|&i| current.contains(&self.reachable.addresses[i]))
            .or_else(|| up.first().copied());
        let Some(target) = target else {
            return false;
        };
        let address = self.address(target).to_string();
        self.history.fault(Fault::ViewChangeStart {
            id,
            view: view.clone(),
            repl_factor,
            node: Some(address.clone()),
        });
        let started = Instant::now();
        let answer = self
            .http
            .put(format!("http://{address}/kv-store/view-change"))
            .json(
                &json!({"view": view.join(","), "repl-factor": repl_factor, "causal-context": {}}),
            )
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let (status, error, incomplete_shards) = match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                let incomplete = if status == 202 {
                    incomplete_shards(&body)
                } else {
                    Vec::new()
                };
                let accepted = status == 200 || (status == 202 && !incomplete.is_empty());
                (Some(status), (!accepted).then_some(body), incomplete)
            }
            Err(e) => (None, Some(format!("{e}")), Vec::new()),
        };
        let ok = error.is_none();
        // The requested view is the best guess of the cluster's view even if
        // the answer was lost; the checker reports the failure either way.
        *self.view.lock().await = (view, repl_factor);
        self.history.fault(Fault::ViewChangeEnd {
            id,
            status,
            error,
            incomplete_shards,
            ms,
        });
        ok
    }

    /// Records a panic found in any node's log.
    pub async fn scan_logs_for_panics(&self) {
        for node in &self.nodes {
            let (address, log) = {
                let n = node.lock().await;
                (n.address.clone(), n.log.clone())
            };
            if let Some(line) = first_panic(&log) {
                self.history.fault(Fault::NodePanicked {
                    node: address,
                    line,
                });
            }
        }
    }

    /// Kills every node (SIGCONT first so paused ones die too).
    pub async fn shutdown(&self) {
        for node in &self.nodes {
            let mut n = node.lock().await;
            if let Some(mut child) = n.child.take() {
                if let Some(pid) = child.id() {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
                }
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            n.state = State::Killed;
        }
    }

    /// The node log files.
    pub async fn logs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for node in &self.nodes {
            out.push(node.lock().await.log.clone());
        }
        out
    }

    /// The shared HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// GET `path` on node `address` with an empty context; status and body.
    pub async fn get_json(&self, address: &str, path: &str) -> Result<(u16, Value), String> {
        let r = self
            .http
            .get(format!("http://{address}{path}"))
            .json(&json!({"causal-context": {}}))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("{e}"))?;
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.map_err(|e| format!("body: {e}"))?;
        Ok((status, body))
    }
}

/// The `incomplete-shards` of a 202 view change answer (shard ids as strings).
fn incomplete_shards(body: &str) -> Vec<String> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|b| {
            b.get("incomplete-shards")
                .and_then(Value::as_array)
                .cloned()
        })
        .unwrap_or_default()
        .iter()
        .map(crate::history::value_string)
        .collect()
}

fn signal(node: &Node, sig: Signal) -> Result<(), ClusterError> {
    let pid = node.child.as_ref().and_then(Child::id);
    match pid {
        Some(pid) => kill(Pid::from_raw(pid as i32), sig).map_err(|source| ClusterError::Signal {
            node: node.address.clone(),
            source,
        }),
        None => Ok(()),
    }
}

/// The first line of a log that reports a panic.
pub fn first_panic(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .find(|l| l.contains("panicked at"))
        .map(|l| l.chars().take(300).collect())
}
