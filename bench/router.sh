#!/usr/bin/env bash
# Router benchmark: Slipway's router next to nginx as reverse proxies in front of the same
# backend (an nginx answering a fixed 12-byte body), with wrk at fixed concurrency, plain HTTP
# and HTTPS (HTTP/1.1 over TLS, keep-alive). Runs alternate (nginx, router, nginx, router…) so
# outside load hits both alike. Also reports the router's RSS after the loaded runs.
# Needs nginx, wrk, openssl (apt-get install nginx wrk). Results: docs/benchmarks.md.
#
#   bench/router.sh                      # release build; C=64 connections, D=10s, R=2 rounds
#   C=128 D=20s R=3 bench/router.sh
#   BIN=/tmp/t/release/examples/router_bench bench/router.sh   # a binary built elsewhere
#   PROTOS=http R=4 bench/router.sh      # plain HTTP only
#   BODY=65536 bench/router.sh           # the backend answers a 64 KiB file instead
set -euo pipefail
cd "$(dirname "$0")/.."
C="${C:-64}"; D="${D:-10s}"; R="${R:-2}"; T="${T:-2}"
# BIN=path: a router_bench built elsewhere (e.g. with debug line tables for perf); no build.
if [ -z "${BIN:-}" ]; then
  [ -n "${NO_BUILD:-}" ] || cargo build -q --release -p slipway-router --example router_bench
  BIN="$PWD/target/release/examples/router_bench"
fi
W=$(mktemp -d /tmp/slipway-bench-router.XXXXXX)
BACKEND=127.0.0.1:18181 NGX_HTTP=18180 NGX_HTTPS=18543 RT_HTTP=18190 RT_HTTPS=18553
PC_HTTP=18191 PC_HTTPS=18554
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
# ECDSA P-256, the key type of the router's self-signed default certificate: same handshake cost.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bench.test -days 1 \
  -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
mkdir -p "$W/b" "$W/p" "$W/www"
if [ -n "${BODY:-}" ]; then
  head -c "$BODY" /dev/urandom > "$W/www/index.html"
  chmod 755 "$W" "$W/www"; chmod 644 "$W/www/index.html"  # nginx workers run as www-data
  BACKEND_ANSWER="root $W/www; index index.html;"
else
  BACKEND_ANSWER='return 200 "hello world\n";'
fi
cat > "$W/b/nginx.conf" <<NGX
worker_processes 1; pid $W/b/pid; error_log $W/b/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen $BACKEND; location / { $BACKEND_ANSWER } } }
NGX
cat > "$W/p/nginx.conf" <<NGX
worker_processes auto; pid $W/p/pid; error_log $W/p/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream app { server $BACKEND; keepalive 256; }
  server { listen 127.0.0.1:$NGX_HTTP; listen 127.0.0.1:$NGX_HTTPS ssl;
    ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    # Buffers for a whole 64 KiB answer (BODY=65536): nginx's default 8 x 4 KiB would write
    # the rest of each response to a temporary file.
    proxy_buffer_size 16k; proxy_buffers 16 16k; proxy_busy_buffers_size 32k;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Port \$server_port;
      proxy_set_header X-Request-Start \$msec; proxy_set_header X-Request-Id \$request_id; } } }
NGX
nginx -p "$W/b" -c "$W/b/nginx.conf" -g 'daemon off;' & pids+=($!)
nginx -p "$W/p" -c "$W/p/nginx.conf" -g 'daemon off;' & pids+=($!)
"$BIN" 127.0.0.1:$RT_HTTP 127.0.0.1:$RT_HTTPS $BACKEND > "$W/router.out" & RPID=$!; pids+=($RPID)
# The same router with one current-thread runtime per core on SO_REUSEPORT listeners.
PER_CORE=$(nproc) "$BIN" 127.0.0.1:$PC_HTTP 127.0.0.1:$PC_HTTPS $BACKEND > "$W/pc.out" & PCPID=$!; pids+=($PCPID)
for _ in $(seq 50); do grep -q ready "$W/router.out" 2>/dev/null && grep -q ready "$W/pc.out" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
for u in http://127.0.0.1:$NGX_HTTP/ http://127.0.0.1:$RT_HTTP/ http://127.0.0.1:$PC_HTTP/; do
  curl -fsS -H 'Host: bench.test' "$u" >/dev/null || { echo "no answer from $u"; exit 1; }
done

# CPU time (user + system, clock ticks) of the given processes, all their threads included.
ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s+=$1} END {print s}'; }
NGX_PIDS="$(cat "$W/p/pid") $(pgrep -P "$(cat "$W/p/pid")" | tr '\n' ' ')"
# run URL PIDS… → "req/s p50 p99 cpu-µs-per-request" (latencies in ms). CPU per request is the
# figure outside load disturbs least: req/s and p99 depend on who else gets the CPUs.
run() {
  local url=$1; shift
  local t0; t0=$(ticks "$@")
  local out; out=$(wrk -t"$T" -c"$C" -d"$D" --latency -H 'Host: bench.test' "$url")
  local t1; t1=$(ticks "$@")
  echo "$out" | awk -v ticks=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps=$2 } /^ +50%/ { p50=ms($2) } /^ +99%/ { p99=ms($2) } / requests in / { n=$1 }
    /Non-2xx|Socket errors/ { err=err $0 }
    END { printf "%s %.2f %.2f %.1f %s\n", rps, p50, p99, ticks * 1e6 / hz / n, (err==""?"":"ERR:" err) }'
}
echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) cpus, wrk -t$T -c$C -d$D, body ${BODY:-12} bytes, $(nginx -v 2>&1), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| proxy | proto | round | req/s | p50 ms | p99 ms | CPU µs/req |"
echo "|---|---|---|---|---|---|---|"
for proto in ${PROTOS:-http https}; do
  for r in $(seq "$R"); do
    if [ $proto = http ]; then n=$NGX_HTTP; s=$RT_HTTP; p=$PC_HTTP; else n=$NGX_HTTPS; s=$RT_HTTPS; p=$PC_HTTPS; fi
    # shellcheck disable=SC2086
    read -r a b c d e <<<"$(run $proto://127.0.0.1:$n/ $NGX_PIDS)"; echo "| nginx | $proto | $r | $a | $b | $c | $d | $e"
    read -r a b c d e <<<"$(run $proto://127.0.0.1:$s/ $RPID)"; echo "| slipway router (multi-thread runtime) | $proto | $r | $a | $b | $c | $d | $e"
    read -r a b c d e <<<"$(run $proto://127.0.0.1:$p/ $PCPID)"; echo "| slipway router (runtime per core) | $proto | $r | $a | $b | $c | $d | $e"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
for x in "multi-thread $RPID" "per-core $PCPID"; do set -- $x
  echo "router ($1) RSS after the runs: $(awk '/VmRSS/ {print $2, $3}' /proc/$2/status), peak $(awk '/VmHWM/ {print $2, $3}' /proc/$2/status)"
done
echo "nginx proxy RSS (all processes): $(ps -o rss= --ppid "$(cat "$W/p/pid")" -p "$(cat "$W/p/pid")" | awk '{s+=$1} END {print s, "kB"}')"
