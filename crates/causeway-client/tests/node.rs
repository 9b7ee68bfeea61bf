//! The library and the command-line client against real nodes (`causeway serve
//! --in-memory`, see `support/node.rs`). Each test has its own ports:
//! 211x0.. for this file.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use causeway_client::cli::{run_with_output, ClientCommand, ClientOpts, Exit};
use causeway_client::{Client, Error};
use serde_json::{json, Value};
use support::node::{addresses, binary, cluster};
use support::temp::TempDir;

/// How long a write may take to become readable on another replica.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn key_operations_through_the_library() {
    let view = addresses(21100, 1);
    let _nodes = cluster(&view, 1).await;
    let client = Client::new(&view).unwrap();

    let created = client.put("k", "v").await.unwrap();
    assert!(!created.replaced);
    assert_eq!(created.address, None);
    assert!(client.put("k", "v2").await.unwrap().replaced);
    assert_eq!(client.get("k").await.unwrap(), json!("v2"));

    client.put("n", 10).await.unwrap();
    assert_eq!(client.get("n").await.unwrap(), json!(10));

    client.delete("k").await.unwrap();
    assert!(matches!(
        client.get("k").await,
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(
        client.delete("k").await,
        Err(Error::KeyNotFound { .. })
    ));

    let too_long = client.put(&"x".repeat(51), "v").await.unwrap_err();
    assert!(
        matches!(&too_long, Error::BadRequest { error, .. } if error == "Key is too long"),
        "{too_long:?}"
    );

    assert!(client.context().is_object());
    let count = client.key_count().await.unwrap();
    assert_eq!((count.key_count, count.shard_id.as_str()), (1, "1"));
    assert_eq!(client.shards().await.unwrap(), ["1"]);
    let shard = client.shard("1").await.unwrap();
    assert_eq!(shard.replicas, view);
    assert_eq!(shard.key_count, 1);
}

#[tokio::test]
async fn a_dead_first_address_fails_over_to_the_second() {
    let view = addresses(21110, 1);
    let _nodes = cluster(&view, 1).await;
    // Nothing is started on 21111.
    let client = Client::new(["127.0.0.1:21111", view[0].as_str()]).unwrap();
    client.put("k", "v").await.unwrap();
    assert_eq!(client.get("k").await.unwrap(), json!("v"));
}

#[tokio::test]
async fn a_session_moved_to_a_new_client_keeps_read_your_writes() {
    let view = addresses(21120, 2);
    let _nodes = cluster(&view, 2).await;
    let writer = Client::new([&view[0]]).unwrap();
    writer.put("k", "v").await.unwrap();

    let reader = Client::builder()
        .nodes([&view[1]])
        .context(writer.context())
        .build()
        .unwrap();
    assert_eq!(read_until_satisfied(&reader, "k").await, json!("v"));
}

