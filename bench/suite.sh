#!/usr/bin/env bash
# Causeway's performance suite. Every figure is measured side by side in one run against the
# reference server (/work/shared/bench/reference: an in-memory map behind axum, the ceiling):
# reference, then Causeway, then the reference again; each Causeway figure is printed as a ratio
# to the mean of the two reference runs, with its target and PASS/MISS. See BENCHMARKS.md.
#
# Usage: bench/suite.sh [quick] [section ...]
#   sections: single replicas cluster latency memory viewchange anchors (default: all), and ci
#             (only the durable PUT and GET ratios: the short comparison scripts/test.sh runs)
#   quick:    3 s per figure, 100,000 keys for memory/restart, 20,000 for the view change
# Environment: DURATION (s per figure), MEM_KEYS, VC_KEYS, NET (loopback prefix, default
#   127.0.10), NO_BUILD=1 (use the binaries as built), CAUSEWAY_BIN, REF_BIN (binaries to use;
#   by default under $CARGO_TARGET_DIR, else each project's target/), KEEP=1 (keep data and
#   logs), OUT=<file> (copy the figures, JSON lines), PROFILE=1 (perf record each Causeway
#   load phase, then a flame graph per phase with bench/flame.sh into FLAME_DIR, default
#   <work>/flame; PERF_CALLGRAPH=dwarf (default) or fp), WAIT_QUIET=<load> (before each
#   section, wait up to 10 minutes for the 1-minute load average to fall below <load>; for
#   shared machines).
# Anchors (section anchors; ANCHORS=0 leaves it out of the default set): Redis (redis-server,
#   redis-benchmark) without persistence, appendfsync everysec and appendfsync always, and one
#   durable etcd node through its JSON gateway with wrk (bench/etcd-put.lua, etcd-get.lua), on
#   127.0.0.1:REDIS_PORT (16379) and ETCD_PORT (12379, peer port +1); REDIS_N requests per
#   redis-benchmark test (default 50,000 per second of DURATION). An anchor whose binary is
#   missing is skipped with a message; nothing is installed for them (BENCHMARKS.md lists the
#   Debian packages).
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
    single | replicas | cluster | latency | memory | viewchange | anchors | ci) SECTIONS+=("$arg") ;;
    all) ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done
