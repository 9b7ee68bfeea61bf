#!/usr/bin/env python3
"""Plots per-node traffic against cluster size from `causeway-sim --scale`'s CSV.

Writes an SVG by hand (standard library only): bytes per second sent by each node
(mean over shard members), idle and at the fixed write rate, for each replication
factor, against the number of nodes, on a log scale of bytes/s.

    python3 bench/scale_plot.py docs/bench/scale.csv docs/bench/scale-traffic.svg
"""

import csv
import math
import sys


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "docs/bench/scale.csv"
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/bench/scale-traffic.svg"
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    series = {}
    for r in rows:
        rf = int(r["rf"])
        n = int(r["nodes"])
        for kind in ("idle", "loaded"):
            series.setdefault((kind, rf), []).append(
                (n, float(r[f"{kind}_bytes_s_per_node"]))
            )
    nodes = sorted({int(r["nodes"]) for r in rows})
    values = [v for pts in series.values() for _, v in pts if v > 0]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))

    w, h = 760, 460
    left, right, top, bottom = 90, 200, 50, 60
    pw, ph = w - left - right, h - top - bottom

    def x(n):
        # Cluster sizes on a log scale (6 to 128).
        a, b = math.log(nodes[0]), math.log(nodes[-1])
        return left + (math.log(n) - a) / (b - a) * pw if b > a else left + pw / 2

    def y(v):
        a, b = math.log10(lo), math.log10(hi)
        return top + ph - (math.log10(max(v, lo)) - a) / (b - a) * ph

    colors = {2: "#1f77b4", 3: "#d62728"}
    dashes = {"idle": "6,4", "loaded": ""}
    marks = {"idle": "circle", "loaded": "square"}
    s = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left + pw / 2}" y="24" text-anchor="middle" font-size="15">'
        "Per-node replication and anti-entropy traffic (simulated)</text>",
    ]
    # Grid and axes.
    d = math.log10(lo)
    while d <= math.log10(hi) + 1e-9:
        v = 10**d
        yy = y(v)
        s.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#ddd"/>')
        label = f"{v:,.0f}" if v >= 1 else f"{v:g}"
        s.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{label}</text>')
        d += 1
    for n in nodes:
        xx = x(n)
        s.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + ph}" stroke="#eee"/>')
        s.append(f'<text x="{xx:.1f}" y="{top + ph + 18}" text-anchor="middle">{n}</text>')
    s.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    s.append(
        f'<text x="{left + pw / 2}" y="{h - 18}" text-anchor="middle">nodes in the cluster (log scale)</text>'
    )
    s.append(
        f'<text transform="translate(22,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
        "bytes/s sent per node (log scale)</text>"
    )
    # Series.
    legend_y = top + 10
    for (kind, rf), pts in sorted(series.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        pts.sort()
        c = colors.get(rf, "#2ca02c")
        path = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in pts)
        dash = f' stroke-dasharray="{dashes[kind]}"' if dashes[kind] else ""
        s.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        for n, v in pts:
            if marks[kind] == "circle":
                s.append(f'<circle cx="{x(n):.1f}" cy="{y(v):.1f}" r="4" fill="{c}"/>')
            else:
                s.append(f'<rect x="{x(n) - 4:.1f}" y="{y(v) - 4:.1f}" width="8" height="8" fill="{c}"/>')
        lx = left + pw + 15
        s.append(
            f'<line x1="{lx}" y1="{legend_y}" x2="{lx + 30}" y2="{legend_y}" stroke="{c}" stroke-width="2"{dash}/>'
        )
        s.append(f'<text x="{lx + 38}" y="{legend_y + 4}">rf {rf}, {kind}</text>')
        legend_y += 22
    if rows and "writes_per_node_s" in rows[0]:
        r = rows[0]
        notes = [
            f"loaded: {r['writes_per_node_s']} writes/s",
            f"per node, {r['value_bytes']}-byte values;",
            f"windows of {int(r['window_ms']) // 1000} simulated s",
        ]
        for i, line in enumerate(notes):
            s.append(
                f'<text x="{left + pw + 15}" y="{legend_y + 14 + 14 * i}" font-size="11">{line}</text>'
            )
    s.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(s) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
