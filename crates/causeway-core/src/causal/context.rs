//! The client's `causal-context` and the read-safety rule.
//!
//! A [`Context`] is what a client has seen or depended on: the view epoch it was
//! issued in, the largest write timestamp it has seen, its dependencies per shard
//! (`deps`: for each origin, every write numbered up to a counter, whatever key it
//! wrote), and a few single writes above those prefixes whose key it knows
//! ([`Recent`]: the writes it made or read last). On the wire it is an opaque JSON
//! object: `{"epoch": 3, "ts": 123, "deps": {"1": {"9f2c...": 5}}}`, plus
//! `"recent": [[shard, "origin", counter, keyhash, live], ...]` when there are any.
//! Anything else a client sends (`{}`, a context of the store Causeway replaces,
//! garbage) reads as "no history": a context can only narrow what a replica may
//! answer, never inject data.
//!
//! Read rule ([`read_is_safe`]), per key as the API states it: a read of key `k` of
//! shard `s` with context `c` is safe on a replica when
//! - for every origin `o` in `c.deps[s]`, the replica's clock covers `c.deps[s][o]` or
//!   its version of `k` already has that write in its past (a prefix names no keys, so
//!   any write of the shard counts), and
//! - for every recent write of `c` in shard `s` whose key hash is `k`'s, the replica's
//!   clock covers it or its version of `k` supersedes it. Recent writes of other keys
//!   do not matter: their own causal past is already in `c`.
//!
//! Watch rule ([`has_seen`]): a watch of `k` has news for context `c` when the
//! replica's version of `k` is a write `c` has not seen (its dot is neither in
//! `c.deps[s]` nor named by `c`'s recent write of `k`), or when the replica holds no
//! version at all of a key `c` last saw live (its delete was collected since).
//!
//! Epochs: a context is issued in a view epoch and its dependencies name writes by
//! the dots of that view. Seen in a later view ([`Context::in_epoch`]) they become one
//! marker, [`PRIOR`]: "everything before this view". A replica satisfies it once its
//! shard is complete: every old owner handed its keys over and every shard peer's
//! state after that is covered ([`epochs_allow`]). Versions that crossed a view
//! change carry the same marker as their past ([`prior_past`]), so whoever reads them
//! inherits it. A context from a later view than the replica's is not served there.
//!
//! Invariants: a recent write is never covered by `deps` (it would say nothing more),
//! there is at most one per key (a later write or read of the key supersedes the
//! earlier one), and there are at most [`MAX_RECENT`]; past the bound the oldest fold
//! into `deps`, which is conservative. Key hashes are 32 bits: a collision only makes
//! the rule stricter.

use super::clock::{Deps, Dot, ShardNo, VClock};
use super::version::Version;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value as Json};
use sha2::Sha256;

/// Signs and verifies contexts with the cluster secret, so that a client can hand back
/// only contexts the cluster issued: a forged dependency could otherwise travel into
/// stored versions and make other clients' reads unsatisfiable.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(secret: &str) -> Signer {
        Signer {
            key: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self, ctx: &Context) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&postcard::to_allocvec(ctx).expect("contexts always encode"));
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Context {
    pub epoch: u64,
    pub ts: u64,
    pub deps: Deps,
    /// Single writes above `deps` whose key the client knows (see the module docs).
    pub recent: Vec<Recent>,
}

/// One write a client depends on, with the key it wrote (as a 32-bit hash) and
/// whether it left the key live (a PUT) or deleted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recent {
    pub shard: ShardNo,
    pub dot: Dot,
    pub key: u32,
    pub live: bool,
}

/// No shard has this number: dependencies filed under it are markers, not writes.
pub const NO_SHARD: ShardNo = 0;

/// Marker: depends on writes of an earlier view (see [`Context::in_epoch`]).
pub const PRIOR: Dot = Dot {
    origin: u64::MAX,
    counter: 1,
};

/// Marker: depends on writes of a later view than the replica's.
pub const LATER: Dot = Dot {
    origin: u64::MAX - 1,
    counter: 1,
};

