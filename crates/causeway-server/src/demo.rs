//! `causeway demo`: a local cluster in one command. Starts `nodes` node processes
//! (this same binary, `serve`) on loopback ports, prints how to reach them, and stops
//! them all on Ctrl-C (or when any of them exits).

use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::{Child, Command};

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 6)]
    pub nodes: usize,
    /// Replicas per shard (nodes / repl-factor shards).
    #[arg(long, default_value_t = 2)]
    pub repl_factor: usize,
    /// First port; node i listens on base-port + i.
    #[arg(long, default_value_t = 13801)]
    pub base_port: u16,
    /// Keep data on disk under this directory instead of in memory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub async fn run(args: DemoArgs) -> Result<(), String> {
    if args.repl_factor == 0 || args.nodes == 0 || !args.nodes.is_multiple_of(args.repl_factor) {
        return Err(format!(
            "--nodes ({}) must be a positive multiple of --repl-factor ({})",
            args.nodes, args.repl_factor
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let addrs: Vec<String> = (0..args.nodes)
        .map(|i| format!("127.0.0.1:{}", args.base_port as usize + i))
        .collect();
    let view = addrs.join(",");
    let mut children: Vec<Child> = Vec::new();
    for a in &addrs {
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .env("ADDRESS", a)
            .env("VIEW", &view)
            .env("REPL_FACTOR", args.repl_factor.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match &args.data_dir {
            Some(d) => {
                cmd.env("DATA_DIR", d.join(a.replace(':', "-")));
            }
            None => {
                cmd.env("IN_MEMORY", "true");
            }
        }
        children.push(
            cmd.spawn()
                .map_err(|e| format!("cannot start node {a}: {e}"))?,
        );
    }
    let client = reqwest::Client::new();
    for a in &addrs {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if client
                .get(format!("http://{a}/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("node {a} did not become ready"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    println!(
        "Causeway demo: {} nodes, {} shards x {} replicas ({})",
        args.nodes,
        args.nodes / args.repl_factor,
        args.repl_factor,
        if args.data_dir.is_some() {
            "durable"
        } else {
            "in memory"
        }
    );
    for (i, a) in addrs.iter().enumerate() {
        println!(
            "  node {} http://{a}  (shard {})",
            i + 1,
            i / args.repl_factor + 1
        );
    }
    println!();
    println!("Try:");
    println!("  curl -s -X PUT http://{}/kv-store/keys/hello -H 'Content-Type: application/json' -d '{{\"value\": \"world\", \"causal-context\": {{}}}}'", addrs[0]);
    println!(
        "  curl -s http://{}/kv-store/keys/hello -H 'Content-Type: application/json' -d '{{}}'",
        addrs[addrs.len() - 1]
    );
    println!("  causeway get hello --node {}", addrs[addrs.len() / 2]);
    println!();
    println!("Press Ctrl-C to stop the cluster.");
    let any_exit = async {
        loop {
            for c in children.iter_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return status;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    let early = tokio::select! {
        _ = crate::server::shutdown_signal() => None,
        s = any_exit => Some(s),
    };
    for c in children.iter_mut() {
        if let Some(pid) = c.id() {
            // SIGTERM for a graceful stop; kill_on_drop is the backstop.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
    for c in children.iter_mut() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), c.wait()).await;
    }
    println!("Stopped.");
    match early {
        Some(s) => Err(format!("a node exited unexpectedly ({s})")),
        None => Ok(()),
    }
}
