//! `causeway status`: the cluster status document (`GET /cluster`) as a terminal table
//! of nodes, shards and replica lag, coloured when standard output is a terminal.
//!
//! Rendering is a pure function of the document, so it is tested without a cluster; a
//! field the document lacks shows as `-`, never as a failure.

use serde_json::Value;
use std::fmt::Write;
use std::io::IsTerminal;

/// Colour when standard output is a terminal and `NO_COLOR` is not set.
pub fn colour_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

fn paint(text: &str, code: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

fn field(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

fn uptime(s: u64) -> String {
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// The status document as text.
pub fn render(doc: &Value, colour: bool) -> String {
    let mut out = String::new();
    let view = &doc["view"];
    let _ = writeln!(
        out,
        "view: generation {}, {} nodes, {} per shard (asked {})",
        field(&view["generation"]),
        view["nodes"].as_array().map_or(0, Vec::len),
        field(&view["repl-factor"]),
        field(&doc["asked"]),
    );
    let _ = writeln!(
        out,
        "\n{:<22} {:<6} {:<9} {:<6} {:>8} {:>9} {:>9} {:>7}",
        "NODE", "STATE", "READY", "SHARD", "KEYS", "REQUESTS", "ERRORS", "UPTIME"
    );
    for n in doc["nodes"].as_array().into_iter().flatten() {
        let up = n["up"].as_bool().unwrap_or(false);
        let state = if up {
            paint("up    ", "32", colour)
        } else {
            paint("down  ", "31;1", colour)
        };
        if !up {
            let _ = writeln!(out, "{:<22} {state}", field(&n["address"]));
            continue;
        }
        let ready = if n["ready"].as_bool().unwrap_or(false) {
            "ready".to_owned()
        } else {
            paint("not ready", "33", colour)
        };
        let errors =
            n["client-errors"].as_u64().unwrap_or(0) + n["server-errors"].as_u64().unwrap_or(0);
        let shard = if n["in-view"].as_bool().unwrap_or(false) {
            field(&n["shard-id"])
        } else {
            "(out)".into()
        };
        let _ = writeln!(
            out,
            "{:<22} {state} {:<9} {:<6} {:>8} {:>9} {:>9} {:>7}",
            field(&n["address"]),
            ready,
            shard,
            field(&n["key-count"]),
            field(&n["requests"]),
            errors,
            n["uptime-s"].as_u64().map_or("-".into(), uptime),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<6} {:>8}  REPLICAS (keys, behind: versions / bytes)",
        "SHARD", "KEYS"
    );
    for s in doc["shards"].as_array().into_iter().flatten() {
        let replicas: Vec<String> = s["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let address = field(&r["address"]);
                if !r["up"].as_bool().unwrap_or(false) {
                    return paint(&format!("{address} down"), "31;1", colour);
                }
                let (v, b) = (
                    r["behind-versions"].as_u64().unwrap_or(0),
                    r["behind-bytes"].as_u64().unwrap_or(0),
                );
                let mut text =
                    format!("{address} ({}, {v} / {})", field(&r["key-count"]), bytes(b));
                if let Some(s) = r["behind-seconds"].as_u64().filter(|s| v > 0 && *s > 0) {
                    text = format!("{text} for {s}s");
                }
                if v > 0 {
                    paint(&text, "33", colour)
                } else {
                    text
                }
            })
            .collect();
        let waiting = s["waiting-for"]
            .as_array()
            .filter(|w| !w.is_empty())
            .map(|w| {
                let names: Vec<String> = w.iter().map(field).collect();
                format!("  (waiting for hand-over from {})", names.join(", "))
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<6} {:>8}  {}{waiting}",
            field(&s["shard-id"]),
            field(&s["key-count"]),
            replicas.join("  ")
        );
    }
    let vc = &doc["view-change"];
    let complete = vc["complete"].as_bool().unwrap_or(false);
    let _ = write!(
        out,
        "\nview change: {}",
        if complete {
            paint("complete", "32", colour)
        } else {
            paint("in progress", "33", colour)
        }
    );
    let list =
        |v: &Value| -> Vec<String> { v.as_array().into_iter().flatten().map(field).collect() };
    let handing = list(&vc["handing-over"]);
    if !handing.is_empty() {
        let _ = write!(out, "; handing keys over: {}", handing.join(", "));
    }
    let other = list(&vc["in-another-view"]);
    if !other.is_empty() {
        let _ = write!(out, "; in another view: {}", other.join(", "));
    }
    let waiting: Vec<String> = vc["waiting"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            format!(
                "{} waits for {}",
                field(&w["node"]),
                list(&w["waiting-for"]).join(", ")
            )
        })
        .collect();
    if !waiting.is_empty() {
        let _ = write!(out, "; {}", waiting.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "asked": "a:1",
            "view": {"generation": 1, "repl-factor": 2, "nodes": ["a:1", "b:1"]},
            "nodes": [
                {"address": "a:1", "up": true, "ready": true, "in-view": true, "shard-id": "1",
                 "key-count": 10, "requests": 50, "client-errors": 2, "server-errors": 1, "uptime-s": 300},
                {"address": "b:1", "up": false, "in-view": true}
            ],
            "shards": [{"shard-id": "1", "key-count": 10, "replicas": [
                {"address": "a:1", "up": true, "key-count": 10, "behind-versions": 3, "behind-bytes": 2048, "behind-seconds": 7},
                {"address": "b:1", "up": false}
            ]}],
            "view-change": {"complete": false, "handing-over": ["a:1"], "waiting": [], "in-another-view": []}
        })
    }

    #[test]
    fn nodes_shards_lag_and_the_view_change_are_shown() {
        let text = render(&doc(), false);
        let a = text.lines().find(|l| l.starts_with("a:1")).unwrap();
        assert!(
            a.contains("up") && a.contains("ready") && a.contains("5m"),
            "{text}"
        );
        assert!(a.contains(" 3 "), "4xx and 5xx answers add up: {text}");
        let b = text.lines().find(|l| l.starts_with("b:1")).unwrap();
        assert!(b.contains("down"), "{text}");
        assert!(text.contains("a:1 (10, 3 / 2.0 KiB) for 7s"), "{text}");
        assert!(text.contains("b:1 down"), "{text}");
        assert!(
            text.contains("in progress; handing keys over: a:1"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "no colour when not asked");
    }

    #[test]
    fn colour_marks_down_nodes_and_a_partial_document_does_not_fail() {
        assert!(render(&doc(), true).contains("\x1b[31;1mdown"));
        let text = render(&json!({}), false);
        assert!(text.contains("NODE") && text.contains("view change: in progress"));
    }
}
