#!/usr/bin/env python3
"""A/B of two `wm` binaries on `wm bench update`, alternating them in rounds so that both see the
same machine load (BENCHMARKS.md, "Fused SiLU on flex").

usage: ab_update.py BEFORE_WM AFTER_WM MODEL ROUNDS STEPS THREADS [WM BENCH UPDATE ARGS...]

Extra arguments go to `wm bench update` unchanged (for the RSSM rows of models.sh:
`--batch 16 --seq-len 50 --hidden 200`).

Per run it records the median wall time per update (`--json`) and the CPU time per update of the
whole process (user + system, from getrusage, divided by warm-up + timed updates), which moves
less than wall time when other jobs share the cores. Prints one line per run, then medians and
the paired after/before ratios.
"""
import json
import os
import resource
import statistics
import subprocess
import sys

before, after, model = sys.argv[1], sys.argv[2], sys.argv[3]
rounds, steps, threads = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
extra = sys.argv[7:]
warmup = 20 if model == "cvae" else 3
rows = {"before": [], "after": []}
for round_idx in range(rounds):
    for side, binary in (("before", before), ("after", after)):
        start = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [binary, "bench", "update", "--model", model, "--steps", str(steps),
             "--warmup", str(warmup), "--json", *extra],
            env={**os.environ, "RAYON_NUM_THREADS": threads},
            capture_output=True, text=True, check=True,
        ).stdout
        end = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = end.ru_utime - start.ru_utime + end.ru_stime - start.ru_stime
        cpu_ms = cpu_s * 1e3 / (steps + warmup)
        median_ms = json.loads(out)["median_ms"]
        rows[side].append((median_ms, cpu_ms))
        print(f"{model} threads={threads} round={round_idx + 1} {side} "
              f"median_ms={median_ms:.2f} cpu_ms_per_update={cpu_ms:.2f}", flush=True)
wall = [a[0] / b[0] for a, b in zip(rows["after"], rows["before"])]
cpu = [a[1] / b[1] for a, b in zip(rows["after"], rows["before"])]
for side, runs in rows.items():
    print(f"SUMMARY {model} threads={threads} {side}: "
          f"median of medians {statistics.median(r[0] for r in runs):.2f} ms, "
          f"min {min(r[0] for r in runs):.2f} ms, "
          f"cpu/update median {statistics.median(r[1] for r in runs):.2f} ms")
print(f"SUMMARY {model} threads={threads} after/before: "
      f"paired wall ratio median {statistics.median(wall):.3f} ({min(wall):.3f}-{max(wall):.3f}), "
      f"cpu ratio median {statistics.median(cpu):.3f} ({min(cpu):.3f}-{max(cpu):.3f})")
