//! Deletes survive a power loss under `--durability os`: a replica acknowledges writes
//! (and replicated versions) before they are synced, so a tombstone it received may be
//! gone after a power loss while its peers have collected theirs. Tombstone collection
//! therefore counts only what every peer holds *durably*. Likewise a hand-over's new
//! owner acknowledges it only once it is synced, since the old owner then drops the keys.
//!
//! And an old owner restarted in the middle of a hand-over says it is done only once a
//! batch of its previous process can no longer be applied.
//!
//! Two real nodes (fjall stores under `os` durability in temporary directories) in one
//! process, over the in-memory transport. The power loss is played by restarting a node
//! from a copy of its data directory taken when the background sync was last allowed
//! to run.

use causeway_server::causal::{Context, Value};
use causeway_server::node::{Node, NodeConfig, Timeouts};
use causeway_server::placement::View;
use causeway_server::storage::{Durability, Storage};
use causeway_server::transport::memory::Network;
use causeway_server::transport::{KeyOp, KeyOutcome, KeyRequest};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn addr(i: usize) -> String {
    format!("10.0.1.{i}:13800")
}

fn timeouts() -> Timeouts {
    Timeouts {
        fetch: Duration::from_millis(200),
        proxy_attempt: Duration::from_millis(400),
        proxy_total: Duration::from_millis(1000),
        sync: Duration::from_millis(500),
        migrate: Duration::from_secs(5),
        heartbeat: Duration::from_millis(100),
        apply_view: Duration::from_secs(2),
        settle: Duration::from_secs(2),
        handover_grace: Duration::from_secs(3600),
    }
}

fn boot(net: &Arc<Network>, i: usize, dir: &Path, view: &View, sync_paused: bool) -> Arc<Node> {
    let a = addr(i);
    net.unregister(&a);
    let mut cfg = NodeConfig::new(&a);
    cfg.timeouts = timeouts();
    // Tombstones wait twice the idempotency window; here they may go at once.
    cfg.idempotency_window = Duration::ZERO;
    let (storage, loaded) = Storage::open(dir, Durability::Os).expect("open store");
    storage.faults().pause_background_sync(sync_paused);
    let node = Node::start(cfg, storage, loaded, view.clone(), net.transport(&a)).expect("start");
    net.register(&node);
    node
}

/// A PUT (`Some`) or DELETE (`None`) with an empty context, which must succeed.
async fn write(node: &Node, key: &str, value: Option<&str>) {
    let op = match value {
        Some(v) => KeyOp::Put(Value::Str(v.into())),
        None => KeyOp::Delete,
    };
    let r = node
        .handle_key(KeyRequest {
            key: key.into(),
            op,
            ctx: Context::default(),
        })
        .await;
    assert!(r.result.is_ok(), "{key}: {r:?}");
}

async fn read(node: &Node, key: &str) -> Option<String> {
    let r = node
        .handle_key(KeyRequest {
            key: key.into(),
            op: KeyOp::Get,
            ctx: Context::default(),
        })
        .await;
    match r.result {
        Ok(KeyOutcome::Found(Value::Str(s))) => Some(s.to_string()),
        _ => None,
    }
}

