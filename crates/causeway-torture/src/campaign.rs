//! A whole campaign: start the cluster, run sessions while the seeded fault
//! schedule plays, heal everything, wait for convergence, record the final
//! state, and check the history.
//!
//! Fault episodes overlap freely except view changes, which by default wait
//! until no other fault is in force and hold off new ones while they run (a
//! view change during a partition may legitimately fail); with
//! `overlap_view_changes` they overlap too. A cut view change is one episode
//! that overlaps its own partition with its own view change: it cuts new
//! replicas off from old owners of keys moving to them, changes the view, keeps
//! the cut a few seconds, then heals; otherwise it follows the view change
//! rules. At most `max_down` nodes are killed, paused or cut off by a cut view
//! change at once, so clients always have somewhere to go.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{watch, Mutex, RwLock};

use crate::checker::{self, CheckOptions, Report};
use crate::cluster::{Cluster, ClusterConfig, ClusterError};
use crate::history::{self, Event, Fault, FinalRead, HistoryError, HistoryWriter, KeyCount, Meta};
use crate::partition::{Firewall, FirewallError};
use crate::rng::Rng;
use crate::schedule::{self, Episode, FaultKind};
use crate::workload::{Workload, WorkloadConfig};

/// Everything a campaign needs.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    pub cluster: ClusterConfig,
    pub seed: u64,
    pub duration: Duration,
    pub sessions: u32,
    pub keys: usize,
    pub think: Duration,
    pub handoff: f64,
    pub faults: Vec<FaultKind>,
    /// Chance that a PUT carries a large value, and its largest size (bytes).
    pub large_values: f64,
    pub large_bytes: usize,
    /// Chances that an operation is a batch, a listing, and that a put has a ttl.
    pub batches: f64,
    pub listings: f64,
    pub ttl_writes: f64,
    /// Chance that a write carries an `Idempotency-Key` (and is retried when it
    /// gets no answer or a 503).
    pub idempotent: f64,
    /// Batches may carry an `Idempotency-Key` too.
    pub idempotent_batches: bool,
    pub mean_gap: Duration,
    pub history: PathBuf,
    pub iptables: String,
    /// Comment marking this campaign's iptables rules (`partition::RULE_COMMENT`
    /// normally); stale rules with this tag are removed at start.
    pub firewall_tag: String,
    pub converge_timeout: Duration,
    pub max_down: usize,
    /// View changes run while other faults are in force.
    pub overlap_view_changes: bool,
}

