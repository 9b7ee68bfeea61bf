//! The command-line client: the `causeway get|put|delete|key-count|shards|shard|view-change`
//! subcommands, mounted by the `causeway` binary.
//!
//! Each invocation is one request. The causal context lives in a session file
//! (`--session`, default `.causeway-session.json` in the current directory), read
//! before the request and saved after it, so successive commands are causally
//! consistent even when they go to different nodes: a `put` on one node followed
//! by a `get` on another reads the value written, or fails with exit code 3 while
//! that node has not received it yet, but never shows an older value.
//! Invocations sharing a session file take turns (a lock on `<session>.lock`), so
//! none overwrites the session with a context older than one already saved.
//!
//! Output: a readable line by default (`v` for `get`, `created` / `updated` for
//! `put`, ...); with `--json`, the node's whole response object on one line, for
//! errors answered by a node too (a 404 prints its body and exits 1). Messages
//! go to standard error.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the key does not exist (`get`, `delete`) |
//! | 2 | bad request or usage: rejected by the node (400, e.g. key too long), invalid arguments or node address, unusable session file |
//! | 3 | unavailable: no node reachable, timeout, 503, `Unable to satisfy request`, malformed response |
//!
//! # Mounting
//!
//! The options are `global`, so they may be written before or after the subcommand
//! (`causeway put --node a:13800 k v`).
//!
//! ```
//! use causeway_client::cli::{ClientCommand, ClientOpts};
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     client: ClientOpts,
//!     #[command(subcommand)]
//!     command: Command,
//! }
//!
//! #[derive(clap::Subcommand)]
//! enum Command {
//!     /// Run a node.
//!     Serve,
//!     #[command(flatten)]
//!     Client(ClientCommand),
//! }
//!
//! let cli = Cli::parse_from(["causeway", "put", "--node", "10.0.0.2:13800", "k", "v"]);
//! assert_eq!(cli.client.node, ["10.0.0.2:13800"]);
//! assert!(matches!(cli.command, Command::Client(ClientCommand::Put { .. })));
//! // In `main`: `Command::Client(cmd) => causeway_client::cli::run(cli.client, cmd).await`
//! ```

mod session;

use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

pub use self::session::{Session, SessionError};

pub mod status;
use crate::client::{BatchOp, Client, Operation};
use crate::error::Error;
use crate::response::{
    BatchBody, KeyCount, Page, PutOutcome, Response, ShardInfo, ShardList, ViewChangeBody,
};

/// Options shared by the client subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOpts {
    /// Node to send requests to, `ip:port`; a comma list is tried in order until one answers.
    #[arg(
        long,
        value_name = "ADDR",
        env = "CAUSEWAY_NODE",
        default_value = "127.0.0.1:13800",
        value_delimiter = ',',
        global = true
    )]
    pub node: Vec<String>,

    /// File keeping the causal context between invocations.
    #[arg(
        long,
        value_name = "PATH",
        env = "CAUSEWAY_SESSION",
        default_value = ".causeway-session.json",
        global = true
    )]
    pub session: PathBuf,

    /// Print the node's whole response as one line of JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The client subcommands: one request each.
