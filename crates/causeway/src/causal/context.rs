//! The client's `causal-context` and the read-safety rule.
//!
//! A [`Context`] is what a client has seen or depended on: the view epoch it was
//! issued in, the largest write timestamp it has seen, and its dependencies per
//! shard. On the wire it is an opaque JSON object:
//! `{"epoch": 3, "ts": 123, "deps": {"1": {"9f2c...": 5}}}`. Anything else a client
//! sends (`{}`, a context of the store Causeway replaces, garbage) reads as "no
//! history": a context can only narrow what a replica may answer, never inject data.
//!
//! Read rule ([`read_is_safe`]): a read of key `k` of shard `s` with context `c` is safe
//! on a replica when, for every origin `o` in `c[s]`, the replica's clock covers
//! `c[s][o]` or its version of `k` already has `c[s][o]` in its past. Contexts of
//! another epoch are not checked (the API allows ignoring them after a view change).

use super::clock::{Deps, ShardNo, VClock};
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
        Some(Context { epoch, ts, deps })
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
        Json::Object(m)
    }

    /// The context as seen in `epoch`: dependencies of another epoch are dropped.
    pub fn in_epoch(&self, epoch: u64) -> Context {
        if self.epoch == epoch {
            self.clone()
        } else {
            Context {
                epoch,
                ts: self.ts,
                deps: Deps::new(),
            }
        }
    }

    /// Adds what the client learns from reading `version`, a version of a key of `shard`.
    pub fn observe(&mut self, version: &Version, shard: ShardNo) {
        self.ts = self.ts.max(version.id.ts);
        if version.epoch == self.epoch {
            self.deps.join(&version.past);
            self.deps.add(shard, version.dot);
        }
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
                ser.collect_map(self.0.iter().map(|(o, n)| (format!("{o:x}"), n)))
            }
        }
        struct DepsOut<'a>(&'a Deps);
        impl serde::Serialize for DepsOut<'_> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.collect_map(self.0.iter().map(|(s, c)| (s.to_string(), Clock(c))))
            }
        }
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("deps", &DepsOut(&self.ctx.deps))?;
        m.serialize_entry("epoch", &self.ctx.epoch)?;
        if let Some(sig) = &self.sig {
            m.serialize_entry("sig", sig)?;
        }
        m.serialize_entry("ts", &self.ctx.ts)?;
        m.end()
    }
}

/// Compares secrets without leaking where they differ through timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The read rule (see the module docs). `ctx` must already be in the replica's epoch.
pub fn read_is_safe(
    ctx: &Context,
    shard: ShardNo,
    clock: &VClock,
    local: Option<&Version>,
) -> bool {
    let Some(needed) = ctx.deps.shard(shard) else {
        return true;
    };
    let local = local.filter(|v| v.epoch == ctx.epoch);
    needed.iter().all(|(origin, counter)| {
        clock.get(origin) >= counter || local.is_some_and(|v| v.supersedes(shard, origin, counter))
    })
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
        let c = ctx(3, 0xfeed, 12);
        assert_eq!(serde_json::to_value(c.wire(None)).unwrap(), c.to_json());
        let signer = Signer::new("k");
        assert_eq!(
            serde_json::to_value(c.wire(Some(&signer))).unwrap(),
            c.to_signed_json(Some(&signer))
        );
    }

    #[test]
    fn read_safe_when_clock_covers() {
        let mut clock = VClock::new();
        clock.raise(5, 3);
        assert!(read_is_safe(&ctx(1, 5, 3), 1, &clock, None));
        assert!(!read_is_safe(&ctx(1, 5, 4), 1, &clock, None));
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
        assert!(read_is_safe(&ctx(1, 5, 9), 1, &clock, Some(&v)));
        assert!(!read_is_safe(&ctx(1, 5, 10), 1, &clock, Some(&v)));
    }

    #[test]
    fn other_shards_are_not_checked() {
        assert!(read_is_safe(&ctx(2, 5, 100), 1, &VClock::new(), None));
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
        assert!(!read_is_safe(&ctx(1, 5, 9), 1, &VClock::new(), Some(&v)));
    }
}
