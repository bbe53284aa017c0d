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

import contextlib
import difflib
import functools
import hashlib
import os
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.atomic import atomic_write_bytes
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
    #: what the gate changed about the task, for the run's notes (a split evaluated instead of another)
    notes: list[str] = field(default_factory=list)

    def lm_eval_spec(self) -> str | dict[str, Any]:
        """What to pass in lm-eval's `tasks=[...]`: the name, or the task's full
        config with the gate's overrides (lm-eval treats a dict as a complete
        inline config, not as overrides of the registered task)."""
        if not self.overrides or self.yaml_path is None or self.is_group:
            return self.name
        from lm_eval.tasks._yaml_loader import load_yaml

        cfg = load_yaml(self.yaml_path, resolve_func=True)
        return {**cfg, **self.overrides, "task": self.name}


#: Bump when what is pickled changes shape.
INDEX_FORMAT = 1
#: Index files kept per cache folder (one per lm-eval install that shares it).
INDEX_KEEP = 4


@functools.lru_cache(maxsize=1)
def _builtin_index() -> dict[str, Any]:
    """lm-eval's index of its own tasks: about 14,700 entries parsed from every
    YAML under lm_eval/tasks (9 to 12 s on 2 cores). It depends only on the
    installed lm-eval, so a process builds it once and every TaskManager gets a
    copy of the dict (lm-eval deep-copies an entry's config before using it, so
    the entries themselves can be shared); across processes it is kept on disk
    (`cached_index`)."""
    from lm_eval import tasks

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return cached_index(Path(tasks.__file__).parent, Path(base) / "gate" / "lmeval-index")


