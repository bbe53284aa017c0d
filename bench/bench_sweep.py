"""Benchmark a sweep: gating 3 LoRA checkpoints of one training run vs gating one of them.

Issue 13's target: a sweep of 3 LoRA checkpoints takes <= 1.5x the wall time
of gating one of them, because the checkpoints share one vLLM server (base
weights loaded once) and the base is scored once. Both runs are cold (empty
baseline store and caches, server start, probes and the base's scoring
included), side by side in one invocation, median of --runs; the checkpoint
gated alone is the last one (`overfit@300`, the adapter a run without a
sweep would ship).

Prints a table and writes bench/results/sweep_<engine>.json.
Usage: python bench/bench_sweep.py [--runs 3] [--engine vllm|hf]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from bench_gate_run import one  # noqa: E402


def _config(world, work: Path, engine: str, candidates: list[dict]) -> Path:  # type: ignore[no-untyped-def]
    from gate.cli.demo import demo_config

    cfg = demo_config(world, work / "out", engine, REPO)
    cfg.update(candidates=candidates, cache_dir=str(work / "cache"))
    cfg["baseline"]["store"] = str(work / "store")
    cfg.pop("wandb", None)
    config = work / "gate.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    args = ap.parse_args()
    from gate import toy

    world = toy.build()
    run_dir = Path(world.candidates["overfit"])
    singles, sweeps = [], []
    for _ in range(args.runs):
        for kind, out in (("single", singles), ("sweep", sweeps)):
            with tempfile.TemporaryDirectory(prefix="gate-bench-sweep-") as tmp:
                cands = ([{"name": "overfit", "sweep": str(run_dir)}] if kind == "sweep"
                         else [{"name": "overfit", "adapter": str(run_dir / "checkpoint-300")}])
                out.append(one(_config(world, Path(tmp), args.engine, cands)))
    single = statistics.median(x["wall_s"] for x in singles)
    sweep = statistics.median(x["wall_s"] for x in sweeps)
    print(f"sweep of 3 LoRA checkpoints vs one of them, engine {args.engine}, cold, median of {args.runs}")
    print(f"{'measure':36} {'value':>8}  target")
    print(f"{'one checkpoint, s':36} {single:8.1f}")
    print(f"{'sweep of 3 checkpoints, s':36} {sweep:8.1f}")
    print(f"{'sweep / one':36} {sweep / single:8.2f}  <= 1.5 (issue 13)")
    dest = REPO / "bench" / "results" / f"sweep_{args.engine}.json"
    dest.write_text(json.dumps({"engine": args.engine, "runs": args.runs, "single": singles, "sweep": sweeps,
                                "median_single_s": single, "median_sweep_s": sweep, "ratio": sweep / single,
                                "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n",
                    encoding="utf-8")
    print(f"recorded: {dest.relative_to(REPO)}")


if __name__ == "__main__":
    main()
