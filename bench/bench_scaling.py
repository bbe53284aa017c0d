"""Scaling in candidates (issue 7c): `gate run` wall time for 1, 2, 4 and 8 LoRA candidates.

Chosen set-up, so that the time measured is the candidates' cost: ONE vLLM
server (base + 8 LoRA adapters, started here with the gate's own command line
and settings, `VllmEngine.prepare`) serves every run; each `gate run` reaches
it as an `endpoint` engine. The base's baseline is computed once before the
timed runs (warm store), and every timed run starts with an empty records and
response cache, so each candidate is really scored. What a timed run still
does besides scoring: plan the suite, serve-check the names, the sanity
probes (each adapter vs the base; the engine-parity probe against the hf
reference, in a child process), compare and write the reports.

The 8 adapters are genuine, distinct adapters derived deterministically from
the toy `careful` adapter: adapter i is a copy whose lora_B weights get seeded
Gaussian noise of 1% of their standard deviation (seed i), so each has its own
fingerprint and its own outputs; written under a scratch folder.

Beside each count, with `--serial N` (default 4), the same N candidates are
scored one after another (`engine.concurrent_candidates: 1`) in the same
loop: issue 17's target is N concurrent <= 0.5x N serial, same numbers (the
two runs' results.json deltas are compared exactly).

    python bench/bench_scaling.py [--runs 2] [--counts 1,2,4,8] [--serial 4]
Prints a table and writes bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import median, record, run_in_child, table

TARGET = 2.0  # 8 candidates take at most 2x as long as 1 (issue 17; issue 7 asked 3x)
TARGET_CONCURRENT = 0.5  # N candidates at the same time <= 0.5x the same N one after another
RUNNER = r"""
import json, sys, time
from pathlib import Path
from gate.config.load import load_setup
from gate.pipeline import run
t = time.perf_counter()
result = run(load_setup(Path(sys.argv[1])))
deltas = {c["name"]: {t["task"]: [t["n_used"], t["candidate_score"], t["delta"], t["ci_low"], t["ci_high"],
                                  t["verdict"]] for tier in c["tiers"] for t in tier["tasks"]}
          for c in result.results["candidates"]}
print("BENCH " + json.dumps({"wall_s": time.perf_counter() - t, "exit_code": result.exit_code,
                              "evaluated": result.evaluated, "deltas": deltas}))
