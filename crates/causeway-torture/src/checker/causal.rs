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
//! it there. Every context edge counts, across view changes too: Causeway
//! honours contexts issued before a view change (the contract's allowance to
//! ignore them is not used), and write identities survive hand-over, so one
//! order of concurrent writes holds across every epoch.
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
//!
//! Retried writes: a write sent with an `Idempotency-Key` may be sent again
//! (`retry_of`: the first attempt) with the same request and context after no
//! answer or a 503. All attempts of one logical write are ONE write: its past is
//! the first attempt's request past, a read of its value reads that write, and it
//! is acknowledged once any attempt is. So a late attempt applied as a new write
//! after a write that superseded the first one shows as a stale read: a session
//! whose past holds the superseding write reads the retried value again. A value
//! written by two writes that are not attempts of one (or a retry that is not the
//! same request as its first attempt) is reported as `DuplicateWrite`.
//!
//! Batches, listings and expiring writes:
//! - a batch's ops are judged one by one like single ops. Ops on one key form a
//!   chain that starts from the batch's request past, each op's past being what
//!   the previous op of that key left (as if a session had sent them in turn);
//!   ops on different keys share only the request past: they ran in parallel, so
//!   a write of the batch is not in the past of an op on another key of the
//!   batch. The answer's past joins every chain's. A write of a batch is known at
//!   invocation with the request past; once the answer shows what came before it
//!   on its key, its past grows (never shrinks: it only ever holds writes that
//!   truly happened before it);
//! - a listing with values is a read of every key it lists, each judged against
//!   the request past like a GET; a key missing from a complete listing is judged
//!   like a GET that answered "not found";
//! - a write with a ttl may vanish at any time (node clocks are skewed, so its
//!   expiry cannot be placed in real time): it counts like a delete when a read
//!   answers "not found" and when a key is gone after healing. What is judged:
//!   once a read with such a write in its frontier saw the key absent, that write
//!   has expired for every op with this read in its past by context flow, which
//!   must never see its value again (resurrected expired); and after healing, a
//!   key must not hold a ttl write acknowledged longer ago than its ttl plus twice
//!   the largest clock offset of the campaign plus a margin.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::bitset::BitSet;
use super::report::{AnomalyKind, Report};
use super::timeline::{OpRecord, Timeline};
use crate::history::{Event, Fault, OpId, OpKind};

type KeyId = u32;
/// Per key, the maximal writes (indices into that key's writes) of a past.
type Frontier = BTreeMap<KeyId, Vec<u32>>;
type Past = Rc<PastSet>;

/// A causal past: its frontier, and the ttl writes it has seen expire.
#[derive(Debug, Clone, Default)]
struct PastSet {
    top: Frontier,
    /// Per key, ttl writes a read of this past found expired (their value must
    /// never show again). Passed on by context flow only.
    expired: BTreeMap<KeyId, Vec<u32>>,
}

impl PastSet {
    fn top(&self, k: KeyId) -> &[u32] {
        self.top.get(&k).map(Vec::as_slice).unwrap_or_default()
    }

    fn expired(&self, k: KeyId) -> &[u32] {
        self.expired.get(&k).map(Vec::as_slice).unwrap_or_default()
    }
}

/// Slack added to the expiry bound of a ttl write after healing (ms).
const EXPIRY_MARGIN_MS: f64 = 5000.0;

struct Write {
    op: OpId,
    /// The op's index in its batch.
    sub: Option<u32>,
    /// The value put (puts only).
    value: Option<String>,
    delete: bool,
    /// Seconds a put with a ttl lives.
    ttl: Option<u64>,
    acked: bool,
    /// When the acknowledgement arrived (ms into the campaign).
    acked_at: Option<f64>,
    parents: Vec<u32>,
    /// Strict same-key ancestors under happens-before.
    anc: BitSet,
    /// The causal past the write was sent with.
    past: Past,
    /// Retries of the op that wrote it (the same write, sent again).
    retries: Vec<OpId>,
}

impl Write {
    /// A write that can make the key read "not found": a delete, or a put that
    /// may have expired.
    fn kills(&self) -> bool {
        self.delete || self.ttl.is_some()
    }
}

