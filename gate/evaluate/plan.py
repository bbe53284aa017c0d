"""Planning for `gate run`: each suite task built once, its items drawn.

Planning happens once per run, before any model is served: each task is
built once to count its documents, hash its data and draw the item
selection. A per-task `samples: N` draws a seeded random subset (lm-eval's
`samples=` argument): never the first N documents, which is a biased
subsample (lm-eval #2598).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gate.config.tasks import ResolvedTask
from gate.errors import ConfigError, Problem

log = logging.getLogger(__name__)


@dataclass
class TaskPlan:
    """One suite task, ready to evaluate on any model: what to run and on which items."""

    task: ResolvedTask
    #: lm-eval leaf task names (one for a task, the members for a group such as mmlu)
    leaves: list[str]
    #: per leaf: the selected document indices (None = every document)
    selection: dict[str, list[int] | None]
    #: per leaf: number of documents in the evaluation split
    n_docs: dict[str, int]
    data_hash: str
    config_hash: str
    version: str
    metric: str | None
    fingerprint_parts: dict[str, str] = field(default_factory=dict)
    #: a few of the task's own texts, for the sanity probes (gate.serve.probes)
    probe_texts: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def n_items(self) -> int:
        return sum(len(s) if s is not None else self.n_docs[leaf] for leaf, s in self.selection.items())


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def task_config(config: Mapping[str, Any], model_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A task config without what is not the task (the one normalisation, for
    `gate run`'s plans and for lm-eval's files read by `gate compare`):

    - `metadata.config_source`: where the YAML lies on this machine (moving a
      checkout must not invalidate baselines);
    - `dataset_kwargs.data_files`: their paths differ between checkouts; their
      content is hashed as the task's data;
    - model arguments lm-eval's CLI merges into `metadata` (`model_args`);
    - memory addresses (`_without_addresses`).
    """
    data = _without_addresses(dict(config))
    args = model_args or {}
    meta = data.get("metadata")
    if isinstance(meta, Mapping) or meta is None:
        data["metadata"] = {k: v for k, v in (meta or {}).items()
                            if k != "config_source" and not (k in args and args[k] == v)}
    kwargs = data.get("dataset_kwargs")
    if isinstance(kwargs, Mapping) and "data_files" in kwargs:
        data["dataset_kwargs"] = {k: v for k, v in kwargs.items() if k != "data_files"}
    return data


_ADDRESS = re.compile(r"(<[^<>\n]*?) at 0x[0-9a-fA-F]+>")


def _without_addresses(value: Any) -> Any:
    """`value` with every object's memory address left out, at any depth.

    lm-eval's `TaskConfig.to_dict` writes a callable at the top level as its
    source, but one nested deeper stays a function: lm-eval 0.4.13 copies
    `process_docs` into `fewshot_config`, which canonical JSON then wrote as
    "<function process_docs at 0x7f...>", an address that differs in every
    process. The config digest of every task with a `process_docs` function
    (hellaswag, winogrande, the SCROLLS tasks, ...) changed from one `gate run`
    to the next: the stored baseline was never reused ("config changed;
    computing it"), and `baseline.require: true` would have stopped a CI run.
    lm-eval's own results files hold the same text, so strings lose their
    addresses too: `gate compare` digests them alike. The function's source is
    still in the digest, where the config names it at the top level. A set is
    sorted: its order follows the process's string hashing."""
    if isinstance(value, Mapping):
        return {k: _without_addresses(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_addresses(v) for v in value]
    if isinstance(value, set | frozenset):  # its order is the process's string hashing
        return sorted((_without_addresses(v) for v in value), key=str)
    if isinstance(value, str):
        return _ADDRESS.sub(r"\1>", value)
    if callable(value):
        return _ADDRESS.sub(r"\1>", str(value))
    return value


def config_digest(config: Mapping[str, Any], model_args: Mapping[str, Any] | None = None) -> str:
    """sha256 of `task_config(config)` as canonical JSON."""
    return _sha(_canonical(task_config(config, model_args)))


def _config_dict(task_obj: Any) -> dict[str, Any]:
    cfg = getattr(task_obj, "config", None)
    if cfg is None:
        return {}
    to_dict = getattr(cfg, "to_dict", None)
    return task_config(to_dict() if callable(to_dict) else dict(vars(cfg)))


def _leaf_tasks(loaded: Mapping[str, Any]) -> dict[str, Any]:
    return dict(sorted(loaded.get("tasks", {}).items()))


def _probe_texts(task_obj: Any, k: int = 2) -> list[str]:
    """The first k documents as prompt + answer text (what the task itself scores)."""
    texts = []
    for doc in list(task_obj.eval_docs)[:k]:
        try:
            text = str(task_obj.doc_to_text(doc))
            target = task_obj.doc_to_target(doc)
            choices = task_obj.doc_to_choice(doc) if task_obj.config.doc_to_choice is not None else None
            if isinstance(target, int) and choices:
                target = choices[target]
            texts.append(text + (" " + str(target) if isinstance(target, str) and target else ""))
        except Exception:  # a task without text accessors just gives no probes
            continue
    return [t for t in texts if t.strip()]


def _fewshot_docs(task_obj: Any) -> list[Any]:
    """The documents a few-shot task draws its examples from (none for a zero-shot
    task): a changed few-shot split changes every prompt, so it is task data too."""
    shots = getattr(getattr(task_obj, "config", None), "num_fewshot", None) or 0
    if shots <= 0:
        return []
    try:
        docs = task_obj.fewshot_docs()
    except Exception:  # no few-shot source: lm-eval itself will say so when it builds prompts
        return []
    return list(docs) if docs is not None else []


def draw_selection(n_docs: int, samples: int | None, seed: int) -> list[int] | None:
    """A seeded random subset of document indices, sorted; None for all documents."""
    if samples is None or samples >= n_docs:
        return None
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_docs, size=samples, replace=False))


