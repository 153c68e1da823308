#!/usr/bin/env bash
# Cross-host requests through the router, over the overlay (issue 18): three `slipway server`s
# in network namespaces on a test LAN (etcd and PostgreSQL started by the harness), for
# `--overlay vxlan` and then `host-gw`; wrk (keep-alive) through host 0's router to a job on
# host 0 and to one on host 2, alternating, for a 12-byte and a 1 MiB page; the LAN's and the
# VXLAN device's MTU; failover (host 2's cable pulled → its job up elsewhere, router answering).
# The benchmark is the test crates/cli/tests/it/cluster/net_bench.rs run longer
# (SLIPWAY_BENCH=1); it prints a markdown table. Results: docs/cluster.md "Measurements".
# Needs root, wrk, etcd, PostgreSQL (scripts/install-deps installs them).
#
#   sudo bench/cluster-net.sh                 # release build; D=5 s a run, R=3 rounds, C=8
#   sudo D=10 R=5 C=32 bench/cluster-net.sh
#   sudo BENCH_PROFILE=debug bench/cluster-net.sh   # quicker to build, not for numbers
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
profile=()
[ "${BENCH_PROFILE:-release}" = release ] && profile=(--release)
export SLIPWAY_BENCH=1 D="${D:-5}" R="${R:-3}" C="${C:-8}"
out=$(mktemp /tmp/slipway-bench-cluster-net.XXXXXX)
trap 'rm -f "$out"' EXIT
cargo test -q "${profile[@]}" -p slipway --test it cluster::net_bench -- --nocapture --test-threads 1 2>&1 | tee "$out"
echo
echo "== bench/cluster-net.sh (D=${D}s R=$R C=$C, ${BENCH_PROFILE:-release}), load: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -E '^(wrk |\||vxlan|host-gw)' "$out" | grep -v ': cluster up\|: done after'
