"""The hf engine on CUDA (issue 16): the toy world gated in float32 and bfloat16 on a GPU,
its log-likelihoods checked against the same gate run on this project's CPU machines.

Why: the hf engine is the reference the vLLM engines are checked against, and
a user without vLLM gates with it on whatever device they have. Nothing here
runs on CUDA in CI (no GPU there), so this script is the record that a CUDA
run scores what the CPU run scores, and what it costs.

Two steps, one per machine:

    # on a CPU machine: gate the toy world with the hf engine, record every request's answer
    python bench/bench_cuda_hf.py reference [--world DIR] --to .devcarry/cpu_reference.json.gz

    # on a CUDA machine: the same gate run in each --run (device:dtype), compared with the reference
    python bench/bench_cuda_hf.py compare --world DIR --reference .devcarry/cpu_reference.json.gz \
        --runs cuda:float32,cuda:bfloat16 [--out DIR]

Each run is a cold `gate.pipeline.run` (empty baseline store and caches) of
the demo's config with the hf engine (engine.hf.batch_size 8, the default):
candidates careful, full and overfit gated as a sweep of its three
checkpoints. The QLoRA candidate is left out: its 4-bit base needs
bitsandbytes, which the GPU machine lacks.

Every request each model answers is recorded by name (model, request type,
arguments), so the comparison pairs the same request on both sides:
- loglikelihood: the continuation's summed log-likelihood (nats) and whether
  it is the greedy continuation; rolling: the text's log-likelihood;
- generate_until: the generated text (greedy).
Agreement is reported per request type (max and median |difference|), with
the verdicts of both runs side by side. Early stopping can score a different
set of items when scores differ, so requests are compared where both sides
have them, and the count of each is reported.

`compare` prints a table and writes bench/results/cuda_hf.json (with --out,
also a copy there). Timings are wall seconds of the whole `gate run` (model
loading, every evaluation, statistics, reports), one run each.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import record, table

REPO = Path(__file__).resolve().parent.parent
DROP = {"qlora"}  # needs bitsandbytes: not on the GPU machine
# float32 on both sides: kernels differ (MKL vs cuBLAS), not precision.
# The probe's own tolerance for engine parity is 0.02 nats/token; per request
# we expect far less.
FP32_TOL_NATS = 1e-3


def _request_key(model: str, kind: str, args: tuple[Any, ...]) -> str:
    text = json.dumps([model, kind, list(args)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@contextlib.contextmanager
def recording(into: dict[str, Any]) -> Iterator[None]:
    """Record every request the hf engine's models answer, keyed by model and request."""
    from gate.serve import hf

    original = hf.HfEngine.serve

    class Recording(hf.AdapterLM):
        def __init__(self, name: str, inner: Any) -> None:
            super().__init__(inner, contextlib.nullcontext)
            self.name = name

        def _keep(self, kind: str, requests: list[Any], answers: list[Any]) -> None:
            for req, ans in zip(requests, answers, strict=True):
                into[_request_key(self.name, kind, req.args)] = [kind, ans]

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            out = self.inner.loglikelihood(requests, disable_tqdm=disable_tqdm)
            self._keep("loglikelihood", requests, [[float(ll), bool(g)] for ll, g in out])
            return out

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
            out = self.inner.loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
            self._keep("loglikelihood_rolling", requests, [float(x) for x in out])
            return out

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            out = self.inner.generate_until(requests, disable_tqdm=disable_tqdm)
            self._keep("generate_until", requests, list(out))
            return out

    @contextlib.contextmanager
    def serve(self: Any, group: Any, log_dir: Path) -> Iterator[dict[str, Any]]:
        with original(self, group, log_dir) as lms:
            yield {name: Recording(name, lm) for name, lm in lms.items()}

    hf.HfEngine.serve = serve  # type: ignore[method-assign]
    try:
        yield
    finally:
        hf.HfEngine.serve = original  # type: ignore[method-assign]


def gate_once(world_root: Path, device: str, dtype: str, work: Path) -> dict[str, Any]:
    """One cold gate run of the toy world with the hf engine; its answers, verdicts and time."""
    import yaml

    from gate.cli.demo import demo_config
    from gate.config.load import load_setup
    from gate.pipeline import run
    from gate.toy.build import load

    world = load(world_root.resolve())
    if world is None:
        raise SystemExit(f"{world_root}: no toy world built by this version; run `gate toy build` first")
    world = dataclasses.replace(world, candidates={k: v for k, v in world.candidates.items() if k not in DROP})
    out = work / "out"
    cfg = demo_config(world, out, "hf", sweep=True)
    cfg["base"]["dtype"] = dtype
    cfg["engine"]["hf"] = {"device": device}
    cfg["baseline"]["store"] = str(work / "baselines")
    cfg["cache_dir"] = str(work / "cache")
    cfg.pop("wandb", None)
    config_file = work / "gate.yaml"
    config_file.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    answers: dict[str, Any] = {}
    with recording(answers):
        started = time.perf_counter()
        result = run(load_setup(config_file))
        wall = time.perf_counter() - started
    results = json.loads((out / "results.json").read_text())
    verdicts = {c["name"]: c["verdict"] for c in results["candidates"]}
    scores = {f"{c['name']}/{t['task']}": [t["base_score"], t["candidate_score"]]
              for c in results["candidates"] for tier in c["tiers"] for t in tier["tasks"]}
    return {"device": device, "dtype": dtype, "wall_s": wall, "exit_code": result.exit_code,
            "verdicts": verdicts, "scores": scores, "answers": answers}


