#!/bin/sh
# Slipway's builder: runs inside the build container, as an unprivileged user, on the app's
# stack (busybox sh compatible). The Heroku buildpack API v2, exactly:
#   bin/detect BUILD_DIR            exit 0 = this buildpack applies; stdout = its name
#   bin/compile BUILD_DIR CACHE_DIR ENV_DIR
#   bin/release BUILD_DIR           YAML with default_process_types (the last buildpack's wins)
# The host prepared everything else (see crates/builder/src/pipeline.rs):
#   /app                    BUILD_DIR: the source tree (after .slugignore); becomes the slug
#   /cache                  CACHE_DIR: this app's build cache, kept between builds
#   /slipway/env            ENV_DIR: one file per variable of the app's env
#   /slipway/meta/plan      "detect" or "explicit", then one buildpack dir per line
#   /slipway/out            results for the host: release.yml, buildpacks, failed
# A failure writes its reason to /slipway/out/failed and exits non-zero.
set -u
BUILD_DIR=/app
CACHE_DIR=/cache
ENV_DIR=/slipway/env
OUT=/slipway/out
export STACK SOURCE_VERSION
cd "$BUILD_DIR" || exit 1

mode=$(head -n 1 /slipway/meta/plan)
buildpacks=$(tail -n +2 /slipway/meta/plan)

fail() {
  printf '%s\n' "$1" > "$OUT/failed"
  echo " !     $1"
  exit "${2:-1}"
}

# detect BP: succeeds when the buildpack applies, setting `name` to the first line it printed.
detect() {
  name=$("$1/bin/detect" "$BUILD_DIR" 2>/dev/null) || return 1
  name=$(printf '%s\n' "$name" | head -n 1)
}

if [ "$mode" = detect ]; then
  selected=""
  for bp in $buildpacks; do
    if [ -x "$bp/bin/detect" ] && detect "$bp"; then
      selected="$bp"
      break
    fi
  done
  [ -n "$selected" ] || fail "Unable to select a buildpack"
  buildpacks="$selected"
fi

: > "$OUT/buildpacks"
for bp in $buildpacks; do
  name=""
  # An explicitly chosen buildpack runs even if its detect fails; detect only names it.
  [ -x "$bp/bin/detect" ] && detect "$bp" || true
  [ -n "$name" ] || name=$(basename "$bp")
  echo "-----> $name app detected"
  printf '%s\n' "$bp" >> "$OUT/buildpacks"
  [ -x "$bp/bin/compile" ] || fail "buildpack $name has no executable bin/compile"
  "$bp/bin/compile" "$BUILD_DIR" "$CACHE_DIR" "$ENV_DIR"
  status=$?
  if [ "$status" -ne 0 ]; then
    fail "Failed to compile $name app: bin/compile exited with status $status" "$status"
  fi
  # Multi-buildpack convention: a buildpack's `export` file sets up the next one's env.
  if [ -f "$bp/export" ]; then
    # shellcheck disable=SC1090,SC1091
    . "$bp/export"
  fi
  if [ -x "$bp/bin/release" ]; then
    "$bp/bin/release" "$BUILD_DIR" > "$OUT/release.yml.tmp" ||
      fail "bin/release of $name failed"
    mv "$OUT/release.yml.tmp" "$OUT/release.yml"
  fi
done
exit 0
