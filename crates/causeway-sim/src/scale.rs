//! Scale figures from fault-free simulated runs: keys moved when a shard is added or
//! the last one removed, the simulated time of those view changes with many keys, the
//! per-node bytes per second of replication and anti-entropy (idle, and at a fixed
//! write rate), and messages per write, for clusters of any size and replication factor.
//!
//! Owns: the scale scenarios and their measurements (nothing here decides anything
//! about the protocol: placement is `View::shard_of_key`, the nodes are the simulator's
//! [`SimNode`](crate::node::SimNode)s, sizes are [`Msg::wire_bytes`](crate::node::Msg::wire_bytes)).
//! Invariant: a measurement is a function of its [`ScaleOptions`] (the world's seed
//! included), so the table it prints is the same on every run.

use crate::world::{Traffic, World};
use crate::Config;
use causeway_core::placement::View;
use causeway_torture::rng::Rng;
use std::collections::BTreeMap;

/// What the scale runs measure, and how long.
#[derive(Clone, Debug)]
pub struct ScaleOptions {
    pub seed: u64,
    /// Keys loaded before the view changes (keys moved, view change time).
    pub keys: usize,
    /// Keys per shard in the traffic runs (written to at the fixed rate).
    pub traffic_keys_per_shard: usize,
    /// Simulated time of each traffic window (idle, then loaded), ms.
    pub window_ms: u64,
    /// Writes per second arriving at each node in the loaded window.
    pub writes_per_node_s: u64,
    /// Bytes of each written value.
    pub value_bytes: usize,
    /// Quiet time before the idle window (the start-up announcements end), ms.
    pub settle_ms: u64,
    /// Give up on a view change after this much simulated time, ms.
    pub view_change_limit_ms: u64,
}

impl ScaleOptions {
    /// The headline figures: 1M keys, 60 s windows, 100 writes/s per node of 100 bytes.
    pub fn full() -> ScaleOptions {
        ScaleOptions {
            seed: 1,
            keys: 1_000_000,
            traffic_keys_per_shard: 1000,
            window_ms: 60_000,
            writes_per_node_s: 100,
            value_bytes: 100,
            settle_ms: 10_000,
            view_change_limit_ms: 600_000,
        }
    }

    /// Fewer keys and shorter windows (seconds, not minutes).
    pub fn quick() -> ScaleOptions {
        ScaleOptions {
            keys: 20_000,
            traffic_keys_per_shard: 200,
            window_ms: 5_000,
            ..ScaleOptions::full()
        }
    }
}

/// Traffic of one window, over the nodes that are members of a shard.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub ms: u64,
    /// Mean over shard members of the bytes each sent per second.
    pub mean_bytes_s: f64,
    /// The most any one node sent per second.
    pub max_bytes_s: f64,
    /// Every node's messages and bytes, by kind.
    pub by_kind: BTreeMap<&'static str, Traffic>,
    pub messages: u64,
    /// Client writes in the window.
    pub writes: u64,
}

impl Window {
    /// Messages sent per client write (every kind, heartbeats included).
    pub fn messages_per_write(&self) -> f64 {
        self.messages as f64 / self.writes.max(1) as f64
    }
}

/// Keys whose shard changes with a view change.
#[derive(Clone, Copy, Debug, Default)]
pub struct Moved {
    pub keys: u64,
    pub moved: u64,
    /// The fewest any placement could move (1/(n+1) adding, 1/n removing).
    pub ideal: f64,
}

impl Moved {
    pub fn fraction(&self) -> f64 {
        self.moved as f64 / self.keys.max(1) as f64
    }
}

/// One row of the table: a cluster size and replication factor.
#[derive(Clone, Debug)]
pub struct Row {
    pub nodes: usize,
    pub rf: usize,
    pub shards: usize,
    pub added: Moved,
    pub removed: Moved,
    /// Simulated ms from the proposal until every shard of the new view is complete
    /// (`None`: not within the limit).
    pub add_ms: Option<u64>,
    pub remove_ms: Option<u64>,
    pub idle: Window,
    pub loaded: Window,
}

