#!/usr/bin/env bash
# End-to-end check of the Causeway image: a 6-node cluster (3 shards x 2) in Docker, driven
# only through ports published on 127.0.0.1.
#
#  1. builds the image (docker/build.sh; NO_BUILD=1 reuses causeway:dev) and starts the
#     cluster (docker-compose.yml, or plain `docker run` on a `docker network create` network
#     when docker-compose is missing);
#  2. writes keys through every node and reads each back through every node;
#  3. cuts n2 off (`docker network disconnect`): writes and reads through the other nodes keep
#     working, including writes to n2's shard, which n1 accepts alone;
#  4. reconnects n2 and waits until n1 and n2 (shard 1) have the same key-count and the same
#     values for every key written;
#  5. tears everything down (also on failure or Ctrl-C). Exits non-zero on any failure.
#
# Without docker it fails, unless DOCKER_TEST_OPTIONAL=1 (then it says SKIPPED and exits 0).
# Ports: 127.0.0.1:<CAUSEWAY_PORT_PREFIX>1 .. 6 (prefix default 2380: 23801 .. 23806).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CAUSEWAY_PORT_PREFIX=${CAUSEWAY_PORT_PREFIX:-2380}
IMAGE=causeway:dev
NET=causeway-net
PROJECT=causeway-test
DEADLINE=${DEADLINE:-60}

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }
port() { echo "${CAUSEWAY_PORT_PREFIX}$1"; }
ip_of() { echo "10.10.0.$(($1 + 1))"; }

if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
  if [[ ${DOCKER_TEST_OPTIONAL:-0} == 1 ]]; then echo "SKIPPED: docker is not available"; exit 0; fi
  fail "docker is not available (set DOCKER_TEST_OPTIONAL=1 to skip)"
fi
COMPOSE=()
if command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose -p "$PROJECT" -f "$ROOT/docker-compose.yml")
fi

teardown() {
  if [[ ${#COMPOSE[@]} -gt 0 ]]; then
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  local i
  for i in 1 2 3 4 5 6; do docker rm -f -v "causeway-n$i" >/dev/null 2>&1 || true; done
  docker network rm "$NET" >/dev/null 2>&1 || true
}
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ $rc != 0 ]]; then
    echo "--- last log lines of each node:" >&2
    local i
    for i in 1 2 3 4 5 6; do docker logs --tail 5 "causeway-n$i" 2>&1 | sed "s/^/n$i: /" >&2 || true; done
  fi
  teardown
  [[ $rc == 0 ]] && echo "PASS: docker cluster test" || echo "FAIL: docker cluster test (exit $rc)" >&2
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# kv <node> <METHOD> <path> [json body] -> prints "<status> <json>"; "000 {}" when unreachable.
kv() {
  local out
  out=$(curl -sS -m 5 -o - -w '\n%{http_code}' -X "$2" -H 'Content-Type: application/json' \
    -d "${4:-{\}}" "http://127.0.0.1:$(port "$1")$3" 2>/dev/null) || { echo "000 {}"; return 0; }
  echo "${out##*$'\n'} ${out%$'\n'*}"
}
field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"; }

# poll <seconds> <command...>: until the command succeeds.
poll() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}
ready() { [[ $(kv "$1" GET /ready) == 200* ]]; }

