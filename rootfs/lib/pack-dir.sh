#!/usr/bin/env bash
# Packs an already built root filesystem directory (e.g. build/rootfs/busybox) into an OCI
# image layout. Skipped when the directory's recipe stamp and the packer are unchanged.
# Usage: pack-dir.sh ROOTFS_DIR OUT_LAYOUT CMD_JSON
set -euo pipefail
dir=${1:?rootfs dir}; out=${2:?out layout}; cmd=${3:-[]}
lib=$(cd "$(dirname "$0")" && pwd)
want=$(cat "$dir/.sandpit-recipe" "$lib/oci-pack.py" "$lib/pack-dir.sh" | sha256sum | cut -d' ' -f1)
stamp="$out.stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$out/index.json" ]; then
  exit 0
fi
python3 "$lib/oci-pack.py" "$dir" "$out" --cmd "$cmd"
echo "$want" >"$stamp"
