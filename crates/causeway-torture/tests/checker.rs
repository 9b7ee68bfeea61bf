//! The checker is itself tested: hand-written histories with one known
//! anomaly each must be caught (and only that), and good histories must pass.

use causeway_torture::checker::{check, AnomalyKind, CheckOptions, Report};
use causeway_torture::history::{
    BatchOp, Event, Fault, FaultRecord, FinalRead, Invoke, KeyCount, OpId, OpKind, Response,
};
use serde_json::{json, Value};

const N1: &str = "127.0.0.2:13800";
const N2: &str = "127.0.0.3:13800";

/// Builds histories line by line.
#[derive(Default)]
struct H {
    events: Vec<Event>,
    t: f64,
    next: OpId,
    /// Values written with a ttl: a GET of one carries `"ttl"`.
    ttl_values: Vec<String>,
}

impl H {
    fn tick(&mut self) -> f64 {
        self.t += 1.0;
        self.t
    }

    fn invoke(
        &mut self,
        session: u32,
        kind: OpKind,
        key: &str,
        value: Option<&str>,
        ctx_from: Option<OpId>,
    ) -> OpId {
        self.next += 1;
        let t = self.tick();
        self.events.push(Event::Invoke(Invoke {
            op: self.next,
            session,
            t,
            kind,
            key: key.into(),
            value: value.map(String::from),
            ttl: None,
            ops: vec![],
            node: N1.into(),
            ctx_from,
            context: json!({}),
            idempotency_key: None,
            retry_of: None,
        }));
        self.next
    }

    /// The last invocation, to add a ttl or batch ops to it.
    fn last_invoke(&mut self) -> &mut Invoke {
        self.events
            .iter_mut()
            .rev()
            .find_map(|e| match e {
                Event::Invoke(i) => Some(i),
                _ => None,
            })
            .expect("an invocation")
    }

    /// A PUT with a ttl (seconds), acknowledged.
    fn put_ttl(
        &mut self,
        session: u32,
        key: &str,
        value: &str,
        ttl: u64,
        ctx: Option<OpId>,
    ) -> OpId {
        let op = self.invoke(session, OpKind::Put, key, Some(value), ctx);
        self.last_invoke().ttl = Some(ttl);
        self.ttl_values.push(value.into());
        self.respond(
            op,
            201,
            json!({"message": "Added successfully", "replaced": false}),
        );
        op
    }

    /// A batch: each op with the result it got (`B::get(k, Some(v))` and so on).
    fn batch(&mut self, session: u32, ops: &[B], ctx: Option<OpId>) -> OpId {
        let op = self.invoke(session, OpKind::Batch, "", None, ctx);
        self.last_invoke().ops = ops.iter().map(|b| b.op.clone()).collect();
        let results: Vec<Value> = ops.iter().map(|b| b.result.clone()).collect();
        self.respond(
            op,
            200,
            json!({"message": "Batch completed", "results": results}),
        );
        op
    }

    /// A complete listing with values answered with `items`.
    fn list(&mut self, session: u32, items: &[(&str, &str)], ctx: Option<OpId>) -> OpId {
        let op = self.invoke(session, OpKind::List, "", None, ctx);
        let items: Vec<Value> = items
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        self.respond(
            op,
            200,
            json!({"message": "Keys listed successfully", "items": items, "next": null}),
        );
        op
    }

    fn respond(&mut self, op: OpId, status: u16, mut body: Value) {
        body["causal-context"] = json!({"op": op});
        let t = self.tick();
        self.events.push(Event::Response(Response {
            op,
            t,
            status: Some(status),
            body: Some(body),
            error: None,
        }));
    }

    fn fail(&mut self, op: OpId, error: &str, t_add: f64) {
        self.t += t_add;
        let t = self.tick();
        self.events.push(Event::Response(Response {
            op,
            t,
            status: None,
            body: None,
            error: Some(error.into()),
        }));
    }

    fn put(&mut self, session: u32, key: &str, value: &str, ctx: Option<OpId>) -> OpId {
        let op = self.invoke(session, OpKind::Put, key, Some(value), ctx);
        self.respond(
            op,
            201,
            json!({"message": "Added successfully", "replaced": false}),
        );
        op
    }

    fn del(&mut self, session: u32, key: &str, ctx: Option<OpId>) -> OpId {
        let op = self.invoke(session, OpKind::Delete, key, None, ctx);
        self.respond(
            op,
            200,
            json!({"message": "Deleted successfully", "doesExist": true}),
        );
        op
    }

    /// A GET answered with `value` (`None`: 404).
    fn get(&mut self, session: u32, key: &str, value: Option<&str>, ctx: Option<OpId>) -> OpId {
        let op = self.invoke(session, OpKind::Get, key, None, ctx);
        self.answer_get(op, value);
        op
    }

    fn answer_get(&mut self, op: OpId, value: Option<&str>) {
        match value {
            Some(v) if self.ttl_values.iter().any(|t| t == v) => self.respond(
                op,
                200,
                json!({"message": "Retrieved successfully", "doesExist": true, "value": v, "ttl": 1}),
            ),
            Some(v) => self.respond(
                op,
                200,
                json!({"message": "Retrieved successfully", "doesExist": true, "value": v}),
            ),
            None => self.respond(
                op,
                404,
                json!({"message": "Error in GET", "error": "Key does not exist", "doesExist": false}),
            ),
        }
    }

    fn fault(&mut self, fault: Fault) {
        let t = self.tick();
        self.events.push(Event::Fault(FaultRecord { t, fault }));
    }

