"""Resolve a suite's task names against lm-eval's registry, without building tasks.

Building an lm-eval task loads its dataset (and for some tasks, such as
scrolls_govreport, downloads a metric script), so validation only looks names
up in lm-eval's index and reads the task YAML. Two things lm-eval does not do
that a suite needs:

- a relative `dataset_kwargs.data_files` path in a task YAML is resolved by
  `datasets` against the *current directory*; the gate resolves it against the
  YAML's own directory and passes the absolute path as an lm-eval task
  override, so suites run from any working directory;
- a missing data file is reported at validation time, naming the YAML.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.config.models import Suite, TaskSpec
from gate.config.policy import Tier
from gate.errors import InputError, Problem


@dataclass
class ResolvedTask:
    """A suite task located in lm-eval's index, with the overrides the gate applies."""

    name: str
    tier: Tier
    spec: TaskSpec
    yaml_path: Path | None
    is_group: bool = False
    output_type: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def lm_eval_spec(self) -> str | dict[str, Any]:
        """What to pass in lm-eval's `tasks=[...]`: the name, or the task's full
        config with the gate's overrides (lm-eval treats a dict as a complete
        inline config, not as overrides of the registered task)."""
        if not self.overrides or self.yaml_path is None or self.is_group:
            return self.name
        from lm_eval.tasks._yaml_loader import load_yaml

        cfg = load_yaml(self.yaml_path, resolve_func=True)
        return {**cfg, **self.overrides, "task": self.name}


@functools.lru_cache(maxsize=8)
def task_manager(include_paths: tuple[str, ...]) -> Any:
    """One lm-eval TaskManager per set of include paths (indexing takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_paths) or None)


def include_paths(suite: Suite, suite_file: Path) -> tuple[str, ...]:
    root = suite_file.resolve().parent
    paths = [str((root / p).resolve()) for p in suite.include]
    # A task named by a YAML path: its folder joins the include path.
    for _, spec in suite.tasks():
        if spec.task.endswith((".yaml", ".yml")):
            paths.append(str((root / spec.task).resolve().parent))
    return tuple(dict.fromkeys(paths))


def _yaml_problem(exc: Exception, path: Path) -> Problem:
    """A task YAML that cannot be parsed: say where, as for the gate's own files."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    detail = getattr(exc, "problem", None) or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return Problem(f"task YAML cannot be parsed{where}: {detail}", file=str(path), fix="fix the YAML syntax")


def _read_task_yaml(path: Path) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(path, resolve_func=False)
    return cfg if isinstance(cfg, dict) else {}


def _data_file_overrides(task: str, yaml_path: Path, cfg: dict[str, Any],
                         suite_file: Path, problems: list[Problem]) -> dict[str, Any]:
    """Absolute data_files for a task whose YAML gives relative ones."""
    kwargs = cfg.get("dataset_kwargs") or {}
    files = kwargs.get("data_files") if isinstance(kwargs, dict) else None
    if not files:
        return {}
    entries = files if isinstance(files, dict) else {"": files}
    fixed: dict[str, Any] = {}
    changed = False
    for split, value in entries.items():
        values = value if isinstance(value, list) else [value]
        out = []
        for v in values:
            p = Path(str(v)).expanduser()
            if "://" in str(v):
                out.append(str(v))
                continue
            absolute = p if p.is_absolute() else (yaml_path.parent / p).resolve()
            changed |= absolute != p
            if not absolute.exists():
                problems.append(Problem(f"task {task}: data file not found: {absolute}", file=str(yaml_path),
                                        key="dataset_kwargs.data_files",
                                        fix="generate or restore the data file (paths are relative to the task YAML)"))
            out.append(str(absolute))
        fixed[split] = out if isinstance(value, list) else out[0]
    if not changed:
        return {}
    new_files = fixed if isinstance(files, dict) else fixed[""]
    return {"dataset_kwargs": {**kwargs, "data_files": new_files}}


def resolve_tasks(suite: Suite, suite_file: Path) -> tuple[list[ResolvedTask], list[Problem]]:
    """Locate every suite task in lm-eval's index; return them and all problems."""
    tm = task_manager(include_paths(suite, suite_file))
    index = tm.task_index
    known = tm.all_tasks
    problems: list[Problem] = []
    resolved: list[ResolvedTask] = []
    for tier, spec in suite.tasks():
        name = spec.task
        yaml_path: Path | None = None
        if name.endswith((".yaml", ".yml")):
            yaml_path = (suite_file.resolve().parent / name).resolve()
            if not yaml_path.is_file():
                problems.append(Problem(f"task file not found: {yaml_path}", file=str(suite_file), key=f"tiers.{tier}",
                                        fix="check the path (relative to the suite file)"))
                continue
            try:
                cfg = _read_task_yaml(yaml_path)
            except Exception as exc:  # yaml errors of every flavour
                problems.append(_yaml_problem(exc, yaml_path))
                continue
            name = str(cfg.get("task", ""))
        entry = index.get(name)
        if entry is None:
            guess = difflib.get_close_matches(name, known, n=3, cutoff=0.75)
            fix = f"did you mean {', '.join(guess)}?" if guess else "check the name with `lm_eval --tasks list`, or add the task's YAML folder to the suite's `include`"
            problems.append(Problem(f"unknown lm-eval task {name!r}", file=str(suite_file), key=f"tiers.{tier}", fix=fix))
            continue
        is_group = getattr(getattr(entry, "kind", None), "name", "") in ("GROUP", "TAG")
        ypath = Path(entry.yaml_path) if getattr(entry, "yaml_path", None) else yaml_path
        task = ResolvedTask(name=name, tier=tier, spec=spec, yaml_path=ypath, is_group=is_group)
        if ypath is not None and not is_group:
            try:
                cfg = _read_task_yaml(ypath)
            except Exception as exc:
                problems.append(_yaml_problem(exc, ypath))
                continue
            task.output_type = cfg.get("output_type")
            task.overrides.update(_data_file_overrides(name, ypath, cfg, suite_file, problems))
        if spec.num_fewshot is not None:
            task.overrides["num_fewshot"] = spec.num_fewshot
        resolved.append(task)
    return resolved, problems


def suite_tiers(suite: Suite | None, tasks: Sequence[str], suite_file: str | None) -> dict[str, Tier]:
    """Which tier each task is judged in: the suite's, or `general` without a suite."""
    if suite is None:
        return {t: "general" for t in tasks}
    by_task = {spec.task: tier for tier, spec in suite.tasks()}
    missing = [t for t in by_task if t not in tasks]
    if missing:
        raise InputError(problems=[Problem(f"suite task {t} is not in the lm-eval output", file=suite_file,
                                           key="tiers", fix="evaluate it with lm_eval, or remove it from the suite")
                                   for t in missing])
    return dict(by_task)
