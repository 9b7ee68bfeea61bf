//! The seeded fault schedule: when each fault episode starts, what it is,
//! and how long it holds. The same seed, duration and fault kinds give the
//! same schedule; which live node a kill or pause lands on, and which view a
//! view change moves to (and, for a cut view change, which links it cuts), is
//! decided when the episode starts, from the episode's own seed, the view then
//! in force and the nodes then up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::rng::Rng;

/// The kinds of faults a campaign can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Cut node-to-node traffic (iptables), clients still reach every node.
    Partition,
    /// SIGKILL a node, restart it later on the same data directory.
    Kill,
    /// SIGSTOP a node, SIGCONT it later.
    Pause,
    /// Change the view (shard count, replication factor, membership).
    ViewChange,
    /// Jump one node's wall clock to a new offset from real time (libfaketime);
    /// every node also starts with an offset of its own.
    Clock,
    /// A view change that moves keys to new replicas while those are cut off
    /// (iptables) from old owners of the keys: the cut goes in, the view change
    /// is sent, the cut holds a few seconds after the answer, then heals.
    CutViewChange,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Partition,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::ViewChange,
        FaultKind::Clock,
        FaultKind::CutViewChange,
    ];

    /// True for kinds whose episodes cut links with iptables.
    pub fn cuts_links(self) -> bool {
        matches!(self, FaultKind::Partition | FaultKind::CutViewChange)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Partition => "partition",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::ViewChange => "view-change",
            FaultKind::Clock => "clock",
            FaultKind::CutViewChange => "cut-view-change",
        })
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| {
                let known: Vec<String> = FaultKind::ALL.iter().map(|k| k.to_string()).collect();
                format!("unknown fault kind {s:?} ({})", known.join(", "))
            })
    }
}

/// Parses a comma-separated list of fault kinds; `all` and `none` allowed.
pub fn parse_faults(list: &str) -> Result<Vec<FaultKind>, String> {
    match list.trim() {
        "all" => Ok(FaultKind::ALL.to_vec()),
        "none" | "" => Ok(Vec::new()),
        other => other.split(',').map(|s| s.trim().parse()).collect(),
    }
}

/// The shape of a partition, over node indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionShape {
    /// One node cut from every other node.
    Isolate(usize),
    /// The nodes split in two sides with no traffic between them.
    Split(Vec<usize>, Vec<usize>),
    /// A single link cut; both ends still reach everyone else.
    Link(usize, usize),
}

impl PartitionShape {
    /// The node pairs whose traffic is cut.
    pub fn links(&self, nodes: usize) -> Vec<(usize, usize)> {
        match self {
            PartitionShape::Isolate(n) => (0..nodes).filter(|m| m != n).map(|m| (*n, m)).collect(),
            PartitionShape::Split(a, b) => a
                .iter()
                .flat_map(|&x| b.iter().map(move |&y| (x, y)))
                .collect(),
            PartitionShape::Link(a, b) => vec![(*a, *b)],
        }
    }

    pub fn name(&self) -> String {
        match self {
            PartitionShape::Isolate(n) => format!("isolate node{n}"),
            PartitionShape::Split(a, b) => format!("split {a:?} | {b:?}"),
            PartitionShape::Link(a, b) => format!("cut link node{a}-node{b}"),
        }
    }
}

/// One fault episode.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// Offset from the start of the campaign.
    pub at: Duration,
    pub kind: FaultKind,
    /// How long the fault holds before it is reverted (a cut view change: how
    /// long the cut holds after the view change answered).
    pub hold: Duration,
    /// Partition shape (partitions only).
    pub shape: Option<PartitionShape>,
    /// Seeds the episode's runtime choices (which node, which view).
    pub seed: u64,
}

/// Plans the episodes of a campaign of `duration` over `nodes` nodes.
/// Episodes start every `mean_gap` on average, from 2 s in until 3 s before
/// the end, and may overlap.
pub fn plan(
    seed: u64,
    duration: Duration,
    nodes: usize,
    kinds: &[FaultKind],
    mean_gap: Duration,
) -> Vec<Episode> {
    let mut rng = Rng::derive(seed, 0xFA17);
    let mut out = Vec::new();
    if kinds.is_empty() || nodes < 2 {
        return out;
    }
    let end = duration.saturating_sub(Duration::from_secs(3));
    let gap_ms = mean_gap.as_millis().max(200) as u64;
    let mut at = Duration::from_secs(2);
    while at < end {
        let kind = *rng.pick(kinds);
        let hold = Duration::from_millis(match kind {
            FaultKind::Partition => rng.range(1_500, 8_000),
            FaultKind::Kill => rng.range(500, 5_000),
            FaultKind::Pause => rng.range(500, 6_000),
            FaultKind::CutViewChange => rng.range(CUT_HOLD_MS.0, CUT_HOLD_MS.1),
            FaultKind::ViewChange | FaultKind::Clock => 0,
        });
        let shape = (kind == FaultKind::Partition).then(|| partition_shape(&mut rng, nodes));
        out.push(Episode {
            at,
            kind,
            hold,
            shape,
            seed: rng.next_u64(),
        });
        at += Duration::from_millis(rng.range(gap_ms / 2, gap_ms * 3 / 2));
    }
    out
}