if [[ ${#SECTIONS[@]} -eq 0 ]]; then
  SECTIONS=(single replicas cluster latency memory viewchange)
  [[ ${ANCHORS:-1} == 0 ]] || SECTIONS+=(anchors)
fi

if [[ $QUICK == 1 ]]; then
  DURATION=${DURATION:-3}; MEM_KEYS=${MEM_KEYS:-100000}; VC_KEYS=${VC_KEYS:-20000}
else
  DURATION=${DURATION:-10}; MEM_KEYS=${MEM_KEYS:-1000000}; VC_KEYS=${VC_KEYS:-100000}
fi
NET=${NET:-127.0.10}
CONC=32
CONC_HIGH=128
KEYS=10000
REF_ADDR="$NET.100:18000"
CAUSEWAY=${CAUSEWAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/causeway}
REF_BIN=${REF_BIN:-${CARGO_TARGET_DIR:-$SHARED_BENCH/reference/target}/release/reference-kv}
REDIS_PORT=${REDIS_PORT:-16379}
ETCD_PORT=${ETCD_PORT:-12379}
REDIS_N=${REDIS_N:-$((DURATION * 50000))}
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
# KEEP_DATA=1 is set for the call; NODE_DURABILITY=os (default sync) or NODE_IN_MEMORY=1 for
# the call change how it stores writes.
start_node() {
  local i=$1 view=$2 repl=$3 addr mode=()
  addr=$(node_addr "$i")
  port_free "$addr" || die "something already listens on $addr"
  [[ ${KEEP_DATA:-0} == 1 ]] || rm -rf "$WORK/data-$i"
  [[ ${NODE_IN_MEMORY:-0} == 1 ]] && mode=(IN_MEMORY=true)
  env ADDRESS="$addr" VIEW="$view" REPL_FACTOR="$repl" DATA_DIR="$WORK/data-$i" RUST_LOG="${RUST_LOG:-warn}" \
    DURABILITY="${NODE_DURABILITY:-sync}" "${mode[@]}" \
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

# cpu_us <pid>...: user plus system CPU time of the processes so far, in microseconds (utime and
# stime of /proc/<pid>/stat, clock ticks; the command name is cut first, it may hold spaces).
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_us() {
  local p t=0
  for p in "$@"; do t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat"))); done
  echo $((t * 1000000 / CLK_TCK))
}
# cpu_per_op <cpu us before> <cpu us after> <req/s>: microseconds of CPU per operation served
# over one load of $DURATION seconds.
cpu_per_op() { calc "round(($2 - $1) / ($3 * $DURATION), 2)"; }

# ---------------------------------------------------------------- load
# Profile the named Causeway phase with perf while it runs (PROFILE=1).
profile_start() { # <name> <comma-separated pids>
  [[ ${PROFILE:-0} == 1 ]] || return 0
  local cg=(--call-graph dwarf,16384)
  [[ ${PERF_CALLGRAPH:-dwarf} == fp ]] && cg=(-g)
  perf record -F "${PERF_FREQ:-499}" "${cg[@]}" -o "$WORK/perf-$1.data" -p "$2" >"$WORK/perf-$1.log" 2>&1 &
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
node_pids_list() { local i; for i in "$@"; do echo "${PID_OF[n$i]}"; done; }

# wrk_run <script> <addr> [connections] -> "req/s errors"; scripts are run from
# ../shared/bench as given.
wrk_run() {
  local out
  out=$(cd "$SHARED_BENCH" && wrk -t1 -c"${3:-$CONC}" -d"${DURATION}s" -s "$1" "http://$2") || die "wrk failed: $out"
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
  hdr "single: one node; wrk -t1 -d${DURATION}s put.lua at -c$CONC and -c$CONC_HIGH (durable, sync), put.lua -c$CONC with --durability os, get.lua -c$CONC (all keys preloaded)"
  local rp1 rq1 rg1 cp cq co cg cb rp2 rq2 rg2 e c0 c1 r0 r1
  start_ref
  rp1=$(wrk_run put.lua "$REF_ADDR"); rq1=$(wrk_run put.lua "$REF_ADDR" $CONC_HIGH)
  preload "$REF_ADDR" $KEYS; rg1=$(wrk_run get.lua "$REF_ADDR")
  start_cluster 1 1
  profile_start single-put "$(node_pids 1)"
  cp=$(wrk_run put.lua "$(node_addr 1)")
  profile_stop
  profile_start single-put-c$CONC_HIGH "$(node_pids 1)"
  cq=$(wrk_run put.lua "$(node_addr 1)" $CONC_HIGH)
  profile_stop
  preload "$(node_addr 1)" $KEYS
  profile_start single-get "$(node_pids 1)"
  c0=$(cpu_us "${PID_OF[n1]}")
  cg=$(wrk_run get.lua "$(node_addr 1)")
  c1=$(cpu_us "${PID_OF[n1]}")
  profile_stop
  profile_start single-put-1m "$(node_pids 1)"
  cb=$(wrk_run "$HERE/put-1m.lua" "$(node_addr 1)" 4)
  profile_stop
  stop n1
  NODE_DURABILITY=os start_cluster 1 1
  profile_start single-put-os "$(node_pids 1)"
  co=$(wrk_run put.lua "$(node_addr 1)")
  profile_stop
  stop n1
  rp2=$(wrk_run put.lua "$REF_ADDR"); rq2=$(wrk_run put.lua "$REF_ADDR" $CONC_HIGH)
  r0=$(cpu_us "${PID_OF[ref]}")
  rg2=$(wrk_run get.lua "$REF_ADDR")
  r1=$(cpu_us "${PID_OF[ref]}")
  stop ref
  e=${cp#* }; rec single "PUT throughput, 1 node" req/s "${cp% *}" --ref "${rp1% *}" --ref "${rp2% *}" --target ">=0.6" --note "durable (sync), -c$CONC; $(errnote "$e")"
  e=${cq#* }; rec single "PUT throughput, 1 node, $CONC_HIGH conns" req/s "${cq% *}" --ref "${rq1% *}" --ref "${rq2% *}" --target ">=0.8" --note "durable (sync), -c$CONC_HIGH; $(errnote "$e")"
  e=${co#* }; rec single "PUT throughput, 1 node, os" req/s "${co% *}" --ref "${rp1% *}" --ref "${rp2% *}" --target ">=0.9" --note "--durability os, -c$CONC; $(errnote "$e")"
  e=${cg#* }; rec single "GET throughput, 1 node" req/s "${cg% *}" --ref "${rg1% *}" --ref "${rg2% *}" --target ">=0.95" --note "$(errnote "$e")"
  rec single "CPU per GET, 1 node" us "$(cpu_per_op "$c0" "$c1" "${cg% *}")" --ref "$(cpu_per_op "$r0" "$r1" "${rg2% *}")" \
    --target "<=1.5" --note "utime+stime of the node over the GET load / GETs served (the reference: its second GET run)"
  e=${cb#* }; rec single "PUT 1 MiB values, 1 node" MB/s "$(calc "round(${cb% *} * 1.048576, 1)")" --target ">=200" --target-on-value \
    --note "durable (sync); wrk -c4 bench/put-1m.lua, 64 keys; $(errnote "$e")"
}

# The short comparison CI runs (scripts/test.sh): durable PUT and GET on one node against the
# reference, side by side; figures only (CI does not gate on them: its machine is noisy).
section_ci() {
  hdr "ci: one durable node, wrk -t1 -c$CONC -d${DURATION}s put.lua then get.lua, against the reference before and after"
  local rp1 rg1 cp cg rp2 rg2
  start_ref
  rp1=$(wrk_run put.lua "$REF_ADDR"); preload "$REF_ADDR" $KEYS; rg1=$(wrk_run get.lua "$REF_ADDR")
  start_cluster 1 1
  cp=$(wrk_run put.lua "$(node_addr 1)")
  preload "$(node_addr 1)" $KEYS
  cg=$(wrk_run get.lua "$(node_addr 1)")
  stop n1
  rp2=$(wrk_run put.lua "$REF_ADDR"); rg2=$(wrk_run get.lua "$REF_ADDR")
  stop ref
  rec ci "PUT throughput, 1 node" req/s "${cp% *}" --ref "${rp1% *}" --ref "${rp2% *}" --target ">=0.6" --note "durable (sync); $(errnote "${cp#* }")"
  rec ci "GET throughput, 1 node" req/s "${cg% *}" --ref "${rg1% *}" --ref "${rg2% *}" --target ">=0.95" --note "$(errnote "${cg#* }")"
}

section_replicas() {
  local r target
  for r in 2 3; do
    [[ $r == 2 ]] && target=0.55 || target=0.45
    hdr "replicas: one shard of $r replicas, wrk put-seq.lua (fresh keys s1, s2, ...) on replica 1; then time until every replica has every write"
    local ref1 ref2 cw t_stop conv others secs count conv_note c0 c1 r0 r1
    start_ref
    r0=$(cpu_us "${PID_OF[ref]}")
    ref1=$(wrk_run "$HERE/put-seq.lua" "$REF_ADDR")
    r1=$(cpu_us "${PID_OF[ref]}")
    stop ref
    start_cluster "$r" "$r"
    profile_start "replicas-$r" "$(node_pids $(seq 1 "$r"))"
    c0=$(cpu_us $(node_pids_list $(seq 1 "$r")))
    cw=$(wrk_run "$HERE/put-seq.lua" "$(node_addr 1)")
    t_stop=$(date +%s.%N)
    others=$(view_of 2 "$r")
    if conv=$("${PROBE[@]}" converge --loaded "$(node_addr 1)" --others "$others" --since "$t_stop" --deadline 60); then
      secs=${conv% *}; count=${conv#* }
      conv_note="$count keys on every replica"
    else
      secs=60; conv_note="NOT converged within 60 s"
    fi
    # Every replica's CPU until it has every write (replication included).
    c1=$(cpu_us $(node_pids_list $(seq 1 "$r")))
    profile_stop
    stop_all
    start_ref
    ref2=$(wrk_run "$HERE/put-seq.lua" "$REF_ADDR")
    stop ref
    rec replicas "PUT throughput, $r replicas" req/s "${cw% *}" --ref "${ref1% *}" --ref "${ref2% *}" --target ">=$target" --note "$(errnote "${cw#* }")"
    rec replicas "replicas complete, $r replicas" s "$secs" --target "<=1" --note "after the load stopped; $conv_note"
    local cpu_target=()
    [[ $r == 2 ]] && cpu_target=(--target "<=3")
    rec replicas "CPU per PUT, $r replicas" us "$(cpu_per_op "$c0" "$c1" "${cw% *}")" --ref "$(cpu_per_op "$r0" "$r1" "${ref1% *}")" \
      "${cpu_target[@]}" --note "utime+stime of every replica until all have every write / PUTs served; the reference: its first run"
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

# latency_at_half <label> <n nodes> <repl> <p99 target>: closed-loop max of Causeway (read ratio 0.5), then
# reference, Causeway, reference at half that rate.
latency_at_half() {
  local label=$1 n=$2 repl=$3 p99_target=$4 nodes max rate
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
    [[ $q == p99 ]] && target=(--target "<=$p99_target")
    rec latency "$q at half load ($rate req/s), $label" ms "$(jget "$WORK/lc-$label.json" "latency.${q}_ms")" \
      --ref "$(jget "$WORK/lr1-$label.json" "latency.${q}_ms")" --ref "$(jget "$WORK/lr2-$label.json" "latency.${q}_ms")" \
      "${target[@]}" --note "achieved $(calc "round($(jget "$WORK/lc-$label.json" throughput))") req/s, $(errnote "$(jget "$WORK/lc-$label.json" error_total)")"
  done
}

section_latency() {
  hdr "latency: p50/p99 at half of Causeway's max throughput (read ratio 0.5, paced causeway bench --rate, latency from scheduled send time)"
  latency_at_half "1 node" 1 1 2
  latency_at_half "6 nodes" 6 2 3
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

# ---------------------------------------------------------------- anchors: Redis and etcd
# Stores users compare with, measured in the same run as a reference and Causeway pass, with the
# same 100-byte values and $CONC connections. Both listen on 127.0.0.1 (their own ports); data
# directories are in the work directory, on the same disk as Causeway's.

# redis_run <label> <redis-server options>...: sets REDIS_RESULT to "set_rps get_rps" (runs in
# this shell, not in $(...), so the clean-up on exit knows the server's pid).
REDIS_RESULT=""
redis_run() {
  local label=$1 dir=$WORK/redis-$1 out i; shift
  mkdir -p "$dir"
  port_free "127.0.0.1:$REDIS_PORT" || die "something already listens on 127.0.0.1:$REDIS_PORT (REDIS_PORT=)"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" --daemonize no --logfile "$dir/redis.log" "$@" >/dev/null 2>&1 &
  PID_OF[redis]=$!
  for ((i = 0; i < 100; i++)); do
    [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
  done
  out=$(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -t set,get -d 100 -c "$CONC" -P 1 -r "$KEYS" -n "$REDIS_N" --csv 2>&1) \
    || die "redis-benchmark ($label) failed: $out"
  echo "$out" >"$dir/benchmark.csv"
  stop redis
  REDIS_RESULT=$(awk -F'"' '$2 == "SET" { s = $4 } $2 == "GET" { g = $4 } END { if (s == "" || g == "") exit 1; print s, g }' <<<"$out") \
    || die "cannot read redis-benchmark output ($label): $out"
}

# etcd_start: one durable etcd member (fresh data directory) on 127.0.0.1:$ETCD_PORT.
etcd_start() {
  local addr=127.0.0.1:$ETCD_PORT peer=127.0.0.1:$((ETCD_PORT + 1))
  port_free "$addr" || die "something already listens on $addr (ETCD_PORT=)"
  port_free "$peer" || die "something already listens on $peer (ETCD_PORT=)"
  rm -rf "$WORK/etcd"
  etcd --name bench --data-dir "$WORK/etcd" --listen-client-urls "http://$addr" --advertise-client-urls "http://$addr" \
    --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer" --initial-cluster "bench=http://$peer" \
    --log-level warn >"$WORK/etcd.log" 2>&1 &
  PID_OF[etcd]=$!
  "${PROBE[@]}" wait "$addr" --deadline 30 >/dev/null || die "etcd did not start (see $WORK/etcd.log)"
}

section_anchors() {
  hdr "anchors: Redis (no persistence, appendfsync everysec, appendfsync always; redis-benchmark -c$CONC -P1 -d100 -r$KEYS -n$REDIS_N) and one durable etcd node (wrk -t1 -c$CONC through its JSON gateway), beside Causeway (sync, os, in memory) and the reference"
  local rp1 rg1 rp2 rg2 cs co cm cg e have_redis=1 have_etcd=1
  local rn rs ra ep eg
  command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null && command -v redis-cli >/dev/null \
    || { have_redis=0; echo "  Redis skipped: redis-server / redis-benchmark / redis-cli not found (Debian: apt-get install redis-server redis-tools)"; }
  command -v etcd >/dev/null || { have_etcd=0; echo "  etcd skipped: etcd not found (Debian: apt-get install etcd-server)"; }
  start_ref
  rp1=$(wrk_run put.lua "$REF_ADDR"); preload "$REF_ADDR" $KEYS; rg1=$(wrk_run get.lua "$REF_ADDR")
  start_cluster 1 1
  cs=$(wrk_run put.lua "$(node_addr 1)")
  preload "$(node_addr 1)" $KEYS
  cg=$(wrk_run get.lua "$(node_addr 1)")
  stop n1
  NODE_DURABILITY=os start_cluster 1 1
  co=$(wrk_run put.lua "$(node_addr 1)")
  stop n1
  NODE_IN_MEMORY=1 start_cluster 1 1
  cm=$(wrk_run put.lua "$(node_addr 1)")
  stop n1
  if [[ $have_redis == 1 ]]; then
    redis_run none --save '' --appendonly no; rn=$REDIS_RESULT
    redis_run everysec --save '' --appendonly yes --appendfsync everysec; rs=$REDIS_RESULT
    redis_run always --save '' --appendonly yes --appendfsync always; ra=$REDIS_RESULT
  fi
  if [[ $have_etcd == 1 ]]; then
    etcd_start
    ep=$(wrk_run "$HERE/etcd-put.lua" "127.0.0.1:$ETCD_PORT")
    eg=$(wrk_run "$HERE/etcd-get.lua" "127.0.0.1:$ETCD_PORT")
    stop etcd
  fi
  rp2=$(wrk_run put.lua "$REF_ADDR"); rg2=$(wrk_run get.lua "$REF_ADDR")
  stop ref

  local refp=(--ref "${rp1% *}" --ref "${rp2% *}") refg=(--ref "${rg1% *}" --ref "${rg2% *}")
  local p_s=${cs% *} p_o=${co% *} p_m=${cm% *} g=${cg% *}
  e=${cs#* }; rec anchors "Causeway PUT, durable (sync)" req/s "$p_s" "${refp[@]}" --note "wrk put.lua; $(errnote "$e")"
  e=${co#* }; rec anchors "Causeway PUT, os" req/s "$p_o" "${refp[@]}" --note "wrk put.lua; $(errnote "$e")"
  e=${cm#* }; rec anchors "Causeway PUT, in memory" req/s "$p_m" "${refp[@]}" --note "IN_MEMORY; wrk put.lua; $(errnote "$e")"
  e=${cg#* }; rec anchors "Causeway GET" req/s "$g" "${refg[@]}" --note "durable node; wrk get.lua; $(errnote "$e")"
  vs() { echo "Causeway $2 $(calc "round($3)") req/s: Causeway / $1 = $(calc "round($3 / $4, 2)")"; }
  if [[ $have_redis == 1 ]]; then
    rec anchors "Redis SET, no persistence" req/s "${rn% *}" "${refp[@]}" --note "RESP, not HTTP; $(vs Redis "in memory" "$p_m" "${rn% *}")"
    rec anchors "Redis SET, appendfsync everysec" req/s "${rs% *}" "${refp[@]}" --note "RESP; $(vs Redis os "$p_o" "${rs% *}")"
    rec anchors "Redis SET, appendfsync always" req/s "${ra% *}" "${refp[@]}" --note "RESP; $(vs Redis sync "$p_s" "${ra% *}")"
    rec anchors "Redis GET, no persistence" req/s "${rn#* }" "${refg[@]}" --note "RESP; $(vs Redis GET "$g" "${rn#* }")"
  fi
  if [[ $have_etcd == 1 ]]; then
    rec anchors "etcd PUT, 1 durable node" req/s "${ep% *}" "${refp[@]}" --note "JSON gateway POST /v3/kv/put; $(vs etcd sync "$p_s" "${ep% *}"); $(errnote "${ep#* }")"
    rec anchors "etcd range GET, 1 node" req/s "${eg% *}" "${refg[@]}" --note "POST /v3/kv/range, linearizable; $(vs etcd GET "$g" "${eg% *}"); $(errnote "${eg#* }")"
  fi
  # Durability's cost as a share of the store's own unpersisted rate: Causeway sync / in memory
  # against Redis appendfsync always / no persistence (the aim: Causeway keeps at least as much).
  local keep_m keep_o redis_keep target=()
  keep_m=$(calc "round($p_s / $p_m, 3)"); keep_o=$(calc "round($p_s / $p_o, 3)")
  if [[ $have_redis == 1 ]]; then
    redis_keep=$(calc "round(${ra% *} / ${rn% *}, 3)")
    target=(--target ">=$redis_keep")
    rec anchors "Redis: durability keeps" fraction "$redis_keep" --note "SET appendfsync always / SET no persistence; everysec keeps $(calc "round(${rs% *} / ${rn% *}, 3)")"
  fi
  rec anchors "Causeway: durability keeps" fraction "$keep_m" "${target[@]}" --note "PUT sync / PUT in memory (target: Redis's share); sync / os = $keep_o"
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
dirty=""
[[ -z $(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null) ]] || dirty=" + uncommitted changes"
echo "causeway at commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$dirty ($CAUSEWAY_SRC, built $(date -u -r "$CAUSEWAY_SRC" +%FT%TZ)); work: $WORK"
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
if [[ ${PROFILE:-0} == 1 ]]; then
  KEEP=1
  echo "perf data: $WORK/perf-*.data (perf report -i ...)"
  FLAME_DIR=${FLAME_DIR:-$WORK/flame}
  mkdir -p "$FLAME_DIR"
  for f in "$WORK"/perf-*.data; do
    [[ -e $f ]] || continue
    name=$(basename "$f" .data); name=${name#perf-}
    "$HERE/flame.sh" "$f" "$FLAME_DIR/$name.svg" "causeway: $name" || echo "  no flame graph for $name"
  done
fi
