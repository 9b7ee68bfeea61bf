//! How a replica's state changes: every decision the single writer makes, as plain
//! functions of the state, the change so far and the inputs (time included).
//!
//! A [`Changes`] gathers the effects of one batch of jobs against a [`State`] before
//! anything is written; the shell makes them durable, then applies them with
//! [`State::apply`]. Invariants:
//! - counters (dots) are assigned here, in order, and the clock covers every dot;
//! - a write this replica names itself gets a timestamp above everything it issued or
//!   saw and above the client's context ([`next_ts`]): a causal successor is ordered
//!   after what it follows;
//! - versions from peers, hand-overs and forwarded writes merge by
//!   [`crate::causal::version::merge`], so two copies of one write are one;
//! - a peer's clock claim is joined only in the view it was made in, and only if our
//!   clock still covers what the peer assumed we had;
//! - a removal (a handed-over key, a collected tombstone) holds only in the view it
//!   was decided in, and only for the version it was decided for ([`removal_holds`]);
//! - a live version goes because a shard peer's run of keys lacks it only in the view
//!   the run was sent in, and only if the peer's clock, read with the run, covers its
//!   dot ([`Changes::sync_run`]); a tombstone never goes that way;
//! - a view that may give this replica keys it did not own restarts its clock, so new
//!   peers send it everything it lacks.

use crate::causal::context::prior_past;
use crate::causal::version::{ts_of_ms, MAX_TS};
use crate::causal::{Context, Dot, VClock, Value, Version, WriteId};
use crate::placement::View;
use crate::state::{origin_for, State, ViewMembers};
use crate::views::{offer, Offer};
use std::collections::{BTreeSet, HashMap};

/// A client write's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteDone {
    /// The key held a live value before this write.
    pub existed: bool,
    /// The write's dot, timestamp and view epoch (what the client's context learns).
    pub dot: Dot,
    pub ts: u64,
    pub epoch: u64,
}

/// A client PUT (`value` is `Some`) or DELETE (`None`).
#[derive(Debug, Clone)]
pub struct ClientWrite<'a> {
    pub key: &'a str,
    pub value: Option<Value>,
    /// A PUT that expires this many milliseconds after its timestamp.
    pub ttl_ms: Option<u64>,
    /// The client's causal context.
    pub ctx: Context,
    /// The identity a forwarding node (or an idempotency key) gave the write; else
    /// this replica names it.
    pub id: Option<WriteId>,
}

/// Why a replica refuses a client write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It does not own the key in the view with this epoch.
    NotOwner(u64),
    /// The client's context is of a view outside the replica's line of views (whose
    /// epoch this is): a later one, a racing one it never installed, or one it skipped
    /// (see [`crate::replica::knows_view`]). The writes of that view the client
    /// depends on have no names here, so the write could not carry them in its past,
    /// and whoever read it could miss them. The replica must learn of the view first.
    UnknownView(u64),
}

/// A run of keys in key order: after `after` (from the first key when `None`) up to and
/// including `through` (to the last key when `None`). A full transfer sends a peer's
/// keys run by run ([`Changes::sync_run`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRun {
    pub after: Option<String>,
    pub through: Option<String>,
}

impl KeyRun {
    /// Whether the run's bounds are in order (a range over keys panics otherwise).
    pub fn is_ordered(&self) -> bool {
        match (&self.after, &self.through) {
            (Some(a), Some(t)) => a <= t,
            _ => true,
        }
    }

    /// The run's bounds, for a range over keys (see [`Self::is_ordered`]).
    pub fn bounds(&self) -> (std::ops::Bound<&str>, std::ops::Bound<&str>) {
        use std::ops::Bound;
        (
            self.after
                .as_deref()
                .map_or(Bound::Unbounded, Bound::Excluded),
            self.through
                .as_deref()
                .map_or(Bound::Unbounded, Bound::Included),
        )
    }
}

/// The effects of one batch, computed before anything is written.
#[derive(Debug, Clone)]
pub struct Changes {
    /// New versions by key (`None`: the key is removed).
    pub versions: HashMap<String, Option<Version>>,
    pub clock: VClock,
    pub last_ts: u64,
    /// A newer view to install.
    pub view: Option<View>,
    /// The replica's line of views with the new one (with `view`).
    pub lineage: Option<std::collections::BTreeMap<u64, Vec<String>>>,
    /// Nodes this replica now waits for, in the view in force or the one installed
    /// here (see [`State::waited`]).
    pub waited: Vec<String>,
    /// Views of other replicas' lines reported here (see [`State::heard`]).
    pub heard: Vec<ViewMembers>,
    /// The new set of nodes that may still hand keys over (when it changed).
    pub handover: Option<BTreeSet<String>>,
    /// Nodes that reported, in the view in force, that they hold nothing more to hand
    /// over (see [`State::handed`]).
    pub handed: Vec<String>,
    /// The clock changed (it must be written).
    pub clock_dirty: bool,
    /// The epoch of a view now known completed (see [`crate::views`]).
    pub completed: Option<u64>,
}