/// How long (ms, at least and below) a cut view change keeps its cut after the
/// view change answered.
pub const CUT_HOLD_MS: (u64, u64) = (2_000, 5_000);

fn partition_shape(rng: &mut Rng, nodes: usize) -> PartitionShape {
    match rng.below(3) {
        0 => PartitionShape::Isolate(rng.below(nodes as u64) as usize),
        1 => {
            let mut all: Vec<usize> = (0..nodes).collect();
            rng.shuffle(&mut all);
            let cut = rng.range(1, nodes as u64 - 1) as usize;
            let (a, b) = all.split_at(cut);
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort();
            b.sort();
            PartitionShape::Split(a, b)
        }
        _ => {
            let a = rng.below(nodes as u64) as usize;
            let b = (a + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
            PartitionShape::Link(a.min(b), a.max(b))
        }
    }
}

/// Largest clock offset (seconds, either way) a node is given.
pub const MAX_CLOCK_OFFSET_S: i64 = 120;

/// A node's clock offset from real time, in seconds: up to two minutes either way.
pub fn clock_offset(rng: &mut Rng) -> i64 {
    rng.range(0, 2 * MAX_CLOCK_OFFSET_S as u64 + 1) as i64 - MAX_CLOCK_OFFSET_S
}

/// Every node's clock offset at the start of a campaign with the clock nemesis.
pub fn initial_clock_offsets(seed: u64, nodes: usize) -> Vec<i64> {
    let mut rng = Rng::derive(seed, 0xC10C);
    (0..nodes).map(|_| clock_offset(&mut rng)).collect()
}

/// Views a view change may move to from `current_rf`, over `all` nodes:
/// every node with another replication factor (>= 2, dividing the node
/// count), or one shard's worth of nodes fewer (they stay up, outside the
/// view, and proxy). The order of the view is shuffled so shards regroup.
pub fn next_view(
    rng: &mut Rng,
    all: &[String],
    current: &[String],
    current_rf: usize,
) -> (Vec<String>, usize) {
    let n = all.len();
    let mut options: Vec<(usize, usize)> = Vec::new(); // (node count, rf)
    for rf in 2..=n {
        if n.is_multiple_of(rf) && (rf <= n / 2 || n <= 3) {
            options.push((n, rf));
        }
    }
    for rf in 2..=n / 2 {
        if (n - rf).is_multiple_of(rf) && n - rf >= rf {
            options.push((n - rf, rf));
        }
    }
    let here = (current.len(), current_rf);
    let mut choices: Vec<(usize, usize)> = options.iter().copied().filter(|o| *o != here).collect();
    if choices.is_empty() {
        choices = options;
    }
    if choices.is_empty() {
        return (all.to_vec(), current_rf);
    }
    let (count, rf) = *rng.pick(&choices);
    let mut nodes = all.to_vec();
    rng.shuffle(&mut nodes);
    nodes.truncate(count);
    (nodes, rf)
}

/// The shard (1-based) that owns `key` in a view of `shards` shards: the store's
/// placement (`causeway_core::placement`), so the campaign can tell which keys a view
/// change moves where.
pub fn shard_of_key(key: &str, shards: usize) -> usize {
    use causeway_core::placement::{jump_hash, key_hash};
    jump_hash(key_hash(key), shards.max(1) as u32) as usize + 1
}

/// The replicas of `shard` (1-based) in `view` grouped `rf` at a time, as the
/// store groups them; empty for a shard the view does not have.
pub fn replicas(view: &[String], rf: usize, shard: usize) -> &[String] {
    let shards = view.len().checked_div(rf).unwrap_or(0);
    if shard == 0 || shard > shards {
        return &[];
    }
    &view[(shard - 1) * rf..shard * rf]
}

/// A view change that moves keys to replicas cut off from their old owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutPlan {
    /// The view to change to, and its replication factor.
    pub view: Vec<String>,
    pub repl_factor: usize,
    /// The shard of the new view whose new replicas are cut off.
    pub shard: usize,
    /// Links cut while the view change runs: (new replica of `shard`, old owner
    /// of a key that moves to it). An old owner is never a replica of `shard`
    /// in the new view (those replicate rather than hand over).
    pub links: Vec<(String, String)>,
    /// Keys that move to a cut-off replica from an old owner it is cut from.
    pub moved: Vec<String>,
}

