"""The lm-eval boundary for `gate run`: plan the items, evaluate a model, get records.

Planning happens once per run, before any model is served: each task is
built once to count its documents, hash its data and draw the item
selection. A per-task `samples: N` draws a seeded random subset (lm-eval's
`samples=` argument): never the first N documents, which is a biased
subsample (lm-eval #2598).

Evaluation runs `lm_eval.simple_evaluate` on one model's LM with
`log_samples=True` and a response cache *per model fingerprint*: lm-eval's
request cache keys on the request alone, not on the model (lm-eval #4063,
#2715), so a shared cache file would mix two adapters' answers. lm-eval's API
models write each response to the cache as it arrives, so an evaluation
interrupted by a dying engine resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gate.errors import ConfigError, EngineError, InputError, Problem
from gate.records import TaskRecords
from gate.tasks import ResolvedTask

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
    #: a few of the task's own texts, for the sanity probes (gate.probes)
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


def _config_dict(task_obj: Any) -> dict[str, Any]:
    cfg = getattr(task_obj, "config", None)
    if cfg is None:
        return {}
    to_dict = getattr(cfg, "to_dict", None)
    data = to_dict() if callable(to_dict) else dict(vars(cfg))
    # lm-eval records where the YAML came from; moving a checkout must not invalidate baselines.
    meta = dict(data.get("metadata") or {})
    meta.pop("config_source", None)
    data["metadata"] = meta
    # Data files are hashed by content (TaskPlan.data_hash); their absolute paths
    # differ between checkouts and must not change the fingerprint.
    kwargs = data.get("dataset_kwargs")
    if isinstance(kwargs, dict) and "data_files" in kwargs:
        data["dataset_kwargs"] = {k: v for k, v in kwargs.items() if k != "data_files"}
    return data


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


def draw_selection(n_docs: int, samples: int | None, seed: int) -> list[int] | None:
    """A seeded random subset of document indices, sorted; None for all documents."""
    if samples is None or samples >= n_docs:
        return None
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_docs, size=samples, replace=False))


def plan_tasks(tasks: Sequence[ResolvedTask], task_manager: Any) -> list[TaskPlan]:
    """Build each task once: count documents, hash data and config, draw items."""
    plans: list[TaskPlan] = []
    problems: list[Problem] = []
    for t in tasks:
        try:
            loaded = task_manager.load([t.lm_eval_spec()])
        except Exception as exc:  # datasets/lm-eval raise many kinds
            problems.append(Problem(f"task {t.name} cannot be loaded: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                                    file=str(t.yaml_path) if t.yaml_path else None,
                                    fix="check the task's dataset (offline runs need local data files)"))
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


def pool_records(name: str, parts: Sequence[TaskRecords], sizes: Sequence[int] | None = None,
                 by_member: bool = False) -> TaskRecords:
    """Pool a group's member tasks into one task (items concatenated in member
    order, doc ids offset so they stay unique). The pooled mean equals
    lm-eval's size-weighted group score (mmlu's `acc`).

    `sizes` (each member's document count) fixes the offsets, so a member's
    item gets the same pooled id whichever of its items were scored: a
    candidate scored in rounds pairs with the fully scored base by id.
    Without it the offset is the largest doc id seen plus one.

    `by_member`: each member task is one cluster (MMLU's subjects); otherwise
    members' own clusters are kept, prefixed with the member's name."""
    from dataclasses import replace

    from gate.records import ItemKey

    if len(parts) == 1:
        one = parts[0]
        return replace(one, task=name, clusters=[one.task] * one.n if by_member else one.clusters)
    first = parts[0]
    keys: list[ItemKey] = []
    offset = 0
    for i, p in enumerate(parts):
        if p.metric != first.metric or p.aggregation != first.aggregation:
            raise InputError(f"group {name}: members use different metrics ({first.task}: {first.metric}, {p.task}: {p.metric})",
                             key=name, fix="choose a metric every member has, with `metric:` in the suite")
        keys += [ItemKey(offset + k.doc_id, f"{p.task}:{k.doc_hash}", k.prompt_hash, k.target_hash) for k in p.keys]
        offset += sizes[i] if sizes is not None else max((k.doc_id for k in p.keys), default=-1) + 1
    texts = None
    if all(p.texts is not None for p in parts):
        texts = [t for p in parts for t in (p.texts or [])]
    clusters = None
    if by_member:
        clusters = [p.task for p in parts for _ in range(p.n)]
    elif all(p.clusters is not None for p in parts):
        clusters = [f"{p.task}:{c}" for p in parts for c in (p.clusters or [])]
    return TaskRecords(
        task=name, metric=first.metric, higher_is_better=first.higher_is_better, aggregation=first.aggregation,
        keys=keys, num=np.concatenate([p.num for p in parts]), den=np.concatenate([p.den for p in parts]),
        reported_score=None, reported_stderr=None,
        n_choices=first.n_choices if all(p.n_choices == first.n_choices for p in parts) else None,
        binary=all(p.binary for p in parts), texts=texts, clusters=clusters,
        version=";".join(str(p.version) for p in parts), config_hash=_sha("".join(str(p.config_hash) for p in parts)),
    )


def evaluate_model(lm: Any, plans: Sequence[TaskPlan], *, task_manager: Any, cache_path: Path | None,
                   on_progress: Callable[[str], None] | None = None) -> dict[str, TaskRecords]:
    """Evaluate one model's LM on the planned tasks; return records per suite task."""
    import lm_eval

    from gate.lmeval_io import records_from_evaluation

    if not plans:
        return {}
    specs = [p.task.lm_eval_spec() for p in plans]
    samples = {leaf: sel for p in plans for leaf, sel in p.selection.items() if sel is not None}
    seed = plans[0].task.spec.seed
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
    if on_progress:
        on_progress(f"{sum(p.n_items for p in plans)} items in {len(plans)} task(s)")
    try:
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=specs,
            samples=samples or None,
            log_samples=True,
            use_cache=str(cache_path) if cache_path is not None else None,
            task_manager=task_manager,
            bootstrap_iters=0,
            random_seed=seed,
            numpy_random_seed=seed,
            # Seeding torch imports it (~250 MB). Only an in-process torch model
            # could use its RNG, and such a model has imported torch already.
            torch_random_seed=seed if "torch" in sys.modules else None,
            fewshot_random_seed=seed,
        )
    except EngineError:
        raise
    except Exception as exc:
        # The engine's death surfaces here as a connection error from deep inside
        # lm-eval; the serve() context turns it into EngineError with the server log.
        raise EngineError(f"evaluation failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                          fix="see the engine log in the output folder; rerun to resume from the cache") from exc
    if results is None:
        raise EngineError("lm-eval returned no results", fix="rerun; see the engine log")
    metrics: dict[str, str] = {}
    for p in plans:
        for leaf in p.leaves:
            if p.metric:
                metrics[leaf] = p.metric
    fields = {leaf: p.task.spec.cluster_field for p in plans for leaf in p.leaves
              if p.task.spec.cluster_field}
    leaf_records = records_from_evaluation(results, metrics=metrics, clusters=fields)
    out: dict[str, TaskRecords] = {}
    for p in plans:
        missing = [leaf for leaf in p.leaves if leaf not in leaf_records]
        if missing:
            raise EngineError(f"lm-eval returned no samples for {', '.join(missing)}", fix="rerun; see the engine log")
        out[p.name] = pool_records(p.name, [leaf_records[leaf] for leaf in p.leaves],
                                   sizes=[p.n_docs[leaf] for leaf in p.leaves],
                                   by_member=p.task.spec.cluster == "member")
    return out
