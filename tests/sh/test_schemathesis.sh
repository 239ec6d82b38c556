#!/usr/bin/env bash
# The OpenAPI document against the server: schemathesis (pinned) runs `--checks all` against
# a live `sandpit serve` (loopback, a temp data dir, the busybox fixture as environment
# `busybox`), once with the master token and once with an API key's token. Every check runs;
# tests/sh/schemathesis.toml lists, per operation and with the reason, the answers a valid
# request may get for a rule JSON Schema cannot state (an id that must exist, an archive that
# must be an image, a path's length in bytes).
#
# schemathesis is installed from PyPI into a venv cached under /var/tmp/sandpit-build (by
# version); if that cannot be done (no python3 venv, PyPI unreachable) the test says why,
# loudly, and is skipped (exit 0). Bounded: a few examples per operation, a fixed seed
# (SANDPIT_SCHEMATHESIS_SEED to try another), about two minutes on 2 cores.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/tests/sh"
rootfs=${SANDPIT_TEST_ROOTFS:?run through make test (SANDPIT_TEST_ROOTFS: the busybox rootfs)}
version=4.32.5
venv=/var/tmp/sandpit-build/schemathesis-$version
sandpit="$repo/target/release/sandpit"
seed=${SANDPIT_SCHEMATHESIS_SEED:-20261124}
fail() { echo "FAILED: $*"; exit 1; }
skip() {
  echo "########################################################################"
  echo "## SKIPPED: schemathesis $version: $*"
  echo "########################################################################"
  exit 0
}
[ -x "$sandpit" ] || fail "no $sandpit (cargo build --release)"

# --- schemathesis, pinned, in its own venv (Debian's python3; `.installed` once complete).
if [ ! -e "$venv/.installed" ]; then
  python=/usr/bin/python3
  [ -x "$python" ] || python=$(command -v python3 || true)
  [ -n "$python" ] || skip "no python3"
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    bash "$repo/tools/apt.sh" install-missing python3-venv || skip "python3-venv could not be installed"
  fi
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" || skip "python3 -m venv $venv failed"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$version"; then
    rm -rf "$venv"
    skip "pip install schemathesis==$version failed (is PyPI reachable?)"
  fi
  touch "$venv/.installed"
fi
st="$venv/bin/st"
"$st" --version | grep -q "$version" || fail "$st is not schemathesis $version"

# --- The server.
work=$(mktemp -d /var/tmp/sandpit-schemathesis.XXXXXX)
chmod 0755 "$work"
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill -TERM -- "-$server" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
master=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir "$work/data"
SANDPIT_MASTER_TOKEN=$master SANDPIT_LOG=warn setsid "$sandpit" --data "$work/data" serve \
  --listen 127.0.0.1:0 --rootfs-env "busybox=$rootfs" --slots 2 --prepared 0 \
  >"$work/server.out" 2>"$work/server.err" </dev/null &
server=$!
addr=""
for _ in $(seq 1 300); do
  addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/server.out")
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.err"; fail "the server exited"; }
  sleep 0.1
done
[ -n "$addr" ] || fail "the server did not say where it listens"
base="http://$addr"
key=$(curl -sf -H "Authorization: Bearer $master" -H 'Content-Type: application/json' \
  -d '{"name": "schemathesis"}' "$base/api/v1/api_keys" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])') || fail "creating an API key"

# --- The runs: the master token (every route), then the key (its routes; 403 on the rest).
run() {
  local who=$1 token=$2 examples=$3 started rc=0
  started=$(date +%s)
  echo "--- schemathesis $version, --checks all, $who token, $examples examples per operation, seed $seed"
  # From the temp dir: schemathesis keeps .hypothesis/ and .schemathesis/ where it runs.
  # One worker: with two, hypothesis parses lambdas' source in both threads at once, and
  # Debian 12's Python 3.11 then fails now and then with a spurious "SystemError: AST
  # constructor recursion depth mismatch" (CPython gh-106905), a runtime error of the tool.
  (cd "$work" && "$st" --config-file "$here/schemathesis.toml" run "$base/api/v1/openapi.json" \
    --checks all -H "Authorization: Bearer $token" \
    --max-examples "$examples" --seed "$seed" --workers 1 \
    --request-timeout 30 --output-truncate true --no-color \
    >"$work/st-$who.out" 2>&1) || rc=$?
  tail -n 40 "$work/st-$who.out"
  echo "--- $who: exit $rc in $(($(date +%s) - started)) s"
  if [ "$rc" -ne 0 ]; then
    sed -n '/^=* \(FAILURES\|ERRORS\) =*$/,/^=* SUMMARY =*$/p' "$work/st-$who.out" | head -n 300
    fail "schemathesis found failures with the $who token"
  fi
}
run key "$key" 8
run master "$master" 25
kill -0 "$server" 2>/dev/null || fail "the server died during the run"
curl -sf -o /dev/null "$base/api/v1/openapi.json" || fail "the server no longer answers"
echo "schemathesis $version: --checks all clean (master token and an API key)"