/// Reads `key` until the node can satisfy the read. A 404 is a causality
/// violation (the context has seen the write) and fails at once.
async fn read_until_satisfied(client: &Client, key: &str) -> Value {
    let deadline = Instant::now() + CONVERGE_DEADLINE;
    loop {
        match client.get(key).await {
            Ok(value) => return value,
            Err(Error::Unsatisfiable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reading {key:?}: {e}"),
        }
    }
}

#[tokio::test]
async fn view_change_through_the_library() {
    let view = addresses(21130, 2);
    let _nodes = cluster(&view, 1).await;
    let client = Client::new(&view).unwrap();
    assert_eq!(client.shards().await.unwrap(), ["1", "2"]);
    for i in 0..20 {
        client.put(&format!("key{i}"), i).await.unwrap();
    }

    let shards = client.view_change(&view, 2).await.unwrap();
    // No key is lost: each node, now a replica of the single shard, serves them all.
    for node in &view {
        let one = Client::builder()
            .nodes([node])
            .context(client.context())
            .build()
            .unwrap();
        for i in 0..20 {
            let key = format!("key{i}");
            assert_eq!(
                read_until_satisfied(&one, &key).await,
                json!(i),
                "{key} on {node}"
            );
        }
    }
    assert_eq!(shards.len(), 1);
    assert_eq!(shards[0].id, "1");
    assert_eq!(shards[0].replicas, view);
    assert_eq!(shards[0].key_count, 20);
    assert_eq!(client.shards().await.unwrap(), ["1"]);
}

struct Run {
    exit: Exit,
    out: String,
    err: String,
}

async fn cli(node: &str, session: &TempDir, json: bool, cmd: ClientCommand) -> Run {
    let opts = ClientOpts {
        node: vec![node.to_owned()],
        session: session.path().join("session.json"),
        json,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = run_with_output(opts, cmd, &mut out, &mut err).await;
    Run {
        exit,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

#[tokio::test]
async fn cli_put_on_one_node_then_get_on_the_other_reads_the_write() {
    let view = addresses(21140, 2);
    let _nodes = cluster(&view, 2).await;
    let session = TempDir::new("node-cli");
    let put = ClientCommand::Put {
        key: "k".into(),
        value: "v".into(),
        number: false,
        ttl: None,
    };
    let wrote = cli(&view[0], &session, false, put).await;
    assert_eq!(
        (wrote.exit, wrote.out.as_str()),
        (Exit::Success, "created\n"),
        "{}",
        wrote.err
    );

    let deadline = Instant::now() + CONVERGE_DEADLINE;
    loop {
        let read = cli(
            &view[1],
            &session,
            false,
            ClientCommand::Get { key: "k".into() },
        )
        .await;
        match read.exit {
            Exit::Success => {
                assert_eq!(read.out, "v\n");
                break;
            }
            // The replica has not received the write yet: allowed, but only for a while.
            Exit::Unavailable if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => panic!("get on the second node: {:?} {}", read.exit, read.err),
        }
    }

    let json_get = cli(
        &view[1],
        &session,
        true,
        ClientCommand::Get { key: "k".into() },
    )
    .await;
    assert_eq!(json_get.exit, Exit::Success, "{}", json_get.err);
    assert_eq!(json_get.out.lines().count(), 1);
    let body: Value = serde_json::from_str(&json_get.out).unwrap();
    assert_eq!(body["value"], json!("v"));
    assert_eq!(body["doesExist"], json!(true));
    assert!(body["causal-context"].is_object(), "{body}");
}

/// Runs the `causeway` binary's client subcommands in `dir`.
fn causeway(dir: &TempDir, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary())
        .args(args)
        .current_dir(dir.path())
        .env_remove("CAUSEWAY_NODE")
        .env_remove("CAUSEWAY_SESSION")
        .output()
        .unwrap();
    (
        output.status.code().expect("exited normally"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn the_causeway_binary_reads_its_writes_across_nodes() {
    let view = addresses(21150, 2);
    let _nodes = cluster(&view, 2).await;
    let dir = TempDir::new("node-binary");

    let (code, out, err) = causeway(&dir, &["put", "--node", &view[0], "k", "v"]);
    assert_eq!((code, out.as_str()), (0, "created\n"), "{err}");
    // The default session file is in the current directory.
    assert!(dir.path().join(".causeway-session.json").is_file());

    let deadline = Instant::now() + CONVERGE_DEADLINE;
    loop {
        let (code, out, err) = causeway(&dir, &["get", "--node", &view[1], "k"]);
        match code {
            0 => {
                assert_eq!(out, "v\n");
                break;
            }
            3 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("causeway get on the second node exited {code}: {err}"),
        }
    }

    let (code, out, err) = causeway(&dir, &["get", "--json", "--node", &view[1], "k"]);
    assert_eq!(code, 0, "{err}");
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(body["value"], json!("v"));

    let (code, _, _) = causeway(&dir, &["get", "--node", &view[0], "missing"]);
    assert_eq!(code, 1);
}

/// Sends `signal` (`STOP`, `CONT`) to a node process.
fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

#[tokio::test]
async fn a_write_whose_answer_never_came_is_retried_elsewhere_as_the_same_write() {
    let view = addresses(21160, 2);
    let nodes = cluster(&view, 2).await;
    let client = Client::builder()
        .nodes(&view)
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    client.put("warm", "up").await.unwrap();
    // Node 1 stops answering: the put times out there and is sent to node 2, with the
    // same Idempotency-Key and context.
    signal(nodes[0].pid(), "STOP");
    let put = client.put("k", "v1").await;
    let other = Client::new([&view[1]]).unwrap();
    let read = other.get("k").await;
    let overwrite = other.put("k", "v2").await;
    // Node 1 resumes; whatever became of the attempt it was sent (the same write, which
    // v2 supersedes), the store ends with v2.
    signal(nodes[0].pid(), "CONT");
    assert!(put.is_ok(), "the write was retried on node 2: {put:?}");
    assert_eq!(read.unwrap(), json!("v1"));
    assert!(overwrite.unwrap().replaced);
    let deadline = Instant::now() + CONVERGE_DEADLINE;
    loop {
        let mut values = Vec::new();
        for n in &view {
            values.push(Client::new([n]).unwrap().get("k").await.ok());
        }
        if values.iter().all(|v| v.as_ref() == Some(&json!("v2"))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas hold {values:?}, not v2"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn batches_and_listings_through_the_library_and_the_cli() {
    use causeway_client::BatchOp;
    let view = addresses(21170, 4);
    let _nodes = cluster(&view, 2).await;
    let client = Client::new([&view[0]]).unwrap();
    let ops = (0..30)
        .map(|i| BatchOp::Put {
            key: format!("item{i:02}"),
            value: json!(format!("v{i}")),
        })
        .collect();
    let results = client.batch(ops).await.unwrap();
    assert_eq!(results.len(), 30);
    assert!(results.iter().all(|r| r.status == 201), "{results:?}");

    // Pages across both shards, in byte order, read through another node.
    let reader = Client::new([&view[3]]).unwrap();
    reader.set_context(client.context());
    let first = reader.list("item", 20, None, true).await.unwrap();
    assert_eq!(first.items.len(), 20);
    assert_eq!(first.items[0], ("item00".into(), Some(json!("v0"))));
    let rest = reader
        .list("item", 20, first.next.as_deref(), false)
        .await
        .unwrap();
    let keys: Vec<String> = first
        .items
        .iter()
        .chain(&rest.items)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        keys,
        (0..30).map(|i| format!("item{i:02}")).collect::<Vec<_>>()
    );
    assert_eq!(rest.next, None);

    // The CLI session below is new (it depends on nothing), so whichever replica takes
    // its write reports "updated" only if it holds item00 already: wait until both
    // replicas of each shard hold all of the shard's keys.
    let deadline = Instant::now() + CONVERGE_DEADLINE;
    loop {
        let mut counts = Vec::new();
        for n in &view {
            counts.push(
                Client::new([n])
                    .unwrap()
                    .key_count()
                    .await
                    .unwrap()
                    .key_count,
            );
        }
        if counts[0] == counts[1] && counts[2] == counts[3] && counts[0] + counts[2] == 30 {
            break;
        }
        assert!(Instant::now() < deadline, "replicas hold {counts:?} keys");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let session = TempDir::new("node-cli-batch");
    let run = cli(
        &view[1],
        &session,
        false,
        ClientCommand::Mput {
            pairs: vec!["a=1".into(), "item00=new".into()],
        },
    )
    .await;
    assert_eq!(run.exit, Exit::Success, "{}", run.err);
    assert_eq!(run.out, "a\tcreated\nitem00\tupdated\n");
    let run = cli(
        &view[2],
        &session,
        false,
        ClientCommand::Mget {
            keys: vec!["item00".into(), "nope".into(), "a".into()],
        },
    )
    .await;
    assert_eq!(run.out, "item00\tnew\nnope\t(missing)\na\t1\n");
    let run = cli(
        &view[0],
        &session,
        false,
        ClientCommand::Ls {
            prefix: "item0".into(),
            values: true,
            limit: Some(3),
        },
    )
    .await;
    assert_eq!(run.out, "item00\tnew\nitem01\tv1\nitem02\tv2\n");
    let run = cli(
        &view[0],
        &session,
        false,
        ClientCommand::Ls {
            prefix: "".into(),
            values: false,
            limit: None,
        },
    )
    .await;
    assert_eq!(run.out.lines().count(), 31, "{}", run.out);
}
