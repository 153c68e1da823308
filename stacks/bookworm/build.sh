#!/bin/sh
# Builds the `bookworm` stack into $1: Debian 12 minbase + python3/pip/venv + nodejs/npm + busybox +
# ca-certificates (about 1–2 min). Needs debootstrap and a reachable Debian mirror
# (SLIPWAY_DEBIAN_MIRROR, default http://deb.debian.org/debian).
# The packages are installed with apt inside the new root, not with debootstrap --include:
# debootstrap's own resolver fails to configure npm's dependency tree.
set -eu
R="$1"
MIRROR="${SLIPWAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
command -v debootstrap >/dev/null || { echo "debootstrap is not installed: apt-get install debootstrap" >&2; exit 1; }
echo "==> debootstrap --variant=minbase bookworm ($MIRROR)"
debootstrap --variant=minbase --include=ca-certificates bookworm "$R" "$MIRROR"
cleanup() { umount "$R/proc" 2>/dev/null || true; rm -f "$R/usr/sbin/policy-rc.d"; }
trap cleanup EXIT
mount -t proc proc "$R/proc"
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"
chmod +x "$R/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$R/etc/resolv.conf"
echo "==> apt-get install python3 python3-pip python3-venv nodejs npm busybox"
chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  python3 python3-pip python3-venv nodejs npm busybox >/dev/null
echo "==> cleaning apt caches"
chroot "$R" apt-get clean
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/log/*.log "$R"/var/log/apt/*
: > "$R/etc/resolv.conf"
mkdir -p "$R/app"
echo "bookworm stack: $(du -sh "$R" | cut -f1)"
