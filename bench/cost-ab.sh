#!/usr/bin/env bash
# Throughput and CPU per request of two builds side by side, alternating (A, B, A, B,
# ...), with where each one's CPU and context switches go by thread: the comparison
# the noisy 2-core machine needs for a change worth a few percent.
#
# Usage: bench/cost-ab.sh <causeway binary A> <causeway binary B>
# Environment: ROUNDS (default 3), LOADS (default "get os sync"; each one of get: GETs
#   of preloaded keys; os: PUTs, --durability os; sync: PUTs, durable), CONNS (32),
#   DURATION s (5), ADDR (127.0.10.1:13800), SHARED_BENCH (../shared/bench: put.lua,
#   get.lua), THREADS=1 to print every run's per-thread table.
# Per run: req/s (wrk -t1), the node's CPU per request (utime+stime of every thread from
# /proc over the load, divided by the requests served), and per thread name its CPU and
# voluntary / involuntary context switches per request. Then a mean per binary and load.
set -euo pipefail
[[ $# == 2 ]] || { sed -n '2,14p' "$0"; exit 2; }
A=$1 B=$2
ROUNDS=${ROUNDS:-3} LOADS=${LOADS:-get os sync} CONNS=${CONNS:-32} DURATION=${DURATION:-5}
ADDR=${ADDR:-127.0.10.1:13800}
SHARED_BENCH=${SHARED_BENCH:-$(cd "$(dirname "$0")/../../shared/bench" 2>/dev/null && pwd)}
[[ -f $SHARED_BENCH/put.lua ]] || { echo "no put.lua in SHARED_BENCH=$SHARED_BENCH" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 2; }
HZ=$(getconf CLK_TCK)
WORK=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# thread name, CPU ticks, voluntary and involuntary switches, summed by name
snapshot() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{print $14+$15}' "$t/stat")" \
      "$(awk '/^voluntary_ctxt/{v=$2} /^nonvoluntary_ctxt/{n=$2} END{print v, n}' "$t/status")"
  done | awk '{c[$1]+=$2; v[$1]+=$3; n[$1]+=$4} END{for (k in c) print k, c[k], v[k], n[k]}' | sort
}

run() { # binary, load -> "rps us_per_req", per-thread lines in $WORK/threads
  local bin=$1 load=$2 durability=sync script=$SHARED_BENCH/put.lua
  [[ $load == os ]] && durability=os
  rm -rf "$WORK/data"
  "$bin" serve --address "$ADDR" --data-dir "$WORK/data" --durability "$durability" >"$WORK/node.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 50); do curl -sf "http://$ADDR/ready" >/dev/null && break; sleep 0.1; done
  if [[ $load == get ]]; then
    wrk -t1 -c"$CONNS" -d3s -s "$SHARED_BENCH/put.lua" "http://$ADDR" >/dev/null
    script=$SHARED_BENCH/get.lua
  fi
  wrk -t1 -c"$CONNS" -d2s -s "$script" "http://$ADDR" >/dev/null # warm-up
  snapshot "$PID" >"$WORK/s0"
  local t0 t1 out rps
  t0=$(date +%s.%N)
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$script" "http://$ADDR")
  t1=$(date +%s.%N)
  snapshot "$PID" >"$WORK/s1"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  join "$WORK/s0" "$WORK/s1" | awk -v r="$rps" -v s="$t1" -v b="$t0" -v hz="$HZ" '{
      n = r * (s - b)
      printf "    %-18s %6.2f us  vol %.3f  invol %.3f  per request\n", $1, ($5-$2) * 1e6 / hz / n, ($6-$3) / n, ($7-$4) / n
      total += ($5-$2) } END { printf "%s %.2f\n", r, total * 1e6 / hz / n > "/dev/stderr" }' \
    2>"$WORK/total" >"$WORK/threads"
  cat "$WORK/total"
}

for round in $(seq 1 "$ROUNDS"); do
  for load in $LOADS; do
    for which in A B; do
      bin=$A; [[ $which == B ]] && bin=$B
      read -r rps us < <(run "$bin" "$load")
      printf '%s %-4s round %s: %9.0f req/s  %6.2f us CPU per request\n' "$which" "$load" "$round" "$rps" "$us"
      [[ ${THREADS:-0} == 1 ]] && cat "$WORK/threads"
      echo "$which $load $rps $us" >>"$WORK/all"
    done
  done
done
echo "== mean of $ROUNDS rounds (A = $A, B = $B)"
awk '{k=$1" "$2; r[k]+=$3; u[k]+=$4; n[k]++} END{for (k in r) printf "%s %9.0f req/s  %6.2f us CPU per request\n", k, r[k]/n[k], u[k]/n[k]}' "$WORK/all" | sort -k2,2 -k1,1
