//! Causal consistency and lost writes, judged from what clients observed.
//!
//! Happens-before between operations is built from the history alone:
//! - context flow: an operation that sent the context returned by operation
//!   `a` comes after `a` (and after everything before `a`);
//! - reads-from: a read that returned write `w` comes after `w` and after
//!   `w`'s own past (values are unique, so a read names the write it saw).
//!
//! A successful write joins its client's past; a failed or refused one does
//! not (it may or may not have happened), though a read that returns it puts
//! it there. Contexts do not cross a view change ("contexts issued before a
//! view change may be ignored"), so a context edge counts only when both ends
//! ran in the same view epoch with no view change in flight.
//!
//! For each key the checker keeps the writes in invocation order, each with
//! the set of same-key writes that happen before it. A past is represented by
//! its frontier: per key, the writes of that key in the past that no other
//! write of the past supersedes. The invariant that must hold:
//!
//! - a read must not return a write that precedes a write in its past
//!   (stale read), nor "not found" when every delete of the key is superseded
//!   by a put in its past;
//! - when a read returns `w` while a concurrent `f` is in its past, the store
//!   has ordered `w` after `f`; those orders, together with happens-before,
//!   must never form a cycle (no client goes back to a loser it saw lose);
//! - after healing, the final state of a key must not be a write that an
//!   acknowledged write of the key superseded (lost write).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::bitset::BitSet;
use super::report::{AnomalyKind, Report};
use super::timeline::{OpRecord, Timeline};
use crate::history::{Event, OpId, OpKind};

type KeyId = u32;
/// Per key, the maximal writes (indices into that key's writes) of a past.
type Frontier = BTreeMap<KeyId, Vec<u32>>;
type Past = Rc<Frontier>;

struct Write {
    op: OpId,
    delete: bool,
    acked: bool,
    parents: Vec<u32>,
    /// Strict same-key ancestors under happens-before.
    anc: BitSet,
}

/// An order between two writes of a key, observed by a read.
struct ArbEdge {
    from: u32,
    to: u32,
    read: Option<OpId>,
}

struct KeyHistory {
    name: String,
    writes: Vec<Write>,
    by_value: HashMap<String, u32>,
    /// View epoch -> orders observed in it.
    arb: BTreeMap<u32, Vec<ArbEdge>>,
}

impl KeyHistory {
    /// True when write `a` happens before write `b`.
    fn precedes(&self, a: u32, b: u32) -> bool {
        self.writes[b as usize].anc.contains(a)
    }

    fn insert(&self, frontier: &mut Vec<u32>, w: u32) {
        if frontier.iter().any(|&f| f == w || self.precedes(w, f)) {
            return;
        }
        frontier.retain(|&f| !self.precedes(f, w));
        frontier.push(w);
    }

    fn describe(&self, w: u32, timeline: &Timeline<'_>) -> String {
        let write = &self.writes[w as usize];
        let what = if write.delete { "delete" } else { "put" };
        match timeline.get(write.op) {
            Some(rec) => format!(
                "{what} op {} (session {}{})",
                write.op,
                rec.invoke.session,
                rec.invoke
                    .value
                    .as_deref()
                    .map(|v| format!(", value {v:?}"))
                    .unwrap_or_default()
            ),
            None => format!("{what} op {}", write.op),
        }
    }
}

/// Streams a history through the happens-before construction.
pub struct CausalChecker<'t, 'e> {
    timeline: &'t Timeline<'e>,
    keys: Vec<KeyHistory>,
    key_ids: HashMap<String, KeyId>,
    past_in: HashMap<OpId, Past>,
    past_out: HashMap<OpId, Past>,
    /// How many not-yet-processed invocations still send each op's context;
    /// a past is dropped once nobody needs it (long histories stay small).
    ctx_uses: HashMap<OpId, u32>,
    write_idx: HashMap<OpId, (KeyId, u32)>,
    empty: Past,
}

