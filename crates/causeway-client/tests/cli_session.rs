//! The command-line client run in-process against scripted fake nodes: the session
//! file carries the causal context from one invocation to the next (even to another
//! node), output formats, and exit codes.

mod support;

use causeway_client::cli::{run_with_output, ClientCommand, ClientOpts, Exit};
use serde_json::{json, Value};
use support::fake_node::{FakeNode, Reply};
use support::temp::TempDir;

struct Run {
    exit: Exit,
    out: String,
    err: String,
}

async fn run(node: &str, session: &TempDir, json: bool, cmd: ClientCommand) -> Run {
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

fn put(key: &str, value: &str) -> ClientCommand {
    ClientCommand::Put {
        key: key.into(),
        value: value.into(),
        number: false,
        ttl: None,
    }
}

fn get(key: &str) -> ClientCommand {
    ClientCommand::Get { key: key.into() }
}

/// Node A takes writes and hands out a context naming them. Node B serves a read
/// only to a client whose context says it saw that write (as a replica that has
/// the write would), and refuses the others (as one that lacks it must).
async fn two_nodes() -> (FakeNode, FakeNode) {
    let a = FakeNode::start(|_| {
        Reply::Json(
            201,
            json!({"message": "Added successfully", "replaced": false,
                   "causal-context": {"wrote": "k"}}),
        )
    })
    .await;
    let b = FakeNode::start(|req| {
        if req.body["causal-context"] == json!({"wrote": "k"}) {
            Reply::Json(
                200,
                json!({"message": "Retrieved successfully", "doesExist": true, "value": "v",
                       "causal-context": {"wrote": "k", "read": "k"}}),
            )
        } else {
            Reply::Json(
                404,
                json!({"message": "Error in GET", "error": "Key does not exist",
                       "doesExist": false, "causal-context": {}}),
            )
        }
    })
    .await;
    (a, b)
}

#[tokio::test]
async fn a_put_then_a_get_on_another_node_share_the_context_through_the_session_file() {
    let (a, b) = two_nodes().await;
    let session = TempDir::new("cli-session");

    let wrote = run(&a.addr, &session, false, put("k", "v")).await;
    assert_eq!(
        (wrote.exit, wrote.out.as_str()),
        (Exit::Success, "created\n"),
        "{}",
        wrote.err
    );

    let read = run(&b.addr, &session, false, get("k")).await;
    assert_eq!(
        (read.exit, read.out.as_str()),
        (Exit::Success, "v\n"),
        "{}",
        read.err
    );
    assert_eq!(
        b.requests()[0].body,
        json!({"causal-context": {"wrote": "k"}})
    );

    // The session now holds the context of the last answer.
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(session.path().join("session.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        saved,
        json!({"causal-context": {"wrote": "k", "read": "k"}})
    );
}

#[tokio::test]
async fn without_the_session_the_other_node_does_not_see_the_write() {
    // The control for the test above: a fresh session gets B's 404, exit code 1.
    let (a, b) = two_nodes().await;
    let first = TempDir::new("cli-session-a");
    let second = TempDir::new("cli-session-b");
    assert_eq!(
        run(&a.addr, &first, false, put("k", "v")).await.exit,
        Exit::Success
    );
    let read = run(&b.addr, &second, false, get("k")).await;
    assert_eq!(read.exit, Exit::KeyNotFound);
    assert_eq!(read.out, "");
    assert!(read.err.contains("does not exist"), "{}", read.err);
}

#[tokio::test]
async fn json_output_is_the_whole_response_on_one_line() {
    let (a, b) = two_nodes().await;
    let session = TempDir::new("cli-json");
    let wrote = run(&a.addr, &session, true, put("k", "v")).await;
    assert_eq!(wrote.exit, Exit::Success);
    assert_eq!(wrote.out.lines().count(), 1);
    let body: Value = serde_json::from_str(&wrote.out).unwrap();
    assert_eq!(
        body,
        json!({"message": "Added successfully", "replaced": false, "causal-context": {"wrote": "k"}})
    );

    // An error answered by a node is printed whole too, with its exit code.
    let other = TempDir::new("cli-json-404");
    let missing = run(&b.addr, &other, true, get("k")).await;
    assert_eq!(missing.exit, Exit::KeyNotFound);
    let body: Value = serde_json::from_str(&missing.out).unwrap();
    assert_eq!(body["error"], json!("Key does not exist"));
}

#[tokio::test]
async fn failures_map_to_the_documented_exit_codes() {
    let session = TempDir::new("cli-exit");
    let unreachable = run("127.0.0.1:0", &session, false, get("k")).await;
    assert_eq!(unreachable.exit, Exit::Unavailable, "{}", unreachable.err);
    assert!(
        unreachable.err.starts_with("error: "),
        "{}",
        unreachable.err
    );

    let invalid = run("no-port", &session, false, get("k")).await;
    assert_eq!(invalid.exit, Exit::Usage);

    let not_a_number = run(
        "127.0.0.1:0",
        &session,
        false,
        ClientCommand::Put {
            key: "k".into(),
            value: "ten".into(),
            number: true,
            ttl: None,
        },
    )
    .await;
    assert_eq!(not_a_number.exit, Exit::Usage);

    let too_long = FakeNode::start(|_| {
        Reply::Json(
            400,
            json!({"message": "Error in PUT", "error": "Key is too long",
                                 "causal-context": {}}),
        )
    })
    .await;
    let rejected = run(&too_long.addr, &session, false, put(&"k".repeat(51), "v")).await;
    assert_eq!(rejected.exit, Exit::Usage);
    assert!(rejected.err.contains("Key is too long"), "{}", rejected.err);

    let unsatisfiable = FakeNode::start(|_| {
        Reply::Json(
            400,
            json!({"message": "Error in GET", "error": "Unable to satisfy request",
                                 "causal-context": {}}),
        )
    })
    .await;
    let behind = run(&unsatisfiable.addr, &session, false, get("k")).await;
    assert_eq!(behind.exit, Exit::Unavailable);

    // Nothing was learned, so no session file was written.
    assert!(!session.path().join("session.json").exists());
}

#[tokio::test]
async fn a_corrupt_session_file_is_a_usage_error_and_is_left_alone() {
    let node = FakeNode::start(|_| Reply::Json(200, json!({"causal-context": {}}))).await;
    let session = TempDir::new("cli-corrupt");
    let path = session.path().join("session.json");
    std::fs::write(&path, "garbage").unwrap();
    let result = run(&node.addr, &session, false, get("k")).await;
    assert_eq!(result.exit, Exit::Usage);
    assert!(result.err.contains("session"), "{}", result.err);
    assert!(node.requests().is_empty());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage");
}

#[tokio::test]
async fn numbers_are_sent_and_printed_with_their_exact_text() {
    let node = FakeNode::start(|req| match req.method.as_str() {
        "PUT" => Reply::Json(
            201,
            json!({"message": "Added successfully", "replaced": false, "causal-context": {}}),
        ),
        _ => Reply::Text(
            200,
            r#"{"message":"Retrieved successfully","doesExist":true,"value":1E+2,"causal-context":{}}"#,
        ),
    })
    .await;
    let session = TempDir::new("cli-numbers");
    for text in ["1E+2", "10.50", "-0", "123456789012345678901234567890"] {
        let put = ClientCommand::Put {
            key: "n".into(),
            value: text.into(),
            number: true,
            ttl: None,
        };
        let wrote = run(&node.addr, &session, false, put).await;
        assert_eq!(wrote.exit, Exit::Success, "{}", wrote.err);
        let sent = node.requests().last().unwrap().raw.clone();
        assert!(sent.contains(&format!(r#""value":{text}"#)), "{sent}");
    }

    let read = run(&node.addr, &session, false, get("n")).await;
    assert_eq!((read.exit, read.out.as_str()), (Exit::Success, "1E+2\n"));
    let whole = run(&node.addr, &session, true, get("n")).await;
    assert!(whole.out.contains(r#""value":1E+2"#), "{}", whole.out);
    let body: Value = serde_json::from_str(&whole.out).unwrap();
    assert_eq!(body["doesExist"], json!(true));
}
