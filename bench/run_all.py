"""`make bench`: every benchmark, each printing its table and recording its JSON under bench/results/.

- bench_compare.py    verdict engine: 50 tasks x 10,000 items, B = 10,000
- bench_toy_build.py  building the whole toy world from scratch
- bench_gate_run.py   `gate run` on the toy world through vLLM: cold run, rerun, gate RSS
- bench_naive.py      one `lm_eval` run per model per comparison vs one `gate run` (7a)
- bench_engine.py     the gate's scoring throughput vs vLLM's offline API on the same tokens (7b)
- bench_scaling.py    `gate run` wall time for 1, 2, 4, 8 LoRA candidates on one server (7c)
- bench_sweep.py      a sweep of 3 LoRA checkpoints vs gating one of them (issue 13)
- bench_memory.py     peak RSS of the gate process on a 10,000-item suite (7e)
- bench_fixed_costs.py lm-eval's fixed costs (task index, environment, templates) as shipped vs once per process (17)
- bench_growth.py     cold `gate run` vs naive lm_eval runs as the suite (1x, 4x, 16x) and the candidates (1-8) grow (17)

Not run here: bench_cuda_hf.py (the hf engine on CUDA against a CPU reference,
issue 16) needs a GPU; its docstring gives its two steps.

    python bench/run_all.py [--quick] [--only NAME,...]

`--quick` is a smoke run (one repeat, smaller sizes, minutes not an hour); its
JSON overwrites the recorded results, so record the full run last. The
benchmarks run one after another, never side by side: the machine's cores are
what they measure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = [
    ["bench_compare.py", "--runs", "5"],
    ["bench_toy_build.py", "--runs", "3"],
    ["bench_gate_run.py", "--runs", "3"],
    ["bench_naive.py"],
    ["bench_engine.py", "--runs", "3"],
    ["bench_scaling.py", "--runs", "3"],
    ["bench_sweep.py", "--runs", "3"],
    ["bench_memory.py", "--items", "10000"],
    ["bench_fixed_costs.py", "--runs", "3"],
    ["bench_growth.py"],
]
QUICK = [
    ["bench_compare.py", "--runs", "1", "--boot", "1000"],
    ["bench_toy_build.py", "--runs", "1"],
    ["bench_gate_run.py", "--runs", "1"],
    ["bench_engine.py", "--runs", "1"],
    ["bench_scaling.py", "--runs", "1", "--counts", "1,2"],
    ["bench_sweep.py", "--runs", "1"],
    ["bench_memory.py", "--items", "1000"],
    ["bench_fixed_costs.py", "--runs", "1"],
    ["bench_growth.py", "--scales", "1,4", "--counts", "1,2"],
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repeat, smaller sizes (a smoke run)")
    ap.add_argument("--only", default="", help="comma-separated script names without .py, e.g. bench_engine")
    args = ap.parse_args()
    steps = QUICK if args.quick else FULL
    if args.only:
        wanted = {name.strip().removesuffix(".py") for name in args.only.split(",")}
        steps = [s for s in steps if s[0].removesuffix(".py") in wanted]
    failed = []
    for script, *rest in steps:
        print(f"\n=== {script} {' '.join(rest)}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / script), *rest], cwd=HERE.parent)
        print(f"=== {script}: exit {rc} after {time.perf_counter() - t:.0f} s", flush=True)
        if rc != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
