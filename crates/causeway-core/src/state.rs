//! The replica's in-memory state: every key it holds, indexed by key and by dot.
//!
//! Invariants (kept by the committer, the only writer, under the write lock):
//! - everything here is already durable: the committer applies a batch only after
//!   [`crate::storage::Storage::commit`] returned;
//! - `dots` holds exactly one entry per stored version, under the version's dot;
//! - `clock` covers every dot in `dots` and only grows, except that a view which may
//!   give this node keys it did not own starts it anew (see `Job::SetView`);
//! - `live` counts versions that are not tombstones; `tombstones` lists the others;
//! - `expiring` holds exactly one `(expiry, key)` per stored version whose value
//!   expires (expired ones stay counted as live until the committer reclaims them).
//!
//! Readers take the read lock briefly and copy out what they need.

use crate::causal::{Dot, Origin, ShardNo, VClock, Version};
use crate::placement::View;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

pub type Key = Arc<str>;

/// How many views a replica remembers in its [`State::lineage`]. A context older than
/// all of them is served only where a write brought it up to date.
pub const MAX_LINEAGE: usize = 64;

/// A view as a line of views remembers it: its epoch and its members.
pub type ViewMembers = (u64, Vec<String>);

pub struct State {
    pub me: String,
    pub incarnation: u64,
    pub view: Arc<View>,
    pub keys: BTreeMap<Key, Version>,
    pub dots: HashMap<Origin, BTreeMap<u64, Key>>,
    pub tombstones: HashSet<Key>,
    pub clock: VClock,
    pub last_ts: u64,
    pub live: usize,
    /// Nodes that may still hand keys of this node's shard over to it (after a view
    /// change). While any remains, no tombstone is collected: a late hand-over of a
    /// deleted key's old copy would otherwise bring it back. Durable with the view.
    pub pending: std::collections::BTreeSet<String>,
    /// Nodes that said, in the view in force, that they hold nothing more to hand
    /// over: never waited for again in this view (a node's report of whom it still
    /// waits for may name one that already reported to us). Kept in memory only; lost
    /// on restart, it costs at most asking such a node again.
    pub handed: std::collections::BTreeSet<String>,
    /// The views this replica installed (the newest [`MAX_LINEAGE`]), by epoch, with
    /// their members: its own line of views. A context issued in a view outside it (one
    /// this replica skipped, or a racing view that lost) may depend on writes held by
    /// nodes this replica never waited for: see [`crate::replica::complete_for`].
    /// Durable.
    pub lineage: BTreeMap<u64, Vec<String>>,
    /// Set for a data directory from before lineages were kept: every view up to the
    /// one in force counts as known (what earlier versions assumed) until the next view
    /// is installed, so an upgrade refuses no session that was served before it.
    pub older_views_known: bool,
    /// Every node this replica waited for hand-overs from in the view in force (those
    /// still pending and those done). In memory; after a restart, those still pending.
    pub waited: BTreeSet<String>,
    /// Views of other replicas' lines, as reported with their hand-overs in the view
    /// in force (see [`crate::replica::hand_over_report`]). In memory.
    pub heard: BTreeMap<u64, Vec<String>>,
    /// Versions that expire, by expiry timestamp.
    pub expiring: BTreeSet<(u64, Key)>,
    /// The epoch of the newest view this node knows completed (see [`crate::views`]).
    /// Durable with the view.
    pub completed: Option<u64>,
}

impl State {
    pub fn new(me: String, incarnation: u64, view: View, clock: VClock, last_ts: u64) -> State {
        let (epoch, members) = (view.epoch, view.nodes.clone());
        State {
            me,
            incarnation,
            view: Arc::new(view),
            keys: BTreeMap::new(),
            dots: HashMap::new(),
            tombstones: HashSet::new(),
            clock,
            last_ts,
            live: 0,
            pending: Default::default(),
            handed: Default::default(),
            lineage: [(epoch, members)].into_iter().collect(),
            older_views_known: false,
            waited: Default::default(),
            heard: Default::default(),
            expiring: BTreeSet::new(),
            completed: None,
        }
    }

    /// Whether this node knows the change to the view in force completed.
    pub fn view_completed(&self) -> bool {
        self.completed == Some(self.view.epoch)
    }

    /// This node's origin in the current epoch.
    pub fn origin(&self) -> Origin {
        origin_for(self.incarnation, self.view.epoch)
    }

    /// This node's shard in the current view, if it is in the view.
    pub fn my_shard(&self) -> Option<ShardNo> {
        self.view.shard_of_node(&self.me)
    }

    /// True when this node is a replica of `key`'s shard in the current view.
    pub fn owns(&self, key: &str) -> bool {
        self.my_shard() == Some(self.view.shard_of_key(key))
    }

