#!/usr/bin/env bash
# Stop time of a plain `busybox httpd` web process (no signal handler): `slipway scale web=3`
# then the wall time of `slipway scale web=0` and of a deploy (`env set`, all-at-once), once
# with the container init (tini, the default) and once with `--container-init none` (the command
# is PID 1, ignores SIGTERM, and is SIGKILLed after the 30 s grace); with tini also once with
# the router, where up waits for `backend-up` and stops wait for `backend-drained`.
# Needs root (runc). Usage: sudo bench/stop-time.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cargo build -q -p slipway
bin=$root/target/debug/slipway
net=slwbst0
run_one() { # $1: --container-init value; $2: with the router (the zero-downtime gate) or not
  work=$(mktemp -d)
  if [ "$2" = router ]; then
    routing="--router-ip 127.0.0.1 --http-port 0 --https-port 0"
  else
    routing=--no-router
  fi
  export SLIPWAY_CONFIG=$work/config.toml HOME=$work
  "$bin" server --data-dir "$work/data" --listen 127.0.0.1:0 --bridge "$net" --nft-table "$net" \
    --subnet 100.217.0.0/24 --cgroup-parent slipway-bench-stop --stacks-dir /tmp/slipway-test-stacks \
    --discovery-listen 127.0.0.1:0 --router-admin 127.0.0.1:0 $routing \
    --container-init "$1" >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 100); do grep -q Listening "$work/out" 2>/dev/null && break; sleep 0.1; done
  cd "$work"
  "$bin" create stop >/dev/null
  echo '{"processes": {"web": {"args": ["httpd", "-f", "-p", "8080"]}}}' >"$work/release.json"
  "$bin" -a stop release add "$work/release.json" >/dev/null
  "$bin" -a stop scale web=3 >/dev/null
  t0=$(date +%s.%N); "$bin" -a stop env set A=1 >/dev/null; t1=$(date +%s.%N)
  "$bin" -a stop scale web=0 >/dev/null; t2=$(date +%s.%N)
  printf '| %s | %s | %.2f s | %.2f s |\n' "$1" "$2" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  for id in $(runc --root "$work/data/host/runc" list -q 2>/dev/null); do
    runc --root "$work/data/host/runc" delete -f "$id" >/dev/null 2>&1 || true
  done
  for d in "$work"/data/host/containers/*/bundle/rootfs; do umount -l "$d" 2>/dev/null || true; done
  ip link del "$net" 2>/dev/null || true
  nft delete table ip "$net" 2>/dev/null || true
  for c in /sys/fs/cgroup/*/slipway-bench-stop; do
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  cd "$root"; rm -rf "$work"
}
echo "| container init | router | deploy of web=3 (env set) | scale web=3 → 0 |"
echo "|---|---|---|---|"
run_one /usr/bin/tini-static none
run_one /usr/bin/tini-static router
run_one none none
