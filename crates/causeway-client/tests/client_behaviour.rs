//! The library's behaviour towards nodes, against scripted fake nodes: which
//! context it sends, which failures move it to the next node, which errors it
//! returns. (Tests against the real node binary are in `node.rs`.)

mod support;

use std::time::{Duration, Instant};

use causeway_client::{Client, Error, Operation};
use serde_json::{json, Value};
use support::fake_node::{FakeNode, Reply};

fn ok_get(context: serde_json::Value) -> Reply {
    Reply::Json(
        200,
        json!({"message": "Retrieved successfully", "doesExist": true, "value": "v",
               "causal-context": context}),
    )
}

#[tokio::test]
async fn sends_the_context_of_the_last_response_received() {
    // Each answer's context names the request it answers; a 404 carries one too.
    let node = FakeNode::start(|req| {
        if req.path.ends_with("/missing") {
            Reply::Json(
                404,
                json!({"message": "Error in GET", "error": "Key does not exist",
                       "doesExist": false, "causal-context": {"after": "404"}}),
            )
        } else {
            ok_get(json!({"path": req.path}))
        }
    })
    .await;
    let client = Client::new([&node.addr]).unwrap();
    assert_eq!(client.context(), json!({}));

    assert_eq!(client.get("a").await.unwrap(), json!("v"));
    let after_a = client.context();
    assert_eq!(after_a["path"], json!("/kv-store/keys/a"));

    assert!(matches!(
        client.get("missing").await,
        Err(Error::KeyNotFound { .. })
    ));
    assert_eq!(client.context(), json!({"after": "404"}));
    client.get("b").await.unwrap();

    let sent: Vec<_> = node.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(
        sent,
        [
            json!({"causal-context": {}}),
            json!({"causal-context": after_a}),
            json!({"causal-context": {"after": "404"}}),
        ]
    );
}

#[tokio::test]
async fn an_error_answer_never_replaces_the_sessions_context() {
    // A node (or anything between) that answers an error with a context of its own,
    // even an empty one, must not make the session forget what it has seen.
    let node = FakeNode::start(|req| {
        if req.path.ends_with("/bad") {
            Reply::Json(
                400,
                json!({"message": "Error in PUT", "error": "Value is missing",
                       "causal-context": {}}),
            )
        } else if req.path.ends_with("/busy") {
            Reply::Json(
                503,
                json!({"message": "Error in GET", "error": "Unable to satisfy request",
                       "causal-context": {}}),
            )
        } else {
            ok_get(json!({"seen": req.path}))
        }
    })
    .await;
    let client = Client::new([&node.addr]).unwrap();
    client.get("a").await.unwrap();
    let seen = client.context();
    assert!(client.put("bad", json!("v")).await.is_err());
    assert!(client.get("busy").await.is_err());
    assert_eq!(client.context(), seen, "errors keep the session's history");
    client.get("b").await.unwrap();
    let sent: Vec<_> = node
        .requests()
        .into_iter()
        .map(|r| r.body["causal-context"].clone())
        .collect();
    assert_eq!(sent[1..], [seen.clone(), seen.clone(), seen]);
}

#[tokio::test]
async fn set_context_is_sent_with_the_next_request() {
    let node = FakeNode::start(|_| ok_get(json!({}))).await;
    let client = Client::builder()
        .nodes([&node.addr])
        .context(json!({"saved": 1}))
        .build()
        .unwrap();
    client.get("k").await.unwrap();
    client.set_context(json!({"saved": 2}));
    client.get("k").await.unwrap();
    let sent: Vec<_> = node.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(
        sent,
        [
            json!({"causal-context": {"saved": 1}}),
            json!({"causal-context": {"saved": 2}})
        ]
    );
}

#[tokio::test]
async fn put_sends_value_and_reports_replaced_and_address() {
    let node = FakeNode::start(|req| {
        assert_eq!(req.method, "PUT");
        let replaced = req.body["value"] == json!(10);
        Reply::Json(
            if replaced { 200 } else { 201 },
            json!({"message": "x", "replaced": replaced, "address": "10.0.0.9:13800",
                   "causal-context": {}}),
        )
    })
    .await;
    let client = Client::new([&node.addr]).unwrap();
    let created = client.put("k", "v").await.unwrap();
    assert!(!created.replaced);
    assert_eq!(created.address.as_deref(), Some("10.0.0.9:13800"));
    assert!(client.put("k", 10).await.unwrap().replaced);
    let values: Vec<_> = node
        .requests()
        .into_iter()
        .map(|r| r.body["value"].clone())
        .collect();
    assert_eq!(values, [json!("v"), json!(10)]);
}

