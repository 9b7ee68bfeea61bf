//! In-process cluster tests: whole clusters of real nodes in one process, talking over
//! the in-memory transport, with links cut to make partitions. Fast enough for every
//! commit; the same scenarios run against real processes in `processes.rs`.

use causeway_server::causal::{Context, Value};
use causeway_server::metrics::OutcomeLabels;
use causeway_server::node::{Node, NodeConfig, Timeouts};
use causeway_server::placement::View;
use causeway_server::storage::Storage;
use causeway_server::transport::memory::Network;
use causeway_server::transport::{
    Envelope, KeyError, KeyOp, KeyOutcome, KeyRequest, KeyResponse, Rpc, RpcReply,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

struct Cluster {
    net: Arc<Network>,
    nodes: HashMap<String, Arc<Node>>,
    timeouts: Timeouts,
}

fn addr(i: usize) -> String {
    format!("10.0.0.{i}:13800")
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

impl Cluster {
    fn start(n: usize, repl: usize) -> Cluster {
        Self::start_with(n, repl, timeouts())
    }

    fn start_with(n: usize, repl: usize, timeouts: Timeouts) -> Cluster {
        let net = Network::new();
        let view = View::new(0, (1..=n).map(addr).collect(), repl);
        let mut c = Cluster {
            net,
            nodes: HashMap::new(),
            timeouts,
        };
        for i in 1..=n {
            c.boot(&addr(i), view.clone());
        }
        c
    }

    /// Starts (or restarts, with an empty store) the node at `a`.
    fn boot(&mut self, a: &str, view: View) {
        if let Some(old) = self.nodes.remove(a) {
            old.stop();
            self.net.unregister(a);
        }
        let mut cfg = NodeConfig::new(a);
        cfg.timeouts = self.timeouts.clone();
        // Tombstones wait twice the idempotency window; these tests collect at once.
        cfg.idempotency_window = Duration::ZERO;
        let (storage, loaded) = Storage::in_memory();
        let node = Node::start(cfg, storage, loaded, view, self.net.transport(a))
            .expect("in-memory start");
        self.net.register(&node);
        self.nodes.insert(a.to_string(), node);
    }

    fn node(&self, i: usize) -> &Arc<Node> {
        &self.nodes[&addr(i)]
    }

    /// The first key `<prefix><n>` that node 1's view places in `shard`.
    fn key_in_shard(&self, prefix: &str, shard: u32) -> String {
        let view = self.node(1).view();
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| view.shard_of_key(k) == shard)
            .unwrap()
    }

    async fn op(&self, i: usize, key: &str, op: KeyOp, ctx: &Context) -> KeyResponse {
        self.node(i)
            .handle_key(KeyRequest {
                key: key.into(),
                op,
                ctx: ctx.clone(),
            })
            .await
    }

    async fn put(&self, i: usize, key: &str, v: &str, ctx: &Context) -> KeyResponse {
        self.op(i, key, KeyOp::Put(Value::Str(v.into())), ctx).await
    }

    async fn get(&self, i: usize, key: &str, ctx: &Context) -> KeyResponse {
        self.op(i, key, KeyOp::Get, ctx).await
    }

    /// True when node `i` has collected exactly one tombstone.
    fn collected_one(&self, i: usize) -> bool {
        self.node(i)
            .metrics
            .encode()
            .contains("causeway_tombstones_collected_total 1")
    }

    /// Polls until every listed node has collected exactly one tombstone.
    async fn await_collected(&self, nodes: &[usize], within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !nodes.iter().all(|&i| self.collected_one(i)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tombstones not collected"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until every listed node serves `key` as `expected` with an empty context.
    async fn await_value(
        &self,
        nodes: &[usize],
        key: &str,
        expected: Option<&str>,
        within: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut all = true;
            for &i in nodes {
                let r = self.get(i, key, &Context::default()).await;
                let got = match r.result {
                    Ok(KeyOutcome::Found(Value::Str(s))) => Some(s.to_string()),
                    _ => None,
                };
                all &= got.as_deref() == expected;
            }
            if all {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{key} did not converge to {expected:?} on {nodes:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn value(r: &KeyResponse) -> Option<String> {
    match &r.result {
        Ok(KeyOutcome::Found(Value::Str(s))) => Some(s.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_every_replica() {
    let c = Cluster::start(3, 3);
    let r = c.put(1, "k", "v1", &Context::default()).await;
    assert_eq!(r.result, Ok(KeyOutcome::Put { replaced: false }));
    assert!(r.served_by.is_none(), "a replica serves its own shard");
    c.await_value(&[1, 2, 3], "k", Some("v1"), Duration::from_secs(1))
        .await;
    // Read-your-writes on another replica with the context.
    let r2 = c.put(2, "k", "v2", &r.ctx).await;
    assert_eq!(r2.result, Ok(KeyOutcome::Put { replaced: true }));
    assert_eq!(value(&c.get(3, "k", &r2.ctx).await).as_deref(), Some("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_bob_carol_across_a_partition() {
    let c = Cluster::start(2, 2);
    let (n1, n2) = (addr(1), addr(2));
    // Both sides start with the old a.
    let seed = c.put(1, "a", "old", &Context::default()).await;
    c.await_value(&[1, 2], "a", Some("old"), Duration::from_secs(2))
        .await;
    c.net.partition(&[&n1], &[&n2]);

    // Alice updates a on side 1; Bob reads it there.
    let alice = c.put(1, "a", "new", &seed.ctx).await;
    assert!(alice.result.is_ok());
    let bob_read = c.get(1, "a", &Context::default()).await;
    assert_eq!(value(&bob_read).as_deref(), Some("new"));
    // Bob updates b on side 2 with that context: accepted at once.
    let bob = c.put(2, "b", "from-bob", &bob_read.ctx).await;
    assert_eq!(bob.result, Ok(KeyOutcome::Put { replaced: false }));
    // Carol reads b on side 2, then a there: never the old a.
    let carol_b = c.get(2, "b", &Context::default()).await;
    assert_eq!(value(&carol_b).as_deref(), Some("from-bob"));
    let carol_a = c.get(2, "a", &carol_b.ctx).await;
    assert_eq!(
        carol_a.result,
        Err(KeyError::Unsatisfiable),
        "stale a must not be served"
    );
    // Alice updates a on Bob's side: Carol's next read there returns it.
    let alice2 = c.put(2, "a", "newer", &alice.ctx).await;
    assert!(alice2.result.is_ok());
    let carol_a2 = c.get(2, "a", &carol_b.ctx).await;
    assert_eq!(value(&carol_a2).as_deref(), Some("newer"));

    c.net.heal();
    c.await_value(&[1, 2], "a", Some("newer"), Duration::from_secs(2))
        .await;
    c.await_value(&[1, 2], "b", Some("from-bob"), Duration::from_secs(2))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_in_a_partition_converge() {
    let c = Cluster::start(2, 2);
    c.net.partition(&[&addr(1)], &[&addr(2)]);
    let r1 = c.put(1, "k", "left", &Context::default()).await;
    let r2 = c.put(2, "k", "right", &Context::default()).await;
    assert_eq!(r1.result, Ok(KeyOutcome::Put { replaced: false }));
    assert_eq!(r2.result, Ok(KeyOutcome::Put { replaced: false }));
    // Many divergent keys on both sides.
    for i in 0..2000 {
        c.put(
            1 + i % 2,
            &format!("d{i}"),
            &format!("v{i}"),
            &Context::default(),
        )
        .await;
    }
    c.net.heal();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (a, b) = (c.node(1).key_count().1, c.node(2).key_count().1);
        if a == 2001 && b == 2001 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "counts {a} {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v1 = value(&c.get(1, "k", &Context::default()).await);
    let v2 = value(&c.get(2, "k", &Context::default()).await);
    assert_eq!(v1, v2, "replicas agree on one winner");
    assert!(v1 == Some("left".into()) || v1 == Some("right".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_replicate_and_tombstones_are_collected() {
    let c = Cluster::start(2, 2);
    let r = c.put(1, "k", "v", &Context::default()).await;
    c.await_value(&[1, 2], "k", Some("v"), Duration::from_secs(1))
        .await;
    let d = c.op(2, "k", KeyOp::Delete, &r.ctx).await;
    assert_eq!(d.result, Ok(KeyOutcome::Deleted));
    c.await_value(&[1, 2], "k", None, Duration::from_secs(1))
        .await;
    let again = c.op(1, "k", KeyOp::Delete, &d.ctx).await;
    assert_eq!(again.result, Ok(KeyOutcome::DeleteNotFound));
    // Once both replicas have the tombstone it is collected, and the key stays deleted.
    c.await_collected(&[1, 2], Duration::from_secs(5)).await;
    c.await_value(&[1, 2], "k", None, Duration::from_millis(10))
        .await;
    assert_eq!(c.get(1, "k", &d.ctx).await.result, Ok(KeyOutcome::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_replication_message_does_not_bring_back_a_collected_delete() {
    // A replication message carrying a key's old version is held up in the network
    // (a TCP retransmission after a partition heals) and arrives after the key was
    // deleted and its tombstone collected everywhere. The replica must not take the
    // old version back: its clock says it already saw it, or something newer.
    let c = Cluster::start(2, 2);
    let r = c.put(1, "k", "old", &Context::default()).await;
    c.await_value(&[1, 2], "k", Some("old"), Duration::from_secs(1))
        .await;
    let env = |rpc| Envelope { from: addr(1), rpc };
    let old = match c
        .node(1)
        .handle_rpc(env(Rpc::Fetch {
            key: "k".into(),
            ctx: Context::default(),
        }))
        .await
    {
        RpcReply::Fetched(Some(v)) => v,
        other => panic!("fetch: {other:?}"),
    };
    let d = c.op(1, "k", KeyOp::Delete, &r.ctx).await;
    assert_eq!(d.result, Ok(KeyOutcome::Deleted));
    c.await_collected(&[1, 2], Duration::from_secs(5)).await;
    // The held-up message finally arrives at node 2.
    let late = c
        .node(2)
        .handle_rpc(env(Rpc::Sync {
            epoch: c.node(2).view().epoch,
            versions: vec![("k".into(), old)],
            claim: None,
        }))
        .await;
    assert!(matches!(late, RpcReply::Synced { .. }), "{late:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.await_value(&[1, 2], "k", None, Duration::from_millis(10))
        .await;
    assert_eq!(c.get(2, "k", &d.ctx).await.result, Ok(KeyOutcome::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_hand_over_does_not_bring_back_a_collected_delete() {
    // Node 2, an old owner of k, is cut off during a view change that leaves it out.
    // k is deleted on its new owner, and the delete's tombstone would be collected at
    // once (one replica). When node 2 returns, it hands its old copy of k over: the
    // delete must hold.
    let c = Cluster::start(4, 2);
    let k = c.key_in_shard("k", 1);
    let w = c.put(1, &k, "old", &Context::default()).await;
    c.await_value(&[1, 2], &k, Some("old"), Duration::from_secs(2))
        .await;
    let others: Vec<String> = [1, 3, 4].iter().map(|&i| addr(i)).collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    c.net.partition(&[&addr(2)], &others);
    c.node(1)
        .view_change(vec![addr(1), addr(3)], 1)
        .await
        .expect("view change");
    let d = c.op(1, &k, KeyOp::Delete, &w.ctx).await;
    assert_eq!(d.result, Ok(KeyOutcome::Deleted));
    // Long enough for the collector (every second) to have collected the tombstone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.net.heal();
    // Node 2 learns the view and hands over what it holds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.node(2).key_count().1 > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 2 never handed its keys over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in [1, 3] {
        let r = c.get(i, &k, &d.ctx).await;
        assert_eq!(
            r.result,
            Ok(KeyOutcome::NotFound),
            "{k} came back at node {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_owner_that_never_returns_holds_tombstones_only_for_the_grace_period() {
    let c = Cluster::start_with(
        4,
        2,
        Timeouts {
            handover_grace: Duration::from_secs(3),
            ..timeouts()
        },
    );
    let k = c.key_in_shard("k", 1);
    let w = c.put(1, &k, "v", &Context::default()).await;
    c.await_value(&[1, 2], &k, Some("v"), Duration::from_secs(2))
        .await;
    // Node 2 dies; the operator removes it from the view.
    c.node(2).stop();
    c.net.unregister(&addr(2));
    c.node(1)
        .view_change(vec![addr(1), addr(3)], 1)
        .await
        .expect("view change");
    let d = c.op(1, &k, KeyOp::Delete, &w.ctx).await;
    assert_eq!(d.result, Ok(KeyOutcome::Deleted));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        !c.collected_one(1),
        "collected while node 2 might still hand k over"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while !c.collected_one(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tombstones still held after the grace period"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_is_repaired() {
    let mut c = Cluster::start(2, 2);
    for i in 0..300 {
        c.put(1, &format!("k{i}"), "v", &Context::default()).await;
    }
    c.await_value(&[2], "k299", Some("v"), Duration::from_secs(2))
        .await;
    let view = (*c.node(2).view()).clone();
    c.boot(&addr(2), view);
    assert_eq!(c.node(2).key_count().1, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while c.node(2).key_count().1 != 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "wiped replica has {}",
            c.node(2).key_count().1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // New writes on the restarted replica use a fresh origin: nothing is overwritten by
    // a reused counter.
    let w = c.put(2, "fresh", "x", &Context::default()).await;
    assert!(w.result.is_ok());
    c.await_value(&[1, 2], "fresh", Some("x"), Duration::from_secs(2))
        .await;
    c.await_value(&[1, 2], "k0", Some("v"), Duration::from_secs(1))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_to_the_owning_shard_and_fails_over() {
    let c = Cluster::start(4, 2);
    // A key owned by shard 2 (nodes 3 and 4), asked of node 1.
    let key = c.key_in_shard("p", 2);
    let r = c.put(1, &key, "v", &Context::default()).await;
    assert_eq!(r.result, Ok(KeyOutcome::Put { replaced: false }));
    let by = r
        .served_by
        .clone()
        .expect("proxied answers carry the address");
    assert!(by == addr(3) || by == addr(4));
    c.await_value(&[3, 4], &key, Some("v"), Duration::from_secs(1))
        .await;
    // One replica of shard 2 unreachable: still served, by the other.
    c.net.partition(&[&addr(1), &addr(2)], &[&addr(3)]);
    for _ in 0..4 {
        let g = c.get(1, &key, &r.ctx).await;
        assert_eq!(value(&g).as_deref(), Some("v"));
        assert_eq!(g.served_by.as_deref(), Some(addr(4).as_str()));
    }
    // Whole shard unreachable: 503 within the time budget.
    c.net.partition(&[&addr(1)], &[&addr(4)]);
    let t = std::time::Instant::now();
    let g = c.get(1, &key, &Context::default()).await;
    assert_eq!(g.result, Err(KeyError::Unavailable));
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// A proxied write whose answer is lost may already be applied; the proxy then tries
/// the other replica. That retry must be the same write, not a second one: a write that
/// a client made after reading the first copy must stay the newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_forwarded_write_is_applied_once() {
    let c = Cluster::start(4, 2);
    let key = c.key_in_shard("r", 2);
    // Node 1 forwards to nodes 3 and 4; both apply what it sends, it hears nothing.
    c.net.lose_replies(&addr(1), &[&addr(3), &addr(4)]);
    let forwarded = {
        let node = c.node(1).clone();
        let key = key.clone();
        tokio::spawn(async move {
            node.handle_key(KeyRequest {
                key,
                op: KeyOp::Put(Value::Str("first".into())),
                ctx: Context::default(),
            })
            .await
        })
    };
    // Another client reads the first attempt's copy and overwrites it, before the
    // proxy retries on the other replica (400 ms later).
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let (at, ctx) = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first attempt was never applied"
        );
        let mut seen = None;
        for i in [3, 4] {
            let g = c.get(i, &key, &Context::default()).await;
            if value(&g).as_deref() == Some("first") {
                seen = Some((i, g.ctx));
                break;
            }
        }
        if let Some(seen) = seen {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let w = c.put(at, &key, "second", &ctx).await;
    assert_eq!(w.result, Ok(KeyOutcome::Put { replaced: true }));
    let r = forwarded.await.unwrap();
    assert_eq!(
        r.result,
        Err(KeyError::Unavailable),
        "every answer was lost, so the client hears 503"
    );
    c.net.heal();
    c.await_value(&[1, 2, 3, 4], &key, Some("second"), Duration::from_secs(2))
        .await;
    let g = c.get(at, &key, &w.ctx).await;
    assert_eq!(value(&g).as_deref(), Some("second"));
}

async fn view_change_case(from: (usize, usize), to_nodes: Vec<usize>, to_repl: usize) {
    let n_max = from.0.max(*to_nodes.iter().max().unwrap());
    let mut c = Cluster::start(from.0, from.1);
    // Nodes that join start with the old view, not containing themselves.
    let old_view = (*c.node(1).view()).clone();
    for i in from.0 + 1..=n_max {
        c.boot(&addr(i), old_view.clone());
    }
    let mut ctx = Context::default();
    for i in 0..150 {
        let r = c
            .put(1 + i % from.0, &format!("key{i}"), &format!("v{i}"), &ctx)
            .await;
        assert!(r.result.is_ok());
        ctx = r.ctx;
    }
    let new_nodes: Vec<String> = to_nodes.iter().map(|&i| addr(i)).collect();
    let shards = c
        .node(1)
        .view_change(new_nodes.clone(), to_repl)
        .await
        .expect("view change");
    let total: u64 = shards.iter().map(|s| s.key_count.unwrap()).sum();
    assert_eq!(total, 150, "exact counts: {shards:?}");
    let view = c.node(to_nodes[0]).view();
    assert_eq!(view.nodes, new_nodes);
    // When the change answers, every key is on exactly the replicas of its new shard.
    let deadline = tokio::time::Instant::now();
    loop {
        let mut ok = true;
        for s in 1..=view.shard_count() as u32 {
            for r in view.replicas(s) {
                let (shard, count) = c.nodes[r].key_count();
                ok &= shard == Some(s) && count == shards[(s - 1) as usize].key_count.unwrap();
            }
        }
        for i in 1..=n_max {
            if !view.contains(&addr(i)) {
                ok &= c.node(i).key_count().1 == 0;
            }
        }
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "keys not on exactly their new replicas"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every key readable with its latest value from every node, old and new.
    for i in 1..=n_max {
        for k in (0..150).step_by(7) {
            let r = c.get(i, &format!("key{k}"), &Context::default()).await;
            assert_eq!(value(&r), Some(format!("v{k}")), "key{k} from node {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_change_adds_a_shard() {
    view_change_case((4, 2), vec![1, 2, 3, 4, 5, 6], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_change_removes_nodes() {
    view_change_case((6, 2), vec![3, 4, 5, 6], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_change_changes_the_replication_factor() {
    view_change_case((4, 2), vec![1, 2, 3, 4], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_change_mixed() {
    view_change_case((4, 2), vec![2, 5, 6, 3, 4, 7], 3).await;
}

/// Runs a sequence of view changes over nodes 1..=6 (those not in the first view boot
/// with it, outside it). Before each step it writes new keys, overwrites and deletes
/// some earlier ones; after each it checks that every replica holds exactly its shard's
/// keys (the counts the change answered) and that every key reads back as last
/// written from every node.
async fn view_change_sequence(from: (usize, usize), steps: &[(Vec<usize>, usize)]) {
    let mut c = Cluster::start(from.0, from.1);
    let first_view = (*c.node(1).view()).clone();
    for i in from.0 + 1..=6 {
        c.boot(&addr(i), first_view.clone());
    }
    let mut ctx = Context::default();
    // key number -> latest value (`None`: deleted).
    let mut model: Vec<Option<String>> = Vec::new();
    for (step, (to_nodes, to_repl)) in steps.iter().enumerate() {
        let members = c.node(1).view().nodes.clone();
        let n = model.len();
        let writes = (n..n + 40)
            .map(|i| (i, Some(format!("v{i}"))))
            .chain(
                (step..n)
                    .step_by(7)
                    .map(|i| (i, Some(format!("v{i}.{step}")))),
            )
            .chain((step + 3..n).step_by(11).map(|i| (i, None)));
        for (i, v) in writes.collect::<Vec<_>>() {
            let op = match &v {
                Some(v) => KeyOp::Put(Value::Str(v.as_str().into())),
                None => KeyOp::Delete,
            };
            let at = &c.nodes[&members[i % members.len()]];
            let r = at
                .handle_key(KeyRequest {
                    key: format!("key{i}"),
                    op,
                    ctx: ctx.clone(),
                })
                .await;
            assert!(r.result.is_ok(), "step {step}: key{i}: {:?}", r.result);
            ctx = r.ctx;
            if i == model.len() {
                model.push(v);
            } else {
                model[i] = v;
            }
        }
        let new_nodes: Vec<String> = to_nodes.iter().map(|&i| addr(i)).collect();
        let shards = c
            .node(1)
            .view_change(new_nodes.clone(), *to_repl)
            .await
            .unwrap_or_else(|e| panic!("step {step}: view change: {e}"));
        let live = model.iter().filter(|v| v.is_some()).count() as u64;
        let total: u64 = shards.iter().map(|s| s.key_count.unwrap()).sum();
        assert_eq!(total, live, "step {step}: counts {shards:?}");
        let view = c.node(1).view();
        assert_eq!(view.nodes, new_nodes, "step {step}");
        // When the change answers, every replica holds exactly its shard's keys.
        let counts: Vec<_> = (1..=6)
            .map(|i| {
                let expected = match view.shard_of_node(&addr(i)) {
                    Some(s) => (Some(s), shards[(s - 1) as usize].key_count.unwrap()),
                    None => (None, 0),
                };
                (c.node(i).key_count(), expected)
            })
            .collect();
        assert!(
            counts.iter().all(|(got, want)| got == want),
            "step {step} ({to_nodes:?} x{to_repl}): (got, expected) per node {counts:?}"
        );
        // Every key as last written, from every node (members serve it locally).
        for i in 1..=6 {
            for (k, v) in model.iter().enumerate() {
                let r = c.get(i, &format!("key{k}"), &Context::default()).await;
                let expected = match v {
                    Some(v) => KeyOutcome::Found(Value::Str(v.as_str().into())),
                    None => KeyOutcome::NotFound,
                };
                assert_eq!(
                    r.result,
                    Ok(expected),
                    "step {step} ({to_nodes:?} x{to_repl}): key{k} from node {i}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_that_rejoins_is_refilled() {
    view_change_sequence(
        (4, 2),
        &[
            (vec![1, 3], 1),
            (vec![1, 2, 3, 4], 2),
            (vec![1, 2, 3], 1),
            (vec![1, 2, 3, 4, 5, 6], 2),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_changes_back_and_forth() {
    view_change_sequence(
        (4, 2),
        &[
            (vec![1, 2, 3, 4, 5, 6], 2),
            (vec![1, 2, 3, 4], 1),
            (vec![3, 4, 1, 2], 2),
            (vec![1, 2, 3, 4, 5, 6], 3),
            (vec![2, 4, 6], 1),
            (vec![1, 2, 3, 4, 5, 6], 2),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_goes_quiet_after_a_shard_takes_keys() {
    // From 3 shards to 2: both replicas of shard 1 take keys they did not own, start
    // new clocks, and must bring each other up to date once, not over and over.
    let c = Cluster::start(6, 2);
    let mut ctx = Context::default();
    for i in 0..300 {
        ctx = c
            .put(1 + i % 6, &format!("key{i}"), &format!("v{i}"), &ctx)
            .await
            .ctx;
    }
    c.node(1)
        .view_change((1..=4).map(addr).collect(), 2)
        .await
        .expect("view change");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rounds = || -> Vec<u64> {
        (1..=4)
            .map(|i| {
                let m = &c.node(i).metrics.sync_rounds;
                m.get_or_create(&OutcomeLabels { outcome: "ok" }).get()
            })
            .collect()
    };
    let before = rounds();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let per_second: Vec<u64> = rounds().iter().zip(&before).map(|(a, b)| a - b).collect();
    // Idle, each loop syncs once per 100 ms heartbeat.
    assert!(
        per_second.iter().all(|&n| n <= 30),
        "sync rounds in 1 s: {per_second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_during_a_view_change_catches_up() {
    let mut c = Cluster::start(4, 2);
    let old_view = (*c.node(1).view()).clone();
    for i in 5..=6 {
        c.boot(&addr(i), old_view.clone());
    }
    let mut ctx = Context::default();
    for i in 0..120 {
        ctx = c
            .put(1 + i % 4, &format!("key{i}"), &format!("v{i}"), &ctx)
            .await
            .ctx;
    }
    c.await_value(&[4], "key119", Some("v119"), Duration::from_secs(2))
        .await;
    // Node 4 is cut off from everyone while the view changes from 2 to 3 shards.
    let others: Vec<String> = [1, 2, 3, 5, 6].iter().map(|&i| addr(i)).collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    c.net.partition(&[&addr(4)], &others);
    let new_nodes: Vec<String> = (1..=6).map(addr).collect();
    c.node(1)
        .view_change(new_nodes.clone(), 2)
        .await
        .expect("view change without node 4");
    assert_eq!(c.node(4).view().epoch, 0, "node 4 did not hear of it");
    c.net.heal();
    // Node 4 learns the view from its peers, hands over what it no longer owns, and is
    // brought up to date by its new shard peer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let view = c.node(4).view();
        let counts: Vec<u64> = (1..=6).map(|i| c.node(i).key_count().1).collect();
        let per_shard_equal = (0..3).all(|s| counts[2 * s] == counts[2 * s + 1]);
        if view.nodes == new_nodes && per_shard_equal && counts.iter().sum::<u64>() == 240 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not caught up: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 1..=6 {
        for k in (0..120).step_by(11) {
            let r = c.get(i, &format!("key{k}"), &Context::default()).await;
            assert_eq!(value(&r), Some(format!("v{k}")), "key{k} from node {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_views_heard_by_different_sides_converge_without_losing_writes() {
    // Two coordinators propose different views for the same next epoch while the
    // cluster is split: each side hears only its own view and takes writes in it.
    let c = Cluster::start(6, 2);
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut ctx = Context::default();
    for i in 0..60 {
        let (k, v) = (format!("key{i}"), format!("v{i}"));
        ctx = c.put(1 + i % 6, &k, &v, &ctx).await.ctx;
        acked.insert(k, v);
    }
    let left: Vec<String> = (1..=3).map(addr).collect();
    let right: Vec<String> = (4..=6).map(addr).collect();
    let l: Vec<&str> = left.iter().map(String::as_str).collect();
    let r: Vec<&str> = right.iter().map(String::as_str).collect();
    c.net.partition(&l, &r);
    let a: Vec<String> = (1..=6).map(addr).collect();
    let b: Vec<String> = [6, 5, 4, 3, 2, 1].iter().map(|&i| addr(i)).collect();
    let (n1, n6) = (c.node(1).clone(), c.node(6).clone());
    let (ra, rb) = tokio::join!(n1.view_change(a, 3), n6.view_change(b, 1));
    eprintln!("left: {ra:?}, right: {rb:?}");
    // Each side writes through its own nodes, one session per side; only acknowledged
    // writes count.
    let mut sessions = [Context::default(), Context::default()];
    for i in 0..60 {
        let side = i % 2;
        let node = if side == 0 { 1 + i % 3 } else { 4 + i % 3 };
        let (k, v) = (format!("key{}", i * 7 % 90), format!("w{i}"));
        let resp = c.put(node, &k, &v, &sessions[side]).await;
        if resp.result.is_ok() {
            sessions[side] = resp.ctx;
            acked.insert(k, v);
        }
    }
    c.net.heal();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let views: Vec<_> = (1..=6).map(|i| (*c.node(i).view()).clone()).collect();
        let mut missing = Vec::new();
        if views.iter().all(|v| *v == views[0]) {
            for (k, v) in &acked {
                for i in 1..=6 {
                    let got = value(&c.get(i, k, &Context::default()).await);
                    if got.as_deref() != Some(v.as_str()) {
                        missing.push(format!("{k} at node {i}: {got:?}, not {v}"));
                    }
                }
            }
            // Both sessions, whichever view they wrote in, read everything back.
            for (side, ctx) in sessions.iter().enumerate() {
                for (k, v) in &acked {
                    let r = c.get(1 + side * 3, k, ctx).await;
                    if value(&r).as_deref() != Some(v.as_str()) {
                        missing.push(format!("{k} for session {side}: {:?}", r.result));
                    }
                }
            }
            if missing.is_empty() {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence: views {:?}; {} reads wrong, e.g. {:?}",
            views
                .iter()
                .map(|v| (v.epoch, v.repl_factor))
                .collect::<Vec<_>>(),
            missing.len(),
            missing.first()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_view_changes_end_in_one_view() {
    let c = Cluster::start(6, 2);
    let mut ctx = Context::default();
    for i in 0..100 {
        ctx = c
            .put(1 + i % 6, &format!("key{i}"), &format!("v{i}"), &ctx)
            .await
            .ctx;
    }
    let a: Vec<String> = (1..=6).map(addr).collect();
    let b: Vec<String> = [6, 5, 4, 3, 2, 1].iter().map(|&i| addr(i)).collect();
    let (n1, n6) = (c.node(1).clone(), c.node(6).clone());
    let (ra, rb) = tokio::join!(n1.view_change(a.clone(), 3), n6.view_change(b.clone(), 1));
    assert!(ra.is_ok() || rb.is_ok(), "one of them wins: {ra:?} {rb:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let views: Vec<_> = (1..=6).map(|i| (*c.node(i).view()).clone()).collect();
        let total: u64 = (1..=6).map(|i| c.node(i).key_count().1).sum();
        let expected = 100 * views[0].repl_factor as u64;
        if views.iter().all(|v| *v == views[0]) && total == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "views or keys diverge: {views:?} total {total}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for k in (0..100).step_by(9) {
        let r = c.get(3, &format!("key{k}"), &Context::default()).await;
        assert_eq!(value(&r), Some(format!("v{k}")));
    }
}

/// A hand-over that a newer view overtakes keeps the keys that view gives back. Node 1
/// hands its shard's keys to nodes 3 and 4 for view X (which swaps the two shards); one
/// replica accepts at once, the other's reply is lost, so the hand-over waits out its
/// timeout before it drops the keys. Meanwhile view Y (the successor of X, with the
/// first membership again) makes node 1 an owner of those keys once more: nodes 3 and 4
/// hand them back, node 2 replicates them, and node 1's clock covers them all. Dropping
/// them when the old hand-over ends would leave node 1 short of them for good (no peer
/// sends what its clock covers), so the drop must not outlive the view it was meant for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_overtaken_by_a_view_that_gives_the_keys_back_keeps_them() {
    let c = Cluster::start_with(
        4,
        2,
        Timeouts {
            migrate: Duration::from_secs(3),
            ..timeouts()
        },
    );
    let mut ctx = Context::default();
    for i in 0..40 {
        ctx = c
            .put(1 + i % 4, &format!("key{i}"), &format!("v{i}"), &ctx)
            .await
            .ctx;
    }
    let v0 = (*c.node(1).view()).clone();
    let in_first = (0..40)
        .filter(|i| v0.shard_of_key(&format!("key{i}")) == 1)
        .count() as u64;
    let counts = || -> Vec<u64> { (1..=4).map(|i| c.node(i).key_count().1).collect() };
    let expected = vec![in_first, in_first, 40 - in_first, 40 - in_first];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while counts() != expected {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", counts());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let x = v0.successor(vec![addr(3), addr(4), addr(1), addr(2)], 2);
    let y = x.successor(v0.nodes.clone(), 2);
    // Node 4 takes node 1's hand-over, but node 1 never hears that it did.
    c.net.lose_replies(&addr(1), &[&addr(4)]);
    let n1 = c.node(1).clone();
    let xv = x.clone();
    let started = tokio::time::Instant::now();
    tokio::spawn(async move { n1.apply_view(xv).await });
    // Node 3 has accepted the hand-over; node 1 still holds the keys (it waits for 4).
    let moved: Vec<usize> = (0..40)
        .filter(|i| v0.shard_of_key(&format!("key{i}")) == 1)
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let mut all = *c.node(3).view() == x;
        for &k in &moved {
            let r = c.get(3, &format!("key{k}"), &Context::default()).await;
            all &= r.served_by.is_none() && value(&r) == Some(format!("v{k}"));
        }
        if all {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", counts());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        c.node(1).self_status().handing_over > 0,
        "the hand-over still waits for node 4"
    );
    // (The hand-over's call to node 4 has started: it stays unanswered.)
    c.net.heal();
    for i in 1..=4 {
        let (n, y) = (c.node(i).clone(), y.clone());
        tokio::spawn(async move { n.apply_view(y).await });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !(1..=4).all(|i| *c.node(i).view() == y) {
        assert!(tokio::time::Instant::now() < deadline, "Y not installed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Nodes 3 and 4 hand the keys back and node 2 replicates them, all well before the
    // hand-over for X ends (node 4's reply times out after 3 s).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the hand-over for X still waits for node 4"
    );
    tokio::time::sleep_until(started + Duration::from_secs(4)).await;
    // Every replica ends with exactly its shard's keys: nothing repairs a gap later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while counts() != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicas short of keys: {:?}, expected {expected:?}",
            counts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for k in 0..40 {
        let r = c.get(1, &format!("key{k}"), &Context::default()).await;
        assert_eq!(value(&r), Some(format!("v{k}")), "key{k} from node 1");
    }
}

/// A context from before a view change is honoured after it: new replicas cut off
/// from the old owners of some of their keys never answer as if the session's own
/// writes were missing (they refuse until they have the keys), and answer them all
/// once healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_replicas_cut_off_from_old_owners_never_lose_a_sessions_writes() {
    let mut c = Cluster::start_with(
        4,
        2,
        Timeouts {
            apply_view: Duration::from_secs(4),
            settle: Duration::from_secs(2),
            ..timeouts()
        },
    );
    let before = (*c.node(1).view()).clone();
    c.boot(&addr(5), before.clone());
    c.boot(&addr(6), before);
    let mut ctx = Context::default();
    for i in 0..60 {
        ctx = c
            .put(1, &format!("key{i}"), &format!("v{i}"), &ctx)
            .await
            .ctx;
    }
    c.net
        .partition(&[&addr(5), &addr(6)], &[&addr(3), &addr(4)]);
    let n1 = c.node(1).clone();
    let all: Vec<String> = (1..=6).map(addr).collect();
    let change = tokio::spawn(async move { n1.view_change(all, 2).await });
    // Wait until nodes 5 and 6 serve the new view (shard 3 of 3).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(5..=6).all(|i| c.node(i).view().nodes.len() == 6) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the view never reached 5 and 6"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut refused, mut answered) = (0, 0);
    for i in 0..60 {
        for n in [5, 6] {
            let r = c.get(n, &format!("key{i}"), &ctx).await;
            match r.result {
                Ok(KeyOutcome::Found(v)) => {
                    assert_eq!(v, Value::Str(format!("v{i}").into()));
                    answered += 1;
                }
                Ok(other) => {
                    panic!("node {n} answered {other:?} for key{i}, which the session wrote")
                }
                Err(_) => refused += 1,
            }
        }
    }
    assert!(
        refused > 0,
        "the cut-off replicas cannot have every key yet"
    );
    // A listing during the change misses none of the keys, wherever they are now:
    // nodes 1 and 2 reach every holder; the cut-off sides cannot, and say so (503).
    let params = [("limit".to_string(), "1000".to_string())]
        .into_iter()
        .collect();
    let q = causeway_server::listing::Query::parse(&params).unwrap();
    for n in 1..=6 {
        match c.node(n).list(q.clone(), Context::default()).await {
            Ok((items, next, _)) => {
                assert_eq!(items.len(), 60, "listing at node {n}");
                assert_eq!(next, None);
            }
            Err(e) => {
                assert!(n > 2, "listing at node {n}: {e:?}");
                assert_eq!(e, KeyError::Unavailable);
            }
        }
    }
    // Still partitioned when the coordinator answers.
    while !change.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.net.heal();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for i in 0..60 {
        for n in [5, 6] {
            loop {
                let r = c.get(n, &format!("key{i}"), &ctx).await;
                match r.result {
                    Ok(KeyOutcome::Found(v)) => {
                        assert_eq!(v, Value::Str(format!("v{i}").into()));
                        break;
                    }
                    Ok(other) => panic!("node {n}: {other:?} for key{i} after healing"),
                    Err(e) => assert!(
                        tokio::time::Instant::now() < deadline,
                        "node {n} still refuses key{i}: {e:?}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The change did not claim success: the shard of nodes 5 and 6 was incomplete.
    let shards = change.await.unwrap().expect("the change is in force");
    let incomplete: Vec<_> = shards
        .iter()
        .filter(|s| !s.complete)
        .map(|s| s.id)
        .collect();
    assert_eq!(incomplete, [3], "{shards:?}");
    eprintln!("during the partition: {answered} answered, {refused} refused");
    // Its shards completed after the answer: the coordinator completes the change then,
    // and every node learns it (so no stale coordinator can undo it any more).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !(1..=6).all(|i| c.node(i).view_knowledge().1) {
        let known: Vec<bool> = (1..=6).map(|i| c.node(i).view_knowledge().1).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change never completed: nodes know it completed: {known:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until every node serves every key of `acked` as acknowledged (with an empty
/// context) and all of them are in one view; returns that view.
async fn await_one_view_with(
    c: &Cluster,
    nodes: &[usize],
    acked: &HashMap<String, String>,
    within: Duration,
) -> View {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let views: Vec<View> = nodes.iter().map(|&i| (*c.node(i).view()).clone()).collect();
        let mut missing = Vec::new();
        if views.iter().all(|v| *v == views[0]) {
            for (k, v) in acked {
                for &i in nodes {
                    let got = value(&c.get(i, k, &Context::default()).await);
                    if got.as_deref() != Some(v.as_str()) {
                        missing.push(format!("{k} at node {i}: {got:?}, not {v}"));
                    }
                }
            }
            if missing.is_empty() {
                return views[0].clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence: views {:?}; {} reads wrong, e.g. {:?}",
            views
                .iter()
                .map(|v| (v.generation(), v.epoch, v.nodes.len(), v.repl_factor))
                .collect::<Vec<_>>(),
            missing.len(),
            missing.first()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stale coordinator cannot undo a completed change. Node 5 (outside the view, so
/// no view change involves it) is cut off while view A (nodes 1-4, one replica each)
/// is installed and completes. Still cut off, node 5 coordinates a change of its own
/// from the view it knows, to the same generation, with a membership that includes it
/// and whose epoch ranks above A's. Once healed, every node is in A, node 5 (not in A)
/// holds nothing, and every write made before and after A is readable from every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_coordinator_cannot_undo_a_completed_change() {
    let mut c = Cluster::start(4, 2);
    let v0 = (*c.node(1).view()).clone();
    c.boot(&addr(5), v0.clone());
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut ctx = Context::default();
    for i in 0..40 {
        let (k, v) = (format!("key{i}"), format!("v{i}"));
        ctx = c.put(1 + i % 4, &k, &v, &ctx).await.ctx;
        acked.insert(k, v);
    }
    let total = || -> u64 { (1..=4).map(|i| c.node(i).key_count().1).sum() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while total() != 80 {
        assert!(tokio::time::Instant::now() < deadline, "not replicated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let members: Vec<String> = (1..=4).map(addr).collect();
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    c.net.partition(&[&addr(5)], &members);
    let shards = c
        .node(1)
        .view_change((1..=4).map(addr).collect(), 1)
        .await
        .expect("view A");
    assert!(shards.iter().all(|s| s.complete), "A completes: {shards:?}");
    let a = (*c.node(1).view()).clone();
    for i in 40..60 {
        let (k, v) = (format!("key{i}"), format!("v{i}"));
        let r = c.put(1 + i % 4, &k, &v, &ctx).await;
        assert!(r.result.is_ok(), "write in A: {:?}", r.result);
        ctx = r.ctx;
        acked.insert(k, v);
    }
    // A membership with node 5 for the same generation whose epoch ranks above A's.
    let candidates: Vec<(Vec<String>, usize)> = [
        [5, 1, 2, 3],
        [1, 5, 3, 2],
        [5, 4, 3, 2],
        [2, 3, 5, 1],
        [4, 5, 1, 3],
        [3, 1, 5, 4],
    ]
    .iter()
    .flat_map(|order| {
        let nodes: Vec<String> = order.iter().map(|&i| addr(i)).collect();
        [(nodes.clone(), 1), (nodes, 2)]
    })
    .collect();
    let (b_nodes, b_repl) = candidates
        .into_iter()
        .find(|(n, r)| v0.successor(n.clone(), *r).rank() > a.rank())
        .expect("some membership ranks above A");
    let b = v0.successor(b_nodes.clone(), b_repl);
    let rb = c.node(5).view_change(b_nodes, b_repl).await;
    eprintln!("stale coordinator: {rb:?}");
    assert_eq!(*c.node(5).view(), b, "node 5 installed its own view");
    assert_eq!(b.generation(), a.generation());
    c.net.heal();
    let end = await_one_view_with(&c, &[1, 2, 3, 4, 5], &acked, Duration::from_secs(10)).await;
    assert_eq!(end, a, "the completed view stays in force");
    assert_eq!(c.node(5).key_count().1, 0, "node 5 holds nothing");
    assert_eq!(total(), 60, "one copy of each key in A");
}

/// Two coordinators race for the same generation and each reaches only some nodes:
/// node 1 (view A) cannot reach nodes 5 and 6, node 6 (view B) cannot reach nodes 1
/// and 2, so nodes 2 and 5 hear one view each and nodes 3 and 4 hear both. Writes
/// continue meanwhile; once healed, all nodes end in one view with every acknowledged
/// write readable everywhere.
///
/// A coordinator first asks the members for the newest view; had node 6 heard of A by
/// then (from node 3, 4 or 5), it would build on A and nothing would race. So nodes 1
/// and 2 stay cut off from nodes 3-6 until both coordinators hold their own view of
/// generation 1; only then do A's links to nodes 3 and 4 (and node 2's to 3-5) come
/// back, so node 1's resend of A can reach them (unless node 1 has learned B first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_views_with_partial_delivery_converge_without_losing_writes() {
    let c = Cluster::start(6, 2);
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut ctx = Context::default();
    for i in 0..60 {
        let (k, v) = (format!("key{i}"), format!("v{i}"));
        ctx = c.put(1 + i % 6, &k, &v, &ctx).await.ctx;
        acked.insert(k, v);
    }
    let (left, right) = ([addr(1), addr(2)], [addr(3), addr(4), addr(5), addr(6)]);
    c.net.partition(
        &left.iter().map(String::as_str).collect::<Vec<_>>(),
        &right.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let a: Vec<String> = (1..=6).map(addr).collect();
    let b: Vec<String> = [6, 5, 4, 3, 2, 1].iter().map(|&i| addr(i)).collect();
    let (n1, n6) = (c.node(1).clone(), c.node(6).clone());
    let writes = async {
        let mut acked = Vec::new();
        let mut ctx = Context::default();
        for i in 0..60 {
            let (k, v) = (format!("key{}", i * 7 % 90), format!("w{i}"));
            let resp = c.put(2 + i % 4, &k, &v, &ctx).await;
            if resp.result.is_ok() {
                ctx = resp.ctx;
                acked.push((k, v));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked
    };
    let reconnect = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while c.node(1).view().generation() != 1 || c.node(6).view().generation() != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the coordinators never installed their views"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_ne!(
            c.node(1).view().epoch,
            c.node(6).view().epoch,
            "two views race"
        );
        // Left cut: node 1 from nodes 5 and 6, node 2 from node 6.
        for (x, y) in [(1, 3), (1, 4), (2, 3), (2, 4), (2, 5)] {
            c.net.reconnect(&addr(x), &addr(y));
        }
    };
    let (ra, rb, during, ()) = tokio::join!(
        n1.view_change(a, 3),
        n6.view_change(b, 1),
        writes,
        reconnect
    );
    eprintln!("A: {ra:?}, B: {rb:?}");
    let heard: Vec<u64> = (1..=6).map(|i| c.node(i).view().epoch).collect();
    eprintln!("epochs before healing: {heard:?}");
    acked.extend(during);
    c.net.heal();
    let end = await_one_view_with(&c, &[1, 2, 3, 4, 5, 6], &acked, Duration::from_secs(15)).await;
    assert_eq!(end.generation(), 1);
    let expected = acked.len() as u64 * end.repl_factor as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let total: u64 = (1..=6).map(|i| c.node(i).key_count().1).sum();
        if total == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{total} copies, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node that missed its `ApplyView` is brought into the view by the coordinator.
/// Node 5 (started outside the view; it asks node 1, the view's first node, for news)
/// is cut off while node 2 grows the view to nodes 1-6, where nodes 5 and 6 form a new
/// shard. Node 6 takes every key handed over. Then only node 5's link to the
/// coordinator comes back: node 2 has nothing more to hand over and does not replicate
/// with node 5, so only a repeated `ApplyView` tells it. It must be in the view within
/// a few seconds, and once healed it serves every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_apply_view_is_brought_in_by_the_coordinator() {
    let mut c = Cluster::start(4, 2);
    let v0 = (*c.node(1).view()).clone();
    for i in 5..=6 {
        c.boot(&addr(i), v0.clone());
    }
    let mut ctx = Context::default();
    for i in 0..40 {
        ctx = c
            .put(1 + i % 4, &format!("key{i}"), &format!("v{i}"), &ctx)
            .await
            .ctx;
    }
    let others: Vec<String> = [1, 2, 3, 4, 6].iter().map(|&i| addr(i)).collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    c.net.partition(&[&addr(5)], &others);
    let new_nodes: Vec<String> = (1..=6).map(addr).collect();
    c.node(2)
        .view_change(new_nodes, 2)
        .await
        .expect("view change without node 5");
    let new_view = (*c.node(2).view()).clone();
    assert_ne!(*c.node(5).view(), new_view, "node 5 did not hear of it");
    c.net.reconnect(&addr(5), &addr(2));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while *c.node(5).view() != new_view {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 5 still in epoch {}",
            c.node(5).view().epoch
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.net.heal();
    for k in 0..40 {
        c.await_value(
            &[5],
            &format!("key{k}"),
            Some(&format!("v{k}")),
            Duration::from_secs(5),
        )
        .await;
    }
}

/// A chain of view changes that an old owner sleeps through: node 4 holds a shard's keys
/// and is cut off while it is removed; node 3 leaves in the next change and comes back
/// in the one after, owning keys that only node 4 still holds. Node 3 must not take its
/// shard for complete while node 4 has not handed over: it was outside the view in
/// between, so it learns that node 4 still owes keys only from what it kept itself and
/// from what the other old owners pass on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_owner_cut_off_across_a_chain_of_view_changes_is_still_waited_for() {
    let c = Cluster::start_with(
        4,
        1,
        Timeouts {
            apply_view: Duration::from_secs(1),
            settle: Duration::from_secs(1),
            ..timeouts()
        },
    );
    // Keys on node 4's shard (shard 4 of 4), written by one session.
    let mut ctx = Context::default();
    let mut keys = Vec::new();
    let view0 = c.node(1).view();
    for i in 0.. {
        let k = format!("key{i}");
        if view0.shard_of_key(&k) == 4 {
            ctx = c.put(1, &k, &format!("v{i}"), &ctx).await.ctx;
            keys.push(k);
            if keys.len() == 40 {
                break;
            }
        }
    }
    let (n1, n2, n3, n4) = (addr(1), addr(2), addr(3), addr(4));
    c.net.partition(&[&n4], &[&n1, &n2, &n3]);
    // 1: node 4 leaves while cut off (its keys cannot move yet).
    let v1 = c
        .node(1)
        .view_change(vec![n1.clone(), n2.clone(), n3.clone()], 1)
        .await;
    assert!(v1.is_ok(), "{v1:?}");
    // 2: node 3 leaves; 3: node 3 comes back, beside node 1.
    let v2 = c.node(1).view_change(vec![n1.clone(), n2.clone()], 1).await;
    assert!(v2.is_ok(), "{v2:?}");
    let v3 = c.node(1).view_change(vec![n1.clone(), n3.clone()], 1).await;
    assert!(v3.is_ok(), "{v3:?}");
    let view3 = c.node(1).view();
    assert_eq!(*c.node(3).view(), *view3, "node 3 is in the last view");
    let at3: Vec<&String> = keys
        .iter()
        .filter(|k| view3.shard_of_key(k) == view3.shard_of_node(&n3).unwrap())
        .collect();
    assert!(!at3.is_empty());
    // While node 4 is cut off, node 3 never answers "not found" for a key the session
    // wrote: it refuses (400) until it has the key.
    for _ in 0..3 {
        for k in &at3 {
            let r = c.get(3, k, &ctx).await;
            match &r.result {
                Ok(KeyOutcome::Found(_)) => panic!("{k} found while its only holder is cut off"),
                Ok(other) => panic!("node 3 answered {other:?} for {k}, which the session wrote"),
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Node 4 returns, learns the view and hands over: node 3 serves every key.
    c.net.heal();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for k in &at3 {
        loop {
            let r = c.get(3, k, &ctx).await;
            match r.result {
                Ok(KeyOutcome::Found(_)) => break,
                Ok(other) => panic!("node 3 answered {other:?} for {k} after healing"),
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "node 3 still refuses {k}: {e:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
