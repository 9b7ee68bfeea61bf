#!/usr/bin/env python3
"""Helpers for bench/suite.sh: talk to nodes over the key API, time things, and record and
report figures (ratio to the reference, target, PASS/MISS). Standard library only.

Every request carries a JSON body (GETs send {}), as API.md requires.
"""

import argparse
import http.client
import json
import random
import re
import sys
import time

TIMEOUT = 5.0


class Node:
    """One keep-alive connection to a node (reconnects on failure)."""

    def __init__(self, addr):
        self.addr = addr
        host, port = addr.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.conn = None

    def request(self, method, path, body=None):
        data = json.dumps({} if body is None else body)
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
                self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                raw = resp.read()
                try:
                    parsed = json.loads(raw) if raw else {}
                except ValueError:
                    parsed = {"raw": raw.decode("utf-8", "replace")}
                return resp.status, parsed
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def try_request(self, method, path, body=None):
        try:
            return self.request(method, path, body)
        except (OSError, http.client.HTTPException) as e:
            return None, {"error": str(e)}

    def key_count(self):
        status, body = self.request("GET", "/kv-store/key-count")
        if status != 200:
            raise RuntimeError(f"{self.addr} key-count answered {status} {body}")
        return body["key-count"]

    def get_value(self, key):
        status, body = self.request("GET", f"/kv-store/keys/{key}")
        return status, body.get("value")


def poll(deadline_s, probe, interval=0.01):
    """Calls probe() until it returns a truthy value or the deadline passes; returns it or None."""
    end = time.monotonic() + deadline_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


def cmd_wait(args):
    """Waits until a node serves: /ready answers 200 (--ready) or any answer to a key GET."""
    node = Node(args.addr)
    start = time.time()

    def serving():
        if args.ready:
            status, _ = node.try_request("GET", "/ready")
            if status != 200:
                return False
        if args.key is not None:
            status, _ = node.try_request("GET", f"/kv-store/keys/{args.key}")
            return status == 200
        if not args.ready:
            status, _ = node.try_request("GET", "/kv-store/keys/probe")
            return status is not None
        return True

    if not poll(args.deadline, serving):
        print(f"{args.addr} not serving after {args.deadline} s", file=sys.stderr)
        return 1
    since = args.since if args.since is not None else start
    print(f"{time.time() - since:.3f}")
    return 0


def cmd_count(args):
    print(Node(args.addr).key_count())
    return 0


