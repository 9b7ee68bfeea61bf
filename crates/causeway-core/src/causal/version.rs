//! Stored versions and the merge that makes replicas converge.
//!
//! A [`Version`] is what a replica holds for one key: the value (or a tombstone), the
//! identity of the write that produced it ([`WriteId`]), the replication [`Dot`] under
//! which replicas track it, and its causal past ([`Deps`]).
//!
//! Merge law: of two versions of a key the one with the greater [`WriteId`] wins
//! (`ts`, then origin, then counter: a total order), and of two copies of one write
//! (same id, applied on two replicas) the one with the greater dot. Write timestamps are hybrid
//! logical clocks that every write raises above everything it depends on, so a write
//! always beats every write in its causal past; concurrent writes are ordered by
//! timestamp, deterministically on every replica. Merge is therefore a maximum over a
//! total order: commutative, associative and idempotent (property-tested below).

use super::clock::{Deps, Dot, ShardNo};
use serde::{Deserialize, Serialize};

/// A client value: a JSON string or a JSON number, kept as it came, or such a value
/// that expires.
///
/// A number is kept as its JSON text, exactly as the client sent it (`1e2`, `10.50`,
/// `-0`, 30 digits...), never as an `f64`: build one with [`Value::number`], which
/// checks the JSON number grammar, from the request's own text (see
/// `api::raw`). There is deliberately no conversion from a parsed
/// `serde_json::Value`, whose numbers have already lost their text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Str(Box<str>),
    /// The number's JSON text, so it is handed back as it came.
    Num(Box<str>),
    /// A value written with a `ttl`: the client's value (never itself `Expiring`) and
    /// the timestamp, in [`WriteId::ts`] units, from which the write is gone. It is the
    /// write's own timestamp plus the ttl, so every replica decides alike. (Last
    /// variant: the encodings of the others are unchanged.)
    Expiring(Box<Value>, u64),
}

/// Logical bits below the milliseconds in a timestamp (keeps timestamps under 2^53,
/// exact in every JSON client).
pub const HLC_SHIFT: u32 = 10;

/// Timestamps stay below 2^53 (exact in every JSON client, for some 278 years of wall
/// clock); a context claiming more than that was not issued by a Causeway node.
pub const MAX_TS: u64 = 1 << 53;

/// Milliseconds as a difference of [`WriteId::ts`] (hybrid timestamps keep a logical
/// counter in their low bits).
pub fn ts_of_ms(ms: u64) -> u64 {
    ms.saturating_mul(1 << HLC_SHIFT)
}

/// Whole seconds from timestamp `now` to `until` (0 when past).
pub fn secs_between(now: u64, until: u64) -> u64 {
    (until.saturating_sub(now) >> HLC_SHIFT) / 1000
}

impl Value {
    /// A number value from its exact JSON text; `None` unless `text` is a JSON number
    /// (RFC 8259: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, nothing around it).
    pub fn number(text: &str) -> Option<Value> {
        is_json_number(text).then(|| Value::Num(text.into()))
    }

    /// `value` expiring at timestamp `at`.
    pub fn expiring(value: Value, at: u64) -> Value {
        Value::Expiring(Box::new(value.client().clone()), at)
    }

    /// The value the client wrote (without its expiry).
    pub fn client(&self) -> &Value {
        match self {
            Value::Expiring(v, _) => v,
            v => v,
        }
    }

    /// When the value expires, if it does.
    pub fn expires(&self) -> Option<u64> {
        match self {
            Value::Expiring(_, at) => Some(*at),
            _ => None,
        }
    }

    /// Bytes the value occupies (for size limits).
    pub fn len(&self) -> usize {
        match self {
            Value::Str(s) | Value::Num(s) => s.len(),
            Value::Expiring(v, _) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `text` is exactly one JSON number (RFC 8259, section 6).
pub fn is_json_number(text: &str) -> bool {
    fn digits(b: &[u8]) -> usize {
        b.iter().take_while(|c| c.is_ascii_digit()).count()
    }
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(&b[i..]),
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        let n = digits(&b[i + 1..]);
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(&b[i..]);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == b.len()
}

/// The identity of one client write; its order is the merge order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WriteId {
    /// Hybrid logical timestamp: `unix_ms << 10 | logical`.
    pub ts: u64,
    pub origin: u64,
    pub counter: u64,
}

/// One key's state on a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub id: WriteId,
    /// The replication dot. Equal to the write's own origin and counter, except for a
    /// version a replica received through resharding, which it re-dots as its own so
    /// that ordinary replication carries it to its shard peers.
    pub dot: Dot,
    /// The view epoch in which `past` was recorded; `past` means nothing in another one.
    pub epoch: u64,
    /// Writes this version supersedes (its causal past). Its own dot is implicit: it
    /// is not stored here, which saves an allocation per key in the common case of a
    /// write whose client context was empty.
    pub past: Deps,
    /// `None` is a tombstone.
    pub value: Option<Value>,
}

impl Version {
    /// A delete (or a write whose expiry was reclaimed). An expired write that has not
    /// been reclaimed yet is not a tombstone: see [`Version::live_value`].
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The client's value at timestamp `now`: `None` for a delete or an expired write.
    pub fn live_value(&self, now: u64) -> Option<&Value> {
        let v = self.value.as_ref()?;
        match v.expires() {
            Some(at) if now >= at => None,
            _ => Some(v.client()),
        }
    }

    /// True when the key exists at `now` by this version.
    pub fn is_live(&self, now: u64) -> bool {
        self.live_value(now).is_some()
    }

