#!/usr/bin/env python3
"""Per-run latency of a command: runs it N times (after one warm-up), J at a time, and prints
`median_ms p90_ms fails runs_per_s`. `{i}` in the command is replaced by the run's number.
Usage: latency.py [-j J] N COMMAND..."""
import statistics, subprocess, sys, threading, time

args = sys.argv[1:]
jobs = 1
if args[0] == "-j":
    jobs, args = int(args[1]), args[2:]
n = int(args[0])
cmd = args[1:]
times, fails, lock = [], [0], threading.Lock()
counter = iter(range(n))


def once(i):
    argv = [a.replace("{i}", str(i)) for a in cmd]
    t = time.perf_counter()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = (time.perf_counter() - t) * 1000
    with lock:
        if r.returncode != 0:
            fails[0] += 1
            if fails[0] == 1:
                sys.stderr.write(f"latency.py: {argv[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-300:]}\n")
        else:
            times.append(dt)


def worker():
    while True:
        with lock:
            i = next(counter, None)
        if i is None:
            return
        once(i)


once(-1)  # warm-up
times.clear()
fails[0] = 0
start = time.perf_counter()
threads = [threading.Thread(target=worker) for _ in range(jobs)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.perf_counter() - start
if not times:
    print("nan nan", fails[0], "0")
else:
    times.sort()
    p90 = times[int(len(times) * 0.9) - 1 if len(times) >= 10 else -1]
    print(f"{statistics.median(times):.2f} {p90:.2f} {fails[0]} {len(times) / wall:.1f}")