"""


def derive_adapters(careful: Path, dest: Path, count: int) -> list[Path]:
    """`count` distinct adapters: careful's lora_B plus seeded noise (1% of each tensor's std)."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(careful / "adapter_model.safetensors"))
    out = []
    for i in range(count):
        path = dest / f"careful_{i}"
        if path.exists():
            shutil.rmtree(path)
        shutil.copytree(careful, path)
        gen = torch.Generator().manual_seed(i)
        new = {}
        for name, w in weights.items():
            if "lora_B" in name:
                scale = float(w.float().std()) * 0.01 or 1e-4
                w = w + torch.randn(w.shape, generator=gen, dtype=w.dtype) * scale
            new[name] = w.contiguous()
        save_file(new, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
        out.append(path)
    return out


def gate_run(config: Path) -> dict[str, Any]:
    return run_in_child(RUNNER, config)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--counts", default="1,2,4,8")
    ap.add_argument("--serial", type=int, default=4, help="also score this many one after another (0: not)")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from gate import toy
    from gate.cli.demo import demo_config
    from gate.serve.base import ModelSpec
    from gate.serve.factory import make_engine
    from gate.serve.vllm_server import VllmEngine, VllmOptions

    world = toy.build()
    with tempfile.TemporaryDirectory(prefix="gate-bench-scaling-") as tmp:
        work = Path(tmp)
        adapters = derive_adapters(Path(world.candidates["careful"]), work / "adapters", max(counts))
        base_cfg = demo_config(world, work / "out", "vllm")
        base_cfg.pop("wandb", None)
        vllm_engine = make_engine_for(base_cfg, work, make_engine)
        assert isinstance(vllm_engine, VllmEngine)
        base = str(world.base)
        group = [ModelSpec("base", "base", base, base),
                 *(ModelSpec(p.name, "lora", str(p), base) for p in adapters)]
        server = vllm_engine.prepare(group, work / "server-logs")
        t = time.perf_counter()
        server.start()
        start_s = time.perf_counter() - t
        print(f"one server for base + {len(adapters)} adapters: up in {start_s:.1f} s", flush=True)
        times: dict[int, list[float]] = {n: [] for n in counts}
        serial: list[float] = []
        try:
            def config_for(n: int, tag: str, concurrent: int | None = None) -> Path:
                cfg = dict(base_cfg)
                cfg["candidates"] = [{"name": p.name, "adapter": str(p)} for p in adapters[:n]]
                cfg["engine"] = {"kind": "endpoint", **({"concurrent_candidates": concurrent} if concurrent else {}),
                                 "endpoint": {
                    "base_url": server.base_url, "engine_version": "bench-shared-server",
                    "num_concurrent": VllmOptions().num_concurrent}}
                cfg["baseline"] = {"store": str(work / "store")}
                cfg["cache_dir"] = str(work / f"cache-{tag}")
                cfg["out"] = str(work / f"out-{tag}")
                path = work / f"gate-{tag}.yaml"
                path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
                return path

            warm = gate_run(config_for(1, "warm"))  # computes and stores the base's baseline
            print(f"baseline warm-up run: {warm['wall_s']:.1f} s", flush=True)
            for r in range(args.runs):
                for n in counts:
                    res = gate_run(config_for(n, f"{n}-{r}"))
                    if res["evaluated"].get("base", 0) != 0 or any(res["evaluated"][p.name] == 0 for p in adapters[:n]):
                        raise SystemExit(f"run with {n} candidates did not score exactly the candidates: {res['evaluated']}")
                    times[n].append(res["wall_s"])
                    print(f"run {r + 1}/{args.runs}: {n} candidate(s) {res['wall_s']:.1f} s", flush=True)
                    if n == args.serial:
                        one_by_one = gate_run(config_for(n, f"{n}-{r}-serial", concurrent=1))
                        if one_by_one["deltas"] != res["deltas"]:
                            raise SystemExit(f"{n} candidates scored one after another gave other numbers than "
                                             f"at the same time:\n{one_by_one['deltas']}\n{res['deltas']}")
                        serial.append(one_by_one["wall_s"])
                        print(f"run {r + 1}/{args.runs}: the same {n} one after another {one_by_one['wall_s']:.1f} s "
                              "(same numbers)", flush=True)
        finally:
            server.stop()
    one = median(times[counts[0]])
    rows = [(str(n), median(times[n]), median(times[n]) / one, median(times[n]) / n) for n in counts]
    table(f"gate run vs LoRA candidates, one shared vLLM server (up in {start_s:.1f} s, not counted), "
          f"baseline warm, median of {args.runs}", ["candidates", "wall s", f"x {counts[0]}", "s/candidate"], rows)
    last = counts[-1]
    ratio = median(times[last]) / one
    print(f"{last} vs {counts[0]}: {ratio:.2f}x (target <= {TARGET}x: {'met' if ratio <= TARGET else 'NOT met'})")
    concurrent_ratio = median(times[args.serial]) / median(serial) if serial else None
    if concurrent_ratio is not None:
        print(f"{args.serial} at the same time vs one after another: {median(times[args.serial]):.1f} s vs "
              f"{median(serial):.1f} s, {concurrent_ratio:.2f}x (target <= {TARGET_CONCURRENT}x: "
              f"{'met' if concurrent_ratio <= TARGET_CONCURRENT else 'NOT met'}); identical results")
    record("scaling", {
        "setup": "one shared vLLM server (base + 8 derived LoRAs) reached as an endpoint; base baseline warm; "
                 "fresh records/response cache per timed run",
        "server_start_s": start_s, "runs": args.runs, "wall_s": {str(n): times[n] for n in counts},
        "median_s": {str(n): median(times[n]) for n in counts}, "ratio_last_to_first": ratio,
        "target_ratio": TARGET, "target_met": ratio <= TARGET,
        "serial_count": args.serial if serial else None, "serial_wall_s": serial,
        "concurrent_vs_serial": concurrent_ratio, "target_concurrent_vs_serial": TARGET_CONCURRENT,
        "target_concurrent_met": None if concurrent_ratio is None else concurrent_ratio <= TARGET_CONCURRENT,
        "adapters": "careful + N(0, (0.01*std)^2) on lora_B, seed i",
    })


def make_engine_for(cfg: dict[str, Any], work: Path, make_engine: Any) -> Any:
    """The vllm engine with exactly the options `gate run` would use for this config."""
    from gate.config.load import load_setup

    path = work / "gate-vllm.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return make_engine(load_setup(path).config)


if __name__ == "__main__":
    main()
