#!/usr/bin/env bash
# Job start benchmark: create → port answers for a busybox httpd job through the host agent,
# next to raw `runc run -d` of the same bundle, median of N runs (default 20); plus the per-job
# memory of the agent side with M idle jobs (default 50). Needs root, runc, busybox-static,
# nftables, iproute2 (scripts/install-deps). Results: docs/benchmarks.md.
#
#   sudo bench/job-start.sh              # release build
#   PROFILE=dev N=20 M=50 bench/job-start.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build -q --release -p slipway-host --example job_start_bench
  BIN=target/release/examples/job_start_bench
else
  cargo build -q -p slipway-host --example job_start_bench
  BIN=target/debug/examples/job_start_bench
fi
echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) cpus, $(runc --version | head -1)"
exec "$BIN"
