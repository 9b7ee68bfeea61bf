#!/usr/bin/env bash
# The API extensions, measured side by side in one run (issues 13 and 11): single PUTs against
# batches of BATCH PUTs (keys/s, same connections, value size and key space), on one durable
# node and on a cluster of 2 shards x 2 replicas; a listing of KEYS keys (preloaded with
# batches) paged through with limit=1000 by one cursor; and the size of the causal context that
# client sessions hold. All load comes from `causeway bench` (--batch, --sessions, --list). See
# BENCHMARKS.md, section "API extensions: batch, listing, context size".
#
# Usage: bench/api.sh [single] [cluster] [list] [list-cluster]   (default: all four)
# Environment: DURATION (s per load figure, default 10), KEYS (keys listed, default 1000000),
#   RW_KEYS (key space of the PUT figures, default 10000), BATCH (ops per batch, default 100),
#   CONC (connections, default 32), VALUE_SIZE (bytes, default 100), ROUNDS (single/batch
#   alternations per setup, default 2: single, batch, single, batch), NET (loopback prefix,
#   default 127.46.0: node i listens on $NET.i:13800), NO_BUILD=1 (use CAUSEWAY_BIN as built),
#   CAUSEWAY_BIN (default $CARGO_TARGET_DIR/release/causeway), KEEP=1 (keep data and logs),
#   OUT=<dir> (copy every `causeway bench --json` output there).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PROBE=(python3 "$HERE/probe.py")

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

SECTIONS=()
for arg in "$@"; do
  case $arg in
    single | cluster | list | list-cluster) SECTIONS+=("$arg") ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done
