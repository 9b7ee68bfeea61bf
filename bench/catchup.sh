#!/usr/bin/env bash
# Catch-up benchmark: how fast a replica that was cut off receives a large backlog.
#
# Builds the release binary, starts 2 durable nodes of one shard (REPL_FACTOR 2) on
# loopback ($NET.1 and $NET.2, port 13800), cuts node 2 off with iptables DROP rules,
# writes KEYS values of VALUE_BYTES to node 1 with WRITERS concurrent writers (default
# 6,000 x 200 KiB = 1.2 GB, 8 writers), heals, and measures the time until node 2 holds
# every key. Prints the catch-up rate (MB/s, 10^6 bytes of values) and the slowest PUT
# answer. Needs root (iptables). Stops by itself (DEADLINE seconds for the catch-up) and
# removes its iptables rules and processes on exit, including on Ctrl-C.
#
#   bench/catchup.sh                         # target: >= 100 MB/s
#   KEYS=1000 bench/catchup.sh               # smaller backlog
#   NO_BUILD=1 DURABILITY=os bench/catchup.sh
#
# Options (environment): NET (127.45.0), KEYS (6000), VALUE_BYTES (204800), WRITERS (8),
# DURABILITY (sync), DEADLINE (300), NO_BUILD=1, KEEP=1 (keep the work directory),
# CAUSEWAY_BIN.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
NET=${NET:-127.45.0}
KEYS=${KEYS:-6000}
VALUE_BYTES=${VALUE_BYTES:-204800}
WRITERS=${WRITERS:-8}
DURABILITY=${DURABILITY:-sync}
DEADLINE=${DEADLINE:-300}
CAUSEWAY=${CAUSEWAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/causeway}
N1=$NET.1:13800
N2=$NET.2:13800
COMMENT=causeway-catchup-bench
WORK=$(mktemp -d /tmp/causeway-catchup.XXXXXX)
PIDS=()

rules() { # <-I|-D>: DROP both ways between the two node addresses
  local a=$1
  iptables "$a" INPUT -s "$NET.1" -d "$NET.2" -j DROP -m comment --comment "$COMMENT" 2>/dev/null &&
    iptables "$a" INPUT -s "$NET.2" -d "$NET.1" -j DROP -m comment --comment "$COMMENT" 2>/dev/null
}
heal() {
  while iptables -D INPUT -s "$NET.1" -d "$NET.2" -j DROP -m comment --comment "$COMMENT" 2>/dev/null; do :; done
  while iptables -D INPUT -s "$NET.2" -d "$NET.1" -j DROP -m comment --comment "$COMMENT" 2>/dev/null; do :; done
}
cleanup() {
  local rc=$?
  heal
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ ${KEEP:-0} == 1 ]]; then echo "work directory: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "catchup: $*" >&2; exit 1; }

command -v iptables >/dev/null || die "needs iptables (apt-get install iptables) and root"
if [[ ${NO_BUILD:-0} != 1 ]]; then
  echo "building the release binary ..."
  (cd "$ROOT" && cargo build --release -p causeway) || die "cannot build causeway"
fi
[[ -x $CAUSEWAY ]] || die "no causeway binary at $CAUSEWAY"
cp "$CAUSEWAY" "$WORK/causeway"

for i in 1 2; do
  ADDRESS=$NET.$i:13800 VIEW=$N1,$N2 REPL_FACTOR=2 DATA_DIR=$WORK/data-$i DURABILITY=$DURABILITY \
    RUST_LOG=${RUST_LOG:-warn} "$WORK/causeway" serve >>"$WORK/node-$i.log" 2>&1 &
  PIDS+=($!)
done
for a in "$N1" "$N2"; do
  python3 "$HERE/probe.py" wait "$a" --ready --deadline 30 >/dev/null || die "$a did not start (see $WORK)"
done
rules -I || die "iptables failed (run as root)"
echo "catch-up: 2 replicas of one shard ($N1, $N2), durability $DURABILITY; $N2 cut off"
echo "writing $KEYS values of $VALUE_BYTES bytes to $N1 with $WRITERS writers (load average $(cut -d' ' -f1-3 /proc/loadavg)) ..."

# Writes, then heals and waits for node 2; all timing in one process.
python3 - "$N1" "$N2" "$KEYS" "$VALUE_BYTES" "$WRITERS" "$DEADLINE" "$NET" "$COMMENT" <<'PY'
import http.client, json, subprocess, sys, threading, time