# put <node> <key> <value>: asserts 200/201; prints whether the key lives on the node's own
# shard ("local") or was proxied ("proxied").
put() {
  local r status body
  r=$(kv "$1" PUT "/kv-store/keys/$2" "{\"value\": \"$3\", \"causal-context\": {}}")
  status=${r%% *}; body=${r#* }
  [[ $status == 200 || $status == 201 ]] || fail "PUT $2 via n$1 answered $status $body"
  [[ -z $(field "$body" address) ]] && echo local || echo proxied
}
# expect <node> <key> <value>: a GET through <node> answers 200 with that value.
expect() {
  local r status body
  r=$(kv "$1" GET "/kv-store/keys/$2")
  status=${r%% *}; body=${r#* }
  [[ $status == 200 && $(field "$body" value) == "$3" ]] || fail "GET $2 via n$1: want 200 '$3', got $status $body"
}
key_count() { field "$(kv "$1" GET /kv-store/key-count | cut -d' ' -f2-)" key-count; }

# ------------------------------------------------------------------ build and start
teardown
if [[ ${NO_BUILD:-0} == 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  step "using the existing image $IMAGE"
else
  step "building $IMAGE"
  "$ROOT/docker/build.sh" "$IMAGE"
fi

step "starting 6 nodes (3 shards x 2) on $NET, published on 127.0.0.1:$(port 1)..$(port 6)"
if [[ ${#COMPOSE[@]} -gt 0 ]]; then
  "${COMPOSE[@]}" up -d
else
  docker network create --subnet 10.10.0.0/16 "$NET" >/dev/null
  VIEW=$(for i in 1 2 3 4 5 6; do printf '%s:13800,' "$(ip_of $i)"; done)
  for i in 1 2 3 4 5 6; do
    docker run -d --name "causeway-n$i" --network "$NET" --ip "$(ip_of $i)" \
      -p "127.0.0.1:$(port $i):13800" -e ADDRESS="$(ip_of $i):13800" -e VIEW="${VIEW%,}" \
      -e REPL_FACTOR=2 "$IMAGE" >/dev/null
  done
fi
for i in 1 2 3 4 5 6; do poll "$DEADLINE" ready "$i" || fail "n$i not ready after ${DEADLINE}s"; done
shards=$(field "$(kv 1 GET /kv-store/shards | cut -d' ' -f2-)" shards)
[[ $shards == "['1', '2', '3']" ]] || fail "want shards 1, 2, 3; got $shards"
echo "all nodes ready; shards $shards"

# ------------------------------------------------------------------ write and read
step "writing 30 keys through all nodes, reading each back through every node"
for k in $(seq 1 30); do put $(((k % 6) + 1)) "k$k" "v$k" >/dev/null; done
for k in $(seq 1 30); do for n in 1 2 3 4 5 6; do expect "$n" "k$k" "v$k"; done; done
echo "ok: 30 keys x 6 nodes"

# ------------------------------------------------------------------ partition
step "cutting n2 (shard 1 with n1) off the network"
docker network disconnect "$NET" causeway-n2
[[ $(docker inspect -f '{{len .NetworkSettings.Networks}}' causeway-n2) == 0 ]] || fail "n2 still has a network after the disconnect"
[[ $(kv 2 GET /health) == 000* ]] || fail "n2 still answers after the disconnect"
shard1=()
for k in $(seq 1 30); do
  [[ $(put 1 "k$k" "cut$k") == local ]] && shard1+=("k$k")
done
[[ ${#shard1[@]} -gt 0 ]] || fail "no key of 30 landed on shard 1"
for k in $(seq 31 60); do put $(((k % 4) + 3)) "k$k" "cut$k" >/dev/null; done
for k in $(seq 1 60); do expect 1 "k$k" "cut$k"; expect 4 "k$k" "cut$k"; done
echo "ok: with n2 cut off, 60 writes through n1, n3..n6 accepted (${#shard1[@]} of them on n2's shard, by n1 alone) and read back through n1 and n4"

# ------------------------------------------------------------------ heal
step "reconnecting n2; waiting for shard 1 to converge"
docker network connect --ip "$(ip_of 2)" "$NET" causeway-n2
same_count() {
  local a b
  a=$(key_count 1); b=$(key_count 2)
  [[ -n $a && $a == "$b" ]]
}
# n2 answers every key k1..k60 with its latest value (one pass, one connection).
same_values() {
  python3 - "$(port 2)" <<'PY'
import http.client, json, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
for k in range(1, 61):
    conn.request("GET", f"/kv-store/keys/k{k}", body="{}", headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = json.loads(r.read())
    if r.status != 200 or body.get("value") != f"cut{k}":
        sys.exit(1)
PY
}
t0=$SECONDS
echo "right after reconnecting: n1 holds $(key_count 1) keys, n2 $(key_count 2)"
poll "$DEADLINE" same_count || fail "key-count of n1 ($(key_count 1)) and n2 ($(key_count 2)) differ after ${DEADLINE}s"
t_count=$((SECONDS - t0))
poll "$DEADLINE" same_values || fail "n2 does not serve every latest value after ${DEADLINE}s"
for k in "${shard1[@]}"; do
  r=$(kv 2 GET "/kv-store/keys/$k")
  [[ -z $(field "${r#* }" address) ]] || fail "n2 proxied $k, a key of its own shard: ${r#* }"
done
echo "ok: n1 and n2 both hold $(key_count 2) keys (equal after ${t_count} s) and n2 serves every latest value, the ${#shard1[@]} shard-1 keys written while it was cut by itself (within $((SECONDS - t0)) s)"
