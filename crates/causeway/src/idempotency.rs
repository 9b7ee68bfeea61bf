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

use crate::causal::WriteId;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Default time a key is remembered.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);

/// Most answers a node remembers at once (the oldest are forgotten first).
pub const MAX_REMEMBERED: usize = 100_000;

/// Marks an origin as an idempotent write's (node origins are random 64-bit numbers;
/// a forwarded write's too).
const IDEMPOTENT_ORIGIN: u64 = 1 << 63;

/// True for the identity of an idempotent write (made by [`write_id`]).
pub fn is_idempotent(id: &WriteId) -> bool {
    id.origin & IDEMPOTENT_ORIGIN != 0 && id.counter == 0
}

/// True for a valid key: 1 to 255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The identity of a write with idempotency key `key`, for request `what` (method and
/// key name: an attempt through `/kvs` is the same request; a batch names each op),
/// made with a context whose timestamp is `ctx_ts`; `None` when that context is older
/// than `window` at `now` (timestamps in `WriteId::ts` units), or names a time no node
/// could issue. `step` orders writes of one request (a batch's op index): a later one
/// has a later timestamp.
pub fn write_id(
    key: &str,
    what: &str,
    step: u64,
    ctx_ts: u64,
    now: u64,
    window: Duration,
) -> Option<WriteId> {
    let window = crate::causal::version::ts_of_ms(window.as_millis() as u64);
    if ctx_ts == 0
        || ctx_ts >= crate::causal::version::MAX_TS
        || now.saturating_sub(ctx_ts) > window
    {
        return None;
    }
    let h = crate::placement::key_hash(&format!("{}\u{0}{what}", key));
    Some(WriteId {
        ts: ctx_ts + 1 + step,
        origin: IDEMPOTENT_ORIGIN | (h >> 1),
        counter: 0,
    })
}

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

    const MS: u64 = 1 << crate::causal::version::HLC_SHIFT;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(valid_key("a"));
        assert!(valid_key(&"~".repeat(255)));
        for bad in ["", " a", "a b", "é", "tab\t"] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        assert!(!valid_key(&"x".repeat(256)));
    }

    #[test]
    fn every_attempt_of_a_request_has_one_identity_above_the_sessions_past() {
        let w = Duration::from_secs(600);
        let ctx_ts = 1_000_000 * MS;
        let a = write_id("k1", "PUT x", 0, ctx_ts, ctx_ts + 5 * MS, w).unwrap();
        let b = write_id("k1", "PUT x", 0, ctx_ts, ctx_ts + 90_000 * MS, w).unwrap();
        assert_eq!(a, b, "the arrival time does not matter");
        assert!(a.ts > ctx_ts);
        assert!(is_idempotent(&a));
        assert_ne!(a, write_id("k2", "PUT x", 0, ctx_ts, ctx_ts, w).unwrap());
        assert_ne!(a, write_id("k1", "PUT y", 0, ctx_ts, ctx_ts, w).unwrap());
        assert_ne!(
            a,
            write_id("k1", "PUT x", 0, ctx_ts + 1, ctx_ts, w).unwrap()
        );
        // The steps of one request are ordered.
        let later = write_id("k1", "BATCH 3 x", 3, ctx_ts, ctx_ts, w).unwrap();
        let earlier = write_id("k1", "BATCH 1 x", 1, ctx_ts, ctx_ts, w).unwrap();
        assert!(later > earlier && earlier > a);
        // A context older than the window, empty, or impossible: a new request.
        assert_eq!(
            write_id("k1", "PUT x", 0, ctx_ts, ctx_ts + 600_001 * MS, w),
            None
        );
        assert_eq!(write_id("k1", "PUT x", 0, 0, 5, w), None);
        assert_eq!(write_id("k1", "PUT x", 0, u64::MAX - 1, u64::MAX, w), None);
    }

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
