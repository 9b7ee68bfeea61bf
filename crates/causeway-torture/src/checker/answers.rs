//! Per-answer checks: every answer is a JSON object of the shape the API
//! contract lists, with a `causal-context` object; no 5xx but the documented
//! 503; no request left unanswered for 5 s while its node was up.

use serde_json::{json, Map, Value};

use super::report::{AnomalyKind, Report};
use super::timeline::Timeline;
use crate::history::{BatchOp, OpKind};

/// Clients give up after this long; a node must answer sooner.
pub const CLIENT_TIMEOUT_MS: f64 = 5000.0;

/// Checks `body` against the contract for `kind` answered with `status`.
/// Returns what is wrong, if anything.
pub fn check_answer(kind: OpKind, status: u16, body: &Value) -> Result<(), String> {
    let Some(obj) = body.as_object() else {
        return Err(format!("answer is not a JSON object: {body}"));
    };
    match obj.get("causal-context") {
        Some(Value::Object(_)) => {}
        Some(other) => return Err(format!("causal-context is not an object: {other}")),
        None => return Err("answer has no causal-context".into()),
    }
    if let Some(addr) = obj.get("address") {
        if !addr.is_string() {
            return Err(format!("address is not a string: {addr}"));
        }
    }
    let method = kind.method();
    let mut rest: Map<String, Value> = obj.clone();
    rest.remove("causal-context");
    rest.remove("address");
    let expected: Value = match (kind, status) {
        (OpKind::Batch, 200) => match obj.get("results") {
            Some(Value::Array(_)) => {
                json!({"message": "Batch completed", "results": obj["results"]})
            }
            other => return Err(format!("BATCH 200 results is {other:?}")),
        },
        (OpKind::List, 200) => {
            let Some(Value::Array(items)) = obj.get("items") else {
                return Err(format!("LIST 200 items is {:?}", obj.get("items")));
            };
            for item in items {
                let fine = item.as_object().is_some_and(|i| {
                    i.len() == 2
                        && i.get("key").is_some_and(Value::is_string)
                        && matches!(i.get("value"), Some(Value::String(_) | Value::Number(_)))
                });
                if !fine {
                    return Err(format!("LIST 200 item {item} is not {{key, value}}"));
                }
            }
            match obj.get("next") {
                Some(Value::String(_) | Value::Null) => {}
                other => return Err(format!("LIST 200 next is {other:?}")),
            }
            json!({"message": "Keys listed successfully", "items": obj["items"], "next": obj["next"]})
        }
        (OpKind::List, 400) | (OpKind::Batch | OpKind::List, 503) => json!({
            "message": format!("Error in {method}"),
            "error": "Unable to satisfy request"
        }),
        (OpKind::Batch | OpKind::List, _) => {
            return Err(format!("unexpected status {status} for {method}"))
        }
        (OpKind::Put, 201) => json!({"message": "Added successfully", "replaced": false}),
        (OpKind::Put, 200) => json!({"message": "Updated successfully", "replaced": true}),
        (OpKind::Get, 200) => {
            match obj.get("value") {
                Some(Value::String(_)) | Some(Value::Number(_)) => {}
                other => return Err(format!("GET 200 value is {other:?}")),
            }
            // A key written with a ttl: the whole seconds left.
            match rest.remove("ttl") {
                None => {}
                Some(t) if t.is_u64() => {}
                Some(t) => return Err(format!("GET 200 ttl is {t}")),
            }
            json!({"message": "Retrieved successfully", "doesExist": true, "value": obj["value"]})
        }
        (OpKind::Delete, 200) => json!({"message": "Deleted successfully", "doesExist": true}),
        (OpKind::Get | OpKind::Delete, 404) => json!({
            "message": format!("Error in {method}"),
            "error": "Key does not exist",
            "doesExist": false
        }),
        (OpKind::Get, 400) | (_, 503) => json!({
            "message": format!("Error in {method}"),
            "error": "Unable to satisfy request"
        }),
        (OpKind::Put | OpKind::Delete, 400) => {
            return Err(format!(
                "{method} refused with 400: writes must always be accepted"
            ))
        }
        _ => return Err(format!("unexpected status {status} for {method}")),
    };
    if Value::Object(rest.clone()) != expected {
        return Err(format!(
            "{method} {status} answered {}, expected {expected}",
            Value::Object(rest)
        ));
    }
    Ok(())
}

