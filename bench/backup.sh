#!/usr/bin/env bash
# Backup and restore of an embedded server with APPS apps of RELEASES releases each (issue 23,
# docs/backup.md): each release has a slug of its own (SLUG_KB of random bytes, so every release
# adds a blob) and its own env. Prints the backup's time and size, and the restore's time (into
# a fresh data dir, `slipway server --restore FILE --restore-only`), and checks the restored
# store has every app and release. A server without host or router (nothing runs; the numbers
# are the store's and the blobs').
# Usage: bench/backup.sh [APPS] [RELEASES] [SLUG_KB]   (SLIPWAY_BIN=target/debug/slipway to skip
# the release build)
set -euo pipefail
APPS=${1:-20}
RELEASES=${2:-10}
SLUG_KB=${3:-256}
cd "$(dirname "$0")/.."
if [ -z "${SLIPWAY_BIN:-}" ]; then
  cargo build --release -q -p slipway
  SLIPWAY_BIN=./target/release/slipway
fi
bin=$SLIPWAY_BIN
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
export SLIPWAY_CONFIG=$work/config.toml
"$bin" server --no-host --no-router --data-dir "$work/data" --listen 127.0.0.1:0 --no-register \
  >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do grep -q Listening "$work/out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^Listening on //p' "$work/out")
key=$(cat "$work/data/api-key")
api() { curl -sf -H "Authorization: Bearer $key" -H 'content-type: application/json' "$@"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

echo "making $APPS apps x $RELEASES releases (a ${SLUG_KB} KiB slug each)..."
t0=$(date +%s.%N)
for a in $(seq "$APPS"); do
  api -o /dev/null -d "{\"name\":\"bench-$a\"}" "$url/apps"
  for r in $(seq "$RELEASES"); do
    head -c "$((SLUG_KB * 1024))" /dev/urandom >"$work/slug"
    digest="sha256:$(sha256sum "$work/slug" | cut -d' ' -f1)"
    api -o /dev/null -X PUT --data-binary @"$work/slug" -H 'content-type: application/octet-stream' \
      "$url/blobs/$digest"
    size=$(stat -c %s "$work/slug")
    artifact=$(api -d "{\"type\":\"slug\",\"uri\":\"blob:$digest\",\"digest\":\"$digest\",\"size\":$size}" \
      "$url/artifacts" | field id)
    release=$(api -d "{\"artifacts\":[\"$artifact\"],\"env\":{\"RELEASE\":\"$r\"},\"processes\":{\"web\":{\"args\":[\"true\"]}}}" \
      "$url/apps/bench-$a/releases" | field id)
    api -o /dev/null -X PUT -d "{\"id\":\"$release\"}" "$url/apps/bench-$a/release"
  done
done
t1=$(date +%s.%N)
echo "made in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s"

t2=$(date +%s.%N)
SLIPWAY_URL=$url SLIPWAY_KEY=$key "$bin" cluster backup -f "$work/backup.tar"
t3=$(date +%s.%N)
bytes=$(stat -c %s "$work/backup.tar")
blobs=$(tar tf "$work/backup.tar" | grep -c '^blobs/' || true)
store=$(tar tvf "$work/backup.tar" store.db | awk '{print $3}')

"$bin" server --no-host --no-router --data-dir "$work/restored" --listen 127.0.0.1:0 --no-register \
  --restore "$work/backup.tar" --restore-only 2>"$work/restore.err"
t4=$(date +%s.%N)
apps=$(sqlite3 "$work/restored/slipway.db" 'SELECT COUNT(*) FROM apps' 2>/dev/null || echo "?")
releases=$(sqlite3 "$work/restored/slipway.db" 'SELECT COUNT(*) FROM releases' 2>/dev/null || echo "?")
python3 - "$t2" "$t3" "$t4" "$bytes" "$blobs" "$store" "$APPS" "$RELEASES" "$apps" "$releases" <<'PY'
import sys
t2, t3, t4 = map(float, sys.argv[1:4])
b, blobs, store, A, R, apps, rels = sys.argv[4:]
print(f"{A} apps x {R} releases: backup {t3 - t2:.2f} s, {int(b) / 1e6:.1f} MB "
      f"({blobs} blobs, store {int(store) / 1e3:.0f} kB); restore {t4 - t3:.2f} s "
      f"(restored: {apps} apps, {rels} releases)")
PY
