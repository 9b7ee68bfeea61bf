//! No request outlives the client's 5 s: a stalled disk, a flood of internal frames and
//! a dead committer, all in-process (nodes over the in-memory transport, or the real
//! HTTP server on a loopback port), with faults injected through `Node::faults`.

use causeway_server::api::service::Http;
use causeway_server::api::{AppState, Limits};
use causeway_server::causal::{Context, Value};
use causeway_server::config::ServeConfig;
use causeway_server::node::{Node, NodeConfig};
use causeway_server::placement::View;
use causeway_server::storage::{Durability, Storage};
use causeway_server::transport::memory::Network;
use causeway_server::transport::{
    Envelope, Forwarding, KeyError, KeyOp, KeyOutcome, KeyRequest, Rpc, RpcReply,
};
use serde_json::{json, Value as Json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a client waits before giving up.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// Longer than any client waits: a disk this slow must give 503s, not hangs.
const STALL: Duration = Duration::from_secs(8);

fn addr(i: usize) -> String {
    format!("10.0.0.{i}:13800")
}

/// `n` nodes (default timeouts) of one view with `repl` replicas per shard.
fn cluster(n: usize, repl: usize) -> (Arc<Network>, Vec<Arc<Node>>) {
    let net = Network::new();
    let view = View::new(0, (1..=n).map(addr).collect(), repl);
    let nodes = (1..=n)
        .map(|i| {
            let (storage, loaded) = Storage::in_memory();
            let node = Node::start(
                NodeConfig::new(addr(i)),
                storage,
                loaded,
                view.clone(),
                net.transport(&addr(i)),
            )
            .expect("in-memory start");
            net.register(&node);
            node
        })
        .collect();
    (net, nodes)
}

fn put(key: &str, v: &str, ctx: &Context) -> KeyRequest {
    KeyRequest {
        key: key.into(),
        op: KeyOp::Put(Value::Str(v.into())),
        ctx: ctx.clone(),
    }
}

/// Serves `node`'s HTTP API on a loopback port; returns its base URL.
async fn serve_http(node: Arc<Node>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Arc::new(AppState::new(node, Limits::default(), None));
    // What the binary serves (`server::run`).
    tokio::spawn(async move { axum::serve(listener, Http::new(app)).await });
    url
}

async fn http(method: &str, url: &str, body: Json) -> (u16, Json) {
    let client = reqwest::Client::builder()
        .timeout(CLIENT_DEADLINE)
        .no_proxy()
        .build()
        .unwrap();
    let resp = client
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: no answer within the client's 5 s: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_disk_answers_a_client_write_503_within_5_s() {
    let (_net, nodes) = cluster(1, 1);
    let url = serve_http(nodes[0].clone()).await;
    let (s, first) = http(
        "PUT",
        &format!("{url}/kv-store/keys/a"),
        json!({"value": "1", "causal-context": {}}),
    )
    .await;
    assert_eq!(s, 201, "{first}");
    let ctx = first["causal-context"].clone();

    nodes[0].faults().set_commit_delay(STALL);
    let started = Instant::now();
    let (s, j) = http(
        "PUT",
        &format!("{url}/kv-store/keys/b"),
        json!({"value": "2", "causal-context": ctx}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        (s, j),
        (
            503,
            json!({"message": "Error in PUT", "error": "Unable to satisfy request", "causal-context": ctx})
        )
    );
    assert!(took < CLIENT_DEADLINE, "answered after {took:?}");

    // The disk recovers: the node serves again.
    nodes[0].faults().set_commit_delay(Duration::ZERO);
    tokio::time::sleep(STALL).await;
    let (s, j) = http(
        "PUT",
        &format!("{url}/kv-store/keys/c"),
        json!({"value": "3", "causal-context": ctx}),
    )
    .await;
    assert_eq!(s, 201, "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_disk_answers_many_client_writes_503_within_5_s() {
    // More writes than the committer takes in one batch and holds in its queue.
    let (_net, nodes) = cluster(1, 1);
    nodes[0].faults().set_commit_delay(STALL);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10_000 {
        let node = nodes[0].clone();
        tasks.spawn(async move {
            node.handle_key(put(&format!("k{i}"), "v", &Context::default()))
                .await
        });
    }
    let all = tokio::time::timeout(CLIENT_DEADLINE, async {
        let mut unavailable = 0;
        while let Some(r) = tasks.join_next().await {
            let r = r.unwrap();
            assert!(
                matches!(r.result, Ok(_) | Err(KeyError::Unavailable)),
                "{:?}",
                r.result
            );
            unavailable += usize::from(r.result.is_err());
        }
        unavailable
    })
    .await;
    let unavailable = all.unwrap_or_else(|_| {
        panic!(
            "writes still unanswered after {:?} (the disk stalls for {STALL:?})",
            started.elapsed()
        )
    });
    assert!(unavailable > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_on_a_stalled_disk_answers_by_its_senders_deadline() {
    let (_net, nodes) = cluster(2, 1);
    let view = nodes[1].view();
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| view.shard_of_key(k) == 2)
        .unwrap();
    nodes[1].faults().set_commit_delay(STALL);
    let ctx = Context::default();

    // Straight to the owner, as a forwarding node sends it, with 1 s of budget.
    let msg = Envelope {
        from: addr(1),
        rpc: Rpc::Key {
            epoch: 0,
            hops: 1,
            fwd: Forwarding {
                budget_ms: 1000,
                sent_ms: causeway_server::transit::mono_ms(),
                sender: 7,
                write_id: None,
            },
            req: put(&key, "v", &ctx),
        },
    };
    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(3), nodes[1].handle_rpc(msg))
        .await
        .unwrap_or_else(|_| panic!("no answer after {:?}", started.elapsed()));
    match reply {
        RpcReply::Key(r) => {
            assert_eq!(r.result, Err(KeyError::Unavailable));
            assert_eq!(r.ctx, ctx);
        }
        other => panic!("{other:?}"),
    }

    // Through a node that proxies: 503 within the client's 5 s.
    let started = Instant::now();
    let r = tokio::time::timeout(CLIENT_DEADLINE, nodes[0].handle_key(put(&key, "v", &ctx)))
        .await
        .expect("answered within 5 s");
    assert_eq!(r.result, Err(KeyError::Unavailable));
    assert!(started.elapsed() < CLIENT_DEADLINE);
}

/// One frame of the internal stream: length, then postcard of `(id, envelope)`.
fn frame(id: u64, env: &Envelope) -> Vec<u8> {
    let body = postcard::to_allocvec(&(id, env)).unwrap();
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_stream_bounds_the_requests_it_serves_at_once() {
    let (_net, nodes) = cluster(1, 1);
    let node = nodes[0].clone();
    node.faults().set_commit_delay(Duration::from_secs(2));
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    tokio::spawn(causeway_server::transport::stream::serve(
        theirs,
        node.clone(),
        1 << 20,
    ));
    let (mut rd, mut wr) = tokio::io::split(ours);
    let sent = causeway_server::transport::stream::MAX_IN_FLIGHT + 500;
    let writer = tokio::spawn(async move {
        for id in 0..sent as u64 {
            let env = Envelope {
                from: addr(2),
                rpc: Rpc::Key {
                    epoch: 0,
                    hops: 1,
                    fwd: Forwarding {
                        budget_ms: 1500,
                        sent_ms: causeway_server::transit::mono_ms(),
                        sender: 7,
                        write_id: None,
                    },
                    req: put(&format!("k{id}"), "v", &Context::default()),
                },
            };
            wr.write_all(&frame(id, &env)).await.unwrap();
        }
        wr
    });
    // Every frame gets exactly one reply; the ones over the bound at once, refused.
    let started = Instant::now();
    let mut replies = std::collections::HashMap::new();
    let mut refused_early = 0;
    while replies.len() < sent {
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), rd.read_exact(&mut len))
            .await
            .unwrap_or_else(|_| panic!("{} of {sent} frames answered", replies.len()))
            .unwrap();
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        rd.read_exact(&mut buf).await.unwrap();
        let (id, reply): (u64, RpcReply) = postcard::from_bytes(&buf).unwrap();
        if matches!(reply, RpcReply::Error(_)) && started.elapsed() < Duration::from_millis(1000) {
            refused_early += 1;
        }
        assert!(replies.insert(id, reply).is_none(), "two replies to {id}");
    }
    let _wr = writer.await.unwrap();
    assert!(
        refused_early >= 500,
        "{refused_early} frames refused at once (the disk stalls for 2 s)"
    );
    for r in replies.values() {
        match r {
            RpcReply::Error(_) => {}
            RpcReply::Key(k) => assert!(
                matches!(
                    k.result,
                    Ok(KeyOutcome::Put { .. }) | Err(KeyError::Unavailable)
                ),
                "{k:?}"
            ),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_committer_fails_ready_and_stops_the_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let cfg = ServeConfig {
        node: NodeConfig::new(&address),
        view: View::new(0, vec![address.clone()], 1),
        listen: listener.local_addr().unwrap(),
        data_dir: None,
        durability: Durability::Sync,
        secret: None,
        limits: Limits::default(),
        allow_stale_disk: false,
    };
    let node = causeway_server::server::start_node(&cfg).await.unwrap();
    let url = format!("http://{address}");
    let server = {
        let (node, cfg) = (node.clone(), cfg.clone());
        tokio::spawn(async move {
            causeway_server::server::run(listener, node, &cfg, std::future::pending()).await
        })
    };
    let (s, _) = http("GET", &format!("{url}/ready"), json!({})).await;
    assert_eq!(s, 200);

    node.faults().panic_on_next_commit();
    let (s, j) = http(
        "PUT",
        &format!("{url}/kv-store/keys/a"),
        json!({"value": "1", "causal-context": {}}),
    )
    .await;
    assert_eq!(
        (s, j),
        (
            503,
            json!({
                "message": "Error in PUT",
                "error": "Unable to satisfy request",
                // The request's (empty) context, echoed.
                "causal-context": Context::default().to_signed_json(None),
            })
        )
    );
    let (s, j) = http("GET", &format!("{url}/ready"), json!({})).await;
    assert_eq!(s, 503, "{j}");
    assert!(
        j["error"].as_str().is_some_and(|e| e.contains("committer")),
        "{j}"
    );
    assert!(j["causal-context"].is_object(), "{j}");

    let ended = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops once its committer died")
        .unwrap();
    let err = ended.expect_err("a server whose committer died ends with an error");
    assert!(err.to_string().contains("committer"), "{err}");
}