    /// Final state: every node holds `values[i]` for `key`.
    fn final_state(&mut self, key: &str, values: &[(&str, Option<&str>)]) {
        for (node, v) in values {
            self.events.push(Event::Final(FinalRead {
                node: node.to_string(),
                key: key.into(),
                status: Some(if v.is_some() { 200 } else { 404 }),
                value: v.map(String::from),
                local: true,
                error: None,
            }));
        }
    }

    fn view(&mut self) {
        self.events.push(Event::FinalView {
            shards: vec![("1".into(), vec![N1.into(), N2.into()])],
        });
    }

    fn key_count(&mut self, node: &str, count: u64) {
        self.events.push(Event::KeyCount(KeyCount {
            node: node.into(),
            shard: "1".into(),
            count,
        }));
    }

    fn check(&self) -> Report {
        check(&self.events, CheckOptions::default())
    }
}

/// One op of a batch with its result.
struct B {
    op: BatchOp,
    result: Value,
}

impl B {
    fn get(key: &str, value: Option<&str>) -> B {
        let result = match value {
            Some(v) => {
                json!({"key": key, "status": 200, "message": "Retrieved successfully", "doesExist": true, "value": v})
            }
            None => {
                json!({"key": key, "status": 404, "message": "Error in GET", "error": "Key does not exist", "doesExist": false})
            }
        };
        B {
            op: BatchOp {
                kind: OpKind::Get,
                key: key.into(),
                value: None,
                ttl: None,
            },
            result,
        }
    }

    fn put(key: &str, value: &str) -> B {
        B {
            op: BatchOp {
                kind: OpKind::Put,
                key: key.into(),
                value: Some(value.into()),
                ttl: None,
            },
            result: json!({"key": key, "status": 201, "message": "Added successfully", "replaced": false}),
        }
    }

    fn put_ttl(key: &str, value: &str, ttl: u64) -> B {
        let mut b = B::put(key, value);
        b.op.ttl = Some(ttl);
        b
    }

    fn del(key: &str) -> B {
        B {
            op: BatchOp {
                kind: OpKind::Delete,
                key: key.into(),
                value: None,
                ttl: None,
            },
            result: json!({"key": key, "status": 200, "message": "Deleted successfully", "doesExist": true}),
        }
    }

    /// The same op, answered 503.
    fn unavailable(mut self) -> B {
        let method = self.op.kind.method();
        self.result = json!({"key": self.op.key, "status": 503, "message": format!("Error in {method}"), "error": "Unable to satisfy request"});
        self
    }
}

fn kinds(report: &Report) -> Vec<AnomalyKind> {
    let mut k: Vec<AnomalyKind> = report.anomalies.iter().map(|a| a.kind).collect();
    k.dedup();
    k
}

fn assert_only(report: &Report, kind: AnomalyKind) {
    assert!(
        report.has(kind),
        "expected {kind:?}, got {:#?}",
        report.anomalies
    );
    assert_eq!(kinds(report), vec![kind], "{:#?}", report.anomalies);
}

fn assert_clean(report: &Report) {
    assert!(report.anomalies.is_empty(), "{:#?}", report.anomalies);
}

/// A rich, correct history: sessions, context flow, hand-offs, concurrent
/// writes resolved once and for all, deletes, a converged final state.
#[test]
fn a_good_history_passes() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let r1 = h.get(0, "k", Some("s0-w1"), Some(a));
    let b = h.put(1, "k", "s1-w1", None); // concurrent with a
    let r2 = h.get(1, "k", Some("s1-w1"), Some(b));
    // Session 0 sees the concurrent write win, and stays with it.
    let r3 = h.get(0, "k", Some("s1-w1"), Some(r1));
    let r4 = h.get(0, "k", Some("s1-w1"), Some(r3));
    let c = h.put(0, "k", "s0-w2", Some(r4)); // supersedes both
                                              // Session 1 took session 0's context: it must see c, and does.
    let r5 = h.get(1, "k", Some("s0-w2"), Some(c));
    let _ = r2;
    let d = h.del(1, "k", Some(r5));
    h.get(1, "k", None, Some(d));
    h.put(2, "j", "s2-w1", None);
    h.get(2, "j", None, None); // empty context: not found is allowed
    h.view();
    h.final_state("k", &[(N1, None), (N2, None)]);
    h.final_state("j", &[(N1, Some("s2-w1")), (N2, Some("s2-w1"))]);
    h.key_count(N1, 1);
    h.key_count(N2, 1);
    let report = h.check();
    assert_clean(&report);
    assert_eq!(report.operations, 12);
    assert_eq!(report.final_keys, 2);
}

#[test]
fn a_stale_read_of_the_sessions_own_write_is_caught() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let b = h.put(0, "k", "s0-w2", Some(a));
    let r = h.get(0, "k", Some("s0-w1"), Some(b));
    let report = h.check();
    assert_only(&report, AnomalyKind::StaleRead);
    assert_eq!(report.anomalies[0].ops, vec![r, a, b]);
}

#[test]
fn not_found_after_own_write_is_a_stale_read() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    h.get(0, "k", None, Some(a));
    assert_only(&h.check(), AnomalyKind::StaleRead);
}

#[test]
fn not_found_is_fine_when_a_concurrent_delete_exists() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    h.del(1, "k", None);
    h.get(0, "k", None, Some(a));
    assert_clean(&h.check());
}

#[test]
fn a_monotonic_read_violation_is_caught() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    h.put(0, "k", "s0-w2", Some(a));
    let r1 = h.get(1, "k", Some("s0-w2"), None);
    h.get(1, "k", Some("s0-w1"), Some(r1));
    assert_only(&h.check(), AnomalyKind::StaleRead);
}

