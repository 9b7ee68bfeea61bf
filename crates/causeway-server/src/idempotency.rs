//! Idempotent retries (`Idempotency-Key`): the identity a keyed write takes, and the
//! answers a node remembers to give a repeat.
//!
//! Invariant: a write carrying key `K` takes an identity that is a pure function of
//! `K`, the request (method and key name) and the timestamp of the session's context
//! ([`write_id`]). Every attempt of one request therefore is one write, wherever it
//! lands: replicas merge two copies of one write into one (`causal::version::merge`),
//! and a write that superseded the first attempt (its timestamp is above the first
//! attempt's, which is in its causal past) also supersedes every later attempt. That
//! holds while the session's context is younger than the window; an older one gets an
//! ordinary identity (the request is new). Tombstones are kept at least twice the
//! window (see `replication`), so a retry cannot land on a key whose delete was
//! forgotten.
//!
//! The identity's timestamp is the context's plus one: above everything the session
//! has seen (its causal past), so the write beats its past; but it is ordered by the
//! session's last answer rather than by when it arrived, so a write another session
//! made since, without seeing it, may win over it.
//!
//! A replica also remembers the idempotent writes it applied, by identity, so a repeat
//! that reaches it (directly or forwarded) is answered as the first attempt was.
//!
//! [`Answers`] remembers, per key, the first attempt's request and answer on the node
//! that served it, for the window (and at most [`MAX_REMEMBERED`] of them), so a repeat
//! there gets the same answer; then it forgets them.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Default time a key is remembered.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);

/// Most answers a node remembers at once (the oldest are forgotten first).
pub const MAX_REMEMBERED: usize = 100_000;

pub use causeway_core::identity::{is_idempotent, valid_key, write_id};

/// What a remembered request was (method and key name, or path), and how it was
/// answered (`A`: whatever the caller needs to answer again).
struct Remembered<A> {
    what: String,
    answer: A,
}

/// How a request with a key stands against what this node remembers.
#[derive(Debug)]
pub enum Seen<A> {
    /// Not seen here (or forgotten): serve it.
    New,
    /// The same request: answer as the first time.
    Repeat(A),
    /// The key named another request.
    Reused,
}

/// Answers remembered for the window, at most [`MAX_REMEMBERED`].
pub struct Answers<A> {
    window: Duration,
    inner: Mutex<Inner<A>>,
}

struct Inner<A> {
    by_key: HashMap<String, (Instant, Remembered<A>)>,
    /// Keys in the order they were remembered, to forget the oldest.
    order: VecDeque<(Instant, String)>,
}

impl<A: Clone> Answers<A> {
    pub fn new(window: Duration) -> Answers<A> {
        Answers {
            window,
            inner: Mutex::new(Inner {
                by_key: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// How request `what` with `key` stands at `now`.
    pub fn seen(&self, key: &str, what: &str, now: Instant) -> Seen<A> {
        let mut inner = self.inner.lock();
        self.forget_old(&mut inner, now);
        match inner.by_key.get(key) {
            None => Seen::New,
            Some((_, r)) if r.what == what => Seen::Repeat(r.answer.clone()),
            Some(_) => Seen::Reused,
        }
    }

    /// Remembers the first answer to `what` with `key` (a later one does not replace it).
    pub fn remember(&self, key: &str, what: &str, answer: A, now: Instant) {
        let mut inner = self.inner.lock();
        self.forget_old(&mut inner, now);
        if inner.by_key.contains_key(key) {
            return;
        }
        while inner.by_key.len() >= MAX_REMEMBERED {
            let Some((_, k)) = inner.order.pop_front() else {
                break;
            };
            inner.by_key.remove(&k);
        }
        let r = Remembered {
            what: what.to_string(),
            answer,
        };
        inner.by_key.insert(key.to_string(), (now, r));
        inner.order.push_back((now, key.to_string()));
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn forget_old(&self, inner: &mut Inner<A>, now: Instant) {
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) <= self.window {
                break;
            }
            let (at, k) = inner.order.pop_front().expect("front exists");
            if inner.by_key.get(&k).is_some_and(|(t, _)| *t == at) {
                inner.by_key.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> u16 {
        201
    }

    #[test]
    fn a_repeat_is_recognised_for_the_window_and_a_reuse_is_not_a_repeat() {
        let answers = Answers::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(matches!(answers.seen("k", "PUT a", t0), Seen::New));
        answers.remember("k", "PUT a", answer(), t0);
        assert!(matches!(
            answers.seen("k", "PUT a", t0 + Duration::from_secs(9)),
            Seen::Repeat(_)
        ));
        assert!(matches!(answers.seen("k", "PUT b", t0), Seen::Reused));
        assert!(matches!(
            answers.seen("k", "PUT a", t0 + Duration::from_secs(11)),
            Seen::New
        ));
        assert!(answers.is_empty(), "forgotten: its memory is reclaimed");
    }
}
