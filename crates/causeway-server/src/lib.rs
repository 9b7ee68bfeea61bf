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
//! It reads bottom-up as the architecture, with no import cycles between its modules:
//! - [`metrics`], [`transit`] (deadlines between nodes), [`idempotency`] (answers
//!   remembered for repeated requests), [`storage`] (fjall behind one small interface)
//!   and [`status`] (the cluster status document): leaves;
//! - [`transport`]: the seam all node-to-node traffic goes through (HTTP, a
//!   multiplexed stream, or in-memory); it delivers messages to a
//!   [`transport::Handler`] and knows nothing of the node;
//! - [`node`]: a replica: its state and single-writer committer (group commit), how it
//!   serves or forwards key operations, and its background tasks:
//!   [`node::replication`] (push and anti-entropy within a shard) and
//!   [`node::view_change`] (installing views, handing keys to their new owners);
//! - [`api`]: the HTTP API and the one place errors become responses;
//! - [`config`], [`server`], [`demo`]: running it.

pub mod api;
pub use causeway_core::{causal, listing, placement, state};
pub mod config;
pub mod demo;
pub mod idempotency;
pub mod metrics;
pub mod node;
pub use node::{replication, view_change};
pub mod server;
pub mod status;
pub mod storage;
pub mod transit;
pub mod transport;
