"""Growth (issue 17): how a cold `gate run` and the naive way grow with suite size and with candidates.

Two axes, each gate vs naive, one invocation:

- **suite size**: the toy suite at 1x, 4x and 16x its items, generated. Copy j
  of every document (j >= 1) gets a tag word in front of its prompt (or its
  text, for the rolling-perplexity task), so every copy is a distinct request
  of the same kind and length: the mix of generation, multiple-choice and
  rolling requests stays the toy suite's. Candidates: the toy world's four
  (LoRAs on one server, the full fine-tune on its own, the QLoRA split).
- **candidates**: 1, 2, 4 and 8 LoRA candidates on the 1x suite, distinct
  adapters derived from the toy `careful` one (bench_scaling.derive_adapters).

Gate: one cold `gate run` through vLLM (server starts, parity probe and the
base's baseline included; empty store and caches). Naive: what a team without
the gate runs, one `lm_eval` CLI run (hf model, `peft=` for an adapter) per
model per comparison, so base + candidate for each candidate
(bench_naive.lm_eval_run). On the candidates axis the naive runs are
independent processes run one after another, so the naive time for n
candidates is the sum of the first n measured pairs: each pair is run once.

Scored requests are counted as in bench_naive: lm-eval's per-sample logs for
the naive runs, the gate's response caches for the gate.

    python bench/bench_growth.py [--scales 1,4,16] [--counts 1,2,4,8] [--record growth]
Prints two tables and writes bench/results/growth.json (or <record>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_naive import cold_gate_run, lm_eval_run
from bench_scaling import derive_adapters
from benchlib import record, table

#: Tag words in front of copy j's prompt: the toy tokenizer's characters only.
TAGS = ["fox", "dog", "cat", "bird", "tree", "lake", "king", "ship", "horse", "child", "red", "big", "old",
        "cold", "dark", "tall"]
TARGET_WALL_4X = 0.5  # cold gate run <= 0.5x the naive way's wall time at the 4x suite


def scaled_suite(world: Any, dest: Path, scale: int) -> tuple[Path, int]:
    """The toy suite with every document `scale` times (copies tagged); returns (suite file, items)."""
    src = Path(world.suite).parent
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    items = 0
    for data in sorted((dest / "data").glob("*.jsonl")):
        docs = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
        out = []
        for j in range(scale):
            tag = "" if j == 0 else f"{TAGS[(j - 1) % len(TAGS)]}{(j - 1) // len(TAGS) or ''} "
            for doc in docs:
                key = "text" if "text" in doc else "prompt"
                out.append({**doc, key: tag + doc[key]})
        data.write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in out), encoding="utf-8")
        items += len(out)
    return dest / Path(world.suite).name, items


def naive_pairs(world: Any, suite: Path, work: Path, candidates: dict[str, Path]) -> list[tuple[float, int]]:
    """Per candidate: (wall s, requests) of lm_eval on the base plus lm_eval on the candidate."""
    pairs = []
    for i, (name, path) in enumerate(candidates.items()):
        lora = (path / "adapter_config.json").is_file()
        w_base, r_base = lm_eval_run(world, work / f"n{i}-base", world.base, None, suite=suite)
        w_cand, r_cand = lm_eval_run(world, work / f"n{i}-{name}", world.base if lora else path,
                                     path if lora else None, suite=suite)
        print(f"  naive: base {w_base:.1f} s + {name} {w_cand:.1f} s", flush=True)
        pairs.append((w_base + w_cand, r_base + r_cand))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1,4,16")
    ap.add_argument("--counts", default="1,2,4,8")
    ap.add_argument("--record", default="growth", help="bench/results/<record>.json (a partial run: another name)")
    args = ap.parse_args()
    scales = [int(s) for s in args.scales.split(",") if s]
    counts = [int(c) for c in args.counts.split(",") if c]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from gate import toy
    from gate.cli.demo import demo_config

    world = toy.build()
    size_rows, size_data = [], {}
    count_rows, count_data = [], {}
    with tempfile.TemporaryDirectory(prefix="gate-bench-growth-") as tmp:
        work = Path(tmp)
        for scale in scales:
            suite, items = scaled_suite(world, work / f"suite-{scale}x", scale)
            print(f"suite {scale}x: {items} items", flush=True)
            pairs = naive_pairs(world, suite, work / f"naive-{scale}x",
                                {n: Path(p) for n, p in world.candidates.items()})
            cfg = demo_config(world, work / "unused", "vllm")
            cfg.pop("wandb", None)
            cfg["suite"] = str(suite)
            g_wall, g_req, rc = cold_gate_run(cfg, work / f"gate-{scale}x")
            n_wall, n_req = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
            print(f"suite {scale}x: naive {n_wall:.1f} s, gate {g_wall:.1f} s (exit {rc})", flush=True)
            size_rows.append((f"{scale}x ({items})", n_wall, g_wall, g_wall / n_wall, float(n_req), float(g_req),
                              g_req / n_req))
            size_data[str(scale)] = {"items": items, "naive_wall_s": n_wall, "gate_wall_s": g_wall,
                                     "naive_requests": n_req, "gate_requests": g_req, "gate_exit": rc,
                                     "ratio_wall": g_wall / n_wall, "ratio_requests": g_req / n_req}
        if counts:
            suite, _ = scaled_suite(world, work / "suite-1x-counts", 1)
            adapters = derive_adapters(Path(world.candidates["careful"]), work / "adapters", max(counts))
            pairs = naive_pairs(world, suite, work / "naive-counts", {p.name: p for p in adapters})
            for n in counts:
                cfg = demo_config(world, work / "unused", "vllm")
                cfg.pop("wandb", None)
                cfg["suite"] = str(suite)
                cfg["candidates"] = [{"name": p.name, "adapter": str(p)} for p in adapters[:n]]
                g_wall, g_req, rc = cold_gate_run(cfg, work / f"gate-{n}c")
                n_wall, n_req = sum(p[0] for p in pairs[:n]), sum(p[1] for p in pairs[:n])
                print(f"{n} candidate(s): naive {n_wall:.1f} s, gate {g_wall:.1f} s (exit {rc})", flush=True)
                count_rows.append((str(n), n_wall, g_wall, g_wall / n_wall, float(n_req), float(g_req),
                                   g_req / n_req))
                count_data[str(n)] = {"naive_wall_s": n_wall, "gate_wall_s": g_wall, "naive_requests": n_req,
                                      "gate_requests": g_req, "gate_exit": rc, "ratio_wall": g_wall / n_wall,
                                      "ratio_requests": g_req / n_req}
    header = ["naive s", "gate s", "gate/naive", "naive req", "gate req", "req ratio"]
    if size_rows:
        table("cold gate run vs naive lm_eval runs, by suite size (toy world, 4 candidates, one run each)",
              ["suite (items)", *header], size_rows)
    if count_rows:
        table("cold gate run vs naive lm_eval runs, by LoRA candidates (1x toy suite, one run each)",
              ["candidates", *header], count_rows)
    at4 = size_data.get("4")
    if at4 is not None:
        met = at4["ratio_wall"] <= TARGET_WALL_4X
        print(f"4x suite: gate/naive wall {at4['ratio_wall']:.2f} "
              f"(target <= {TARGET_WALL_4X}: {'met' if met else 'NOT met'})")
    first, last = (str(counts[0]), str(counts[-1])) if counts else (None, None)
    record(args.record, {
        "setup": "cold `gate run` CLI (vLLM, empty store and caches) vs one lm_eval CLI run per model per "
                 "comparison (hf, peft=); suite copies tagged with a word; naive candidates axis = sum of "
                 "the first n measured pairs",
        "runs": 1, "by_suite_scale": size_data, "by_candidates": count_data,
        "target_wall_ratio_at_4x": TARGET_WALL_4X,
        "target_met_at_4x": None if at4 is None else at4["ratio_wall"] <= TARGET_WALL_4X,
        "gate_wall_last_vs_first_candidates": (count_data[last]["gate_wall_s"] / count_data[first]["gate_wall_s"]
                                               if count_data else None),
    })


if __name__ == "__main__":
    main()
