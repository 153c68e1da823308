#!/usr/bin/env bash
# Image push benchmark: a ~50 MB image (busybox + 5 layers of incompressible data) pushed with
# `slipway image push` (OCI layout) and with skopeo, first push and repeat push, to a local
# `slipway server`; then, as root with runc, the host layer cache hit rate while scaling the image
# to 3 jobs and deploying a version with one changed layer. Results: docs/benchmarks.md.
#
#   bench/image-push.sh            # release build, 50 MB
#   PROFILE=dev SIZE_MB=50 bench/image-push.sh
set -euo pipefail
SIZE_MB=${SIZE_MB:-50}
PROFILE=${PROFILE:-release}
cd "$(dirname "$0")/.."
flag=(); [ "$PROFILE" = release ] && flag=(--release)
cargo build -q "${flag[@]}" -p slipway -p slipway-registry --example make_image
bin=$PWD/target/$PROFILE/slipway
[ "$PROFILE" = dev ] && bin=$PWD/target/debug/slipway
mk=./target/$PROFILE/examples/make_image
[ "$PROFILE" = dev ] && mk=./target/debug/examples/make_image
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ip link del slwbench 2>/dev/null || true; nft delete table ip slwbench 2>/dev/null || true
  for c in /sys/fs/cgroup/*/slipway-bench-img; do rmdir "$c" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# start_server NAME [ARGS…]: a server on a free port; sets URL and KEY.
start_server() {
  local name=$1; shift
  SLIPWAY_CONFIG=$work/$name.toml $bin server --data-dir "$work/$name" --listen 127.0.0.1:0 --no-register "$@" \
    >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 600); do grep -q Listening "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
  grep -q Listening "$work/$name.out" || { echo "server $name did not start:"; tail -20 "$work/$name.log"; exit 1; }
  URL=$(sed -n 's/^Listening on //p' "$work/$name.out")
  KEY=$(cat "$work/$name/api-key")
}
ms() { python3 -c "import time; print(int(time.time()*1000))"; }
cli() { (cd "$work" && SLIPWAY_URL=$URL SLIPWAY_KEY=$KEY $bin "$@"); }
timed() { local t0; t0=$(ms); "$@" >"$work/last" 2>&1 || { cat "$work/last"; exit 1; }; echo $(( $(ms) - t0 )); }

echo "building a ${SIZE_MB} MB image..."
$mk "$work/img" "$SIZE_MB" 5 --docker "$work/img.tar"
SALT=v2 $mk "$work/img2" "$SIZE_MB" 5   # the same layers but the top one (its index.html differs)
size=$(du -sm "$work/img/blobs" | cut -f1)

host_args=(--no-host)
if [ "$(id -u)" = 0 ] && command -v runc >/dev/null; then
  host_args=(--bridge slwbench --nft-table slwbench --subnet 100.250.7.0/24 --cgroup-parent slipway-bench-img)
fi
start_server a "${host_args[@]}"
cli create bench >/dev/null
first=$(timed cli -a bench image push "$work/img")
repeat=$(timed cli -a bench image push "$work/img")
echo "slipway image push, ${size} MB: first ${first} ms, repeat ${repeat} ms"
grep -E 'blob' "$work/last" | tail -1

skopeo_first=-; skopeo_repeat=-
if command -v skopeo >/dev/null; then
  saved_url=$URL; saved_key=$KEY
  start_server b --no-host
  cli create bench >/dev/null
  dest="docker://${URL#http://}/bench:latest"
  skopeo_first=$(timed skopeo copy -q --dest-tls-verify=false --dest-creds "x:$KEY" "oci:$work/img:latest" "$dest")
  skopeo_repeat=$(timed skopeo copy -q --dest-tls-verify=false --dest-creds "x:$KEY" "oci:$work/img:latest" "$dest")
  echo "skopeo copy, ${size} MB: first ${skopeo_first} ms, repeat ${skopeo_repeat} ms"
  URL=$saved_url; KEY=$saved_key
fi

# A docker save archive (layers are hashed on the client) to a third, empty server.
saved_url=$URL; saved_key=$KEY
start_server c --no-host
cli create bench >/dev/null
docker_first=$(timed cli -a bench image push "$work/img.tar")
docker_repeat=$(timed cli -a bench image push "$work/img.tar")
echo "slipway image push of a docker save archive, ${size} MB: first ${docker_first} ms, repeat ${docker_repeat} ms"
URL=$saved_url; KEY=$saved_key

if [ "${host_args[0]}" != --no-host ]; then
  # Layer uses: each job start needs every layer of its image (6: busybox + 5).
  cli -a bench scale app=3 >/dev/null
  unpacked=$(grep -c 'layer unpacked' "$work/a.log" || true)
  echo "scale app=3: 18 layer uses, $unpacked unpacked → hit rate $(( (18 - unpacked) * 100 / 18 ))%"
  # A new version with one changed layer (of 6), deployed to the 3 jobs.
  before=$unpacked
  cli -a bench image push "$work/img2" >/dev/null 2>&1
  unpacked=$(grep -c 'layer unpacked' "$work/a.log" || true)
  echo "deploy of a version with 1 changed layer to 3 jobs: 18 layer uses, $(( unpacked - before )) unpacked → hit rate $(( (18 - unpacked + before) * 100 / 18 ))%"
  cli -a bench scale app=0 >/dev/null
fi