fn config(nodes: usize, rf: usize, seed: u64, count_bytes: bool) -> Config {
    let mut cfg = Config::new(seed);
    cfg.nodes = nodes;
    cfg.repl_factor = rf;
    cfg.faults = false;
    cfg.clock_faults = false;
    cfg.sessions = Some(0);
    cfg.ops = 0;
    cfg.max_steps = u64::MAX;
    cfg.count_bytes = count_bytes;
    cfg.announce_once = true;
    // The server's limit (a million keys are loaded: never a full transfer).
    cfg.delta_versions = 20_000;
    cfg
}

fn value(i: usize, bytes: usize) -> String {
    let mut v = format!("v{i}-");
    while v.len() < bytes {
        v.push('x');
    }
    v.truncate(bytes);
    v
}

/// The view of the world's first `n` nodes (after `from`) with `rf` replicas a shard.
fn view_of(w: &World, from: &View, n: usize, rf: usize) -> View {
    let names: Vec<String> = (0..n).map(|i| w.nodes[i].st.me.clone()).collect();
    from.successor(names, rf)
}

/// Whether every shard member of `view` runs it and holds its shard complete.
fn settled_in(w: &World, view: &View) -> bool {
    view.nodes.iter().all(|name| {
        let node = &w.nodes[w.index_of(name)];
        node.st.view.epoch == view.epoch && (node.st.my_shard().is_none() || node.complete())
    })
}

/// Proposes `view` (from its first node) and runs until it is settled: the simulated
/// ms that took, or `None` after `limit_ms`.
pub fn change_view(w: &mut World, view: &View, limit_ms: u64) -> Option<u64> {
    let start = w.now();
    let coordinator = w.index_of(&view.nodes[0]);
    w.propose(coordinator, view);
    while w.now() < start + limit_ms {
        let t = w.now() + 10;
        w.run_until(t);
        if settled_in(w, view) {
            return Some(w.now() - start);
        }
    }
    None
}

/// Loads `keys` keys (values of `value_bytes`) through one replica of each key's
/// shard, then runs until every replica of every shard holds all of them.
fn load(w: &mut World, view: &View, keys: &[String], value_bytes: usize) {
    let now = w.now();
    for (i, k) in keys.iter().enumerate() {
        let first = w.index_of(&view.replicas(view.shard_of_key(k))[0]);
        assert!(
            w.nodes[first].load(now, k, value(i, value_bytes)),
            "loads {k}"
        );
    }
    let limit = now + 600_000;
    let mut want = vec![0usize; view.shard_count()];
    for k in keys {
        want[view.shard_of_key(k) as usize - 1] += 1;
    }
    loop {
        let t = w.now() + 100;
        w.run_until(t);
        let full = (1..=view.shard_count() as u32).all(|s| {
            view.replicas(s)
                .iter()
                .all(|r| w.nodes[w.index_of(r)].st.keys.len() == want[s as usize - 1])
        });
        if full {
            return;
        }
        assert!(w.now() < limit, "replicas did not converge after loading");
    }
}

/// Keys held by the world (one replica of each shard of `from`) whose shard differs in `to`.
fn moved(w: &World, from: &View, to: &View, ideal: f64) -> Moved {
    let mut m = Moved {
        ideal,
        ..Moved::default()
    };
    for s in 1..=from.shard_count() as u32 {
        let node = &w.nodes[w.index_of(&from.replicas(s)[0])];
        for k in node.st.keys.keys() {
            m.keys += 1;
            if from.shard_of_key(k) != to.shard_of_key(k) {
                m.moved += 1;
            }
        }
    }
    m
}

fn key_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key{i:08}")).collect()
}

