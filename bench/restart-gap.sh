#!/usr/bin/env bash
# Restart gap (issue 17): how many requests to an app fail while Slipway itself restarts.
# Starts Slipway on loopback with its own bridge / nft table / cgroup parent, deploys a tiny app
# (busybox httpd, web=2), runs 4 clients in a loop through the router (a new connection per
# request, `Connection: close`), and meanwhile: restarts the server with SIGTERM, then kills it
# with SIGKILL and starts it again (and, with MODE=supervise, upgrades with SIGHUP). Each phase
# lasts from the signal until SETTLE seconds after the API answers again. Prints one table row
# per phase: requests, failures by kind (refused connection, non-200 answer, cut or timed-out
# answer) and the window from the first to the last failure.
#
#   sudo bench/restart-gap.sh                  # MODE=server: one `slipway server` process
#   sudo MODE=supervise bench/restart-gap.sh   # `slipway supervise` with server + router children
#   BIN=/usr/local/bin/slipway SETTLE=8 sudo -E bench/restart-gap.sh
#
# MODE=server is what `scripts/up` ran before issue 17 (`nohup slipway server`): a restart is
# SIGTERM + start, as a re-run of `scripts/up` does. MODE=supervise signals the server child
# the supervisor started (its pid in <data>/server.pid) and lets the supervisor restart it; the
# upgrade phase is `kill -HUP <supervisor>` (what `systemctl reload slipway` does).
# Needs root (runc, netns, nft), python3, and the busybox stack (built on first use into
# STACKS, default /var/tmp/slipway-bench-stacks). Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
MODE="${MODE:-server}"
SETTLE="${SETTLE:-5}"
CLIENTS="${CLIENTS:-4}"
STACKS="${STACKS:-/var/tmp/slipway-bench-stacks}"
case "$MODE" in server|supervise) ;; *) echo "MODE must be server or supervise" >&2; exit 2;; esac
if [ "$(id -u)" != 0 ]; then echo "error: needs root (runc): sudo $0" >&2; exit 1; fi
if [ -z "${BIN:-}" ]; then
  cargo build -q -p slipway
  BIN=$root/target/debug/slipway
fi
net=slwgap0 cgp=slipway-bench-gap
API=127.0.0.1:18470 DISC=127.0.0.1:18471 HTTP_PORT=18480 HTTPS_PORT=18443
W=$(mktemp -d /tmp/slipway-bench-gap.XXXXXX)
export SLIPWAY_CONFIG=$W/config.toml HOME=$W
unset SLIPWAY_URL SLIPWAY_KEY
# The CLI runs outside any git repository: `slipway create` in one would add a git remote to it.
cd "$W"
data=$W/data
flags=(--data-dir "$data" --listen "$API" --discovery-listen "$DISC" --domain gap.test
  --router-ip 127.0.0.1 --http-port "$HTTP_PORT" --https-port "$HTTPS_PORT" --router-admin 127.0.0.1:0
  --bridge "$net" --nft-table "$net" --subnet 100.219.0.0/24 --cgroup-parent "$cgp" --stacks-dir "$STACKS")
top=""      # the pid this script started: the server (MODE=server) or the supervisor
loader=""

