//! In-process tests of large backlogs: the in-memory transport refuses messages over the
//! node-to-node limit as the real one does, hand-over during a view change stays under
//! it, and a replica that falls behind shows in its peer's metrics until it catches up.

use causeway_server::causal::{Context, Value};
use causeway_server::node::{Node, NodeConfig, Timeouts};
use causeway_server::placement::View;
use causeway_server::storage::Storage;
use causeway_server::transport::memory::Network;
use causeway_server::transport::{
    Envelope, Forwarding, KeyOp, KeyOutcome, KeyRequest, Rpc, RpcReply, Transport, TransportError,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The smallest node-to-node limit a real node accepts (`MAX_INTERNAL_BYTES`).
const LIMIT: usize = 64 * 1024 * 1024;
const MIB: usize = 1024 * 1024;

struct Cluster {
    net: Arc<Network>,
    nodes: HashMap<String, Arc<Node>>,
}

fn addr(i: usize) -> String {
    format!("10.0.0.{i}:13800")
}

impl Cluster {
    /// Nodes 1..=n, all started with `view` (nodes outside it wait to be added).
    fn start(n: usize, view: View) -> Cluster {
        let net = Network::with_max_message_bytes(LIMIT);
        let mut nodes = HashMap::new();
        for i in 1..=n {
            let a = addr(i);
            let mut cfg = NodeConfig::new(&a);
            cfg.timeouts = Timeouts {
                fetch: Duration::from_millis(200),
                proxy_attempt: Duration::from_millis(400),
                proxy_total: Duration::from_millis(1000),
                sync: Duration::from_millis(500),
                migrate: Duration::from_secs(5),
                heartbeat: Duration::from_millis(100),
                apply_view: Duration::from_secs(5),
                settle: Duration::from_secs(5),
                ..Timeouts::default()
            };
            let (storage, loaded) = Storage::in_memory();
            let node = Node::start(cfg, storage, loaded, view.clone(), net.transport(&a))
                .expect("in-memory start");
            net.register(&node);
            nodes.insert(a, node);
        }
        Cluster { net, nodes }
    }

    fn node(&self, i: usize) -> &Arc<Node> {
        &self.nodes[&addr(i)]
    }

    async fn put(&self, i: usize, key: &str, value: String) {
        let r = self
            .node(i)
            .handle_key(KeyRequest {
                key: key.into(),
                op: KeyOp::Put(Value::Str(value.into())),
                ctx: Context::default(),
            })
            .await;
        assert!(
            matches!(r.result, Ok(KeyOutcome::Put { .. })),
            "{key}: {:?}",
            r.result
        );
    }

    async fn get(&self, i: usize, key: &str) -> Option<String> {
        let r = self
            .node(i)
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
}

/// A value of about `size` bytes that starts with its key's number.
fn big(i: usize, size: usize) -> String {
    format!("{i:08}{}", "v".repeat(size - 8))
}

/// The value of `name{peer="<peer>"}` in node `n`'s metrics.
fn gauge(n: &Node, name: &str, peer: &str) -> Option<u64> {
    let prefix = format!("{name}{{peer=\"{peer}\"}} ");
    n.metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.parse().unwrap()))
}

/// Polls until `f` holds, for at most `within`.
async fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_transport_refuses_messages_over_the_limit() {
    let net = Network::with_max_message_bytes(MIB);
    let view = View::new(0, vec![addr(1)], 1);
    let mut cfg = NodeConfig::new(addr(1));
    cfg.timeouts.proxy_total = Duration::from_secs(1);
    let (storage, loaded) = Storage::in_memory();
    let node = Node::start(cfg, storage, loaded, view, net.transport(&addr(1))).unwrap();
    net.register(&node);
    let put = |size: usize| Envelope {
        from: addr(2),
        rpc: Rpc::Key {
            epoch: 0,
            hops: 0,
            fwd: Forwarding {
                budget_ms: 1000,
                sent_ms: causeway_server::transit::mono_ms(),
                sender: 7,
                write_id: None,
            },
            req: KeyRequest {
                key: "k".into(),
                op: KeyOp::Put(Value::Str("x".repeat(size).into())),
                ctx: Context::default(),
            },
        },
    };
    let t = net.transport(&addr(2));
    let over = t.call(&addr(1), put(MIB), Duration::from_secs(1)).await;
    assert!(
        matches!(over, Err(TransportError::Refused(..))),
        "a message over the limit is refused: {over:?}"
    );
    let under = t
        .call(&addr(1), put(MIB - 1000), Duration::from_secs(1))
        .await;
    assert!(
        matches!(under, Ok(RpcReply::Key(_))),
        "a message under the limit is delivered: {under:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_change_hands_over_more_than_one_message_can_carry() {
    // One shard on nodes 1 and 2 moves to nodes 3 and 4: 100 MiB of values, over the
    // 64 MiB limit of one message.
    let c = Cluster::start(4, View::new(0, vec![addr(1), addr(2)], 2));
    const KEYS: usize = 100;
    for i in 0..KEYS {
        c.put(1 + i % 2, &format!("big{i}"), big(i, MIB - 100))
            .await;
    }
    let shards = c
        .node(1)
        .view_change(vec![addr(3), addr(4)], 2)
        .await
        .expect("view change");
    eprintln!(
        "key counts after the change: {:?}",
        shards.iter().map(|s| s.key_count).collect::<Vec<_>>()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for n in [3, 4] {
        for i in 0..KEYS {
            loop {
                let got = c.get(n, &format!("big{i}")).await;
                if got.as_ref().is_some_and(|v| *v == big(i, MIB - 100)) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "big{i} is not readable on node {n} 30 s after the view change"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_falls_behind_shows_in_the_metrics_until_it_catches_up() {
    let c = Cluster::start(2, View::new(0, vec![addr(1), addr(2)], 2));
    let (n1, p2) = (c.node(1).clone(), addr(2));
    let versions = "causeway_replication_behind_versions";
    let bytes = "causeway_replication_behind_bytes";
    c.put(1, "seed", "s".into()).await;
    eventually(
        Duration::from_secs(5),
        "the peer is up to date at first",
        || gauge(&n1, versions, &p2) == Some(0) && gauge(&n1, bytes, &p2) == Some(0),
    )
    .await;

    c.net.partition(&[&addr(1)], &[&p2]);
    // A small backlog (sent incrementally once healed) ...
    for i in 0..20 {
        c.put(1, &format!("small{i}"), big(i, 10_000)).await;
    }
    eventually(Duration::from_secs(5), "20 versions behind", || {
        gauge(&n1, versions, &p2) == Some(20)
            && gauge(&n1, bytes, &p2).is_some_and(|b| b >= 200_000)
    })
    .await;
    // ... then one larger than an incremental message (sent as a full transfer).
    for i in 0..40 {
        c.put(1, &format!("large{i}"), big(i, MIB)).await;
    }
    eventually(Duration::from_secs(5), "60 versions behind", || {
        gauge(&n1, versions, &p2) == Some(60)
            && gauge(&n1, bytes, &p2).is_some_and(|b| b >= 40 * MIB as u64)
    })
    .await;

    c.net.heal();
    eventually(Duration::from_secs(30), "caught up after healing", || {
        gauge(&n1, versions, &p2) == Some(0) && gauge(&n1, bytes, &p2) == Some(0)
    })
    .await;
    assert_eq!(c.get(2, "large39").await, Some(big(39, MIB)));
    assert_eq!(c.get(2, "small19").await, Some(big(19, 10_000)));
}
