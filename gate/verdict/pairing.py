"""Pairing: a base and a candidate scored on the same items, aligned by doc_id.

Anything that does not pair (an item scored for one side only, the same doc_id
with another document) is an input error listing the items, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

from gate.errors import PairingError, Problem
from gate.evaluate.records import TaskRecords, select_items

__all__ = ["pair_all", "pair_records"]

_MAX_LISTED = 20
_PAIRING_FIX = "evaluate both models on the same task version and item selection"


def pair_records(base: TaskRecords, cand: TaskRecords) -> tuple[TaskRecords, TaskRecords]:
    """Align base and candidate items by doc_id; refuse anything that does not pair."""
    problems = _pairing_problems(base, cand)
    if problems:
        raise PairingError(problems=_capped(problems, base.task))
    order = sorted(k.doc_id for k in base.keys)
    return select_items(base, order), select_items(cand, order)


def pair_all(base: Mapping[str, TaskRecords], cand: Mapping[str, TaskRecords],
             ) -> dict[str, tuple[TaskRecords, TaskRecords]]:
    """Pair every task; all problems across all tasks are collected before raising."""
    problems = [
        Problem(f"task {task!r} evaluated for the {side} only", key=task, fix=_PAIRING_FIX)
        for side, tasks in (("base", base.keys() - cand.keys()), ("candidate", cand.keys() - base.keys()))
        for task in sorted(tasks)
    ]
    for task in sorted(base.keys() & cand.keys()):
        problems += _capped(_pairing_problems(base[task], cand[task]), task)
    if problems:
        raise PairingError(problems=problems)
    return {task: pair_records(base[task], cand[task]) for task in base}




def _pairing_problems(base: TaskRecords, cand: TaskRecords) -> list[Problem]:
    task = base.task
    if base.metric != cand.metric or base.aggregation != cand.aggregation:
        return [Problem(f"base scores {base.metric} ({base.aggregation.value}) but the candidate "
                        f"scores {cand.metric} ({cand.aggregation.value})", key=task,
                        fix="use the same metric for both models")]
    b = {k.doc_id: k for k in base.keys}
    c = {k.doc_id: k for k in cand.keys}
    problems = []
    for doc_id in sorted(b.keys() | c.keys()):
        if doc_id not in c:
            msg = "evaluated for the base only"
        elif doc_id not in b:
            msg = "evaluated for the candidate only"
        elif b[doc_id].doc_hash != c[doc_id].doc_hash:
            msg = "has different documents for base and candidate (doc_hash differs)"
        else:
            continue
        problems.append(Problem(f"doc_id {doc_id} {msg}", key=f"{task}/doc_id={doc_id}", fix=_PAIRING_FIX))
    return problems


def _capped(problems: list[Problem], task: str) -> list[Problem]:
    if len(problems) <= _MAX_LISTED:
        return problems
    rest = len(problems) - _MAX_LISTED
    return [*problems[:_MAX_LISTED],
            Problem(f"... and {rest} more unpaired items", key=task, fix=_PAIRING_FIX)]