    pub fn get(&self, key: &str) -> Option<&Version> {
        self.keys.get(key)
    }

    /// Installs (or with `None`, removes) the version of `key`, keeping the indexes.
    pub fn set(&mut self, key: &str, version: Option<Version>) {
        let new_dot = version.as_ref().map(|v| v.dot);
        let new_expiry = version.as_ref().and_then(Version::expires);
        let new_is_tombstone = version.as_ref().map(Version::is_tombstone);
        let old = match version {
            Some(v) => {
                let k: Key = match self.keys.get_key_value(key) {
                    Some((k, _)) => k.clone(),
                    None => Arc::from(key),
                };
                self.dots
                    .entry(v.dot.origin)
                    .or_default()
                    .insert(v.dot.counter, k.clone());
                if v.is_tombstone() {
                    self.tombstones.insert(k.clone());
                } else {
                    self.live += 1;
                }
                if let Some(at) = new_expiry {
                    self.expiring.insert((at, k.clone()));
                }
                self.keys.insert(k, v)
            }
            None => self.keys.remove(key),
        };
        if let Some(old) = old {
            if new_dot != Some(old.dot) {
                self.remove_dot(old.dot);
            }
            if let Some(at) = old.expires().filter(|at| new_expiry != Some(*at)) {
                self.expiring.remove(&(at, Arc::from(key)));
            }
            if old.is_tombstone() {
                if new_is_tombstone != Some(true) {
                    self.tombstones.remove(key);
                }
            } else {
                self.live -= 1;
            }
        }
        if new_dot.is_none() {
            self.tombstones.remove(key);
        }
    }

    /// Fills an empty state with the versions found on disk at start. Building the
    /// trees in bulk (sorted) is much faster than inserting keys one by one, and packs
    /// their nodes full.
    /// Applies a batch's changes, once they are durable: its versions, its clock (it
    /// started from this one and only grew, unless a new view reset it), the last
    /// timestamp seen, a new view and the nodes that may still hand keys over.
    pub fn apply(&mut self, changes: crate::changes::Changes) {
        for (k, v) in changes.versions {
            self.set(&k, v);
        }
        self.clock = changes.clock;
        self.last_ts = self.last_ts.max(changes.last_ts);
        if let Some(v) = changes.view {
            self.view = Arc::new(v);
            self.handed.clear();
            self.older_views_known = false;
            self.waited.clear();
            self.heard.clear();
        }
        if let Some(h) = changes.handover {
            self.pending = h;
        }
        self.handed.extend(changes.handed);
        self.waited.extend(changes.waited);
        self.heard.extend(changes.heard);
        if let Some(l) = changes.lineage {
            self.lineage = l;
        }
        if let Some(e) = changes.completed {
            self.completed = Some(e);
        }
    }

    pub fn bulk_load(&mut self, versions: Vec<(Key, Version)>) {
        debug_assert!(self.keys.is_empty(), "bulk_load fills an empty state");
        let mut dots: HashMap<Origin, Vec<(u64, Key)>> = HashMap::new();
        for (k, v) in &versions {
            dots.entry(v.dot.origin)
                .or_default()
                .push((v.dot.counter, k.clone()));
            if v.is_tombstone() {
                self.tombstones.insert(k.clone());
            } else {
                self.live += 1;
            }
            if let Some(at) = v.expires() {
                self.expiring.insert((at, k.clone()));
            }
        }
        self.dots = dots
            .into_iter()
            .map(|(origin, by_counter)| (origin, by_counter.into_iter().collect()))
            .collect();
        self.keys = versions.into_iter().collect();
    }

    /// Up to `limit` versions expired at timestamp `now`: their keys and write ids.
    pub fn expired(&self, now: u64, limit: usize) -> Vec<(Key, crate::causal::WriteId)> {
        self.expiring
            .range(..(now.saturating_add(1), Arc::from("")))
            .filter_map(|(_, k)| self.keys.get(k).map(|v| (k.clone(), v.id)))
            .take(limit)
            .collect()
    }

    fn remove_dot(&mut self, dot: Dot) {
        if let Some(m) = self.dots.get_mut(&dot.origin) {
            m.remove(&dot.counter);
            if m.is_empty() {
                self.dots.remove(&dot.origin);
            }
        }
    }

