#!/usr/bin/env bash
# tools/apt.sh waits, with a message, while another process holds apt's locks, then goes on.
# Runs in a private mount namespace where apt's lock files, package lists and cache are
# private copies: the host's apt (and anyone using it) is not blocked or touched.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/sandpit-apt-lock.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Holds an fcntl lock (the kind apt and dpkg take) on $1 for $2 seconds, then releases it.
hold() {
  python3 - "$1" "$2" "$work/held-$(basename "$1")" <<'PY' &
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.lockf(f, fcntl.LOCK_EX)
open(sys.argv[3], "w").close()
time.sleep(float(sys.argv[2]))
PY
  while [ ! -e "$work/held-$(basename "$1")" ]; do sleep 0.1; done
}

export -f hold
export work repo
unshare --mount --propagation private bash -euo pipefail -c '
  mount -t tmpfs tmpfs /var/lib/apt/lists && mkdir -p /var/lib/apt/lists/partial
  mount -t tmpfs tmpfs /var/cache/apt && mkdir -p /var/cache/apt/archives/partial
  for f in lock lock-frontend; do
    touch "$work/dpkg-$f"; mount --bind "$work/dpkg-$f" /var/lib/dpkg/$f
  done

  # The package lists lock (apt-get update): apt fails at once; tools/apt.sh waits.
  # No sources: the update takes the lock and fetches nothing (no network needed).
  hold /var/lib/apt/lists/lock 4
  bash "$repo/tools/apt.sh" get update -q -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/nonexistent \
    >"$work/update.out" 2>&1 || { cat "$work/update.out"; exit 1; }
  grep "sandpit: waiting for apt.s lock: Could not get lock /var/lib/apt/lists/lock" "$work/update.out" \
    || { echo "no waiting message:"; cat "$work/update.out"; exit 1; }

  # dpkg'"'"'s frontend lock (apt-get install): apt waits itself (DPkg::Lock::Timeout), saying so.
  # busybox-static is installed already: apt takes the lock and has nothing to do.
  hold /var/lib/dpkg/lock-frontend 4
  bash "$repo/tools/apt.sh" get install -y -q busybox-static >"$work/install.out" 2>&1 || { cat "$work/install.out"; exit 1; }
  grep -m1 "Waiting for cache lock" "$work/install.out" \
    || { echo "no waiting message:"; cat "$work/install.out"; exit 1; }

  # install-missing with nothing missing does not touch apt at all.
  rm -f "$work/held-lock-frontend"
  hold /var/lib/dpkg/lock-frontend 60
  holder=$!
  out=$(bash "$repo/tools/apt.sh" install-missing busybox-static python3 2>&1)
  kill "$holder"
  [ -z "$out" ] || { echo "install-missing printed: $out"; exit 1; }
  wait
'
echo "apt lock: waits for the lists lock and the dpkg lock, with a message"