impl Changes {
    pub fn new(st: &State) -> Changes {
        Changes {
            versions: HashMap::new(),
            clock: st.clock.clone(),
            last_ts: st.last_ts,
            view: None,
            lineage: None,
            waited: Vec::new(),
            heard: Vec::new(),
            handover: None,
            handed: Vec::new(),
            clock_dirty: false,
            completed: None,
        }
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
            && !self.clock_dirty
            && self.view.is_none()
            && self.handover.is_none()
            && self.handed.is_empty()
            && self.waited.is_empty()
            && self.heard.is_empty()
            && self.completed.is_none()
    }

    /// The key's version as of this batch so far.
    pub fn get<'a>(&'a self, st: &'a State, key: &str) -> Option<&'a Version> {
        match self.versions.get(key) {
            Some(v) => v.as_ref(),
            None => st.get(key),
        }
    }

    fn next_dot(&mut self, st: &State) -> Dot {
        let origin = st.origin();
        let counter = self.clock.get(origin) + 1;
        self.clock.raise(origin, counter);
        self.clock_dirty = true;
        Dot { origin, counter }
    }

    fn observe_ts(&mut self, ts: u64) {
        if ts > self.last_ts {
            self.last_ts = ts;
        }
    }

    /// Versions from a shard peer, sent in view `sent_in`, with the peer's clock
    /// `claim.0` when the batch was complete relative to `claim.1` (our clock as the
    /// peer last knew it).
    pub fn sync(
        &mut self,
        st: &State,
        sent_in: u64,
        versions: Vec<(String, Version)>,
        claim: Option<(VClock, VClock)>,
    ) {
        let epoch = st.view.epoch;
        for (key, mut incoming) in versions {
            self.observe_ts(incoming.id.ts);
            // A peer still handing over keys of an old view may send some this
            // shard does not own; their old owners hand them to the right place.
            if !st.owns(&key) {
                continue;
            }
            if incoming.epoch != epoch {
                incoming.epoch = epoch;
                incoming.past = prior_past();
            }
            let current = self.get(st, &key);
            // Our clock covers this write yet we hold nothing for the key: we held
            // it or a version that superseded it, and that was collected (a delete
            // whose tombstone every replica had). The message is a late one (held
            // in the network, say); taking the version back would undo the delete.
            if current.is_none() && self.clock.contains(incoming.dot) {
                continue;
            }
            let shard = st.view.shard_of_key(&key);
            if let Some(mut v) = crate::causal::version::merge(current, &incoming, shard) {
                if sent_in != epoch {
                    // Sent before a view change that reached us first: its claim is
                    // ignored, so its dot may be one no clock of this epoch covers
                    // (ours may have been reset), and peers would send it back and
                    // forth forever. Keep it as our own, as a hand-over does.
                    v.dot = self.next_dot(st);
                }
                self.versions.insert(key, Some(v));
            }
        }
        if let Some((clock, assumed)) = claim.filter(|_| sent_in == epoch) {
            // The peer's claim holds only if we still have what it assumed we have
            // (a replica restarted with an empty disk does not), and only in the
            // view it was made in (a new view may have reset our clock).
            if self.clock.covers(&assumed) && !self.clock.covers(&clock) {
                self.clock.join(&clock);
                self.clock_dirty = true;
            }
        }
    }

