#!/usr/bin/env bash
# Builds a Debian (bookworm) root filesystem with mmdebstrap from Debian's own packages (no
# container registry) and packs it into an OCI image layout.
# Usage: debian.sh RECIPE_DIR OUT_LAYOUT PACKAGES CMD_JSON
# Skipped when OUT_LAYOUT was built from the same recipe (stamp = hash of the recipe files).
set -euo pipefail
recipe=${1:?recipe dir}; out=${2:?out layout}; packages=${3:?packages}; cmd=${4:-[]}
lib=$(cd "$(dirname "$0")" && pwd)
want=$(cat "$lib/debian.sh" "$lib/oci-pack.py" "$recipe"/build.sh "$recipe"/env.json | sha256sum | cut -d' ' -f1)
stamp="$out.stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$out/index.json" ]; then
  exit 0
fi
start=$(date +%s)
name=$(basename "$recipe")
echo "sandpit: building the $name image from Debian's packages ($packages): about 1-2 min on 2 cores"
work=$(mktemp -d "${TMPDIR:-/tmp}/sandpit-rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
# essential: only Essential:yes packages and what we ask for (no apt); no docs, man pages or
# locales; apt's lists and caches dropped.
# Not --quiet: its steps (download, extract, install) are the progress of this minute.
mmdebstrap --mode=root --variant=essential --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old' \
  --customize-hook='mkdir -p "$1"/work "$1"/tmp && chmod 1777 "$1"/tmp' \
  --customize-hook='grep -q "^sandbox:" "$1"/etc/passwd || echo "sandbox:x:1000:1000:sandbox:/work:/bin/sh" >>"$1"/etc/passwd' \
  --customize-hook='grep -q "^sandbox:" "$1"/etc/group || echo "sandbox:x:1000:" >>"$1"/etc/group' \
  bookworm "$work/root" "$sources"
echo "sandpit: packing $name into an OCI image layout (one gzip'd layer of $(du -sh "$work/root" | cut -f1))"
python3 "$lib/oci-pack.py" "$work/root" "$out" --cmd "$cmd"
echo "$want" >"$stamp"
echo "sandpit: built $out in $(( $(date +%s) - start )) s"
