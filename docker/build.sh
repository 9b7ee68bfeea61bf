#!/usr/bin/env bash
# Builds the Causeway image with no base image to pull: a statically linked glibc build of
# `causeway` (target/static), stripped, then `docker build -t causeway:dev` with a build
# context of just the Dockerfile and that binary (the repository's target/ is gigabytes).
#
# Usage: docker/build.sh [image tag, default causeway:dev]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAG=${1:-causeway:dev}
TRIPLE=x86_64-unknown-linux-gnu
cd "$ROOT"

echo "building a static causeway ($TRIPLE, +crt-static) into target/static ..."
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release -p causeway --target "$TRIPLE" --target-dir target/static
BIN=target/static/$TRIPLE/release/causeway
# (ldd answers "statically linked" with success for static-pie too, so ask the ELF itself.)
if readelf -l "$BIN" | grep -q INTERP || readelf -d "$BIN" | grep -q NEEDED; then
  echo "error: $BIN is dynamically linked:" >&2
  readelf -d "$BIN" | grep NEEDED >&2
  exit 1
fi
strip -o target/static/causeway "$BIN"
echo "static binary: target/static/causeway ($(du -h target/static/causeway | cut -f1))"

command -v docker >/dev/null || { echo "error: docker is not installed" >&2; exit 1; }
# The same paths as `docker build .` would see, without sending target/ as context.
tar -cf - Dockerfile target/static/causeway | docker build -t "$TAG" -
echo "built image $TAG"