#[test]
fn writes_follow_reads_across_sessions_is_enforced() {
    let mut h = H::default();
    h.put(0, "x", "s0-w1", None);
    let r = h.get(1, "x", Some("s0-w1"), None);
    h.put(1, "x", "s1-w1", Some(r)); // written after reading s0-w1
    let r2 = h.get(2, "x", Some("s1-w1"), None);
    h.get(2, "x", Some("s0-w1"), Some(r2));
    assert_only(&h.check(), AnomalyKind::StaleRead);
}

#[test]
fn causality_across_keys_is_enforced() {
    let mut h = H::default();
    let a = h.put(0, "x", "s0-w1", None);
    let a2 = h.put(0, "x", "s0-w2", Some(a));
    h.put(0, "y", "s0-w3", Some(a2)); // y depends on x=s0-w2
    let r = h.get(1, "y", Some("s0-w3"), None);
    h.get(1, "x", Some("s0-w1"), Some(r)); // so x must be at least s0-w2
    assert_only(&h.check(), AnomalyKind::StaleRead);
}

#[test]
fn a_context_handed_to_another_session_carries_causality() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let b = h.put(0, "k", "s0-w2", Some(a));
    h.get(1, "k", Some("s0-w1"), Some(b)); // session 1 sends session 0's context
    assert_only(&h.check(), AnomalyKind::StaleRead);
}

#[test]
fn going_back_to_a_loser_after_seeing_the_winner_is_caught() {
    let mut h = H::default();
    h.put(0, "k", "s0-w1", None);
    h.put(1, "k", "s1-w1", None); // concurrent
    let r1 = h.get(2, "k", Some("s0-w1"), None);
    let r2 = h.get(2, "k", Some("s1-w1"), Some(r1)); // s1-w1 wins over s0-w1
    h.get(2, "k", Some("s0-w1"), Some(r2)); // and now the other way round
    assert_only(&h.check(), AnomalyKind::ArbitrationCycle);
}

#[test]
fn a_lost_write_is_caught() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let b = h.put(0, "k", "s0-w2", Some(a));
    h.view();
    h.final_state("k", &[(N1, Some("s0-w1")), (N2, Some("s0-w1"))]);
    let report = h.check();
    assert_only(&report, AnomalyKind::LostWrite);
    assert_eq!(report.anomalies[0].ops, vec![a, b]);
}

#[test]
fn a_write_lost_to_nothing_is_caught() {
    let mut h = H::default();
    h.put(0, "k", "s0-w1", None);
    h.final_state("k", &[(N1, None), (N2, None)]);
    assert_only(&h.check(), AnomalyKind::LostWrite);
}

#[test]
fn a_write_superseded_by_a_concurrent_one_is_not_lost() {
    let mut h = H::default();
    h.put(0, "k", "s0-w1", None);
    h.put(1, "k", "s1-w1", None);
    h.final_state("k", &[(N1, Some("s1-w1")), (N2, Some("s1-w1"))]);
    assert_clean(&h.check());
}

#[test]
fn a_divergent_replica_is_caught() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    h.put(0, "k", "s0-w2", Some(a));
    h.view();
    h.final_state("k", &[(N1, Some("s0-w2")), (N2, Some("s0-w2"))]);
    h.final_state("j", &[(N1, None), (N2, None)]);
    h.key_count(N1, 1);
    h.key_count(N2, 1);
    assert_clean(&h.check());

    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    h.put(1, "k", "s1-w1", Some(a));
    h.final_state("k", &[(N1, Some("s1-w1")), (N2, Some("s0-w1"))]);
    let report = h.check();
    // One replica also lost s1-w1, which superseded what it holds.
    assert!(
        report.has(AnomalyKind::Divergence),
        "{:#?}",
        report.anomalies
    );
    assert!(
        report.has(AnomalyKind::LostWrite),
        "{:#?}",
        report.anomalies
    );
}

#[test]
fn divergent_replicas_of_concurrent_writes_are_caught() {
    let mut h = H::default();
    h.put(0, "k", "s0-w1", None);
    h.put(1, "k", "s1-w1", None);
    h.final_state("k", &[(N1, Some("s1-w1")), (N2, Some("s0-w1"))]);
    assert_only(&h.check(), AnomalyKind::Divergence);
}

#[test]
fn divergent_key_counts_are_caught() {
    let mut h = H::default();
    h.put(0, "k", "s0-w1", None);
    h.view();
    h.final_state("k", &[(N1, Some("s0-w1")), (N2, Some("s0-w1"))]);
    h.key_count(N1, 1);
    h.key_count(N2, 2);
    assert_only(&h.check(), AnomalyKind::Divergence);
}

#[test]
fn a_key_on_the_wrong_nodes_is_caught() {
    let mut h = H::default();
    h.put(0, "k", "s0-w1", None);
    h.view();
    h.final_state("k", &[(N1, Some("s0-w1"))]);
    assert_only(&h.check(), AnomalyKind::Placement);
}

#[test]
fn a_phantom_value_is_caught() {
    let mut h = H::default();
    h.put(0, "k", "s0-w1", None);
    h.get(1, "k", Some("nobody-wrote-this"), None);
    h.get(1, "j", Some("s0-w1"), None); // a value of another key
    let report = h.check();
    assert_only(&report, AnomalyKind::PhantomRead);
    assert_eq!(report.anomalies.len(), 2);
}

