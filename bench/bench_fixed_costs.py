"""lm-eval's fixed costs, as shipped vs paid once per process (issue 17).

A `gate run` calls `lm_eval.simple_evaluate` once per round and per model.
lm-eval, written for one call per process, repeats three fixed costs: it
indexes its ~14,700 built-in task YAMLs for every TaskManager, describes the
environment in child processes at the end of every call, and compiles every
prompt template again for every document. `gate.config.tasks.task_manager`
and `gate.evaluate.lmeval_fixed_costs` pay each once per process.

Measured here: the wall time of a whole `gate.run` on the fake engine (no
model, so what remains is the gate's and lm-eval's own work) over the fake
suite (3 tasks, 1,000 documents) with a base and two candidates, each run in
a fresh folder as a second suite or a test would be, in one process, the two
set-ups alternating after one warm-up run of each. The fake engine answers
instantly: on a real engine the same seconds are saved, out of a longer run.

    python bench/bench_fixed_costs.py [--runs 3]
Prints a table and writes bench/results/fixed_costs.json.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from benchlib import median, record, table


@contextlib.contextmanager
def as_shipped() -> Iterator[None]:
    """lm-eval's own TaskManager, add_env_info and apply_template, as before the change."""
    import lm_eval.evaluator
    import lm_eval.utils
    from lm_eval.tasks import TaskManager

    import gate.config.tasks
    import gate.config.validate
    import gate.evaluate.lmeval_fixed_costs as fixed

    own = fixed.shipped()
    saved = (gate.config.validate.task_manager, gate.config.tasks.task_manager,
             lm_eval.evaluator.add_env_info, lm_eval.utils.apply_template, fixed.install)
    # every TaskManager indexes lm-eval's built-in tasks again, as before the change
    gate.config.validate.task_manager = gate.config.tasks.task_manager = (
        lambda paths: TaskManager(include_path=list(paths) or None))
    lm_eval.evaluator.add_env_info, lm_eval.utils.apply_template = own["add_env_info"], own["apply_template"]
    fixed.install = lambda: None  # harness.evaluate_model would put them back
    try:
        yield
    finally:
        (gate.config.validate.task_manager, gate.config.tasks.task_manager,
         lm_eval.evaluator.add_env_info, lm_eval.utils.apply_template, fixed.install) = saved


def one_run(root: Path) -> dict[str, Any]:
    from fakeworld import BASE, FORGETFUL, GOOD, fake_gate_config

    from gate.config.load import load_setup
    from gate.pipeline import run
    from gate.serve.fake import FakeEngine

    fake_gate_config(root, adapters=("good", "forgetful"))
    started = time.perf_counter()
    result = run(load_setup(root / "gate.yaml"),
                 engine=FakeEngine({"base": BASE, "good": GOOD, "forgetful": FORGETFUL}))
    return {"wall_s": time.perf_counter() - started, "exit_code": result.exit_code,
            "verdicts": {c["name"]: c["verdict"] for c in result.results["candidates"]}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="gate-bench-fixed-"))
    walls: dict[str, list[float]] = {"as shipped": [], "once per process": []}
    verdicts: dict[str, Any] = {}
    try:
        count = 0
        for i in range(args.runs + 1):  # round 0 warms each set-up up (imports, the shared index)
            for name in walls:
                count += 1
                with as_shipped() if name == "as shipped" else contextlib.nullcontext():
                    got = one_run(scratch / f"run{count}")
                verdicts.setdefault(name, got["verdicts"])
                assert got["verdicts"] == verdicts[name] and got["exit_code"] == 1, got
                if i:
                    walls[name].append(got["wall_s"])
                print(f"{name}: run {i} {got['wall_s']:.1f} s{' (warm-up)' if not i else ''}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert verdicts["as shipped"] == verdicts["once per process"], verdicts
    shipped, once = median(walls["as shipped"]), median(walls["once per process"])
    table(f"a repeated fake-engine gate run (base + 2 candidates, 1,000 documents; median of {args.runs})",
          ["lm-eval's fixed costs", "median s", "ratio"],
          [["as shipped", shipped, 1.0], ["once per process", once, once / shipped]])
    record("fixed_costs", {"setup": "gate.run on the fake engine, fake suite, base + good + forgetful, fresh folder per run, "
                                    "one process, set-ups alternating after a warm-up run each",
                           "runs": args.runs, "wall_s": walls,
                           "median_s": {"as shipped": shipped, "once per process": once},
                           "ratio": once / shipped, "verdicts": verdicts["as shipped"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
