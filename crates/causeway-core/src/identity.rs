//! The identity of a write that carries an idempotency key.
//!
//! Invariant: a write carrying key `K` takes an identity that is a pure function of
//! `K`, the request (method and key name, or a batch op's index) and the timestamp of
//! the session's context ([`write_id`]); every attempt of one request is therefore one
//! write, wherever it lands (replicas merge two copies of one write into one,
//! [`crate::causal::version::merge`]). A context older than the window gets no such
//! identity: the request is treated as new.

use crate::causal::WriteId;
use std::time::Duration;

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
}
