#!/usr/bin/env bash
# git push → serving, for a small Procfile app (busybox httpd on the busybox stack): the first
# push and a second push with a change (no dependency change), each timed from `git push` until
# the router serves the new content; next to the floor measured in the same run: a plain
# `git push` to a local bare repo + the same buildpack's bin/compile on a checkout + starting the
# same process and waiting for its first HTTP 200. And the container floor: the same, with
# bin/compile and the process each in a plain `runc run` container on the busybox stack's rootfs
# (what isolation alone costs).
# Needs root (runc). Usage: sudo bench/push.sh [ROUNDS]   (default 5 second pushes)
# TIMINGS=1 runs the server with its debug timing lines and prints where the median second
# push's time went (each line: ms since `git push` started).
# The slug runner and stack come from the binary; the floors run buildpacks/procfile from the tree.
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
  for id in $(runc --root "$work/cfrunc" list -q 2>/dev/null); do
    runc --root "$work/cfrunc" delete -f "$id" >/dev/null 2>&1 || true
  done
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
log_filter=info
[ -n "${TIMINGS:-}" ] &&
  log_filter=info,slipway_builder=debug,slipway_controller=debug,slipway_scheduler=debug,slipway_host=debug
export SLIPWAY_LOG=$log_filter
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
starts=()
for i in $(seq "$ROUNDS"); do
  echo "v$i" >www/index.html
  git -c user.email=b@b -c user.name=b commit -qam "v$i"
  t0=$(now)
  git push -q slipway main 2>"$work/push$i" || { cat "$work/push$i"; exit 1; }
  pushed=$(now)
  wait_for "http://$router/" bench.localhost "v$i"
  seconds+=("$(awk "BEGIN{print $(now) - $t0}")")
  starts+=("$t0:$pushed")
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

# The container floor: the same, but bin/compile and the process each in a plain `runc run`
# container on the stack's rootfs (read-only; the checkout bind-mounted at /app, the buildpack,
# cache and env dirs under a tmpfs /tmp; the host's network namespace, so no veth to set up).
stack_rootfs=/tmp/slipway-test-stacks/busybox/rootfs
cfrunc=(runc --root "$work/cfrunc")
# bundle DIR ARGS_JSON APP_MOUNT_OPTION: `runc spec`, edited into a container on the stack.
bundle() {
  mkdir -p "$1" && rm -f "$1/config.json" && (cd "$1" && runc spec)
  python3 - "$1/config.json" "$stack_rootfs" "$2" "$3" "$work" "$root/buildpacks/procfile" <<'PY'
import json, sys
path, rootfs, args, rw, work, bp = sys.argv[1:]
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": True}
c["process"].update(terminal=False, args=json.loads(args), cwd="/app")
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
bind = lambda dst, src, opt: {"destination": dst, "type": "bind", "source": src, "options": ["rbind", opt]}
c["mounts"] += [
    bind("/app", f"{work}/build", rw),
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
    bind("/tmp/buildpack", bp, "ro"),
    bind("/tmp/cache", f"{work}/cache", "rw"),
    bind("/tmp/env", f"{work}/env", "ro"),
]
json.dump(c, open(path, "w"))
PY
}
git init -q --bare "$work/cfloor.git"
cfloors=()
for i in $(seq "$ROUNDS"); do
  echo "c$i" >www/index.html
  git -c user.email=b@b -c user.name=b commit -qam "c$i"
  rm -rf "$work/build" "$work/cache" "$work/env" && mkdir -p "$work/build" "$work/cache" "$work/env"
  port=$((20100 + i))
  bundle "$work/cf-build" '["/tmp/buildpack/bin/compile", "/app", "/tmp/cache", "/tmp/env"]' rw
  bundle "$work/cf-web" "[\"httpd\", \"-f\", \"-p\", \"127.0.0.1:$port\", \"-h\", \"/app/www\"]" ro
  t0=$(now)
  git push -q "$work/cfloor.git" HEAD:main
  git --git-dir "$work/cfloor.git" archive main | tar -x -C "$work/build"
  "${cfrunc[@]}" run --bundle "$work/cf-build" "cf-build-$i" </dev/null >/dev/null
  "${cfrunc[@]}" run -d --bundle "$work/cf-web" "cf-web-$i" </dev/null >/dev/null 2>&1
  wait_for "http://127.0.0.1:$port/" x "c$i"
  cfloors+=("$(awk "BEGIN{print $(now) - $t0}")")
  "${cfrunc[@]}" delete -f "cf-build-$i" >/dev/null 2>&1 || true
  "${cfrunc[@]}" delete -f "cf-web-$i" >/dev/null 2>&1
done

python3 - "$first" "${seconds[*]}" "${floors[*]}" "${cfloors[*]}" <<'PY'
import statistics as st, sys
first = float(sys.argv[1])
sec, fl, cf = (sorted(map(float, a.split())) for a in sys.argv[2:5])
m, f, c = st.median(sec), st.median(fl), st.median(cf)
print(f"first push → serving:  {first:.2f} s")
print(f"second push → serving: median {m:.3f} s (min {sec[0]:.3f}, max {sec[-1]:.3f}, {len(sec)} pushes)")
print(f"floor (git push to a bare repo + bin/compile + start + first 200): median {f:.3f} s (min {fl[0]:.3f}, max {fl[-1]:.3f})")
print(f"container floor (the same, compile and process each in a runc container): median {c:.3f} s (min {cf[0]:.3f}, max {cf[-1]:.3f})")
print(f"second push / floor: {m / f:.1f}x; / container floor: {m / c:.1f}x")
PY
if [ -n "${TIMINGS:-}" ]; then
  # The median second push's timeline from the server's debug lines.
  python3 - "${seconds[*]}" "${starts[*]}" "$work/err" <<'PY'
import datetime, re, statistics as st, sys
secs = list(map(float, sys.argv[1].split()))
starts = [tuple(map(float, s.split(":"))) for s in sys.argv[2].split()]
i = sorted(range(len(secs)), key=lambda k: secs[k])[len(secs) // 2]
t0, pushed = starts[i]
end = t0 + secs[i]
ansi = re.compile(r"\x1b\[[0-9;]*m")
print(f"\ntimeline of push {i + 1} ({secs[i] * 1e3:.0f} ms), ms since `git push` started:")
for line in open(sys.argv[3], errors="replace"):
    line = ansi.sub("", line).rstrip()
    ts, _, rest = line.partition(" ")
    try:
        t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        continue
    if t0 <= t <= end:
        print(f"{(t - t0) * 1e3:8.1f}  {rest.strip()[:160]}")
print(f"{(pushed - t0) * 1e3:8.1f}  (git push returned)")
print(f"{secs[i] * 1e3:8.1f}  (the router served the new content)")
PY
fi