    /// Versions whose dot is not covered by `known`, within `budget` (`None` when
    /// there are more: the caller falls back to a full transfer).
    pub fn delta(&self, known: &VClock, budget: Budget) -> Option<Vec<(String, Version)>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        // In origin order: what a peer receives does not depend on hashing.
        let mut origins: Vec<&Origin> = self.dots.keys().collect();
        origins.sort();
        for origin in origins {
            let (origin, by_counter) = (*origin, &self.dots[origin]);
            for (_, key) in by_counter.range(known.get(origin) + 1..) {
                let v = &self.keys[key];
                bytes += weight(key, v);
                if out.len() == budget.versions || bytes > budget.bytes {
                    return None;
                }
                out.push((key.to_string(), v.clone()));
            }
        }
        Some(out)
    }

    /// Versions with keys after `cursor`, in key order, within `budget` (but at least
    /// one, whatever its size, so that a transfer always progresses).
    pub fn chunk_after(&self, cursor: Option<&str>, budget: Budget) -> Vec<(String, Version)> {
        use std::ops::Bound;
        let lower = match cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let mut bytes = 0;
        let mut out = Vec::new();
        for (k, v) in self.keys.range::<str, _>((lower, Bound::Unbounded)) {
            bytes += weight(k, v);
            if !out.is_empty() && (out.len() == budget.versions || bytes > budget.bytes) {
                break;
            }
            out.push((k.to_string(), v.clone()));
        }
        out
    }
    /// How far a peer whose clock is `known` is behind: the versions here that `known`
    /// does not cover, and their weight. With `sent = (cursor, clock)` (a full transfer
    /// under way, started at `clock`, the peer having stored every key up to `cursor`),
    /// versions of those keys that `clock` covers count as delivered. Walks the whole
    /// difference: callers use it only when it exceeds one message, and not often.
    pub fn behind(&self, known: &VClock, sent: Option<(&str, &VClock)>) -> (usize, usize) {
        let (mut versions, mut bytes) = (0, 0);
        for (&origin, by_counter) in &self.dots {
            for (&counter, key) in by_counter.range(known.get(origin) + 1..) {
                let delivered = sent.is_some_and(|(cursor, clock)| {
                    **key <= *cursor && clock.contains(Dot { origin, counter })
                });
                if !delivered {
                    versions += 1;
                    bytes += weight(key, &self.keys[key]);
                }
            }
        }
        (versions, bytes)
    }
}

/// How much one message between nodes may carry: bounded by bytes (values may be
/// large) as well as by count.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub versions: usize,
    pub bytes: usize,
}

/// Splits `items` into consecutive runs within `budget` (each at least one item, whatever
/// its size, so that every item goes).
pub fn split_by_budget<K: AsRef<str>>(
    items: &[(K, Version)],
    budget: Budget,
) -> Vec<&[(K, Version)]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (k, v)) in items.iter().enumerate() {
        let w = weight(k.as_ref(), v);
        if i > start && (i - start == budget.versions || bytes + w > budget.bytes) {
            runs.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += w;
    }
    if start < items.len() {
        runs.push(&items[start..]);
    }
    runs
}

/// Approximate encoded size of one `(key, version)` entry.
pub fn weight(key: &str, v: &Version) -> usize {
    key.len()
        + v.value.as_ref().map_or(0, |x| x.len())
        + 48
        + 16 * v.past.iter().map(|(_, c)| c.len()).sum::<usize>()
}

