"""Peak memory of the gate process on a 10,000-item suite (issue 7e).

What is measured: the peak resident set (ru_maxrss, RUSAGE_SELF) of the
process that runs `gate.pipeline.run`, the gate itself. The engine is
excluded by construction: the vLLM server, and the hf reference of the
engine-parity probe, are separate processes (children do not count in
RUSAGE_SELF). The RSS is also sampled at each progress message, so the table
says which stage raised it (imports, tokenizer, planning, evaluation, compare).

The suite: three generated multiple-choice tasks (target 4,000, related
3,000, general 3,000 items: 10,000 items, two choices each, so 20,000
loglikelihood requests per model), written as local JSONL + task YAML into a
scratch folder, gated on the toy base with the toy `careful` LoRA through
vLLM (the engine is small, so the run takes minutes). Before the timed run,
the import-only floor is measured in fresh processes for reference.

    python bench/bench_memory.py [--items 10000] [--engine vllm|fake] [--no-parity]
Prints a table and writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, record, run_in_child, table

TARGET_MB = 500.0
SPLIT = {"target": 0.4, "related": 0.3, "general": 0.3}
RUNNER = r"""
import json, resource, sys, time
from pathlib import Path
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
stages = [("python started", rss_mb())]
from gate.config.load import load_setup
from gate.pipeline import run
stages.append(("gate imported", rss_mb()))
def progress(msg):
    stages.append((msg[:70], rss_mb()))
t = time.perf_counter()
result = run(load_setup(Path(sys.argv[1])), progress=progress)
stages.append(("run returned", rss_mb()))
print("BENCH " + json.dumps({"wall_s": time.perf_counter() - t, "exit_code": result.exit_code,
      "evaluated": result.evaluated, "peak_rss_mb": rss_mb(), "stages": stages}))
"""
FLOOR = r"""
import importlib, json, resource, sys
for m in sys.argv[1:]:
    importlib.import_module(m)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
"""


def write_suite(root: Path, items: int) -> Path:
    """Three generated two-choice tasks (seeded), one per tier; returns the suite file."""
    rng = random.Random(0)
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    tiers: dict[str, list[dict[str, str]]] = {}
    for tier, share in SPLIT.items():
        task = f"bench_mem_{tier}"
        n = round(items * share)
        data = root / "tasks" / f"{task}.jsonl"
        with data.open("w", encoding="utf-8") as f:
            for i in range(n):
                a, b = rng.randint(0, 9), rng.randint(0, 9)
                right, wrong = str(a + b), str(a + b + rng.choice([-2, -1, 1, 2]))
                label = rng.randint(0, 1)
                choices = [right, wrong] if label == 0 else [wrong, right]
                f.write(json.dumps({"id": i, "prompt": f"{a}+{b}=", "choices": choices, "label": label}) + "\n")
        (root / "tasks" / f"{task}.yaml").write_text(yaml.safe_dump({
            "task": task, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{prompt}}",
            "doc_to_choice": "{{choices}}", "doc_to_target": "{{label}}", "target_delimiter": "",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1}}, sort_keys=False), encoding="utf-8")
        tiers[tier] = [{"task": task, "metric": "acc"}]
    suite = root / "bench_mem.yaml"
    suite.write_text(yaml.safe_dump({"name": "bench_mem", "description": f"{items} generated items",
                                     "include": ["tasks"], "tiers": tiers}, sort_keys=False), encoding="utf-8")
    return suite


def floor(*modules: str) -> float:
    out = subprocess.run([sys.executable, "-c", FLOOR, *modules], capture_output=True, text=True, cwd=REPO,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def tokenizer_floor(base: str) -> float:
    code = ("import resource\nfrom transformers import AutoTokenizer\n"
            f"AutoTokenizer.from_pretrained({base!r})\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def gate_run(config: Path) -> dict[str, Any]:
    return run_in_child(RUNNER, config)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--engine", default="vllm", choices=["vllm", "fake"])
    ap.add_argument("--no-parity", action="store_true", help="probes.parity: false (leave the hf reference out)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from gate import toy
    from gate.cli.demo import demo_config

    world = toy.build()
    floors = {
        "import lm_eval.evaluator": floor("lm_eval.evaluator"),
        "import gate.pipeline": floor("gate.pipeline"),
        "import torch": floor("torch"),
        "load the base tokenizer (transformers)": tokenizer_floor(str(world.base)),
        "import vllm.platforms (engine check)": floor("vllm.platforms"),
    }
    with tempfile.TemporaryDirectory(prefix="gate-bench-memory-") as tmp:
        work = Path(tmp)
        suite = write_suite(work / "suite", args.items)
        cfg = demo_config(world, work / "out", args.engine)
        cfg.pop("wandb", None)
        cfg["candidates"] = [{"name": "careful", "adapter": str(world.candidates["careful"])}]
        cfg["suite"] = str(suite)
        cfg["baseline"] = {"store": str(work / "store")}
        cfg["cache_dir"] = str(work / "cache")
        if args.no_parity:
            cfg["probes"] = {"parity": False}
        config = work / "gate.yaml"
        config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        res = gate_run(config)
    if res["evaluated"].get("base") != 3 or res["evaluated"].get("careful") != 3:
        raise SystemExit(f"the run did not evaluate every task of both models: {res['evaluated']}")
    rows: list[tuple[str, float]] = [(f"floor: {k}", v) for k, v in floors.items()]
    rows += [(f"run: {name}", mb) for name, mb in res["stages"]]
    table(f"peak RSS of the gate process, MB (engine {args.engine}, {args.items:,} items, base + 1 LoRA, "
          f"parity {'off' if args.no_parity else 'on'}, run {res['wall_s']:.0f} s)", ["where", "peak MB"], rows)
    peak = res["peak_rss_mb"]
    print(f"peak {peak:.0f} MB (target <= {TARGET_MB:.0f}: {'met' if peak <= TARGET_MB else 'NOT met'})")
    record("memory" if args.engine == "vllm" and not args.no_parity else
           f"memory_{args.engine}{'_noparity' if args.no_parity else ''}", {
        "items": args.items, "engine": args.engine, "parity": not args.no_parity, "runs": 1,
        "peak_rss_mb": peak, "wall_s": res["wall_s"], "exit_code": res["exit_code"],
        "stages_mb": res["stages"], "floors_mb": floors, "target_mb": TARGET_MB, "target_met": peak <= TARGET_MB,
    })


if __name__ == "__main__":
    main()