    /// A run of a shard peer's keys, sent in view `sent_in`: `versions` are every
    /// version the peer held in `run` when its clock was `clock` (read together). They
    /// merge as [`Self::sync`] merges; besides, a key of this shard we hold live in the
    /// run that the peer did not send, and whose version's dot `clock` covers, is
    /// obsolete here, and goes. Returns how many went. Tombstones stay: they go by
    /// tombstone collection, which waits for every peer (a tombstone dropped early takes
    /// with it what it superseded, and a straggling older copy of the key would then
    /// come back: simulator seed 1659 with `--delta-versions 2`).
    ///
    /// Why that is safe: within one view a replica's clock covers a dot of a key of its
    /// shard only while it holds that version or one that superseded it, or after a
    /// tombstone that superseded it was collected (the rule [`Self::sync`] applies to
    /// incoming versions, seen from the other side; a view that may give a replica keys
    /// it did not own restarts its clock). A peer that holds none of it therefore saw
    /// the key deleted, and the delete is gone only because every replica once held
    /// it. A replica holds such a version again only if its disk went back in time (a
    /// restored backup): without this rule it would keep and serve the deleted key, and
    /// nothing would ever tell it otherwise.
    pub fn sync_run(
        &mut self,
        st: &State,
        sent_in: u64,
        versions: Vec<(String, Version)>,
        run: &KeyRun,
        clock: &VClock,
    ) -> usize {
        let sent: std::collections::HashSet<String> =
            versions.iter().map(|(k, _)| k.clone()).collect();
        self.sync(st, sent_in, versions, None);
        if sent_in != st.view.epoch || !run.is_ordered() {
            return 0;
        }
        let obsolete: Vec<String> = st
            .keys
            .range::<str, _>(run.bounds())
            .filter(|(k, _)| !sent.contains(&***k) && st.owns(k))
            .filter(|(k, _)| {
                self.get(st, k).is_some_and(|v| {
                    !v.is_tombstone()
                        && (clock.contains(v.dot)
                            || crate::plant::active(crate::plant::Plant::RunDropsUncovered))
                })
            })
            .map(|(k, _)| k.to_string())
            .collect();
        let n = obsolete.len();
        for k in obsolete {
            self.versions.insert(k, None);
        }
        n
    }

    /// Versions handed over by a previous owner during a view change; each accepted
    /// one is re-dotted as this replica's own. Returns the keys refused (not owned).
    pub fn migrate(&mut self, st: &State, versions: Vec<(String, Version)>) -> Vec<String> {
        let mut refused = Vec::new();
        for (key, incoming) in versions {
            if !st.owns(&key) {
                refused.push(key);
                continue;
            }
            self.observe_ts(incoming.id.ts);
            if self.get(st, &key).is_some_and(|cur| cur.id >= incoming.id) {
                continue;
            }
            let dot = self.next_dot(st);
            let v = Version {
                id: incoming.id,
                dot,
                epoch: st.view.epoch,
                past: prior_past(),
                value: incoming.value,
            };
            self.versions.insert(key, Some(v));
        }
        refused
    }

    /// Reclaims expired writes whose version is still the given one: each becomes a
    /// tombstone of the same write ([`Version::reclaimed`]). `now`: the timestamp they
    /// must have expired by. Returns how many.
    pub fn reclaim(&mut self, st: &State, keys: Vec<(String, WriteId)>, now: u64) -> usize {
        let mut n = 0;
        for (key, id) in keys {
            let Some(cur) = self.get(st, &key) else {
                continue;
            };
            if cur.id == id && cur.expires().is_some_and(|at| now >= at) {
                let tomb = cur.reclaimed();
                self.versions.insert(key, Some(tomb));
                n += 1;
            }
        }
        n
    }

    /// Removes keys whose version is still the given one (moved away, or collected),
    /// if the view in force is still `epoch`, the one the removal was decided in.
    /// Returns how many.
    pub fn remove(&mut self, st: &State, keys: Vec<(String, WriteId)>, epoch: u64) -> usize {
        let mut n = 0;
        for (key, id) in keys {
            if removal_holds(epoch, st.view.epoch, self.get(st, &key), id) {
                self.versions.insert(key, None);
                n += 1;
            }
        }
        n
    }

