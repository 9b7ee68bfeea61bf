#!/usr/bin/env bash
# Turns one `perf record -g` data file (bench/suite.sh PROFILE=1 writes perf-<phase>.data) into
# a flame graph SVG and a short text account of where the time goes.
#
# Usage: bench/flame.sh <perf.data> <out.svg> [title]
#   writes <out.svg>, <out>.folded (collapsed stacks) and <out>.txt (top functions by self
#   time, and the share of samples whose stack contains each cost area).
# Needs perf (Debian linux-perf) and inferno (`cargo install inferno`: inferno-collapse-perf,
# inferno-flamegraph); falls back to Brendan Gregg's stackcollapse-perf.pl / flamegraph.pl if
# they are on PATH (or in $FLAMEGRAPH_DIR). Environment: MINWIDTH (flame graph frames narrower
# than this many pixels are left out, default 0.3; keeps the SVG small).
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
data=$1 svg=$2 title=${3:-$(basename "$1" .data)}
base=${svg%.svg}
PATH=$PATH:${FLAMEGRAPH_DIR:-/nonexistent}:$HOME/.cargo/bin

if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
  collapse=(inferno-collapse-perf --all) # --all: keep kernel and JIT annotations
  graph=(inferno-flamegraph --minwidth "${MINWIDTH:-0.3}" --title "$title" --countname samples)
elif command -v stackcollapse-perf.pl >/dev/null && command -v flamegraph.pl >/dev/null; then
  collapse=(stackcollapse-perf.pl --all)
  graph=(flamegraph.pl --minwidth "${MINWIDTH:-0.3}" --title "$title" --countname samples)
else
  echo "flame.sh: neither inferno (cargo install inferno) nor FlameGraph's perl scripts found" >&2
  exit 1
fi

perf script -i "$data" 2>/dev/null | "${collapse[@]}" >"$base.folded"
[[ -s $base.folded ]] || { echo "flame.sh: no stacks in $data" >&2; exit 1; }
"${graph[@]}" <"$base.folded" >"$svg"

python3 - "$base.folded" "$title" >"$base.txt" <<'PY'
import collections, re, sys

# Cost areas: a sample counts for an area when any frame of its stack matches (so areas
# overlap and do not add up to 100%). Order is the order printed.
AREAS = [
    ("fsync / fdatasync (disk flush)", r"fdatasync|fsync|jbd2|file_write_and_wait|blkdev_issue_flush"),
    ("storage engine (fjall / lsm-tree)", r"\bfjall::|lsm_tree::|value_log::"),
    ("committer (write batching thread)", r"committer"),
    ("socket reads and writes (kernel)", r"tcp_sendmsg|tcp_recvmsg|sock_sendmsg|sock_recvmsg|__sys_sendto|__sys_recvfrom|sys_writev|sys_readv|ksys_write|ksys_read|tcp_v4_rcv|__tcp_transmit_skb"),
    ("epoll / scheduler wake-ups (kernel)", r"epoll_wait|ep_poll|do_epoll|futex|try_to_wake_up|schedule\b|__schedule"),
    ("HTTP (hyper: parse, encode, dispatch)", r"\bhyper::|httparse::|\bh2::"),
    ("axum / tower routing and extractors", r"\baxum::|\btower::|axum_core::"),
    ("JSON (serde_json)", r"serde_json::"),
    ("binary encoding (postcard / bincode)", r"postcard::|bincode::"),
    ("hashing", r"[Hh]ash(er|ing|Map|brown)?::|sip|ahash|xxh|fxhash|crc32"),
    ("allocation (malloc / free)", r"\bmalloc\b|\bfree\b|_int_malloc|_int_free|cfree|realloc|__rust_alloc|__rust_dealloc|__rust_realloc|\bmi_|je_|alloc::raw_vec|sdallocx"),
    ("memcpy / memmove", r"memcpy|memmove|__memset"),
    ("tokio runtime", r"tokio::runtime::"),
    ("tracing / logging", r"\btracing::|tracing_subscriber::|tracing_core::"),
]
total = 0
self_time = collections.Counter()
area = collections.Counter()
threads = collections.Counter()
kernel = 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip("\n").rpartition(" ")
    n = int(n)
    total += n
    frames = stack.split(";")
    threads[re.sub(r"[-_ ]?\d+$", "", frames[0])] += n
    leaf = frames[-1]
    self_time[leaf] += n
    if leaf.endswith("_[k]"):
        kernel += n
    for name, pat in AREAS:
        if re.search(pat, stack):
            area[name] += n
print(f"{sys.argv[2]}: {total} samples; {kernel / total:.0%} of them in the kernel")
print("\nby thread (comm):")
for t, n in threads.most_common(8):
    print(f"  {n / total:6.1%}  {t}")
print("\ncost areas (share of samples with a matching frame on the stack; areas overlap):")
for name, _ in AREAS:
    if area[name]:
        print(f"  {area[name] / total:6.1%}  {name}")
print("\ntop 25 functions by self time:")
for f, n in self_time.most_common(25):
    print(f"  {n / total:6.1%}  {f[:150]}")
PY
printf '%s: %s (%s KB), %s\n' "$title" "$svg" "$(( $(stat -c %s "$svg") / 1024 ))" "$base.txt"