impl CutPlan {
    /// The new replicas that lose contact with some old owner.
    pub fn cut_off(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.links.iter().map(|(r, _)| r).collect();
        set.into_iter().cloned().collect()
    }

    /// The old owners they are cut from.
    pub fn owners(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.links.iter().map(|(_, o)| o).collect();
        set.into_iter().cloned().collect()
    }

    /// How the partition is named in the history.
    pub fn name(&self) -> String {
        format!(
            "cut-view-change: new replicas {:?} of shard {} cut from old owners {:?} of {:?}",
            self.cut_off(),
            self.shard,
            self.owners(),
            self.moved
        )
    }
}

/// One key's move in a view change: the new replicas that did not hold it and
/// the old owners that are not replicas of its new shard (they must hand it over).
struct Move<'a> {
    key: &'a str,
    newcomers: Vec<String>,
    sources: Vec<String>,
}

/// Plans a cut view change from `current` (replication factor `current_rf`)
/// over the `keys` the campaign uses: a target view (as [`next_view`] picks
/// them) in which some shard gets keys from replicas that did not hold them,
/// then a cut between (some of) those new replicas and (some of) the old owners
/// of the keys that move to them. At most `max_cut` nodes are cut off (the
/// campaign passes what `--max-down` leaves), and only nodes in `eligible` (those
/// up) are. `None` when no such change exists (or `max_cut` is 0).
pub fn plan_cut_view_change(
    rng: &mut Rng,
    all: &[String],
    current: &[String],
    current_rf: usize,
    keys: &[String],
    eligible: &[String],
    max_cut: usize,
) -> Option<CutPlan> {
    if max_cut == 0 || current_rf == 0 {
        return None;
    }
    let old_shards = current.len() / current_rf;
    for _ in 0..16 {
        let (view, rf) = next_view(rng, all, current, current_rf);
        if rf == 0 {
            continue;
        }
        let new_shards = view.len() / rf;
        let mut by_shard: BTreeMap<usize, Vec<Move<'_>>> = BTreeMap::new();
        for key in keys {
            let old = replicas(current, current_rf, shard_of_key(key, old_shards));
            let shard = shard_of_key(key, new_shards);
            let new = replicas(&view, rf, shard);
            let newcomers: Vec<String> = new
                .iter()
                .filter(|n| !old.contains(n) && eligible.contains(n))
                .cloned()
                .collect();
            let sources: Vec<String> = old.iter().filter(|n| !new.contains(n)).cloned().collect();
            if !newcomers.is_empty() && !sources.is_empty() {
                by_shard.entry(shard).or_default().push(Move {
                    key,
                    newcomers,
                    sources,
                });
            }
        }
        if by_shard.is_empty() {
            continue;
        }
        let shards: Vec<usize> = by_shard.keys().copied().collect();
        let shard = *rng.pick(&shards);
        let moves = &by_shard[&shard];
        // Which new replicas are cut off: one of them, or all (within max_cut).
        let mut cut_off: Vec<String> = moves
            .iter()
            .flat_map(|m| m.newcomers.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        rng.shuffle(&mut cut_off);
        let take = if rng.chance(0.5) { 1 } else { cut_off.len() };
        cut_off.truncate(take.min(max_cut));
        // From which old owners: every owner of a key moving to them, or one.
        let mut owners: Vec<String> = moves
            .iter()
            .filter(|m| m.newcomers.iter().any(|n| cut_off.contains(n)))
            .flat_map(|m| m.sources.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if rng.chance(0.5) {
            owners = vec![rng.pick(&owners).clone()];
        }
        let mut links = Vec::new();
        let mut moved = BTreeSet::new();
        for r in &cut_off {
            for o in &owners {
                let carried: Vec<&str> = moves
                    .iter()
                    .filter(|m| m.newcomers.contains(r) && m.sources.contains(o))
                    .map(|m| m.key)
                    .collect();
                if !carried.is_empty() {
                    links.push((r.clone(), o.clone()));
                    moved.extend(carried);
                }
            }
        }
        return Some(CutPlan {
            view,
            repl_factor: rf,
            shard,
            links,
            moved: moved.into_iter().map(str::to_string).collect(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_reproducible_and_within_the_campaign() {
        let kinds = FaultKind::ALL.to_vec();
        let a = plan(
            42,
            Duration::from_secs(120),
            6,
            &kinds,
            Duration::from_secs(4),
        );
        let b = plan(
            42,
            Duration::from_secs(120),
            6,
            &kinds,
            Duration::from_secs(4),
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            plan(
                43,
                Duration::from_secs(120),
                6,
                &kinds,
                Duration::from_secs(4)
            )
        );
        assert!(a.len() > 10);
        for kind in FaultKind::ALL {
            assert!(a.iter().any(|e| e.kind == kind), "{kind} never planned");
        }
        assert!(a
            .iter()
            .all(|e| e.at >= Duration::from_secs(2) && e.at < Duration::from_secs(117)));
    }

    #[test]
    fn partitions_cut_real_links_and_keep_sides_non_empty() {
        let mut rng = Rng::new(5);
        for _ in 0..200 {
            let shape = partition_shape(&mut rng, 6);
            let links = shape.links(6);
            assert!(!links.is_empty());
            assert!(links.iter().all(|(a, b)| a != b && *a < 6 && *b < 6));
        }
    }

    #[test]
    fn next_view_changes_shape_and_keeps_rf_dividing_the_view() {
        let all: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
        let mut rng = Rng::new(9);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let (view, rf) = next_view(&mut rng, &all, &all, 2);
            assert!(rf >= 2 && view.len() % rf == 0, "{view:?} rf {rf}");
            assert_ne!((view.len(), rf), (6, 2));
            seen.insert((view.len(), rf));
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            vec![(3, 3), (4, 2), (6, 3)]
        );
    }

    #[test]
    fn fault_lists_parse() {
        assert_eq!(parse_faults("all").unwrap().len(), 6);
        assert_eq!(
            parse_faults("partition,view-change,cut-view-change").unwrap(),
            vec![
                FaultKind::Partition,
                FaultKind::ViewChange,
                FaultKind::CutViewChange
            ]
        );
        for kind in FaultKind::ALL {
            assert_eq!(kind.to_string().parse::<FaultKind>(), Ok(kind));
        }
        assert!(parse_faults("none").unwrap().is_empty());
        assert_eq!(
            parse_faults("kill,pause").unwrap(),
            vec![FaultKind::Kill, FaultKind::Pause]
        );
        assert!(parse_faults("kill,explode").is_err());
    }

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn placement_matches_the_store() {
        // `causeway::placement::View::shard_of_key` for k0..k15 with 1..=6 shards.
        let expected: [[usize; 16]; 6] = [
            [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
            [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 2, 1, 2, 2, 1, 1],
            [3, 3, 3, 2, 3, 1, 2, 3, 3, 1, 2, 3, 2, 3, 3, 3],
            [4, 3, 3, 4, 3, 1, 4, 3, 4, 4, 4, 3, 4, 3, 4, 3],
            [4, 5, 5, 4, 3, 1, 4, 5, 4, 5, 4, 3, 5, 5, 4, 5],
            [4, 5, 5, 6, 3, 1, 4, 5, 4, 6, 4, 6, 6, 5, 4, 5],
        ];
        for (i, row) in expected.iter().enumerate() {
            let got: Vec<usize> = (0..16)
                .map(|k| shard_of_key(&format!("k{k}"), i + 1))
                .collect();
            assert_eq!(got, row.to_vec(), "{} shards", i + 1);
        }
        let view = names("n", 6);
        assert_eq!(replicas(&view, 2, 2), &view[2..4]);
        assert!(replicas(&view, 2, 4).is_empty());
        assert!(replicas(&view, 2, 0).is_empty());
    }

    /// Checks that `plan` is a well-formed cut view change from `current`.
    fn assert_well_formed(
        plan: &CutPlan,
        current: &[String],
        rf: usize,
        keys: &[String],
        eligible: &[String],
        max_cut: usize,
    ) {
        assert!(plan.repl_factor >= 2 && plan.view.len().is_multiple_of(plan.repl_factor));
        let new_shards = plan.view.len() / plan.repl_factor;
        let old_shards = current.len() / rf;
        let new = replicas(&plan.view, plan.repl_factor, plan.shard);
        assert!(!new.is_empty(), "{plan:?}");
        assert!(!plan.links.is_empty(), "{plan:?}");
        assert!(!plan.moved.is_empty(), "{plan:?}");
        let cut_off = plan.cut_off();
        assert!(
            (1..=max_cut).contains(&cut_off.len()),
            "{} nodes cut off, max {max_cut}: {plan:?}",
            cut_off.len()
        );
        assert!(cut_off.iter().all(|n| eligible.contains(n)), "{plan:?}");
        for k in &plan.moved {
            assert!(keys.contains(k));
            assert_eq!(shard_of_key(k, new_shards), plan.shard, "{k} in {plan:?}");
        }
        for (r, o) in &plan.links {
            assert_ne!(r, o);
            // A new replica of the shard, cut from an old owner that hands over.
            assert!(new.contains(r), "{r} is no replica of shard {}", plan.shard);
            assert!(!new.contains(o), "{o} replicates shard {}", plan.shard);
            // ... of some key that moves to it from that owner.
            let carried = plan.moved.iter().any(|k| {
                let old = replicas(current, rf, shard_of_key(k, old_shards));
                old.contains(o) && !old.contains(r)
            });
            assert!(carried, "no moved key from {o} to {r}: {plan:?}");
        }
        // Every moved key does move across a cut link.
        for k in &plan.moved {
            let old = replicas(current, rf, shard_of_key(k, old_shards));
            assert!(plan
                .links
                .iter()
                .any(|(r, o)| old.contains(o) && !old.contains(r)));
        }
    }

    #[test]
    fn cut_view_changes_cut_new_replicas_from_old_owners_of_moved_keys() {
        let keys = names("k", 16);
        // Three nodes have one view only (one shard of three): nothing moves.
        let three = names("n", 3);
        assert_eq!(
            plan_cut_view_change(&mut Rng::new(3), &three, &three, 3, &keys, &three, 2),
            None
        );
        for nodes in [4, 6, 8] {
            let all = names("n", nodes);
            let mut rng = Rng::new(nodes as u64);
            let (mut current, mut rf) = (all.clone(), 2);
            let mut planned = 0;
            let mut several = false;
            for round in 0..300 {
                let max_cut = 1 + round % 3;
                // Now and then a node is down and may not be chosen.
                let mut eligible = all.clone();
                if round % 4 == 3 {
                    eligible.remove(round % nodes);
                }
                let Some(plan) =
                    plan_cut_view_change(&mut rng, &all, &current, rf, &keys, &eligible, max_cut)
                else {
                    continue;
                };
                assert_well_formed(&plan, &current, rf, &keys, &eligible, max_cut);
                several |= plan.cut_off().len() > 1;
                planned += 1;
                current = plan.view;
                rf = plan.repl_factor;
            }
            assert!(
                planned > 250,
                "{nodes} nodes: only {planned} cut view changes"
            );
            assert!(several, "{nodes} nodes: never more than one node cut off");
        }
    }

    #[test]
    fn cut_view_changes_respect_the_budget_and_the_seed() {
        let keys = names("k", 16);
        let all = names("n", 6);
        let mut rng = Rng::new(1);
        assert_eq!(
            plan_cut_view_change(&mut rng, &all, &all, 2, &keys, &all, 0),
            None
        );
        assert_eq!(
            plan_cut_view_change(&mut rng, &all, &all, 2, &keys, &[], 2),
            None
        );
        let a = plan_cut_view_change(&mut Rng::new(7), &all, &all, 2, &keys, &all, 2);
        let b = plan_cut_view_change(&mut Rng::new(7), &all, &all, 2, &keys, &all, 2);
        assert!(a.is_some());
        assert_eq!(a, b);
    }

    #[test]
    fn cut_view_change_episodes_hold_their_cut_past_the_view_change() {
        let kinds = vec![FaultKind::CutViewChange, FaultKind::Partition];
        let plan = plan(
            3,
            Duration::from_secs(300),
            6,
            &kinds,
            Duration::from_secs(4),
        );
        let cuts: Vec<&Episode> = plan
            .iter()
            .filter(|e| e.kind == FaultKind::CutViewChange)
            .collect();
        assert!(cuts.len() > 10);
        for e in cuts {
            // The cut is planned at runtime (from the view then); the episode
            // keeps it 2 to 5 s after the view change answered.
            assert!(e.shape.is_none());
            assert!(
                e.hold >= Duration::from_millis(CUT_HOLD_MS.0)
                    && e.hold < Duration::from_millis(CUT_HOLD_MS.1),
                "{e:?}"
            );
        }
    }
}
