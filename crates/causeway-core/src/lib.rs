//! # Causeway's protocol core
//!
//! Every protocol decision of the store, as plain synchronous code: no async runtime,
//! no I/O, no wall clock and no global randomness (time and random numbers are
//! inputs). The node's shells (its committer thread, replication loops, view-change
//! tasks and HTTP API) and the deterministic simulator (`causeway-sim`) both drive these
//! same functions.
//!
//! - [`causal`]: clocks, versions, the merge, client contexts and the read rule;
//! - [`placement`]: views, shards, the key-to-shard hash and who hands keys to whom;
//! - [`state`]: a replica's in-memory state, and what to send a peer given its clock,
//!   within a byte budget;
//! - [`changes`]: how that state changes (writes, replicated and handed-over versions,
//!   removals, a new view), computed before anything is written;
//! - [`identity`]: the identity of a write that carries an idempotency key;
//! - [`listing`]: pages of keys across shards, and what a listing teaches a session;
//! - [`replica`]: a replica's rules around its state (shard completeness, tombstone
//!   collection, a read's answer, a forwarded write's identity);
//! - [`plant`]: deliberately broken rules, only with the `planted-bugs` feature;
//! - [`views`]: which of two racing or stale views a node keeps, given what it knows
//!   of their completion.

pub mod causal;
pub mod changes;
pub mod identity;
pub mod listing;
pub mod placement;
pub mod plant;
pub mod recall;
pub mod replica;
pub mod state;
pub mod views;
