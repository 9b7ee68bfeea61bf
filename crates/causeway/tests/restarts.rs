//! Restarts whose disk is older than what the node's peers already received (a power
//! loss under `--durability os`, a restored backup), against real node processes.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

fn data_dir(n: &NodeProc) -> std::path::PathBuf {
    n.env
        .iter()
        .find(|(k, _)| k == "DATA_DIR")
        .map(|(_, d)| d.into())
        .unwrap()
}

fn holds(addr: &str, keys: &[String]) -> usize {
    keys.iter()
        .filter(|k| value_of(&Session::new().get(addr, k).1).as_deref() == Some(k.as_str()))
        .count()
}

#[test]
fn a_power_loss_under_os_durability_never_reuses_write_numbers() {
    a_restart_with_an_older_disk_converges("os", 41);
}

#[test]
fn a_restored_backup_under_sync_durability_never_reuses_write_numbers() {
    a_restart_with_an_older_disk_converges("sync", 46);
}

/// The node's disk comes back older than what its peer already received (a power
/// loss, a restored backup), then it takes new writes: both replicas must end up
/// with everything.
fn a_restart_with_an_older_disk_converges(durability: &str, block: u8) {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(block, 2);
    let mut nodes: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start_with(x, &a, 2, dir.path(), &[("DURABILITY", durability)]))
        .collect();
    let keys = |p: &str| (0..20).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let (first, lost, after) = (keys("first"), keys("lost"), keys("after"));
    let write = |ks: &[String]| {
        let mut s = Session::new();
        for k in ks {
            assert!(matches!(s.put(&a[0], k, k).0, 200 | 201));
        }
    };
    write(&first);
    wait_until(Duration::from_secs(5), || {
        holds(&a[1], &first) == first.len()
    })
    .unwrap();

    // The disk as it will be found after the power loss: before the `lost` writes.
    nodes[0].kill9();
    let live = data_dir(&nodes[0]);
    let snapshot = dir.path().join("snapshot");
    copy_dir(&live, &snapshot);
    nodes[0].restart();
    write(&lost);
    wait_until(Duration::from_secs(5), || holds(&a[1], &lost) == lost.len())
        .expect("the peer received the writes that will be lost");

    // Power loss: the node comes back with the older disk, then takes new writes.
    nodes[0].kill9();
    copy_dir(&snapshot, &live);
    nodes[0].restart();
    write(&after);

    let all: Vec<String> = [first, lost, after].concat();
    let converged = wait_until(Duration::from_secs(10), || {
        holds(&a[0], &all) == all.len() && holds(&a[1], &all) == all.len()
    });
    assert!(
        converged.is_some(),
        "replicas diverged: node 1 holds {} and node 2 holds {} of {} keys",
        holds(&a[0], &all),
        holds(&a[1], &all),
        all.len()
    );
}

#[test]
fn a_restored_backup_does_not_bring_back_deletes_its_peer_collected_under_sync() {
    a_restored_backup_keeps_collected_deletes_deleted("sync", 53, false);
}

#[test]
fn a_restored_backup_does_not_bring_back_deletes_its_peer_collected_under_os() {
    a_restored_backup_keeps_collected_deletes_deleted("os", 54, false);
}

/// The same with the peer restarted too (a power cut of the whole rack, say): the peer
/// no longer has the restored node's earlier clock in memory, only on disk.
#[test]
fn a_restored_backup_keeps_deletes_deleted_when_its_peer_restarted_too() {
    a_restored_backup_keeps_collected_deletes_deleted("sync", 55, true);
}

/// Writes keys `gone0..19` and `kept0..19` through `a[0]` and waits until every node of
/// `a` serves them all; returns the two sets.
fn write_gone_and_kept(a: &[String]) -> (Vec<String>, Vec<String>) {
    let keys = |p: &str| (0..20).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let (gone, kept) = (keys("gone"), keys("kept"));
    let mut s = Session::new();
    for k in gone.iter().chain(&kept) {
        assert!(matches!(s.put(&a[0], k, k).0, 200 | 201));
    }
    let all: Vec<String> = [gone.clone(), kept.clone()].concat();
    wait_until(Duration::from_secs(5), || {
        a.iter().all(|x| holds(x, &all) == all.len())
    })
    .expect("every node serves every write");
    (gone, kept)
}

