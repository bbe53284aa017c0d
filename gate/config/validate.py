"""validate(): every problem `gate run` would stop on, found before anything is served.

`gate validate` and `gate run` both call it, so a config with five problems
is reported once with all five (exit 2), not one at a time after minutes of
work. What it checks, in order, collecting rather than stopping:

- paths: the base (a local folder with config.json, or a hub id; offline, a
  hub id must be in the local hub cache), each candidate's folder;
- the output folder can be written;
- tasks: every suite task resolves to an lm-eval task and can be built
  (its data loads; each task is planned here, once, and the plans are
  returned for the run to use);
- adapters against the base: shapes, rank, unsafe formats, an lm_head delta
  vLLM would drop (read from safetensors headers; no model is loaded);
- engine, W&B and QLoRA splits: the extras they need are installed;
- waivers: each names a task of the suite, outside the target tier.

Task planning and adapter checks belong to the evaluate and serve stages;
they are called from here because they are how a config is proven runnable.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.config.load import GateSetup, check_paths
from gate.config.tasks import ResolvedTask, include_paths, resolve_tasks, task_manager
from gate.errors import ConfigError, GateError, Problem

LOGLIKELIHOOD_TYPES = frozenset({"multiple_choice", "loglikelihood", "loglikelihood_rolling"})


@dataclass
class Checked:
    """A setup proven runnable: the edge from the config stage to the others."""

    setup: GateSetup
    tasks: list[ResolvedTask]
    #: one TaskPlan per task (gate.evaluate.plan), built once for the whole run
    plans: list[Any] = field(default_factory=list)
    task_manager: Any = None
    #: each LoRA candidate's AdapterInfo (gate.serve.adapters), checked against the base
    adapters: dict[str, Any] = field(default_factory=dict)


def find_problems(setup: GateSetup, *, engine_kind: str | None = None) -> tuple[list[Problem], Checked]:
    """Every problem with `setup`, and what was built while looking (plans may be partial)."""
    kind = engine_kind or setup.config.engine.kind
    problems = check_paths(setup)
    problems += _out_dir_problems(Path(setup.config.out), setup)
    problems += _extras_problems(setup, kind)
    mirror = Path(setup.config.dataset_mirror) if setup.config.dataset_mirror else None
    if mirror is not None and not mirror.is_dir():
        mirror = None  # reported by check_paths
    tasks, task_problems = resolve_tasks(setup.suite, setup.suite_file, mirror=mirror)
    problems += task_problems
    checked = Checked(setup, tasks)
    # The tasks that resolved cleanly are built and planned, so their data problems are found too.
    bad_files = {p.file for p in task_problems if p.file}
    plannable = [t for t in tasks if t.yaml_path is None or str(t.yaml_path) not in bad_files]
    if plannable:
        from gate.evaluate.mirror import dataset_mirror
        from gate.evaluate.plan import plan_tasks

        checked.task_manager = task_manager(include_paths(setup.suite, setup.suite_file))
        try:
            with dataset_mirror(mirror):
                checked.plans = plan_tasks(plannable, checked.task_manager)
        except GateError as exc:
            problems += exc.problems
    broken = {p.key for p in problems if p.key}
    problems += _adapter_problems(setup, tasks, kind, skip=broken, checked=checked.adapters)
    if setup.waivers and not task_problems:
        from gate.config.waivers import waiver_problems

        problems += waiver_problems(setup.waivers, {t.name: t.tier for t in tasks}, str(setup.config.waivers))
    return problems, checked


def validate(setup: GateSetup, *, engine_kind: str | None = None) -> Checked:
    """The setup, proven runnable; raises ConfigError listing every problem (exit 2)."""
    problems, checked = find_problems(setup, engine_kind=engine_kind)
    if problems:
        raise ConfigError(problems=problems)
    return checked


def _out_dir_problems(out: Path, setup: GateSetup) -> list[Problem]:
    """The output folder must be writable before any work (nothing is left behind)."""
    try:
        check_out_dir(out)
    except GateError as exc:
        return exc.problems
    return []


def check_out_dir(out: Path) -> None:
    """Raise InputError (exit 2) when `out` cannot be created or written.

    Nothing is created: the folder itself when it exists, else its nearest
    existing parent, gets a probe file that is removed at once (so `gate
    validate` leaves no empty output folder behind)."""
    from gate.errors import InputError

    try:
        where = out.resolve()
        while not where.exists() and where != where.parent:
            where = where.parent
        if not where.is_dir():
            raise NotADirectoryError(20, "not a folder", str(where))
        probe = where / f".gate-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output folder cannot be written: {exc.strerror or exc}", key="out",
                         file=str(out), fix="choose a writable folder with --out") from None


def _extras_problems(setup: GateSetup, kind: str) -> list[Problem]:
    """An engine or integration whose optional package is not installed."""
    cfg = setup.config
    label = str(setup.config_file) if setup.config_file else "command-line flags"
    problems = []
    if kind == "vllm" and importlib.util.find_spec("vllm") is None:
        problems.append(Problem("the vllm engine needs vLLM, which is not installed", file=label, key="engine.kind",
                                fix="pip install 'forgetting-gate[cpu]' (CPU) or 'forgetting-gate[vllm]' (GPU), or use engine: hf"))
    marked = [i for i, c in enumerate(cfg.candidates) if c.quantization]
    if marked and kind != "fake" and importlib.util.find_spec("bitsandbytes") is None:
        problems.append(Problem("a QLoRA candidate's split is scored on a 4-bit base, which needs bitsandbytes, "
                                "which is not installed", file=label, key=f"candidates.{marked[0]}.quantization",
                                fix="pip install 'forgetting-gate[qlora]', or remove `quantization`"))
    wants_wandb = cfg.wandb is not None or str(cfg.baseline.store).startswith("wandb://")
    if wants_wandb and importlib.util.find_spec("wandb") is None:
        key = "wandb" if cfg.wandb is not None else "baseline.store"
        problems.append(Problem("W&B is configured but wandb is not installed", file=label, key=key,
                                fix="pip install 'forgetting-gate[wandb]', or remove the W&B settings"))
    return problems


def _adapter_problems(setup: GateSetup, tasks: list[ResolvedTask], engine_kind: str, *,
                      skip: set[str], checked: dict[str, Any]) -> list[Problem]:
    """Each LoRA adapter checked against its base (no model is loaded)."""
    from gate.serve.adapters import refuse_lm_head_on_loglikelihood, validate_adapter

    cfg = setup.config
    if engine_kind == "fake" or "base.path" in skip:  # the fake engine serves no weights
        return []
    uses_ll = any(t.output_type in LOGLIKELIHOOD_TYPES or t.output_type is None for t in tasks)
    problems: list[Problem] = []
    for i, cand in enumerate(cfg.candidates):
        if cand.kind != "lora" or f"candidates.{i}.adapter" in skip:
            continue
        try:
            info = validate_adapter(cand.path, cfg.base.path, allow_pickle=cand.allow_pickle,
                                    trust_remote_code=cfg.base.trust_remote_code,
                                    served_by_vllm=engine_kind in ("vllm", "endpoint"))
            refuse_lm_head_on_loglikelihood(info, engine_kind, uses_ll)
            checked[cand.name] = info
            setup.notes.extend(f"candidate {cand.name}: {w}" for w in info.warnings)
        except GateError as exc:
            problems += exc.problems
    return problems