/// Keys moved and view change times: `keys` keys in `nodes` nodes, one shard added
/// (`rf` more nodes), then that last shard removed.
pub fn view_changes(
    nodes: usize,
    rf: usize,
    opts: &ScaleOptions,
) -> (Moved, Moved, Option<u64>, Option<u64>) {
    let mut w = World::new(config(nodes + rf, rf, opts.seed, false));
    let start = (*w.nodes[0].st.view).clone();
    let base = view_of(&w, &start, nodes, rf);
    change_view(&mut w, &base, opts.view_change_limit_ms).expect("the first view settles");
    let keys = key_names(opts.keys);
    load(&mut w, &base, &keys, opts.value_bytes);
    let shards = base.shard_count();
    // One more shard: rf more nodes (a cluster whose size is no multiple of rf has
    // spare nodes; the new shard's nodes go after them).
    let grown = view_of(&w, &base, shards * rf + rf, rf);
    let grown = if nodes > shards * rf {
        let mut names: Vec<String> = base.nodes.clone();
        names.extend((nodes..nodes + rf).map(|i| w.nodes[i].st.me.clone()));
        // Spare nodes stay spare: the new shard is the last rf names of the list.
        let mut ordered: Vec<String> = names[..shards * rf].to_vec();
        ordered.extend(names[nodes..].iter().cloned());
        ordered.extend(names[shards * rf..nodes].iter().cloned());
        base.successor(ordered, rf)
    } else {
        grown
    };
    assert_eq!(grown.shard_count(), shards + 1);
    let added = moved(&w, &base, &grown, 1.0 / (shards + 1) as f64);
    let add_ms = change_view(&mut w, &grown, opts.view_change_limit_ms);
    let shrunk = grown.successor(base.nodes.clone(), rf);
    let removed = moved(&w, &grown, &shrunk, 1.0 / (shards + 1) as f64);
    let remove_ms = change_view(&mut w, &shrunk, opts.view_change_limit_ms);
    (added, removed, add_ms, remove_ms)
}

fn window(
    w: &mut World,
    view: &View,
    ms: u64,
    writes: Option<(&[Vec<String>], &ScaleOptions)>,
) -> Window {
    w.counts.traffic.clear();
    let messages_before = w.counts.messages;
    let start = w.now();
    let mut written = 0u64;
    match writes {
        None => w.run_until(start + ms),
        Some((by_shard, opts)) => {
            // Every 10 ms, each shard member takes its share of the rate, on keys of
            // its shard (clients write to a replica of the key).
            let mut rng = Rng::derive(opts.seed, 7);
            let tick = 10;
            let per_tick = opts.writes_per_node_s as f64 * tick as f64 / 1000.0;
            let members: Vec<(usize, u32)> = view
                .nodes
                .iter()
                .filter_map(|n| view.shard_of_node(n).map(|s| (w.index_of(n), s)))
                .collect();
            let mut owed = 0.0;
            let mut t = start;
            while t < start + ms {
                owed += per_tick;
                while owed >= 1.0 {
                    owed -= 1.0;
                    for &(node, shard) in &members {
                        let keys = &by_shard[shard as usize - 1];
                        let k = &keys[rng.below(keys.len() as u64) as usize];
                        w.client_write(node, k, value(written as usize, opts.value_bytes));
                        written += 1;
                    }
                }
                t += tick;
                w.run_until(t);
            }
        }
    }
    let secs = ms as f64 / 1000.0;
    let mut per_node: BTreeMap<usize, u64> = BTreeMap::new();
    let mut by_kind: BTreeMap<&'static str, Traffic> = BTreeMap::new();
    for (&(node, kind), t) in &w.counts.traffic {
        *per_node.entry(node).or_default() += t.bytes;
        let k = by_kind.entry(kind).or_default();
        k.messages += t.messages;
        k.bytes += t.bytes;
    }
    let members: Vec<usize> = view
        .nodes
        .iter()
        .filter(|n| view.shard_of_node(n).is_some())
        .map(|n| w.index_of(n))
        .collect();
    let total: u64 = members
        .iter()
        .map(|m| per_node.get(m).copied().unwrap_or(0))
        .sum();
    Window {
        ms,
        mean_bytes_s: total as f64 / members.len().max(1) as f64 / secs,
        max_bytes_s: per_node.values().copied().max().unwrap_or(0) as f64 / secs,
        by_kind,
        messages: w.counts.messages - messages_before,
        writes: written,
    }
}

/// Per-node traffic, idle and at the fixed write rate, in a cluster of `nodes` nodes.
pub fn traffic(nodes: usize, rf: usize, opts: &ScaleOptions) -> (Window, Window) {
    let mut w = World::new(config(nodes, rf, opts.seed, true));
    let view = (*w.nodes[0].st.view).clone();
    let keys = key_names(opts.traffic_keys_per_shard * view.shard_count());
    load(&mut w, &view, &keys, opts.value_bytes);
    let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); view.shard_count()];
    for k in keys {
        by_shard[view.shard_of_key(&k) as usize - 1].push(k);
    }
    let settle = w.now() + opts.settle_ms;
    w.run_until(settle);
    let idle = window(&mut w, &view, opts.window_ms, None);
    let loaded = window(&mut w, &view, opts.window_ms, Some((&by_shard, opts)));
    (idle, loaded)
}

