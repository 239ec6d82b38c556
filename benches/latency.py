#!/usr/bin/env python3
"""Per-run latency of a command: runs it N times (after one warm-up), prints
`median_ms p90_ms fails`. `{i}` in the command is replaced by the run's number."""
import statistics, subprocess, sys, time

n = int(sys.argv[1])
cmd = sys.argv[2:]
times, fails = [], 0
for i in range(-1, n):
    argv = [a.replace("{i}", str(i + 1)) for a in cmd]
    t = time.perf_counter()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = (time.perf_counter() - t) * 1000
    if r.returncode != 0:
        fails += 1
        if fails == 1:
            sys.stderr.write(f"latency.py: {argv[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-300:]}\n")
        continue
    if i >= 0:
        times.append(dt)
if not times:
    print("nan nan", fails)
else:
    times.sort()
    print(f"{statistics.median(times):.2f} {times[int(len(times) * 0.9) - 1 if len(times) >= 10 else -1]:.2f} {fails}")