#[tokio::test]
async fn a_503_moves_to_the_next_node_which_then_serves_first() {
    let down = FakeNode::start(|_| {
        Reply::Json(
            503,
            json!({"message": "Error in GET", "error": "Unable to satisfy request",
                                 "causal-context": {}}),
        )
    })
    .await;
    let up = FakeNode::start(|_| ok_get(json!({}))).await;
    let client = Client::new([&down.addr, &up.addr]).unwrap();
    assert_eq!(client.get("k").await.unwrap(), json!("v"));
    assert_eq!(client.get("k").await.unwrap(), json!("v"));
    // The failed node was tried once; the second request went straight to the good one.
    assert_eq!(down.requests().len(), 1);
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn an_unsatisfiable_read_is_tried_on_the_next_node() {
    let behind = FakeNode::start(|_| {
        Reply::Json(
            400,
            json!({"message": "Error in GET", "error": "Unable to satisfy request",
                                 "causal-context": {"behind": true}}),
        )
    })
    .await;
    let current = FakeNode::start(|_| ok_get(json!({"current": true}))).await;

    let single = Client::new([&behind.addr]).unwrap();
    assert!(matches!(
        single.get("k").await,
        Err(Error::Unsatisfiable { .. })
    ));

    let client = Client::new([&behind.addr, &current.addr]).unwrap();
    assert_eq!(client.get("k").await.unwrap(), json!("v"));
    assert_eq!(client.context(), json!({"current": true}));
}

#[tokio::test]
async fn a_node_that_does_not_answer_costs_one_timeout() {
    let silent = FakeNode::start(|_| Reply::Hang).await;
    let up = FakeNode::start(|_| ok_get(json!({}))).await;
    let client = Client::builder()
        .nodes([&silent.addr, &up.addr])
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    assert_eq!(client.get("k").await.unwrap(), json!("v"));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    let alone = Client::builder()
        .nodes([&silent.addr])
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = alone.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_refused_connection_moves_to_the_next_node() {
    // Nothing can listen on port 0: connecting there is always refused.
    let dead = "127.0.0.1:0".to_owned();
    let up = FakeNode::start(|_| ok_get(json!({}))).await;
    let client = Client::new([&dead, &up.addr]).unwrap();
    assert_eq!(client.get("k").await.unwrap(), json!("v"));

    let alone = Client::new([&dead]).unwrap();
    let err = alone.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn when_every_node_fails_each_failure_is_reported_in_order() {
    let unavailable = FakeNode::start(|_| {
        Reply::Json(
            503,
            json!({"message": "Error in GET", "error": "Unable to satisfy request",
                                 "causal-context": {}}),
        )
    })
    .await;
    let broken = FakeNode::start(|_| Reply::Text(502, "<html>bad gateway</html>")).await;
    let client = Client::new([&unavailable.addr, &broken.addr]).unwrap();
    match client.get("k").await {
        Err(Error::AllNodesFailed { failures }) => {
            assert!(
                matches!(failures[0], Error::Unavailable { .. }),
                "{failures:?}"
            );
            assert!(
                matches!(failures[1], Error::Http { status: 502, .. }),
                "{failures:?}"
            );
            assert_eq!(failures.len(), 2);
        }
        other => panic!("expected AllNodesFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_rejected_request_is_not_retried_elsewhere() {
    let strict = FakeNode::start(|_| {
        Reply::Json(
            400,
            json!({"message": "Error in PUT", "error": "Key is too long",
                                 "causal-context": {}}),
        )
    })
    .await;
    let other = FakeNode::start(|_| ok_get(json!({}))).await;
    let client = Client::new([&strict.addr, &other.addr]).unwrap();
    match client.put(&"k".repeat(51), "v").await {
        Err(Error::BadRequest { message, error, .. }) => {
            assert_eq!(message, "Error in PUT");
            assert_eq!(error, "Key is too long");
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    assert!(other.requests().is_empty());
}

#[tokio::test]
async fn a_write_is_retried_elsewhere_as_the_same_request() {
    let ok_put = || {
        Reply::Json(
            201,
            json!({"message": "Added successfully", "replaced": false,
                   "causal-context": {}}),
        )
    };
    // A timeout or a 503 may hide an applied write: the next node gets the same
    // request, with the same Idempotency-Key and context, so the store applies it once.
    let silent = FakeNode::start(|_| Reply::Hang).await;
    let other = FakeNode::start(move |_| ok_put()).await;
    let client = Client::builder()
        .nodes([&silent.addr, &other.addr])
        .timeout(Duration::from_millis(300))
        .context(json!({"epoch": 1}))
        .build()
        .unwrap();
    assert!(!client.put("k", "v").await.unwrap().replaced);
    let unavailable = FakeNode::start(|_| {
        Reply::Json(
            503,
            json!({"message": "Error in PUT", "error": "Unable to satisfy request",
                   "causal-context": {}}),
        )
    })
    .await;
    let client2 = Client::new([&unavailable.addr, &other.addr]).unwrap();
    client2
        .delete("k")
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let first = [silent.requests(), unavailable.requests()];
    let second = other.requests();
    assert_eq!(second.len(), 2);
    for (tried, retried) in first.iter().zip(&second) {
        assert_eq!(tried.len(), 1);
        let key = tried[0]
            .idempotency_key
            .clone()
            .expect("a key on every write");
        assert_eq!(retried.idempotency_key.as_ref(), Some(&key));
        assert_eq!(retried.raw, tried[0].raw, "the same body, context included");
    }
    assert_ne!(
        second[0].idempotency_key, second[1].idempotency_key,
        "one key per write"
    );

    // Without a key, a write goes elsewhere only when nothing was sent.
    let op = Operation::Put {
        key: "k".into(),
        value: json!("v"),
    };
    let client = Client::builder()
        .nodes([&silent.addr, &other.addr])
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client.execute_keyed(&op, None).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(other.requests().len(), 2, "not repeated elsewhere");
    assert_eq!(silent.requests().last().unwrap().idempotency_key, None);
    // Reads carry no key.
    let _ = other_get(&other.addr).await;
    assert_eq!(other.requests().last().unwrap().idempotency_key, None);
}

async fn other_get(addr: &str) -> Result<Value, Error> {
    Client::new([addr]).unwrap().get("k").await
}

#[tokio::test]
async fn a_view_change_that_timed_out_is_not_started_again_elsewhere() {
    let slow = FakeNode::start(|_| Reply::Hang).await;
    let other = FakeNode::start(|_| {
        Reply::Json(
            200,
            json!({"message": "View change successful", "shards": [],
                                 "causal-context": {}}),
        )
    })
    .await;
    let client = Client::builder()
        .nodes([&slow.addr, &other.addr])
        .view_change_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client
        .view_change(&[slow.addr.clone(), other.addr.clone()], 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(other.requests().is_empty());
    assert_eq!(
        slow.requests()[0].body,
        json!({"view": format!("{},{}", slow.addr, other.addr), "repl-factor": 1,
               "causal-context": {}})
    );
}

#[tokio::test]
async fn cluster_information_is_decoded() {
    let node = FakeNode::start(|req| match req.path.as_str() {
        "/kv-store/key-count" => Reply::Json(
            200,
            json!({"message": "Key count retrieved successfully", "key-count": 4,
                   "shard-id": "1", "causal-context": {}}),
        ),
        "/kv-store/shards" => Reply::Json(
            200,
            json!({"message": "Shard membership retrieved successfully",
                   "shards": ["1", "2"], "causal-context": {}}),
        ),
        "/kv-store/shards/2" => Reply::Json(
            200,
            json!({"message": "Shard information retrieved successfully", "shard-id": "2",
                   "key-count": 3, "replicas": ["a:1", "b:1"], "causal-context": {}}),
        ),
        _ => Reply::Json(
            404,
            json!({"message": "Error", "error": "Shard does not exist",
                                     "causal-context": {}}),
        ),
    })
    .await;
    let client = Client::new([&node.addr]).unwrap();
    let count = client.key_count().await.unwrap();
    assert_eq!((count.key_count, count.shard_id.as_str()), (4, "1"));
    assert_eq!(client.shards().await.unwrap(), ["1", "2"]);
    let shard = client.shard("2").await.unwrap();
    assert_eq!(shard.replicas, ["a:1", "b:1"]);
    assert_eq!(shard.key_count, 3);
    let err = client.shard("9").await.unwrap_err();
    assert!(
        matches!(err, Error::Unexpected { ref response } if response.status == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_success_that_is_not_a_json_object_is_a_decode_error() {
    let node = FakeNode::start(|_| Reply::Text(200, "[1, 2]")).await;
    let client = Client::new([&node.addr]).unwrap();
    let err = client.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
}

#[tokio::test]
async fn a_numbers_exact_text_is_kept() {
    let node = FakeNode::start(|req| match req.method.as_str() {
        "PUT" => Reply::Json(
            201,
            json!({"message": "Added successfully", "replaced": false, "causal-context": {}}),
        ),
        _ => Reply::Text(
            200,
            r#"{"message":"Retrieved successfully","doesExist":true,"value":10.50,"causal-context":{}}"#,
        ),
    })
    .await;
    let client = Client::new([&node.addr]).unwrap();
    let op = causeway_client::Operation::PutNumber {
        key: "n".into(),
        number: "10.50".into(),
    };
    assert_eq!(client.execute(&op).await.unwrap().status, 201);
    assert!(node.requests()[0].raw.contains(r#""value":10.50"#));
    let answer = client
        .execute(&causeway_client::Operation::Get { key: "n".into() })
        .await
        .unwrap();
    assert_eq!(answer.value_number.as_deref(), Some("10.50"));
}
