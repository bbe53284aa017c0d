"""Time the whole toy-world build (base + four candidates + suite) N times.

Usage: python bench/bench_toy_build.py [--runs N]

Each run builds from scratch (force) into its own temp folder with the
builder's two threads. Prints median/min/max seconds and writes
bench/results/toy_build.json with the machine it ran on. The budget is three
minutes on two cores; on a shared machine the numbers are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "toy_build.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from gate.toy import build
    from gate.toy.build import BUILD_THREADS

    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            world = build(Path(tmp) / "world", force=True)
            seconds = time.perf_counter() - start
            manifest = json.loads((world.root / "manifest.json").read_text())
        runs.append({"seconds": round(seconds, 2), "stages": manifest["seconds"],
                     "load_average": list(os.getloadavg())})
        print(f"run {i + 1}/{args.runs}: {seconds:.1f} s  {manifest['seconds']}", flush=True)

    secs = [r["seconds"] for r in runs]
    summary = {"median": statistics.median(secs), "min": min(secs), "max": max(secs)}
    print(f"\n{'median':>8} {'min':>8} {'max':>8}  (seconds, {args.runs} runs)")
    print(f"{summary['median']:>8.1f} {summary['min']:>8.1f} {summary['max']:>8.1f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "toy_build",
        "budget_seconds": 180,
        "summary": summary,
        "runs": runs,
        "machine": {"cpu_count": os.cpu_count(), "build_threads": BUILD_THREADS,
                    "torch": torch.__version__, "python": platform.python_version(),
                    "platform": platform.platform(), "processor": platform.processor()},
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
