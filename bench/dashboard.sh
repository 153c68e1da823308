#!/usr/bin/env bash
# The dashboard's page weight and time to first render (docs/dashboard.md): a `slipway server
# --no-host` in a temp dir, 100 apps and 1,000 releases in its store (one app with 901, the
# others one each), then the apps list and the big app's page fetched with a session, 5 times
# each (curl's time to the last byte: the pages are rendered whole on the server, so the first
# render is there when the HTML is). Usage: bench/dashboard.sh [path/to/slipway]
set -euo pipefail
bin=${1:-target/debug/slipway}
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
SLIPWAY_CONFIG=$dir/config.toml HOME=$dir "$bin" server --listen 127.0.0.1:0 --domain bench.test \
  --data-dir "$dir/data" --no-host >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 100); do grep -q Listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^Listening on //p' "$dir/out")
key=$(sed -n 's/^key = "\(.*\)"/\1/p' "$dir/config.toml")
api() { curl -sf -H "Authorization: Bearer $key" -H 'content-type: application/json' "$@"; }
release() { # app, n: a release with n env vars, made the app's current one
  local id
  id=$(api -d "{\"env\":{\"N\":\"$2\"},\"processes\":{\"web\":{\"args\":[\"httpd\"]}}}" "$url/apps/$1/releases" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  api -X PUT -d "{\"id\":\"$id\"}" "$url/apps/$1/release" >/dev/null
}
echo "==> filling the store: 100 apps, 1000 releases"
for i in $(seq 0 99); do
  api -d "{\"name\":\"app-$i\"}" "$url/apps" >/dev/null
  release "app-$i" 0
done
for n in $(seq 1 900); do release app-0 "$n"; done
cookie=$(curl -s -i --data-urlencode "key=$key" "$url/dashboard/login" | sed -n 's/^set-cookie: slipway_session=\([^;]*\).*/\1/pi')
page() { curl -s -o "$dir/page" -w '%{time_total}\n' -b "slipway_session=$cookie" "$url$1"; }
for p in /dashboard/apps /dashboard/apps/app-0; do
  page "$p" >/dev/null # warm
  times=$(for _ in 1 2 3 4 5; do page "$p"; done | sort -n | tr '\n' ' ')
  html=$(wc -c <"$dir/page"); gz=$(gzip -c "$dir/page" | wc -c)
  echo "$p: ${html} B HTML (${gz} B gzipped); seconds, sorted: $times"
done
for a in htmx-2.0.11.min.js dashboard-2.css; do
  curl -s -o "$dir/a" "$url/dashboard/assets/$a"
  echo "asset $a: $(wc -c <"$dir/a") B ($(gzip -c "$dir/a" | wc -c) B gzipped), cached a year"
done
