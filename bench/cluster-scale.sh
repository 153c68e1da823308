#!/usr/bin/env bash
# The cluster scale test: 1,000 jobs over 3 hosts (docs/benchmarks.md, "Cluster scale").
#
# Starts a real 3-member etcd and a real PostgreSQL (private loopback ports, temp dirs, both
# stopped and removed at the end), then runs `cluster_sim drive`
# (crates/scheduler/examples/cluster_sim.rs): 3 host agents on the fake runtime with their HTTP
# APIs registered in `slipway-host` through etcd, 2 scheduler processes campaigning through
# etcd, the store on PostgreSQL. It prints a Markdown table: time to all up, jobs per host, etcd
# keys / writes / watch events, the schedulers' CPU time and peak RSS, the takeover time after
# the leader is SIGKILLed, and whether any job was started twice (it exits non-zero if so).
#
# Usage: bench/cluster-scale.sh [APPS] [PER_APP]   (default 10 × 100 = 1,000 jobs)
# Needs: etcd (etcd-server), PostgreSQL (postgresql), python3, root or the postgres user for pg_ctl.
# BENCH_PROFILE=debug runs a debug build (slower; for trying the script, not for numbers).
set -euo pipefail
cd "$(dirname "$0")/.."

apps=${1:-10}
per_app=${2:-100}
case "$apps$per_app" in *[!0-9]*) echo "usage: $0 [APPS] [PER_APP] (numbers)" >&2; exit 2 ;; esac

etcd_bin=$(command -v etcd || true)
[ -n "$etcd_bin" ] || { echo "error: etcd is not installed (apt-get install etcd-server)" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pgbin" ] || { echo "error: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

profile=${BENCH_PROFILE:-release}
case "$profile" in
  release) cargo build --release -q -p slipway-scheduler --example cluster_sim; bin=target/release/examples/cluster_sim ;;
  debug) cargo build -q -p slipway-scheduler --example cluster_sim; bin=target/debug/examples/cluster_sim ;;
  *) echo "error: BENCH_PROFILE is release or debug" >&2; exit 2 ;;
esac

# etcd fsyncs every write: its data dirs go to /dev/shm when there is one.
base=/tmp
[ -d /dev/shm ] && base=/dev/shm
work=$(mktemp -d "$base/slipway-cluster-scale.XXXXXX")
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
etcd_pids=()
cleanup() {
  for pid in "${etcd_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${etcd_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -f "$work/pg/postmaster.pid" ]; then
    as_pg "$pgbin/pg_ctl" stop -m immediate -D "$work/pg" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# PostgreSQL, as scripts/test starts it.
mkdir "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work/pg"
as_pg "$pgbin/initdb" -A trust -U postgres --no-sync -E UTF8 -D "$work/pg" >/dev/null
pg_port=$(free_port)
as_pg "$pgbin/pg_ctl" start -w -l "$work/pg/server.log" -D "$work/pg" -o \
  "-p $pg_port -c listen_addresses=127.0.0.1 -k $work/pg -c max_connections=200" >/dev/null
db="postgres://postgres@127.0.0.1:$pg_port/postgres"

# A 3-member etcd.
declare -a cports pports
cluster=""
for i in 0 1 2; do
  cports[$i]=$(free_port)
  pports[$i]=$(free_port)
  cluster+="${cluster:+,}m$i=http://127.0.0.1:${pports[$i]}"
done
urls=""
for i in 0 1 2; do
  "$etcd_bin" --name "m$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:${cports[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${pports[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" \
    --initial-cluster "$cluster" --initial-cluster-token "bench-$$" \
    --initial-cluster-state new >"$work/etcd$i.log" 2>&1 &
  etcd_pids+=($!)
  urls+="${urls:+,}http://127.0.0.1:${cports[$i]}"
done
# GET /health of member $1 (bash's /dev/tcp: no curl needed).
healthy() {
  local reply
  reply=$({ exec 3<>"/dev/tcp/127.0.0.1/${cports[$1]}" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && timeout 2 cat <&3; } 2>/dev/null) || return 1
  grep -q '"health":"true"' <<<"$reply"
}
for i in 0 1 2; do
  for _ in $(seq 100); do healthy "$i" && break; sleep 0.1; done
  healthy "$i" ||
    { echo "error: etcd member m$i did not become healthy; its log:" >&2; tail -20 "$work/etcd$i.log" >&2; exit 1; }
done
echo "etcd $("$etcd_bin" --version | head -n 1 | awk '{print $3}') (3 members) at $urls; PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port"

# etcd's CPU time in clock ticks, the 3 members together (/proc/PID/stat: utime + stime).
etcd_ticks() { for pid in "${etcd_pids[@]}"; do cat "/proc/$pid/stat"; done | awk '{s += $14 + $15} END {print s}'; }
ticks0=$(etcd_ticks)
"$bin" drive "$urls" "$db" "$apps" "$per_app"
ticks1=$(etcd_ticks)
awk -v a="$ticks0" -v b="$ticks1" -v hz="$(getconf CLK_TCK)" \
  'BEGIN {printf "etcd: %.2f s of CPU time, 3 members together, over the whole run\n", (b - a) / hz}'