    /// These nodes (`done`) told us, in view `epoch`, that they hold no more keys to
    /// hand over, with their [`HandOverReport`] (`report`; empty from a node of an
    /// earlier version). Whom they still wait for may hold keys from an earlier view
    /// that this replica never knew (a view it was outside of, or a racing one), and
    /// hand them over to us later: so they join the nodes we wait for, unless they
    /// already reported to us in this view (see [`View::hand_over_sources`] for who
    /// else never does). The views of their lines are kept for
    /// [`crate::replica::complete_for`].
    ///
    /// [`HandOverReport`]: crate::replica::HandOverReport
    pub fn handed_over(
        &mut self,
        st: &State,
        epoch: u64,
        done: &[String],
        report: &crate::replica::HandOverReport,
    ) {
        let view = self.view.as_ref().unwrap_or(&st.view);
        if epoch != view.epoch {
            return;
        }
        let fresh = self.view.is_some();
        let mut handed: BTreeSet<&String> = if fresh {
            BTreeSet::new()
        } else {
            st.handed.iter().collect()
        };
        handed.extend(self.handed.iter());
        handed.extend(done.iter());
        let mine: &[String] = match view.shard_of_node(&st.me) {
            Some(shard) => view.replicas(shard),
            None => &[],
        };
        let mut h = self.handover.clone().unwrap_or_else(|| st.pending.clone());
        let before = h.clone();
        for n in done {
            h.remove(n);
        }
        for n in &report.waiting {
            if *n != st.me && !mine.contains(n) && !handed.contains(n) && h.insert(n.clone()) {
                self.waited.push(n.clone());
            }
        }
        if h != before {
            self.handover = Some(h);
        }
        for n in done {
            if !self.handed.contains(n) && (fresh || !st.handed.contains(n)) {
                self.handed.push(n.clone());
            }
        }
        for v in &report.views {
            if fresh || !st.heard.contains_key(&v.0) {
                self.heard.push(v.clone());
            }
        }
    }

    /// Installs `view` if it wins over the one in force under the rule of
    /// [`crate::views`], given whether it is known `completed`; records a completion of
    /// the view in force. Returns whether `view` was installed.
    pub fn set_view(&mut self, st: &State, view: View, completed: bool) -> bool {
        let decision = offer(&st.view, st.view_completed(), &view, completed);
        if decision == Offer::Complete {
            self.completed = Some(view.epoch);
        }
        let newer = decision == Offer::Install;
        if newer {
            if completed {
                self.completed = Some(view.epoch);
            }
            let outstanding = self.handover.as_ref().unwrap_or(&st.pending);
            self.handover = Some(view.hand_over_sources(&st.view, &st.me, outstanding));
            // Our clock covers writes of keys we no longer hold (handed over when
            // we left their shard, or covered by a peer's claim). In a view that may
            // give us such keys again it would tell our new peers, who send only
            // what it does not cover, that we have them. So start a clock that
            // covers only what we hold: re-dot every version as this epoch's own
            // (as a hand-over does), and our peers send us everything else.
            if !view.owns_only_what_it_owned_in(&st.view, &st.me) {
                let origin = origin_for(st.incarnation, view.epoch);
                let mut counter = self.clock.get(origin);
                for (key, v) in &st.keys {
                    counter += 1;
                    let v = Version {
                        dot: Dot { origin, counter },
                        epoch: view.epoch,
                        past: prior_past(),
                        ..v.clone()
                    };
                    self.versions.insert(key.to_string(), Some(v));
                }
                self.clock = [(origin, counter)].into_iter().collect();
                self.clock_dirty = true;
            }
            let mut lineage = self.lineage.take().unwrap_or_else(|| st.lineage.clone());
            lineage.insert(view.epoch, view.nodes.clone());
            while lineage.len() > crate::state::MAX_LINEAGE {
                lineage.pop_first();
            }
            self.lineage = Some(lineage);
            // What was gathered for the view in force does not carry over.
            self.handed.clear();
            self.heard.clear();
            self.waited = self.handover.iter().flatten().cloned().collect();
            self.view = Some(view);
        }
        newer
    }