impl<'t, 'e> CausalChecker<'t, 'e> {
    pub fn new(timeline: &'t Timeline<'e>) -> Self {
        CausalChecker {
            timeline,
            keys: Vec::new(),
            key_ids: HashMap::new(),
            past_in: HashMap::new(),
            past_out: HashMap::new(),
            ctx_uses: HashMap::new(),
            write_idx: HashMap::new(),
            empty: Rc::new(Frontier::new()),
        }
    }

    fn key_id(&mut self, key: &str) -> KeyId {
        if let Some(&k) = self.key_ids.get(key) {
            return k;
        }
        let k = self.keys.len() as KeyId;
        self.keys.push(KeyHistory {
            name: key.to_string(),
            writes: Vec::new(),
            by_value: HashMap::new(),
            arb: BTreeMap::new(),
        });
        self.key_ids.insert(key.to_string(), k);
        k
    }

    /// Processes every invocation and response, in history order.
    pub fn run(&mut self, events: &[Event], report: &mut Report) {
        for event in events {
            if let Event::Invoke(inv) = event {
                if let Some(from) = inv.ctx_from {
                    *self.ctx_uses.entry(from).or_insert(0) += 1;
                }
            }
        }
        for event in events {
            match event {
                Event::Invoke(inv) => self.on_invoke(inv.op),
                Event::Response(resp) => self.on_response(resp.op, report),
                _ => {}
            }
        }
    }

    fn record(&self, op: OpId) -> &'t OpRecord<'e> {
        self.timeline
            .get(op)
            .expect("timeline holds every invoked op")
    }

    fn on_invoke(&mut self, op: OpId) {
        let rec = self.record(op);
        let past = self.context_past(rec);
        if let Some(from) = rec.invoke.ctx_from {
            if let Some(n) = self.ctx_uses.get_mut(&from) {
                *n -= 1;
                if *n == 0 {
                    self.ctx_uses.remove(&from);
                    self.past_out.remove(&from);
                }
            }
        }
        self.register(rec, op, past);
    }

    /// The past an invocation carries: that of the op whose context it sent,
    /// if both ran in the same view epoch with no view change in flight.
    fn context_past(&self, rec: &OpRecord<'_>) -> Past {
        match rec.invoke.ctx_from {
            Some(from) if rec.stable => match self.timeline.get(from) {
                Some(src) if src.stable && src.epoch == rec.epoch => self
                    .past_out
                    .get(&from)
                    .cloned()
                    .unwrap_or_else(|| self.empty.clone()),
                _ => self.empty.clone(),
            },
            _ => self.empty.clone(),
        }
    }

    fn register(&mut self, rec: &OpRecord<'_>, op: OpId, past: Past) {
        if matches!(rec.invoke.kind, OpKind::Put | OpKind::Delete) {
            let k = self.key_id(&rec.invoke.key);
            let kh = &mut self.keys[k as usize];
            let parents = past.get(&k).cloned().unwrap_or_default();
            let mut anc = BitSet::default();
            for &p in &parents {
                anc.union_with(&kh.writes[p as usize].anc);
                anc.insert(p);
            }
            let idx = kh.writes.len() as u32;
            kh.writes.push(Write {
                op,
                delete: rec.invoke.kind == OpKind::Delete,
                acked: false,
                parents,
                anc,
            });
            if let Some(v) = &rec.invoke.value {
                kh.by_value.insert(v.clone(), idx);
            }
            self.write_idx.insert(op, (k, idx));
        }
        self.past_in.insert(op, past);
    }

