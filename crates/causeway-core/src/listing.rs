//! Listing keys (`GET /kv-store/keys?prefix=P&limit=N&start-after=K&values=true`):
//! the query, one shard's page, and the merge of every shard's page in byte order.
//!
//! Invariants:
//! - a replica lists its shard only when its clock covers every dependency the
//!   request's context has in that shard (every key the context shows as written,
//!   or as deleted, is then listed as it should be); otherwise another replica is
//!   asked, and failing all, the listing answers 400;
//! - each shard returns its first `limit` live keys after `start-after` with the
//!   prefix, so the first `limit` keys of the merge are the first `limit` keys of the
//!   whole store, and `next` (the last key returned) resumes exactly after them.

use crate::causal::{Context, ShardNo, VClock, Version};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most keys in one page.
pub const MAX_LIMIT: usize = 1000;
/// Keys in a page when the query does not say.
pub const DEFAULT_LIMIT: usize = 100;

/// A listing query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub prefix: String,
    pub start_after: Option<String>,
    pub limit: usize,
    pub values: bool,
}

impl Query {
    /// Parses the query string's parameters; `Err` names the bad parameter.
    pub fn parse(params: &BTreeMap<String, String>) -> Result<Query, String> {
        for k in params.keys() {
            if !matches!(k.as_str(), "prefix" | "limit" | "start-after" | "values") {
                return Err(format!("unknown parameter {k}"));
            }
        }
        let limit = match params.get("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(format!("limit must be an integer from 1 to {MAX_LIMIT}")),
            },
        };
        let values = match params.get("values").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err("values must be true or false".into()),
        };
        Ok(Query {
            prefix: params.get("prefix").cloned().unwrap_or_default(),
            start_after: params.get("start-after").cloned(),
            limit,
            values,
        })
    }
}

/// True when a replica whose clock is `clock` may list `shard` for `ctx` (see the
/// module docs). `ctx` must already be in the replica's epoch.
pub fn may_list(ctx: &Context, shard: ShardNo, clock: &VClock) -> bool {
    let prefixes = ctx
        .deps
        .shard(shard)
        .is_none_or(|needed| needed.iter().all(|(o, n)| clock.get(o) >= n));
    prefixes
        && ctx
            .recent
            .iter()
            .filter(|r| r.shard == shard)
            .all(|r| clock.contains(r.dot))
}

/// One shard's page: its first `limit` live keys after the cursor with the prefix, in
/// byte order, and whether it has more. `owned` says which keys the shard owns (a
/// replica may still hold keys it is handing over); `now` is the timestamp expiry is
/// judged at. Writes expired by then come along too, uncounted: the node answering the
/// listing leaves them out, and its answer's context learns they expired (see
/// [`leave_out_expired`]).
pub fn page<'a>(
    keys: impl Iterator<Item = (&'a str, &'a Version)>,
    q: &Query,
    owned: impl Fn(&str) -> bool,
    now: u64,
) -> (Vec<(String, Version)>, bool) {
    page_of(keys, q, owned, now, false)
}

/// [`page`] with tombstones too (uncounted, like expired writes): what a node that
/// may hold keys of a shard it does not own contributes to a gathered page (see
/// [`union`]), where a delete must win over an old owner's live copy.
pub fn held_page<'a>(
    keys: impl Iterator<Item = (&'a str, &'a Version)>,
    q: &Query,
    of_shard: impl Fn(&str) -> bool,
    now: u64,
) -> (Vec<(String, Version)>, bool) {
    page_of(keys, q, of_shard, now, true)
}