/// The causal past of a version that crossed a view change (handed over, or kept and
/// renumbered): whatever it followed happened before this view.
pub fn prior_past() -> Deps {
    let mut d = Deps::new();
    d.add(NO_SHARD, PRIOR);
    d
}

/// Cross-epoch rule (see the module docs): may a replica serve `ctx` (already in the
/// replica's epoch), given whether its shard is `complete` (it has received every key
/// the old owners of its shard held when they switched to this view)?
pub fn epochs_allow(ctx: &Context, complete: bool) -> bool {
    match ctx.deps.shard(NO_SHARD) {
        None => true,
        Some(m) => m.get(LATER.origin) == 0 && (m.get(PRIOR.origin) == 0 || complete),
    }
}

/// Most recent writes a context names individually.
pub const MAX_RECENT: usize = 8;

/// The 32-bit hash a context names a key by.
pub fn key_tag(key: &str) -> u32 {
    (crate::placement::key_hash(key) >> 32) as u32
}

impl Context {
    /// Reads a client context; anything unrecognised is an empty context.
    pub fn from_json(v: Option<&Json>) -> Context {
        Self::try_from_json(v).unwrap_or_default()
    }

    /// Reads a client context that must carry a valid signature; one that does not
    /// (forged, altered, or issued by a cluster with another secret) is an empty context.
    pub fn from_signed_json(v: Option<&Json>, signer: Option<&Signer>) -> Context {
        let Some(signer) = signer else {
            return Self::from_json(v);
        };
        let Some(ctx) = Self::try_from_json(v) else {
            return Context::default();
        };
        let sig = v.and_then(|v| v.get("sig")).and_then(Json::as_str);
        match sig {
            Some(sig) if constant_time_eq(sig.as_bytes(), signer.mac(&ctx).as_bytes()) => ctx,
            _ => Context::default(),
        }
    }