start() {
  if [ "$MODE" = server ]; then
    "$BIN" server "${flags[@]}" >>"$W/out" 2>>"$W/server.log" &
  else
    "$BIN" supervise "${flags[@]}" >>"$W/out" 2>>"$W/server.log" &
  fi
  top=$!
}
# Waits (bounded) until the API answers; fails with the log's tail otherwise.
wait_api() {
  for _ in $(seq 600); do
    "$BIN" apps >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "error: the API did not come back; the log ends with:" >&2; tail -n 30 "$W/server.log" >&2
  exit 1
}
# The `slipway server` process serving the API: the one this script started, or the
# supervisor's server child (the pidfile the supervisor keeps, else its non-router child).
server_pid() {
  if [ "$MODE" = server ]; then echo "$top"; return; fi
  # The pid file holds the pid, then its start time.
  if [ -s "$data/server.pid" ]; then head -n1 "$data/server.pid"; return; fi
  for p in $(pgrep -P "$top"); do
    tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- '--roles router' || { echo "$p"; return; }
  done
}
# Waits (bounded, 30 s) until the supervisor has a server child other than $1.
wait_new_server() {
  local p
  for _ in $(seq 600); do
    p=$(server_pid)
    [ -n "$p" ] && [ "$p" != "$1" ] && kill -0 "$p" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "error: no new server child within 30 s (old pid $1); the log ends with:" >&2
  tail -n 30 "$W/server.log" >&2
  exit 1
}
wait_gone() { for _ in $(seq 600); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done; return 1; }
# The loader reads the phase every 20 ms: the pause keeps a signal out of the previous phase.
phase() { echo "$1" >"$W/phase"; sleep 0.1; }
cleanup() {
  set +e
  phase done
  [ -n "$loader" ] && wait "$loader" 2>/dev/null
  if [ -n "$top" ] && kill -0 "$top" 2>/dev/null; then
    "$BIN" -a gap scale web=0 >/dev/null 2>&1
    kill "$top"; wait_gone "$top" || kill -9 "$top"
  fi
  for id in $(runc --root "$data/host/runc" list -q 2>/dev/null); do
    runc --root "$data/host/runc" delete -f "$id" >/dev/null 2>&1
  done
  grep -o " $W/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  ip link del "$net" 2>/dev/null
  nft delete table ip "$net" 2>/dev/null; nft delete table bridge "$net" 2>/dev/null
  for c in /sys/fs/cgroup/*/"$cgp" /sys/fs/cgroup/"$cgp"; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  cd / && rm -rf "$W"
}
trap cleanup EXIT

# The load: CLIENTS threads, each a loop of GET / on a new connection; counts per phase (read
# from $W/phase). An answer counts as good only with status 200 and its whole body.
cat >"$W/load.py" <<'PY'
import socket, sys, threading, time
addr, host, phase_file, clients = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ip, port = addr.rsplit(":", 1)
phase = [open(phase_file).read().strip()]
stats, order, lock = {}, [], threading.Lock()
def record(kind, what=""):
    with lock:
        p = phase[0]
        if p not in stats:
            order.append(p); stats[p] = {"t0": time.time(), "n": 0, "refused": 0, "status": 0, "cut": 0, "first": None, "last": None, "codes": {}}
        s = stats[p]; s["n"] += 1
        if kind != "ok":
            s[kind] += 1
            t = time.time() - s["t0"]
            s["first"] = t if s["first"] is None else s["first"]; s["last"] = t
            if kind == "status": s["codes"][what] = s["codes"].get(what, 0) + 1
def one():
    try:
        c = socket.create_connection((ip, int(port)), timeout=5)
    except ConnectionRefusedError:
        return "refused", ""
    except OSError:
        return "cut", ""
    try:
        c.settimeout(10)
        c.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            b = c.recv(65536)
            if not b: break
            data += b
    except OSError:
        return "cut", ""
    finally:
        c.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    if not data: return "cut", ""
    line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    code = line.split(" ")[1] if len(line.split(" ")) > 1 else "?"
    if code != "200": return "status", code
    length = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")[1:] if l.lower().startswith(b"content-length:")]
    if not sep or (length and int(length[0]) != len(body)): return "cut", ""
    return "ok", ""
def client():
    while phase[0] != "done":
        kind, what = one()
        if phase[0] != "done": record(kind, what)
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads: t.start()
while phase[0] != "done":
    try:
        with open(phase_file) as f: p = f.read().strip()
        if p: phase[0] = p
    except OSError: pass
    time.sleep(0.02)
for t in threads: t.join()
print("| phase | seconds | requests | failed | refused | non-200 | cut / timeout | failures from … to (s into the phase) |")
print("|---|---|---|---|---|---|---|---|")
for p in order:
    s = stats[p]
    dur = (stats[order[order.index(p) + 1]]["t0"] if order.index(p) + 1 < len(order) else time.time()) - s["t0"]
    failed = s["refused"] + s["status"] + s["cut"]
    codes = ", ".join(f"{k}×{v}" for k, v in sorted(s["codes"].items()))
    window = f"{s['first']:.2f} … {s['last']:.2f}" if failed else "-"
    print(f"| {p} | {dur:.1f} | {s['n']} | {failed} | {s['refused']} | {s['status']}{' (' + codes + ')' if codes else ''} | {s['cut']} | {window} |")
PY

mkdir -p "$STACKS"
echo "starting slipway ($MODE) in $W" >&2
start
wait_api
"$BIN" create gap >/dev/null
cat >"$W/release.json" <<'JSON'
{"processes": {"web": {"args": ["sh", "-c", "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]}}}
JSON
"$BIN" -a gap release add "$W/release.json" >/dev/null
"$BIN" -a gap scale web=2 >/dev/null
host=gap.gap.test
for _ in $(seq 200); do
  curl -fsS -o /dev/null -H "Host: $host" "http://127.0.0.1:$HTTP_PORT/" && break; sleep 0.05
done
curl -fsS -o /dev/null -H "Host: $host" "http://127.0.0.1:$HTTP_PORT/" || { echo "error: the app is not served" >&2; exit 1; }

phase steady
python3 "$W/load.py" "127.0.0.1:$HTTP_PORT" "$host" "$W/phase" "$CLIENTS" >"$W/table" &
loader=$!
sleep 3

# 1. SIGTERM restart of the server.
phase server-sigterm
pid=$(server_pid)
kill -TERM "$pid"
if [ "$MODE" = server ]; then
  wait_gone "$pid" || { echo "error: the server did not stop within 30 s of SIGTERM" >&2; exit 1; }
  start
else
  wait_new_server "$pid"
fi
wait_api; sleep "$SETTLE"
phase between-1; sleep 2

# 2. kill -9 of the server, then start again.
phase server-kill9
pid=$(server_pid)
kill -9 "$pid"
if [ "$MODE" = server ]; then
  wait_gone "$pid"
  start
else
  wait_new_server "$pid"
fi
wait_api; sleep "$SETTLE"

# 3. Upgrade (MODE=supervise): SIGHUP re-execs the supervisor and rolls router then server.
if [ "$MODE" = supervise ]; then
  phase between-2; sleep 2
  phase upgrade-hup
  pid=$(server_pid)
  kill -HUP "$top"
  wait_new_server "$pid"
  wait_api; sleep "$SETTLE"
fi
phase after; sleep 2
phase done
wait "$loader"; loader=""
echo "# $(date -u +%FT%TZ) MODE=$MODE, $CLIENTS clients (new connection per request), SETTLE=${SETTLE}s, $(nproc) cpus, $(basename "$BIN") $("$BIN" --version 2>/dev/null || true)"
cat "$W/table"
