#!/usr/bin/env bash
# p99 at a fixed offered rate, two builds side by side, alternating (A, B, A, B, ...):
# the suite's 10 s latency figure is decided by whether a storage flush lands in its
# window, so comparing two builds needs several longer runs each, interleaved.
#
# Usage: bench/p99-ab.sh <causeway binary A> <causeway binary B>
# Environment: ROUNDS (default 2), RUNS per binary per round (3), DURATION s per run (15),
#   RATE req/s (20000), READ_RATIO (0.5), KEYS preloaded (100000), ADDR (127.0.0.1:14810),
#   DURABILITY (sync).
# Prints one line per run: p50, p99, p99.9 and max in ms (latency from each request's
# scheduled send time, as `causeway bench --rate` reports it), and a median per binary.
set -euo pipefail
[[ $# == 2 ]] || { sed -n '2,12p' "$0"; exit 2; }
A=$1 B=$2
ROUNDS=${ROUNDS:-2} RUNS=${RUNS:-3} DURATION=${DURATION:-15} RATE=${RATE:-20000}
READ_RATIO=${READ_RATIO:-0.5} KEYS=${KEYS:-100000} ADDR=${ADDR:-127.0.0.1:14810}
DURABILITY=${DURABILITY:-sync}
WORK=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for which in A B; do
    bin=$A; [[ $which == B ]] && bin=$B
    rm -rf "$WORK/data"
    "$bin" serve --address "$ADDR" --data-dir "$WORK/data" --durability "$DURABILITY" >"$WORK/node-$which.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 50); do curl -sf "http://$ADDR/ready" >/dev/null && break; sleep 0.1; done
    "$bin" bench --nodes "$ADDR" --preload --keys "$KEYS" --duration 0 >/dev/null
    for run in $(seq 1 "$RUNS"); do
      "$bin" bench --nodes "$ADDR" --keys "$KEYS" --duration "$DURATION" --read-ratio "$READ_RATIO" \
        --rate "$RATE" --json >"$WORK/run.json"
      python3 - "$WORK/run.json" "$which" "$round" "$run" <<'PY' | tee -a "$WORK/lines"
import json, sys
l = json.load(open(sys.argv[1]))["latency"]
print(f"{sys.argv[2]} round {sys.argv[3]} run {sys.argv[4]}: p50 {l['p50_ms']:.2f} p99 {l['p99_ms']:.2f} "
      f"p99.9 {l['p999_ms']:.2f} max {l['max_ms']:.1f} ms")
PY
    done
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  done
done
python3 - "$WORK/lines" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for which in "AB":
    p = [r for r in rows if r[0] == which]
    med = lambda i: statistics.median(float(r[i]) for r in p)
    print(f"{which} median of {len(p)} runs: p50 {med(6):.2f} p99 {med(8):.2f} p99.9 {med(10):.2f} max {med(12):.1f} ms")
PY
