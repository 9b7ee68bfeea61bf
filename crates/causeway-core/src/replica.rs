//! Rules a replica's shells apply around its state: whether its shard is complete (so it
//! may serve contexts from before a view change), which tombstones it may collect, which
//! version a read answers with when it asked its peers, the identity a forwarding node
//! gives a write, and the context a client gets back after a write.
//!
//! Which views a replica knows (its own line, and views reported with hand-overs whose
//! members it all waited for), and so which contexts it may serve or write with, is
//! here too, with what a node reports when it has handed everything over.
//!
//! Invariants kept here: a context of a view the replica does not know is never counted
//! as satisfied by its completeness; a tombstone is collected only once every shard
//! peer's clock of the current view covers it and it is older than any idempotent retry
//! of what it deleted; every attempt of one forwarded write carries one identity; a
//! read answers with the newer of its own and a peer's version. All of it is plain data
//! in, data out: the node and the simulator call the same functions.

use crate::causal::context::key_tag;
use crate::causal::{Context, ShardNo, VClock, Version, WriteId};
use crate::changes::{next_ts, WriteDone};
use crate::plant::{active, Plant};
use crate::state::{State, ViewMembers};
use std::collections::{BTreeMap, HashMap};

/// Shard peers' clocks from when they had received all their hand-overs, in `epoch`:
/// the first one each sent (any after that moment will do, and the first is the one
/// this replica catches up with soonest).
#[derive(Default, Debug, Clone)]
pub struct Settled {
    pub epoch: u64,
    pub clocks: HashMap<String, VClock>,
}

/// Whether this replica has its whole shard as of the view change (so it may serve
/// contexts from before it): nothing more to receive from old owners (`pending`
/// empty), and its clock covers what every shard peer held once that peer had
/// received everything too. Whoever accepted an old owner's keys did so before the
/// owner said it was done, so before any peer settled: covering every peer's settled
/// clock covers them, and the keys peers kept from before the change.
pub fn shard_complete(
    pending_empty: bool,
    epoch: u64,
    clock: &VClock,
    peers: &[&String],
    settled: &Settled,
) -> bool {
    if active(Plant::IgnoresOldContexts) {
        return true;
    }
    // The first view has no earlier one: nothing was handed over or kept from before.
    let first_view = epoch == 0;
    pending_empty
        && (first_view
            || peers.iter().all(|p| {
                settled.epoch == epoch && settled.clocks.get(*p).is_some_and(|c| clock.covers(c))
            }))
}

/// Whether a replica whose shard is `complete` ([`shard_complete`]) is complete for a
/// context issued in view `ctx_epoch`. Completeness counts the hand-overs of the nodes
/// this replica waited for, which it learnt from the views it passed through and from
/// whom those nodes still waited for. A view it skipped, or a racing view it never
/// installed, may have had members that took writes and that nobody it waited for
/// knew of. So the context's view must be in its own line ([`State::lineage`]), or be
/// a view another replica reported with its hand-over ([`State::heard`]) whose every
/// member this replica waited for, heard from that it handed everything over, or
/// replicates with.
pub fn complete_for(st: &State, ctx_epoch: u64, complete: bool) -> bool {
    if active(Plant::IgnoresOldContexts) {
        return true;
    }
    if !complete {
        return false;
    }
    // A later view's context is refused by the read rule itself (`epochs_allow`).
    ctx_epoch > st.view.epoch || knows_view(st, ctx_epoch)
}