    /// The context in its wire form, serialised straight into a response body (the
    /// same object [`Context::to_signed_json`] builds, without the intermediate tree).
    pub fn wire(&self, signer: Option<&Signer>) -> WireContext<'_> {
        WireContext {
            ctx: self,
            sig: signer.map(|s| s.mac(self)),
        }
    }

    /// The context as JSON, signed when the cluster has a secret.
    pub fn to_signed_json(&self, signer: Option<&Signer>) -> Json {
        let mut j = self.to_json();
        if let (Some(signer), Json::Object(m)) = (signer, &mut j) {
            m.insert("sig".into(), Json::String(signer.mac(self)));
        }
        j
    }

    fn try_from_json(v: Option<&Json>) -> Option<Context> {
        let obj = v?.as_object()?;
        let epoch = obj.get("epoch")?.as_u64()?;
        let ts = obj.get("ts")?.as_u64()?;
        let mut deps = Deps::new();
        for (shard, clock) in obj.get("deps")?.as_object()? {
            let shard: ShardNo = shard.parse().ok()?;
            let clock: VClock = clock
                .as_object()?
                .iter()
                .map(|(o, n)| Some((u64::from_str_radix(o, 16).ok()?, n.as_u64()?)))
                .collect::<Option<_>>()?;
            deps.join_shard(shard, &clock);
        }
        let mut recent = Vec::new();
        if let Some(r) = obj.get("recent") {
            for e in r.as_array()? {
                let e = e.as_array()?;
                let [shard, origin, counter, key, live] = e.as_slice() else {
                    return None;
                };
                recent.push(Recent {
                    shard: ShardNo::try_from(shard.as_u64()?).ok()?,
                    dot: Dot {
                        origin: u64::from_str_radix(origin.as_str()?, 16).ok()?,
                        counter: counter.as_u64()?,
                    },
                    key: u32::try_from(key.as_u64()?).ok()?,
                    live: live.as_u64()? == 1,
                });
            }
        }
        let mut ctx = Context {
            epoch,
            ts,
            deps,
            recent,
        };
        ctx.tidy();
        Some(ctx)
    }

    pub fn to_json(&self) -> Json {
        let mut deps = Map::new();
        for (shard, clock) in self.deps.iter() {
            let c: Map<String, Json> = clock
                .iter()
                .map(|(o, n)| (format!("{o:x}"), Json::from(n)))
                .collect();
            deps.insert(shard.to_string(), Json::Object(c));
        }
        let mut m = Map::new();
        m.insert("epoch".into(), Json::from(self.epoch));
        m.insert("ts".into(), Json::from(self.ts));
        m.insert("deps".into(), Json::Object(deps));
        if !self.recent.is_empty() {
            let r = self.recent.iter().map(recent_json).collect();
            m.insert("recent".into(), Json::Array(r));
        }
        Json::Object(m)
    }

    /// The context as seen in `epoch` (see the module docs on epochs). Dependencies
    /// of an earlier view cannot be named in this one: they become the [`PRIOR`]
    /// marker, "everything from before this view", which only a replica whose shard has
    /// received all its old owners' keys satisfies. A context of a later view than
    /// `epoch` gets the [`LATER`] marker, which no replica of `epoch` satisfies.
    pub fn in_epoch(&self, epoch: u64) -> Context {
        self.as_marker(epoch, if self.epoch < epoch { PRIOR } else { LATER })
    }

    /// This context seen in view `epoch` by a replica whose own line of views holds the
    /// context's (see `crate::replica::knows_view`): whatever it names happened before
    /// that view, the marker [`PRIOR`], even when the context's epoch is the larger one
    /// (a racing view this replica installed before the one that won).
    pub fn before(&self, epoch: u64) -> Context {
        self.as_marker(epoch, PRIOR)
    }

    /// This context in view `epoch` (itself when it is of that view): whatever it
    /// names becomes `marker`.
    fn as_marker(&self, epoch: u64, marker: Dot) -> Context {
        if self.epoch == epoch {
            return self.clone();
        }
        let mut deps = Deps::new();
        if !self.deps.is_empty() || !self.recent.is_empty() {
            deps.add(NO_SHARD, marker);
        }
        Context {
            epoch,
            ts: self.ts,
            deps,
            recent: Vec::new(),
        }
    }

    /// Adds what the client learns from reading `version` of `key`, of `shard`.
    pub fn observe(&mut self, version: &Version, shard: ShardNo, key: &str) {
        self.ts = self.ts.max(version.id.ts);
        if version.epoch == self.epoch {
            self.deps.join(&version.past);
            // A version's past leaves out the earlier writes of its own origin: its dot
            // implies them (see `changes::Changes::write`). They are in the reader's
            // past too, whatever keys they wrote.
            if version.dot.counter > 1 {
                let before = Dot {
                    origin: version.dot.origin,
                    counter: version.dot.counter - 1,
                };
                self.deps.add(shard, before);
            }
            self.add_recent(shard, version.dot, key, !version.is_tombstone());
        } else if version.epoch < self.epoch {
            // Written before this view (kept as it was by a replica that stayed): its
            // past cannot be named here, only as the marker.
            self.deps.add(NO_SHARD, PRIOR);
        }
    }

    /// Adds a write of `key` (in `shard`) that the client now depends on: one it made,
    /// or one it read. It supersedes the client's earlier recent write of that key.
    pub fn add_recent(&mut self, shard: ShardNo, dot: Dot, key: &str, live: bool) {
        self.add_recent_tagged(shard, dot, key_tag(key), live);
    }

    /// [`Context::add_recent`] with the key's tag ([`key_tag`]) already computed.
    pub fn add_recent_tagged(&mut self, shard: ShardNo, dot: Dot, key: u32, live: bool) {
        self.recent.retain(|r| !(r.shard == shard && r.key == key));
        self.recent.push(Recent {
            shard,
            dot,
            key,
            live,
        });
        self.tidy();
    }

    /// Joins what `other` has seen or depended on (both issued to one client, e.g. by
    /// ops of one batch that ran in parallel). Contexts of different epochs: the later
    /// one is kept (the earlier one's dependencies mean nothing in its view). Two
    /// recent writes of one key, one from each side, are both kept as prefixes: which
    /// supersedes the other is not known here, and requiring both is safe.
    pub fn join(&mut self, other: &Context) {
        if other.epoch != self.epoch {
            if other.epoch > self.epoch {
                let ts = self.ts.max(other.ts);
                *self = other.clone();
                self.ts = ts;
            } else {
                self.ts = self.ts.max(other.ts);
            }
            return;
        }
        self.ts = self.ts.max(other.ts);
        self.deps.join(&other.deps);
        for r in &other.recent {
            match self
                .recent
                .iter()
                .position(|m| m.shard == r.shard && m.key == r.key)
            {
                Some(i) if self.recent[i] == *r => {}
                Some(i) => {
                    let mine = self.recent.remove(i);
                    self.deps.add(mine.shard, mine.dot);
                    self.deps.add(r.shard, r.dot);
                }
                None => self.recent.push(*r),
            }
        }
        self.tidy();
    }

    /// The recent write of `key` in `shard` the client knows of, if any.
    pub fn recent_of(&self, shard: ShardNo, key: &str) -> Option<Recent> {
        let key = key_tag(key);
        self.recent
            .iter()
            .copied()
            .find(|r| r.shard == shard && r.key == key)
    }

    /// Every dependency as prefixes (recent writes folded in): what a write made with
    /// this context records as its causal past.
    pub fn all_deps(&self) -> Deps {
        let mut d = self.deps.clone();
        for r in &self.recent {
            d.add(r.shard, r.dot);
        }
        d
    }

    /// Restores the invariants (see the module docs): drops recent writes the prefixes
    /// cover, and folds the oldest into the prefixes past [`MAX_RECENT`].
    fn tidy(&mut self) {
        let deps = &self.deps;
        self.recent.retain(|r| {
            deps.shard(r.shard)
                .is_none_or(|c| c.get(r.dot.origin) < r.dot.counter)
        });
        while self.recent.len() > MAX_RECENT {
            let r = self.recent.remove(0);
            self.deps.add(r.shard, r.dot);
            let deps = &self.deps;
            self.recent.retain(|r| {
                deps.shard(r.shard)
                    .is_none_or(|c| c.get(r.dot.origin) < r.dot.counter)
            });
        }
    }
}

