//! # Causeway
//!
//! A sharded, replicated, causally consistent key-value store. Any replica of a shard
//! accepts reads and writes at once (highly available), clients never see
//! happens-before violated (causal contexts), replicas converge by push and
//! anti-entropy, any node proxies to the shard that owns a key, and the cluster
//! reshards online (view change).
//!
//! The protocol's rules live in `causeway-core` (pure, re-exported here as [`causal`],
//! [`placement`], [`state`] and [`listing`]); this crate is the shell that runs them.
//! It reads bottom-up as the architecture:
//! - [`idempotency`]: the identity of a write with an `Idempotency-Key`, and the
//!   answers remembered for repeats;
//! - [`storage`]: the durable engine (fjall) behind one small interface;
//! - [`node`]: a replica's state, its single-writer committer (group commit), and how
//!   a node serves or forwards key operations;
//! - [`replication`]: push and anti-entropy between the replicas of a shard;
//! - [`view_change`]: installing views and handing keys to their new owners;
//! - [`transport`]: the seam all node-to-node traffic goes through (HTTP or in-memory);
//! - [`api`]: the HTTP API and the one place errors become responses;
//! - [`config`], [`server`], [`metrics`], [`demo`]: running it.

pub mod api;
pub use causeway_core::{causal, listing, placement, state};
pub mod config;
pub mod demo;
pub mod idempotency;
pub mod metrics;
pub mod node;
pub mod replication;
pub mod server;
pub mod status;
pub mod storage;
pub mod transit;
pub mod transport;
pub mod view_change;