fn collected(node: &Node) -> bool {
    !node
        .metrics
        .encode()
        .contains("causeway_tombstones_collected_total 0")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

async fn until(within: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_survives_a_power_loss_of_the_replica_that_had_not_synced_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    let net = Network::new();
    let view = View::new(0, vec![addr(1), addr(2)], 2);
    let n1 = boot(&net, 1, &d1, &view, false);
    let n2 = boot(&net, 2, &d2, &view, false);

    write(&n1, "k", Some("old")).await;
    assert!(
        until(Duration::from_secs(5), async || read(&n2, "k")
            .await
            .as_deref()
            == Some("old"))
        .await,
        "node 2 received the write"
    );
    // Node 2 syncs what it holds, then stops syncing: what it receives from now on
    // would not survive a power loss. Its disk as a power loss would leave it:
    tokio::time::sleep(Duration::from_millis(200)).await;
    n2.faults().pause_background_sync(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let snapshot = tmp.path().join("n2-at-power-loss");
    copy_dir(&d2, &snapshot);

    write(&n1, "k", None).await;
    assert!(
        until(Duration::from_secs(5), async || read(&n2, "k")
            .await
            .is_none())
        .await,
        "node 2 received the delete"
    );
    // Node 1 may collect its tombstone only once node 2 holds the delete durably, which
    // it does not.
    let early = until(Duration::from_secs(3), async || collected(&n1)).await;

    // Power loss of node 2: it comes back with the disk it had synced.
    n2.stop();
    let restored = tmp.path().join("n2-restored");
    copy_dir(&snapshot, &restored);
    let n2 = boot(&net, 2, &restored, &view, false);

    let converged = until(Duration::from_secs(5), async || {
        read(&n1, "k").await.is_none() && read(&n2, "k").await.is_none()
    })
    .await;
    assert!(
        converged,
        "the deleted key came back: node 1 reads {:?}, node 2 reads {:?} (node 1 collected \
         its tombstone before node 2 had synced the delete: {early})",
        read(&n1, "k").await,
        read(&n2, "k").await
    );
    assert!(
        !early,
        "node 1 collected a tombstone node 2 did not hold durably"
    );
}

/// Under `os` durability a hand-over is acknowledged by its new owner only once it is
/// synced: the old owner drops keys on that word, so a power loss of the new owner right
/// after a view change must not take them with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_survives_a_power_loss_of_its_new_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    let net = Network::new();
    let view = View::new(0, vec![addr(1), addr(2)], 1);
    let n1 = boot(&net, 1, &d1, &view, false);
    let n2 = boot(&net, 2, &d2, &view, false);
    let keys: Vec<String> = (0..40).map(|i| format!("h{i}")).collect();
    for k in &keys {
        write(&n1, k, Some(k)).await;
    }
    let (_, on_n1) = n1.key_count();
    assert!(on_n1 > 0, "node 1 owns some of the keys");
    // Node 2 stops syncing: what it receives from now on is in the operating system's
    // hands only. Then node 2 becomes the only owner: node 1 hands its keys over.
    tokio::time::sleep(Duration::from_millis(200)).await;
    n2.faults().pause_background_sync(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Its disk as a power loss would leave it from now on (a copy taken later would
    // read what the operating system holds but never wrote out).
    let snapshot = tmp.path().join("n2-at-power-loss");
    copy_dir(&d2, &snapshot);
    let coordinator = n1.clone();
    let change = tokio::spawn(async move { coordinator.view_change(vec![addr(2)], 1).await });
    // Node 1 drops its keys once node 2 acknowledged them (if node 2 acknowledges
    // before it synced, that happens at once).
    let dropped = until(Duration::from_secs(3), async || n1.key_count().1 == 0).await;

    // Power loss of node 2: it comes back with the disk it had synced.
    n2.stop();
    let restored = tmp.path().join("n2-restored");
    copy_dir(&snapshot, &restored);
    let n2 = boot(&net, 2, &restored, &view, false);

    let mut missing = keys.clone();
    let all_back = until(Duration::from_secs(15), async || {
        let mut still = Vec::new();
        for k in &missing {
            if read(&n2, k).await.as_deref() != Some(k.as_str()) {
                still.push(k.clone());
            }
        }
        missing = still;
        missing.is_empty()
    })
    .await;
    assert!(
        all_back,
        "{} of {} keys lost with node 2's power loss (node 1 had dropped its keys before \
         it: {dropped}): {:?}",
        missing.len(),
        keys.len(),
        missing
    );
    change.abort();
}

/// An old owner restarted in the middle of a hand-over says it holds nothing more only
/// once a batch its previous process may have sent can no longer be applied (the
/// `migrate` timeout, 5 s here, after the restart): until then its new owner keeps
/// waiting for it, and so keeps its tombstones, though the keys arrived at once.
/// Announced earlier, a late batch of the previous process could bring back a key
/// whose tombstone the new owner had collected meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_owner_restarted_mid_hand_over_announces_only_once_its_earlier_batches_expired() {
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    let net = Network::new();
    let view = View::new(0, vec![addr(1), addr(2)], 1);
    let n1 = boot(&net, 1, &d1, &view, false);
    let n2 = boot(&net, 2, &d2, &view, false);
    for i in 0..40 {
        write(&n1, &format!("r{i}"), Some("v")).await;
    }
    assert!(n1.key_count().1 > 0, "node 1 owns some of the keys");
    // Node 1 moves every key to node 2 while cut off from it: its hand-over cannot start.
    net.partition(&[&addr(1)], &[&addr(2)]);
    let coordinator = n1.clone();
    let change = tokio::spawn(async move { coordinator.view_change(vec![addr(2)], 1).await });
    assert!(
        until(Duration::from_secs(5), async || n1.view().epoch
            != view.epoch)
        .await,
        "node 1 installed the change"
    );
    // Node 1 restarts (from a copy of its disk: the first process still holds the
    // store open), still holding the keys, with the partition healed (before the
    // restart: a call made across the cut would wait out its whole timeout).
    change.abort();
    n1.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = tmp.path().join("n1-again");
    copy_dir(&d1, &again);
    net.heal();
    let restarted = tokio::time::Instant::now();
    let n1 = boot(&net, 1, &again, &view, false);
    assert_ne!(n1.view().epoch, view.epoch, "it restarts in the new view");
    assert!(
        until(Duration::from_secs(5), async || n1.key_count().1 == 0).await,
        "node 1 handed its keys over"
    );
    let handed = restarted.elapsed();
    assert!(
        n2.self_status().waiting_for.contains(&addr(1)),
        "node 2 waits for node 1 ({:?} after its restart)",
        handed
    );
    assert!(
        until(Duration::from_secs(15), async || n2
            .self_status()
            .waiting_for
            .is_empty())
        .await,
        "node 1 never said it was done"
    );
    let said = restarted.elapsed();
    assert!(
        said >= timeouts().migrate,
        "node 1 said it was done {said:?} after its restart (keys handed over after \
         {handed:?}), before a batch of its earlier process could have expired"
    );
}
