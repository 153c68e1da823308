#!/bin/sh
# Builds the `busybox` stack into $1 from the host's busybox-static package (< 1 s, ~2 MB):
# /bin/busybox, one symlink per applet, a minimal /etc. The fast stack for tests and for
# `web: httpd -f -p $PORT` apps.
set -eu
R="$1"
BB=/bin/busybox
if ! "$BB" --list-full >/dev/null 2>&1; then
  echo "busybox-static is not installed: apt-get install busybox-static" >&2
  exit 1
fi
mkdir -p "$R"
cd "$R"
mkdir -p bin sbin usr/bin usr/sbin etc etc/ssl/certs proc sys dev tmp root var/www home app
cp "$BB" bin/busybox
for a in $(bin/busybox --list-full); do
  mkdir -p "$(dirname "$a")"
  [ -e "$a" ] || ln -s /bin/busybox "$a"
done
cat > etc/passwd <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/sh
P
cat > etc/group <<'G'
root:x:0:
nogroup:x:65534:
G
touch etc/hosts etc/resolv.conf etc/ssl/certs/ca-certificates.crt
echo "busybox stack: $(bin/busybox | head -1)"