#[test]
fn a_failed_write_need_not_be_visible_but_may_be() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let b = h.invoke(0, OpKind::Put, "k", Some("s0-w2"), Some(a));
    h.respond(
        b,
        503,
        json!({"message": "Error in PUT", "error": "Unable to satisfy request"}),
    );
    let r = h.get(0, "k", Some("s0-w1"), Some(b)); // fine: s0-w2 was never acknowledged
    h.get(0, "k", Some("s0-w2"), Some(r)); // fine too: it took effect later
    let report = h.check();
    assert_clean(&report);
    assert_eq!(report.unavailable_503, 1);
}

#[test]
fn a_refused_read_is_counted_not_an_anomaly() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let r = h.invoke(0, OpKind::Get, "k", None, Some(a));
    h.respond(
        r,
        400,
        json!({"message": "Error in GET", "error": "Unable to satisfy request"}),
    );
    let report = h.check();
    assert_clean(&report);
    assert_eq!(report.refused_400, 1);
}

#[test]
fn a_stale_read_across_a_view_change_is_caught() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let b = h.put(0, "k", "s0-w2", Some(a));
    h.fault(Fault::ViewChangeStart {
        id: 0,
        view: vec![N1.into(), N2.into()],
        repl_factor: 2,
        node: None,
    });
    // Even a read that overlaps the change, with a context from the old view.
    h.get(0, "k", Some("s0-w1"), Some(b));
    h.fault(Fault::ViewChangeEnd {
        id: 0,
        status: Some(200),
        error: None,
        incomplete_shards: vec![],
        ms: 10.0,
    });
    assert_only(&h.check(), AnomalyKind::StaleRead);
}

#[test]
fn writes_may_not_be_lost_across_a_view_change() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    h.put(0, "k", "s0-w2", Some(a));
    h.fault(Fault::ViewChangeStart {
        id: 0,
        view: vec![N1.into(), N2.into()],
        repl_factor: 2,
        node: None,
    });
    h.fault(Fault::ViewChangeEnd {
        id: 0,
        status: Some(200),
        error: None,
        incomplete_shards: vec![],
        ms: 10.0,
    });
    h.final_state("k", &[(N1, Some("s0-w1")), (N2, Some("s0-w1"))]);
    assert_only(&h.check(), AnomalyKind::LostWrite);
}

#[test]
fn a_stale_read_within_the_new_view_is_still_caught() {
    let mut h = H::default();
    h.fault(Fault::ViewChangeStart {
        id: 0,
        view: vec![N1.into(), N2.into()],
        repl_factor: 2,
        node: None,
    });
    h.fault(Fault::ViewChangeEnd {
        id: 0,
        status: Some(200),
        error: None,
        incomplete_shards: vec![],
        ms: 10.0,
    });
    let a = h.put(0, "k", "s0-w1", None);
    let b = h.put(0, "k", "s0-w2", Some(a));
    h.get(0, "k", Some("s0-w1"), Some(b));
    let report = h.check();
    assert_only(&report, AnomalyKind::StaleRead);
    assert_eq!(report.faults.get("view-change"), Some(&1));
}

#[test]
fn failures_are_anomalies_unless_the_node_was_down() {
    let mut h = H::default();
    let op = h.invoke(0, OpKind::Get, "k", None, None);
    h.fail(op, "timeout", 5000.0);
    assert_only(&h.check(), AnomalyKind::Unavailable);

    let mut h = H::default();
    h.fault(Fault::Pause { node: N1.into() });
    let op = h.invoke(0, OpKind::Get, "k", None, None);
    h.fail(op, "timeout", 5000.0);
    h.fault(Fault::Resumed { node: N1.into() });
    let op2 = h.invoke(0, OpKind::Get, "k", None, None);
    h.fault(Fault::Kill { node: N1.into() });
    h.fail(op2, "connect: refused", 0.0);
    let report = h.check();
    assert_clean(&report);
    assert_eq!(report.excused_failures, 2);
    assert_eq!(report.faults.get("pause"), Some(&1));
    assert_eq!(report.faults.get("kill"), Some(&1));
}

#[test]
fn server_errors_and_broken_answers_are_caught() {
    let mut h = H::default();
    let op = h.invoke(0, OpKind::Get, "k", None, None);
    h.respond(op, 500, json!({"message": "boom"}));
    assert!(h.check().has(AnomalyKind::ServerError));

    let mut h = H::default();
    let op = h.invoke(0, OpKind::Get, "k", None, None);
    h.events.push(Event::Response(Response {
        op,
        t: 2.0,
        status: Some(404),
        body: Some(
            json!({"message": "Error in GET", "error": "Key does not exist", "doesExist": false}),
        ),
        error: None,
    }));
    assert_only(&h.check(), AnomalyKind::Protocol);
}

#[test]
fn a_node_crash_and_a_failed_view_change_are_reported() {
    let mut h = H::default();
    h.fault(Fault::NodeExited {
        node: N1.into(),
        status: "signal: 6 (SIGABRT)".into(),
    });
    h.fault(Fault::ViewChangeStart {
        id: 0,
        view: vec![N1.into()],
        repl_factor: 1,
        node: None,
    });
    h.fault(Fault::ViewChangeEnd {
        id: 0,
        status: Some(503),
        error: Some("{}".into()),
        incomplete_shards: vec![],
        ms: 5000.0,
    });
    let report = h.check();
    assert!(report.has(AnomalyKind::NodeCrash));
    assert!(report.has(AnomalyKind::ViewChangeFailed));
}

