"""Run lm-eval on one served model and turn its output into records.

Evaluation runs `lm_eval.simple_evaluate` on one model's LM with
`log_samples=True` and a response cache *per model fingerprint*: lm-eval's
request cache keys on the request alone, not on the model (lm-eval #4063,
#2715), so a shared cache file would mix two adapters' answers. lm-eval's API
models write each response to the cache as it arrives, so an evaluation
interrupted by a dying engine resumes where it stopped.

A group task (mmlu) is scored per member and pooled into one task here.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gate.errors import EngineError, InputError
from gate.evaluate import lmeval_fixed_costs
from gate.evaluate.plan import TaskPlan
from gate.evaluate.records import TaskRecords


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

    from gate.evaluate.records import ItemKey

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
        version=";".join(str(p.version) for p in parts), config_hash=hashlib.sha256("".join(str(p.config_hash) for p in parts).encode()).hexdigest(),
    )


def evaluate_model(lm: Any, plans: Sequence[TaskPlan], *, task_manager: Any, cache_path: Path | None,
                   on_progress: Callable[[str], None] | None = None) -> dict[str, TaskRecords]:
    """Evaluate one model's LM on the planned tasks; return records per suite task."""
    import lm_eval

    from gate.evaluate.lmeval_io import records_from_evaluation

    if not plans:
        return {}
    lmeval_fixed_costs.install()
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
    except (EngineError, InputError):
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
