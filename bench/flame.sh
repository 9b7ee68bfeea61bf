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
  graph=(inferno-flamegraph --minwidth "${MINWIDTH:-0.3}" --title "$title" --countname ns)
elif command -v stackcollapse-perf.pl >/dev/null && command -v flamegraph.pl >/dev/null; then
  collapse=(stackcollapse-perf.pl --all)
  graph=(flamegraph.pl --minwidth "${MINWIDTH:-0.3}" --title "$title" --countname ns)
else
  echo "flame.sh: neither inferno (cargo install inferno) nor FlameGraph's perl scripts found" >&2
  exit 1
fi

perf script -i "$data" 2>/dev/null | "${collapse[@]}" >"$base.folded"
[[ -s $base.folded ]] || { echo "flame.sh: no stacks in $data" >&2; exit 1; }
"${graph[@]}" <"$base.folded" >"$svg"

python3 - "$base.folded" "$title" >"$base.txt" <<'PY'
import collections, re, sys

# Exclusive areas: each sample goes to the area of the frame nearest its leaf that matches one
# (frames matching none, such as memcmp or BTreeMap internals, pass the sample on to their
# caller). The first pattern that matches a frame wins. The areas add up to 100%.
AREAS = [
    ("context switch", r"finish_task_switch|__schedule|^schedule"),
    ("disk flush and block I/O (kernel)", r"fdatasync|fsync|jbd2|blk_|virtqueue|vp_notify|iowrite16|io_schedule|folio_wait|bit_wait_io|submit_bio|file_write_and_wait"),
    ("file writes to the page cache (kernel)", r"generic_perform_write|ext4_|filemap_|copy_page_from_iter|vfs_write_\[k\]$"),
    ("loopback TCP/IP and sockets (kernel)", r"tcp_|sock_|inet_|^ip_|ipt_|nf_|netif|net_rx|skb|loopback|dev_queue_xmit|sys_sendto|sys_recvfrom|softirq|napi|_copy_to_iter|_copy_from_iter|vfs_writev|vfs_readv|do_writev|do_readv|sys_writev|sys_readv|ksys_read"),
    ("futex (kernel)", r"futex"),
    ("epoll (kernel)", r"epoll|ep_poll|ep_send|ep_item"),
    ("syscall entry/exit, timers, other kernel", r"_\[k\]$"),
    ("allocation (malloc / free)", r"malloc|_int_free|^__GI___libc_free|^cfree|tcache_|unlink_chunk|__rust_alloc|__rust_dealloc|__rust_realloc|realloc|sysmalloc"),
    ("storage engine (fjall, lsm-tree, its skiplist memtable)", r"fjall::|lsm_tree::|crossbeam_skiplist|crossbeam_epoch|value_log::|byteview::"),
    ("JSON (serde_json)", r"serde_json::"),
    ("hashing / hash maps", r"[Hh]ash|sip|ahash|xxh|crc32"),
    ("tracing and metrics", r"tracing|causeway_server::metrics|prometheus|metrics::"),
    ("Causeway committer (node::committer)", r"causeway_server::node::committer"),
    ("Causeway state and index (core state, changes)", r"causeway_core::(state|changes)|causeway_server::node::state"),
    ("Causeway causality (causal::)", r"causeway_core::causal"),
    ("Causeway API handlers (api::)", r"causeway_server::api"),
    ("Causeway, other", r"causeway(_server|_core)?::"),
    ("HTTP (hyper, httparse, http)", r"hyper::|httparse|\bhttp::|h2::"),
    ("axum / tower", r"axum|tower"),
    ("tokio runtime, channels, futures", r"tokio::|futures_|mio::"),
]
# Context switches by what the thread was waiting for.
SWITCH = [("futex: thread hand-off / lock", r"futex"), ("epoll: idle, waiting for sockets", r"epoll"),
          ("waiting for disk I/O", r"io_schedule|folio_wait|bit_wait_io|jbd2|fdatasync|fsync"),
          ("preempted / returning from a syscall or interrupt", r"")]
# Inclusive: share of samples with a matching frame anywhere on the stack (these overlap).
INCLUSIVE = [
    ("fdatasync / fsync", r"fdatasync|fsync"),
    ("storage engine (fjall / lsm-tree)", r"fjall::|lsm_tree::"),
    ("committer (causeway_server::node::committer)", r"causeway_server::node::committer"),
    ("JSON (serde_json)", r"serde_json::"),
    ("HTTP (hyper)", r"hyper::"),
]
compiled = [(n, re.compile(p)) for n, p in AREAS]
total = 0
excl, incl, self_time, threads, switch, causeway_fn = (collections.Counter() for _ in range(6))
kernel = 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip("\n").rpartition(" ")
    n = int(n)
    total += n
    frames = stack.split(";")
    threads[re.sub(r"[-_ ]?\d+$", "", frames[0])] += n
    self_time[frames[-1]] += n
    if frames[-1].endswith("_[k]"):
        kernel += n
    area = "other"
    for f in reversed(frames[1:]):
        hit = next((name for name, rx in compiled if rx.search(f)), None)
        if hit:
            area = hit
            break
    excl[area] += n
    if area == "context switch":
        for name, pat in SWITCH:
            if re.search(pat, stack):
                switch[name] += n
                break
    for name, pat in INCLUSIVE:
        if re.search(pat, stack):
            incl[name] += n
    for f in set(frames):
        if re.match(r"causeway(_server|_core)?::", f) and "{{closure}}" not in f:
            causeway_fn[f] += n
pct = lambda n: f"{n / total:6.1%}"
# perf's cpu-clock samples are weighted by their period in ns, so the totals are CPU time.
print(f"{sys.argv[2]}: {total / 1e9:.2f} s of CPU sampled; {kernel / total:.0%} of it in the kernel")
print("\nby thread (comm):")
for t, n in threads.most_common(8):
    print(f"  {pct(n)}  {t}")
print("\nwhere the CPU goes (each sample to the area of the frame nearest the leaf; adds up to 100%):")
for name, n in excl.most_common():
    print(f"  {pct(n)}  {name}")
    if name == "context switch":
        for s, m in switch.most_common():
            print(f"          {pct(m)}  {s}")
print("\ninclusive (a matching frame anywhere on the stack; overlapping):")
for name, _ in INCLUSIVE:
    print(f"  {pct(incl[name])}  {name}")
print("\ntop 15 Causeway functions, inclusive:")
for f, n in causeway_fn.most_common(15):
    print(f"  {pct(n)}  {f[:150]}")
print("\ntop 20 functions by self time:")
for f, n in self_time.most_common(20):
    print(f"  {pct(n)}  {f[:150]}")
PY
printf '%s: %s (%s KB), %s\n' "$title" "$svg" "$(( $(stat -c %s "$svg") / 1024 ))" "$base.txt"
