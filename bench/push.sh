#!/usr/bin/env bash
# git push → serving, for a small Procfile app (busybox httpd on the busybox stack): the first
# push and a second push with a change (no dependency change), each timed from `git push` until
# the router serves the new content; next to the floor measured in the same run: a plain
# `git push` to a local bare repo + the same buildpack's bin/compile on a checkout + starting the
# same process and waiting for its first HTTP 200.
# Needs root (runc). Usage: sudo bench/push.sh [ROUNDS]   (default 5 second pushes)
# The slug runner and stack come from the binary; the floor runs buildpacks/procfile from the tree.
set -euo pipefail
ROUNDS=${1:-5}
cd "$(dirname "$0")/.."
root=$PWD
# SLIPWAY_BIN=path uses that binary instead of building one.
bin=${SLIPWAY_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -q -p slipway
  bin=$root/target/release/slipway
fi
work=$(mktemp -d)
net=slwbp0
cleanup() {
  if [ -n "${pid:-}" ]; then
    (cd "$work/app" && SLIPWAY_CONFIG=$work/config.toml "$bin" scale web=0 >/dev/null 2>&1) || true
    # The host agent unmounts and removes a stopped job's rootfs, netns and cgroup: wait for it.
    for _ in $(seq 100); do
      [ -z "$(ls "$work/data/host/containers" 2>/dev/null)" ] && break
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  [ -n "${floor_pid:-}" ] && kill "$floor_pid" 2>/dev/null || true
  for id in $(runc --root "$work/data/host/runc" list -q 2>/dev/null); do
    runc --root "$work/data/host/runc" delete -f "$id" >/dev/null 2>&1 || true
  done
  for c in /sys/fs/cgroup/*/slipway-bench-push; do rmdir "$c" 2>/dev/null || true; done
  ip link del "$net" 2>/dev/null || true
  nft delete table ip "$net" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export SLIPWAY_CONFIG=$work/config.toml HOME=$work GIT_TERMINAL_PROMPT=0
"$bin" server --data-dir "$work/data" --listen 127.0.0.1:0 --bridge "$net" --nft-table "$net" \
  --subnet 100.219.0.0/24 --cgroup-parent slipway-bench-push --stacks-dir /tmp/slipway-test-stacks \
  --router-ip 127.0.0.1 --http-port 0 --https-port 0 >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do grep -q Listening "$work/out" 2>/dev/null && break; sleep 0.1; done
router=$(grep -o 'router: HTTP on [0-9.:]*' "$work/err" | awk '{print $4}')

now() { date +%s.%N; }
# Polls URL (with Host header $2) until the body contains $3.
wait_for() {
  until curl -sf -m 1 -H "Host: $2" "$1" 2>/dev/null | grep -q "$3"; do sleep 0.01; done
}

mkdir -p "$work/app/www" && cd "$work/app"
git init -q -b main
printf 'web: httpd -f -p $PORT -h /app/www\n' >Procfile
echo "v0" >www/index.html
git add . && git -c user.email=b@b -c user.name=b commit -qm v0
"$bin" create bench >/dev/null

t0=$(now)
git push -q slipway main 2>"$work/push0" || { cat "$work/push0"; exit 1; }
wait_for "http://$router/" bench.localhost v0
first=$(awk "BEGIN{print $(now) - $t0}")

seconds=()
for i in $(seq "$ROUNDS"); do
  echo "v$i" >www/index.html
  git -c user.email=b@b -c user.name=b commit -qam "v$i"
  t0=$(now)
  git push -q slipway main 2>"$work/push$i" || { cat "$work/push$i"; exit 1; }
  wait_for "http://$router/" bench.localhost "v$i"
  seconds+=("$(awk "BEGIN{print $(now) - $t0}")")
done

# The floor: the same steps with nothing of Slipway in between.
git init -q --bare "$work/floor.git"
floors=()
for i in $(seq "$ROUNDS"); do
  echo "f$i" >www/index.html
  git -c user.email=b@b -c user.name=b commit -qam "f$i"
  rm -rf "$work/build" "$work/cache" "$work/env" && mkdir -p "$work/build" "$work/cache" "$work/env"
  port=$((20000 + i))
  t0=$(now)
  git push -q "$work/floor.git" HEAD:main
  git --git-dir "$work/floor.git" archive main | tar -x -C "$work/build"
  "$root/buildpacks/procfile/bin/compile" "$work/build" "$work/cache" "$work/env" >/dev/null
  (cd "$work/build" && exec busybox httpd -f -p "127.0.0.1:$port" -h "$work/build/www") &
  floor_pid=$!
  wait_for "http://127.0.0.1:$port/" x "f$i"
  floors+=("$(awk "BEGIN{print $(now) - $t0}")")
  kill "$floor_pid"; wait "$floor_pid" 2>/dev/null || true; floor_pid=
done

python3 - "$first" "${seconds[*]}" "${floors[*]}" <<'PY'
import statistics as st, sys
first = float(sys.argv[1]); sec = sorted(map(float, sys.argv[2].split())); fl = sorted(map(float, sys.argv[3].split()))
m, f = st.median(sec), st.median(fl)
print(f"first push → serving:  {first:.2f} s")
print(f"second push → serving: median {m:.2f} s (min {sec[0]:.2f}, max {sec[-1]:.2f}, {len(sec)} pushes)")
print(f"floor (git push to a bare repo + bin/compile + start + first 200): median {f:.3f} s")
print(f"second push / floor: {m / f:.1f}x")
PY