    fn on_response(&mut self, op: OpId, report: &mut Report) {
        let rec = self.record(op);
        let Some(resp) = rec.response else { return };
        let is_read = rec.invoke.kind == OpKind::Get;
        let pin = if is_read {
            self.past_in.remove(&op)
        } else {
            self.past_in.get(&op).cloned()
        }
        .unwrap_or_else(|| self.empty.clone());
        let status = resp.status.unwrap_or(0);
        let out = match rec.invoke.kind {
            OpKind::Put | OpKind::Delete => {
                let acked = match rec.invoke.kind {
                    OpKind::Put => status == 200 || status == 201,
                    _ => status == 200,
                };
                let (k, w) = self.write_idx[&op];
                let kh = &mut self.keys[k as usize];
                kh.writes[w as usize].acked = acked;
                if acked {
                    let mut f = (*pin).clone();
                    kh.insert(f.entry(k).or_default(), w);
                    Rc::new(f)
                } else {
                    pin
                }
            }
            OpKind::Get if status == 200 => self.on_value_read(rec, pin, report),
            OpKind::Get if status == 404 => {
                if rec.stable {
                    self.judge_not_found(rec, &pin, report);
                }
                pin
            }
            OpKind::Get => pin,
        };
        if resp.context().is_some() && self.ctx_uses.contains_key(&op) {
            self.past_out.insert(op, out);
        }
    }

    fn on_value_read(&mut self, rec: &OpRecord<'_>, pin: Past, report: &mut Report) -> Past {
        let resp = rec.response.expect("responded");
        let key = &rec.invoke.key;
        let k = self.key_id(key);
        let Some(value) = resp.value() else {
            return pin;
        };
        let Some(&w) = self.keys[k as usize].by_value.get(&value) else {
            let elsewhere = self
                .keys
                .iter()
                .find(|kh| kh.by_value.contains_key(&value))
                .map(|kh| format!(" (a value written to key {:?})", kh.name))
                .unwrap_or_default();
            report.add(
                AnomalyKind::PhantomRead,
                format!(
                    "read op {} of key {key:?} on {} returned {:?}, which no client had written to that key{elsewhere}",
                    rec.invoke.op, rec.invoke.node, shortened(&value)
                ),
                vec![rec.invoke.op],
            );
            return pin;
        };
        let kh = &self.keys[k as usize];
        let mut new_arb = Vec::new();
        if rec.stable {
            for &f in pin.get(&k).map(Vec::as_slice).unwrap_or_default() {
                if f == w || kh.precedes(f, w) {
                    continue;
                }
                if kh.precedes(w, f) {
                    report.add(
                        AnomalyKind::StaleRead,
                        format!(
                            "read op {} (session {}, node {}) of key {key:?} returned {}, but its causal past holds {}, which supersedes it",
                            rec.invoke.op,
                            rec.invoke.session,
                            rec.invoke.node,
                            kh.describe(w, self.timeline),
                            kh.describe(f, self.timeline)
                        ),
                        vec![rec.invoke.op, kh.writes[w as usize].op, kh.writes[f as usize].op],
                    );
                } else {
                    new_arb.push(ArbEdge {
                        from: f,
                        to: w,
                        read: Some(rec.invoke.op),
                    });
                }
            }
        }
        let wop = kh.writes[w as usize].op;
        if !new_arb.is_empty() {
            self.keys[k as usize]
                .arb
                .entry(rec.epoch)
                .or_default()
                .extend(new_arb);
        }
        // What the read saw joins the reader's past: the write and, if the
        // write ran in the same view epoch, everything before the write.
        let mut out = (*pin).clone();
        let wrec = self.record(wop);
        if rec.stable && wrec.stable && wrec.epoch == rec.epoch {
            if let Some(wpast) = self.past_in.get(&wop) {
                for (&key, ws) in wpast.iter() {
                    let kh = &self.keys[key as usize];
                    let f = out.entry(key).or_default();
                    for &x in ws {
                        kh.insert(f, x);
                    }
                }
            }
        }
        self.keys[k as usize].insert(out.entry(k).or_default(), w);
        Rc::new(out)
    }