[[ ${#SECTIONS[@]} -gt 0 ]] || SECTIONS=(single cluster list list-cluster)

DURATION=${DURATION:-10}
KEYS=${KEYS:-1000000}
RW_KEYS=${RW_KEYS:-10000}
BATCH=${BATCH:-100}
CONC=${CONC:-32}
VALUE_SIZE=${VALUE_SIZE:-100}
ROUNDS=${ROUNDS:-2}
NET=${NET:-127.46.0}
CAUSEWAY=${CAUSEWAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/causeway}
node_addr() { echo "$NET.$1:13800"; }
view_of() { local i out=(); for ((i = $1; i <= $2; i++)); do out+=("$(node_addr "$i")"); done; (IFS=,; echo "${out[*]}"); }

# ---------------------------------------------------------------- processes and clean-up
WORK=$(mktemp -d /tmp/causeway-api.XXXXXX)
declare -A PID_OF=()

alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [[ $s != Z ]]; }
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 2000; i++)); do alive "$pid" || break; sleep 0.01; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
stop_all() { local n; for n in "${!PID_OF[@]}"; do stop_pid "${PID_OF[$n]}"; unset "PID_OF[$n]"; done; }
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  [[ -z ${OUT:-} ]] || { mkdir -p "$OUT" && cp "$WORK"/*.json "$OUT"/ 2>/dev/null || true; }
  if [[ ${KEEP:-0} == 1 || $rc != 0 ]]; then echo "work directory (logs, data): $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "api.sh: $*" >&2; exit 1; }
port_free() { ! (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# start_cluster <n> <repl>: durable (sync) nodes 1..n in one view, fresh data directories.
start_cluster() {
  local n=$1 repl=$2 i view addr
  view=$(view_of 1 "$n")
  for ((i = 1; i <= n; i++)); do
    addr=$(node_addr "$i")
    port_free "$addr" || die "something already listens on $addr"
    rm -rf "$WORK/data-$i"
    env ADDRESS="$addr" VIEW="$view" REPL_FACTOR="$repl" DATA_DIR="$WORK/data-$i" RUST_LOG="${RUST_LOG:-warn}" \
      DURABILITY=sync "$CAUSEWAY" serve >>"$WORK/node-$i.log" 2>&1 &
    PID_OF[n$i]=$!
  done
  for ((i = 1; i <= n; i++)); do
    "${PROBE[@]}" wait "$(node_addr "$i")" --ready --deadline 30 >/dev/null || die "node $i not ready (see $WORK/node-$i.log)"
  done
}

# bench <name> <args>...: causeway bench --json into $WORK/<name>.json.
bench() {
  local name=$1; shift
  "$CAUSEWAY" bench --concurrency "$CONC" --value-size "$VALUE_SIZE" --json "$@" >"$WORK/$name.json" 2>"$WORK/$name.err" ||
    die "bench $name ($*) failed: $(cat "$WORK/$name.err")"
}
hdr() { printf '\n== %s\n   (load average %s)\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

# Waits until the nodes' key-counts add up to <total> (every replica holds every key).
wait_replicated() { # <total> <addr>...
  local total=$1 sum a t0=$SECONDS; shift
  while :; do
    sum=0
    for a in "$@"; do sum=$((sum + $("${PROBE[@]}" count "$a"))); done
    [[ $sum -ge $total ]] && { echo "   replicas hold every key ($sum key copies) $((SECONDS - t0)) s after the preload"; return 0; }
    ((SECONDS - t0 < 300)) || { echo "   NOT replicated after 300 s: $sum of $total key copies"; return 0; }
    sleep 0.5
  done
}

# put_vs_batch <tag> <nodes>: single PUTs and batches alternated ROUNDS times, then sessions.
put_vs_batch() {
  local tag=$1 nodes=$2 r
  for ((r = 1; r <= ROUNDS; r++)); do
    bench "$tag-single-$r" --nodes "$nodes" --keys "$RW_KEYS" --read-ratio 0 --duration "$DURATION"
    report_line "$tag-single-$r"
    bench "$tag-batch-$r" --nodes "$nodes" --keys "$RW_KEYS" --read-ratio 0 --duration "$DURATION" --batch "$BATCH"
    report_line "$tag-batch-$r"
  done
  # Sessions: every connection carries its context, half reads, half writes.
  bench "$tag-sessions" --nodes "$nodes" --keys "$RW_KEYS" --read-ratio 0.5 --duration "$DURATION" --sessions
  report_line "$tag-sessions"
  bench "$tag-sessions-batch" --nodes "$nodes" --keys "$RW_KEYS" --read-ratio 0.5 --duration "$DURATION" --sessions --batch "$BATCH"
  report_line "$tag-sessions-batch"
}

report_line() { python3 "$HERE/api_report.py" line "$WORK/$1.json" "$1"; }

section_single() {
  hdr "single: 1 durable node; PUT only, $RW_KEYS keys, ${VALUE_SIZE}-byte values, -c$CONC, ${DURATION}s each: single PUTs vs batches of $BATCH, alternated $ROUNDS times; then sessions (read ratio 0.5)"
  start_cluster 1 1
  put_vs_batch single "$(node_addr 1)"
  stop_all
}

section_cluster() {
  hdr "cluster: 4 durable nodes, 2 shards x 2 replicas, load spread over all 4; same loads"
  start_cluster 4 2
  put_vs_batch cluster "$(view_of 1 4)"
  stop_all
}

section_list() {
  hdr "list: 1 durable node; preload $KEYS keys in batches of $BATCH (-c$CONC), then list them all, limit=1000, one cursor"
  start_cluster 1 1
  bench list-single-preload --nodes "$(node_addr 1)" --keys "$KEYS" --preload --batch "$BATCH" --duration 0
  report_line list-single-preload
  bench list-single --nodes "$(node_addr 1)" --keys "$KEYS" --duration 0 --list --list-limit 1000
  report_line list-single
  bench list-single-2 --nodes "$(node_addr 1)" --keys "$KEYS" --duration 0 --list --list-limit 1000
  report_line list-single-2
  stop_all
}

section_list-cluster() {
  hdr "list-cluster: 2 shards x 2 replicas; preload $KEYS keys in batches of $BATCH over all 4 nodes, wait until replicated, list from node 1"
  start_cluster 4 2
  bench list-cluster-preload --nodes "$(view_of 1 4)" --keys "$KEYS" --preload --batch "$BATCH" --duration 0
  report_line list-cluster-preload
  wait_replicated $((2 * KEYS)) $(for i in 1 2 3 4; do node_addr "$i"; done)
  bench list-cluster --nodes "$(node_addr 1)" --keys "$KEYS" --duration 0 --list --list-limit 1000
  report_line list-cluster
  bench list-cluster-2 --nodes "$(node_addr 1)" --keys "$KEYS" --duration 0 --list --list-limit 1000
  report_line list-cluster-2
  stop_all
}

# ---------------------------------------------------------------- main
if [[ ${NO_BUILD:-0} != 1 ]]; then
  echo "building the release binary ..."
  (cd "$ROOT" && cargo build --release -p causeway) || die "cannot build causeway"
fi
[[ -x $CAUSEWAY ]] || die "no causeway binary at $CAUSEWAY"
CAUSEWAY_SRC=$CAUSEWAY
cp "$CAUSEWAY" "$WORK/causeway" && CAUSEWAY=$WORK/causeway
"$CAUSEWAY" bench --help | grep -q -- --batch || die "$CAUSEWAY bench has no --batch (build it from this tree)"

dirty=""
[[ -z $(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null) ]] || dirty=" + uncommitted changes"
echo "Causeway API extensions benchmark: ${SECTIONS[*]}; ${DURATION} s per load figure; $(nproc) cores; $(date -u +%FT%TZ)"
echo "causeway at commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$dirty ($CAUSEWAY_SRC, built $(date -u -r "$CAUSEWAY_SRC" +%FT%TZ)); work: $WORK"
for s in "${SECTIONS[@]}"; do "section_$s"; done

printf '\n== summary (one run, side by side; load average now %s)\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$HERE/api_report.py" table "$WORK" "$BATCH"