/// Checks a batch's `results` against the ops sent: one result per op, in order,
/// each with the op's key, a status, and exactly the single-key answer's fields.
/// Returns each op's (kind, status) for counting, and what is wrong.
pub fn check_batch_results(
    ops: &[BatchOp],
    results: &[Value],
) -> (Vec<(OpKind, u16)>, Vec<String>) {
    let mut seen = Vec::new();
    let mut problems = Vec::new();
    if ops.len() != results.len() {
        problems.push(format!("{} results for {} ops", results.len(), ops.len()));
        return (seen, problems);
    }
    for (i, (op, result)) in ops.iter().zip(results).enumerate() {
        let Some(obj) = result.as_object() else {
            problems.push(format!("result {i} is {result}"));
            continue;
        };
        if obj.get("key").and_then(Value::as_str) != Some(op.key.as_str()) {
            problems.push(format!(
                "result {i} has key {:?}, op key {:?}",
                obj.get("key"),
                op.key
            ));
        }
        let Some(status) = obj.get("status").and_then(Value::as_u64) else {
            problems.push(format!("result {i} has no status: {result}"));
            continue;
        };
        let status = status as u16;
        seen.push((op.kind, status));
        let mut single = obj.clone();
        single.remove("key");
        single.remove("status");
        if single.contains_key("address") || single.contains_key("causal-context") {
            problems.push(format!(
                "result {i} carries address or causal-context: {result}"
            ));
            continue;
        }
        single.insert("causal-context".into(), json!({}));
        if let Err(e) = check_answer(op.kind, status, &Value::Object(single)) {
            problems.push(format!("result {i}: {e}"));
        }
    }
    (seen, problems)
}

/// Counts one outcome.
fn count(report: &mut Report, what: String, status: u16) {
    *report.outcomes.entry(what).or_insert(0) += 1;
    match status {
        400 => report.refused_400 += 1,
        503 => report.unavailable_503 += 1,
        _ => {}
    }
}

/// Counts keyed writes and retries (`retried`: first attempts already counted
/// as retried).
fn count_retry(
    rec: &super::timeline::OpRecord<'_>,
    retried: &mut std::collections::HashSet<crate::history::OpId>,
    report: &mut Report,
) {
    let inv = rec.invoke;
    let Some(first) = inv.retry_of else {
        if inv.idempotency_key.is_some() {
            report.keyed_writes += 1;
        }
        return;
    };
    report.retries += 1;
    if retried.insert(first) {
        report.retried_writes += 1;
    }
    let Some(resp) = rec.response else { return };
    let Some(status) = resp.status.filter(|_| resp.error.is_none()) else {
        return;
    };
    report.retries_answered += 1;
    let acked = matches!(
        (inv.kind, status),
        (OpKind::Put, 200 | 201) | (OpKind::Delete, 200) | (OpKind::Batch, 200)
    );
    if acked {
        report.retries_acknowledged += 1;
    }
}