def index_signature(root: Path) -> str:
    """What the index of `root` depends on: lm-eval's version (its parser), the
    Python version (the pickle) and every task YAML's path, size and mtime, so an
    upgrade or an edited YAML (an editable lm-eval checkout) means a new index.
    About 0.1 s for lm-eval's 14,700 YAMLs."""
    from importlib.metadata import version

    sig = hashlib.sha256(f"{INDEX_FORMAT}|{version('lm_eval')}|{sys.version_info[:2]}|{root}\n".encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith((".yaml", ".yml")):
                st = os.stat(os.path.join(dirpath, name))
                sig.update(f"{dirpath}/{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return sig.hexdigest()[:32]


def cached_index(root: Path, cache_dir: Path) -> dict[str, Any]:
    """lm-eval's `TaskIndex.build([root])`, kept in `cache_dir` under its
    `index_signature`: a `gate run` process loads it in under a second instead
    of parsing every YAML again. The file is written atomically; one that cannot
    be read is rebuilt, and a cache folder that cannot be written only costs the
    build, as in lm-eval. It is a pickle, in the user's own cache folder, as
    lm-eval's and datasets' own caches are."""
    from lm_eval.tasks._index import TaskIndex

    path = cache_dir / f"index-{index_signature(root)}.pickle"
    with contextlib.suppress(Exception):  # missing, truncated or from another lm-eval: build it
        with path.open("rb") as f:
            index = pickle.load(f)
        if isinstance(index, dict):
            return index
    index = TaskIndex.build([root])
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL))
        older = sorted(cache_dir.glob("index-*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in older[INDEX_KEEP:]:
            stale.unlink(missing_ok=True)
    return index


@functools.lru_cache(maxsize=8)
def task_manager(include_paths: tuple[str, ...]) -> Any:
    """One lm-eval TaskManager per set of include paths.

    lm-eval indexes its own tasks again for every TaskManager; here only the
    include paths are indexed per manager, and the built-in index is shared
    (`_builtin_index`), so a second run in one process (the Python front door,
    a notebook, the tests) does not pay 12 s again. The merge is lm-eval's own:
    include paths are indexed after the built-in tasks and override them
    (tests/evaluate/test_lmeval_fixed_costs.py checks the result equals a
    TaskManager built the usual way)."""
    from collections import defaultdict
    from itertools import chain

    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind

    tm = TaskManager(include_path=list(include_paths) or None, include_defaults=False)
    index = {**_builtin_index(), **tm._index}
    kinds: dict[Any, list[str]] = defaultdict(list)
    for name, entry in index.items():
        kinds[entry.kind].append(name)
    # the attributes TaskManager.__init__ derives from its index (lm-eval 0.4.13)
    tm._index = index
    tm._all_tasks = sorted(index)
    tm._all_subtasks = sorted(chain.from_iterable(kinds[k] for k in (Kind.TASK, Kind.PY_TASK)))
    tm._all_groups = sorted(kinds[Kind.GROUP])
    tm._all_tags = sorted(kinds[Kind.TAG])
    return tm


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


SPLIT_KEYS = ("test_split", "validation_split", "training_split", "fewshot_split")


def _split_overrides(task: ResolvedTask, cfg: dict[str, Any], mirror: Path | None, suite_file: Path,
                     problems: list[Problem]) -> dict[str, Any]:
    """The task's splits, fitted to what is there.

    `split:` on the suite task evaluates that split (lm-eval evaluates its
    test split when it names one, so the override is `test_split`). With a
    dataset mirror, a split the mirror's copy lacks is dropped from the task
    when lm-eval would only read it to build a few-shot sampler that a
    zero-shot task never uses (lm-eval reads the training split at task
    build time); a missing split the evaluation or its few-shot examples need
    is a problem naming the splits there are and the fix."""
    from gate.evaluate.mirror import DatasetNotMirrored, is_hub_id, locate, mirror_splits

    spec, key = task.spec, f"tiers.{task.tier}"
    out: dict[str, Any] = {}
    if spec.split is not None:
        out["test_split"] = spec.split
        own = cfg.get("test_split") or cfg.get("validation_split")
        if own != spec.split:
            task.notes.append(f"task {task.name} evaluates split {spec.split!r} (its own: {own!r}), as the suite says")
    path, config = cfg.get("dataset_path"), cfg.get("dataset_name")
    if mirror is None or not isinstance(path, str) or not is_hub_id(path):
        return out
    try:
        hit = locate(mirror, path, config)
        if hit is None:
            return out
        have = mirror_splits(hit)
    except DatasetNotMirrored as exc:
        problems.append(Problem(f"task {task.name}: {exc}", file=str(suite_file), key=key, fix=exc.fix))
        return out
    except Exception as exc:  # an unreadable snapshot: datasets raises many kinds
        problems.append(Problem(f"task {task.name}: the mirror's copy of {path} at {mirror / path} cannot be read: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                                file=str(suite_file), key="dataset_mirror", fix="re-download or re-save the dataset there"))
        return out
    splits = {k: out.get(k, cfg.get(k)) for k in SPLIT_KEYS}
    evaluated = splits["test_split"] or splits["validation_split"]
    shots = spec.num_fewshot if spec.num_fewshot is not None else (cfg.get("num_fewshot") or 0)
    where = f"the mirror's copy of {path}" + (f" ({config})" if config else "") + f" at {hit.folder}"
    there = ", ".join(have) or "none"
    if evaluated is not None and evaluated not in have:
        problems.append(Problem(f"task {task.name} evaluates split {evaluated!r}, which {where} lacks (it has {there})",
                                file=str(suite_file), key=key,
                                fix=f"mirror that split, or set `split: {have[0] if have else 'NAME'}` on the task "
                                    "to evaluate a split that is there (reports say so)"))
        return out
    for k in ("fewshot_split", "training_split", "validation_split"):
        name = splits[k]
        if name is None or name in have or name == evaluated:
            continue
        if shots and (k == "fewshot_split" or (k == "training_split" and splits["fewshot_split"] is None)):
            problems.append(Problem(f"task {task.name} draws its {shots} few-shot examples from split {name!r}, "
                                    f"which {where} lacks (it has {there})", file=str(suite_file), key=key,
                                    fix="mirror that split, or set `num_fewshot: 0` on the task"))
            continue
        out[k] = None
    return out


def resolve_tasks(suite: Suite, suite_file: Path, *, mirror: Path | None = None
                  ) -> tuple[list[ResolvedTask], list[Problem]]:
    """Locate every suite task in lm-eval's index; return them and all problems.
    With a dataset `mirror`, each task's splits are checked against the mirror's copy."""
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
            before = len(problems)
            task.overrides.update(_split_overrides(task, cfg, mirror, suite_file, problems))
            if len(problems) > before:
                continue  # its data cannot be built as configured: planning it would only repeat the problem
        elif spec.split is not None:
            problems.append(Problem(f"`split` applies to a single task, and {name} is a group", file=str(suite_file),
                                    key=f"tiers.{tier}", fix="remove `split`, or list the group's tasks one by one"))
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
