"""What a run already knows, before anything is served.

The base's records come from the baseline store, each candidate's from the
records cache (both keyed by `RunKeys`). What is missing is the work left
for the evaluate stage. A candidate scored in rounds is scored whole when
any of its tasks is missing: rounds decide a candidate's tasks together
(fail_fast, the tier's alpha split), and lm-eval's response cache serves
what an interrupted run already scored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gate.baseline.keys import RunKeys
from gate.baseline.store import BaselineStore
from gate.errors import BaselineMismatch, Problem
from gate.evaluate.plan import TaskPlan
from gate.evaluate.records import TaskRecords
from gate.serve.base import BASE_NAME

Say = Callable[[str], None]


@dataclass
class Known:
    """Records found per model and task, and the plans still to evaluate per model."""

    records: dict[str, dict[str, TaskRecords]]
    todo: dict[str, list[TaskPlan]]
    #: why each missing baseline was missing (a changed fingerprint part, or none stored)
    misses: list[Problem] = field(default_factory=list)
    #: candidates left unscored on purpose (a sweep's checkpoints after one that failed,
    #: under sweep.stop_after_fail)
    skipped: set[str] = field(default_factory=set)

    def skip(self, model: str) -> None:
        self.todo[model] = []
        self.records[model] = {}
        self.skipped.add(model)

    def add(self, model: str, plan: TaskPlan, rec: TaskRecords) -> None:
        """A task's records are now known (evaluated, or stored by another run)."""
        self.records[model][plan.name] = rec
        self.todo[model] = [p for p in self.todo[model] if p.name != plan.name]


def lookup(store: BaselineStore, records_cache: BaselineStore, keys: RunKeys, plans: Sequence[TaskPlan], *,
           store_label: str, require: bool, rounds: bool, say: Say) -> Known:
    """Everything the store and the cache hold for this run; raises BaselineMismatch
    (exit 2) when a baseline is missing and the run requires one."""
    known = Known(records={name: {} for name in keys.model_ids}, todo={name: [] for name in keys.model_ids})
    for name in keys.model_ids:
        src = store if name == BASE_NAME else records_cache
        for p in plans:
            rec = src.get(keys.key(name, p))
            if rec is not None:
                known.records[name][p.name] = rec
            else:
                known.todo[name].append(p)
    for name in keys.model_ids:
        if name != BASE_NAME and rounds and known.todo[name]:
            known.todo[name] = list(plans)
            known.records[name] = {}
    for p in known.todo[BASE_NAME]:
        why = store.explain_miss(keys.key(BASE_NAME, p)) or [f"no baseline stored for task {p.name}"]
        known.misses += [Problem(reason, file=store_label, key=p.name,
                                 fix="run once without --require-baseline to compute and store it") for reason in why]
    if known.todo[BASE_NAME] and require:
        raise BaselineMismatch(problems=known.misses)
    for m in known.misses:
        say(f"baseline: {m.message}; computing it")
    if known.records[BASE_NAME]:
        say(f"baseline: reusing {len(known.records[BASE_NAME])} stored task(s)")
    cached = sum(len(recs) for name, recs in known.records.items() if name != BASE_NAME)
    if cached:
        say(f"cache: reusing {cached} candidate task result(s)")
    return known


def claim_missing_baselines(store: BaselineStore, known: Known, keys: RunKeys, held: contextlib.ExitStack,
                            say: Say) -> None:
    """Another `gate run` may be computing the same baseline: hold each missing
    key's lock (in `held`) while this run computes it, and take what the other
    process stored meanwhile. Called only once the engine is up, so a run that
    fails to start leaves the store untouched."""
    missing = known.todo[BASE_NAME]
    for p in sorted(missing, key=lambda p: keys.key(BASE_NAME, p).digest()):
        held.enter_context(store.backend.lock(f"locks/{keys.key(BASE_NAME, p).digest()}.lock", None))
    for p in list(missing):
        rec = store.get(keys.key(BASE_NAME, p))
        if rec is not None:
            say(f"baseline: {p.name} was computed by another gate run meanwhile; reusing it")
            known.add(BASE_NAME, p, rec)


def records_cache_for(cache_dir: str) -> BaselineStore:
    """Candidates' records, kept beside the response caches (same format as the store)."""
    return BaselineStore(Path(cache_dir) / "records")