def _nats(answer: Any, pick: int | None) -> float:
    return float(answer if pick is None else answer[pick])


def agreement(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """Per request type: requests on both sides, the |difference| of their answers."""
    out: dict[str, Any] = {}
    common = ref.keys() & got.keys()
    for kind in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
        keys = [k for k in common if ref[k][0] == kind]
        row: dict[str, Any] = {"both": len(keys),
                               "reference_only": sum(1 for k in ref.keys() - got.keys() if ref[k][0] == kind),
                               "run_only": sum(1 for k in got.keys() - ref.keys() if got[k][0] == kind)}
        if kind == "generate_until":
            row["different_text"] = sum(1 for k in keys if ref[k][1] != got[k][1])
        else:
            pick = 0 if kind == "loglikelihood" else None  # (ll, is_greedy) or a bare ll
            diffs = [abs(_nats(ref[k][1], pick) - _nats(got[k][1], pick)) for k in keys]
            row["max_abs_nats"] = max(diffs) if diffs else None
            row["median_abs_nats"] = statistics.median(diffs) if diffs else None
            if kind == "loglikelihood":
                row["greedy_flag_differs"] = sum(1 for k in keys if ref[k][1][1] != got[k][1][1])
        out[kind] = row
    return out


def cmd_reference(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        res = gate_once(args.world, "cpu", "float32", Path(tmp))
    dest = Path(args.to)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(".part")
    with gzip.open(part, "wt", encoding="utf-8") as fh:
        json.dump(res, fh)
    part.replace(dest)
    print(f"cpu float32: exit {res['exit_code']}, {res['wall_s']:.1f} s, {len(res['answers'])} requests, "
          f"verdicts {res['verdicts']} -> {dest}")


def cmd_compare(args: argparse.Namespace) -> None:
    with gzip.open(args.reference, "rt", encoding="utf-8") as fh:
        ref = json.load(fh)
    rows, runs = [], []
    for spec in args.runs.split(","):
        device, dtype = spec.split(":")
        work = Path(tempfile.mkdtemp(prefix="gate-cuda-"))
        try:
            res = gate_once(args.world, device, dtype, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        agree = agreement(ref["answers"], res["answers"])
        ll = agree["loglikelihood"]
        roll = agree["loglikelihood_rolling"]
        gen = agree["generate_until"]
        same = res["verdicts"] == ref["verdicts"]
        runs.append({k: v for k, v in res.items() if k != "answers"} | {"agreement": agree,
                                                                      "verdicts_equal_cpu": same})
        rows.append([f"{device} {dtype}", f"{res['wall_s']:.1f}", f"{ref['wall_s'] / res['wall_s']:.2f}",
                     f"{ll['both']}", f"{ll['max_abs_nats']:.2e}", f"{ll['median_abs_nats']:.2e}",
                     f"{ll['greedy_flag_differs']}", f"{roll['max_abs_nats']:.2e}",
                     f"{gen['different_text']}/{gen['both']}", "same" if same else "DIFFERENT"])
    header = ["run", "gate run s", "cpu/run", "ll requests", "max |d| nats", "median |d|", "greedy flips",
              "rolling max |d|", "gen differs", "verdicts vs cpu"]
    table("the hf engine: the toy world's gate run on CUDA against the CPU reference", header,
          [["cpu float32 (reference)", f"{ref['wall_s']:.1f}", "1.00", "", "", "", "", "", "",
            "-"], *rows])
    print("reference verdicts:", ref["verdicts"])
    for r in runs:
        print(f"{r['device']} {r['dtype']} verdicts:", r["verdicts"])
    data = {"reference": {k: v for k, v in ref.items() if k != "answers"} | {"requests": len(ref["answers"])},
            "runs": runs, "fp32_tolerance_nats": FP32_TOL_NATS}
    path = record("cuda_hf", data)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(args.out) / path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ref = sub.add_parser("reference")
    ref.add_argument("--world", type=Path, default=None,
                     help="the toy world (default: the built one in the user cache)")
    ref.add_argument("--to", default=str(REPO / ".devcarry" / "cpu_reference.json.gz"))
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("--world", type=Path, default=None,
                      help="the toy world (default: the built one in the user cache)")
    cmp_.add_argument("--reference", default=str(REPO / ".devcarry" / "cpu_reference.json.gz"))
    cmp_.add_argument("--runs", default="cuda:float32,cuda:bfloat16")
    cmp_.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.world is None:
        from gate import toy

        args.world = toy.default_root()
    (cmd_reference if args.cmd == "reference" else cmd_compare)(args)


if __name__ == "__main__":
    main()