#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub enum ClientCommand {
    /// Read a key and print its value.
    Get {
        /// The key.
        key: String,
    },
    /// Write a key (prints `created` or `updated`).
    #[command(allow_negative_numbers = true)]
    Put {
        /// The key (at most 50 characters).
        key: String,
        /// The value, stored as a string unless --number is given.
        value: String,
        /// Send the value as a JSON number (e.g. `10`, `-2.5`).
        #[arg(long)]
        number: bool,
        /// Seconds until the value expires (then the key reads as deleted).
        #[arg(long)]
        ttl: Option<f64>,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Print each change of a key as it happens (its value, or `(deleted)`), until
    /// interrupted or --count changes; starts with the key's current value when this
    /// session has not seen it.
    Watch {
        /// The key.
        key: String,
        /// Seconds each long-poll may be held (0 to 60).
        #[arg(long, default_value_t = 30.0)]
        wait: f64,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Read several keys in one batch: prints `key<TAB>value`, or `key<TAB>(missing)`.
    Mget {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Write several keys in one batch, given as `key=value` (string values): prints
    /// `key<TAB>created` or `key<TAB>updated`.
    Mput {
        /// `key=value` pairs.
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// List keys in byte order across every shard, page after page.
    Ls {
        /// Only keys that start with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Also print each key's value (`key<TAB>value`).
        #[arg(long)]
        values: bool,
        /// Stop after this many keys.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Print how many keys the node's shard holds.
    KeyCount,
    /// List the shard ids.
    Shards,
    /// Print a shard's key count and replicas.
    Shard {
        /// Shard id, e.g. 1.
        id: String,
    },
    /// Show every node, shard and replica of the cluster: up or down, keys, lag, and
    /// the view change in progress (`--json` prints the document).
    Status {
        /// Redraw every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Change the cluster's nodes and replication factor (waits until keys have moved).
    ViewChange {
        /// Every node of the new view, comma-separated `ip:port` list.
        #[arg(value_delimiter = ',', required = true, value_name = "VIEW")]
        view: Vec<String>,
        /// Replicas per shard; the number of nodes must be a multiple of it.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        repl_factor: u32,
    },
}

/// How an invocation ended; its value is the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// 0: the request succeeded.
    Success = 0,
    /// 1: the key does not exist.
    KeyNotFound = 1,
    /// 2: the request or the invocation is wrong.
    Usage = 2,
    /// 3: no node could serve the request now.
    Unavailable = 3,
}

impl Exit {
    /// The exit status for a failed request.
    pub fn for_error(error: &Error) -> Exit {
        match error {
            Error::KeyNotFound { .. } => Exit::KeyNotFound,
            Error::BadRequest { .. }
            | Error::InvalidAddress { .. }
            | Error::InvalidNumber { .. } => Exit::Usage,
            Error::Unexpected { response } if response.status < 500 => Exit::Usage,
            Error::Http { status, .. } if *status < 500 => Exit::Usage,
            Error::Unsatisfiable { .. }
            | Error::Unavailable { .. }
            | Error::Unexpected { .. }
            | Error::Http { .. }
            | Error::Transport { .. }
            | Error::Timeout { .. }
            | Error::Decode { .. }
            | Error::AllNodesFailed { .. } => Exit::Unavailable,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Runs one client subcommand, printing to standard output and error.
pub async fn run(opts: ClientOpts, cmd: ClientCommand) -> ExitCode {
    run_with_output(opts, cmd, &mut std::io::stdout(), &mut std::io::stderr())
        .await
        .into()
}

/// [`run`] with the output streams given, for tests and embedding.
pub async fn run_with_output(
    opts: ClientOpts,
    cmd: ClientCommand,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Exit {
    let fail = |err: &mut dyn Write, exit: Exit, message: &dyn Display| {
        let _ = writeln!(err, "error: {message}");
        exit
    };
    let op = match operation(&cmd) {
        Ok(op) => op,
        Err(message) => return fail(err, Exit::Usage, &message),
    };
    let mut session = match Session::open(&opts.session) {
        Ok(session) => session,
        Err(e) => return fail(err, Exit::Usage, &e),
    };
    let client = match Client::builder()
        .nodes(&opts.node)
        .context(session.context().clone())
        .build()
    {
        Ok(client) => client,
        Err(e) => return fail(err, Exit::Usage, &e),
    };

    if let ClientCommand::Status { watch: true } = cmd {
        return watch_status(&client, &op, opts.json, out, err).await;
    }
    if let ClientCommand::Ls { limit, .. } = &cmd {
        let exit = list_all(&client, op, *limit, opts.json, out, err).await;
        return match session.save(&client.context()) {
            Err(e) => fail(err, Exit::Usage, &e),
            Ok(()) => exit,
        };
    }
    if let Operation::Watch { key, wait } = &op {
        let count = match cmd {
            ClientCommand::Watch { count, .. } => count,
            _ => None,
        };
        return watch_key(
            &client,
            &mut session,
            key,
            *wait,
            count,
            opts.json,
            out,
            err,
        )
        .await;
    }
    let result = client.execute(&op).await;
    // The client keeps the context of the last answer that served an operation (an
    // error answer never replaces it); save that whatever happened.
    let saved = session.save(&client.context());

    let exit = match result {
        Ok(response) => match print_success(&cmd, &response, opts.json, out) {
            Ok(()) => Exit::Success,
            Err(e) => fail(err, Exit::for_error(&e), &e),
        },
        Err(e) => {
            if let (true, Some(response)) = (opts.json, e.response()) {
                let _ = writeln!(out, "{}", response.to_json());
            }
            match (&e, &cmd) {
                (Error::KeyNotFound { .. }, ClientCommand::Get { key })
                | (Error::KeyNotFound { .. }, ClientCommand::Delete { key }) => fail(
                    err,
                    Exit::KeyNotFound,
                    &format!("key {key:?} does not exist"),
                ),
                _ => fail(err, Exit::for_error(&e), &e),
            }
        }
    };
    match saved {
        Err(e) => fail(err, Exit::Usage, &e),
        Ok(()) => exit,
    }
}

/// Keys a page of `ls` asks for.
const LS_PAGE: u32 = 1000;

/// `ls`: every page of the listing (up to `limit` keys), printed as it comes.
async fn list_all(
    client: &Client,
    mut op: Operation,
    limit: Option<u64>,
    json: bool,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Exit {
    let mut printed = 0u64;
    loop {
        let page = match client.execute(&op).await.and_then(|r| Page::try_from(&r)) {
            Ok(page) => page,
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return Exit::for_error(&e);
            }
        };
        for (key, value) in &page.items {
            if limit.is_some_and(|l| printed >= l) {
                return Exit::Success;
            }
            let line = match (json, value) {
                (true, v) => serde_json::json!({"key": key, "value": v}).to_string(),
                (false, Some(Value::String(s))) => format!("{key}\t{s}"),
                (false, Some(v)) => format!("{key}\t{v}"),
                (false, None) => key.clone(),
            };
            if writeln!(out, "{line}").is_err() {
                return Exit::Usage;
            }
            printed += 1;
        }
        match (page.next, &mut op) {
            (Some(next), Operation::List { start_after, .. }) => *start_after = Some(next),
            _ => return Exit::Success,
        }
    }
}

/// `watch KEY`: long-polls the key again and again, printing each change and saving
/// the session's context after every answer. A failed round is reported and retried
/// after a second; a wrong request ends it.
#[allow(clippy::too_many_arguments)]
async fn watch_key(
    client: &Client,
    session: &mut Session,
    key: &str,
    wait: std::time::Duration,
    count: Option<u64>,
    json: bool,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Exit {
    let mut seen = 0u64;
    while count.is_none_or(|c| seen < c) {
        let result = client.watch(key, wait).await;
        if let Err(e) = session.save(&client.context()) {
            let _ = writeln!(err, "error: {e}");
            return Exit::Usage;
        }
        match result {
            Ok(w) if w.changed => {
                seen += 1;
                let line = if json {
                    serde_json::json!({"key": key, "value": w.value}).to_string()
                } else {
                    match &w.value {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => "(deleted)".to_owned(),
                    }
                };
                if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                    return Exit::Usage;
                }
            }
            Ok(_) => {}
            Err(e) if Exit::for_error(&e) == Exit::Usage => {
                let _ = writeln!(err, "error: {e}");
                return Exit::Usage;
            }
            Err(e) => {
                let _ = writeln!(err, "error: {e} (retrying)");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    Exit::Success
}

/// `status --watch`: redraws the status every second, in place, until interrupted;
/// a round that fails shows the error and keeps going.
async fn watch_status(
    client: &Client,
    op: &Operation,
    json: bool,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Exit {
    loop {
        let frame = match client.execute(op).await {
            Ok(response) if json => response.to_json().to_string(),
            Ok(response) => status::render(
                &Value::Object(response.body.clone()),
                status::colour_wanted(),
            ),
            Err(e) => format!("error: {e}"),
        };
        // Home, clear, then the frame.
        if writeln!(out, "\x1b[H\x1b[2J{frame}")
            .and_then(|_| out.flush())
            .is_err()
        {
            let _ = writeln!(err, "error: cannot write the status");
            return Exit::Usage;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The request a subcommand makes; an error message if its arguments are unusable.
fn operation(cmd: &ClientCommand) -> Result<Operation, String> {
    Ok(match cmd.clone() {
        ClientCommand::Get { key } => Operation::Get { key },
        ClientCommand::Put {
            key,
            value,
            number,
            ttl,
        } => {
            let put = if number {
                // Checked here for a usage error; sent as written (`1e2` stays `1e2`).
                value
                    .parse::<serde_json::Number>()
                    .map_err(|_| format!("{value:?} is not a JSON number"))?;
                Operation::PutNumber { key, number: value }
            } else {
                Operation::Put {
                    key,
                    value: Value::String(value),
                }
            };
            match ttl {
                None => put,
                Some(t) if t > 0.0 && t <= 10.0 * 365.0 * 86_400.0 => Operation::PutWithTtl {
                    put: Box::new(put),
                    ttl: std::time::Duration::from_secs_f64(t),
                },
                Some(t) => {
                    return Err(format!(
                        "--ttl {t}: give more than 0 seconds, at most ten years"
                    ))
                }
            }
        }
        ClientCommand::Delete { key } => Operation::Delete { key },
        ClientCommand::Watch { key, wait, .. } => {
            if !(wait > 0.0 && wait <= 60.0) {
                return Err(format!(
                    "--wait {wait}: give more than 0 and at most 60 seconds"
                ));
            }
            Operation::Watch {
                key,
                wait: std::time::Duration::from_secs_f64(wait),
            }
        }
        ClientCommand::Mget { keys } => Operation::Batch {
            ops: keys.into_iter().map(|key| BatchOp::Get { key }).collect(),
        },
        ClientCommand::Mput { pairs } => Operation::Batch {
            ops: pairs
                .into_iter()
                .map(|p| match p.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok(BatchOp::Put {
                        key: k.to_owned(),
                        value: Value::String(v.to_owned()),
                    }),
                    _ => Err(format!("{p:?} is not key=value")),
                })
                .collect::<Result<_, _>>()?,
        },
        ClientCommand::Ls {
            prefix,
            values,
            limit,
        } => {
            if limit == Some(0) {
                return Err("--limit 0: give at least 1".into());
            }
            Operation::List {
                prefix,
                limit: limit.map_or(LS_PAGE, |l| l.min(u64::from(LS_PAGE)) as u32),
                start_after: None,
                values,
            }
        }
        ClientCommand::KeyCount => Operation::KeyCount,
        ClientCommand::Shards => Operation::Shards,
        ClientCommand::Shard { id } => Operation::Shard { id },
        ClientCommand::Status { .. } => Operation::ClusterStatus,
        ClientCommand::ViewChange { view, repl_factor } => {
            let view: Vec<String> = view
                .iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect();
            if view.is_empty() {
                return Err("the view is empty".into());
            }
            Operation::ViewChange { view, repl_factor }
        }
    })
}

/// Prints a successful response: whole with `--json`, as a readable summary otherwise.
fn print_success(
    cmd: &ClientCommand,
    response: &Response,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    if json {
        let _ = writeln!(out, "{}", response.to_json_text());
        return Ok(());
    }
    let text = match cmd {
        ClientCommand::Get { .. } | ClientCommand::Watch { .. } => match response.body.get("value")
        {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(_)) if response.value_number.is_some() => {
                response.value_number.clone().unwrap_or_default()
            }
            Some(other) => other.to_string(),
            None => {
                return Err(Error::Decode {
                    node: response.node.clone(),
                    reason: "no value in the response".into(),
                })
            }
        },
        ClientCommand::Put { .. } => {
            let outcome = PutOutcome::try_from(response)?;
            if outcome.replaced {
                "updated"
            } else {
                "created"
            }
            .to_owned()
        }
        ClientCommand::Delete { .. } => "deleted".to_owned(),
        ClientCommand::Mget { .. } | ClientCommand::Mput { .. } => response
            .decode::<BatchBody>()?
            .results
            .iter()
            .map(|r| {
                let shown = match (r.status, &r.value) {
                    (200, Some(Value::String(s))) => s.clone(),
                    (200, Some(v)) => v.to_string(),
                    (201, _) => "created".into(),
                    (200, None) => "updated".into(),
                    (404, _) => "(missing)".into(),
                    (_, _) => format!("error: {}", r.error.as_deref().unwrap_or(&r.message)),
                };
                format!("{}\t{shown}", r.key)
            })
            .collect::<Vec<_>>()
            .join("\n"),
        ClientCommand::Ls { .. } => unreachable!("ls pages in list_all"),
        ClientCommand::KeyCount => {
            let count: KeyCount = response.decode()?;
            format!("{} keys in shard {}", count.key_count, count.shard_id)
        }
        ClientCommand::Shards => response.decode::<ShardList>()?.shards.join("\n"),
        ClientCommand::Shard { .. } => shard_line(&response.decode()?),
        ClientCommand::Status { .. } => status::render(
            &Value::Object(response.body.clone()),
            status::colour_wanted(),
        ),
        ClientCommand::ViewChange { .. } => {
            let mut lines: Vec<String> = response
                .decode::<ViewChangeBody>()?
                .shards
                .iter()
                .map(shard_line)
                .collect();
            if let Some(Value::Array(waiting)) = response.body.get("incomplete-shards") {
                let ids: Vec<String> = waiting
                    .iter()
                    .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned))
                    .collect();
                lines.push(format!(
                    "hand-over still running for shard {} (it completes on its own)",
                    ids.join(", ")
                ));
            }
            lines.join("\n")
        }
    };
    let _ = writeln!(out, "{text}");
    Ok(())
}

fn shard_line(shard: &ShardInfo) -> String {
    format!(
        "shard {}: {} keys, replicas {}",
        shard.id,
        shard.key_count,
        shard.replicas.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::{json, Map};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("causeway").chain(args.iter().copied())).unwrap()
    }

    fn response(status: u16, body: Value) -> Box<Response> {
        Box::new(Response {
            node: "n:1".into(),
            status,
            body: body.as_object().cloned().unwrap_or_else(Map::new),
            value_number: None,
        })
    }

    #[test]
    fn run_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let cli = parse(&["shards"]);
        assert_send(&run(cli.opts, cli.cmd));
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let cases = [
            (
                Error::KeyNotFound {
                    response: response(404, json!({})),
                },
                1,
            ),
            (
                Error::BadRequest {
                    message: "Error in PUT".into(),
                    error: "Key is too long".into(),
                    response: response(400, json!({})),
                },
                2,
            ),
            (
                Error::InvalidAddress {
                    address: "x".into(),
                    reason: "r".into(),
                },
                2,
            ),
            (
                Error::Unexpected {
                    response: response(404, json!({})),
                },
                2,
            ),
            (
                Error::Unexpected {
                    response: response(500, json!({})),
                },
                3,
            ),
            (
                Error::Unsatisfiable {
                    response: response(400, json!({})),
                },
                3,
            ),
            (
                Error::Unavailable {
                    response: response(503, json!({})),
                },
                3,
            ),
            (
                Error::Timeout {
                    node: "n:1".into(),
                    timeout: std::time::Duration::from_secs(5),
                },
                3,
            ),
            (
                Error::Decode {
                    node: "n:1".into(),
                    reason: "r".into(),
                },
                3,
            ),
            (
                Error::Http {
                    node: "n:1".into(),
                    status: 502,
                    body: String::new(),
                },
                3,
            ),
            (Error::AllNodesFailed { failures: vec![] }, 3),
        ];
        for (error, code) in cases {
            assert_eq!(Exit::for_error(&error) as u8, code, "{error:?}");
        }
    }

    #[test]
    fn options_parse_after_the_subcommand_with_comma_lists() {
        let cli = parse(&["put", "--node", "a:1,b:2", "--json", "k", "v"]);
        assert_eq!(cli.opts.node, ["a:1", "b:2"]);
        assert!(cli.opts.json);
        assert_eq!(
            cli.cmd,
            ClientCommand::Put {
                key: "k".into(),
                value: "v".into(),
                number: false,
                ttl: None,
            }
        );
        let cli = parse(&["put", "k", "v", "--ttl", "2.5"]);
        assert_eq!(
            operation(&cli.cmd).unwrap(),
            Operation::PutWithTtl {
                put: Box::new(Operation::Put {
                    key: "k".into(),
                    value: json!("v"),
                }),
                ttl: std::time::Duration::from_millis(2500),
            }
        );
        for bad in ["0", "-1", "1e12"] {
            let cli = parse(&["put", "k", "v", "--ttl", bad]);
            assert!(operation(&cli.cmd).is_err(), "--ttl {bad}");
        }
    }

    #[test]
    fn negative_numbers_are_values() {
        let cli = parse(&["put", "k", "-5", "--number"]);
        let op = operation(&cli.cmd).unwrap();
        assert_eq!(
            op,
            Operation::PutNumber {
                key: "k".into(),
                number: "-5".into()
            }
        );
    }

    #[test]
    fn number_flag_rejects_non_numbers() {
        for text in ["ten", "01", "1.", " 1", "1 ", "[1]", "\"1\"", "NaN"] {
            let cli = parse(&["put", "k", text, "--number"]);
            assert!(operation(&cli.cmd).is_err(), "{text:?}");
        }
    }

    #[test]
    fn number_flag_keeps_the_numbers_text() {
        for text in [
            "1e2",
            "1E+2",
            "10.50",
            "-0",
            "123456789012345678901234567890",
        ] {
            let cli = parse(&["put", "k", text, "--number"]);
            assert_eq!(
                operation(&cli.cmd).unwrap(),
                Operation::PutNumber {
                    key: "k".into(),
                    number: text.into()
                }
            );
        }
    }

    #[test]
    fn view_change_takes_a_comma_list_and_a_positive_repl_factor() {
        let cli = parse(&["view-change", "a:1,b:2", "--repl-factor", "2"]);
        assert_eq!(
            cli.cmd,
            ClientCommand::ViewChange {
                view: vec!["a:1".into(), "b:2".into()],
                repl_factor: 2
            }
        );
        let zero = Cli::try_parse_from(["causeway", "view-change", "a:1", "--repl-factor", "0"]);
        assert!(zero.is_err());
        let missing = Cli::try_parse_from(["causeway", "view-change", "a:1"]);
        assert!(missing.is_err());
    }

    #[test]
    fn readable_output() {
        let ok = |cmd: &[&str], body: Value| {
            let cli = parse(cmd);
            let mut out = Vec::new();
            print_success(&cli.cmd, &response(200, body), false, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(ok(&["get", "k"], json!({"value": "v"})), "v\n");
        assert_eq!(ok(&["get", "k"], json!({"value": 10})), "10\n");
        assert_eq!(
            ok(&["put", "k", "v"], json!({"replaced": false})),
            "created\n"
        );
        assert_eq!(
            ok(&["put", "k", "v"], json!({"replaced": true})),
            "updated\n"
        );
        assert_eq!(ok(&["shards"], json!({"shards": ["1", "2"]})), "1\n2\n");
        assert_eq!(
            ok(
                &["shard", "1"],
                json!({"shard-id": "1", "key-count": 4, "replicas": ["a:1", "b:2"]})
            ),
            "shard 1: 4 keys, replicas a:1, b:2\n"
        );
    }

    #[test]
    fn json_output_is_the_whole_response_on_one_line() {
        let cli = parse(&["get", "k"]);
        let body = json!({"message": "Retrieved successfully", "doesExist": true,
                          "value": "v", "causal-context": {"x": [1, 2]}});
        let mut out = Vec::new();
        print_success(&cli.cmd, &response(200, body.clone()), true, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), body);
    }
}