    /// Applies a client write. `forwarded` is the identity a forwarding node gave it; such
    /// a write may be a second copy of one applied elsewhere (an attempt whose answer was
    /// lost), or may be older than what this replica holds, so it merges like replicated
    /// versions do. A write this replica names itself is newer than everything it holds.
    pub fn write(
        &mut self,
        st: &State,
        write: ClientWrite<'_>,
        now: u64,
    ) -> Result<WriteDone, Refused> {
        let ClientWrite {
            key,
            value,
            ttl_ms,
            ctx,
            id: forwarded,
        } = write;
        let view = &st.view;
        let shard = match st.my_shard() {
            Some(s) if s == view.shard_of_key(key) => s,
            _ => return Err(Refused::NotOwner(view.epoch)),
        };
        let names_something = !ctx.deps.is_empty() || !ctx.recent.is_empty();
        if names_something && !crate::replica::knows_view(st, ctx.epoch) {
            return Err(Refused::UnknownView(view.epoch));
        }
        let ctx = ctx.before(view.epoch);
        let dot = self.next_dot(st);
        let id = forwarded.unwrap_or_else(|| WriteId {
            ts: next_ts(self.last_ts, ctx.ts, now),
            origin: dot.origin,
            counter: dot.counter,
        });
        self.observe_ts(id.ts);
        // Expiry is part of the write: its own timestamp plus the ttl, the same on every
        // replica (and on every attempt of a forwarded write, which keeps its id).
        let value = match (value, ttl_ms) {
            (Some(v), Some(ttl)) => Some(Value::expiring(v, id.ts.saturating_add(ts_of_ms(ttl)))),
            (Some(Value::Expiring(v, _)), None) => Some(*v),
            (Some(v), None) => Some(v),
            (None, _) => None,
        };
        // The write's causal past: what the client depended on, and what the version it
        // replaces already superseded.
        let mut past = ctx.all_deps();
        // Our own earlier writes are implied by the new dot.
        past.remove(shard, dot.origin);
        let version = Version {
            id,
            dot,
            epoch: view.epoch,
            past,
            value,
        };
        let prev = self.get(st, key);
        // Whether the key existed, as the client knows it: its context may name a later
        // write of the key than this replica has received (made through another replica).
        let known = ctx.recent_of(shard, key).filter(|r| {
            !self.clock.contains(r.dot)
                && !prev.is_some_and(|v| v.supersedes(shard, r.dot.origin, r.dot.counter))
        });
        let existed = match known {
            Some(r) => r.live,
            // An expired write left no key behind.
            None => prev.is_some_and(|v| v.is_live(id.ts)),
        };
        let survivor = match crate::causal::version::merge(prev, &version, shard) {
            Some(v) => v,
            // What this replica holds wins; it now also supersedes this write.
            None => {
                let mut v = prev.expect("merge keeps an existing version").clone();
                v.absorb(shard, &version);
                v
            }
        };
        let done = WriteDone {
            existed,
            dot,
            ts: id.ts,
            epoch: view.epoch,
        };
        self.versions.insert(key.to_string(), Some(survivor));
        Ok(done)
    }
}

/// Whether a removal of a key's version `id`, decided in the view with epoch
/// `decided_in`, still holds when the view in force has epoch `now_in` and the key's
/// version is `current`: only in the view it was decided in, and only while the version
/// is still that one.
///
/// A hand-over drops a key once a new owner has it; but a newer view that overtakes the
/// hand-over may make this node an owner of the key again. It then holds the key
/// (re-dotted for the new view, or merged with the copies its new peers and the key's
/// other old owners send it), its clock covers every copy, and no peer would ever send
/// the key back: dropping it then would leave this replica short of the key for good
/// (or, when the other side handed the key back here and dropped it, lose it). Likewise
/// a tombstone is collected because the shard peers of one view hold it. So a removal
/// that meets a newer view is skipped; the hand-over looks at its keys again in the
/// view now in force (and the collector at its tombstones).
pub fn removal_holds(decided_in: u64, now_in: u64, current: Option<&Version>, id: WriteId) -> bool {
    decided_in == now_in && current.is_some_and(|v| v.id == id)
}