#[test]
fn a_view_change_whose_coordinator_was_killed_may_go_unanswered() {
    let ended = |h: &mut H, id| {
        h.fault(Fault::ViewChangeEnd {
            id,
            status: None,
            error: Some("error sending request".into()),
            incomplete_shards: vec![],
            ms: 900.0,
        })
    };
    let start = |h: &mut H, id| {
        h.fault(Fault::ViewChangeStart {
            id,
            view: vec![N1.into(), N2.into()],
            repl_factor: 2,
            node: Some(N1.into()),
        })
    };
    let mut h = H::default();
    start(&mut h, 0);
    h.fault(Fault::Kill { node: N1.into() });
    ended(&mut h, 0);
    assert_clean(&h.check());
    // Unanswered without that excuse: a failure.
    let mut h = H::default();
    start(&mut h, 1);
    h.fault(Fault::Kill { node: N2.into() });
    ended(&mut h, 1);
    assert!(h.check().has(AnomalyKind::ViewChangeFailed));
}

#[test]
fn a_view_change_answered_202_is_accepted_and_counted() {
    let mut h = H::default();
    h.fault(Fault::ViewChangeStart {
        id: 0,
        view: vec![N1.into(), N2.into()],
        repl_factor: 2,
        node: None,
    });
    h.fault(Fault::ViewChangeEnd {
        id: 0,
        status: Some(202),
        error: None,
        incomplete_shards: vec!["1".into()],
        ms: 30.0,
    });
    let report = h.check();
    assert_clean(&report);
    assert_eq!(report.view_changes_in_progress, 1);
    assert_eq!(report.faults.get("view-change"), Some(&1));
    // A 202 that names no waiting shard breaks the contract.
    let mut h = H::default();
    h.fault(Fault::ViewChangeStart {
        id: 0,
        view: vec![N1.into(), N2.into()],
        repl_factor: 2,
        node: None,
    });
    h.fault(Fault::ViewChangeEnd {
        id: 0,
        status: Some(202),
        error: Some("{}".into()),
        incomplete_shards: vec![],
        ms: 30.0,
    });
    assert_only(&h.check(), AnomalyKind::ViewChangeFailed);
}

/// A cut view change is one episode: its partition and its view change count
/// once, as `cut-view-change`; reads across it are judged like any other.
#[test]
fn a_cut_view_change_is_counted_once_and_judged_across() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let b = h.put(0, "k", "s0-w2", Some(a));
    let links = vec![(N2.to_string(), N1.to_string())];
    h.fault(Fault::PartitionStart {
        name: "cut-view-change".into(),
        links: links.clone(),
        view_change: Some(3),
    });
    h.fault(Fault::ViewChangeStart {
        id: 3,
        view: vec![N1.into(), N2.into()],
        repl_factor: 2,
        node: None,
    });
    h.fault(Fault::ViewChangeEnd {
        id: 3,
        status: Some(202),
        error: None,
        incomplete_shards: vec!["1".into()],
        ms: 30.0,
    });
    // A read with a context from before the change, while the cut holds.
    h.get(0, "k", Some("s0-w1"), Some(b));
    h.fault(Fault::PartitionEnd {
        name: "cut-view-change".into(),
        links,
    });
    let report = h.check();
    assert_only(&report, AnomalyKind::StaleRead);
    assert_eq!(report.faults.get("cut-view-change"), Some(&1));
    assert_eq!(report.faults.get("view-change"), None);
    assert_eq!(report.faults.get("partition"), None);
}

#[test]
fn a_missing_final_state_fails_a_campaign_history() {
    let mut h = H::default();
    h.put(0, "k", "s0-w1", None);
    let report = check(
        &h.events,
        CheckOptions {
            require_final: true,
        },
    );
    assert_only(&report, AnomalyKind::FinalReadFailed);
}

// ---- batches, listings and expiring writes ----

/// Batches, listings and ttl writes used as a correct store would answer them.
#[test]
fn a_good_history_with_batches_listings_and_ttl_passes() {
    let mut h = H::default();
    // Ops on different keys of a batch ran in parallel: k and j are concurrent.
    let b1 = h.batch(
        0,
        &[
            B::put("k", "s0-w1"),
            B::put("j", "s0-w2"),
            B::get("k", Some("s0-w1")),
        ],
        None,
    );
    // Reading j's write does not put k's write (same batch) in the reader's past.
    let r1 = h.get(1, "j", Some("s0-w2"), None);
    h.get(1, "k", None, Some(r1));
    // A listing with the batch's context sees both.
    let l1 = h.list(0, &[("j", "s0-w2"), ("k", "s0-w1")], Some(b1));
    // A ttl write may vanish at any time, as a GET or from a listing.
    let t = h.put_ttl(0, "x", "s0-w3", 2, Some(l1));
    let r2 = h.get(0, "x", Some("s0-w3"), Some(t));
    let r3 = h.get(0, "x", None, Some(r2));
    let l2 = h.list(0, &[("j", "s0-w2"), ("k", "s0-w1")], Some(r3));
    // A batch whose ops on one key run in order, one of them refused.
    let b2 = h.batch(
        0,
        &[
            B::del("k"),
            B::put("j", "s0-w4").unavailable(),
            B::get("k", None),
            B::put_ttl("k", "s0-w5", 1),
            B::get("j", Some("s0-w2")),
            B::get("k", Some("s0-w5")),
        ],
        Some(l2),
    );
    // The ttl write of the batch expires too; a new write brings x back.
    let r4 = h.get(0, "k", None, Some(b2));
    let p = h.put(0, "x", "s0-w6", Some(r4));
    h.list(0, &[("j", "s0-w2"), ("x", "s0-w6")], Some(p));
    h.fault(Fault::HealAll);
    h.view();
    h.final_state("k", &[(N1, None), (N2, Some("s0-w5"))]); // clocks disagree
    h.final_state("j", &[(N1, Some("s0-w2")), (N2, Some("s0-w2"))]);
    h.final_state("x", &[(N1, Some("s0-w6")), (N2, Some("s0-w6"))]);
    h.key_count(N1, 2);
    h.key_count(N2, 3); // k may still be counted
    let report = h.check();
    assert_clean(&report);
    assert_eq!(report.outcomes.get("batch GET 200"), Some(&3));
    assert_eq!(report.outcomes.get("batch PUT 503"), Some(&1));
    assert_eq!(report.outcomes.get("LIST 200"), Some(&3));
    assert_eq!(report.unavailable_503, 1);
}