n1, n2, keys, size, writers, deadline, net, comment = sys.argv[1:9]
keys, size, writers, deadline = int(keys), int(size), int(writers), float(deadline)

def conn(addr):
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=30)

def request(c, method, path, body=b"{}"):
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, r.read()

filler = b"v" * (size - 8)
lat, errors, lock = [], [], threading.Lock()

def writer(w):
    c = conn(n1)
    mine = []
    for i in range(w, keys, writers):
        body = b'{"value":"%08d' % i + filler + b'","causal-context":{}}'
        t = time.monotonic()
        try:
            status, raw = request(c, "PUT", f"/kv-store/keys/c{i}", body)
        except OSError as e:
            status, raw, c = None, str(e).encode(), conn(n1)
        mine.append(time.monotonic() - t)
        if status not in (200, 201):
            with lock:
                errors.append((i, status, raw[:200]))
    with lock:
        lat.extend(mine)

t0 = time.monotonic()
threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
for t in threads: t.start()
for t in threads: t.join()
load_s = time.monotonic() - t0
total = keys * size
lat.sort()
print(f"  load: {keys} PUTs, {total / 1e6:.0f} MB in {load_s:.1f} s ({total / 1e6 / load_s:.0f} MB/s), "
      f"{len(errors)} errors; PUT latency p50 {lat[len(lat) // 2] * 1e3:.1f} ms, "
      f"p99 {lat[int(len(lat) * 0.99)] * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms")
for e in errors[:5]:
    print(f"  error: {e}")

def count(addr):
    try:
        c = conn(addr)
        status, raw = request(c, "GET", "/kv-store/key-count")
        c.close()
        return json.loads(raw)["key-count"] if status == 200 else None
    except (OSError, ValueError):
        return None

def behind(addr, peer):
    try:
        c = conn(addr)
        status, raw = request(c, "GET", "/metrics")
        c.close()
    except OSError:
        return None
    out = {}
    for line in raw.decode().splitlines():
        for name in ("versions", "bytes"):
            if line.startswith(f'causeway_replication_behind_{name}{{peer="{peer}"}} '):
                out[name] = int(float(line.split()[-1]))
    return out

before = count(n2)
print(f"  before healing: {n2} holds {before} keys; {n1} reports it behind by {behind(n1, n2)}")
if before != 0:
    print("  the partition did not hold", file=sys.stderr)
    sys.exit(1)

healed = time.monotonic()
for src, dst in ((net + ".1", net + ".2"), (net + ".2", net + ".1")):
    while subprocess.run(["iptables", "-D", "INPUT", "-s", src, "-d", dst, "-j", "DROP", "-m", "comment",
                          "--comment", comment], stderr=subprocess.DEVNULL).returncode == 0:
        pass
first = None
while True:
    n = count(n2)
    now = time.monotonic()
    if n and first is None:
        first = now
    if n == keys:
        break
    if now - healed > deadline:
        print(f"  NOT caught up {deadline:.0f} s after healing: {n2} holds {n} of {keys} keys", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.02)
secs = time.monotonic() - healed
# Values arrived whole (a sample).
c = conn(n2)
for i in (0, keys // 2, keys - 1):
    status, raw = request(c, "GET", f"/kv-store/keys/c{i}")
    v = json.loads(raw).get("value", "")
    if status != 200 or len(v) != size or not v.startswith("%08d" % i):
        print(f"  c{i} on {n2}: {status}, {len(v)} bytes", file=sys.stderr)
        sys.exit(1)
streaming = secs - (first - healed)
print(f"  caught up: {keys} keys, {total / 1e6:.0f} MB in {secs:.2f} s after healing "
      f"(first key after {first - healed:.2f} s)")
print(f"  catch-up rate {total / 1e6 / secs:.0f} MB/s from healing "
      f"({total / 1e6 / streaming:.0f} MB/s once the first key arrived)  target >= 100 MB/s  "
      f"{'PASS' if total / 1e6 / secs >= 100 else 'MISS'}")
print(f"  slowest PUT answer {lat[-1] * 1e3:.1f} ms")
time.sleep(1)
print(f"  after: {n1} reports {n2} behind by {behind(n1, n2)}")
PY
