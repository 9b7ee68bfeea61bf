//! The seeded fault schedule: when each fault episode starts, what it is,
//! and how long it holds. The same seed, duration and fault kinds give the
//! same schedule; which live node a kill or pause lands on is decided when
//! the episode starts, from the episode's own seed and the nodes then up.

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
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Partition,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::ViewChange,
        FaultKind::Clock,
    ];
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Partition => "partition",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::ViewChange => "view-change",
            FaultKind::Clock => "clock",
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
                format!("unknown fault kind {s:?} (partition, kill, pause, view-change, clock)")
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
    /// How long the fault holds before it is reverted.
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
        assert_eq!(parse_faults("all").unwrap().len(), 5);
        assert!(parse_faults("none").unwrap().is_empty());
        assert_eq!(
            parse_faults("kill,pause").unwrap(),
            vec![FaultKind::Kill, FaultKind::Pause]
        );
        assert!(parse_faults("kill,explode").is_err());
    }
}
