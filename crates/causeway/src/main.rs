//! The `causeway` binary: parses arguments and hands off to the library.

use causeway_server::config::ServeArgs;
use causeway_server::demo::DemoArgs;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "causeway",
    version,
    about = "A sharded, replicated, causally consistent key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: causeway_client::cli::ClientOpts,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (configured by flags or ADDRESS, VIEW, REPL_FACTOR, PORT).
    Serve(ServeArgs),
    /// Start a local cluster on loopback ports; Ctrl-C stops it.
    Demo(DemoArgs),
    /// Load-generate against one or more nodes and print throughput and latency.
    Bench(causeway_bench::BenchArgs),
    #[command(flatten)]
    Client(causeway_client::cli::ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Command::Serve(args) => rt.block_on(serve(args)),
        Command::Demo(args) => match rt.block_on(causeway_server::demo::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("causeway demo: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench(args) => match rt.block_on(causeway_bench::execute(args)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("causeway bench: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Client(cmd) => rt.block_on(causeway_client::cli::run(cli.client, cmd)),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(args: ServeArgs) -> ExitCode {
    let cfg = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("causeway: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = cfg;
    cfg.node.broken_read_rule =
        std::env::var("CAUSEWAY_TEST_BROKEN_READ_RULE").is_ok_and(|v| v == "1");
    cfg.node.ignore_old_contexts =
        std::env::var("CAUSEWAY_TEST_IGNORE_OLD_CONTEXTS").is_ok_and(|v| v == "1");
    let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("causeway: cannot listen on {}: {e}", cfg.listen);
            return ExitCode::from(1);
        }
    };
    let node = match causeway_server::server::start_node(&cfg).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("causeway: {e}");
            return ExitCode::from(1);
        }
    };
    if cfg!(feature = "test-hooks") {
        inject_test_faults(&node);
    }
    let view = node.view();
    tracing::info!(
        address = %cfg.node.address,
        listen = %cfg.listen,
        epoch = view.epoch,
        in_view = view.contains(&cfg.node.address),
        shards = view.shard_count(),
        "serving"
    );
    match causeway_server::server::run(
        listener,
        node,
        &cfg,
        causeway_server::server::shutdown_signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("causeway: server error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Test hooks, read only in a build with the `test-hooks` feature:
/// `CAUSEWAY_TEST_SYNC_DELAY_MS` delays every storage commit (a stalled disk), and
/// `CAUSEWAY_TEST_PANIC_ON_COMMIT=1` makes the first commit panic (a dying committer).
fn inject_test_faults(node: &causeway_server::node::Node) {
    let env = |name: &str| std::env::var(name).ok();
    if let Some(ms) = env("CAUSEWAY_TEST_SYNC_DELAY_MS").and_then(|v| v.parse().ok()) {
        node.faults()
            .set_commit_delay(std::time::Duration::from_millis(ms));
    }
    if env("CAUSEWAY_TEST_PANIC_ON_COMMIT").is_some_and(|v| v == "1") {
        node.faults().panic_on_next_commit();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
