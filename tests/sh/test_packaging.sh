#!/usr/bin/env bash
# Packaging: the systemd unit passes `systemd-analyze verify` (as the Debian package installs
# it, and as `make install` does); `make deb` builds the package; it holds what it should; it
# installs into a scratch root (dpkg --root, its postinst run there) and is removed again;
# and the engine runs under the unit's hardening (its mount and privilege restrictions
# reproduced in a private mount namespace: this machine has no systemd as PID 1 to start it).
# Needs SANDPIT_TEST_ROOTFS (the busybox rootfs, which `make test` exports): the scratch
# root is a copy of it, so that the maintainer scripts have a shell to run in.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
rootfs=${SANDPIT_TEST_ROOTFS:?run through make test (SANDPIT_TEST_ROOTFS: the busybox rootfs)}
work=$(mktemp -d /var/tmp/sandpit-packaging.XXXXXX)
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAILED: $*"; exit 1; }

# --- The Debian package.
make -C "$repo" --no-print-directory deb
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
deb="$repo/target/debian/sandpit_${version}-1_$(dpkg --print-architecture).deb"
[ -f "$deb" ] || fail "no $deb"
dpkg-deb -c "$deb" | awk '{print $NF}' >"$work/contents"
for path in ./usr/bin/sandpit ./usr/lib/systemd/system/sandpit.service \
  ./usr/share/doc/sandpit/README.md ./usr/share/doc/sandpit/copyright; do
  grep -qx "$path" "$work/contents" || { cat "$work/contents"; fail "$path is not in the package"; }
done
dpkg-deb -f "$deb" Package | grep -qx sandpit || fail "package name"
dpkg-deb -f "$deb" Depends | grep -q 'libc6' || fail "Depends: $(dpkg-deb -f "$deb" Depends)"
mkdir "$work/control" && dpkg-deb -e "$deb" "$work/control"
grep -q 'mkdir -p "${DPKG_ROOT:-}/var/lib/sandpit"' "$work/control/postinst" || fail "postinst does not create the data dir"
grep -Eq "deb-systemd-helper enable '?sandpit.service" "$work/control/postinst" || fail "postinst does not enable the unit"
grep -Eq "_dh_action=start" "$work/control/postinst" && grep -Eq "deb-systemd-invoke .* '?sandpit.service" "$work/control/postinst" ||
  fail "postinst does not start the unit"
echo "deb: $(basename "$deb"), $(du -h "$deb" | cut -f1), Depends: $(dpkg-deb -f "$deb" Depends)"

# --- Installed into a scratch root: a copy of the busybox rootfs with an empty dpkg database.
root="$work/root"
cp -a "$rootfs" "$root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
# Its dependencies (libc6) are not in the scratch database; the host's satisfy them.
# The maintainer scripts run chrooted into it (its busybox sh).
dpkg --root="$root" --force-depends -i "$deb" >"$work/dpkg.out" 2>&1 || { cat "$work/dpkg.out"; fail "dpkg -i"; }
dpkg --root="$root" -s sandpit | grep -qx 'Status: install ok installed' || fail "not installed"
[ -d "$root/var/lib/sandpit" ] || fail "the postinst did not create /var/lib/sandpit"
[ "$(stat -c %a "$root/var/lib/sandpit")" = 700 ] || fail "/var/lib/sandpit mode $(stat -c %a "$root/var/lib/sandpit")"
cmp "$root/usr/lib/systemd/system/sandpit.service" "$repo/packaging/sandpit.service" || fail "unit differs"
"$root/usr/bin/sandpit" --version | grep -q "^sandpit $version" || fail "the installed binary does not run"
dpkg --root="$root" -r sandpit >"$work/dpkg-r.out" 2>&1 || { cat "$work/dpkg-r.out"; fail "dpkg -r"; }
[ ! -e "$root/usr/bin/sandpit" ] || fail "dpkg -r left the binary"
[ -d "$root/var/lib/sandpit" ] || fail "dpkg -r removed the data directory"
echo "deb: installs into a scratch root (postinst: /var/lib/sandpit 0700), runs, and is removed"

# --- systemd-analyze verify: the unit as the package installs it (/usr/bin/sandpit) and as
# `make install` writes it (/usr/local/bin/sandpit). The binaries appear at those paths only
# inside a private mount namespace (an overlay), so that the unit's ExecStart checks out.
make -C "$repo" --no-print-directory install DESTDIR="$work/dest" ENVS=busybox >"$work/install.out" 2>&1 ||
  { cat "$work/install.out"; fail "make install DESTDIR=…"; }
for f in usr/local/bin/sandpit usr/local/lib/systemd/system/sandpit.service \
  usr/local/share/doc/sandpit/README.md var/lib/sandpit/envs/busybox.json; do
  [ -e "$work/dest/$f" ] || fail "make install did not write $f"
done
grep -qx 'ExecStart=/usr/local/bin/sandpit --data /var/lib/sandpit serve --listen 127.0.0.1:8080' \
  "$work/dest/usr/local/lib/systemd/system/sandpit.service" || fail "make install's unit: wrong ExecStart"
mkdir -p "$work/bin"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/systemd/system/sandpit.service >"$work/sandpit.service"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/sandpit >"$work/bin/sandpit"
chmod 0755 "$work/bin/sandpit"
export work
unshare --mount --propagation private bash -euo pipefail -c '
  mount -t overlay overlay -o lowerdir="$work/bin":/usr/bin /usr/bin
  mount -t overlay overlay -o lowerdir="$work/dest/usr/local":/usr/local /usr/local
  systemd-analyze verify "$work/sandpit.service"
  systemd-analyze verify /usr/local/lib/systemd/system/sandpit.service
