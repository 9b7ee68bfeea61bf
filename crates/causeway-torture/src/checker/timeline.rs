//! What the cluster was going through while each operation ran: the view
//! changes (reported, not exempted: the checker judges causality across them)
//! and whether the node an operation was sent to was killed or paused meanwhile.
//!
//! Positions are line numbers of the history (its real-time order), not
//! clock readings, so two events recorded by different tasks within the same
//! microsecond are still ordered the way they were written.

use std::collections::HashMap;

use crate::history::{Event, Fault, Invoke, OpId, Response};

/// One operation with where its two lines are in the history.
#[derive(Debug, Clone)]
pub struct OpRecord<'e> {
    pub invoke: &'e Invoke,
    pub invoke_pos: usize,
    pub response: Option<&'e Response>,
    pub response_pos: usize,
}

/// Operations and cluster windows extracted from a history.
#[derive(Debug, Default)]
pub struct Timeline<'e> {
    pub ops: Vec<OpRecord<'e>>,
    pub index: HashMap<OpId, usize>,
    /// View change windows (start line, end line; `usize::MAX` if unanswered).
    pub view_changes: Vec<(usize, usize)>,
    /// Per node: windows during which it was killed, exited or paused.
    pub down: HashMap<String, Vec<(usize, usize)>>,
}

impl<'e> Timeline<'e> {
    /// Builds the timeline. Operations appear in invocation order.
    pub fn build(events: &'e [Event]) -> Timeline<'e> {
        let mut t = Timeline::default();
        let mut vc_open: HashMap<u32, usize> = HashMap::new();
        let mut down_open: HashMap<String, usize> = HashMap::new();
        for (pos, event) in events.iter().enumerate() {
            match event {
                Event::Invoke(inv) => {
                    t.index.insert(inv.op, t.ops.len());
                    t.ops.push(OpRecord {
                        invoke: inv,
                        invoke_pos: pos,
                        response: None,
                        response_pos: usize::MAX,
                    });
                }
                Event::Response(resp) => {
                    if let Some(&i) = t.index.get(&resp.op) {
                        t.ops[i].response = Some(resp);
                        t.ops[i].response_pos = pos;
                    }
                }
                Event::Fault(rec) => match &rec.fault {
                    Fault::ViewChangeStart { id, .. } => {
                        vc_open.insert(*id, pos);
                    }
                    Fault::ViewChangeEnd { id, .. } => {
                        let start = vc_open.remove(id).unwrap_or(pos);
                        t.view_changes.push((start, pos));
                    }
                    Fault::Kill { node }
                    | Fault::Pause { node }
                    | Fault::NodeExited { node, .. } => {
                        down_open.entry(node.clone()).or_insert(pos);
                    }
                    Fault::Restarted { node } | Fault::Resumed { node } => {
                        if let Some(start) = down_open.remove(node) {
                            t.down.entry(node.clone()).or_default().push((start, pos));
                        }
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        t.view_changes
            .extend(vc_open.into_values().map(|start| (start, usize::MAX)));
        t.view_changes.sort();
        for (node, start) in down_open {
            t.down.entry(node).or_default().push((start, usize::MAX));
        }
        t
    }

    /// The record of `op`, if it was invoked.
    pub fn get(&self, op: OpId) -> Option<&OpRecord<'e>> {
        self.index.get(&op).map(|&i| &self.ops[i])
    }

    /// True when `node` was killed, exited or paused at some time while `op`
    /// was in flight: a client-side failure of that op is then expected.
    pub fn node_down_during(&self, node: &str, op: &OpRecord<'_>) -> bool {
        self.down.get(node).is_some_and(|windows| {
            windows
                .iter()
                .any(|&(s, e)| s < op.response_pos && e > op.invoke_pos)
        })
    }
}