/// Every figure for one cluster size and replication factor.
pub fn row(nodes: usize, rf: usize, opts: &ScaleOptions) -> Row {
    let (added, removed, add_ms, remove_ms) = view_changes(nodes, rf, opts);
    let (idle, loaded) = traffic(nodes, rf, opts);
    Row {
        nodes,
        rf,
        shards: nodes / rf,
        added,
        removed,
        add_ms,
        remove_ms,
        idle,
        loaded,
    }
}

fn ms(x: Option<u64>) -> String {
    x.map_or("not within the limit".to_string(), |m| m.to_string())
}

/// The rows as a markdown table.
pub fn markdown(rows: &[Row], opts: &ScaleOptions) -> String {
    let mut s = format!(
        "| nodes | rf | shards | keys moved adding a shard (ideal 1/(n+1)) | keys moved removing the last shard | view change, add (simulated ms, {} keys) | view change, remove (ms) | idle bytes/s per node (max) | loaded bytes/s per node (max) | messages per write |\n|---|---|---|---|---|---|---|---|---|---|\n",
        opts.keys
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.4} ({:.4}) | {:.4} ({:.4}) | {} | {} | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.2} |\n",
            r.nodes,
            r.rf,
            r.shards,
            r.added.fraction(),
            r.added.ideal,
            r.removed.fraction(),
            r.removed.ideal,
            ms(r.add_ms),
            ms(r.remove_ms),
            r.idle.mean_bytes_s,
            r.idle.max_bytes_s,
            r.loaded.mean_bytes_s,
            r.loaded.max_bytes_s,
            r.loaded.messages_per_write(),
        ));
    }
    s
}

/// The rows as CSV (one line per row; traffic by kind in bytes per second per node).
pub fn csv(rows: &[Row], opts: &ScaleOptions) -> String {
    let kinds = ["sync", "synced", "settled", "handed-over"];
    let mut s = String::from("nodes,rf,shards,keys,moved_add,ideal_add,moved_remove,ideal_remove,view_change_add_ms,view_change_remove_ms,idle_bytes_s_per_node,idle_max_bytes_s,loaded_bytes_s_per_node,loaded_max_bytes_s,writes,messages,messages_per_write,window_ms,writes_per_node_s,value_bytes");
    for k in kinds {
        s.push_str(&format!(",idle_{k}_bytes_s,loaded_{k}_bytes_s"));
    }
    s.push('\n');
    for r in rows {
        let opt = |x: Option<u64>| x.map_or(String::new(), |m| m.to_string());
        s.push_str(&format!(
            "{},{},{},{},{:.6},{:.6},{:.6},{:.6},{},{},{:.1},{:.1},{:.1},{:.1},{},{},{:.3}",
            r.nodes,
            r.rf,
            r.shards,
            r.added.keys,
            r.added.fraction(),
            r.added.ideal,
            r.removed.fraction(),
            r.removed.ideal,
            opt(r.add_ms),
            opt(r.remove_ms),
            r.idle.mean_bytes_s,
            r.idle.max_bytes_s,
            r.loaded.mean_bytes_s,
            r.loaded.max_bytes_s,
            r.loaded.writes,
            r.loaded.messages,
            r.loaded.messages_per_write(),
        ));
        s.push_str(&format!(
            ",{},{},{}",
            opts.window_ms, opts.writes_per_node_s, opts.value_bytes
        ));
        let members = r.shards * r.rf;
        for k in kinds {
            let per = |w: &Window| {
                w.by_kind.get(k).map_or(0.0, |t| t.bytes as f64)
                    / members as f64
                    / (w.ms as f64 / 1000.0)
            };
            s.push_str(&format!(",{:.1},{:.1}", per(&r.idle), per(&r.loaded)));
        }
        s.push('\n');
    }
    s
}
