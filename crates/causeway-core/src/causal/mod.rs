//! Causality: the clocks, versions and client contexts that let any replica accept
//! writes at once while never showing a client a state older than one it depends on.
//!
//! Everything here is plain synchronous data and logic, unit- and property-tested:
//! - [`clock`]: vector clocks ([`VClock`]) and per-shard dependency sets ([`Deps`]);
//! - [`version`]: a stored value with its write identity, replication dot and causal
//!   past, and the merge that makes replicas converge;
//! - [`context`]: the opaque `causal-context` clients carry, and the read-safety rule.

pub mod clock;
pub mod context;
pub mod version;

pub use clock::{Deps, Dot, Origin, ShardNo, VClock};
pub use context::{read_is_safe, Context, Recent, Signer};
pub use version::{Value, Version, WriteId};