/// Checks every answer of the history, counting outcomes and latencies.
pub fn check_answers(timeline: &Timeline<'_>, report: &mut Report) {
    let mut latencies = Vec::with_capacity(timeline.ops.len());
    let mut retried = std::collections::HashSet::new();
    for rec in &timeline.ops {
        report.operations += 1;
        let method = rec.invoke.kind.method();
        let op = rec.invoke.op;
        count_retry(rec, &mut retried, report);
        let Some(resp) = rec.response else {
            *report
                .outcomes
                .entry(format!("{method} unanswered"))
                .or_insert(0) += 1;
            continue;
        };
        let latency = resp.t - rec.invoke.t;
        latencies.push(latency);
        if let Some(error) = &resp.error {
            *report
                .outcomes
                .entry(format!("{method} failed"))
                .or_insert(0) += 1;
            if timeline.node_down_during(&rec.invoke.node, rec) {
                report.excused_failures += 1;
            } else if resp.status.is_none() {
                report.add(
                    AnomalyKind::Unavailable,
                    format!(
                        "{method} op {op} to {} (up and running) failed after {latency:.0} ms: {error}",
                        rec.invoke.node
                    ),
                    vec![op],
                );
            } else {
                report.add(
                    AnomalyKind::Protocol,
                    format!("{method} op {op} to {}: {error}", rec.invoke.node),
                    vec![op],
                );
            }
            continue;
        }
        let status = resp.status.unwrap_or(0);
        *report
            .outcomes
            .entry(format!("{method} {status}"))
            .or_insert(0) += 1;
        if status == 422 && rec.invoke.idempotency_key.is_some() {
            // Every logical write has its own key, and a retry is the very
            // request its first attempt was: the key was never reused.
            let what = match rec.invoke.retry_of {
                Some(first) => format!("a retry of op {first} (the same request)"),
                None => "a first attempt (its key is unique)".into(),
            };
            report.add(
                AnomalyKind::ServerError,
                format!(
                    "{method} op {op} to {}, {what} with Idempotency-Key {:?}, answered 422: {:?}",
                    rec.invoke.node,
                    rec.invoke.idempotency_key.as_deref().unwrap_or(""),
                    resp.body
                ),
                vec![op],
            );
            continue;
        }
        match status {
            400 => report.refused_400 += 1,
            503 => report.unavailable_503 += 1,
            s if s >= 500 => report.add(
                AnomalyKind::ServerError,
                format!(
                    "{method} op {op} to {} answered {s}: {:?}",
                    rec.invoke.node, resp.body
                ),
                vec![op],
            ),
            _ => {}
        }
        if latency > CLIENT_TIMEOUT_MS && !timeline.node_down_during(&rec.invoke.node, rec) {
            report.add(
                AnomalyKind::Unavailable,
                format!(
                    "{method} op {op} to {} took {latency:.0} ms",
                    rec.invoke.node
                ),
                vec![op],
            );
        }
        let body = resp.body.clone().unwrap_or(Value::Null);
        if let Err(problem) = check_answer(rec.invoke.kind, status, &body) {
            report.add(
                AnomalyKind::Protocol,
                format!("op {op} to {}: {problem}", rec.invoke.node),
                vec![op],
            );
        } else if rec.invoke.kind == OpKind::Batch && status == 200 {
            let results = resp.results().map(Vec::as_slice).unwrap_or_default();
            let (seen, problems) = check_batch_results(&rec.invoke.ops, results);
            for (kind, s) in seen {
                count(report, format!("batch {} {s}", kind.method()), s);
                if s >= 500 && s != 503 {
                    report.add(
                        AnomalyKind::ServerError,
                        format!("batch op {op} to {}: an op answered {s}", rec.invoke.node),
                        vec![op],
                    );
                }
            }
            for problem in problems {
                report.add(
                    AnomalyKind::Protocol,
                    format!("batch op {op} to {}: {problem}", rec.invoke.node),
                    vec![op],
                );
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    if let Some(&max) = latencies.last() {
        report.max_latency_ms = max;
        report.p99_latency_ms = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_shapes_pass_and_extras_fail() {
        let ctx = json!({});
        let ok = [
            (
                OpKind::Put,
                201,
                json!({"message": "Added successfully", "replaced": false, "causal-context": ctx}),
            ),
            (
                OpKind::Put,
                200,
                json!({"message": "Updated successfully", "replaced": true, "causal-context": ctx, "address": "1.2.3.4:1"}),
            ),
            (
                OpKind::Get,
                200,
                json!({"message": "Retrieved successfully", "doesExist": true, "value": "v", "causal-context": ctx}),
            ),
            (
                OpKind::Get,
                404,
                json!({"message": "Error in GET", "error": "Key does not exist", "doesExist": false, "causal-context": ctx}),
            ),
            (
                OpKind::Get,
                400,
                json!({"message": "Error in GET", "error": "Unable to satisfy request", "causal-context": ctx}),
            ),
            (
                OpKind::Put,
                503,
                json!({"message": "Error in PUT", "error": "Unable to satisfy request", "causal-context": ctx}),
            ),
            (
                OpKind::Delete,
                200,
                json!({"message": "Deleted successfully", "doesExist": true, "causal-context": ctx}),
            ),
        ];
        for (kind, status, body) in ok {
            assert_eq!(
                check_answer(kind, status, &body),
                Ok(()),
                "{kind:?} {status} {body}"
            );
        }
        let bad = [
            (
                OpKind::Get,
                200,
                json!({"message": "Retrieved successfully", "doesExist": true, "value": "v"}),
            ),
            (
                OpKind::Get,
                200,
                json!({"message": "Retrieved successfully", "doesExist": true, "value": "v", "causal-context": null}),
            ),
            (
                OpKind::Get,
                200,
                json!({"message": "Retrieved successfully", "doesExist": true, "value": "v", "version": 3, "causal-context": {}}),
            ),
            (
                OpKind::Put,
                400,
                json!({"message": "Error in PUT", "error": "Unable to satisfy request", "causal-context": {}}),
            ),
            (OpKind::Get, 500, json!({"causal-context": {}})),
            (OpKind::Get, 404, json!([])),
        ];
        for (kind, status, body) in bad {
            assert!(
                check_answer(kind, status, &body).is_err(),
                "{kind:?} {status} {body}"
            );
        }
    }
}
