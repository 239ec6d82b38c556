#!/usr/bin/env bash
# Side by side: the same program (/bin/true) in the same busybox rootfs under sandpit,
# bubblewrap, crun and runc (Debian's packages), N runs at 1, 2, 4 and 8 at a time (throughput with
# each runner's whole teardown included: a run counts when its command has exited).
# Prints per-run median/p90 latency (ms), runs/s, and sandpit's ratio to each peer.
#
# sandpit: a fresh sandbox per run with all 7 namespaces, its own cgroup (memory, pids,
# cpuacct), seccomp, rootfs read-only, tmpfs /work and /tmp, limits.
# bwrap: --unshare-all (no cgroup of its own: it has none).
# crun/runc: `crun spec` defaults with the rootfs read-only. On this hybrid cgroup-v1 host
# crun 1.8.1 refuses to run with /sys/fs/cgroup/unified mounted, so both run in a private
# mount namespace without it, crun with --cgroup-manager=disabled (no cgroup), runc with its
# own cgroupfs manager under a `sandpit-bench` cgroup path that this script removes.
# Usage: side_by_side.sh ROOTFS [N]
set -euo pipefail
rootfs=$(cd "${1:?rootfs dir}" && pwd); n=${2:-${BENCH_RUNS:-300}}
here=$(cd "$(dirname "$0")" && pwd)
sandpit=${SANDPIT:-$here/../target/release/sandpit}
work=$(mktemp -d /tmp/sandpit-sbs.XXXXXX)
cleanup() {
  # runc/crun put `sandpit-bench` below this process's own cgroup of each hierarchy (which
  # need not be the hierarchy's root, and includes the named systemd one): every one of them.
  find /sys/fs/cgroup -maxdepth 4 -type d -name sandpit-bench 2>/dev/null | while read -r d; do
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bundle"
(cd "$work/bundle" && crun spec)
python3 "$here/bundle.py" "$work/bundle/config.json" "$rootfs" / - /bin/true
mkdir -p "$work/bundle-runc"
cp "$work/bundle/config.json" "$work/bundle-runc/config.json"
python3 "$here/bundle.py" "$work/bundle-runc/config.json" "$rootfs" / sandpit-bench/run /bin/true

measure() { # jobs name command...
  local j=$1; shift; local name=$1; shift
  case $name in
    crun|runc) unshare --mount --propagation private sh -c \
        'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"' sh \
        python3 "$here/latency.py" -j "$j" "$n" "$@" ;;
    *) python3 "$here/latency.py" -j "$j" "$n" "$@" ;;
  esac
}

declare -A res
for j in 1 2 4 8; do
  res[sandpit,$j]=$(measure $j sandpit "$sandpit" run --rootfs "$rootfs" --memory 256M -- /bin/true)
  res[bwrap,$j]=$(measure $j bwrap bwrap --unshare-all --die-with-parent --ro-bind "$rootfs" / --proc /proc --dev /dev --tmpfs /tmp -- /bin/true)
  res[crun,$j]=$(measure $j crun crun --cgroup-manager=disabled run --bundle "$work/bundle" "sbs-crun-$$-{i}")
  res[runc,$j]=$(measure $j runc runc run --bundle "$work/bundle-runc" "sbs-runc-$$-{i}")
done

echo "/bin/true in busybox rootfs, N=$n runs per row; latency in ms (spawn to exit of the whole command)"
printf '%-10s %4s %9s %9s %6s %9s %14s\n' runner jobs median p90 fails runs/s "sandpit/peer"
for j in 1 2 4 8; do
  read -r smed _ _ _ <<<"${res[sandpit,$j]}"
  for p in sandpit bwrap crun runc; do
    read -r med p90 fails rps <<<"${res[$p,$j]}"
    ratio=$(python3 -c 'import sys; a,b=sys.argv[1:]; print("%.2f" % (float(a)/float(b)) if "nan" not in (a,b) else "n/a")' "$smed" "$med")
    printf '%-10s %4s %9s %9s %6s %9s %14s\n' "$p" "$j" "$med" "$p90" "$fails" "$rps" "$ratio"
  done
done