/// Whether view `epoch` is in this replica's own line of views, or was reported to it
/// ([`State::heard`]) with members it all waited for, heard from that they handed
/// everything over, or replicates with: then every write of that view that belongs
/// here reaches it before its shard is complete, and a context of that view is one it
/// can name ("everything before my view") and, once complete, serve.
pub fn knows_view(st: &State, epoch: u64) -> bool {
    if epoch == st.view.epoch || st.lineage.contains_key(&epoch) {
        return true;
    }
    if st.older_views_known && epoch < st.view.epoch {
        return true;
    }
    let mine: &[String] = match st.my_shard() {
        Some(shard) => st.view.replicas(shard),
        None => &[],
    };
    st.heard.get(&epoch).is_some_and(|members| {
        members.iter().all(|m| {
            *m == st.me || mine.contains(m) || st.waited.contains(m) || st.handed.contains(m)
        })
    })
}

/// What a node says with "I hold nothing more to hand over" (and when asked whether it
/// holds anything): whom it still waits for hand-overs from itself, and the newest views
/// of its own line ([`REPORTED_VIEWS`]), so that the replicas it reports to wait for
/// those too and may serve contexts of those views ([`complete_for`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandOverReport {
    pub waiting: Vec<String>,
    pub views: Vec<ViewMembers>,
}

/// How many of the newest views of its line a node reports with its hand-over.
pub const REPORTED_VIEWS: usize = 8;

/// This node's [`HandOverReport`] now.
pub fn hand_over_report(st: &State) -> HandOverReport {
    HandOverReport {
        waiting: st.pending.iter().cloned().collect(),
        views: st
            .lineage
            .iter()
            .rev()
            .filter(|(e, _)| **e != st.view.epoch)
            .take(REPORTED_VIEWS)
            .map(|(e, m)| (*e, m.clone()))
            .collect(),
    }
}

/// The clocks tombstone collection counts on: one per shard peer of `st` (the other
/// replicas of its shard in the view in force), each as the peer reported it in that
/// view (`reported` gives a peer's last report and the epoch it was made in). `None`
/// when `st` has no shard or some peer has not reported in this view: nothing may be
/// collected then.
pub fn shard_peer_clocks<'a>(
    st: &State,
    reported: impl Fn(&str) -> Option<&'a (u64, VClock)>,
) -> Option<Vec<&'a VClock>> {
    let shard = st.my_shard()?;
    st.view
        .replicas(shard)
        .iter()
        .filter(|p| **p != st.me)
        .map(|p| {
            reported(p)
                .filter(|(e, _)| *e == st.view.epoch)
                .map(|(_, c)| c)
        })
        .collect()
}

/// The tombstones of `st` that may be collected, at most `limit`, in key order:
/// those every shard peer's clock (`peer_clocks`, one per peer, all of the current
/// view) covers, and written at or before `old_enough` (a tombstone outlives every
/// idempotent retry of what it deleted: such a retry is that write again, which the
/// tombstone supersedes, and would bring the key back without it).
pub fn collectable_tombstones(
    st: &State,
    peer_clocks: &[&VClock],
    old_enough: u64,
    limit: usize,
) -> Vec<(String, WriteId)> {
    let mut keys: Vec<&crate::state::Key> = st.tombstones.iter().collect();
    keys.sort();
    let acknowledged = |v: &Version| {
        if active(Plant::EarlyTombstoneCollection) {
            peer_clocks.iter().any(|c| c.contains(v.dot))
        } else {
            peer_clocks.iter().all(|c| c.contains(v.dot))
        }
    };
    keys.into_iter()
        .filter_map(|k| {
            let v = st.keys.get(k)?;
            (v.id.ts <= old_enough && acknowledged(v)).then(|| (k.to_string(), v.id))
        })
        .take(limit)
        .collect()
}

/// Keys `st` holds that its view places in another shard (its own shard's keys stay;
/// a node outside the view holds only foreign keys), grouped by their new shard, in key
/// order: what a hand-over sends.
pub fn foreign_keys(st: &State) -> BTreeMap<ShardNo, Vec<(String, Version)>> {
    let mut groups: BTreeMap<ShardNo, Vec<(String, Version)>> = BTreeMap::new();
    for (s, k, v) in foreign(st) {
        groups
            .entry(s)
            .or_default()
            .push((k.to_string(), v.clone()));
    }
    groups
}