/// Errors that stop a campaign before it can reach a verdict.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("partitions need iptables (run as root): {0}")]
    Firewall(#[from] FirewallError),
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// The verdict and where to look.
pub struct Outcome {
    pub report: Report,
    pub events: Vec<Event>,
    pub logs: Vec<PathBuf>,
}

struct Faults {
    cluster: Arc<Cluster>,
    firewall: Option<Arc<Firewall>>,
    history: Arc<HistoryWriter>,
    /// Readers: episodes in force. Writer: a view change.
    gate: RwLock<()>,
    /// One view change at a time.
    view_change: Mutex<()>,
    /// Serialises the "may another node go down?" decision.
    slots: Mutex<()>,
    max_down: usize,
    /// Nodes a cut view change has cut off from old owners right now (they
    /// count against `max_down`, like killed and paused nodes).
    cut_off: AtomicUsize,
    /// The campaign's keys (a cut view change cuts where they move).
    keys: Vec<String>,
    overlap_view_changes: bool,
    stop: watch::Receiver<bool>,
}

impl Faults {
    async fn hold(&self, hold: Duration) {
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(hold) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    async fn run(&self, ep: Episode) -> Result<(), CampaignError> {
        let mut rng = Rng::new(ep.seed);
        match ep.kind {
            FaultKind::ViewChange => {
                // Overlapping: view changes only exclude each other (the gate's
                // writer would wait for every other episode to end).
                let _exclusive = if self.overlap_view_changes {
                    None
                } else {
                    Some(self.gate.write().await)
                };
                let _one_at_a_time = self.view_change.lock().await;
                if *self.stop.borrow() {
                    return Ok(());
                }
                let (current, rf) = self.cluster.view().await;
                let all = self.cluster.reachable.addresses.clone();
                let (view, new_rf) = schedule::next_view(&mut rng, &all, &current, rf);
                eprintln!(
                    "torture: view change to {} nodes, repl-factor {new_rf}",
                    view.len()
                );
                let ok = self.cluster.view_change(view, new_rf).await;
                if !ok {
                    eprintln!("torture: view change failed");
                }
            }
            FaultKind::CutViewChange => {
                // A view change like any other (exclusive unless overlapping), whose
                // partition is part of the same episode.
                let _exclusive = if self.overlap_view_changes {
                    None
                } else {
                    Some(self.gate.write().await)
                };
                let _one_at_a_time = self.view_change.lock().await;
                if *self.stop.borrow() {
                    return Ok(());
                }
                let Some(firewall) = &self.firewall else {
                    return Ok(());
                };
                let (current, rf) = self.cluster.view().await;
                let all = self.cluster.reachable.addresses.clone();
                let plan = {
                    let _slot = self.slots.lock().await;
                    let up = self.cluster.reachable.up_nodes();
                    let down = self.cluster.len() - up.len() + self.cut_off.load(Ordering::SeqCst);
                    let budget = self.max_down.saturating_sub(down);
                    let eligible: Vec<String> = up
                        .iter()
                        .map(|&i| self.cluster.address(i).to_string())
                        .collect();
                    let plan = schedule::plan_cut_view_change(
                        &mut rng, &all, &current, rf, &self.keys, &eligible, budget,
                    );
                    if let Some(plan) = &plan {
                        self.cut_off
                            .fetch_add(plan.cut_off().len(), Ordering::SeqCst);
                    }
                    plan
                };
                let Some(plan) = plan else {
                    eprintln!("torture: no cut view change possible now; skipped");
                    return Ok(());
                };
                let id = self.cluster.next_view_change_id();
                let name = plan.name();
                eprintln!(
                    "torture: {name}; view change to {} nodes, repl-factor {}",
                    plan.view.len(),
                    plan.repl_factor
                );
                self.history.fault(Fault::PartitionStart {
                    name: name.clone(),
                    links: plan.links.clone(),
                    view_change: Some(id),
                });
                let result = async {
                    for (a, b) in &plan.links {
                        firewall.cut(a, b)?;
                    }
                    let ok = self
                        .cluster
                        .view_change_with_id(id, plan.view.clone(), plan.repl_factor)
                        .await;
                    if !ok {
                        eprintln!("torture: view change failed");
                    }
                    // Sessions go on (with contexts from before the change) while
                    // the new replicas still cannot reach those old owners.
                    self.hold(ep.hold).await;
                    for (a, b) in &plan.links {
                        firewall.mend(a, b)?;
                    }
                    Ok::<(), FirewallError>(())
                }
                .await;
                self.cut_off
                    .fetch_sub(plan.cut_off().len(), Ordering::SeqCst);
                result?;
                self.history.fault(Fault::PartitionEnd {
                    name,
                    links: plan.links,
                });
            }
            FaultKind::Partition => {
                let _shared = self.gate.read().await;
                let Some(firewall) = &self.firewall else {
                    return Ok(());
                };
                let shape = ep.shape.clone().expect("partitions have a shape");
                let links: Vec<(String, String)> = shape
                    .links(self.cluster.len())
                    .into_iter()
                    .map(|(a, b)| {
                        (
                            self.cluster.address(a).to_string(),
                            self.cluster.address(b).to_string(),
                        )
                    })
                    .collect();
                self.history.fault(Fault::PartitionStart {
                    name: shape.name(),
                    links: links.clone(),
                    view_change: None,
                });
                for (a, b) in &links {
                    firewall.cut(a, b)?;
                }
                self.hold(ep.hold).await;
                for (a, b) in &links {
                    firewall.mend(a, b)?;
                }
                self.history.fault(Fault::PartitionEnd {
                    name: shape.name(),
                    links,
                });
            }
            FaultKind::Clock => {
                let _shared = self.gate.read().await;
                if !self.cluster.clocks_faked() {
                    return Ok(());
                }
                let target = rng.below(self.cluster.len() as u64) as usize;
                let offset = schedule::clock_offset(&mut rng);
                self.cluster.set_clock(target, offset)?;
            }
            FaultKind::Kill | FaultKind::Pause => {
                let _shared = self.gate.read().await;
                let target = {
                    let _slot = self.slots.lock().await;
                    let up = self.cluster.reachable.up_nodes();
                    let down = self.cluster.len() - up.len() + self.cut_off.load(Ordering::SeqCst);
                    if down >= self.max_down || up.is_empty() {
                        return Ok(());
                    }
                    let target = *rng.pick(&up);
                    let applied = if ep.kind == FaultKind::Kill {
                        self.cluster.kill(target).await
                    } else {
                        self.cluster.pause(target).await?
                    };
                    if !applied {
                        return Ok(());
                    }
                    target
                };
                self.hold(ep.hold).await;
                if ep.kind == FaultKind::Kill {
                    self.cluster.restart(target).await?;
                } else {
                    self.cluster.resume(target).await?;
                }
            }
        }
        Ok(())
    }
}

/// Runs a campaign and checks its history.
pub async fn run(config: CampaignConfig) -> Result<Outcome, CampaignError> {
    let firewall = if config.faults.iter().any(|k| k.cuts_links()) {
        Some(Arc::new(Firewall::with_tag(
            &config.iptables,
            &config.firewall_tag,
        )?))
    } else {
        None
    };
    let history = Arc::new(HistoryWriter::create(&config.history)?);
    let keys: Vec<String> = (0..config.keys).map(|i| format!("k{i}")).collect();
    let addresses = config.cluster.addresses();
    history.record(&Event::Meta(Meta {
        format: history::HISTORY_FORMAT,
        seed: config.seed,
        nodes: addresses.clone(),
        view: addresses.clone(),
        repl_factor: config.cluster.repl_factor,
        sessions: config.sessions,
        keys: keys.clone(),
        broken_read_rule: config.cluster.broken_read_rule,
    }));
    eprintln!(
        "torture: starting {} nodes ({} shards x {} replicas) from {}",
        addresses.len(),
        addresses.len() / config.cluster.repl_factor.max(1),
        config.cluster.repl_factor,
        config.cluster.bin.display()
    );
    let cluster = Cluster::start(config.cluster.clone(), Arc::clone(&history)).await?;
    let result = drive(&config, &cluster, firewall.as_ref(), &history, &keys).await;
    cluster.scan_logs_for_panics().await;
    let logs = cluster.logs().await;
    cluster.shutdown().await;
    if let Some(fw) = &firewall {
        fw.heal_all()?;
    }
    result?;
    history.flush()?;
    let events = history::read_history_compact(&config.history)?;
    let report = checker::check(
        &events,
        CheckOptions {
            require_final: true,
        },
    );
    Ok(Outcome {
        report,
        events,
        logs,
    })
}

async fn drive(
    config: &CampaignConfig,
    cluster: &Arc<Cluster>,
    firewall: Option<&Arc<Firewall>>,
    history: &Arc<HistoryWriter>,
    keys: &[String],
) -> Result<(), CampaignError> {
    let plan = schedule::plan(
        config.seed,
        config.duration,
        cluster.len(),
        &config.faults,
        config.mean_gap,
    );
    eprintln!(
        "torture: seed {}, {} fault episodes planned over {:?}",
        config.seed,
        plan.len(),
        config.duration
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let faults = Arc::new(Faults {
        cluster: Arc::clone(cluster),
        firewall: firewall.cloned(),
        history: Arc::clone(history),
        gate: RwLock::new(()),
        slots: Mutex::new(()),
        view_change: Mutex::new(()),
        max_down: config.max_down,
        cut_off: AtomicUsize::new(0),
        keys: keys.to_vec(),
        overlap_view_changes: config.overlap_view_changes,
        stop: stop_rx.clone(),
    });
    let start = Instant::now();
    let deadline = start + config.duration;

    let executor = {
        let faults = Arc::clone(&faults);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut episodes = Vec::new();
            for ep in plan {
                tokio::select! {
                    _ = tokio::time::sleep_until((start + ep.at).into()) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                let f = Arc::clone(&faults);
                episodes.push(tokio::spawn(async move { f.run(ep).await }));
            }
            let mut first_error = None;
            for e in episodes {
                if let Err(err) = e.await.expect("fault episode task") {
                    first_error.get_or_insert(err);
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    };
    let reaper = {
        let cluster = Arc::clone(cluster);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.wait_for(|s| *s) => return Ok::<(), ClusterError>(()),
                }
                cluster.reap_crashed().await?;
            }
        })
    };
    let progress = {
        let cluster = Arc::clone(cluster);
        let firewall = firewall.cloned();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                eprintln!(
                    "torture: t={:>4}s nodes up {:?}, partition rules {}",
                    start.elapsed().as_secs(),
                    cluster.reachable.up_nodes(),
                    firewall.as_ref().map_or(0, |f| f.active_rules())
                );
            }
        })
    };

    let workload = Workload::new(
        WorkloadConfig {
            seed: config.seed,
            sessions: config.sessions,
            keys: keys.to_vec(),
            think: config.think,
            timeout: Duration::from_secs(5),
            handoff: config.handoff,
            large_values: config.large_values,
            large_bytes: config.large_bytes,
            batches: config.batches,
            listings: config.listings,
            ttl_writes: config.ttl_writes,
            idempotent: config.idempotent,
            idempotent_batches: config.idempotent_batches,
        },
        Arc::clone(&cluster.reachable),
        Arc::clone(history),
        cluster.http().clone(),
    );
    let ops = workload.run(deadline).await;
    eprintln!("torture: load done, {ops} operations; healing");
    let _ = stop_tx.send(true);
    progress.await.expect("progress task");
    let episodes = executor.await.expect("executor task");
    reaper.await.expect("reaper task")?;
    if let Some(fw) = firewall {
        fw.heal_all()?;
    }
    cluster.heal_nodes().await?;
    cluster.reap_crashed().await?;
    history.fault(Fault::HealAll);
    episodes?;

    let converge_deadline = Instant::now() + config.converge_timeout;
    let ttl = workload.ttl_writes();
    loop {
        let round = final_round(cluster, keys).await;
        let finals_ok = checker::check_final_state_with_ttl(&round, &ttl.keys, &ttl.values)
            .anomalies
            .is_empty();
        if finals_ok || Instant::now() > converge_deadline {
            if !finals_ok {
                eprintln!(
                    "torture: no convergence within {:?}; recording the last state",
                    config.converge_timeout
                );
            }
            for e in &round {
                history.record(e);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "torture: final state recorded after {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads every key from every node of the final view with an empty context,
/// plus each node's key count.
async fn final_round(cluster: &Cluster, keys: &[String]) -> Vec<Event> {
    let (view, rf) = cluster.view().await;
    let rf = rf.max(1);
    let shards: Vec<(String, Vec<String>)> = view
        .chunks(rf)
        .enumerate()
        .map(|(i, c)| ((i + 1).to_string(), c.to_vec()))
        .collect();
    let mut events = vec![Event::FinalView { shards }];
    for node in &view {
        for key in keys {
            let read = match cluster
                .get_json(node, &format!("/kv-store/keys/{key}"))
                .await
            {
                Ok((status, body)) => FinalRead {
                    node: node.clone(),
                    key: key.clone(),
                    status: Some(status),
                    value: (status == 200)
                        .then(|| body.get("value").map(history::value_name))
                        .flatten(),
                    local: body.get("address").is_none(),
                    error: None,
                },
                Err(e) => FinalRead {
                    node: node.clone(),
                    key: key.clone(),
                    status: None,
                    value: None,
                    local: false,
                    error: Some(e),
                },
            };
            events.push(Event::Final(read));
        }
    }
    for node in &view {
        if let Ok((200, body)) = cluster.get_json(node, "/kv-store/key-count").await {
            let shard = match body.get("shard-id") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "?".into(),
            };
            let count = body
                .get("key-count")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            events.push(Event::KeyCount(KeyCount {
                node: node.clone(),
                shard,
                count,
            }));
        }
    }
    events
}