    fn judge_not_found(&self, rec: &OpRecord<'_>, pin: &Past, report: &mut Report) {
        let Some(&k) = self.key_ids.get(&rec.invoke.key) else {
            return;
        };
        let kh = &self.keys[k as usize];
        let frontier = pin.get(&k).map(Vec::as_slice).unwrap_or_default();
        let puts: Vec<u32> = frontier
            .iter()
            .copied()
            .filter(|&f| !kh.writes[f as usize].delete)
            .collect();
        let Some(&first_put) = puts.first() else {
            return;
        };
        let observed = kh.arb.get(&rec.epoch);
        let superseded = |d: u32| {
            puts.iter().any(|&p| {
                kh.precedes(d, p)
                    || observed.is_some_and(|edges| edges.iter().any(|e| e.from == d && e.to == p))
            })
        };
        let deletes: Vec<u32> = (0..kh.writes.len() as u32)
            .filter(|&d| kh.writes[d as usize].delete)
            .collect();
        if deletes.iter().all(|&d| superseded(d)) {
            report.add(
                AnomalyKind::StaleRead,
                format!(
                    "read op {} (session {}, node {}) of key {:?} returned \"not found\", but its causal past holds {}, and no delete of the key could have superseded it",
                    rec.invoke.op,
                    rec.invoke.session,
                    rec.invoke.node,
                    rec.invoke.key,
                    kh.describe(first_put, self.timeline)
                ),
                vec![rec.invoke.op, kh.writes[first_put as usize].op],
            );
        }
    }

    /// Judges the state of `key` after healing: `value` is what the replicas
    /// hold (`None`: the key does not exist). With `agreed` (every replica
    /// holds it) the final state also counts as an observation of how
    /// concurrent writes were resolved.
    pub fn final_state(
        &mut self,
        key: &str,
        value: Option<&str>,
        agreed: bool,
        report: &mut Report,
    ) {
        let k = self.key_id(key);
        let epoch = self.timeline.final_epoch();
        let kh = &self.keys[k as usize];
        let acked: Vec<u32> = (0..kh.writes.len() as u32)
            .filter(|&a| kh.writes[a as usize].acked)
            .collect();
        let mut shown_op = None;
        let (lost, shown): (Vec<u32>, String) = match value {
            Some(v) => {
                let Some(&w) = kh.by_value.get(v) else {
                    report.add(
                        AnomalyKind::PhantomRead,
                        format!(
                            "after healing key {key:?} holds {:?}, which no client wrote to it",
                            shortened(v)
                        ),
                        vec![],
                    );
                    return;
                };
                let lost = acked
                    .iter()
                    .copied()
                    .filter(|&a| a != w && kh.precedes(w, a))
                    .collect();
                // The final state is a read whose past is every acknowledged
                // write: it records how concurrent writes were resolved.
                let mut top = Vec::new();
                for &a in &acked {
                    kh.insert(&mut top, a);
                }
                let edges: Vec<ArbEdge> = top
                    .into_iter()
                    .filter(|&a| agreed && a != w && !kh.precedes(a, w) && !kh.precedes(w, a))
                    .map(|a| ArbEdge {
                        from: a,
                        to: w,
                        read: None,
                    })
                    .collect();
                let shown = kh.describe(w, self.timeline);
                shown_op = Some(kh.writes[w as usize].op);
                self.keys[k as usize]
                    .arb
                    .entry(epoch)
                    .or_default()
                    .extend(edges);
                (lost, shown)
            }
            None => {
                let deletes: Vec<u32> = (0..kh.writes.len() as u32)
                    .filter(|&d| kh.writes[d as usize].delete)
                    .collect();
                let lost = acked
                    .iter()
                    .copied()
                    .filter(|&a| {
                        !kh.writes[a as usize].delete && deletes.iter().all(|&d| kh.precedes(d, a))
                    })
                    .collect();
                (lost, "\"not found\"".to_string())
            }
        };
        if lost.is_empty() {
            return;
        }
        let kh = &self.keys[k as usize];
        let sample: Vec<String> = lost
            .iter()
            .take(5)
            .map(|&a| kh.describe(a, self.timeline))
            .collect();
        report.add(
            AnomalyKind::LostWrite,
            format!(
                "after healing key {key:?} shows {shown}; {} acknowledged write(s) that supersede it are gone: {}",
                lost.len(),
                sample.join("; ")
            ),
            // The write shown first (when there is one), then the lost ones.
            shown_op
                .into_iter()
                .chain(lost.iter().take(5).map(|&a| kh.writes[a as usize].op))
                .collect(),
        );
    }

