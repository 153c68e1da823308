#!/usr/bin/env bash
# Latency of `GET /apps` with N apps on SQLite (embedded mode): p50/p90/p99 of sequential requests
# over one keep-alive connection, measured by curl. Usage: bench/controller-list-apps.sh [APPS] [REQUESTS]
set -euo pipefail
APPS=${1:-1000}
REQUESTS=${2:-200}
cd "$(dirname "$0")/.."
cargo build --release -q -p slipway
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
SLIPWAY_CONFIG=$work/config.toml ./target/release/slipway server --data-dir "$work/data" --listen 127.0.0.1:0 --no-register \
  >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 50); do grep -q Listening "$work/out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^Listening on //p' "$work/out")
key=$(cat "$work/data/api-key")
echo "creating $APPS apps..."
seq "$APPS" | xargs -P 4 -I{} curl -sf -o /dev/null -H "Authorization: Bearer $key" \
  -H 'content-type: application/json' -d '{"name":"bench-app-{}"}' "$url/apps"
count=$(curl -sf -H "Authorization: Bearer $key" "$url/apps" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
bytes=$(curl -sf -H "Authorization: Bearer $key" "$url/apps" | wc -c)
# One curl, REQUESTS URLs: one kept-alive connection; -w prints each transfer's total time.
args=()
for _ in $(seq "$REQUESTS"); do args+=(-o /dev/null "$url/apps"); done
curl -sf -H "Authorization: Bearer $key" -w '%{time_total}\n' "${args[@]}" > "$work/times"
python3 - "$work/times" "$count" "$bytes" <<'PY'
import sys
t = sorted(float(x) * 1000 for x in open(sys.argv[1]))
q = lambda p: t[min(len(t) - 1, int(p * len(t)))]
print(f"GET /apps with {sys.argv[2]} apps ({int(sys.argv[3]) // 1024} KiB of JSON), {len(t)} requests: "
      f"p50 {q(0.5):.2f} ms, p90 {q(0.9):.2f} ms, p99 {q(0.99):.2f} ms")
PY
echo "server RSS after: $(grep VmRSS /proc/$pid/status | awk '{print $2/1024 " MB"}')"