/// The keys of [`foreign_keys`], in key order, with their new shard, borrowed.
pub fn foreign(st: &State) -> impl Iterator<Item = (ShardNo, &str, &Version)> {
    let mine = st.my_shard();
    let sharded = st.view.shard_count() > 0;
    st.keys
        .iter()
        .filter(move |_| sharded)
        .map(|(k, v)| (st.view.shard_of_key(k), &**k, v))
        .filter(move |(s, _, _)| Some(*s) != mine)
}

/// The largest hand-over message a node holding what `st` holds may have sent, in
/// bytes: a batch carries at most `chunk_bytes`, or one version if that
/// alone is larger (see [`hand_over_plan`]); `None` when it holds nothing to hand over.
///
/// A node restarted while it still held keys to hand over must not say it holds no
/// more (announce it, or answer an old owner's question) before the budget of a message
/// of that size has run out since the restart: its previous process may have sent a
/// batch just before it stopped, which a replica still applies until that budget ends.
/// Told too early, the replica could collect a tombstone that the late batch then
/// undoes. Holding nothing at the restart, it has no such batch on its way: a process
/// drops a batch's keys only once every replica answered it or its budget ran out.
pub fn largest_hand_over_message(st: &State, chunk_bytes: usize) -> Option<usize> {
    let largest = foreign(st)
        .map(|(_, k, v)| crate::state::weight(k, v))
        .max()?;
    Some(chunk_bytes + largest)
}

/// One pass of a hand-over: `groups` (see [`foreign_keys`]) cut into batches within
/// `budget`, each for one shard's replicas. Every key goes in exactly one batch.
/// Returns the batches, and keys to drop without sending (always none: only a
/// planted bug drops any).
#[allow(clippy::type_complexity)]
pub fn hand_over_plan(
    groups: BTreeMap<ShardNo, Vec<(String, Version)>>,
    budget: crate::state::Budget,
) -> (
    Vec<(ShardNo, Vec<(String, Version)>)>,
    Vec<(String, WriteId)>,
) {
    let mut batches = Vec::new();
    for (shard, items) in groups {
        for run in crate::state::split_by_budget(&items, budget) {
            batches.push((shard, run.to_vec()));
        }
    }
    let mut dropped = Vec::new();
    if active(Plant::HandOverDropsLastBatch) {
        if let Some((_, last)) = batches.pop() {
            dropped = last.into_iter().map(|(k, v)| (k, v.id)).collect();
        }
    }
    (batches, dropped)
}

/// The version a read answers with, given this replica's own (`local`) and the one a
/// shard peer safely answered with (`fetched`): the later write.
pub fn read_answer(local: Option<Version>, fetched: Option<Version>) -> Option<Version> {
    match (local, fetched) {
        (Some(l), Some(f)) => Some(if f.id > l.id { f } else { l }),
        (l, f) => f.or(l),
    }
}

/// A fresh identity for a write a node forwards: its timestamp is above the client's
/// context (`ctx_ts`, so the write beats everything the client has seen), above every
/// identity this node handed out before (`last_ts`) and at least `now` (the node's
/// hybrid clock); `origin` is the forwarding node's and `counter` its next number.
pub fn forwarded_write_id(
    last_ts: u64,
    ctx_ts: u64,
    now: u64,
    origin: u64,
    counter: u64,
) -> WriteId {
    WriteId {
        ts: next_ts(last_ts, ctx_ts, now),
        origin,
        counter,
    }
}

/// The identity attempt number `attempt` (0 for the first) of a forwarded write
/// carries: always the first attempt's, `first`, so that copies applied by different
/// replicas (an attempt whose answer was lost) are one write. `mint` makes a new one.
pub fn attempt_write_id(first: WriteId, attempt: usize, mint: impl FnOnce() -> WriteId) -> WriteId {
    if attempt > 0 && active(Plant::RetryMintsNewIdentity) {
        return mint();
    }
    first
}