    /// Reports every cycle in the observed orders of each key's writes.
    pub fn check_arbitration(&self, report: &mut Report) {
        for kh in &self.keys {
            for (epoch, edges) in &kh.arb {
                let n = kh.writes.len();
                let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
                for (i, w) in kh.writes.iter().enumerate() {
                    for &p in &w.parents {
                        adj[p as usize].push(i as u32);
                    }
                }
                for e in edges {
                    adj[e.from as usize].push(e.to);
                }
                for scc in cyclic_components(&adj) {
                    let members: std::collections::HashSet<u32> = scc.iter().copied().collect();
                    let inside: Vec<&ArbEdge> = edges
                        .iter()
                        .filter(|e| members.contains(&e.from) && members.contains(&e.to))
                        .collect();
                    let described: Vec<String> = inside
                        .iter()
                        .take(4)
                        .map(|e| {
                            format!(
                                "{} saw {} win over {}",
                                e.read
                                    .map(|r| format!("read op {r}"))
                                    .unwrap_or_else(|| "the final state".into()),
                                kh.describe(e.to, self.timeline),
                                kh.describe(e.from, self.timeline)
                            )
                        })
                        .collect();
                    let mut ops: Vec<OpId> = inside.iter().filter_map(|e| e.read).take(4).collect();
                    ops.extend(scc.iter().take(4).map(|&w| kh.writes[w as usize].op));
                    report.add(
                        AnomalyKind::ArbitrationCycle,
                        format!(
                            "key {:?}, view epoch {epoch}: {} writes ordered inconsistently: {}",
                            kh.name,
                            scc.len(),
                            described.join("; ")
                        ),
                        ops,
                    );
                }
            }
        }
    }
}

/// Strongly connected components with more than one node (iterative Tarjan).
fn cyclic_components(adj: &[Vec<u32>]) -> Vec<Vec<u32>> {
    const UNSEEN: u32 = u32::MAX;
    let n = adj.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<u32> = Vec::new();
    let mut next = 0u32;
    let mut out = Vec::new();
    for root in 0..n as u32 {
        if index[root as usize] != UNSEEN {
            continue;
        }
        let mut work: Vec<(u32, usize)> = vec![(root, 0)];
        index[root as usize] = next;
        low[root as usize] = next;
        next += 1;
        stack.push(root);
        on_stack[root as usize] = true;
        while let Some(&mut (v, ref mut i)) = work.last_mut() {
            if let Some(&w) = adj[v as usize].get(*i) {
                *i += 1;
                if index[w as usize] == UNSEEN {
                    index[w as usize] = next;
                    low[w as usize] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w as usize] = true;
                    work.push((w, 0));
                } else if on_stack[w as usize] {
                    low[v as usize] = low[v as usize].min(index[w as usize]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent as usize] = low[parent as usize].min(low[v as usize]);
            }
            if low[v as usize] == index[v as usize] {
                let mut comp = Vec::new();
                loop {
                    let w = stack.pop().expect("tarjan stack");
                    on_stack[w as usize] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    out.push(comp);
                }
            }
        }
    }
    out
}

/// A value as an anomaly shows it: at most 80 characters and its length.
fn shortened(v: &str) -> String {
    match v.char_indices().nth(80) {
        None => v.to_string(),
        Some((i, _)) => format!("{}… ({} bytes)", &v[..i], v.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::cyclic_components;

    #[test]
    fn finds_cycles_and_ignores_dags() {
        let dag = vec![vec![1, 2], vec![2], vec![]];
        assert!(cyclic_components(&dag).is_empty());
        let cyc = vec![vec![1], vec![2], vec![0, 3], vec![]];
        let comps = cyclic_components(&cyc);
        assert_eq!(comps.len(), 1);
        let mut c = comps[0].clone();
        c.sort();
        assert_eq!(c, vec![0, 1, 2]);
    }
}
