//! Client sessions, as the fault campaign's workload runs them: gets, puts (each with
//! a value unique in the history) and deletes on a small key space with hot keys, a
//! causal context carried from answer to request, mostly one node with hops to others,
//! writes sometimes with an `Idempotency-Key` and then retried (the same request) on
//! another node after a timeout or a 503.
//!
//! Owns: a session's choices and context. Invariant: its draws come from its own
//! stream of the seed, so the workload does not change with the faults' draws.

use crate::node::Op;
use causeway_core::causal::Context;
use causeway_torture::history::OpId;
use causeway_torture::rng::Rng;

/// Retries of one write at most (as the campaign).
pub const MAX_RETRIES: u32 = 2;

/// One logical request in flight: its first attempt and the current one.
pub struct Call {
    pub op_kind: Op,
    pub key: String,
    pub idem: Option<String>,
    pub first: OpId,
    pub op: OpId,
    pub target: usize,
    pub retries: u32,
    pub answered: bool,
    /// The last answer received (its op and context).
    pub answer: Option<(OpId, Context)>,
}

pub struct Session {
    pub id: u32,
    pub rng: Rng,
    pub ctx: Context,
    pub ctx_from: Option<OpId>,
    pub node: Option<usize>,
    pub call: Option<Call>,
    pub done: bool,
    writes: u64,
    keyed: u64,
}

impl Session {
    pub fn new(seed: u64, id: u32) -> Session {
        Session {
            id,
            rng: Rng::derive(seed, 1 + id as u64),
            ctx: Context::default(),
            ctx_from: None,
            node: None,
            call: None,
            done: false,
            writes: 0,
            keyed: 0,
        }
    }

    /// The next request: its node (`up`: the nodes not crashed) and operation.
    pub fn next_call(&mut self, up: &[usize], keys: &[String], idempotent: f64) -> Call {
        let rng = &mut self.rng;
        // Mostly stay on one node, sometimes hop: hops expose replicas that lag.
        let target = match self.node {
            Some(n) if up.contains(&n) && rng.chance(0.6) => n,
            _ => *rng.pick(up),
        };
        self.node = Some(target);
        let hot = (keys.len() / 4).max(1);
        let key = if rng.chance(0.5) {
            keys[rng.below(hot as u64) as usize].clone()
        } else {
            rng.pick(keys).clone()
        };
        let roll = rng.below(100);
        let op_kind = if roll < 50 {
            Op::Get
        } else if roll < 88 {
            self.writes += 1;
            Op::Put(format!("s{}-w{}", self.id, self.writes))
        } else {
            Op::Delete
        };
        let idem = (op_kind != Op::Get && idempotent > 0.0 && rng.chance(idempotent)).then(|| {
            self.keyed += 1;
            format!("s{}-k{}", self.id, self.keyed)
        });
        Call {
            op_kind,
            key,
            idem,
            first: 0,
            op: 0,
            target,
            retries: 0,
            answered: false,
            answer: None,
        }
    }
}
