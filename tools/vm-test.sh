#!/usr/bin/env bash
# vm-test.sh: runs the test binaries (built here, on the host) inside throwaway VMs that boot
# Debian's own kernels with cgroup v2 (tools/v2vm.sh), one VM per kernel × placement, and
# fails when a test fails there or a cgroup is left behind.
#
#   vm-test.sh [--only 'SUITE:PLACEMENT ...'] BIN...
#
# Default matrix (VM_TEST_MATRIX or --only overrides it): Debian 12's 6.1 ("stock") and 6.12
# (bookworm-backports), each in the root cgroup and in a delegated service (--nested), 6.1 in a
# login session scope beside a shell (--session), plus the refusal tests without delegation
# (--nodelegate) on 6.1: about 32 minutes on 2 cores. Inside each VM every binary runs with
# two test threads; after them no `sandpit-*` cgroup may be left anywhere.
# When no VM can be booted (no QEMU, no kernel package, no room) it says why, loudly, and exits
# 0 unless VM_TEST_REQUIRED=1: a host that cannot boot VMs still runs the host suite.
# Prints one line per VM and a closing "N passed, N failed" line (tests, all VMs together).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ "${1:-}" = --inside ]; then
  # In the VM: run each binary, count, then look for leftovers.
  shift
  filter=${VM_TEST_FILTER:-}
  # Timing properties of the emulator (TCG), not of the kernel; they run on the host: gcc and
  # python3 start-up need more than their tests' CPU limits there, and the supervisor's
  # wakeups lag enough to exceed the 10 % of the CPU-time limit and measurement tests (CPU
  # limits are still crossed in the VM: cli_run's timeouts test, the envs' limits).
  skips=(--skip c_program_compiles_and_runs_in_the_c_environment
         --skip python_program_runs_in_the_python3_environment_with_limits
         --skip cpu_time_of_500ms_is_measured_within_10_percent
         --skip cpu_limit_of_1s_ends_a_busy_loop_at_most_1_1s)
  echo "vm-test: skipped in the VM (emulation too slow): $(printf "%s " "${skips[@]}" | sed "s/--skip //g")" >&2
  status=0
  for bin in "$@"; do
    name=$(basename "$bin" | sed 's/-[0-9a-f]\{16\}$//')
    out=$(mktemp)
    t0=$(date +%s)
    # shellcheck disable=SC2086
    timeout "${VM_TEST_BIN_TIMEOUT:-600}" "$bin" --test-threads=2 "${skips[@]}" $filter >"$out" 2>&1
    rc=$?
    summary=$(grep -E '^test result:' "$out" | tail -1)
    p=$(sed -n 's/.* \([0-9]*\) passed.*/\1/p' <<<"$summary")
    f=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$summary")
    echo "vm-test: $name: ${p:-0} passed, ${f:-0} failed (exit $rc, $(( $(date +%s) - t0 ))s)"
    if [ "$rc" != 0 ]; then
      status=1
      [ -n "$summary" ] || echo "vm-test: $name: no result line (timed out or crashed)"
      grep -E '^test .* FAILED$|panicked at|^---- ' "$out" | head -20 | sed 's/^/    /'
      grep -A12 '^---- ' "$out" | head -60 | sed 's/^/    | /'
    fi
    rm -f "$out"
  done
  # A few API tests kill their server with SIGKILL (a crash): what it leaves, the next
  # engine's start removes. One last engine start and stop, then nothing may be left.
  if [ "$filter" = "" ] && [ -x "$(dirname "$1")/../sandpit" ]; then
    "$(dirname "$1")/../sandpit" --data "$(mktemp -d)" run --rootfs "$SANDPIT_TEST_ROOTFS" -- /bin/true ||
      { echo "vm-test: the last sandpit run failed"; status=1; }
  fi
  left=$(find /sys/fs/cgroup -name 'sandpit-*' -type d 2>/dev/null)
  if [ -n "$left" ]; then
    echo "vm-test: cgroups left after the tests:"; echo "$left" | sed 's/^/    /'
    status=1
  fi
  sub=$(cat /sys/fs/cgroup/system.slice/sandpit.service/cgroup.subtree_control 2>/dev/null || true)
  if [ -n "$sub" ]; then
    echo "vm-test: controllers still enabled in the service's cgroup: $sub"; status=1
  fi
  exit $status
fi

only=${VM_TEST_MATRIX:-}
if [ "${1:-}" = --only ]; then only=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: vm-test.sh [--only 'SUITE:PLACEMENT ...'] BIN..." >&2; exit 2; }
bins=("$@")
matrix=${only:-"stock:root stock:nested stock:session stock:nodelegate bookworm-backports:root bookworm-backports:nested"}

# Can a VM boot here at all? The first boot also fills the kernel cache (once per machine).
skip() {
  echo "vm-test: ======================================================================"
  echo "vm-test: SKIPPED, NO VM: $*"
  echo "vm-test: the kernel 6.1/6.12 and cgroup v2 tests did NOT run"
  echo "vm-test: ======================================================================"
  [ "${VM_TEST_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
}
[ "$(id -u)" = 0 ] || skip "not root"
probe=$(bash "$here/v2vm.sh" --timeout 300 -- true 2>&1) || skip "tools/v2vm.sh could not boot one: $(tail -3 <<<"$probe" | tr '\n' ' ')"

total_p=0 total_f=0 failed_vms=()
for cell in $matrix; do
  suite=${cell%%:*} placement=${cell#*:}
  filter=''
  run_bins=("${bins[@]}")
  if [ "$placement" = nodelegate ]; then
    # Without delegation nothing runs: only the refusal tests apply (in the placement tests).
    filter=without_delegation
    run_bins=()
    for b in "${bins[@]}"; do
      case $(basename "$b") in placement-*|cli_placement-*) run_bins+=("$b") ;; esac
    done
  fi
  start=$(date +%s)
  log=$(mktemp)
  VM_TEST_FILTER=$filter bash "$here/v2vm.sh" --kernel "$suite" --"$placement" --timeout "${VM_TEST_TIMEOUT:-1500}" \
    -- bash "$here/vm-test.sh" --inside "${run_bins[@]}" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  p=$(sed -n 's/^vm-test: .*: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p' "$log" | awk "{s+=\$1} END {print s+0}")
  f=$(sed -n 's/^vm-test: .*: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p' "$log" | awk "{s+=\$1} END {print s+0}")
  p=${p:-0} f=${f:-0}
  total_p=$((total_p + p)) total_f=$((total_f + f))
  echo "vm-test: kernel $suite, cgroup v2, $placement: $p passed, $f failed, ${secs}s (exit $rc)"
  if [ "${VM_TEST_VERBOSE:-0}" = 1 ]; then grep '^vm-test' "$log" | sed 's/^/    /'; fi
  if [ "$rc" != 0 ]; then
    failed_vms+=("$cell")
    grep -v ' 0 failed (exit 0, [0-9]*s)$' "$log" | sed 's/^/    /' | tail -80
    # A VM that failed without a failing test still counts as a failure.
    [ "$f" != 0 ] || total_f=$((total_f + 1))
  fi
  rm -f "$log"
done
echo "vm-test: $total_p passed, $total_f failed"
[ ${#failed_vms[@]} = 0 ] || { echo "vm-test: failed in: ${failed_vms[*]}"; exit 1; }
