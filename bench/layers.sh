#!/usr/bin/env bash
# Layer cache and blob store benchmark: a directory (default: the bookworm stack's rootfs, built
# by `slipway host stack build bookworm --stacks-dir /tmp/slipway-test-stacks`) packed as a gzip
# and a zstd layer, then blob put/get throughput, a cache miss (fetch + verify + unpack), a hit,
# and 8 concurrent jobs wanting a new layer (one unpack). Results: docs/benchmarks.md.
#
#   bench/layers.sh [DIR]              # release build
#   PROFILE=dev bench/layers.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build -q --release -p slipway-host --example layer_bench
  BIN=target/release/examples/layer_bench
else
  cargo build -q -p slipway-host --example layer_bench
  BIN=target/debug/examples/layer_bench
fi
echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) cpus"
exec "$BIN" "$@"
