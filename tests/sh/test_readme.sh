#!/usr/bin/env bash
# Every command of README.md's ```sh blocks, run exactly as printed, in order, from the
# checkout, as a newcomer would: `sandpit` only from PATH, no SANDPIT_* variables, the default
# data directory /var/lib/sandpit fresh and empty. README.md's marks:
#   `# [manual]` at the end of a line: not run here (it blocks, runs these tests, or needs
#                systemd as PID 1 or the internet);
#   `# [server]`: keeps running: started in the background; the test waits until the API on
#                127.0.0.1:8080 answers, runs the next commands, and stops it at the end.
# Isolation: a private mount namespace where /var/lib/sandpit is a fresh directory and
# /usr/local an overlay (what `make install` writes there stays in the test), and a private
# network namespace (port 8080 is ours). The host's /var/lib/sandpit, /usr/local and
# network are not touched.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /var/tmp/sandpit-readme.XXXXXX)
chmod 0755 "$work"
made_mountpoint=""
cleanup() {
  rm -rf "$work"
  if [ -n "$made_mountpoint" ]; then rmdir /var/lib/sandpit 2>/dev/null || true; fi
}
trap cleanup EXIT
if [ ! -e /var/lib/sandpit ]; then
  mkdir /var/lib/sandpit
  made_mountpoint=1
fi

# The commands: one per line, `kind<TAB>command` (kind: run, server, manual).
python3 - "$repo/README.md" >"$work/commands" <<'PY'
import re, sys
kinds = {"[manual]": "manual", "[server]": "server"}
inside, pending = False, ""
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    if line.startswith("```"):
        inside = (not inside) and line.strip() == "```sh"
        continue
    if not inside:
        continue
    if pending:
        line = pending + " " + line.strip()
        pending = ""
    if line.endswith("\\"):
        pending = line[:-1].rstrip()
        continue
    if not line.strip() or line.lstrip().startswith("#"):
        continue
    kind = "run"
    m = re.search(r"#\s*(\[(manual|server)\])", line)
    if m:
        kind = kinds[m.group(1)]
    print(f"{kind}\t{line}")
PY
echo "README.md: $(grep -c $'^run\t' "$work/commands") commands to run, $(grep -c $'^server\t' "$work/commands") server(s), $(grep -c $'^manual\t' "$work/commands") manual"
grep -q $'^run\t' "$work/commands" || { echo "no command found in README.md"; exit 1; }

# PATH as a fresh root shell has it, plus cargo's (rustup's) directory.
cargo_dir=$(dirname "$(command -v cargo)")
clean_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$cargo_dir"
# rustup's and cargo's homes, when not the default ones.
toolchain_env=()
[ -z "${RUSTUP_HOME:-}" ] || toolchain_env+=("RUSTUP_HOME=$RUSTUP_HOME")
[ -z "${CARGO_HOME:-}" ] || toolchain_env+=("CARGO_HOME=$CARGO_HOME")
printf '%s\n' "${toolchain_env[@]}" >"$work/toolchain.env"
# apt, if a README command calls it, waits for a lock another process holds.
printf 'DPkg::Lock::Timeout "600";\n' >"$work/apt.conf"

export repo work clean_path
unshare --mount --net --propagation private bash -euo pipefail -c '
  ip link set lo up
  mkdir -p "$work/data" "$work/usr-local-upper" "$work/usr-local-work"
  chmod 0755 "$work/data"
  mount --bind "$work/data" /var/lib/sandpit
  mount -t overlay overlay \
    -o lowerdir=/usr/local,upperdir="$work/usr-local-upper",workdir="$work/usr-local-work" /usr/local

  mapfile -t toolchain_env < <(grep . "$work/toolchain.env" || true)
  server_pids=()
  stop_servers() {
    for pid in "${server_pids[@]}"; do
      kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pid in "${server_pids[@]}"; do
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    done
  }
  trap stop_servers EXIT

  n=0
  while IFS=$'"'"'\t'"'"' read -r kind cmd; do
    n=$((n + 1))
    case "$kind" in
      manual) echo "--- [$n] skipped (manual): $cmd"; continue ;;
      server)
        echo "--- [$n] server: $cmd"
        setsid env -i HOME="$HOME" PATH="$clean_path" TERM=dumb APT_CONFIG="$work/apt.conf" "${toolchain_env[@]}" \
          bash -o pipefail -c "cd \"$repo\" && $cmd" >"$work/server-$n.log" 2>&1 </dev/null &
        pid=$!
        server_pids+=("$pid")
        # Bounded wait: the first start may import environments.
        for i in $(seq 1 900); do
          if curl -s -o /dev/null http://127.0.0.1:8080/api/v1/openapi.json; then break; fi
          if ! kill -0 "$pid" 2>/dev/null; then
            echo "server exited before answering:"; cat "$work/server-$n.log"; exit 1
          fi
          [ "$i" -lt 900 ] || { echo "server did not answer in 900 s:"; cat "$work/server-$n.log"; exit 1; }
          sleep 1
        done
        echo "    answering on 127.0.0.1:8080"
        ;;
      run)
        echo "--- [$n] $cmd"
        rc=0
        env -i HOME="$HOME" PATH="$clean_path" TERM=dumb APT_CONFIG="$work/apt.conf" "${toolchain_env[@]}" \
          bash -o pipefail -c "cd \"$repo\" && $cmd" >"$work/out-$n" 2>&1 </dev/null || rc=$?
        if [ "$rc" -ne 0 ]; then
          echo "FAILED (exit $rc): $cmd"
          sed "s/^/    /" "$work/out-$n" | tail -40
          exit 1
        fi
        sed "s/^/    /" "$work/out-$n" | tail -5
        ;;
    esac
  done <"$work/commands"
'
echo "README: every command ran as printed"
