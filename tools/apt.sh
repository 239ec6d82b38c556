#!/usr/bin/env bash
# apt-get that waits for the package manager's locks instead of failing at once when another
# process (unattended-upgrades, another build, an admin) holds them.
#   tools/apt.sh install-missing PACKAGE...   installs those of PACKAGE... not installed yet
#   tools/apt.sh get ARGS...                   apt-get ARGS..., waiting for the locks
# SANDPIT_APT_WAIT (seconds, default 1800) bounds the wait.
set -euo pipefail
# apt's messages in English: the lock refusal is recognised by its text.
export LC_ALL=C.UTF-8 LANGUAGE=
wait_max=${SANDPIT_APT_WAIT:-1800}

# dpkg's locks: apt itself waits for them (DPkg::Lock::Timeout) and says so.
# The package lists' lock (apt-get update): apt has no timeout for it, so retry.
apt_get() {
  local waited=0 err rc
  err=$(mktemp)
  trap 'rm -f "$err"' RETURN
  while true; do
    rc=0
    if [ "$waited" -eq 0 ]; then
      # stderr shown as it comes (apt's own "Waiting for cache lock" included) and kept.
      { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$wait_max" "$@" \
          2>&1 1>&3 3>&- | tee "$err" 1>&2 3>&-; } 3>&1 || rc=$?
    else
      # Retrying: apt's refusals are not repeated; the rest is shown at the end.
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$wait_max" "$@" 2>"$err" || rc=$?
      grep -q '^E: Could not get lock' "$err" || cat "$err" >&2
    fi
    [ "$rc" -eq 0 ] && return 0
    if ! grep -q '^E: Could not get lock' "$err" || [ "$waited" -ge "$wait_max" ]; then
      return "$rc"
    fi
    if [ "$waited" -eq 0 ] || [ $((waited % 60)) -eq 0 ]; then
      echo "sandpit: waiting for apt's lock: $(grep -m1 '^E: Could not get lock' "$err" | sed 's/^E: //')" >&2
    fi
    sleep 5
    waited=$((waited + 5))
  done
}

case "${1:-}" in
  install-missing)
    shift
    missing=()
    for p in "$@"; do
      dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && exit 0
    echo "sandpit: installing Debian packages: ${missing[*]}"
    apt_get update -q
    apt_get install -y -q "${missing[@]}"
    ;;
  get)
    shift
    apt_get "$@"
    ;;
  *)
    echo "usage: $0 install-missing PACKAGE... | get APT-GET-ARGS..." >&2
    exit 2
    ;;
esac
