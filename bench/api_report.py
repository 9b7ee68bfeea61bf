#!/usr/bin/env python3
"""Figures of bench/api.sh from the `causeway bench --json` outputs it saves.

  api_report.py line <file.json> <name>    one line as a figure is measured
  api_report.py table <work dir> <batch>   the side-by-side summary at the end

Standard library only.
"""

import glob
import json
import os
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def n0(x):
    return f"{x:,.0f}"


def errors(s):
    e = s.get("error_total", 0) + s.get("op_error_total", 0)
    if s.get("preload"):
        e += s["preload"]["errors"]
    if s.get("list"):
        e += s["list"]["errors"]
    if e == 0:
        return "no errors"
    op_errors = {k: n for k, n in s.get("op_responses", {}).items() if not is_ok(k)}
    return f"{e} ERRORS (requests {s.get('errors')}, ops in batches {op_errors})"


def is_ok(status_key):
    """Whether "<OP> <status>" is a success (2xx, or a GET's 404: a miss)."""
    op, status = status_key.split()
    return status.startswith("2") or (op == "GET" and status == "404")


def context(s):
    c = s.get("context")
    if not c:
        return ""
    out = f"context mean {c['mean_bytes']:.0f} B, p99 {c['p99_bytes']} B, max {c['max_bytes']} B"
    if c["carried"]:
        per = s["requests"] / max(1, c["sessions"])
        out += f"; sessions hold {c['final_mean_bytes']:.0f} B (max {c['final_max_bytes']}) after ~{per:.0f} requests"
    return out


def line(path, name):
    s = load(path)
    parts = [f"  {name:<24}"]
    if s.get("preload"):
        p = s["preload"]
        parts.append(f"preload {n0(p['keys'])} keys in {p['elapsed_secs']:.1f} s: {n0(p['rate'])} keys/s")
    if s.get("list"):
        li = s["list"]
        parts.append(
            f"listed {n0(li['keys'])} keys in {li['pages']} pages, {li['elapsed_secs']:.2f} s: "
            f"{n0(li['keys_per_sec'])} keys/s, {li['pages_per_sec']:.1f} pages/s, page p50 "
            f"{li['page_latency']['p50_ms']:.1f} / p99 {li['page_latency']['p99_ms']:.1f} ms"
            f"{'' if li['complete'] else ', INCOMPLETE'}"
        )
    if s["elapsed_secs"] > 0:
        parts.append(
            f"{n0(s['keys_per_sec'])} keys/s, {n0(s['throughput'])} req/s, p50 {s['latency']['p50_ms']:.2f} / "
            f"p99 {s['latency']['p99_ms']:.2f} ms"
        )
        ctx = context(s)
        if ctx:
            parts.append(ctx)
    parts.append(errors(s))
    print(parts[0] + "; ".join(parts[1:]), flush=True)


def runs(work, pattern):
    return [load(p) for p in sorted(glob.glob(os.path.join(work, pattern)))]


def mean(xs):
    return sum(xs) / len(xs) if xs else 0.0


def table(work, batch):
    print()
    print(f"| setup | single PUTs, keys/s (= req/s) | batches of {batch} PUTs, keys/s | batches, req/s | batch / single (means) | p50 / p99 ms single ; batch | errors |")
    print("|---|---|---|---|---|---|---|")
    for tag, label in (("single", "1 node, durable"), ("cluster", "2 shards x 2 replicas")):
        single = runs(work, f"{tag}-single-*.json")
        batches = runs(work, f"{tag}-batch-*.json")
        if not single or not batches:
            continue
        sk = [s["keys_per_sec"] for s in single]
        bk = [s["keys_per_sec"] for s in batches]
        br = [s["throughput"] for s in batches]
        lat = lambda rs: " / ".join(f"{mean([r['latency'][k] for r in rs]):.2f}" for k in ("p50_ms", "p99_ms"))
        errs = sum(s["error_total"] + s["op_error_total"] for s in single + batches)
        print(
            f"| {label} | {' / '.join(n0(x) for x in sk)} | {' / '.join(n0(x) for x in bk)} | "
            f"{' / '.join(n0(x) for x in br)} | {mean(bk) / mean(sk):.1f}x | {lat(single)} ; {lat(batches)} | "
            f"{'none' if errs == 0 else errs} |"
        )
    print()
    print("| listing, limit=1000, one cursor | keys listed | time | keys/s | pages/s | page p50 / p99 ms | preload (batches) keys/s |")
    print("|---|---|---|---|---|---|---|")
    for tag, label in (("list-single", "1 node, durable"), ("list-cluster", "2 shards x 2 replicas, from node 1")):
        pre = runs(work, f"{tag}-preload.json")
        listed = [os.path.join(work, f"{tag}{suffix}.json") for suffix in ("", "-2")]
        for i, path in enumerate(p for p in listed if os.path.exists(p)):
            s = load(path)
            li = s["list"]
            pr = n0(pre[0]["preload"]["rate"]) if pre else ""
            print(
                f"| {label}, run {i + 1} | {n0(li['keys'])}{'' if li['complete'] else ' (INCOMPLETE)'} | "
                f"{li['elapsed_secs']:.2f} s | {n0(li['keys_per_sec'])} | {li['pages_per_sec']:.1f} | "
                f"{li['page_latency']['p50_ms']:.1f} / {li['page_latency']['p99_ms']:.1f} | {pr if i == 0 else ''} |"
            )
    print()
    print("| context size (bytes of the causal-context JSON) | answers | mean | p99 | max | sessions hold at the end: mean / max | requests per session |")
    print("|---|---|---|---|---|---|---|")
    for name, label in (
        ("single-single-1", "1 node, single PUTs, no sessions ({} sent)"),
        ("single-batch-1", f"1 node, batches of {batch}, no sessions"),
        ("single-sessions", "1 node, sessions, single ops, read ratio 0.5"),
        ("single-sessions-batch", f"1 node, sessions, batches of {batch}, read ratio 0.5"),
        ("cluster-single-1", "2x2, single PUTs, no sessions"),
        ("cluster-batch-1", f"2x2, batches of {batch}, no sessions"),
        ("cluster-sessions", "2x2, sessions, single ops, read ratio 0.5"),
        ("cluster-sessions-batch", f"2x2, sessions, batches of {batch}, read ratio 0.5"),
    ):
        path = os.path.join(work, f"{name}.json")
        if not os.path.exists(path):
            continue
        s = load(path)
        c = s.get("context")
        if not c:
            continue
        held = f"{c['final_mean_bytes']:.0f} / {c['final_max_bytes']}" if c["carried"] else "-"
        per = f"{s['requests'] / max(1, c['sessions']):,.0f}" if c["carried"] else "-"
        print(f"| {label} | {n0(c['answers'])} | {c['mean_bytes']:.0f} | {c['p99_bytes']} | {c['max_bytes']} | {held} | {per} |")
    for tag in ("list-single", "list-cluster"):
        path = os.path.join(work, f"{tag}.json")
        if os.path.exists(path):
            print(f"| listing's context after the last page ({tag}) | | | | {load(path)['list']['final_context_bytes']} | | |")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "line":
        line(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
