#!/usr/bin/env bash
# Log ingest: one job writes N lines as fast as it can (busybox awk, ~75-byte lines); measured
# while `slipway log -n 1` is polled: the rate at which lines reach the aggregator (lines/s),
# the rate at which the job's shim captured them (the `ts` of the lines), lines lost (sequence
# numbers vs line numbers), the CPU of `slipway server` (aggregator + host agent's log reader,
# one process) and of the job's shim over the same window. Then `slipway log -n 10000` latency
# (the history at its default 10,000 lines), median of 20.
# Needs root (runc). Usage: sudo bench/logs.sh [N]   (default 1000000)
set -euo pipefail
N=${1:-1000000}
cd "$(dirname "$0")/.."
root=$PWD
cargo build --release -q -p slipway
bin=$root/target/release/slipway
work=$(mktemp -d)
net=slwbl0
cleanup() {
  if [ -n "${pid:-}" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  for id in $(runc --root "$work/data/host/runc" list -q 2>/dev/null); do
    runc --root "$work/data/host/runc" delete -f "$id" >/dev/null 2>&1 || true
  done
  for d in "$work"/data/host/containers/*/bundle/rootfs; do umount -l "$d" 2>/dev/null || true; done
  ip link del "$net" 2>/dev/null || true
  nft delete table ip "$net" 2>/dev/null || true
  for c in /sys/fs/cgroup/*/slipway-bench-logs; do
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
export SLIPWAY_CONFIG=$work/config.toml HOME=$work
"$bin" server --data-dir "$work/data" --listen 127.0.0.1:0 --bridge "$net" --nft-table "$net" \
  --subnet 100.218.0.0/24 --cgroup-parent slipway-bench-logs --stacks-dir /tmp/slipway-test-stacks \
  --no-router --discovery-listen 127.0.0.1:0 --router-admin 127.0.0.1:0 >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do grep -q Listening "$work/out" 2>/dev/null && break; sleep 0.1; done
# Outside any git repo: `create` would add a git remote to the one it runs in.
mkdir -p "$work/cwd" && cd "$work/cwd"
"$bin" create bench >/dev/null
cat >"$work/release.json" <<EOF
{"processes": {"writer": {"args": ["sh", "-c",
  "sleep 1; awk 'BEGIN { for (i = 1; i <= $N; i++) print \"line \" i \" lorem ipsum dolor sit amet, consectetur adipiscing elit\" }'; exec sleep 100000"]}}}
EOF
"$bin" -a bench release add "$work/release.json" >/dev/null
"$bin" -a bench scale writer=1 >/dev/null

python3 - "$bin" "$pid" "$N" "$work" <<'PY'
import json, os, statistics as st, subprocess, sys, time
bin, pid, n, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tick = os.sysconf("SC_CLK_TCK")
def cpu(p):
    f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
def last():
    out = subprocess.run([bin, "-a", "bench", "log", "-n", "1", "--json", "-t", "writer"],
                         capture_output=True, text=True).stdout.strip()
    if not out:
        return None
    e = json.loads(out.splitlines()[-1])
    if not e["msg"].startswith("line "):
        return None
    return e
def ts(e):
    from datetime import datetime
    return datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
first = None
while first is None:
    first = last()
    t_first, cpu_first = time.time(), cpu(pid)
    time.sleep(0.05)
# This server's shims only (their command line names a dir under our data dir).
shim = subprocess.run(["pgrep", "-f", f"shim {work}"], capture_output=True, text=True).stdout.split()
shim = [p for p in shim if os.path.exists(f"/proc/{p}")]
shim_cpu0 = sum(cpu(p) for p in shim)
samples = []  # (wall, line, seq): where lines went missing, if any
while True:
    e = last()
    if e:
        samples.append((time.time(), int(e["msg"].split()[1]), e["seq"]))
    if e and e["msg"].split()[1] == str(n):
        t_end, cpu_end = time.time(), cpu(pid)
        break
    time.sleep(0.05)
shim_cpu1 = sum(cpu(p) for p in shim if os.path.exists(f"/proc/{p}"))
k = int(first["msg"].split()[1])
lines = n - k
wall = t_end - t_first
captured = ts(e) - ts(first)
lost = lines - (e["seq"] - first["seq"])
print(f"lines measured:         {lines} (line {k} to {n})")
print(f"ingest (to aggregator): {lines / wall:,.0f} lines/s over {wall:.2f} s")
print(f"shim capture:           {lines / captured:,.0f} lines/s (from the lines' timestamps)")
print(f"lag at the end:         {t_end - ts(e):.2f} s after the last line was captured")
print(f"lines lost:             {lost}")
for (t0, l0, s0), (t1, l1, s1) in zip(samples, samples[1:]):
    if (l1 - l0) != (s1 - s0):
        print(f"  {(l1 - l0) - (s1 - s0)} lost between line {l0} and line {l1} "
              f"({t0 - t_first:.2f}-{t1 - t_first:.2f} s into the window)")
print(f"slipway server CPU:     {(cpu_end - cpu_first) / wall * 100:.0f} % of a core")
print(f"shim CPU:               {(shim_cpu1 - shim_cpu0) / wall * 100:.0f} % of a core ({len(shim)} shim process(es))")
lat = {}
for fmt in (["--json"], []):
    ms = []
    for _ in range(20):
        t0 = time.time()
        out = subprocess.run([bin, "-a", "bench", "log", "-n", "10000", *fmt], capture_output=True).stdout
        ms.append((time.time() - t0) * 1000)
    assert out.count(b"\n") == 10000, out.count(b"\n")
    name = "--json" if fmt else "text"
    print(f"log -n 10000 ({name}):   median {st.median(ms):.0f} ms (min {min(ms):.0f}, max {max(ms):.0f})")
PY
"$bin" -a bench scale writer=0 >/dev/null 2>&1 || true