fn recent_json(r: &Recent) -> Json {
    serde_json::json!([
        r.shard,
        format!("{:x}", r.dot.origin),
        r.dot.counter,
        r.key,
        u8::from(r.live)
    ])
}

/// An origin as the wire writes it (lower-case hex), without building the string.
struct Hex(u64);

impl serde::Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(&format_args!("{:x}", self.0))
    }
}

/// [`recent_json`]'s array, written straight to the serializer.
struct RecentEntry<'a>(&'a Recent);

impl serde::Serialize for RecentEntry<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        (
            r.shard,
            Hex(r.dot.origin),
            r.dot.counter,
            r.key,
            u8::from(r.live),
        )
            .serialize(ser)
    }
}

/// See [`Context::wire`].
pub struct WireContext<'a> {
    ctx: &'a Context,
    sig: Option<String>,
}

impl serde::Serialize for WireContext<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Clock<'a>(&'a VClock);
        impl serde::Serialize for Clock<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.collect_map(self.0.iter().map(|(o, n)| (Hex(o), n)))
            }
        }
        struct DepsOut<'a>(&'a Deps);
        impl serde::Serialize for DepsOut<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.collect_map(self.0.iter().map(|(s, c)| (s, Clock(c))))
            }
        }
        struct RecentOut<'a>(&'a [Recent]);
        impl serde::Serialize for RecentOut<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.collect_seq(self.0.iter().map(RecentEntry))
            }
        }
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("deps", &DepsOut(&self.ctx.deps))?;
        m.serialize_entry("epoch", &self.ctx.epoch)?;
        if !self.ctx.recent.is_empty() {
            m.serialize_entry("recent", &RecentOut(&self.ctx.recent))?;
        }
        if let Some(sig) = &self.sig {
            m.serialize_entry("sig", sig)?;
        }
        m.serialize_entry("ts", &self.ctx.ts)?;
        m.end()
    }
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The read rule (see the module docs) for a read of `key`, of `shard`. `ctx` must
/// already be in the replica's epoch.
pub fn read_is_safe(
    ctx: &Context,
    shard: ShardNo,
    key: &str,
    clock: &VClock,
    local: Option<&Version>,
) -> bool {
    if crate::plant::active(crate::plant::Plant::ReadRuleSkipped) {
        return true;
    }
    let local = local.filter(|v| v.epoch == ctx.epoch);
    let has = |origin: u64, counter: u64| {
        clock.get(origin) >= counter || local.is_some_and(|v| v.supersedes(shard, origin, counter))
    };
    let prefixes = ctx
        .deps
        .shard(shard)
        .is_none_or(|needed| needed.iter().all(|(o, n)| has(o, n)));
    let tag = key_tag(key);
    prefixes
        && ctx
            .recent
            .iter()
            .filter(|r| r.shard == shard && r.key == tag)
            .all(|r| has(r.dot.origin, r.dot.counter))
}