#[test]
fn a_stale_read_in_a_batch_is_caught() {
    // Against the request's context.
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let b = h.put(0, "k", "s0-w2", Some(a));
    let batch = h.batch(
        0,
        &[B::put("j", "s0-w3"), B::get("k", Some("s0-w1"))],
        Some(b),
    );
    let report = h.check();
    assert_only(&report, AnomalyKind::StaleRead);
    assert_eq!(report.anomalies[0].ops, vec![batch, a, b]);

    // Against an earlier op of the batch on the same key.
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    h.batch(
        0,
        &[B::put("k", "s0-w2"), B::get("k", Some("s0-w1"))],
        Some(a),
    );
    assert_only(&h.check(), AnomalyKind::StaleRead);

    // "Not found" after the batch's own put of that key.
    let mut h = H::default();
    h.batch(0, &[B::put("k", "s0-w1"), B::get("k", None)], None);
    assert_only(&h.check(), AnomalyKind::StaleRead);

    // The batch's answer context covers its writes.
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let b = h.batch(0, &[B::get("j", None), B::put("k", "s0-w2")], Some(a));
    h.get(0, "k", Some("s0-w1"), Some(b));
    assert_only(&h.check(), AnomalyKind::StaleRead);
}

#[test]
fn ops_on_different_keys_of_a_batch_are_not_ordered() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    // The get of k ran in parallel with the put of j and of k in another order.
    h.batch(
        0,
        &[
            B::put("j", "s0-w2"),
            B::get("k", Some("s0-w1")),
            B::put("k", "s0-w3"),
        ],
        Some(a),
    );
    // Reading k's batch write says nothing about j's.
    let r = h.get(1, "k", Some("s0-w3"), None);
    h.get(1, "j", None, Some(r));
    assert_clean(&h.check());
}

#[test]
fn a_listing_missing_a_key_the_session_wrote_is_a_stale_read() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let j = h.put(0, "j", "s0-w2", Some(a));
    let l = h.list(0, &[("j", "s0-w2")], Some(j));
    let report = h.check();
    assert_only(&report, AnomalyKind::StaleRead);
    assert_eq!(report.anomalies[0].ops, vec![l, a]);

    // A listing that stops early (next = "b") says nothing about later keys.
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let op = h.invoke(0, OpKind::List, "", None, Some(a));
    h.respond(
        op,
        200,
        json!({"message": "Keys listed successfully", "items": [{"key": "b", "value": "s0-w1"}], "next": "b"}),
    );
    let report = h.check();
    assert_only(&report, AnomalyKind::PhantomRead); // b was never written
}

#[test]
fn a_stale_or_phantom_value_in_a_listing_is_caught() {
    let mut h = H::default();
    let a = h.put(0, "k", "s0-w1", None);
    let b = h.put(0, "k", "s0-w2", Some(a));
    h.list(0, &[("k", "s0-w1")], Some(b));
    assert_only(&h.check(), AnomalyKind::StaleRead);

    let mut h = H::default();
    h.put(0, "k", "s0-w1", None);
    h.list(1, &[("k", "nobody-wrote-this"), ("j", "s0-w1")], None);
    let report = h.check();
    assert_only(&report, AnomalyKind::PhantomRead);
    assert_eq!(report.anomalies.len(), 2);
}

#[test]
fn an_expired_write_may_vanish_without_a_lost_write_or_stale_read() {
    let mut h = H::default();
    let t = h.put_ttl(0, "x", "s0-w1", 1, None);
    h.get(0, "x", None, Some(t));
    h.list(0, &[], Some(t));
    // A concurrent ttl write may win over a permanent one and then expire.
    let a = h.put(0, "k", "s0-w2", None);
    h.put_ttl(1, "k", "s1-w1", 3, None);
    h.get(0, "k", None, Some(a));
    h.fault(Fault::HealAll);
    h.final_state("x", &[(N1, None), (N2, None)]);
    h.final_state("k", &[(N1, None), (N2, None)]);
    assert_clean(&h.check());

    // A ttl write superseded by a permanent put no longer excuses "not found".
    let mut h = H::default();
    let t = h.put_ttl(0, "x", "s0-w1", 1, None);
    let p = h.put(0, "x", "s0-w2", Some(t));
    h.get(0, "x", None, Some(p));
    assert_only(&h.check(), AnomalyKind::StaleRead);
}