/// Copies `node`'s data directory (stopped for it, then restarted) to `backup` under
/// `dir`; returns the live directory and the backup's path.
fn back_up(node: &mut NodeProc, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    node.kill9();
    let live = data_dir(node);
    let backup = dir.join("backup");
    copy_dir(&live, &backup);
    node.restart();
    (live, backup)
}

/// What `/metrics` at `addr` says of `name` (0 when absent or unreachable).
fn metric(addr: &str, name: &str) -> u64 {
    call_text("GET", addr, "/metrics", Vec::new())
        .and_then(|(_, text)| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

/// A node's data directory is restored from a backup taken before some of its keys
/// were deleted; meanwhile its peer deleted them and, once both replicas held the
/// deletes, collected the tombstones. Nothing remembers those deletes any more, yet
/// the restored node must not keep (and serve) the old values, and its peer must not
/// take them back. With `peer_restarts`, the peer is killed and restarted together with
/// the restore.
fn a_restored_backup_keeps_collected_deletes_deleted(
    durability: &str,
    block: u8,
    peer_restarts: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(block, 2);
    // Tombstones are kept twice the idempotency window: 2 s here.
    let extra = [("DURABILITY", durability), ("IDEMPOTENCY_WINDOW", "1")];
    let mut nodes: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start_with(x, &a, 2, dir.path(), &extra))
        .collect();
    let (gone, kept) = write_gone_and_kept(&a);

    // The backup: node 1's disk while it still held the keys about to be deleted.
    let (live, backup) = back_up(&mut nodes[0], dir.path());

    let mut s = Session::new();
    for k in &gone {
        assert_eq!(s.delete(&a[1], k).0, 200, "delete {k}");
    }
    let collected = |addr: &str| metric(addr, "causeway_tombstones_collected_total");
    wait_until(Duration::from_secs(20), || {
        collected(&a[0]) >= gone.len() as u64 && collected(&a[1]) >= gone.len() as u64
    })
    .unwrap_or_else(|| {
        panic!(
            "both replicas collect the tombstones: collected {} and {}",
            collected(&a[0]),
            collected(&a[1])
        )
    });

    // The backup is restored.
    nodes[0].kill9();
    if peer_restarts {
        nodes[1].kill9();
    }
    copy_dir(&backup, &live);
    nodes[0].restart();
    if peer_restarts {
        nodes[1].restart();
    }

    let absent = |addr: &str| {
        gone.iter()
            .filter(|k| Session::new().get(addr, k).0 == 404)
            .count()
    };
    let converged = wait_until(Duration::from_secs(10), || {
        absent(&a[0]) == gone.len()
            && absent(&a[1]) == gone.len()
            && holds(&a[0], &kept) == kept.len()
            && holds(&a[1], &kept) == kept.len()
    });
    assert!(
        converged.is_some(),
        "deleted keys came back: {} of {} are absent at the restored node, {} at its peer; \
         kept keys held: {} and {} of {}",
        absent(&a[0]),
        gone.len(),
        absent(&a[1]),
        holds(&a[0], &kept),
        holds(&a[1], &kept),
        kept.len()
    );
    // And they stay away (the peer never takes them back from the restored node).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((absent(&a[0]), absent(&a[1])), (gone.len(), gone.len()));
}

/// A backup from before a view change is restored. Node 1 left the view (handing
/// everything over to node 2), node 2 deleted some keys and collected their
/// tombstones; then node 1's disk is restored from a backup taken while it still held
/// those keys as a member of the earlier view. Coming back, it would install the newer
/// view and hand its stale copies over again, and node 2, which remembers nothing of
/// the deletes any more, would take them.
#[test]
fn a_backup_from_before_a_view_change_does_not_hand_deletes_back() {
    a_backup_from_before_a_view_change_keeps_deletes_deleted(56, 2, &[1], 1);
}

/// The same when node 1 stays in the view and the change gives its shard more keys
/// (4 nodes in shards of 2 become one shard of nodes 1 and 2): installing the newer
/// view again, the restored node would re-dot every version it holds as new, its stale
/// copies of deleted keys included, and replicate them to node 2.
#[test]
fn a_backup_from_before_a_view_change_does_not_re_dot_deletes_back() {
    a_backup_from_before_a_view_change_keeps_deletes_deleted(57, 4, &[0, 1], 2);
}

/// Nodes `1..=n` in shards of 2 take keys; node 1's disk is backed up; a view change to
/// the nodes of index `members` (`repl` replicas per shard) follows; some keys are
/// deleted and their tombstones collected; node 1's backup is restored. The node must
/// see that its disk went back (a node saw it in a later view) and refuse to start,
/// saying why; started on an empty data directory, it joins as usual. No deleted key
/// comes back anywhere.
fn a_backup_from_before_a_view_change_keeps_deletes_deleted(
    block: u8,
    n: usize,
    members: &[usize],
    repl: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let a = addrs(block, n);
    let extra = [("IDEMPOTENCY_WINDOW", "1")];
    let mut nodes: Vec<_> = a
        .iter()
        .map(|x| NodeProc::start_with(x, &a, 2, dir.path(), &extra))
        .collect();
    let (gone, kept) = write_gone_and_kept(&a);

    // The backup, in the first view.
    let (live, backup) = back_up(&mut nodes[0], dir.path());

    let view: Vec<&String> = members.iter().map(|i| &a[*i]).collect();
    let coordinator = view[0].clone();
    let body = serde_json::json!({
        "view": view.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(","),
        "repl-factor": repl,
    });
    let (code, answer) = call("PUT", &coordinator, "/kv-store/view-change", Some(&body)).unwrap();
    assert_eq!(code, 200, "view change: {answer}");
    let mut s = Session::new();
    for k in &gone {
        assert_eq!(s.delete(&coordinator, k).0, 200, "delete {k}");
    }
    let collected = |x: &str| metric(x, "causeway_tombstones_collected_total");
    wait_until(Duration::from_secs(20), || {
        view.iter().all(|x| collected(x) >= gone.len() as u64)
    })
    .unwrap_or_else(|| panic!("the replicas collect the tombstones"));

    // Restarted on its own disk, node 1 starts as usual (`restart` waits until it is
    // ready): only a disk that went back is refused.
    nodes[0].restart();

    // The backup is restored on node 1.
    nodes[0].kill9();
    copy_dir(&backup, &live);
    let refused = nodes[0].restart_refused(Duration::from_secs(10));

    let absent = |x: &str| {
        gone.iter()
            .filter(|k| Session::new().get(x, k).0 == 404)
            .count()
    };
    // The view's nodes that run (node 1 too, if it started).
    let up: Vec<&String> = view
        .iter()
        .copied()
        .filter(|x| **x != a[0] || refused.is_none())
        .collect();
    let back = wait_until(Duration::from_secs(5), || {
        up.iter().any(|x| absent(x) < gone.len())
    });
    assert!(
        back.is_none(),
        "deleted keys came back: absent at {:?}: {:?} of {} (node 1 {})",
        up,
        up.iter().map(|x| absent(x)).collect::<Vec<_>>(),
        gone.len(),
        if refused.is_some() {
            "exited"
        } else {
            "is running"
        }
    );
    let (status, stderr) = refused.expect("node 1 refuses to start on a disk that went back");
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("went back") && stderr.contains("ALLOW_STALE_DISK"),
        "the refusal says why and what to do: {stderr}"
    );

    // On an empty data directory it starts, and (a member) gets what it owns.
    nodes[0].wipe_and_restart();
    let settled = wait_until(Duration::from_secs(10), || {
        view.iter()
            .all(|x| absent(x) == gone.len() && holds(x, &kept) == kept.len())
            && absent(&a[0]) == gone.len()
            && holds(&a[0], &kept) == kept.len()
    });
    assert!(
        settled.is_some(),
        "after the wipe: gone keys absent {:?}, kept keys held {:?} (node 1: {} and {})",
        view.iter().map(|x| absent(x)).collect::<Vec<_>>(),
        view.iter().map(|x| holds(x, &kept)).collect::<Vec<_>>(),
        absent(&a[0]),
        holds(&a[0], &kept)
    );
}
