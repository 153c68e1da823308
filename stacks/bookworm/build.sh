#!/bin/sh
# Builds the `bookworm` stack into $1: Debian 12 minbase + python3/pip/venv + nodejs/npm +
# ca-certificates (≈ 1 min, ≈ 450 MB). Needs debootstrap and a reachable Debian mirror
# (SLIPWAY_DEBIAN_MIRROR, default http://deb.debian.org/debian).
set -eu
R="$1"
MIRROR="${SLIPWAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
command -v debootstrap >/dev/null || { echo "debootstrap is not installed: apt-get install debootstrap" >&2; exit 1; }
echo "==> debootstrap --variant=minbase bookworm ($MIRROR)"
debootstrap --variant=minbase \
  --include=ca-certificates,python3,python3-pip,python3-venv,nodejs,npm \
  bookworm "$R" "$MIRROR"
echo "==> cleaning apt caches"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/var/log/*.log
mkdir -p "$R/app"
echo "bookworm stack: $(du -sh "$R" | cut -f1)"