#[test]
fn a_resurrected_expired_write_is_caught() {
    // Seen expired by a GET, then alive again.
    let mut h = H::default();
    let t = h.put_ttl(0, "x", "s0-w1", 1, None);
    let gone = h.get(0, "x", None, Some(t));
    let back = h.get(0, "x", Some("s0-w1"), Some(gone));
    let report = h.check();
    assert_only(&report, AnomalyKind::ResurrectedExpired);
    assert_eq!(report.anomalies[0].ops, vec![back, t]);

    // Seen expired by a batch; alive in a listing of a session it handed its context to.
    let mut h = H::default();
    let t = h.put_ttl(0, "x", "s0-w1", 1, None);
    let b = h.batch(0, &[B::get("x", None)], Some(t));
    h.list(1, &[("x", "s0-w1")], Some(b));
    assert_only(&h.check(), AnomalyKind::ResurrectedExpired);

    // Missing from a complete listing, then alive in a batch.
    let mut h = H::default();
    let t = h.put_ttl(0, "x", "s0-w1", 1, None);
    let l = h.list(0, &[], Some(t));
    h.batch(0, &[B::get("x", Some("s0-w1"))], Some(l));
    assert_only(&h.check(), AnomalyKind::ResurrectedExpired);

    // Without the context of the read that saw it expire, it may show again.
    let mut h = H::default();
    let t = h.put_ttl(0, "x", "s0-w1", 1, None);
    h.get(0, "x", None, Some(t));
    h.get(0, "x", Some("s0-w1"), Some(t));
    assert_clean(&h.check());
}

#[test]
fn an_expired_write_alive_long_after_healing_is_caught() {
    let history = |clock_offset: Option<i64>| {
        let mut h = H::default();
        if let Some(offset_s) = clock_offset {
            h.fault(Fault::Clock {
                node: N1.into(),
                offset_s,
            });
        }
        h.put_ttl(0, "x", "s0-w1", 2, None);
        h.t += 60_000.0;
        h.fault(Fault::HealAll);
        h.final_state("x", &[(N1, Some("s0-w1")), (N2, Some("s0-w1"))]);
        h.check()
    };
    // No clock skew: 60 s is far beyond 2 s.
    assert_only(&history(None), AnomalyKind::ResurrectedExpired);
    // Clocks up to two minutes apart: the write may still live on a slow clock.
    assert_clean(&history(Some(-120)));
}

#[test]
fn a_batch_answer_that_breaks_the_contract_is_caught() {
    let mut h = H::default();
    let op = h.invoke(0, OpKind::Batch, "", None, None);
    h.last_invoke().ops = vec![B::get("k", None).op, B::get("j", None).op];
    h.respond(
        op,
        200,
        json!({"message": "Batch completed", "results": [
            {"key": "j", "status": 404, "message": "Error in GET", "error": "Key does not exist", "doesExist": false},
            {"key": "j", "status": 404, "message": "Error in GET", "error": "Key does not exist"}
        ]}),
    );
    let report = h.check();
    assert_only(&report, AnomalyKind::Protocol);
    assert_eq!(report.anomalies.len(), 2);
}

// ---- retried idempotent writes ----

impl H {
    /// A keyed write (`Idempotency-Key` `idem`), not yet answered.
    fn keyed(
        &mut self,
        session: u32,
        kind: OpKind,
        key: &str,
        value: Option<&str>,
        ctx: Option<OpId>,
        idem: &str,
    ) -> OpId {
        let op = self.invoke(session, kind, key, value, ctx);
        self.last_invoke().idempotency_key = Some(idem.into());
        op
    }

    /// A retry of `first`: the same request (key, value, ops, context and
    /// `Idempotency-Key`), sent to the other node; not yet answered.
    fn retry(&mut self, first: OpId) -> OpId {
        let inv = self
            .events
            .iter()
            .find_map(|e| match e {
                Event::Invoke(i) if i.op == first => Some(i.clone()),
                _ => None,
            })
            .expect("first attempt");
        self.next += 1;
        let t = self.tick();
        self.events.push(Event::Invoke(Invoke {
            op: self.next,
            t,
            node: N2.into(),
            retry_of: Some(first),
            ..inv
        }));
        self.next
    }

    fn unavailable(&mut self, op: OpId, method: &str) {
        self.respond(
            op,
            503,
            json!({"message": format!("Error in {method}"), "error": "Unable to satisfy request"}),
        );
    }

    fn added(&mut self, op: OpId) {
        self.respond(
            op,
            201,
            json!({"message": "Added successfully", "replaced": false}),
        );
    }
}

/// The scenario: A's first attempt gets no answer, B reads its value and
/// overwrites it, A's retry is acknowledged, and a read in B's causal future
/// returns A's value again: the retry was applied as a new write after B's, a
/// double-applied retry.
#[test]
fn a_retry_applied_again_after_a_superseding_write_is_caught() {
    let mut h = H::default();
    h.fault(Fault::Pause { node: N1.into() });
    let a1 = h.keyed(0, OpKind::Put, "k", Some("s0-w1"), None, "s0-k1");
    h.fail(a1, "timeout", 5000.0);
    h.fault(Fault::Resumed { node: N1.into() });
    let r = h.get(1, "k", Some("s0-w1"), None);
    let b = h.put(1, "k", "s1-w1", Some(r));
    let a2 = h.retry(a1);
    h.added(a2);
    let late = h.get(1, "k", Some("s0-w1"), Some(b));
    let report = h.check();
    assert_only(&report, AnomalyKind::StaleRead);
    let anomaly = &report.anomalies[0];
    assert!(anomaly.ops.contains(&late) && anomaly.ops.contains(&a1));
    assert!(
        anomaly.detail.contains(&format!("retried as op {a2}")),
        "{}",
        anomaly.detail
    );
    assert_eq!(
        (
            report.retried_writes,
            report.retries,
            report.retries_acknowledged
        ),
        (1, 1, 1)
    );

    // Without `retry_of` the history would hide it: the same value from two
    // unrelated writes is reported as such.
    let mut h = H::default();
    let first = h.keyed(0, OpKind::Put, "k", Some("s0-w1"), None, "s0-k1");
    h.unavailable(first, "PUT");
    let again = h.keyed(0, OpKind::Put, "k", Some("s0-w1"), None, "s0-k1");
    h.added(again);
    assert_only(&h.check(), AnomalyKind::DuplicateWrite);
}

