#!/usr/bin/env bash
# Runs the shell tests (tests/sh/test_*.sh): what cargo's tests cannot reach (the README as
# printed, the Makefile, apt, the Debian package, the systemd unit). Each runs as root and
# cleans up after itself. Usage: tests/sh/run.sh [NAME...] (default: all).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -gt 0 ]; then
  tests=()
  for n in "$@"; do tests+=("$here/test_${n#test_}"); tests[-1]=${tests[-1]%.sh}.sh; done
else
  tests=("$here"/test_*.sh)
fi
passed=0 failed=0 names=()
# Each test's output is kept too, so that a failure's last lines come again at the very end
# (where a CI log's tail shows them).
logs=$(mktemp -d /tmp/sandpit-sh-tests.XXXXXX)
trap 'rm -rf "$logs"' EXIT
for t in "${tests[@]}"; do
  name=$(basename "$t" .sh)
  echo "=== $name"
  if bash "$t" 2>&1 | tee "$logs/$name"; (exit "${PIPESTATUS[0]}"); then
    echo "=== $name: ok"
    passed=$((passed + 1))
  else
    echo "=== $name: FAILED"
    failed=$((failed + 1))
    names+=("$name")
  fi
done
for name in "${names[@]}"; do
  echo "=== $name, its last 40 lines:"
  tail -n 40 "$logs/$name"
done
[ "$failed" -gt 0 ] && echo "failed: ${names[*]}"
echo "tests/sh: $passed ok, $failed failed"
[ "$failed" -eq 0 ]
