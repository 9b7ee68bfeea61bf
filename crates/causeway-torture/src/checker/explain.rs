//! Explanations for humans: the chain of client-observed causal edges
//! (context passed on, value read) that leads from one operation to another,
//! so a reported stale read can be verified by reading a few history lines.

use std::collections::{HashMap, VecDeque};

use crate::history::{Event, Invoke, OpId, OpKind, Response};

/// How one link of a chain was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The later op sent the context returned by the earlier one.
    Context,
    /// The later op read the value the earlier one wrote.
    ReadsFrom,
}

/// A chain of ops from `from` to `to`, each with the link to its successor,
/// or `None` when the history shows no path.
pub fn causal_chain(events: &[Event], from: OpId, to: OpId) -> Option<Vec<(OpId, Link)>> {
    let mut invokes: HashMap<OpId, &Invoke> = HashMap::new();
    let mut responses: HashMap<OpId, &Response> = HashMap::new();
    let mut writer: HashMap<(&str, &str), OpId> = HashMap::new();
    for e in events {
        match e {
            Event::Invoke(i) => {
                invokes.insert(i.op, i);
                if let Some(v) = &i.value {
                    // A retry writes the first attempt's write.
                    writer.entry((i.key.as_str(), v.as_str())).or_insert(i.op);
                }
                for o in &i.ops {
                    if let Some(v) = &o.value {
                        writer.entry((o.key.as_str(), v.as_str())).or_insert(i.op);
                    }
                }
            }
            Event::Response(r) => {
                responses.insert(r.op, r);
            }
            _ => {}
        }
    }
    let preds = |x: OpId| -> Vec<(OpId, Link)> {
        let mut out = Vec::new();
        let Some(inv) = invokes.get(&x) else {
            return out;
        };
        if let Some(c) = inv.ctx_from {
            out.push((c, Link::Context));
        }
        // What the op read: (key, value) pairs.
        let mut reads: Vec<(String, String)> = Vec::new();
        let resp = responses.get(&x);
        match inv.kind {
            OpKind::Get => reads.extend(resp.and_then(|r| r.value()).map(|v| (inv.key.clone(), v))),
            OpKind::Batch => {
                for (o, r) in inv
                    .ops
                    .iter()
                    .zip(resp.and_then(|r| r.results()).into_iter().flatten())
                {
                    if o.kind == OpKind::Get {
                        if let Some(v) = r.get("value").filter(|v| !v.is_null()) {
                            reads.push((o.key.clone(), crate::history::value_string(v)));
                        }
                    }
                }
            }
            OpKind::List => {
                if let Some((items, _)) = resp.and_then(|r| r.items()) {
                    reads.extend(items.into_iter().filter_map(|(k, v)| Some((k, v?))));
                }
            }
            OpKind::Put | OpKind::Delete => {}
        }
        for (key, v) in reads {
            if let Some(&w) = writer.get(&(key.as_str(), v.as_str())) {
                if w != x {
                    out.push((w, Link::ReadsFrom));
                }
            }
        }
        out
    };
    // Breadth-first backwards from `to`; `next[x]` is x's successor on the path.
    let mut next: HashMap<OpId, (OpId, Link)> = HashMap::new();
    let mut queue = VecDeque::from([to]);
    while let Some(x) = queue.pop_front() {
        if x == from {
            let mut chain = Vec::new();
            let mut cur = from;
            while let Some(&(succ, link)) = next.get(&cur) {
                chain.push((cur, link));
                cur = succ;
            }
            return Some(chain);
        }
        for (p, link) in preds(x) {
            if p != to && !next.contains_key(&p) {
                next.insert(p, (x, link));
                queue.push_back(p);
            }
        }
    }
    None
}

/// One line per op of the chain, ending with `to`.
pub fn describe_chain(events: &[Event], chain: &[(OpId, Link)], to: OpId) -> Vec<String> {
    let invokes: HashMap<OpId, &Invoke> = events
        .iter()
        .filter_map(|e| match e {
            Event::Invoke(i) => Some((i.op, i)),
            _ => None,
        })
        .collect();
    let responses: HashMap<OpId, &Response> = events
        .iter()
        .filter_map(|e| match e {
            Event::Response(r) => Some((r.op, r)),
            _ => None,
        })
        .collect();
    let line = |op: OpId| -> String {
        let Some(i) = invokes.get(&op) else {
            return format!("op {op}");
        };
        let r = responses.get(&op);
        let status = r
            .and_then(|r| r.status)
            .map_or("-".to_string(), |s| s.to_string());
        let served = r
            .and_then(|r| r.body.as_ref())
            .and_then(|b| b.get("address"))
            .and_then(|a| a.as_str())
            .unwrap_or(&i.node);
        let what = match i.kind {
            OpKind::Put => format!("put {}={}", i.key, i.value.as_deref().unwrap_or("?")),
            OpKind::Delete => format!("delete {}", i.key),
            OpKind::Get => format!(
                "get {} -> {}",
                i.key,
                r.and_then(|r| r.value())
                    .unwrap_or_else(|| "not found".into())
            ),
            OpKind::Batch => {
                let ops: Vec<String> = i
                    .ops
                    .iter()
                    .map(|o| match &o.value {
                        Some(v) => format!("{} {}={v}", o.kind.method().to_lowercase(), o.key),
                        None => format!("{} {}", o.kind.method().to_lowercase(), o.key),
                    })
                    .collect();
                format!("batch [{}]", ops.join(", "))
            }
            OpKind::List => "list".to_string(),
        };
        format!(
            "op {op} s{} t={:.0}ms {what} [{status} from {served}]",
            i.session, i.t
        )
    };
    let mut out: Vec<String> = chain
        .iter()
        .map(|&(op, link)| {
            let arrow = match link {
                Link::Context => "--context-->",
                Link::ReadsFrom => "--read by-->",
            };
            format!("{}  {arrow}", line(op))
        })
        .collect();
    out.push(line(to));
    out
}
