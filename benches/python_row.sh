#!/usr/bin/env bash
# The "python3 -c pass" row of the side-by-side comparison: per-run latency in the python3
# environment under sandpit, bubblewrap (the same unpacked rootfs, read-only) and crun (the
# same rootfs as an OCI bundle), median of N runs each, and the ratio to sandpit.
#
# crun runs with --cgroup-manager=disabled (it creates no cgroup at all) inside a private
# mount namespace that hides /sys/fs/cgroup/unified: crun 1.8.1 otherwise refuses this hybrid
# cgroup-v1 host ("cgroups in hybrid mode not supported"); see shared/research/peers.md.
# Usage: python_row.sh SANDPIT_BIN DATA_DIR [N]
set -euo pipefail
bin=${1:?sandpit binary}; data=${2:?data dir}; n=${3:-${PYTHON_ROW_RUNS:-50}}
here=$(cd "$(dirname "$0")" && pwd)
envjson="$data/envs/python3.json"
[ -f "$envjson" ] || { echo "python_row.sh: no python3 environment in $data (run make rootfs)" >&2; exit 1; }
# The python3 image has one layer: its store directory is the whole unpacked rootfs.
rootfs=$(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); assert len(e["layers"])==1; print(sys.argv[2]+"/layers/sha256/"+e["layers"][0].split(":")[1])' "$envjson" "$data")
work=$(mktemp -d /tmp/sandpit-pyrow.XXXXXX)
trap 'rm -rf "$work"' EXIT

# crun's bundle: `crun spec` defaults, minus cgroups (no resources, no cgroup ns or mount).
mkdir -p "$work/bundle"
(cd "$work/bundle" && crun spec)
python3 "$here/bundle.py" "$work/bundle/config.json" "$rootfs" /tmp - python3 -c pass

sp=$(python3 "$here/latency.py" "$n" "$bin" --data "$data" run --env python3 -- python3 -c pass)
bw=$(python3 "$here/latency.py" "$n" bwrap --unshare-all --die-with-parent --ro-bind "$rootfs" / \
  --proc /proc --dev /dev --tmpfs /tmp --tmpfs /work --chdir /work python3 -c pass)
cr=$(unshare --mount --propagation private sh -c \
  'umount /sys/fs/cgroup/unified 2>/dev/null; exec python3 "$0" "$1" crun --cgroup-manager=disabled run --bundle "$2" "sandpit-pyrow-$$-{i}"' \
  "$here/latency.py" "$n" "$work/bundle")

row() { # name "median p90 fails"
  set -- "$1" $2
  ratio=$(python3 -c 'import sys; a,b=sys.argv[1:]; print("%.2f" % (float(a)/float(b)) if b!="nan" and a!="nan" else "n/a")' "$2" "${sp%% *}")
  printf '%-12s %10s %10s %8s %10s\n' "$1" "$2" "$3" "$4" "$ratio"
}
echo "python3 -c pass, python3 environment, N=$n runs each (ms; ratio = median / sandpit's)"
printf '%-12s %10s %10s %8s %10s\n' runner median p90 fails ratio
row sandpit "$sp"
row bubblewrap "$bw"
row crun "$cr"
