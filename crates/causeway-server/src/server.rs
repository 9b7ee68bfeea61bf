//! Wiring a node to the world: open storage, build the transport and the node, serve
//! HTTP on an already-bound listener until `shutdown` resolves, then drain.
//!
//! Taking a bound listener (rather than an address) lets tests bind port 0 or a
//! chosen loopback address without races.

use crate::api::{self, AppState};
use crate::config::ServeConfig;
use crate::node::recall::{check_disk, StaleDisk};
use crate::node::Node;
use crate::storage::{Storage, StorageError};
use crate::transport::stream::StreamTransport;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open storage: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    StaleDisk(#[from] StaleDisk),
}

/// Opens the node's storage and starts it (with the stream transport). A data
/// directory holding a view is first checked against what the other nodes saw of this
/// one (see [`crate::node::recall`]): one that went back in time is refused unless
/// `allow_stale_disk`.
pub async fn start_node(cfg: &ServeConfig) -> Result<Arc<Node>, StartError> {
    let (storage, loaded) = match &cfg.data_dir {
        Some(dir) => Storage::open(dir, cfg.durability)?,
        None => Storage::in_memory(),
    };
    tracing::info!(durable = storage.is_durable(), "storage opened");
    let transport = Arc::new(StreamTransport::new(&cfg.node.address, cfg.secret.clone()));
    // A disk that holds anything: its view is the configured first one until a view
    // change wrote another.
    let meta = &loaded.meta;
    if meta.view.is_some() || meta.last_ts > 0 || !meta.clock.is_empty() {
        let disk_epoch = meta.view.as_ref().map_or(cfg.view.epoch, |v| v.epoch);
        let others = meta
            .view
            .iter()
            .chain([&cfg.view])
            .flat_map(|v| v.nodes.iter().cloned())
            .chain(
                meta.lineage
                    .iter()
                    .flat_map(|l| l.values().flatten().cloned()),
            );
        let checked = check_disk(&*transport, &cfg.node.address, disk_epoch, others).await;
        match checked {
            Err(e) if cfg.allow_stale_disk => {
                tracing::warn!(error = %e, "starting anyway (--allow-stale-disk)");
            }
            checked => checked?,
        }
    }
    Ok(Node::start(
        cfg.node.clone(),
        storage,
        loaded,
        cfg.view.clone(),
        transport,
    )?)
}

/// How long a node whose committer died keeps answering (503s, and `/ready` saying
/// why) before it stops, so that whoever watches it can see why it went away.
const FAILED_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves `node` on `listener` until `shutdown` resolves; in-flight requests finish.
/// If the node's committer dies, it stops by itself and returns an error saying why
/// (without marking storage cleanly closed).
pub async fn run(
    listener: TcpListener,
    node: Arc<Node>,
    cfg: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = std::sync::Arc::new(AppState::new(
        node.clone(),
        cfg.limits.clone(),
        cfg.secret.clone(),
    ));
    use axum::serve::ListenerExt;
    // No Nagle delay: internal streams write many small reply frames in turn.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let failed = {
        let node = node.clone();
        async move {
            let why = node.failed().await;
            tracing::error!(error = %why, "the committer died; stopping the node");
            tokio::time::sleep(FAILED_GRACE).await;
        }
    };
    let stop = async move {
        tokio::select! {
            _ = shutdown => {},
            _ = failed => {},
        }
    };
    axum::serve(listener, api::service::Http::new(app))
        .with_graceful_shutdown(stop)
        .await?;
    if let Some(why) = node.failure() {
        node.stop();
        return Err(std::io::Error::other(format!(
            "the committer thread died ({why}); no write can be committed, so the node stopped"
        )));
    }
    if let Err(e) = node.close() {
        tracing::error!(error = %e, "closing storage failed");
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
