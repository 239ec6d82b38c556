#!/usr/bin/env bash
# tools/apt.sh waits, with a message, while another process holds apt's locks, then goes on.
# Runs in a private mount namespace where apt's and dpkg's state (/var/lib/apt, /var/lib/dpkg,
# /var/cache/apt) are private copies: the host's apt, and anyone using it, is neither blocked
# nor touched, whatever the host's apt is doing meanwhile. No step is timed: each lock is
# held until apt.sh says it is waiting, then released, and apt.sh must then finish.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/sandpit-apt-lock.XXXXXX)
trap 'rm -rf "$work"' EXIT

export work repo
unshare --mount --propagation private bash -euo pipefail -c '
  fail() { echo "apt lock: $*"; exit 1; }
  holder=
  trap '"'"'[ -z "$holder" ] || kill "$holder" 2>/dev/null || true'"'"' EXIT

  # Private state: a copy of dpkg'"'"'s database (its locks with it), apt'"'"'s with empty lists.
  cp -a /var/lib/dpkg "$work/dpkg" && mount --bind "$work/dpkg" /var/lib/dpkg
  mkdir -p "$work/apt/lists/partial" "$work/cache/archives/partial"
  [ -e /var/lib/apt/extended_states ] && cp -a /var/lib/apt/extended_states "$work/apt/"
  mount --bind "$work/apt" /var/lib/apt
  mount --bind "$work/cache" /var/cache/apt

  # Holds an fcntl lock (the kind apt and dpkg take) on $1 until killed; returns once held.
  hold() {
    python3 - "$1" "$work/held" >>"$work/hold.log" 2>&1 <<"PY" &
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.lockf(f, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
time.sleep(600)
PY
    holder=$!
    for _ in $(seq 300); do [ -e "$work/held" ] && break; sleep 0.1; done
    [ -e "$work/held" ] || fail "the lock on $1 was not taken"
    rm -f "$work/held"
  }

  # Runs apt.sh ARGS... in the background, output to $out; releases the lock held once
  # the output has a line matching $pattern; fails unless apt.sh then succeeds.
  waits_then_goes_on() {
    local pattern=$1; shift
    out="$work/out"
    bash "$repo/tools/apt.sh" "$@" >"$out" 2>&1 &
    local apt=$!
    for _ in $(seq 600); do
      grep -q "$pattern" "$out" && break
      kill -0 "$apt" 2>/dev/null || break
      sleep 0.1
    done
    grep -q "$pattern" "$out" || { kill "$apt" "$holder" 2>/dev/null; cat "$out"; fail "apt.sh $* said nothing of waiting ($pattern)"; }
    kill "$holder"; wait "$holder" || true
    wait "$apt" || { cat "$out"; fail "apt.sh $* failed once the lock was free"; }
  }

  # The package lists lock (apt-get update): apt fails at once; tools/apt.sh retries.
  # No sources: the update takes the lock and fetches nothing (no network needed).
  hold /var/lib/apt/lists/lock
  waits_then_goes_on "sandpit: waiting for apt.s lock: Could not get lock /var/lib/apt/lists/lock" \
    get update -q -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/nonexistent

  # dpkg'"'"'s frontend lock (apt-get install): apt waits itself (DPkg::Lock::Timeout), saying so.
  # busybox-static is installed already: apt takes the lock and has nothing to do.
  hold /var/lib/dpkg/lock-frontend
  waits_then_goes_on "Waiting for cache lock" get install -y -q busybox-static

  # install-missing with nothing missing does not touch apt at all.
  hold /var/lib/dpkg/lock-frontend
  said=$(bash "$repo/tools/apt.sh" install-missing busybox-static python3 2>&1)
  kill "$holder"; wait "$holder" || true
  [ -z "$said" ] || fail "install-missing printed: $said"
'
echo "apt lock: waits for the lists lock and the dpkg lock, with a message"