def cmd_converge(args):
    """Seconds after --since until every replica has the loaded node's key-count and the same
    values for a sample of keys (the last ones written and random earlier ones)."""
    loaded = Node(args.loaded)
    others = [Node(a) for a in args.others.split(",") if a]
    rng = random.Random(1)
    last = {"counts": None, "diff": None}

    def converged():
        count = loaded.key_count()
        counts = [o.key_count() for o in others]
        last["counts"] = [count] + counts
        if any(c != count for c in counts):
            return False
        newest = range(max(1, count - args.sample // 2 + 1), count + 1)
        older = [rng.randint(1, max(1, count)) for _ in range(args.sample // 2)]
        for i in list(newest) + older:
            key = f"{args.prefix}{i}"
            want = loaded.get_value(key)
            for o in others:
                got = o.get_value(key)
                if got != want:
                    last["diff"] = (key, o.addr, got, want)
                    return False
        return True

    if not poll(args.deadline, converged, interval=0.005):
        print(
            f"not converged after {args.deadline} s: counts {last['counts']}, last difference {last['diff']}",
            file=sys.stderr,
        )
        return 1
    print(f"{time.time() - args.since:.3f} {last['counts'][0]}")
    return 0


def shard_map(node):
    """{address: shard id} and [shard ids], as the cluster reports them."""
    status, body = node.request("GET", "/kv-store/shards")
    if status != 200:
        raise RuntimeError(f"shards answered {status} {body}")
    owner, info = {}, []
    for sid in body["shards"]:
        status, s = node.request("GET", f"/kv-store/shards/{sid}")
        if status != 200:
            raise RuntimeError(f"shard {sid} answered {status} {s}")
        info.append({"shard-id": sid, "key-count": s["key-count"], "replicas": s["replicas"]})
        for r in s["replicas"]:
            owner[r] = sid
    return owner, info


def cmd_shards(args):
    _, info = shard_map(Node(args.addr))
    print(json.dumps(info))
    return 0


def cmd_placement(args):
    """Which shard serves each sampled key, from the `address` of proxied GETs."""
    node = Node(args.addr)
    owner, _ = shard_map(node)
    keys = random.Random(7).sample(range(1, args.keys + 1), min(args.sample, args.keys))
    out = {}
    for i in keys:
        status, body = node.request("GET", f"/kv-store/keys/key{i}")
        if status != 200:
            raise RuntimeError(f"key{i} answered {status} {body} before/after the view change")
        out[f"key{i}"] = owner[body.get("address", args.addr)]
    print(json.dumps(out))
    return 0


def cmd_moved(args):
    before, after = json.load(open(args.before)), json.load(open(args.after))
    moved = sum(1 for k in before if after.get(k) != before[k])
    print(f"{moved / len(before):.4f}")
    return 0


def cmd_view_change(args):
    """Sends one view change (never retried) and prints its duration and the shards it reports."""
    host, port = args.addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=args.timeout)
    body = json.dumps({"view": args.view, "repl-factor": args.repl})
    start = time.monotonic()
    conn.request("PUT", "/kv-store/view-change", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    raw = resp.read()
    secs = time.monotonic() - start
    if resp.status != 200:
        print(f"view change answered {resp.status} {raw!r}", file=sys.stderr)
        return 1
    print(json.dumps({"secs": secs, "shards": json.loads(raw)["shards"]}))
    return 0


def cmd_wrk(args):
    """Parses wrk's output on stdin: prints requests/s and the count of errors."""
    text = sys.stdin.read()
    rps, errors = None, 0
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
        elif line.startswith("Non-2xx or 3xx responses:"):
            errors += int(line.split(":")[1])
        elif line.startswith("Socket errors:"):
            errors += sum(int(p.split()[-1]) for p in line.split(":", 1)[1].split(","))
    if rps is None:
        print(text, file=sys.stderr)
        return 1
    print(f"{rps:.1f} {errors}")
    return 0


def cmd_json(args):
    """Prints a field of a JSON document (dotted path)."""
    value = json.load(open(args.file))
    for part in args.path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    print(value if not isinstance(value, float) else f"{value:.6g}")
    return 0


def cmd_calc(args):
    """Evaluates an arithmetic expression (numbers from the shell)."""
    value = eval(args.expr, {"__builtins__": {}}, {"min": min, "max": max, "round": round})  # noqa: S307
    print(f"{value:.6g}" if isinstance(value, float) else value)
    return 0


def verdict(value, target):
    """PASS/MISS of value against a target like ">=0.8", "<3", "<=1"; "" without a target."""
    if not target:
        return ""
    m = re.fullmatch(r"(<=|>=|<|>)\s*([0-9.eE+-]+)", target)
    if not m:
        raise RuntimeError(f"bad target {target!r}")
    op, bound = m.group(1), float(m.group(2))
    ok = {"<=": value <= bound, ">=": value >= bound, "<": value < bound, ">": value > bound}[op]
    return "PASS" if ok else "MISS"


def cmd_record(args):
    """Records one figure (JSON line in --file) and prints it. With --ref, the figure is the
    ratio of --value to the mean of the reference runs, and --target applies to the ratio
    (to the value itself with --target-on-value)."""
    fig = {"section": args.section, "name": args.name, "unit": args.unit, "value": args.value}
    if args.ref:
        ref = sum(args.ref) / len(args.ref)
        fig["ref"] = args.ref
        fig["ratio"] = args.value / ref if ref else 0.0
        spread = (max(args.ref) - min(args.ref)) / ref if ref else 0.0
        if spread > 0.25:
            note = f"NOISY: reference runs differ by {spread:.0%}"
            args.note = f"{args.note}; {note}" if args.note else note
        judged = args.value if args.target_on_value else fig["ratio"]
    else:
        judged = args.value
    fig["target"] = args.target or ""
    fig["target_on_value"] = args.target_on_value
    fig["verdict"] = verdict(judged, args.target)
    fig["note"] = args.note or ""
    with open(args.file, "a") as f:
        f.write(json.dumps(fig) + "\n")
    print("  " + format_figure(fig), flush=True)
    return 0


def fmt(v):
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def format_figure(f):
    text = f"{f['name']:<34} {fmt(f['value']):>10} {f['unit']:<8}"
    if "ref" in f:
        refs = " / ".join(fmt(r) for r in f["ref"])
        text += f" ref {refs:<19} ratio {f['ratio']:5.2f}"
    else:
        text += " " * 41
    if f["target"]:
        text += f"  target {f['target']:<6} {f['verdict']}"
        if "ref" in f and f.get("target_on_value"):
            text += " (on the value)"
    if f["note"]:
        text += f"  ({f['note']})"
    return text


def cmd_report(args):
    figs = [json.loads(line) for line in open(args.file) if line.strip()]
    section = None
    for f in figs:
        if f["section"] != section:
            section = f["section"]
            print(f"[{section}]")
        print("  " + format_figure(f))
    misses = sum(1 for f in figs if f["verdict"] == "MISS")
    passes = sum(1 for f in figs if f["verdict"] == "PASS")
    print(f"{passes} PASS, {misses} MISS")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("wait")
    s.add_argument("addr")
    s.add_argument("--ready", action="store_true")
    s.add_argument("--key")
    s.add_argument("--since", type=float)
    s.add_argument("--deadline", type=float, default=30)
    s.set_defaults(func=cmd_wait)

    s = sub.add_parser("count")
    s.add_argument("addr")
    s.set_defaults(func=cmd_count)

    s = sub.add_parser("converge")
    s.add_argument("--loaded", required=True)
    s.add_argument("--others", required=True)
    s.add_argument("--prefix", default="s")
    s.add_argument("--sample", type=int, default=200)
    s.add_argument("--since", type=float, required=True)
    s.add_argument("--deadline", type=float, default=30)
    s.set_defaults(func=cmd_converge)

    s = sub.add_parser("shards")
    s.add_argument("addr")
    s.set_defaults(func=cmd_shards)

    s = sub.add_parser("placement")
    s.add_argument("addr")
    s.add_argument("--keys", type=int, required=True)
    s.add_argument("--sample", type=int, default=5000)
    s.set_defaults(func=cmd_placement)

    s = sub.add_parser("moved")
    s.add_argument("before")
    s.add_argument("after")
    s.set_defaults(func=cmd_moved)

    s = sub.add_parser("view-change")
    s.add_argument("addr")
    s.add_argument("--view", required=True)
    s.add_argument("--repl", type=int, required=True)
    s.add_argument("--timeout", type=float, default=300)
    s.set_defaults(func=cmd_view_change)

    s = sub.add_parser("wrk")
    s.set_defaults(func=cmd_wrk)

    s = sub.add_parser("json")
    s.add_argument("file")
    s.add_argument("path")
    s.set_defaults(func=cmd_json)

    s = sub.add_parser("calc")
    s.add_argument("expr")
    s.set_defaults(func=cmd_calc)

    s = sub.add_parser("record")
    s.add_argument("--file", required=True)
    s.add_argument("--section", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--unit", default="")
    s.add_argument("--value", type=float, required=True)
    s.add_argument("--ref", type=float, action="append")
    s.add_argument("--target")
    s.add_argument("--target-on-value", action="store_true")
    s.add_argument("--note")
    s.set_defaults(func=cmd_record)

    s = sub.add_parser("report")
    s.add_argument("file")
    s.set_defaults(func=cmd_report)

    args = p.parse_args()
    try:
        return args.func(args)
    except (OSError, http.client.HTTPException, RuntimeError, KeyError) as e:
        print(f"probe {args.cmd}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
