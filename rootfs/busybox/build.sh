#!/usr/bin/env bash
# Builds a tiny root filesystem from Debian's busybox-static package: /bin/busybox, a link per
# applet, and the empty directories the sandbox mounts on. No container registry involved.
# Usage: build.sh OUTDIR   (OUTDIR is replaced; the build is skipped when it is up to date)
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
stamp="$out/.sandpit-recipe"
want=$(cat "$here/build.sh" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -x /bin/busybox ] && /bin/busybox --help 2>&1 | head -1 | grep -q 'BusyBox' && file -L /bin/busybox 2>/dev/null | grep -q static; then
  cp /bin/busybox "$work/busybox"
else
  (cd "$work" && apt-get download busybox-static >/dev/null)
  dpkg-deb -x "$work"/busybox-static_*.deb "$work/pkg"
  cp "$work/pkg/bin/busybox" "$work/busybox"
fi
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,proc,dev,tmp,work,root,home,var,run,sys}
install -m 0755 "$work/busybox" "$tmp/bin/busybox"
for applet in $("$tmp/bin/busybox" --list-full); do
  [ "$applet" = "bin/busybox" ] && continue
  mkdir -p "$tmp/$(dirname "$applet")"
  ln -sf /bin/busybox "$tmp/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/work:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tmp/etc/passwd"
printf 'root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n' >"$tmp/etc/group"
chmod 1777 "$tmp/tmp"
echo "$want" >"$tmp/.sandpit-recipe"
rm -rf "$out"
mv "$tmp" "$out"
echo "built $out"
