#!/usr/bin/env bash
# Imports built image layouts as environments of a data directory, with the metadata from
# rootfs/NAME/env.json. An environment already imported from the same layout is left alone;
# one from an older layout is replaced.
# Usage: import.sh SANDPIT_BIN DATA_DIR OCI_DIR NAME...
set -euo pipefail
bin=${1:?sandpit binary}; data=${2:?data dir}; oci=${3:?layout dir}; shift 3
repo=$(cd "$(dirname "$0")/../.." && pwd)
# Bumped when the layer store's on-disk form changes, so that `make rootfs` imports again.
store_format="layers v2: root-owned, writable by root only"
mkdir -p "$data"
for name in "$@"; do
  layout="$oci/$name"; meta="$repo/rootfs/$name/env.json"
  want=$( (cat "$layout/index.json" "$meta"; echo "$store_format") | sha256sum | cut -d' ' -f1)
  stamp="$data/.imported-$name"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$data/envs/$name.json" ]; then
    continue
  fi
  echo "sandpit: importing $name into $data (unpacking its layers)"
  field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$meta" "$1"; }
  envid=$(field envid)
  if [ -f "$data/envs/$envid.json" ]; then
    "$bin" --data "$data" env rm "$envid"
  fi
  "$bin" --data "$data" env import "$layout" --envid "$envid" --name "$(field name)" \
    --authors "$(field authors)" --description "$(field description)" >/dev/null
  echo "$want" >"$stamp"
  echo "sandpit: imported $envid into $data"
done