fn page_of<'a>(
    keys: impl Iterator<Item = (&'a str, &'a Version)>,
    q: &Query,
    owned: impl Fn(&str) -> bool,
    now: u64,
    tombstones: bool,
) -> (Vec<(String, Version)>, bool) {
    let mut out = Vec::new();
    let mut live = 0;
    for (k, v) in keys {
        if !k.starts_with(q.prefix.as_str()) {
            if k > q.prefix.as_str() {
                break;
            }
            continue;
        }
        if (v.is_tombstone() && !tombstones) || !owned(k) {
            continue;
        }
        let counts = v.is_live(now);
        if counts && live == q.limit {
            return (out, true);
        }
        live += usize::from(counts);
        out.push((k.to_string(), v.clone()));
    }
    (out, false)
}

/// Drops from a merged listing the deleted keys (a gathered page carries tombstones)
/// and the writes expired at `now`, raising `ctx`'s time to the latter's expiry: a
/// session that saw a key left out of a listing because it expired has seen it
/// expired, and never sees it alive again (as after a GET that found it so).
pub fn leave_out_expired(
    items: Vec<(String, Version)>,
    now: u64,
    ctx: &mut crate::causal::Context,
) -> Vec<(String, Version)> {
    items
        .into_iter()
        .filter(|(_, v)| {
            if v.is_live(now) {
                return true;
            }
            ctx.ts = ctx.ts.max(v.expires().unwrap_or(0));
            false
        })
        .collect()
}

/// One shard's page gathered from several nodes while no replica has the whole shard
/// (a view change's hand-over still runs): every key any of them has, in its newest
/// version (a delete included), the first `limit` of them. Each source's page holds
/// everything it has up to its last key, so the union is complete up to its own
/// `limit`-th key, and `more` says whether anything may follow.
pub fn union(
    pages: Vec<(Vec<(String, Version)>, bool)>,
    limit: usize,
) -> (Vec<(String, Version)>, bool) {
    let mut more = pages.iter().any(|(_, m)| *m);
    let mut newest: std::collections::BTreeMap<String, Version> = Default::default();
    for (k, v) in pages.into_iter().flat_map(|(p, _)| p) {
        match newest.get(&k) {
            Some(cur) if (cur.id, cur.dot) >= (v.id, v.dot) => {}
            _ => {
                newest.insert(k, v);
            }
        }
    }
    let mut items: Vec<(String, Version)> = newest.into_iter().collect();
    if items.len() > limit {
        items.truncate(limit);
        more = true;
    }
    (items, more)
}