/// The watch rule (see the module docs): true when `ctx` (already in the replica's
/// epoch) has seen `local`, this replica's version of `key` of `shard`, so a watch has
/// nothing new to report. A version of another epoch is always news: `ctx` cannot name
/// it (after a view change a watch may thus answer once with a value it had seen).
pub fn has_seen(ctx: &Context, shard: ShardNo, key: &str, local: Option<&Version>) -> bool {
    let recent = ctx.recent_of(shard, key);
    let Some(v) = local else {
        return !recent.is_some_and(|r| r.live);
    };
    if v.epoch != ctx.epoch {
        return false;
    }
    let in_deps = ctx
        .deps
        .shard(shard)
        .is_some_and(|d| d.get(v.dot.origin) >= v.dot.counter);
    // Writes of one origin to one key follow each other: a later one superseded it.
    in_deps
        || recent.is_some_and(|r| r.dot.origin == v.dot.origin && r.dot.counter >= v.dot.counter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::{Dot, Value, WriteId};

    fn ctx(shard: ShardNo, origin: u64, counter: u64) -> Context {
        let mut deps = Deps::new();
        deps.add(shard, Dot { origin, counter });
        Context {
            epoch: 1,
            ts: 0,
            deps,
            recent: Vec::new(),
        }
    }

    fn version(past: Deps) -> Version {
        Version {
            id: WriteId {
                ts: 1,
                origin: 2,
                counter: 1,
            },
            dot: Dot {
                origin: 2,
                counter: 1,
            },
            epoch: 1,
            past,
            value: Some(Value::Str("v".into())),
        }
    }

    #[test]
    fn a_context_from_another_view_becomes_a_marker_only_a_complete_replica_satisfies() {
        let old = ctx(1, 5, 3); // epoch 1
        let same = old.in_epoch(1);
        assert_eq!(same, old);
        assert!(epochs_allow(&same, false));
        // Seen in a later view: the marker, and nothing else to check.
        let later = old.in_epoch(2);
        assert_eq!((later.epoch, later.ts), (2, old.ts));
        assert_eq!(later.deps, prior_past());
        assert!(later.recent.is_empty());
        assert!(!epochs_allow(&later, false));
        assert!(epochs_allow(&later, true));
        // An empty context of another view depends on nothing.
        let empty = Context {
            epoch: 1,
            ..Context::default()
        };
        assert!(epochs_allow(&empty.in_epoch(2), false));
        // A context of a later view than the replica's: never served there.
        let ahead = ctx(1, 5, 3);
        let behind = Context { epoch: 3, ..ahead }.in_epoch(2);
        assert!(!epochs_allow(&behind, true));
        // Reading a version that crossed the change hands the marker on.
        let mut reader = Context {
            epoch: 2,
            ..Context::default()
        };
        let mut crossed = version(prior_past());
        crossed.epoch = 2;
        reader.observe(&crossed, 1, "k");
        assert!(!epochs_allow(&reader, false));
        // So does a version kept from the earlier view as it was.
        let mut reader = Context {
            epoch: 2,
            ..Context::default()
        };
        reader.observe(&version(Deps::new()), 1, "k");
        assert!(!epochs_allow(&reader, false) && epochs_allow(&reader, true));
        // The marker survives the JSON round trip a client makes.
        assert_eq!(Context::from_json(Some(&later.to_json())), later);
    }

    #[test]
    fn a_watch_has_news_only_of_writes_the_context_has_not_seen() {
        let v = version(Deps::new()); // dot (2, 1), epoch 1
                                      // An empty context has seen nothing: an existing key is news, a missing one not.
        let empty = Context {
            epoch: 1,
            ..Context::default()
        };
        assert!(!has_seen(&empty, 1, "k", Some(&v)));
        assert!(has_seen(&empty, 1, "k", None));
        // Seen through the shard's prefixes, or as the recent write of the key.
        assert!(has_seen(&ctx(1, 2, 1), 1, "k", Some(&v)));
        assert!(
            !has_seen(&ctx(2, 2, 1), 1, "k", Some(&v)),
            "another shard's prefix"
        );
        let mut made = empty.clone();
        made.add_recent(1, v.dot, "k", true);
        assert!(has_seen(&made, 1, "k", Some(&v)));
        // A later write of the key by the same origin superseded it.
        let mut later = empty.clone();
        later.add_recent(
            1,
            Dot {
                origin: 2,
                counter: 5,
            },
            "k",
            true,
        );
        assert!(has_seen(&later, 1, "k", Some(&v)));
        // A newer write than the one the context names is news.
        let mut older = empty.clone();
        older.add_recent(
            1,
            Dot {
                origin: 3,
                counter: 9,
            },
            "k",
            true,
        );
        assert!(!has_seen(&older, 1, "k", Some(&v)));
        // The key the context saw live is gone (delete collected): news.
        assert!(!has_seen(&made, 1, "k", None));
        let mut deleted = empty.clone();
        deleted.add_recent(1, v.dot, "k", false);
        assert!(has_seen(&deleted, 1, "k", None));
        // A version of another epoch cannot be named by the context.
        let mut moved = v.clone();
        moved.epoch = 2;
        assert!(!has_seen(&ctx(1, 2, 1), 1, "k", Some(&moved)));
    }

    #[test]
    fn json_round_trip_and_garbage() {
        let c = ctx(2, 0xabc, 7);
        assert_eq!(Context::from_json(Some(&c.to_json())), c);
        for junk in [
            serde_json::json!({}),
            serde_json::json!(null),
            serde_json::json!("x"),
            serde_json::json!({"epoch": -1, "ts": 0, "deps": {}}),
            serde_json::json!({"epoch": 1, "ts": 0, "deps": {"x": {}}}),
            serde_json::json!({"epoch": 1, "ts": 0, "deps": {"1": {"zz": 1}}}),
        ] {
            assert_eq!(Context::from_json(Some(&junk)), Context::default());
        }
    }

    #[test]
    fn signed_contexts_cannot_be_forged() {
        let signer = Signer::new("secret");
        let c = ctx(1, 0xabc, 7);
        let signed = c.to_signed_json(Some(&signer));
        assert_eq!(Context::from_signed_json(Some(&signed), Some(&signer)), c);
        // Raising a counter breaks the signature: the context reads as empty.
        let mut forged = signed.clone();
        forged["deps"]["1"]["abc"] = serde_json::json!(1_000_000);
        assert_eq!(
            Context::from_signed_json(Some(&forged), Some(&signer)),
            Context::default()
        );
        // Unsigned, or signed with another secret: empty too.
        assert_eq!(
            Context::from_signed_json(Some(&c.to_json()), Some(&signer)),
            Context::default()
        );
        let other = c.to_signed_json(Some(&Signer::new("other")));
        assert_eq!(
            Context::from_signed_json(Some(&other), Some(&signer)),
            Context::default()
        );
        // Without a secret, contexts are taken as they come.
        assert_eq!(Context::from_signed_json(Some(&c.to_json()), None), c);
    }

    #[test]
    fn wire_form_is_the_json_form() {
        let mut c = ctx(3, 0xfeed, 12);
        c.deps.add(12, dot(0xab_cdef_0123, 4));
        for i in 0..3u64 {
            c.add_recent(2, dot(0x9000 + i, i + 1), &format!("k{i}"), i % 2 == 0);
        }
        assert!(!c.recent.is_empty(), "{c:?}");
        // As text (what goes on the wire) and as a value, the same JSON as `to_json`.
        let text = |w: WireContext| {
            serde_json::from_str::<Json>(&serde_json::to_string(&w).unwrap()).unwrap()
        };
        assert_eq!(text(c.wire(None)), c.to_json());
        assert_eq!(serde_json::to_value(c.wire(None)).unwrap(), c.to_json());
        let signer = Signer::new("k");
        assert_eq!(text(c.wire(Some(&signer))), c.to_signed_json(Some(&signer)));
        assert_eq!(
            serde_json::to_value(c.wire(Some(&signer))).unwrap(),
            c.to_signed_json(Some(&signer))
        );
    }

    #[test]
    fn read_safe_when_clock_covers() {
        let mut clock = VClock::new();
        clock.raise(5, 3);
        assert!(read_is_safe(&ctx(1, 5, 3), 1, "k", &clock, None));
        assert!(!read_is_safe(&ctx(1, 5, 4), 1, "k", &clock, None));
    }

    #[test]
    fn read_safe_when_local_version_supersedes() {
        let clock = VClock::new();
        let mut past = Deps::new();
        past.add(
            1,
            Dot {
                origin: 5,
                counter: 9,
            },
        );
        let v = version(past);
        assert!(read_is_safe(&ctx(1, 5, 9), 1, "k", &clock, Some(&v)));
        assert!(!read_is_safe(&ctx(1, 5, 10), 1, "k", &clock, Some(&v)));
    }

    #[test]
    fn other_shards_are_not_checked() {
        assert!(read_is_safe(&ctx(2, 5, 100), 1, "k", &VClock::new(), None));
    }

    #[test]
    fn past_of_another_epoch_does_not_count() {
        let mut past = Deps::new();
        past.add(
            1,
            Dot {
                origin: 5,
                counter: 9,
            },
        );
        let mut v = version(past);
        v.epoch = 0;
        assert!(!read_is_safe(
            &ctx(1, 5, 9),
            1,
            "k",
            &VClock::new(),
            Some(&v)
        ));
    }

    fn dot(origin: u64, counter: u64) -> Dot {
        Dot { origin, counter }
    }

    #[test]
    fn a_recent_write_of_another_key_does_not_matter() {
        let mut c = ctx(1, 5, 3);
        c.add_recent(1, dot(9, 40), "y", true);
        let mut clock = VClock::new();
        clock.raise(5, 3);
        assert!(
            read_is_safe(&c, 1, "x", &clock, None),
            "y's write is irrelevant to x"
        );
        assert!(!read_is_safe(&c, 1, "y", &clock, None), "but not to y");
        clock.raise(9, 40);
        assert!(read_is_safe(&c, 1, "y", &clock, None));
        // The prefix still counts for every key.
        assert!(!read_is_safe(&c, 1, "x", &VClock::new(), None));
    }

    #[test]
    fn a_local_version_that_supersedes_the_recent_write_is_enough() {
        let mut c = Context {
            epoch: 1,
            ..Context::default()
        };
        c.add_recent(1, dot(9, 40), "k", true);
        let mut past = Deps::new();
        past.add(1, dot(9, 40));
        assert!(read_is_safe(
            &c,
            1,
            "k",
            &VClock::new(),
            Some(&version(past))
        ));
        assert!(!read_is_safe(
            &c,
            1,
            "k",
            &VClock::new(),
            Some(&version(Deps::new()))
        ));
    }

    #[test]
    fn recent_writes_keep_their_invariants() {
        let mut c = Context::default();
        c.add_recent(1, dot(9, 1), "k", true);
        c.add_recent(1, dot(8, 1), "k", false);
        assert_eq!(c.recent.len(), 1, "one per key: the later supersedes");
        assert!(!c.recent_of(1, "k").unwrap().live);
        // A prefix that covers a recent write makes it redundant.
        c.deps.add(1, dot(8, 5));
        c.add_recent(2, dot(7, 1), "j", true);
        assert!(c.recent_of(1, "k").is_none());
        // Past the bound, the oldest fold into the prefixes: nothing is forgotten.
        let mut c = Context::default();
        for i in 0..(MAX_RECENT as u64 + 3) {
            c.add_recent(1, dot(100 + i, 1), &format!("k{i}"), true);
        }
        assert_eq!(c.recent.len(), MAX_RECENT);
        for i in 0..(MAX_RECENT as u64 + 3) {
            let d = dot(100 + i, 1);
            let named = c.recent.iter().any(|r| r.dot == d);
            let folded = c.deps.shard(1).is_some_and(|s| s.contains(d));
            assert!(named || folded, "write {i} was forgotten");
        }
        // A write made with this context records every dependency as a prefix.
        let all = c.all_deps();
        assert!(
            (0..(MAX_RECENT as u64 + 3)).all(|i| all.shard(1).unwrap().contains(dot(100 + i, 1)))
        );
    }

    #[test]
    fn recent_writes_survive_the_wire_and_bad_ones_are_refused() {
        let mut c = ctx(2, 0xabc, 7);
        c.add_recent(1, dot(0xfeed, 3), "k", false);
        assert_eq!(Context::from_json(Some(&c.to_json())), c);
        assert_eq!(serde_json::to_value(c.wire(None)).unwrap(), c.to_json());
        let signer = Signer::new("s");
        assert_eq!(
            Context::from_signed_json(Some(&c.to_signed_json(Some(&signer))), Some(&signer)),
            c
        );
        for bad in [
            serde_json::json!([[1, "zz", 3, 4, 1]]),
            serde_json::json!([[1, "ab", 3, 4]]),
            serde_json::json!([[1, "ab", 3, 1u64 << 40, 1]]),
            serde_json::json!({"a": 1}),
        ] {
            let mut j = c.to_json();
            j["recent"] = bad;
            assert_eq!(Context::from_json(Some(&j)), Context::default());
        }
    }

    #[test]
    fn join_covers_both_sides() {
        let mut a = ctx(1, 5, 3);
        a.add_recent(1, dot(9, 1), "x", true);
        let mut b = ctx(1, 6, 2);
        b.add_recent(1, dot(8, 4), "y", true);
        b.ts = 77;
        let mut j = a.clone();
        j.join(&b);
        let covers = |c: &Context, key: &str, o: u64, n: u64| {
            let mut clock = VClock::new();
            for (org, cnt) in c.all_deps().shard(1).unwrap().iter() {
                if org != o {
                    clock.raise(org, cnt);
                }
            }
            clock.raise(o, n - 1);
            !read_is_safe(c, 1, key, &clock, None)
        };
        // Every dependency of either side is still required by the join.
        assert!(covers(&j, "x", 9, 1) && covers(&j, "y", 8, 4));
        assert!(covers(&j, "z", 5, 3) && covers(&j, "z", 6, 2));
        assert_eq!(j.ts, 77);
        // The same key recent on both sides with different writes: both kept.
        let mut c = Context {
            epoch: 1,
            ..Context::default()
        };
        c.add_recent(1, dot(3, 1), "k", true);
        let mut d = Context {
            epoch: 1,
            ..Context::default()
        };
        d.add_recent(1, dot(4, 1), "k", false);
        c.join(&d);
        let all = c.all_deps();
        assert!(
            all.shard(1).unwrap().contains(dot(3, 1)) && all.shard(1).unwrap().contains(dot(4, 1))
        );
    }
}