/// The origin of a node incarnation in one epoch (never 0).
pub fn origin_for(incarnation: u64, epoch: u64) -> Origin {
    let mut z = incarnation ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::{Deps, Value, WriteId};

    fn v(origin: u64, counter: u64, value: Option<&str>) -> Version {
        Version {
            id: WriteId {
                ts: counter,
                origin,
                counter,
            },
            dot: Dot { origin, counter },
            epoch: 0,
            past: Deps::new(),
            value: value.map(|s| Value::Str(s.into())),
        }
    }

    fn state() -> State {
        State::new(
            "a:1".into(),
            1,
            View::new(0, vec!["a:1".into()], 1),
            VClock::new(),
            0,
        )
    }

    #[test]
    fn indexes_follow_replacements() {
        let mut s = state();
        s.set("k", Some(v(1, 1, Some("x"))));
        s.set("k", Some(v(1, 2, None)));
        assert_eq!(s.live, 0);
        assert!(s.tombstones.contains("k"));
        assert_eq!(s.dots[&1].len(), 1, "the replaced dot left the index");
        s.set("k", Some(v(2, 1, Some("y"))));
        assert_eq!(s.live, 1);
        assert!(s.tombstones.is_empty());
        assert!(!s.dots.contains_key(&1));
        s.set("k", None);
        assert_eq!((s.live, s.keys.len(), s.dots.len()), (0, 0, 0));
    }

    #[test]
    fn expiring_versions_are_indexed_until_replaced_or_reclaimed() {
        use crate::causal::Value;
        let mut s = state();
        let expiring = |origin, counter, at| {
            let mut x = v(origin, counter, Some("x"));
            x.value = Some(Value::expiring(x.value.unwrap(), at));
            x
        };
        s.set("a", Some(expiring(1, 1, 100)));
        s.set("b", Some(expiring(1, 2, 200)));
        assert_eq!(s.expired(99, 10), vec![]);
        let names = |e: Vec<(Key, crate::causal::WriteId)>| {
            e.into_iter()
                .map(|(k, _)| k.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(s.expired(100, 10)), ["a"]);
        assert_eq!(names(s.expired(500, 10)), ["a", "b"]);
        assert_eq!(names(s.expired(500, 1)), ["a"]);
        // Reclaimed (a tombstone of the same write), and made permanent by a new write.
        let reclaimed = s.get("a").unwrap().reclaimed();
        s.set("a", Some(reclaimed));
        s.set("b", Some(v(2, 1, Some("y"))));
        assert_eq!(s.expired(500, 10), vec![]);
        assert!(s.expiring.is_empty());
        assert_eq!(s.live, 1);
        s.set("c", Some(expiring(2, 2, 300)));
        s.set("c", None);
        assert!(s.expiring.is_empty());
    }

    #[test]
    fn delta_is_what_the_peer_lacks() {
        let mut s = state();
        for i in 1..=5 {
            s.set(&format!("k{i}"), Some(v(7, i, Some("x"))));
        }
        let known: VClock = [(7, 3)].into_iter().collect();
        let d = s.delta(&known, budget(100, usize::MAX)).unwrap();
        let mut keys: Vec<_> = d.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort();
        assert_eq!(keys, vec!["k4", "k5"]);
        assert!(
            s.delta(&VClock::new(), budget(4, usize::MAX)).is_none(),
            "over the count"
        );
        assert!(
            s.delta(&VClock::new(), budget(100, 200)).is_none(),
            "over the bytes"
        );
        assert_eq!(s.chunk_after(Some("k3"), budget(10, usize::MAX)).len(), 2);
    }

    fn budget(versions: usize, bytes: usize) -> Budget {
        Budget { versions, bytes }
    }

    #[test]
    fn splits_are_bounded_by_bytes_and_keep_every_item() {
        let items: Vec<(String, Version)> = (1..=9)
            .map(|i| (format!("k{i}"), v(7, i, Some(&"x".repeat(1000)))))
            .collect();
        let runs = split_by_budget(&items, budget(100, 2500));
        assert_eq!(
            runs.iter().map(|r| r.len()).collect::<Vec<_>>(),
            [2, 2, 2, 2, 1]
        );
        let runs = split_by_budget(&items, budget(4, usize::MAX));
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [4, 4, 1]);
        let runs = split_by_budget(&items, budget(100, 10));
        assert_eq!(
            runs.len(),
            9,
            "an item larger than the budget still goes, alone"
        );
        assert!(split_by_budget::<String>(&[], budget(1, 1)).is_empty());
    }

    #[test]
    fn behind_counts_what_the_peer_lacks() {
        let mut s = state();
        for i in 1..=5 {
            s.set(&format!("k{i}"), Some(v(7, i, Some("x"))));
        }
        let known: VClock = [(7, 2)].into_iter().collect();
        let (n, bytes) = s.behind(&known, None);
        assert_eq!(n, 3);
        assert_eq!(bytes, 3 * weight("k3", s.get("k3").unwrap()));
        // A full transfer that started when the clock was at 4 and stored up to k4.
        let start: VClock = [(7, 4)].into_iter().collect();
        assert_eq!(
            s.behind(&known, Some(("k4", &start))).0,
            1,
            "only k5 is left"
        );
        s.set("k1", Some(v(7, 6, Some("y"))));
        assert_eq!(
            s.behind(&known, Some(("k4", &start))).0,
            2,
            "k1 changed after the transfer passed it"
        );
        let all: VClock = [(7, 6)].into_iter().collect();
        assert_eq!(s.behind(&all, None), (0, 0));
    }

    #[test]
    fn chunks_are_bounded_by_bytes_and_always_progress() {
        let mut s = state();
        let big = "x".repeat(1000);
        for i in 1..=9 {
            s.set(&format!("k{i}"), Some(v(7, i, Some(&big))));
        }
        let chunk = s.chunk_after(None, budget(100, 2500));
        assert_eq!(chunk.len(), 2, "two values of 1000 bytes fit in 2500");
        let one = s.chunk_after(Some("k2"), budget(100, 10));
        assert_eq!(
            one.len(),
            1,
            "a value larger than the budget still goes alone"
        );
        // Walking with the cursor visits every key once.
        let mut cursor: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let c = s.chunk_after(cursor.as_deref(), budget(100, 2500));
            let Some((last, _)) = c.last() else { break };
            cursor = Some(last.clone());
            seen.extend(c.into_iter().map(|(k, _)| k));
        }
        assert_eq!(seen.len(), 9);
    }
}