/// Retries as a correct store answers them: every attempt is one write, seen
/// by reads (before and after the retry is answered), acknowledged by the retry,
/// superseded for good by a later write; a batch retried likewise.
#[test]
fn a_good_history_with_retries_passes() {
    let mut h = H::default();
    // First attempt 503, retry acknowledged on the other node.
    let a1 = h.keyed(0, OpKind::Put, "k", Some("s0-w1"), None, "s0-k1");
    h.unavailable(a1, "PUT");
    let a2 = h.retry(a1);
    h.added(a2);
    let r1 = h.get(0, "k", Some("s0-w1"), Some(a2));
    // Another session reads it, overwrites it; its future never sees it again.
    let r2 = h.get(1, "k", Some("s0-w1"), None);
    let b = h.put(1, "k", "s1-w1", Some(r2));
    h.get(1, "k", Some("s1-w1"), Some(b));
    h.get(0, "k", Some("s1-w1"), Some(r1));
    // A first attempt that timed out on a paused node may have been applied: a
    // read may return it before the retry is answered; the second retry is
    // answered as the first time (a repeat).
    h.fault(Fault::Pause { node: N1.into() });
    let c1 = h.keyed(2, OpKind::Put, "j", Some("s2-w1"), None, "s2-k1");
    h.fail(c1, "timeout", 5000.0);
    h.fault(Fault::Resumed { node: N1.into() });
    h.get(3, "j", Some("s2-w1"), None);
    let c2 = h.retry(c1);
    h.unavailable(c2, "PUT");
    let c3 = h.retry(c1);
    h.added(c3);
    h.get(2, "j", Some("s2-w1"), Some(c3));
    // A batch: first attempt 503, retried and answered.
    let ops = [B::put("m", "s2-w2"), B::get("j", Some("s2-w1"))];
    let d1 = h.invoke(2, OpKind::Batch, "", None, Some(c3));
    h.last_invoke().ops = ops.iter().map(|b| b.op.clone()).collect();
    h.last_invoke().idempotency_key = Some("s2-k2".into());
    h.unavailable(d1, "BATCH");
    let d2 = h.retry(d1);
    let results: Vec<Value> = ops.iter().map(|b| b.result.clone()).collect();
    h.respond(
        d2,
        200,
        json!({"message": "Batch completed", "results": results}),
    );
    h.get(2, "m", Some("s2-w2"), Some(d2));
    // A keyed delete answered at once: no retry.
    let e = h.keyed(1, OpKind::Delete, "j", None, Some(c3), "s1-k1");
    h.respond(
        e,
        200,
        json!({"message": "Deleted successfully", "doesExist": true}),
    );
    h.get(1, "j", None, Some(e));
    h.view();
    for (key, v) in [("k", Some("s1-w1")), ("j", None), ("m", Some("s2-w2"))] {
        h.final_state(key, &[(N1, v), (N2, v)]);
    }
    h.key_count(N1, 2);
    h.key_count(N2, 2);
    let report = h.check();
    assert_clean(&report);
    assert_eq!(report.keyed_writes, 4);
    assert_eq!(report.retried_writes, 3);
    assert_eq!(report.retries, 4);
    assert_eq!(report.retries_answered, 4);
    assert_eq!(report.retries_acknowledged, 3);
}

/// A retry's acknowledgement is the write's: the session's future must see it.
#[test]
fn an_acknowledged_retry_must_be_read_by_its_session() {
    let mut h = H::default();
    let a1 = h.keyed(0, OpKind::Put, "k", Some("s0-w1"), None, "s0-k1");
    h.unavailable(a1, "PUT");
    let a2 = h.retry(a1);
    h.added(a2);
    h.get(0, "k", None, Some(a2));
    assert_only(&h.check(), AnomalyKind::StaleRead);
}

/// A retry is the same request as its first attempt: a 422 ("key reused for
/// another request") to it is a server error.
#[test]
fn a_422_to_a_retry_is_a_server_error() {
    let mut h = H::default();
    let a1 = h.keyed(0, OpKind::Put, "k", Some("s0-w1"), None, "s0-k1");
    h.unavailable(a1, "PUT");
    let a2 = h.retry(a1);
    h.respond(
        a2,
        422,
        json!({"message": "Error in PUT", "error": "Idempotency-Key reused for another request"}),
    );
    let report = h.check();
    assert_only(&report, AnomalyKind::ServerError);
    assert!(report.anomalies[0].detail.contains("retry of op"));
}

/// A "retry" that is not the same request (another value) is not one write with
/// its first attempt.
#[test]
fn a_retry_with_another_request_is_reported() {
    let mut h = H::default();
    let a1 = h.keyed(0, OpKind::Put, "k", Some("s0-w1"), None, "s0-k1");
    h.unavailable(a1, "PUT");
    let a2 = h.retry(a1);
    if let Some(Event::Invoke(i)) = h.events.last_mut() {
        i.value = Some("s0-w2".into());
    }
    h.added(a2);
    h.get(0, "k", Some("s0-w2"), Some(a2));
    assert_only(&h.check(), AnomalyKind::DuplicateWrite);
}
