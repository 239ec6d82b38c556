#!/usr/bin/env bash
# CPU-time limit overshoot: a busy loop under a 1 s CPU limit, N runs; prints the median and
# the worst CPU time charged past the limit (ms). sandpit's figure is its own measurement (the
# cgroup's counter); the floor beside it is the kernel's RLIMIT_CPU (`prlimit --cpu=1`, the
# mechanism isolate's and nsjail's time limits build on), the process's CPU time from wait4.
# Usage: cpu_overshoot.sh SANDPIT_BIN ROOTFS [N]
set -euo pipefail
bin=${1:?sandpit binary}; rootfs=${2:?rootfs}; n=${3:-${OVERSHOOT_RUNS:-7}}
sp=()
rl=()
for _ in $(seq "$n"); do
  cpu=$("$bin" run --rootfs "$rootfs" --time 1s --wall-time 10s --json -- sh -c 'while :; do :; done' |
    python3 -c 'import json,sys; o=json.load(sys.stdin); assert o["timeout"]=="cpu", o; print(o["cpu_time_s"])')
  sp+=("$cpu")
  # RLIMIT_CPU of 1 s (soft = hard: the kernel kills at the limit), CPU time from wait4.
  rl+=("$(python3 -c '
import os, resource
pid = os.fork()
if pid == 0:
    resource.setrlimit(resource.RLIMIT_CPU, (1, 1))
    os.execvp("sh", ["sh", "-c", "while :; do :; done"])
_, _, ru = os.wait4(pid, 0)
print(ru.ru_utime + ru.ru_stime)')")
done
python3 - "${sp[*]}" "${rl[*]}" <<'PY'
import statistics, sys
def row(name, xs):
    over = [(float(x) - 1.0) * 1000 for x in xs.split()]
    print(f"{name:<28} {statistics.median(over):>10.1f} {max(over):>10.1f}")
print("CPU limit 1 s, busy loop: CPU time charged past the limit (ms), N=%d" % len(sys.argv[1].split()))
print(f"{'limit by':<28} {'median':>10} {'worst':>10}")
row("sandpit (cgroup counter)", sys.argv[1])
row("RLIMIT_CPU (prlimit)", sys.argv[2])
PY