def _load_problem(t: ResolvedTask, exc: BaseException) -> Problem:
    """A task whose data cannot be loaded; a dataset the mirror lacks is named with its fix."""
    from gate.evaluate.mirror import DatasetNotMirrored

    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, DatasetNotMirrored):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, DatasetNotMirrored):
        return Problem(f"task {t.name} cannot be loaded: {cause}", file=str(t.yaml_path) if t.yaml_path else None,
                       key="dataset_mirror", fix=cause.fix)
    return Problem(f"task {t.name} cannot be loaded: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                   file=str(t.yaml_path) if t.yaml_path else None,
                   fix="check the task's dataset (offline runs need local data files, or a `dataset_mirror`)")


def plan_tasks(tasks: Sequence[ResolvedTask], task_manager: Any) -> list[TaskPlan]:
    """Build each task once: count documents, hash data and config, draw items."""
    plans: list[TaskPlan] = []
    problems: list[Problem] = []
    for t in tasks:
        try:
            loaded = task_manager.load([t.lm_eval_spec()])
        except Exception as exc:  # datasets/lm-eval raise many kinds
            problems.append(_load_problem(t, exc))
            continue
        leaves = _leaf_tasks(loaded)
        if not leaves:
            problems.append(Problem(f"task {t.name} expands to no tasks", file=str(t.yaml_path), fix="check the task or group"))
            continue
        selection: dict[str, list[int] | None] = {}
        n_docs: dict[str, int] = {}
        data_h = hashlib.sha256()
        cfg_h = hashlib.sha256()
        versions = []
        per_leaf = t.spec.samples
        if per_leaf is not None and len(leaves) > 1:
            # A group's sample budget is spread over its members by size.
            sizes = {name: len(obj.eval_docs) for name, obj in leaves.items()}
            total = sum(sizes.values()) or 1
            quota = {name: max(1, round(per_leaf * n / total)) for name, n in sizes.items()}
        for i, (leaf, obj) in enumerate(leaves.items()):
            docs = obj.eval_docs
            n = len(docs)
            n_docs[leaf] = n
            want = per_leaf if len(leaves) == 1 else (quota[leaf] if per_leaf is not None else None)
            selection[leaf] = draw_selection(n, want, t.spec.seed + i)
            for doc in docs:
                data_h.update(_canonical(doc).encode("utf-8"))
            for doc in _fewshot_docs(obj):
                data_h.update(b"fewshot:" + _canonical(doc).encode("utf-8"))
            cfg_h.update(_canonical(_config_dict(obj)).encode("utf-8"))
            versions.append(f"{leaf}={getattr(obj, 'VERSION', None) or (_config_dict(obj).get('metadata') or {}).get('version')}")
        plan = TaskPlan(task=t, leaves=list(leaves), selection=selection, n_docs=n_docs,
                        data_hash=data_h.hexdigest(), config_hash=cfg_h.hexdigest(),
                        version=";".join(versions), metric=t.spec.metric,
                        probe_texts=_probe_texts(next(iter(leaves.values()))))
        plan.fingerprint_parts = {
            "task": t.name,
            "task_config": plan.config_hash,
            "task_version": plan.version,
            "task_data": plan.data_hash,
            "num_fewshot": str(t.spec.num_fewshot),
            "metric": str(t.spec.metric),
            "selection": _sha(_canonical(selection)),
            "seed": str(t.spec.seed),
        }
        plans.append(plan)
    if problems:
        raise ConfigError(problems=problems)
    return plans