    /// When this version's write expires, if it does.
    pub fn expires(&self) -> Option<u64> {
        self.value.as_ref().and_then(Value::expires)
    }

    /// The same write, its expired value reclaimed: a tombstone with the write's
    /// identity, dot and past (every replica reaches the same one).
    pub fn reclaimed(&self) -> Version {
        Version {
            value: None,
            past: self.past.clone(),
            ..*self
        }
    }

    /// True when this version supersedes write `counter` of `origin`, a write of
    /// `shard` (the shard of this version's key, in this version's epoch).
    pub fn supersedes(&self, shard: ShardNo, origin: u64, counter: u64) -> bool {
        (self.dot.origin == origin && self.dot.counter >= counter)
            || self
                .past
                .shard(shard)
                .is_some_and(|p| p.get(origin) >= counter)
    }

    /// Records that this version also supersedes `other` (and its past), when both
    /// belong to the same epoch.
    pub fn absorb(&mut self, shard: ShardNo, other: &Version) {
        if other.epoch != self.epoch {
            return;
        }
        self.past.join(&other.past);
        if !self.supersedes(shard, other.dot.origin, other.dot.counter) {
            self.past.add(shard, other.dot);
        }
    }
}

/// Merges `incoming` into `current` (versions of one key of `shard`); returns the
/// surviving version, or `None` when `current` already wins (nothing to change).
pub fn merge(current: Option<&Version>, incoming: &Version, shard: ShardNo) -> Option<Version> {
    match current {
        None => Some(incoming.clone()),
        // Equal ids are two copies of one forwarded write (see
        // `transport::Forwarding::write_id`); the dot settles which copy stays.
        Some(cur)
            if (incoming.id, incoming.dot) > (cur.id, cur.dot)
                || (crate::plant::active(crate::plant::Plant::MergeTieByArrival)
                    && incoming.id.ts == cur.id.ts
                    && incoming.id != cur.id) =>
        {
            let mut v = incoming.clone();
            // The survivor supersedes the loser too; keep that knowledge.
            v.absorb(shard, cur);
            Some(v)
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version() -> impl Strategy<Value = Version> {
        // A write id names one write, so the value is a function of the id.
        (0u64..4, 0u64..3, 1u64..4).prop_map(|(ts, o, c)| {
            let v = ((ts + o + c) % 3 != 0).then(|| format!("{ts}-{o}-{c}"));
            let mut past = Deps::new();
            past.add(
                1,
                Dot {
                    origin: o,
                    counter: c,
                },
            );
            Version {
                id: WriteId {
                    ts,
                    origin: o,
                    counter: c,
                },
                dot: Dot {
                    origin: o,
                    counter: c,
                },
                epoch: 0,
                past,
                value: v.map(|v| Value::Str(v.into())),
            }
        })
    }

    fn m(a: &Version, b: &Version) -> Version {
        merge(Some(a), b, 1).unwrap_or_else(|| a.clone())
    }

    proptest! {
        #[test]
        fn merge_winner_is_order_independent(a in version(), b in version(), c in version()) {
            prop_assert_eq!(m(&a, &b).id, m(&b, &a).id);
            prop_assert_eq!(m(&m(&a, &b), &c).id, m(&a, &m(&b, &c)).id);
            prop_assert_eq!(m(&a, &a), a.clone());
            prop_assert_eq!(m(&m(&a, &b), &c).value, m(&m(&c, &b), &a).value);
        }
    }

    #[test]
    fn causal_successor_wins() {
        let old = Version {
            id: WriteId {
                ts: 10,
                origin: 9,
                counter: 1,
            },
            dot: Dot {
                origin: 9,
                counter: 1,
            },
            epoch: 1,
            past: Deps::new(),
            value: Some(Value::Str("old".into())),
        };
        let mut new = old.clone();
        new.id = WriteId {
            ts: 11,
            origin: 1,
            counter: 1,
        };
        new.value = None;
        assert_eq!(merge(Some(&old), &new, 1).unwrap().value, None);
        assert!(
            merge(Some(&new), &old, 1).is_none(),
            "an older write never replaces a newer one"
        );
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        for text in [
            "0",
            "-0",
            "10",
            "1e2",
            "1E+2",
            "1e-2",
            "10.50",
            "0.1e-7",
            "-12.5E07",
            "123456789012345678901234567890",
            "1e400",
        ] {
            assert_eq!(Value::number(text), Some(Value::Num(text.into())), "{text}");
        }
    }

    #[test]
    fn only_json_numbers_are_numbers() {
        for text in [
            "",
            "-",
            "01",
            "-01",
            "00",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "1E-",
            "e2",
            "1.e2",
            "0x10",
            "NaN",
            "Infinity",
            "-Infinity",
            " 1",
            "1 ",
            "1,",
            "1e2.5",
            "1..2",
            "--1",
            "\"1\"",
            "true",
            "null",
            "1_000",
            "١",
        ] {
            assert_eq!(Value::number(text), None, "{text:?}");
        }
    }

    proptest! {
        /// The grammar check agrees with serde_json on what is one JSON number.
        #[test]
        fn number_grammar_agrees_with_serde_json(text in "[-+0-9.eE]{1,12}") {
            let json = serde_json::from_str::<serde_json::Value>(&text);
            // serde_json stops at a number too large for an f64, before it sees what
            // follows (`1E400+`): it cannot judge those.
            prop_assume!(!json
                .as_ref()
                .is_err_and(|e| e.to_string().contains("out of range")));
            let is_number = matches!(json, Ok(serde_json::Value::Number(_)));
            prop_assert_eq!(is_json_number(&text), is_number, "{}", text);
        }
    }
}
