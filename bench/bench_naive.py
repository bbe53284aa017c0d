"""Naive vs gate (issue 7a): what teams do today against one `gate run`.

Naive: one `lm_eval` CLI run per model per comparison, as a team without the
gate gates 4 candidates: base + candidate for each candidate (the base scored
again every time), each run loading its weights again (hf model, peft= for
LoRA adapters), on the same tasks and items. Gate: one cold `gate run`
through vLLM (base once, all LoRAs on one server, full fine-tune on its own).

Scored requests are counted from lm-eval's own per-sample logs for the naive
runs and from the gate's response caches (one entry per request) for the gate,
one request per answer choice, per generation, per rolling text. Prints a table and
writes bench/results/naive_vs_gate.json.
Usage: python bench/bench_naive.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
TASKS = "toy_sub,toy_sub_mc,toy_add,toy_capitals,toy_after,toy_text"


def lm_eval_run(world, out: Path, pretrained: Path, peft: Path | None,  # type: ignore[no-untyped-def]
                suite: Path | None = None) -> tuple[float, int]:
    """(wall s, requests) of one `lm_eval` CLI run on the toy tasks of `suite` (default the world's)."""
    args = f"pretrained={pretrained},dtype=float32" + (f",peft={peft}" if peft else "")
    tasks_dir = Path(suite or world.suite).parent / "tasks"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args", args, "--tasks", TASKS,
           "--include_path", str(tasks_dir), "--output_path", str(out),
           "--log_samples", "--batch_size", "16"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out.parent)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    requests = 0
    for f in out.rglob("samples_*.jsonl"):
        for line in f.read_text(encoding="utf-8").splitlines():
            requests += len(json.loads(line)["arguments"])
    return wall, requests


def cached_requests(cache_dir: Path) -> int:
    """Requests the gate sent, counted in lm-eval's response caches (one per model):
    one entry per answer choice, per generation, per rolling text, as in the
    naive count. Items the rounds never reached were never requested."""
    from sqlitedict import SqliteDict

    total = 0
    for db in sorted(cache_dir.rglob("*.db")):
        with SqliteDict(str(db), flag="r") as d:
            total += len(d)
    return total


def cold_gate_run(cfg: dict[str, Any], work: Path) -> tuple[float, int, int]:
    """(wall s, scored requests, exit code) of one cold `gate run` CLI process on
    `cfg`, with its baseline store, caches and output inside `work` (empty)."""
    cfg = {**cfg, "baseline": {"store": str(work / "store")}, "cache_dir": str(work / "cache"), "out": str(work / "out")}
    config = work / "gate.yaml"
    work.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    t = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "gate"), "run", "--config", str(config)],
                          capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return wall, cached_requests(work / "cache"), proc.returncode


def main() -> None:
    from gate import toy
    from gate.cli.demo import demo_config

    world = toy.build()
    with tempfile.TemporaryDirectory(prefix="gate-naive-") as tmp:
        work = Path(tmp)
        naive_wall = 0.0
        naive_requests = 0
        for i, (name, path) in enumerate(world.candidates.items()):
            lora = (Path(path) / "adapter_config.json").is_file()
            w_base, r_base = lm_eval_run(world, work / f"n{i}-base", world.base, None)
            w_cand, r_cand = lm_eval_run(world, work / f"n{i}-{name}", world.base if lora else Path(path),
                                         Path(path) if lora else None)
            naive_wall += w_base + w_cand
            naive_requests += r_base + r_cand
            print(f"naive: base {w_base:.1f} s + {name} {w_cand:.1f} s", flush=True)
        cfg = demo_config(world, work / "out", "vllm")
        cfg.pop("wandb", None)
        gate_wall, gate_requests, _ = cold_gate_run(cfg, work)
    rows = [("wall time, s", naive_wall, gate_wall), ("scored requests", naive_requests, gate_requests)]
    print(f"\n{'toy world, 4 candidates':28} {'naive':>10} {'gate':>10} {'gate/naive':>11}  target")
    for label, n, g in rows:
        target = "<= 0.5" if label.startswith("wall") else "<= 0.4"
        print(f"{label:28} {n:10.1f} {g:10.1f} {g / n:11.2f}  {target}")
    import torch

    out = {"naive_wall_s": naive_wall, "gate_wall_s": gate_wall, "naive_requests": naive_requests,
           "gate_requests": gate_requests, "ratio_wall": gate_wall / naive_wall,
           "ratio_requests": gate_requests / naive_requests, "runs": 1,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
           "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    dest = REPO / "bench" / "results" / "naive_vs_gate.json"
    dest.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"recorded: {dest.relative_to(REPO)}")


if __name__ == "__main__":
    main()