/// The context a DELETE writes with, once the read it starts with found `found`, live,
/// and returned `after` (`ctx`, the client's context, having seen `found`): `after`,
/// so that the delete supersedes what it deleted, unless the delete carries a forwarded
/// identity `id` that `found` outranks. Such an identity was minted before the read (on
/// the forwarding node, and kept on every attempt so that copies of the write are one
/// write), so its timestamp may lie below `found`'s: a version whose past names a write
/// of its key that wins over it would contradict the order every replica merges by (a
/// replica holding the tombstone would count a session that read `found` as served,
/// and answer "not found" while `found` is the value). The delete then is what it was
/// when minted, concurrent with `found`: it writes with the client's context and loses
/// to `found` everywhere.
pub fn delete_context(
    ctx: &Context,
    after: Context,
    found: Option<&Version>,
    id: Option<WriteId>,
) -> Context {
    match (found, id) {
        (Some(v), Some(id)) if v.id > id => ctx.clone(),
        _ => after,
    }
}

/// The context a client gets back after its write `done` of `key` (in `shard`; a PUT
/// when `is_put`), sent with context `ctx`, on a replica whose last timestamp is
/// `last_ts`: the write's view, the write itself as the client's recent write of the
/// key, and a timestamp at least the write's and the replica's ([`answer_ts`]).
/// The replica took the write, so it knows the context's view
/// ([`crate::changes::Refused::UnknownView`]): what the context named is "before" the
/// write's view ([`Context::before`]).
pub fn context_after_write(
    ctx: &Context,
    done: &WriteDone,
    shard: ShardNo,
    key: &str,
    is_put: bool,
    last_ts: u64,
) -> Context {
    let mut out = ctx.before(done.epoch);
    out.ts = answer_ts(out.ts.max(done.ts), last_ts);
    out.add_recent_tagged(shard, done.dot, key_tag(key), is_put);
    out
}