/// Merges the shards' pages: the first `limit` keys in byte order, and `next` (the
/// last of them) when anything is left.
pub fn merge(
    pages: Vec<(Vec<(String, Version)>, bool)>,
    limit: usize,
) -> (Vec<(String, Version)>, Option<String>) {
    let mut more = pages.iter().any(|(_, m)| *m);
    let mut all: Vec<(String, Version)> = pages.into_iter().flat_map(|(p, _)| p).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    if all.len() > limit {
        all.truncate(limit);
        more = true;
    }
    let next = if more {
        all.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    (all, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::{Deps, Dot, Value, WriteId};

    fn v(live: bool) -> Version {
        Version {
            id: WriteId {
                ts: 1,
                origin: 1,
                counter: 1,
            },
            dot: Dot {
                origin: 1,
                counter: 1,
            },
            epoch: 0,
            past: Deps::new(),
            value: live.then(|| Value::Str("v".into())),
        }
    }

    fn q(prefix: &str, after: Option<&str>, limit: usize) -> Query {
        Query {
            prefix: prefix.into(),
            start_after: after.map(Into::into),
            limit,
            values: false,
        }
    }

    #[test]
    fn parameters_are_checked() {
        let p = |pairs: &[(&str, &str)]| {
            Query::parse(
                &pairs
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            )
        };
        assert_eq!(p(&[]).unwrap(), q("", None, 100));
        assert_eq!(
            p(&[("prefix", "a"), ("limit", "5"), ("start-after", "ab")]).unwrap(),
            q("a", Some("ab"), 5)
        );
        assert!(p(&[("values", "true")]).unwrap().values);
        for bad in [
            ("limit", "0"),
            ("limit", "1001"),
            ("limit", "x"),
            ("values", "yes"),
            ("nope", "1"),
        ] {
            assert!(p(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_page_skips_deleted_and_foreign_keys_and_says_when_there_is_more() {
        let store: BTreeMap<String, Version> = [
            ("a1", true),
            ("a2", false),
            ("a3", true),
            ("a4", true),
            ("b1", true),
        ]
        .into_iter()
        .map(|(k, l)| (k.to_string(), v(l)))
        .collect();
        let iter = || store.iter().map(|(k, v)| (k.as_str(), v));
        let (keys, more) = page(iter(), &q("a", None, 2), |k| k != "a4", 0);
        assert_eq!(
            keys.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["a1", "a3"]
        );
        assert!(!more, "a4 is not owned, b1 lacks the prefix");
        let (keys, more) = page(iter(), &q("", None, 2), |_| true, 0);
        assert_eq!(keys.len(), 2);
        assert!(more);
    }

    #[test]
    fn a_page_leaves_out_expired_keys() {
        let mut expiring = v(true);
        expiring.value = Some(Value::expiring(expiring.value.unwrap(), 100));
        let store = [("a1", v(true)), ("a2", expiring)];
        let iter = || store.iter().map(|(k, v)| (*k, v));
        let names = |(keys, _): (Vec<(String, Version)>, bool)| {
            keys.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
        };
        assert_eq!(
            names(page(iter(), &q("", None, 10), |_| true, 99)),
            ["a1", "a2"]
        );
        // Expired, it comes along uncounted, and the answering node leaves it out.
        let (items, more) = page(iter(), &q("", None, 1), |_| true, 100);
        assert!(!more, "a2 does not count against the limit");
        let mut ctx = crate::causal::Context::default();
        let kept = leave_out_expired(items, 100, &mut ctx);
        assert_eq!(names((kept, false)), ["a1"]);
        assert_eq!(ctx.ts, 100, "the session has seen it expire");
    }

    #[test]
    fn a_gathered_page_keeps_each_keys_newest_version_deletes_included() {
        let at = |ts: u64, live: bool| {
            let mut x = v(live);
            x.id.ts = ts;
            x
        };
        // An old owner still holds a, b (and c, deleted since on a replica); a replica
        // has what was handed over: b, c's delete and d.
        let holder = (
            vec![
                ("a".into(), at(1, true)),
                ("b".into(), at(1, true)),
                ("c".into(), at(1, true)),
            ],
            false,
        );
        let replica = (
            vec![
                ("b".into(), at(1, true)),
                ("c".into(), at(2, false)),
                ("d".into(), at(1, true)),
            ],
            false,
        );
        let (items, more) = union(vec![holder.clone(), replica.clone()], 10);
        let mut ctx = crate::causal::Context::default();
        let live = leave_out_expired(items, 0, &mut ctx);
        let keys: Vec<&str> = live.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "d"], "c's delete wins over the old copy");
        assert!(!more);
        // Cut at the limit: the cursor stays complete up to the last key kept.
        let (items, more) = union(vec![holder, replica], 2);
        assert_eq!(
            items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(more);
        // A held page carries deletes, uncounted.
        let store = [("a", at(1, false)), ("b", at(1, true))];
        let (items, more) = held_page(
            store.iter().map(|(k, v)| (*k, v)),
            &q("", None, 1),
            |_| true,
            0,
        );
        assert_eq!(items.len(), 2);
        assert!(!more);
    }

    #[test]
    fn the_merge_is_the_first_keys_of_the_whole_store() {
        let p = |ks: &[&str], more| (ks.iter().map(|k| (k.to_string(), v(true))).collect(), more);
        let (keys, next) = merge(vec![p(&["a", "d"], true), p(&["b", "c"], false)], 3);
        assert_eq!(
            keys.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(next.as_deref(), Some("c"));
        let (keys, next) = merge(vec![p(&["a"], false), p(&["b"], false)], 3);
        assert_eq!((keys.len(), next), (2, None));
    }
}
