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

import tempfile
from pathlib import Path

from bench_gate_run import RUNNER
from benchlib import median, record, run_in_child, table, toy_gate_config, toy_run_args


def main() -> None:
    args = toy_run_args()
    from gate import toy

    world = toy.build()
    run_dir = Path(world.candidates["overfit"])
    candidates = {"single": [{"name": "overfit", "adapter": str(run_dir / "checkpoint-300")}],
                  "sweep": [{"name": "overfit", "sweep": str(run_dir)}]}
    walls: dict[str, list[dict]] = {kind: [] for kind in candidates}
    for _ in range(args.runs):
        for kind, cands in candidates.items():
            with tempfile.TemporaryDirectory(prefix="gate-bench-sweep-") as tmp:
                config = toy_gate_config(world, Path(tmp), args.engine, wandb=False, candidates=cands)
                walls[kind].append(run_in_child(RUNNER, config))
    single = median([x["wall_s"] for x in walls["single"]])
    sweep = median([x["wall_s"] for x in walls["sweep"]])
    table(f"sweep of 3 LoRA checkpoints vs one of them, engine {args.engine}, cold, median of {args.runs}",
          ["measure", "value", "target"],
          [["one checkpoint, s", single, ""], ["sweep of 3 checkpoints, s", sweep, ""],
           ["sweep / one", sweep / single, "<= 1.5 (issue 13)"]])
    record(f"sweep_{args.engine}", {"engine": args.engine, "runs": args.runs, **walls,
                                    "median_single_s": single, "median_sweep_s": sweep, "ratio": sweep / single})


if __name__ == "__main__":
    main()
