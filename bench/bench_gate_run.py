"""Benchmark `gate run` on the toy world: first run, rerun, and the gate's own memory.

What it measures (side by side, in one invocation, median of --runs):
- first: a cold `gate run` (empty baseline store and caches), server starts included;
- rerun: the same command again (baseline and records caches warm: nothing served);
- peak RSS of the gate process itself (the vLLM server is a separate process
  and is excluded; RUSAGE_SELF of the process that runs `gate.pipeline.run`).

Prints a table and writes bench/results/gate_run.json with the machine and versions.
Usage: python bench/bench_gate_run.py [--runs 3] [--engine vllm|hf]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from benchlib import run_in_child, toy_gate_config, toy_run_args

REPO = Path(__file__).resolve().parent.parent
RUNNER = r"""
import json, resource, sys, time
from pathlib import Path
from gate.config.load import load_setup
from gate.pipeline import run
t = time.perf_counter()
result = run(load_setup(Path(sys.argv[1])))
wall = time.perf_counter() - t
print("BENCH " + json.dumps({"wall_s": wall, "exit_code": result.exit_code,
      "evaluated": result.evaluated,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    args = toy_run_args()
    from gate import toy

    world = toy.build()
    firsts, reruns = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="gate-bench-") as tmp:
            config = toy_gate_config(world, Path(tmp), args.engine)
            firsts.append(run_in_child(RUNNER, config))
            reruns.append(run_in_child(RUNNER, config))
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    rows = [
        ("first run (cold), s", med(firsts, "wall_s"), "<= 300 (issue 4)"),
        ("rerun (warm), s", med(reruns, "wall_s"), "<= 10% of first (issue 7d)"),
        ("rerun / first", med(reruns, "wall_s") / med(firsts, "wall_s"), "<= 0.10"),
        ("peak RSS of the gate process, MB", max(x["peak_rss_mb"] for x in firsts + reruns), "<= 500 (issue 7e)"),
    ]
    print(f"gate run on the toy world, engine {args.engine}, median of {args.runs}")
    print(f"{'measure':40} {'value':>10}  target")
    for name, value, target in rows:
        print(f"{name:40} {value:10.2f}  {target}")
    import lm_eval
    import torch

    out = {
        "engine": args.engine, "runs": args.runs,
        "first": firsts, "rerun": reruns,
        "median_first_s": med(firsts, "wall_s"), "median_rerun_s": med(reruns, "wall_s"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "?"},
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    dest = REPO / "bench" / "results" / f"gate_run_{args.engine}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"recorded: {dest.relative_to(REPO)}")


if __name__ == "__main__":
    main()
