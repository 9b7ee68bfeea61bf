#!/usr/bin/env bash
# Causeway's performance suite. Every figure is measured side by side in one run against the
# reference server (/work/shared/bench/reference: an in-memory map behind axum, the ceiling):
# reference, then Causeway, then the reference again; each Causeway figure is printed as a ratio
# to the mean of the two reference runs, with its target and PASS/MISS. See BENCHMARKS.md.
#
# Usage: bench/suite.sh [quick] [section ...]
#   sections: single replicas cluster latency memory viewchange (default: all)
#   quick:    3 s per figure, 100,000 keys for memory/restart, 20,000 for the view change
# Environment: DURATION (s per figure), MEM_KEYS, VC_KEYS, NET (loopback prefix, default
#   127.0.10), NO_BUILD=1 (use the binaries as built), CAUSEWAY_BIN, KEEP=1 (keep data and
#   logs), OUT=<file> (copy the figures, JSON lines), PROFILE=1 (perf record each Causeway
#   load phase into the work directory), WAIT_QUIET=<load> (before each section, wait up to
#   10 minutes for the 1-minute load average to fall below <load>; for shared machines).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED_BENCH=$(cd "$ROOT/../shared/bench" && pwd)
PROBE=(python3 "$HERE/probe.py")

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

QUICK=0
SECTIONS=()
for arg in "$@"; do
  case $arg in
    quick) QUICK=1 ;;
    single | replicas | cluster | latency | memory | viewchange) SECTIONS+=("$arg") ;;
    all) ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done
[[ ${#SECTIONS[@]} -gt 0 ]] || SECTIONS=(single replicas cluster latency memory viewchange)

if [[ $QUICK == 1 ]]; then
  DURATION=${DURATION:-3}; MEM_KEYS=${MEM_KEYS:-100000}; VC_KEYS=${VC_KEYS:-20000}
else
  DURATION=${DURATION:-10}; MEM_KEYS=${MEM_KEYS:-1000000}; VC_KEYS=${VC_KEYS:-100000}
fi
NET=${NET:-127.0.10}
CONC=32
KEYS=10000
REF_ADDR="$NET.100:18000"
CAUSEWAY=${CAUSEWAY_BIN:-$ROOT/target/release/causeway}
REF_BIN=$SHARED_BENCH/reference/target/release/reference-kv
node_addr() { echo "$NET.$1:13800"; }
# Comma-separated addresses of nodes $1..$2.
view_of() { local i out=(); for ((i = $1; i <= $2; i++)); do out+=("$(node_addr "$i")"); done; (IFS=,; echo "${out[*]}"); }

# ---------------------------------------------------------------- processes and clean-up
WORK=$(mktemp -d /tmp/causeway-suite.XXXXXX)
RESULTS=$WORK/results.jsonl
declare -A PID_OF=()
PERF_PID=""

alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [[ $s != Z ]]; }

# Stops one process started here: SIGTERM, up to 20 s, then SIGKILL. Prints the seconds it took.
stop_pid() {
  local pid=$1 t0 i
  t0=$(date +%s.%N)
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 2000; i++)); do alive "$pid" || break; sleep 0.01; done
  if alive "$pid"; then echo "  process $pid ignored SIGTERM for 20 s; killing it" >&2; kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  "${PROBE[@]}" calc "round($(date +%s.%N) - $t0, 3)"
}

stop() { # name
  local pid=${PID_OF[$1]:-}
  unset "PID_OF[$1]"
  [[ -n $pid ]] && stop_pid "$pid" >/dev/null
  return 0
}

