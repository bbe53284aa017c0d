"""Benchmark the verdict engine: 50 tasks x 10,000 items, B = 10,000.

The target (README, "Performance"): judging one candidate on a 50-task suite
of 10,000 items per task with 10,000 bootstrap draws takes at most 5 s on
2 cores. The suite mixes what real suites hold: mostly binary accuracy
metrics (bootstrapped through multinomial counts over the few distinct paired
outcomes), some continuous per-item metrics (F1-like: every item distinct,
chunked index resampling) and some word-perplexity ratio metrics (chunked,
three resampled sums per draw).

    python bench/bench_compare.py [--runs 5]

Prints a table and writes bench/results/compare.json (median of the runs,
per metric kind, with machine info). The per-kind rows time one task judged
alone; the whole-candidate rows time the real call, in which tasks with the
same item count share index chunks, on 1 thread and on `--workers` threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gate.config.policy import TaskPolicy
from gate.evaluate.records import Aggregation, ItemKey, TaskRecords
from gate.verdict.judge import TaskTriple, judge_candidate, judge_task

N_ITEMS = 10_000
MIX = {"binary": 40, "continuous": 5, "ratio": 5}  # 50 tasks
TIER_OF = ("target", "related", "general")


def make_task(kind: str, index: int, rng: np.random.Generator) -> tuple[TaskRecords, TaskRecords]:
    """One synthetic paired task of `kind` (binary: 10% churn, no net change)."""
    n = N_ITEMS
    keys = [ItemKey(i, f"{kind}{index}-{i}") for i in range(n)]
    task = f"{kind}_{index:02d}"
    if kind == "binary":
        base = (rng.random(n) < 0.7).astype(float)
        flip = rng.random(n) < np.where(base == 1.0, 0.05, 0.05 * 0.7 / 0.3)  # no net change
        cand = np.where(flip, 1.0 - base, base)
        return (TaskRecords(task, "acc", True, Aggregation.MEAN, keys, base, np.ones(n),
                            binary=True),
                TaskRecords(task, "acc", True, Aggregation.MEAN, keys, cand, np.ones(n),
                            binary=True))
    if kind == "continuous":
        base = rng.beta(2.0, 2.0, n)
        cand = np.clip(base + rng.normal(-0.005, 0.05, n), 0.0, 1.0)
        return (TaskRecords(task, "f1", True, Aggregation.MEAN, keys, base, np.ones(n)),
                TaskRecords(task, "f1", True, Aggregation.MEAN, keys, cand, np.ones(n)))
    words = rng.integers(20, 400, n).astype(float)
    ll_b = -words * rng.gamma(4.0, 0.6, n)
    ll_c = ll_b + words * rng.normal(-0.01, 0.05, n)
    return (TaskRecords(task, "word_perplexity", False, Aggregation.WEIGHTED_PERPLEXITY, keys,
                        ll_b, words),
            TaskRecords(task, "word_perplexity", False, Aggregation.WEIGHTED_PERPLEXITY, keys,
                        ll_c, words))


def make_suite(seed: int = 0) -> dict[str, list[TaskTriple]]:
    rng = np.random.default_rng(seed)
    suite: dict[str, list[TaskTriple]] = {t: [] for t in TIER_OF}
    i = 0
    for kind, count in MIX.items():
        for _ in range(count):
            tier = TIER_OF[i % 3]
            policy = TaskPolicy(tier=tier, kind="gain" if tier == "target" else "drop",  # type: ignore[arg-type]
                                absolute=0.02 if kind != "ratio" else 0.5, relative=None)
            suite[tier].append((*make_task(kind, i, rng), policy))
            i += 1
    return suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None,
                        help="threads (default: one per available CPU)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "compare.json")
    args = parser.parse_args()

    suite = make_suite()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers: int = args.workers if args.workers is not None else cpus

    def whole(threads: int) -> list[float]:
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            judge_candidate("bench", "lora", suite)
            times.append(time.perf_counter() - t0)
        return times

    workers = 1  # the paired tests are analytic: no resampling to spread over threads
    totals = whole(workers)
    totals_1 = totals
    verdict = judge_candidate("bench", "lora", suite)

    per_kind: dict[str, float] = {}
    for kind in MIX:
        triple = next(t for tier in suite.values() for t in tier if t[0].task.startswith(kind))
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            judge_task(*triple)
            times.append(time.perf_counter() - t0)
        per_kind[kind] = statistics.median(times)

    total = statistics.median(totals)
    rows = [(kind, MIX[kind], per_kind[kind], MIX[kind] * per_kind[kind]) for kind in MIX]
    print(f"verdict engine: {sum(MIX.values())} tasks x {N_ITEMS:,} items (analytic tests), "
          f"median of {args.runs} runs, {workers} worker thread(s) on {cpus} CPU(s)")
    print(f"{'metric kind':<34}{'tasks':>6}{'s/task (1 thread)':>19}{'serial s':>10}")
    labels = {"binary": "binary acc (exact / Tango score)",
              "continuous": "continuous mean, f1 (delta t)",
              "ratio": "word_perplexity ratio (delta t)"}
    for kind, count, each, serial in rows:
        print(f"{labels[kind]:<34}{count:>6}{each:>19.3f}{serial:>10.2f}")
    total_1 = statistics.median(totals_1)
    print(f"{'whole candidate, 1 thread':<34}{sum(MIX.values()):>6}{'':>19}{total_1:>10.2f}")
    print(f"{f'whole candidate, {workers} thread(s)':<34}{sum(MIX.values()):>6}{'':>19}"
          f"{total:>10.2f}   target <= 5 s: {'met' if total <= 5.0 else 'NOT met'}")
    print(f"candidate verdict: {verdict.verdict.value} ({verdict.reason})")

    result = {
        "benchmark": "compare",
        "tasks": sum(MIX.values()), "items_per_task": N_ITEMS, "method": "paired_exact / paired_t (analytic)",
        "mix": MIX, "runs": args.runs, "workers": workers,
        "median_total_s": round(total, 4), "all_totals_s": [round(t, 4) for t in totals],
        "median_total_s_1_thread": round(total_1, 4),
        "median_task_s_single_thread": {k: round(v, 4) for k, v in per_kind.items()},
        "target_s": 5.0, "target_met": total <= 5.0,
        "machine": {"cpu_count": os.cpu_count(), "cpus_available": cpus,
                    "platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "scipy": scipy.__version__,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