/// One key operation to judge: a single-key op, or one op of a batch.
struct Step<'a> {
    kind: OpKind,
    key: &'a str,
    /// Index in the batch.
    sub: Option<u32>,
    /// HTTP status (of the op's result in a batch); `None`: no answer.
    status: Option<u16>,
    /// The value a GET 200 returned.
    read: Option<String>,
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
    /// Orders observed between concurrent writes (by reads and the final state).
    /// Write identities survive view changes, so one order holds across them all.
    arb: Vec<ArbEdge>,
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

    /// Drops the expired marks of key `k` that the frontier supersedes (a read of
    /// them is stale anyway).
    fn prune_expired(&self, past: &mut PastSet, k: KeyId) {
        let Some(exp) = past.expired.get_mut(&k) else {
            return;
        };
        let top = past.top.get(&k).map(Vec::as_slice).unwrap_or_default();
        exp.retain(|&x| !top.iter().any(|&f| f != x && self.precedes(x, f)));
        if exp.is_empty() {
            past.expired.remove(&k);
        }
    }

    fn describe(&self, w: u32, timeline: &Timeline<'_>) -> String {
        let write = &self.writes[w as usize];
        let what = match (write.delete, write.ttl) {
            (true, _) => "delete".to_string(),
            (false, None) => "put".to_string(),
            (false, Some(ttl)) => format!("put (ttl {ttl} s)"),
        };
        let sub = write
            .sub
            .map(|i| format!(" (batch op {i})"))
            .unwrap_or_default();
        let value = write
            .value
            .as_deref()
            .map(|v| format!(", value {:?}", shortened(v)))
            .unwrap_or_default();
        let retried = if write.retries.is_empty() {
            String::new()
        } else {
            let ops: Vec<String> = write.retries.iter().map(|r| r.to_string()).collect();
            format!(", retried as op {}", ops.join(", "))
        };
        match timeline.get(write.op) {
            Some(rec) => format!(
                "{what} op {}{sub} (session {}{value}{retried})",
                write.op, rec.invoke.session,
            ),
            None => format!("{what} op {}{sub}{retried}", write.op),
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
    /// (op, index in its batch; 0 for a single write) -> the write.
    write_idx: HashMap<(OpId, u32), (KeyId, u32)>,
    empty: Past,
    /// When the final state was read (ms; the heal), and the largest clock
    /// offset of the campaign (s): what the expiry bound after healing needs.
    final_time: Option<f64>,
    max_clock_offset_s: f64,
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
            empty: Rc::new(PastSet::default()),
            final_time: None,
            max_clock_offset_s: 0.0,
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
            arb: Vec::new(),
        });
        self.key_ids.insert(key.to_string(), k);
        k
    }

    /// Processes every invocation and response, in history order.
    pub fn run(&mut self, events: &[Event], report: &mut Report) {
        let mut last_t: Option<f64> = None;
        for event in events {
            match event {
                Event::Invoke(inv) => {
                    if let Some(from) = inv.ctx_from {
                        *self.ctx_uses.entry(from).or_insert(0) += 1;
                    }
                    last_t = Some(last_t.map_or(inv.t, |t| t.max(inv.t)));
                }
                Event::Response(resp) => last_t = Some(last_t.map_or(resp.t, |t| t.max(resp.t))),
                Event::Fault(rec) => {
                    last_t = Some(last_t.map_or(rec.t, |t| t.max(rec.t)));
                    match &rec.fault {
                        Fault::HealAll => self.final_time = Some(rec.t),
                        Fault::Clock { offset_s, .. } => {
                            self.max_clock_offset_s =
                                self.max_clock_offset_s.max(offset_s.unsigned_abs() as f64)
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if self.final_time.is_none() {
            self.final_time = last_t;
        }
        for event in events {
            match event {
                Event::Invoke(inv) => self.on_invoke(inv.op, report),
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

    fn on_invoke(&mut self, op: OpId, report: &mut Report) {
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
        self.register(rec, op, past, report);
    }

    /// The past an invocation carries: that of the op whose context it sent,
    /// whatever view changes happened in between.
    fn context_past(&self, rec: &OpRecord<'_>) -> Past {
        rec.invoke
            .ctx_from
            .and_then(|from| self.past_out.get(&from).cloned())
            .unwrap_or_else(|| self.empty.clone())
    }

    fn register(&mut self, rec: &OpRecord<'_>, op: OpId, past: Past, report: &mut Report) {
        let inv = rec.invoke;
        if let Some(first) = inv.retry_of {
            if self.register_retry(rec, first, report) {
                self.past_in.insert(op, past);
                return;
            }
        }
        if inv.kind.is_write() {
            let value = inv.value.clone();
            self.add_write(op, None, &inv.key, inv.kind, value, inv.ttl, &past, report);
        }
        if inv.kind == OpKind::Batch {
            for (i, o) in inv.ops.iter().enumerate() {
                if o.kind.is_write() {
                    let value = o.value.clone();
                    let sub = Some(i as u32);
                    self.add_write(op, sub, &o.key, o.kind, value, o.ttl, &past, report);
                }
            }
        }
        self.past_in.insert(op, past);
    }

    /// A retry of op `first`: when it is the same request, its writes are the
    /// first attempt's (returns true). Otherwise it is reported and judged as a
    /// write of its own.
    fn register_retry(&mut self, rec: &OpRecord<'_>, first: OpId, report: &mut Report) -> bool {
        let inv = rec.invoke;
        let same = self.timeline.get(first).filter(|f| {
            let before = f.invoke_pos < rec.invoke_pos;
            let f = f.invoke;
            before
                && f.session == inv.session
                && f.kind == inv.kind
                && f.key == inv.key
                && f.value == inv.value
                && f.ttl == inv.ttl
                && f.ops == inv.ops
                && f.ctx_from == inv.ctx_from
                && f.idempotency_key.is_some()
                && f.idempotency_key == inv.idempotency_key
        });
        let writes: Vec<(u32, (KeyId, u32))> = if same.is_some() {
            self.write_idx
                .iter()
                .filter(|((o, _), _)| *o == first)
                .map(|(&(_, sub), &w)| (sub, w))
                .collect()
        } else {
            vec![]
        };
        if writes.is_empty() {
            report.add(
                AnomalyKind::DuplicateWrite,
                format!(
                    "op {} (session {}) is recorded as a retry of op {first}, which is not an earlier write with the same request, context and Idempotency-Key",
                    inv.op, inv.session
                ),
                vec![inv.op, first],
            );
            return false;
        }
        for (sub, (k, w)) in writes {
            self.write_idx.insert((inv.op, sub), (k, w));
            self.keys[k as usize].writes[w as usize]
                .retries
                .push(inv.op);
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn add_write(
        &mut self,
        op: OpId,
        sub: Option<u32>,
        key: &str,
        kind: OpKind,
        value: Option<String>,
        ttl: Option<u64>,
        past: &Past,
        report: &mut Report,
    ) {
        let k = self.key_id(key);
        let kh = &mut self.keys[k as usize];
        let parents = past.top(k).to_vec();
        let mut anc = BitSet::default();
        for &p in &parents {
            anc.union_with(&kh.writes[p as usize].anc);
            anc.insert(p);
        }
        let idx = kh.writes.len() as u32;
        if let Some(v) = &value {
            if let Some(prev) = kh.by_value.insert(v.clone(), idx) {
                // Values are unique per logical write: only retries (which are
                // not new writes) may send one again.
                let prev_op = kh.writes[prev as usize].op;
                report.add(
                    AnomalyKind::DuplicateWrite,
                    format!(
                        "op {op} writes {:?} to key {:?}, already written by op {prev_op}, and is not a retry of it: a read of that value cannot tell the two apart",
                        shortened(v),
                        kh.name
                    ),
                    vec![op, prev_op],
                );
            }
        }
        let delete = kind == OpKind::Delete;
        kh.writes.push(Write {
            op,
            sub,
            value,
            delete,
            ttl: ttl.filter(|_| !delete),
            acked: false,
            acked_at: None,
            parents,
            anc,
            past: past.clone(),
            retries: Vec::new(),
        });
        self.write_idx.insert((op, sub.unwrap_or(0)), (k, idx));
    }

    fn on_response(&mut self, op: OpId, report: &mut Report) {
        let rec = self.record(op);
        let Some(resp) = rec.response else { return };
        let pin = self
            .past_in
            .remove(&op)
            .unwrap_or_else(|| self.empty.clone());
        let status = resp.status;
        let out = match rec.invoke.kind {
            OpKind::Get | OpKind::Put | OpKind::Delete => {
                let step = Step {
                    kind: rec.invoke.kind,
                    key: &rec.invoke.key,
                    sub: None,
                    status,
                    read: (status == Some(200)).then(|| resp.value()).flatten(),
                };
                if step.kind == OpKind::Get && status == Some(200) {
                    self.check_ttl_field(rec, report);
                }
                self.step(rec, &step, pin, report)
            }
            OpKind::Batch => self.on_batch(rec, pin, report),
            OpKind::List => self.on_listing(rec, pin, report),
        };
        if resp.context().is_some() && self.ctx_uses.contains_key(&op) {
            self.past_out.insert(op, out);
        }
    }

    /// A GET 200 carries `ttl` exactly when the write it returns had one.
    fn check_ttl_field(&mut self, rec: &OpRecord<'_>, report: &mut Report) {
        let resp = rec.response.expect("responded");
        let Some(value) = resp.value() else { return };
        let Some(&k) = self.key_ids.get(&rec.invoke.key) else {
            return;
        };
        let kh = &self.keys[k as usize];
        let Some(&w) = kh.by_value.get(&value) else {
            return;
        };
        let has_ttl = kh.writes[w as usize].ttl.is_some();
        let field = resp.body.as_ref().and_then(|b| b.get("ttl"));
        if has_ttl != field.is_some() {
            report.add(
                AnomalyKind::Protocol,
                format!(
                    "GET op {} of key {:?} returned {}, and its answer {} a \"ttl\"",
                    rec.invoke.op,
                    rec.invoke.key,
                    kh.describe(w, self.timeline),
                    if has_ttl { "lacks" } else { "carries" }
                ),
                vec![rec.invoke.op],
            );
        }
    }

    /// Judges one key operation whose request past is `pin`; returns the past
    /// after it.
    fn step(
        &mut self,
        rec: &OpRecord<'_>,
        step: &Step<'_>,
        pin: Past,
        report: &mut Report,
    ) -> Past {
        let op = rec.invoke.op;
        match step.kind {
            OpKind::Put | OpKind::Delete => {
                let acked = matches!(
                    (step.kind, step.status),
                    (OpKind::Put, Some(200 | 201)) | (OpKind::Delete, Some(200))
                );
                let Some(&(k, w)) = self.write_idx.get(&(op, step.sub.unwrap_or(0))) else {
                    return pin;
                };
                if step.sub.is_some() {
                    self.grow_write_past(k, w, &pin);
                }
                let acked_at = rec.response.map(|r| r.t);
                let kh = &mut self.keys[k as usize];
                let write = &mut kh.writes[w as usize];
                // Attempts of one write: acknowledged once any attempt is (first).
                if !acked {
                    return pin;
                }
                if !write.acked {
                    write.acked = true;
                    write.acked_at = acked_at;
                }
                let mut f = (*pin).clone();
                kh.insert(f.top.entry(k).or_default(), w);
                kh.prune_expired(&mut f, k);
                Rc::new(f)
            }
            OpKind::Get => match (step.status, &step.read) {
                (Some(200), Some(value)) => {
                    let k = self.key_id(step.key);
                    self.on_value_read(rec, step.sub, k, value, pin.clone(), &pin, report)
                }
                (Some(404), _) => {
                    let k = self.key_id(step.key);
                    self.judge_not_found(rec, step.sub, k, &pin, report);
                    self.saw_absent(k, &pin, pin.clone(), report)
                }
                _ => pin,
            },
            OpKind::Batch | OpKind::List => pin,
        }
    }

    /// A write of a batch: the answer shows what ran before it on its key (`pin`),
    /// which joins its past.
    fn grow_write_past(&mut self, k: KeyId, w: u32, pin: &Past) {
        let kh = &mut self.keys[k as usize];
        let write = &kh.writes[w as usize];
        if Rc::ptr_eq(&write.past, pin) {
            return;
        }
        let mut parents = write.parents.clone();
        for &p in pin.top(k) {
            if p != w && !parents.contains(&p) {
                parents.push(p);
            }
        }
        let mut anc = write.anc.clone();
        for &p in &parents {
            if p != w {
                anc.union_with(&kh.writes[p as usize].anc);
                anc.insert(p);
            }
        }
        let mut past = (*write.past).clone();
        for (&key, ws) in pin.top.iter() {
            let kh = &self.keys[key as usize];
            let f = past.top.entry(key).or_default();
            for &x in ws {
                kh.insert(f, x);
            }
        }
        let write = &mut self.keys[k as usize].writes[w as usize];
        write.parents = parents;
        write.anc = anc;
        write.past = Rc::new(past);
    }

    /// A key found absent (404, or missing from a complete listing) by a read
    /// whose request past is `pin`: the ttl writes of its frontier have expired
    /// for the read's future. Returns `out` with those marks.
    fn saw_absent(&self, k: KeyId, pin: &PastSet, out: Past, report: &mut Report) -> Past {
        let kh = &self.keys[k as usize];
        let ttl: Vec<u32> = pin
            .top(k)
            .iter()
            .copied()
            .filter(|&f| {
                let w = &kh.writes[f as usize];
                !w.delete && w.ttl.is_some()
            })
            .collect();
        if !ttl.is_empty() {
            report.expired_seen += 1;
        }
        if ttl.iter().all(|t| out.expired(k).contains(t)) {
            return out;
        }
        let mut out = (*out).clone();
        let exp = out.expired.entry(k).or_default();
        for t in ttl {
            if !exp.contains(&t) {
                exp.push(t);
            }
        }
        kh.prune_expired(&mut out, k);
        Rc::new(out)
    }

    fn on_batch(&mut self, rec: &OpRecord<'_>, pin: Past, report: &mut Report) -> Past {
        let resp = rec.response.expect("responded");
        let ops = &rec.invoke.ops;
        let results = match (resp.status, resp.results()) {
            (Some(200), Some(r)) if r.len() == ops.len() => r,
            // No answer per op: the writes may or may not have happened.
            _ => return pin,
        };
        // Ops on one key in order, from the request past; keys independent.
        let mut chains: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, o) in ops.iter().enumerate() {
            chains.entry(o.key.as_str()).or_default().push(i);
        }
        let mut out = (*pin).clone();
        for (_, chain) in chains {
            let mut ctx = pin.clone();
            for i in chain {
                let o = &ops[i];
                let result = &results[i];
                let status = result
                    .get("status")
                    .and_then(|s| s.as_u64())
                    .map(|s| s as u16);
                let read = (status == Some(200) && o.kind == OpKind::Get)
                    .then(|| result.get("value").map(crate::history::value_string))
                    .flatten();
                let step = Step {
                    kind: o.kind,
                    key: &o.key,
                    sub: Some(i as u32),
                    status,
                    read,
                };
                ctx = self.step(rec, &step, ctx, report);
            }
            self.join(&mut out, &ctx, true);
        }
        Rc::new(out)
    }

    fn on_listing(&mut self, rec: &OpRecord<'_>, pin: Past, report: &mut Report) -> Past {
        let resp = rec.response.expect("responded");
        let (items, next) = match (resp.status, resp.items()) {
            (Some(200), Some(listed)) => listed,
            _ => return pin,
        };
        let mut out = pin.clone();
        let mut listed = std::collections::HashSet::new();
        for (key, value) in &items {
            let Some(value) = value else { continue };
            listed.insert(key.as_str());
            let k = self.key_id(key);
            // Every item is judged against the request past alone: the
            // listing read the shards in parallel.
            out = self.on_value_read(rec, None, k, value, out, &pin, report);
        }
        // A key the listing covers but does not show reads "not found".
        let covered = |key: &str| match &next {
            Some(None) => true,
            Some(Some(n)) => key < n.as_str(),
            None => false,
        };
        let absent: Vec<KeyId> = (0..self.keys.len() as KeyId)
            .filter(|&k| {
                let name = self.keys[k as usize].name.as_str();
                !listed.contains(name) && covered(name)
            })
            .collect();
        for k in absent {
            if pin.top(k).is_empty() {
                continue;
            }
            self.judge_not_found(rec, None, k, &pin, report);
            out = self.saw_absent(k, &pin, out, report);
        }
        out
    }

    /// Adds `other` to `out` (its expired marks too when `expired`).
    fn join(&self, out: &mut PastSet, other: &PastSet, expired: bool) {
        for (&key, ws) in other.top.iter() {
            let kh = &self.keys[key as usize];
            let f = out.top.entry(key).or_default();
            for &x in ws {
                kh.insert(f, x);
            }
        }
        if expired {
            for (&key, xs) in other.expired.iter() {
                let e = out.expired.entry(key).or_default();
                for &x in xs {
                    if !e.contains(&x) {
                        e.push(x);
                    }
                }
            }
        }
        let keys: Vec<KeyId> = other
            .top
            .keys()
            .chain(other.expired.keys())
            .copied()
            .collect();
        for key in keys {
            self.keys[key as usize].prune_expired(out, key);
        }
    }

    /// A read of key `k` that returned `value`, judged against `pin`; returns
    /// `out` joined with what the read saw.
    #[allow(clippy::too_many_arguments)]
    fn on_value_read(
        &mut self,
        rec: &OpRecord<'_>,
        sub: Option<u32>,
        k: KeyId,
        value: &str,
        out: Past,
        pin: &PastSet,
        report: &mut Report,
    ) -> Past {
        let key = self.keys[k as usize].name.clone();
        let what = read_name(rec, sub);
        let Some(&w) = self.keys[k as usize].by_value.get(value) else {
            let elsewhere = self
                .keys
                .iter()
                .find(|kh| kh.by_value.contains_key(value))
                .map(|kh| format!(" (a value written to key {:?})", kh.name))
                .unwrap_or_default();
            report.add(
                AnomalyKind::PhantomRead,
                format!(
                    "{what} of key {key:?} on {} returned {:?}, which no client had written to that key{elsewhere}",
                    rec.invoke.node, shortened(value)
                ),
                vec![rec.invoke.op],
            );
            return out;
        };
        let kh = &self.keys[k as usize];
        let mut new_arb = Vec::new();
        if pin.expired(k).contains(&w) {
            report.add(
                AnomalyKind::ResurrectedExpired,
                format!(
                    "{what} (session {}, node {}) of key {key:?} returned {}, but its causal past had already seen that write expire (the key read \"not found\" with it as the latest write)",
                    rec.invoke.session,
                    rec.invoke.node,
                    kh.describe(w, self.timeline),
                ),
                vec![rec.invoke.op, kh.writes[w as usize].op],
            );
        }
        for &f in pin.top(k) {
            if f == w || kh.precedes(f, w) {
                continue;
            }
            if kh.precedes(w, f) {
                report.add(
                    AnomalyKind::StaleRead,
                    format!(
                        "{what} (session {}, node {}) of key {key:?} returned {}, but its causal past holds {}, which supersedes it",
                        rec.invoke.session,
                        rec.invoke.node,
                        kh.describe(w, self.timeline),
                        kh.describe(f, self.timeline)
                    ) + if kh.writes[w as usize].retries.is_empty() {
                        ""
                    } else {
                        " (was a retry applied as a new write after the write that superseded it?)"
                    },
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
        let wpast = kh.writes[w as usize].past.clone();
        if !new_arb.is_empty() {
            self.keys[k as usize].arb.extend(new_arb);
        }
        // What the read saw joins the reader's past: the write and everything
        // before it.
        let mut out = (*out).clone();
        self.join(&mut out, &wpast, false);
        let kh = &self.keys[k as usize];
        kh.insert(out.top.entry(k).or_default(), w);
        kh.prune_expired(&mut out, k);
        Rc::new(out)
    }

    fn judge_not_found(
        &self,
        rec: &OpRecord<'_>,
        sub: Option<u32>,
        k: KeyId,
        pin: &PastSet,
        report: &mut Report,
    ) {
        let kh = &self.keys[k as usize];
        // Puts of the past that cannot have vanished on their own.
        let puts: Vec<u32> = pin
            .top(k)
            .iter()
            .copied()
            .filter(|&f| !kh.writes[f as usize].kills())
            .collect();
        let Some(&first_put) = puts.first() else {
            return;
        };
        let observed = Some(&kh.arb);
        let superseded = |d: u32| {
            puts.iter().any(|&p| {
                kh.precedes(d, p)
                    || observed.is_some_and(|edges| edges.iter().any(|e| e.from == d && e.to == p))
            })
        };
        // Deletes and ttl puts: each could be why the key is absent.
        let killers: Vec<u32> = (0..kh.writes.len() as u32)
            .filter(|&d| kh.writes[d as usize].kills())
            .collect();
        if killers.iter().all(|&d| superseded(d)) {
            report.add(
                AnomalyKind::StaleRead,
                format!(
                    "{} (session {}, node {}) of key {:?} returned \"not found\", but its causal past holds {}, and no delete or expiring write of the key could have superseded it",
                    read_name(rec, sub),
                    rec.invoke.session,
                    rec.invoke.node,
                    kh.name,
                    kh.describe(first_put, self.timeline)
                ),
                vec![rec.invoke.op, kh.writes[first_put as usize].op],
            );
        }
    }
    pub fn final_state(
        &mut self,
        key: &str,
        value: Option<&str>,
        agreed: bool,
        report: &mut Report,
    ) {
        let k = self.key_id(key);
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
                self.judge_expired_final(key, w, report);
                let kh = &self.keys[k as usize];
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
                self.keys[k as usize].arb.extend(edges);
                (lost, shown)
            }
            None => {
                // Deletes and ttl puts (which may have expired).
                let killers: Vec<u32> = (0..kh.writes.len() as u32)
                    .filter(|&d| kh.writes[d as usize].kills())
                    .collect();
                let lost = acked
                    .iter()
                    .copied()
                    .filter(|&a| {
                        !kh.writes[a as usize].kills() && killers.iter().all(|&d| kh.precedes(d, a))
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

    /// After healing, key `key` holds write `w`: if that write has a ttl and was
    /// acknowledged so long ago that it has expired whatever the clocks said (its
    /// timestamp is at most the acknowledgement plus the largest clock offset, and
    /// every replica's clock reads at least real time minus that offset), it must
    /// not be there.
    fn judge_expired_final(&self, key: &str, w: u32, report: &mut Report) {
        let Some(&k) = self.key_ids.get(key) else {
            return;
        };
        let kh = &self.keys[k as usize];
        let write = &kh.writes[w as usize];
        let (Some(ttl), Some(acked_at), Some(final_time)) =
            (write.ttl, write.acked_at, self.final_time)
        else {
            return;
        };
        let bound = (ttl as f64 + 2.0 * self.max_clock_offset_s) * 1000.0 + EXPIRY_MARGIN_MS;
        let lapsed = final_time - acked_at;
        if lapsed > bound {
            report.add(
                AnomalyKind::ResurrectedExpired,
                format!(
                    "after healing key {key:?} holds {}, acknowledged {:.1} s before the heal; it had to expire within {:.1} s (ttl plus twice the largest clock offset, {} s, plus {} s)",
                    kh.describe(w, self.timeline),
                    lapsed / 1000.0,
                    bound / 1000.0,
                    self.max_clock_offset_s,
                    EXPIRY_MARGIN_MS / 1000.0
                ),
                vec![write.op],
            );
        }
    }

    /// Reports every cycle in the observed orders of each key's writes.
    pub fn check_arbitration(&self, report: &mut Report) {
        for kh in &self.keys {
            {
                let edges = &kh.arb;
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
                            "key {:?}: {} writes ordered inconsistently: {}",
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

/// How an anomaly names a read: a GET, one op of a batch, or a listing.
fn read_name(rec: &OpRecord<'_>, sub: Option<u32>) -> String {
    let op = rec.invoke.op;
    match (rec.invoke.kind, sub) {
        (OpKind::Batch, Some(i)) => format!("batch op {op} (get {i})"),
        (OpKind::List, _) => format!("listing op {op}"),
        _ => format!("read op {op}"),
    }
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
