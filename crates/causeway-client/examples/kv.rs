//! A stand-alone command-line client built from [`causeway_client::cli`], the same
//! subcommands the `causeway` binary mounts: `cargo run -p causeway-client --example kv -- put k v`.

use std::process::ExitCode;

use causeway_client::cli::{self, ClientCommand, ClientOpts};
use clap::Parser;

/// Talk to a Causeway cluster.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: ClientCommand,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::run(cli.opts, cli.command).await
}