/// The timestamp for a new write: after `now` (the hybrid clock's reading), after `last` (the last one
/// this node issued or saw) and after the client's context timestamp, however far
/// ahead of our clock that lies (another node's clock may be minutes ahead): a causal
/// successor is always ordered after what it follows. Only a timestamp no node could
/// have issued (at or above 2^53) is ignored.
pub fn next_ts(last: u64, ctx_ts: u64, now: u64) -> u64 {
    let ctx_ts = if ctx_ts < MAX_TS { ctx_ts } else { 0 };
    now.max(ctx_ts.saturating_add(1))
        .max(last.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::version::HLC_SHIFT;
    use crate::causal::Deps;

    /// A wall-clock reading (2026), as the hybrid clock gives it.
    const NOW: u64 = 1_780_000_000_000 << HLC_SHIFT;

    fn names(ns: &[&str]) -> Vec<String> {
        ns.iter().map(|n| n.to_string()).collect()
    }

    fn waiting(ns: &[&str]) -> crate::replica::HandOverReport {
        crate::replica::HandOverReport {
            waiting: names(ns),
            views: Vec::new(),
        }
    }

    /// A replica of a one-shard view of `a` and `b` that moved there from a view of `c`.
    fn moved_replica() -> State {
        let mut st = State::new(
            "a".into(),
            1,
            View::new(1, names(&["c"]), 1),
            VClock::default(),
            0,
        );
        let mut c = Changes::new(&st);
        assert!(c.set_view(&st, View::new(2, names(&["a", "b"]), 2), false));
        st.apply(c);
        st
    }

    #[test]
    fn an_old_owner_passes_on_whom_it_still_waits_for() {
        let mut st = moved_replica();
        assert_eq!(st.pending, names(&["c"]).into_iter().collect());
        // c is done, but still waits for d (which may hold keys from a view `a`
        // never knew): `a` waits for d now; itself and its shard peer b never.
        let mut c = Changes::new(&st);
        c.handed_over(&st, 2, &names(&["c"]), &waiting(&["d", "a", "b"]));
        st.apply(c);
        assert_eq!(st.pending, names(&["d"]).into_iter().collect());
        assert_eq!(st.waited, names(&["c", "d"]).into_iter().collect());
        // d is done; a late report naming d again does not bring it back.
        let mut c = Changes::new(&st);
        c.handed_over(&st, 2, &names(&["d"]), &waiting(&[]));
        st.apply(c);
        let mut c = Changes::new(&st);
        c.handed_over(&st, 2, &names(&["e"]), &waiting(&["d", "c"]));
        st.apply(c);
        assert!(st.pending.is_empty(), "{:?}", st.pending);
        // Reports of another view change nothing.
        let mut c = Changes::new(&st);
        c.handed_over(&st, 1, &names(&["x"]), &waiting(&["y"]));
        st.apply(c);
        assert!(st.pending.is_empty());
    }

    #[test]
    fn a_write_with_a_context_of_a_view_outside_the_line_is_refused() {
        let st = moved_replica();
        let ctx = |epoch| Context {
            epoch,
            ts: 5,
            deps: Deps::new(),
            recent: Vec::new(),
        };
        let write = |c: Context| ClientWrite {
            key: "k",
            value: Some(Value::Str("v".into())),
            ttl_ms: None,
            ctx: c,
            id: None,
        };
        // Its line is 1 then 2: a context of either is named "before" / as is.
        for e in [1, 2] {
            assert!(Changes::new(&st).write(&st, write(ctx(e)), NOW).is_ok());
        }
        // A context that names nothing may come from anywhere.
        assert!(Changes::new(&st).write(&st, write(ctx(7)), NOW).is_ok());
        // A later view, or one it never installed: refused until it learns of it.
        let naming = |e| {
            let mut c = ctx(e);
            c.deps.add(
                1,
                Dot {
                    origin: 9,
                    counter: 1,
                },
            );
            c
        };
        for e in [3, 7] {
            assert_eq!(
                Changes::new(&st).write(&st, write(naming(e)), NOW),
                Err(Refused::UnknownView(2))
            );
        }
    }

    #[test]
    fn a_node_outside_a_view_keeps_whom_it_was_owed_by_and_its_line_of_views() {
        let st = moved_replica();
        let mut c = Changes::new(&st);
        // a leaves; c has not handed over yet.
        assert!(c.set_view(&st, View::new(3, names(&["b"]), 1), false));
        let mut st = st;
        st.apply(c);
        assert_eq!(st.pending, names(&["b", "c"]).into_iter().collect());
        assert_eq!(st.lineage.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        // Back in a later view: it waits for them all again (b is now its peer).
        let mut c = Changes::new(&st);
        assert!(c.set_view(&st, View::new(4, names(&["a", "b"]), 2), false));
        st.apply(c);
        assert_eq!(st.pending, names(&["c"]).into_iter().collect());
        assert!(st.handed.is_empty());
    }

    #[test]
    fn a_successor_follows_a_timestamp_minutes_ahead() {
        for minutes in [1u64, 2, 10, 60 * 24] {
            let ahead = NOW + ((minutes * 60_000) << HLC_SHIFT);
            assert!(next_ts(0, ahead, NOW) > ahead, "{minutes} min ahead");
            assert!(
                next_ts(ahead, 0, NOW) > ahead,
                "{minutes} min ahead, seen before"
            );
        }
    }

    #[test]
    fn timestamps_only_grow() {
        let mut last = 0;
        for ctx in [0, 5, NOW + (1 << 40), 3] {
            let ts = next_ts(last, ctx, NOW);
            assert!(ts > last && ts > ctx);
            last = ts;
        }
    }

    #[test]
    fn a_view_known_completed_is_kept_against_a_stale_one_of_its_generation() {
        let nodes = |ns: &[&str]| ns.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let base = View::new(0, nodes(&["a:1", "b:1"]), 1);
        let mut st = State::new("a:1".into(), 1, base.clone(), VClock::new(), 0);
        let x = base.successor(nodes(&["a:1", "b:1"]), 2);
        let y = base.successor(nodes(&["b:1", "a:1"]), 1);
        let (low, high) = if x.rank() < y.rank() { (x, y) } else { (y, x) };
        // Install the lower-ranked view, then learn that its change completed.
        for (view, completed, installs) in [(low.clone(), false, true), (low.clone(), true, false)]
        {
            let mut p = Changes::new(&st);
            assert_eq!(p.set_view(&st, view, completed), installs);
            st.apply(p);
        }
        assert!(st.view_completed() && *st.view == low);
        // The stale, higher-ranked view of the same generation is refused...
        let mut p = Changes::new(&st);
        assert!(!p.set_view(&st, high.clone(), false));
        assert!(p.is_empty(), "nothing to write");
        // ...but the next generation is installed, not yet known completed.
        let next = high.successor(nodes(&["a:1"]), 1);
        let mut p = Changes::new(&st);
        assert!(p.set_view(&st, next.clone(), false));
        st.apply(p);
        assert!(*st.view == next && !st.view_completed());
    }

    #[test]
    fn a_removal_holds_only_in_its_view_and_for_its_version() {
        let id = |counter| WriteId {
            ts: 10,
            origin: 1,
            counter,
        };
        let v = Version {
            id: id(1),
            dot: Dot {
                origin: 2,
                counter: 7,
            },
            epoch: 5,
            past: Deps::new(),
            value: Some(Value::Str("x".into())),
        };
        assert!(removal_holds(5, 5, Some(&v), id(1)));
        // A newer view overtook the hand-over (it may give the key back to this node).
        assert!(!removal_holds(4, 5, Some(&v), id(1)));
        // The key changed since, or is gone already.
        assert!(!removal_holds(5, 5, Some(&v), id(2)));
        assert!(!removal_holds(5, 5, None, id(1)));
    }

    /// A session writes `a` then `b` on one replica (the write of `b` depends on `a`,
    /// its own origin's earlier write, which its dot implies). Another session reads `b`
    /// there: a replica that has not received `a`'s write must not answer a read of `a`
    /// with an older version.
    #[test]
    fn reading_a_write_makes_the_writers_earlier_writes_a_dependency() {
        use crate::causal::read_is_safe;
        use crate::placement::View;
        let view = View::new(0, vec!["n1".into(), "n2".into()], 2);
        let mut writer = State::new("n1".into(), 1, view.clone(), VClock::new(), 0);
        let lagging = State::new("n2".into(), 2, view, VClock::new(), 0);
        let shard = writer.my_shard().unwrap();
        let put = |st: &mut State, key: &str, ctx: Context| {
            let mut c = Changes::new(st);
            let done = c
                .write(
                    st,
                    ClientWrite {
                        key,
                        value: Some(Value::Str("v".into())),
                        ttl_ms: None,
                        ctx: ctx.clone(),
                        id: None,
                    },
                    NOW,
                )
                .unwrap();
            st.apply(c);
            crate::replica::context_after_write(&ctx, &done, shard, key, true, st.last_ts)
        };
        let after_a = put(&mut writer, "a", Context::default());
        put(&mut writer, "b", after_a);
        let mut reader = Context::default();
        reader.observe(writer.get("b").unwrap(), shard, "b");
        assert!(
            !read_is_safe(&reader, shard, "a", &lagging.clock, None),
            "the reader depends on the write of a"
        );
        assert!(read_is_safe(
            &reader,
            shard,
            "a",
            &writer.clock,
            writer.get("a")
        ));
    }

    #[test]
    fn a_timestamp_no_node_could_issue_is_ignored() {
        let ts = next_ts(0, u64::MAX - 1, NOW);
        assert!(ts < MAX_TS);
    }

    /// A replica `me` of the first shard of a view of a, b, c and d (two replicas per
    /// shard), holding `keys` as `(key, origin, counter)`, live, its clock covering them.
    fn holding(me: &str, keys: &[(&str, u64, u64)]) -> State {
        let view = View::new(0, names(&["a", "b", "c", "d"]), 2);
        let mut st = State::new(me.into(), 1, view, VClock::default(), 0);
        for (k, origin, counter) in keys {
            let v = Version {
                id: WriteId {
                    ts: *counter,
                    origin: *origin,
                    counter: *counter,
                },
                dot: Dot {
                    origin: *origin,
                    counter: *counter,
                },
                epoch: 0,
                past: Default::default(),
                value: Some(Value::Str((*k).into())),
            };
            st.set(k, Some(v));
            st.clock.raise(*origin, *counter);
        }
        st
    }

    /// `n` keys of the first shard of [`holding`]'s view (owned by a and b).
    fn owned_keys(n: usize) -> Vec<String> {
        let st = holding("a", &[]);
        (0..)
            .map(|i| format!("k{i:03}"))
            .filter(|k| st.owns(k))
            .take(n)
            .collect()
    }

    fn run(after: Option<&str>, through: Option<&str>) -> KeyRun {
        KeyRun {
            after: after.map(str::to_string),
            through: through.map(str::to_string),
        }
    }

    #[test]
    fn a_restored_replica_drops_what_a_peer_saw_deleted_and_collected() {
        let k = owned_keys(4);
        // Its peer b held k0..k2 (origin 1); k0 was deleted and its tombstone
        // collected since. The restored replica a still holds k0, and a write of its
        // own (origin 2) that b has not received.
        let b = holding("b", &[(&k[1], 1, 2), (&k[2], 1, 3)]);
        let mut b_clock = b.clock.clone();
        b_clock.raise(1, 4); // the delete
        let mut a = holding(
            "a",
            &[(&k[0], 1, 1), (&k[1], 1, 2), (&k[2], 1, 3), (&k[3], 2, 1)],
        );
        // ...and a tombstone b collected: it stays (tombstone collection has it).
        let tomb_key = owned_keys(5)[4].clone();
        let mut tomb = a.get(&k[0]).unwrap().clone();
        tomb.value = None;
        (tomb.dot.counter, tomb.id.counter) = (4, 4);
        a.set(&tomb_key, Some(tomb));
        let sent: Vec<(String, Version)> = b
            .keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let mut c = Changes::new(&a);
        assert_eq!(c.sync_run(&a, 0, sent, &run(None, None), &b_clock), 1);
        a.apply(c);
        let held: Vec<&str> = a.keys.keys().map(|k| &**k).collect();
        assert_eq!(held, [&k[1], &k[2], &k[3], &tomb_key]);
        assert_eq!(a.live, 3);
    }

    #[test]
    fn only_keys_inside_the_run_and_of_the_shard_can_go() {
        let k = owned_keys(3);
        let foreign = (0..)
            .map(|i| format!("f{i:03}"))
            .find(|f| !holding("a", &[]).owns(f))
            .unwrap();
        let a = holding("a", &[(&k[0], 1, 1), (&k[2], 1, 2), (&foreign, 1, 3)]);
        let clock: VClock = [(1, 10)].into_iter().collect();
        let obsolete = |r: &KeyRun, epoch: u64| {
            let mut c = Changes::new(&a);
            let n = c.sync_run(&a, epoch, Vec::new(), r, &clock);
            let mut gone: Vec<String> = c.versions.into_keys().collect();
            gone.sort();
            (n, gone)
        };
        // The whole key space: both owned keys, never the foreign one (its new owners
        // have it; this replica hands it over).
        assert_eq!(
            obsolete(&run(None, None), 0),
            (2, vec![k[0].clone(), k[2].clone()])
        );
        // Runs that end before, start after, or lie between the keys.
        assert_eq!(
            obsolete(&run(None, Some(&k[1])), 0),
            (1, vec![k[0].clone()])
        );
        assert_eq!(
            obsolete(&run(Some(&k[0]), None), 0),
            (1, vec![k[2].clone()])
        );
        assert_eq!(obsolete(&run(Some(&k[0]), Some(&k[1])), 0).0, 0);
        // The run's ends: `after` excluded, `through` included.
        assert_eq!(
            obsolete(&run(Some(&k[0]), Some(&k[2])), 0),
            (1, vec![k[2].clone()])
        );
        // Bounds out of order (a malformed message) change nothing, and do not panic.
        assert_eq!(obsolete(&run(Some(&k[2]), Some(&k[0])), 0).0, 0);
        // A run sent in another view says nothing about this one.
        assert_eq!(obsolete(&run(None, None), 7).0, 0);
    }

    #[test]
    fn a_version_the_peers_clock_does_not_cover_stays() {
        let k = owned_keys(2);
        let mut a = holding("a", &[(&k[0], 1, 5), (&k[1], 2, 1)]);
        // The peer saw origin 1 up to 4 only, and nothing of origin 2.
        let clock: VClock = [(1, 4)].into_iter().collect();
        let mut c = Changes::new(&a);
        assert_eq!(c.sync_run(&a, 0, Vec::new(), &run(None, None), &clock), 0);
        a.apply(c);
        assert_eq!(a.keys.len(), 2);
    }
}
