//! causeway-torture: a fault campaign for Causeway.
//!
//! It starts a cluster of real node processes, drives concurrent client
//! sessions against it (each carrying its causal context) while injecting
//! faults on a seeded schedule (partitions cut with iptables between the
//! nodes' loopback addresses, SIGKILL + restart on the same data directory,
//! SIGSTOP/SIGCONT pauses, view changes), heals everything, reads the final
//! state from every replica, and records all of it as a JSON-lines history.
//! The checker then judges the history alone: causal consistency, lost
//! writes, convergence and availability.
//!
//! Layout:
//! - `history`: the record format;
//! - `checker`: the verdict, from the history only (black box);
//! - `cluster`: node processes (start, kill, restart, pause);
//! - `partition`: iptables rules between node addresses;
//! - `schedule`: the seeded fault schedule;
//! - `workload`: client sessions;
//! - `campaign`: wires it all together.

pub mod campaign;
pub mod checker;
pub mod cluster;
pub mod history;
pub mod partition;
pub mod rng;
pub mod schedule;
pub mod workload;