stop_all() { local n; for n in "${!PID_OF[@]}"; do stop "$n"; done; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null
  stop_all
  if [[ ${KEEP:-0} == 1 || $rc != 0 ]]; then echo "work directory (logs, data): $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "suite: $*" >&2; exit 1; }

port_free() { ! (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

start_ref() {
  port_free "$REF_ADDR" || die "something already listens on $REF_ADDR"
  "$REF_BIN" "$REF_ADDR" >"$WORK/reference.log" 2>&1 &
  PID_OF[ref]=$!
  "${PROBE[@]}" wait "$REF_ADDR" --deadline 10 >/dev/null || die "reference did not start (see $WORK/reference.log)"
}

# start_node <i> <view> <repl>: node i on $NET.i:13800 with a fresh data directory unless
# KEEP_DATA=1 is set for the call.
start_node() {
  local i=$1 view=$2 repl=$3 addr
  addr=$(node_addr "$i")
  port_free "$addr" || die "something already listens on $addr"
  [[ ${KEEP_DATA:-0} == 1 ]] || rm -rf "$WORK/data-$i"
  ADDRESS=$addr VIEW=$view REPL_FACTOR=$repl DATA_DIR=$WORK/data-$i RUST_LOG=${RUST_LOG:-warn} \
    "$CAUSEWAY" serve >>"$WORK/node-$i.log" 2>&1 &
  PID_OF[n$i]=$!
}

wait_ready() { # <i>...
  local i
  for i in "$@"; do
    "${PROBE[@]}" wait "$(node_addr "$i")" --ready --deadline 30 >/dev/null || die "node $i not ready (see $WORK/node-$i.log)"
  done
}

# start_cluster <n> <repl>: nodes 1..n in one view.
start_cluster() {
  local n=$1 repl=$2 i view
  view=$(view_of 1 "$n")
  for ((i = 1; i <= n; i++)); do start_node "$i" "$view" "$repl"; done
  wait_ready $(seq 1 "$n")
}

rss_mb() { awk '/^VmRSS/ {printf "%.1f\n", $2 / 1024}' "/proc/$1/status"; }

# ---------------------------------------------------------------- load
# Profile the named Causeway phase with perf while it runs (PROFILE=1).
profile_start() { # <name> <comma-separated pids>
  [[ ${PROFILE:-0} == 1 ]] || return 0
  perf record -F 499 -g -o "$WORK/perf-$1.data" -p "$2" >"$WORK/perf-$1.log" 2>&1 &
  PERF_PID=$!
  sleep 0.3
}
profile_stop() {
  [[ -n $PERF_PID ]] || return 0
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=""
}
node_pids() { local i out=(); for i in "$@"; do out+=("${PID_OF[n$i]}"); done; (IFS=,; echo "${out[*]}"); }

# wrk_run <script> <addr> -> "req/s errors"; scripts are run from ../shared/bench as given.
wrk_run() {
  local out
  out=$(cd "$SHARED_BENCH" && wrk -t1 -c"$CONC" -d"${DURATION}s" -s "$1" "http://$2") || die "wrk failed: $out"
  "${PROBE[@]}" wrk <<<"$out"
}

BENCH=()
# bench_run <out.json> <args>...: causeway bench with --json.
bench_run() {
  local out=$1; shift
  "${BENCH[@]}" --concurrency "$CONC" --json "$@" >"$out" 2>"$out.err" || die "bench $* failed: $(cat "$out.err")"
}
# preload <nodes> <keys>: write key1..key<keys> once.
preload() { bench_run "$WORK/preload.json" --nodes "$1" --keys "$2" --preload --duration 0; }
jget() { "${PROBE[@]}" json "$1" "$2"; }
calc() { "${PROBE[@]}" calc "$1"; }

rec() { # <section> <name> <unit> <value> [probe record options]
  local section=$1 name=$2 unit=$3 value=$4; shift 4
  "${PROBE[@]}" record --file "$RESULTS" --section "$section" --name "$name" --unit "$unit" --value "$value" "$@"
}
errnote() { [[ $1 == 0 ]] && echo "no errors" || echo "$1 ERRORS"; }

# Section header, with the machine's load average (other work on the machine is noise).
hdr() { printf '\n== %s\n   (load average %s)\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

# ---------------------------------------------------------------- sections
section_single() {
  hdr "single: one durable node; wrk -t1 -c$CONC -d${DURATION}s put.lua then get.lua (all keys preloaded)"
  local rp1 rg1 cp cg rp2 rg2 e
  start_ref
  rp1=$(wrk_run put.lua "$REF_ADDR"); preload "$REF_ADDR" $KEYS; rg1=$(wrk_run get.lua "$REF_ADDR")
  start_cluster 1 1
  profile_start single-put "$(node_pids 1)"
  cp=$(wrk_run put.lua "$(node_addr 1)")
  profile_stop
  preload "$(node_addr 1)" $KEYS
  profile_start single-get "$(node_pids 1)"
  cg=$(wrk_run get.lua "$(node_addr 1)")
  profile_stop
  stop n1
  rp2=$(wrk_run put.lua "$REF_ADDR"); rg2=$(wrk_run get.lua "$REF_ADDR")
  stop ref
  e=${cp#* }; rec single "PUT throughput, 1 node" req/s "${cp% *}" --ref "${rp1% *}" --ref "${rp2% *}" --target ">=0.8" --note "$(errnote "$e")"
  e=${cg#* }; rec single "GET throughput, 1 node" req/s "${cg% *}" --ref "${rg1% *}" --ref "${rg2% *}" --target ">=0.9" --note "$(errnote "$e")"
}

section_replicas() {
  local r target
  for r in 2 3; do
    [[ $r == 2 ]] && target=0.6 || target=0.5
    hdr "replicas: one shard of $r replicas, wrk put-seq.lua (fresh keys s1, s2, ...) on replica 1; then time until every replica has every write"
    local ref1 ref2 cw t_stop conv others secs count conv_note
    start_ref
    ref1=$(wrk_run "$HERE/put-seq.lua" "$REF_ADDR")
    stop ref
    start_cluster "$r" "$r"
    profile_start "replicas-$r" "$(node_pids $(seq 1 "$r"))"
    cw=$(wrk_run "$HERE/put-seq.lua" "$(node_addr 1)")
    t_stop=$(date +%s.%N)
    others=$(view_of 2 "$r")
    if conv=$("${PROBE[@]}" converge --loaded "$(node_addr 1)" --others "$others" --since "$t_stop" --deadline 60); then
      secs=${conv% *}; count=${conv#* }
      conv_note="$count keys on every replica"
    else
      secs=60; conv_note="NOT converged within 60 s"
    fi
    profile_stop
    stop_all
    start_ref
    ref2=$(wrk_run "$HERE/put-seq.lua" "$REF_ADDR")
    stop ref
    rec replicas "PUT throughput, $r replicas" req/s "${cw% *}" --ref "${ref1% *}" --ref "${ref2% *}" --target ">=$target" --note "$(errnote "${cw#* }")"
    rec replicas "replicas complete, $r replicas" s "$secs" --target "<=1" --note "after the load stopped; $conv_note"
  done
}

section_cluster() {
  local all
  all=$(view_of 1 6)
  hdr "cluster: 6 nodes (3 shards x 2), causeway bench -c$CONC over all nodes, PUT (read ratio 0) then GET (read ratio 1, preloaded); reference: the same generator on its one node"
  start_ref
  bench_run "$WORK/r1p.json" --nodes "$REF_ADDR" --read-ratio 0 --duration "$DURATION"
  preload "$REF_ADDR" $KEYS
  bench_run "$WORK/r1g.json" --nodes "$REF_ADDR" --read-ratio 1 --duration "$DURATION"
  start_cluster 6 2
  profile_start cluster-put "$(node_pids 1 2 3 4 5 6)"
  bench_run "$WORK/cp.json" --nodes "$all" --read-ratio 0 --duration "$DURATION"
  profile_stop
  preload "$all" $KEYS
  profile_start cluster-get "$(node_pids 1 2 3 4 5 6)"
  bench_run "$WORK/cg.json" --nodes "$all" --read-ratio 1 --duration "$DURATION"
  profile_stop
  stop_all
  start_ref
  bench_run "$WORK/r2p.json" --nodes "$REF_ADDR" --read-ratio 0 --duration "$DURATION"
  preload "$REF_ADDR" $KEYS
  bench_run "$WORK/r2g.json" --nodes "$REF_ADDR" --read-ratio 1 --duration "$DURATION"
  stop ref
  local op f
  for op in p g; do
    [[ $op == p ]] && f=PUT || f=GET
    rec cluster "$f throughput, 6 nodes" req/s "$(jget "$WORK/c$op.json" ok_throughput)" \
      --ref "$(jget "$WORK/r1$op.json" ok_throughput)" --ref "$(jget "$WORK/r2$op.json" ok_throughput)" \
      --target ">=0.4" --note "$(errnote "$(jget "$WORK/c$op.json" error_total)")"
  done
}

# latency_at_half <label> <n nodes> <repl>: closed-loop max of Causeway (read ratio 0.5), then
# reference, Causeway, reference at half that rate.
latency_at_half() {
  local label=$1 n=$2 repl=$3 nodes max rate
  nodes=$(view_of 1 "$n")
  start_cluster "$n" "$repl"
  preload "$nodes" $KEYS
  bench_run "$WORK/max-$label.json" --nodes "$nodes" --read-ratio 0.5 --duration "$DURATION"
  max=$(jget "$WORK/max-$label.json" ok_throughput)
  rate=$(calc "round($max / 2)")
  echo "  Causeway max $max req/s (read ratio 0.5); offered rate $rate req/s to both"
  stop_all
  start_ref
  preload "$REF_ADDR" $KEYS
  bench_run "$WORK/lr1-$label.json" --nodes "$REF_ADDR" --read-ratio 0.5 --duration "$DURATION" --rate "$rate"
  stop ref
  KEEP_DATA=1 start_cluster "$n" "$repl"
  profile_start "latency-${label// /-}" "$(node_pids $(seq 1 "$n"))"
  bench_run "$WORK/lc-$label.json" --nodes "$nodes" --read-ratio 0.5 --duration "$DURATION" --rate "$rate"
  profile_stop
  stop_all
  start_ref
  preload "$REF_ADDR" $KEYS
  bench_run "$WORK/lr2-$label.json" --nodes "$REF_ADDR" --read-ratio 0.5 --duration "$DURATION" --rate "$rate"
  stop ref
  local q
  for q in p50 p99; do
    local target=()
    [[ $q == p99 ]] && target=(--target "<=3")
    rec latency "$q at half load ($rate req/s), $label" ms "$(jget "$WORK/lc-$label.json" "latency.${q}_ms")" \
      --ref "$(jget "$WORK/lr1-$label.json" "latency.${q}_ms")" --ref "$(jget "$WORK/lr2-$label.json" "latency.${q}_ms")" \
      "${target[@]}" --note "achieved $(calc "round($(jget "$WORK/lc-$label.json" throughput))") req/s, $(errnote "$(jget "$WORK/lc-$label.json" error_total)")"
  done
}

section_latency() {
  hdr "latency: p50/p99 at half of Causeway's max throughput (read ratio 0.5, paced causeway bench --rate, latency from scheduled send time)"
  latency_at_half "1 node" 1 1
  latency_at_half "6 nodes" 6 2
}

# RSS at a million keys: measured directly with MEM_KEYS=1000000, else the idle node's RSS plus
# the growth per key scaled to a million.
per_million() { calc "$1 + ($2 - $1) * 1e6 / $MEM_KEYS"; }

section_memory() {
  hdr "memory: RSS and disk per million keys after loading $MEM_KEYS 100-byte keys; restart time to serving"
  local pid base rss disk ref_base ref_rss load_c load_r1 down up count t0 scaled=""
  [[ $MEM_KEYS == 1000000 ]] || scaled=", scaled from $MEM_KEYS keys"
  start_ref
  ref_base=$(rss_mb "${PID_OF[ref]}")
  preload "$REF_ADDR" "$MEM_KEYS"
  load_r1=$(jget "$WORK/preload.json" preload.rate)
  ref_rss=$(rss_mb "${PID_OF[ref]}")
  stop ref
  start_cluster 1 1
  pid=${PID_OF[n1]}
  base=$(rss_mb "$pid")
  profile_start memory-load "$pid"
  preload "$(node_addr 1)" "$MEM_KEYS"
  profile_stop
  load_c=$(jget "$WORK/preload.json" preload.rate)
  [[ $(jget "$WORK/preload.json" preload.errors) == 0 ]] || echo "  warning: $(jget "$WORK/preload.json" preload.errors) keys failed to load"
  rss=$(rss_mb "$pid")
  disk=$(du -sk "$WORK/data-1" | awk '{printf "%.1f", $1 / 1024}')
  rec memory "load rate, $MEM_KEYS keys, 1 node" keys/s "$load_c" --ref "$load_r1" --note "causeway bench --preload -c$CONC"
  rec memory "RSS at a million keys" MB "$(per_million "$base" "$rss")" --ref "$(per_million "$ref_base" "$ref_rss")" \
    --target "<400" --target-on-value --note "VmRSS $base MB idle, $rss MB loaded$scaled"
  rec memory "disk per million keys" MB "$(calc "$disk * 1e6 / $MEM_KEYS")" --note "du of the data directory: $disk MB"
  unset "PID_OF[n1]"
  down=$(stop_pid "$pid")
  t0=$(date +%s.%N)
  KEEP_DATA=1 start_node 1 "$(node_addr 1)" 1
  up=$("${PROBE[@]}" wait "$(node_addr 1)" --ready --key key1 --since "$t0" --deadline 120) || up=120
  count=$("${PROBE[@]}" count "$(node_addr 1)")
  rss=$(rss_mb "${PID_OF[n1]}")
  stop n1
  rec memory "restart to serving, $MEM_KEYS keys" s "$up" --target "<3" --note "exec until /ready and GET key1 answer 200; SIGTERM took $down s; $count keys after restart"
  rec memory "RSS after restart" MB "$rss" --note "at $MEM_KEYS keys, right after the restart"
}

section_viewchange() {
  hdr "viewchange: 2 shards x 2 -> 3 shards x 2 with $VC_KEYS keys"
  local old new i before after vc secs total moved_counts moved_sample
  old=$(view_of 1 4); new=$(view_of 1 6)
  for i in 1 2 3 4; do start_node "$i" "$old" 2; done
  for i in 5 6; do start_node "$i" "$old" 2; done # not in the view yet: they wait to be added
  wait_ready 1 2 3 4
  preload "$old" "$VC_KEYS"
  [[ $(jget "$WORK/preload.json" preload.errors) == 0 ]] || die "preload of $VC_KEYS keys had errors"
  "${PROBE[@]}" shards "$(node_addr 1)" >"$WORK/shards-before.json"
  "${PROBE[@]}" placement "$(node_addr 1)" --keys "$VC_KEYS" >"$WORK/place-before.json"
  profile_start viewchange "$(node_pids 1 2 3 4 5 6)"
  vc=$("${PROBE[@]}" view-change "$(node_addr 1)" --view "$new" --repl 2) || die "view change failed"
  profile_stop
  echo "$vc" >"$WORK/view-change.json"
  secs=$(jget "$WORK/view-change.json" secs)
  "${PROBE[@]}" shards "$(node_addr 1)" >"$WORK/shards-after.json"
  "${PROBE[@]}" placement "$(node_addr 1)" --keys "$VC_KEYS" >"$WORK/place-after.json"
  stop_all
  read -r before after total moved_counts < <(python3 - "$WORK/shards-before.json" "$WORK/shards-after.json" <<'PY'
import json, sys
b = {s["shard-id"]: s["key-count"] for s in json.load(open(sys.argv[1]))}
a = {s["shard-id"]: s["key-count"] for s in json.load(open(sys.argv[2]))}
ids = sorted(set(a) | set(b))
moved = sum(abs(a.get(i, 0) - b.get(i, 0)) for i in ids) / 2
print("/".join(str(b.get(i, 0)) for i in ids), "/".join(str(a.get(i, 0)) for i in ids), sum(a.values()), moved)
PY
  )
  moved_sample=$("${PROBE[@]}" moved "$WORK/place-before.json" "$WORK/place-after.json")
  rec viewchange "view change duration, $VC_KEYS keys" s "$secs" --note "PUT /kv-store/view-change until it answered"
  rec viewchange "keys moved, from key-counts" fraction "$(calc "$moved_counts / $VC_KEYS")" --note "ideal 0.333; per shard $before -> $after"
  rec viewchange "keys moved, sampled placement" fraction "$moved_sample" --note "5000 keys' serving shard before/after; ideal 0.333"
  rec viewchange "keys after the change" keys "$total" --target ">=$VC_KEYS" --note "no key lost"
}

# ---------------------------------------------------------------- main
if [[ ${NO_BUILD:-0} != 1 ]]; then
  echo "building release binaries ..."
  (cd "$ROOT" && cargo build --release -p causeway) || die "cannot build causeway"
  (cd "$SHARED_BENCH/reference" && cargo build --release) || die "cannot build the reference server"
fi
[[ -x $CAUSEWAY ]] || die "no causeway binary at $CAUSEWAY"
[[ -x $REF_BIN ]] || die "no reference binary at $REF_BIN"
# Run copies, so a rebuild during the run cannot mix two versions into one set of figures.
CAUSEWAY_SRC=$CAUSEWAY
cp "$CAUSEWAY" "$WORK/causeway" && CAUSEWAY=$WORK/causeway
cp "$REF_BIN" "$WORK/reference-kv" && REF_BIN=$WORK/reference-kv
if ! command -v wrk >/dev/null; then
  echo "installing wrk ..."
  { apt-get update -qq && apt-get install -y -qq wrk; } >/dev/null || die "cannot install wrk"
fi
"$CAUSEWAY" bench --help >/dev/null 2>&1 || die "$CAUSEWAY has no bench subcommand"
BENCH=("$CAUSEWAY" bench)

echo "Causeway performance suite: ${SECTIONS[*]}; ${DURATION} s per figure; $(nproc) cores; $(date -u +%FT%TZ)"
echo "causeway at commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') ($CAUSEWAY_SRC, built $(date -u -r "$CAUSEWAY_SRC" +%FT%TZ)); work: $WORK"
wait_quiet() {
  [[ -n ${WAIT_QUIET:-} ]] || return 0
  local i
  for ((i = 0; i < 600; i++)); do
    [[ $(calc "$(cut -d' ' -f1 /proc/loadavg) < $WAIT_QUIET") == True ]] && return 0
    sleep 1
  done
  echo "  (load average still $(cut -d' ' -f1 /proc/loadavg) after 10 minutes; going on)"
}
for s in "${SECTIONS[@]}"; do wait_quiet; "section_$s"; done

printf '\n== summary (ratios to the mean of the two reference runs of the same run; load average now %s)\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
"${PROBE[@]}" report "$RESULTS"
[[ -z ${OUT:-} ]] || cp "$RESULTS" "$OUT"
if [[ ${PROFILE:-0} == 1 ]]; then KEEP=1; echo "perf data: $WORK/perf-*.data (perf report -i ...)"; fi