' || fail "systemd-analyze verify"
echo "unit: systemd-analyze verify passes (package and make install)"
make -C "$repo" --no-print-directory uninstall DESTDIR="$work/dest" >/dev/null
for f in usr/local/bin/sandpit usr/local/lib/systemd/system/sandpit.service usr/local/share/doc/sandpit; do
  [ ! -e "$work/dest/$f" ] || fail "make uninstall left $f"
done
[ -e "$work/dest/var/lib/sandpit/envs/busybox.json" ] || fail "make uninstall removed the data"
[ "$(stat -c %a "$work/dest/var/lib/sandpit")" = 700 ] || fail "make install: data dir mode $(stat -c %a "$work/dest/var/lib/sandpit")"
echo "make install/uninstall: binary, unit, README, data dir 0700 with the environments; uninstall keeps the data"

# --- The engine under the unit's hardening. The unit's hardening directives must be the ones
# reproduced here (a new one: reproduce it below too).
unit="$work/sandpit.service"
hardening=$(grep -E '^(Protect|Private|NoNewPrivileges|Restrict|SystemCall|Capability|Lock|MemoryDeny|ReadOnly|ReadWrite|Inaccessible|Device|IPAddress|UMask|Delegate|StateDirectory|RuntimeDirectory)' "$unit" | sort | tr '\n' ' ')
expected='Delegate=yes NoNewPrivileges=yes PrivateTmp=yes ProtectHome=yes ProtectSystem=strict RuntimeDirectory=sandpit RuntimeDirectoryMode=0755 StateDirectory=sandpit StateDirectoryMode=0700 '
[ "$hardening" = "$expected" ] || fail "the unit's hardening is now: $hardening (reproduce it in this test)"
made_mountpoint=""
if [ ! -e /var/lib/sandpit ]; then mkdir /var/lib/sandpit; made_mountpoint=1; fi
trap 'rm -rf "$work"; [ -z "$made_mountpoint" ] || rmdir /var/lib/sandpit 2>/dev/null || true' EXIT
mkdir -p /run/sandpit   # the engine's own runtime directory: any run creates it
mkdir -m 0700 "$work/state"
export repo
unshare --mount --net --propagation private bash -euo pipefail -c '
  ip link set lo up
  mount -t overlay overlay -o lowerdir="$work/bin":/usr/bin /usr/bin
  # What `make install` does before the service starts: the environment imported.
  /usr/bin/sandpit --data "$work/state" env import "$repo/build/oci/busybox" --envid busybox >/dev/null
  # StateDirectory=sandpit (0700, writable).
  mount --bind "$work/state" /var/lib/sandpit
  # RuntimeDirectory=sandpit (0755, fresh and writable).
  mount -t tmpfs -o mode=0755 tmpfs /run/sandpit
  # PrivateTmp=yes.
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  mount -t tmpfs -o mode=1777 tmpfs /var/tmp
  # ProtectHome=yes.
  for d in /home /root /run/user; do
    [ -d "$d" ] && mount -t tmpfs -o ro,mode=0 tmpfs "$d"
  done
  # ProtectSystem=strict: the host read-only, but the API file systems and the state dir.
  mount -o remount,bind,ro /
  if touch /etc/sandpit-hardening-probe 2>/dev/null; then echo "/ is writable"; exit 1; fi
  echo "input file" >/tmp/in.txt
  # NoNewPrivileges=yes.
  nnp="setpriv --no-new-privs"
  out=$($nnp /usr/bin/sandpit run --env busybox --copy-in /tmp/in.txt:in.txt --json -- /bin/sh -c "cat in.txt; grep NoNewPrivs /proc/self/status; echo piped | cat")
  echo "$out" | grep -q "\"end_reason\":\"normal\"" || { echo "run under the hardening: $out"; exit 1; }
  echo "$out" | grep -q "input file" || { echo "copy-in under the hardening: $out"; exit 1; }
  # The service itself: serve, one execution through the API.
  $nnp /usr/bin/sandpit --data /var/lib/sandpit serve --listen 127.0.0.1:8080 >/tmp/serve.log 2>&1 &
  server=$!
  for i in $(seq 1 300); do
    curl -s -o /dev/null http://127.0.0.1:8080/api/v1/openapi.json && break
    kill -0 $server 2>/dev/null || { cat /tmp/serve.log; exit 1; }
    sleep 0.2
  done
  token=$(cat /var/lib/sandpit/master_token)
  res=$(curl --fail-with-body -s -H "Authorization: Bearer $token" -H "Content-Type: application/json" \
    -d "{\"environment\":\"busybox\",\"command\":[\"sh\",\"-c\",\"cat in.txt\"],\"files\":{\"in.txt\":\"served\"},\"wait\":true}" \
    http://127.0.0.1:8080/api/v1/executions)
  kill -TERM $server; wait $server || true
  echo "$res" | grep -q "\"end_reason\":\"normal\"" && echo "$res" | grep -q "served" ||
    { echo "execution under the hardening: $res"; cat /tmp/serve.log; exit 1; }
' || fail "the engine under the unit's hardening"
echo "unit: the engine runs and serves under ProtectSystem=strict (+ StateDirectory, RuntimeDirectory), ProtectHome, PrivateTmp, NoNewPrivileges"