/// The timestamp of the context a replica answers with, from `ts` (the context's so
/// far) and `last_ts` (the latest timestamp the replica issued or saw): at least both.
///
/// A write's dot names, by prefix, every earlier write of its origin; a client that
/// depends on the write depends on those too (the read rule and every later write's
/// past say so). A write whose identity was fixed elsewhere (forwarded, or by an
/// idempotency key) may carry a timestamp below those earlier writes'; were the
/// client's context to stay below them, its next write could be ordered before a write
/// it supersedes, and a replica would answer a read with a version older than one the
/// client depends on. The replica's last timestamp covers every write it holds.
pub fn answer_ts(ts: u64, last_ts: u64) -> u64 {
    ts.max(last_ts.min(crate::causal::version::MAX_TS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::{Deps, Dot, Value};
    use crate::placement::View;

    fn version(origin: u64, counter: u64, ts: u64, value: Option<&str>) -> Version {
        Version {
            id: WriteId {
                ts,
                origin,
                counter,
            },
            dot: Dot { origin, counter },
            epoch: 0,
            past: Deps::new(),
            value: value.map(|s| Value::Str(s.into())),
        }
    }

    #[test]
    fn the_largest_hand_over_message_bounds_every_batch() {
        // Node "a" outside a view of two shards: every key it holds goes.
        let view = View::new(1, vec!["b".into(), "c".into()], 1);
        let mut st = State::new("a".into(), 1, view, VClock::default(), 0);
        assert_eq!(largest_hand_over_message(&st, 100), None);
        let small = version(1, 1, 10, Some("v"));
        let big = version(1, 2, 11, Some(&"x".repeat(500)));
        st.bulk_load(vec![("a".into(), small.clone()), ("b".into(), big.clone())]);
        let held = foreign_keys(&st);
        assert_eq!(held.values().map(Vec::len).sum::<usize>(), 2);
        let largest = crate::state::weight("b", &big);
        assert!(largest > crate::state::weight("a", &small));
        assert_eq!(largest_hand_over_message(&st, 100), Some(100 + largest));
        // Every batch a pass makes fits in it.
        let budget = crate::state::Budget {
            versions: 10,
            bytes: 100,
        };
        let (batches, _) = hand_over_plan(held.clone(), budget);
        for (_, batch) in batches {
            let bytes: usize = batch.iter().map(|(k, v)| crate::state::weight(k, v)).sum();
            assert!(bytes <= 100 + largest);
        }
    }

    #[test]
    fn a_context_of_a_view_outside_the_line_is_served_only_once_its_members_were_waited_for() {
        use crate::changes::Changes;
        let names = |ns: &[&str]| ns.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mut st = State::new(
            "a".into(),
            1,
            View::new(1, names(&["a", "c"]), 1),
            VClock::default(),
            0,
        );
        let mut c = Changes::new(&st);
        assert!(c.set_view(&st, View::new(5, names(&["a", "b"]), 1), false));
        st.apply(c);
        assert_eq!(st.waited, names(&["c"]).into_iter().collect());
        assert!(complete_for(&st, 1, true), "the view it moved from");
        assert!(complete_for(&st, 5, true) && complete_for(&st, 6, true));
        assert!(!complete_for(&st, 1, false));
        // 3: a racing view it never installed, or one it skipped.
        assert!(!complete_for(&st, 3, true));
        // c reports view 3 of its line, of b and c: b has its own shard here (one
        // replica each), and a never waited for it.
        let report = |views: Vec<(u64, Vec<String>)>| HandOverReport {
            waiting: Vec::new(),
            views,
        };
        let mut c = Changes::new(&st);
        c.handed_over(
            &st,
            5,
            &names(&["c"]),
            &report(vec![(3, names(&["b", "c"]))]),
        );
        st.apply(c);
        assert!(!complete_for(&st, 3, true), "b may hold writes of view 3");
        // A view of members it waited for (c) or is (a) is covered.
        let mut c = Changes::new(&st);
        c.handed_over(
            &st,
            5,
            &names(&["c"]),
            &report(vec![(4, names(&["a", "c"]))]),
        );
        st.apply(c);
        assert!(complete_for(&st, 4, true));
        // Reports of another view are ignored.
        let mut c = Changes::new(&st);
        c.handed_over(&st, 6, &names(&["c"]), &report(vec![(2, names(&["c"]))]));
        st.apply(c);
        assert!(!complete_for(&st, 2, true));
        // A data directory from before lineages: older views count as known until the
        // next view is installed.
        st.older_views_known = true;
        assert!(knows_view(&st, 3) && !knows_view(&st, 9));
        let mut c = Changes::new(&st);
        assert!(c.set_view(&st, View::new(6, names(&["a", "b"]), 1), false));
        st.apply(c);
        assert!(!knows_view(&st, 3) && knows_view(&st, 5));
        // The report a node makes: whom it waits for, and its line but the view in force.
        assert_eq!(
            hand_over_report(&st),
            HandOverReport {
                waiting: names(&["b"]),
                views: vec![(5, names(&["a", "b"])), (1, names(&["a", "c"]))],
            }
        );
    }

    #[test]
    fn a_shard_is_complete_once_handed_over_and_every_peers_settled_state_is_covered() {
        let (a, b) = ("a".to_string(), "b".to_string());
        let peers = [&a, &b];
        let mine: VClock = [(1, 5), (2, 5)].into_iter().collect();
        let mut settled = Settled {
            epoch: 7,
            clocks: HashMap::new(),
        };
        assert!(!shard_complete(true, 7, &mine, &peers, &settled));
        settled
            .clocks
            .insert(a.clone(), [(1, 5)].into_iter().collect());
        assert!(!shard_complete(true, 7, &mine, &peers, &settled));
        settled
            .clocks
            .insert(b.clone(), [(2, 6)].into_iter().collect());
        assert!(!shard_complete(true, 7, &mine, &peers, &settled));
        settled
            .clocks
            .insert(b.clone(), [(2, 4)].into_iter().collect());
        assert!(shard_complete(true, 7, &mine, &peers, &settled));
        assert!(!shard_complete(false, 7, &mine, &peers, &settled));
        assert!(!shard_complete(true, 8, &mine, &peers, &settled));
        assert!(shard_complete(true, 8, &mine, &[], &Settled::default()));
        assert!(shard_complete(true, 0, &mine, &peers, &Settled::default()));
    }

    #[test]
    fn a_tombstone_goes_once_every_peer_has_it_and_it_is_old_enough() {
        let mut st = State::new(
            "a".into(),
            1,
            View::new(0, vec!["a".into()], 1),
            VClock::new(),
            0,
        );
        st.set("x", Some(version(1, 1, 10, None)));
        st.set("y", Some(version(1, 2, 20, None)));
        st.set("z", Some(version(1, 3, 30, Some("live"))));
        let both: VClock = [(1, 3)].into_iter().collect();
        let one: VClock = [(1, 1)].into_iter().collect();
        let names = |v: Vec<(String, WriteId)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            names(collectable_tombstones(&st, &[&both, &both], 100, 10)),
            ["x", "y"]
        );
        assert_eq!(
            names(collectable_tombstones(&st, &[&both, &one], 100, 10)),
            ["x"]
        );
        assert_eq!(
            names(collectable_tombstones(&st, &[&both], 15, 10)),
            ["x"],
            "too young"
        );
        assert_eq!(names(collectable_tombstones(&st, &[&both], 100, 1)), ["x"]);
        assert_eq!(names(collectable_tombstones(&st, &[], 100, 10)), ["x", "y"]);
    }

    #[test]
    fn a_read_answers_with_the_later_write() {
        let old = version(1, 1, 10, Some("old"));
        let new = version(2, 1, 20, Some("new"));
        assert_eq!(
            read_answer(Some(old.clone()), Some(new.clone())),
            Some(new.clone())
        );
        assert_eq!(
            read_answer(Some(new.clone()), Some(old.clone())),
            Some(new.clone())
        );
        assert_eq!(read_answer(None, Some(old.clone())), Some(old.clone()));
        assert_eq!(read_answer(Some(old.clone()), None), Some(old));
        assert_eq!(read_answer(None, None), None);
    }

    #[test]
    fn every_attempt_of_a_forwarded_write_has_the_first_ones_identity() {
        let first = forwarded_write_id(5, 9, 7, 42, 0);
        assert_eq!(first.ts, 10, "above the context and the last one");
        assert_eq!(forwarded_write_id(50, 9, 7, 42, 1).ts, 51);
        assert_eq!(forwarded_write_id(5, 9, 70, 42, 1).ts, 70);
        for attempt in 0..3 {
            let id = attempt_write_id(first, attempt, || forwarded_write_id(10, 9, 7, 42, 1));
            assert_eq!(id, first);
        }
    }

    /// A replica wrote `a` with its clock ahead, then applied a forwarded write of `b`
    /// whose identity was minted on a slower clock. Its dot names `a`'s write by prefix,
    /// so a client of `b` depends on `a`: its next write of `a`, forwarded from a slow
    /// node too, must win over it.
    #[test]
    fn a_client_of_a_forwarded_write_orders_its_next_writes_after_what_it_depends_on() {
        use crate::causal::version::HLC_SHIFT;
        use crate::changes::{Changes, ClientWrite};
        let slow = 1_780_000_000_000u64 << HLC_SHIFT;
        let fast = slow + (2_000 << HLC_SHIFT);
        let view = View::new(0, vec!["n1".into()], 1);
        let mut st = State::new("n1".into(), 1, view, VClock::new(), 0);
        let shard = st.my_shard().unwrap();
        let write = |st: &mut State, key: &str, ctx: &Context, id: Option<WriteId>, now| {
            let mut c = Changes::new(st);
            let w = ClientWrite {
                key,
                value: Some(Value::Str(key.into())),
                ttl_ms: None,
                ctx: ctx.clone(),
                id,
            };
            let done = c.write(st, w, now).unwrap();
            st.apply(c);
            context_after_write(ctx, &done, shard, key, true, st.last_ts)
        };
        write(&mut st, "a", &Context::default(), None, fast);
        let first_a = st.get("a").unwrap().id;
        let fwd = forwarded_write_id(0, 0, slow, 77, 0);
        let ctx = write(&mut st, "b", &Context::default(), Some(fwd), fast);
        let next = forwarded_write_id(0, ctx.ts, slow, 77, 1);
        assert!(
            next > first_a,
            "the client's next write of a is ordered after a's first"
        );
    }

    #[test]
    fn a_write_becomes_the_clients_recent_write_of_its_key() {
        let done = WriteDone {
            existed: false,
            dot: Dot {
                origin: 3,
                counter: 4,
            },
            ts: 99,
            epoch: 2,
        };
        let ctx = Context {
            epoch: 2,
            ts: 50,
            ..Context::default()
        };
        let out = context_after_write(&ctx, &done, 1, "k", true, 0);
        assert_eq!(out.ts, 99);
        assert_eq!(context_after_write(&ctx, &done, 1, "k", true, 120).ts, 120);
        let r = out.recent_of(1, "k").unwrap();
        assert_eq!((r.dot, r.live), (done.dot, true));
    }

    /// Simulator seed 798 (default sweep): a DELETE forwarded with an identity minted
    /// before its read found a newer PUT wrote a tombstone whose past named that PUT
    /// while its timestamp lay below it; a replica holding the tombstone then answered
    /// "not found" to a session that had read the PUT.
    #[test]
    fn a_delete_with_an_older_forwarded_identity_never_claims_what_its_read_found() {
        let view = View::new(0, vec!["a".into(), "b".into()], 2);
        let mut st = State::new("a".into(), 1, view, VClock::new(), 0);
        let shard = st.my_shard().unwrap();
        let older = version(7, 1, 10, Some("older"));
        st.clock.raise(7, 1);
        st.set("k", Some(older));
        // The read found b's newer PUT (timestamp 50); the delete was minted at 20.
        let found = version(9, 3, 50, Some("newer"));
        let id = WriteId {
            ts: 20,
            origin: 42,
            counter: 0,
        };
        let client = Context::default();
        let mut after = client.clone();
        after.observe(&found, shard, "k");
        let tombstone = |ctx: Context| {
            let mut c = crate::changes::Changes::new(&st);
            let write = crate::changes::ClientWrite {
                key: "k",
                value: None,
                ttl_ms: None,
                ctx,
                id: Some(id),
            };
            c.write(&st, write, 1_000).unwrap();
            c.versions["k"].clone().unwrap()
        };
        // Written with what the read saw, the tombstone would claim the PUT...
        assert!(tombstone(after.clone()).supersedes(shard, 9, 3));
        // ...which wins over it everywhere by its timestamp: the rule keeps the client's.
        let ctx = delete_context(&client, after.clone(), Some(&found), Some(id));
        let t = tombstone(ctx);
        assert!(!t.supersedes(shard, 9, 3), "{t:?}");
        assert!(crate::causal::version::merge(Some(&t), &found, shard).is_some());
        // A delete whose identity outranks what it found (or that names itself here)
        // supersedes it.
        let newer_id = WriteId { ts: 60, ..id };
        assert_eq!(
            delete_context(&client, after.clone(), Some(&found), Some(newer_id)),
            after
        );
        assert_eq!(
            delete_context(&client, after.clone(), Some(&found), None),
            after
        );
    }
}
