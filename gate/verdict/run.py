"""A whole run judged: each candidate's records paired with the base's, then verdicts.

    judge_run(base, candidates, tiers, policies, ...) -> RunVerdict

Shared by `gate run` and `gate compare`, so both pair, judge and roll up
the same way. A candidate scored in rounds used a subset of items: the
base's records are narrowed to those items before pairing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gate.config.policy import TIERS, TaskPolicy, Tier
from gate.evaluate.records import TaskRecords, select_items
from gate.evaluate.rounds import outcome_of
from gate.verdict.judge import (
    CandidateVerdict,
    ReleaseVerdict,
    TaskTriple,
    judge_candidate,
    judge_release,
)
from gate.verdict.pairing import pair_all


@dataclass(frozen=True)
class CandidateRecords:
    """One candidate's records per task, as the evaluate stage (or lm-eval's files) left them."""

    name: str
    kind: str
    records: Mapping[str, TaskRecords]


@dataclass(frozen=True)
class RunVerdict:
    candidates: list[CandidateVerdict]
    release: ReleaseVerdict


def judge_run(base: Mapping[str, TaskRecords], candidates: Sequence[CandidateRecords], *,
              tiers: Mapping[str, Tier], policies: Mapping[str, TaskPolicy], family: str,
              release: Sequence[str] | None) -> RunVerdict:
    """Pair, judge every candidate, and decide the release."""
    verdicts = []
    for cand in candidates:
        outcomes = {task: o for task, rec in cand.records.items() if (o := outcome_of(rec)) is not None}
        base_used = {task: select_items(rec, sorted(k.doc_id for k in cand.records[task].keys))
                     if task in outcomes else rec for task, rec in base.items()}
        by_tier: dict[str, list[TaskTriple]] = {tier: [] for tier in TIERS}
        for task, (b, c) in pair_all(base_used, cand.records).items():
            by_tier[tiers[task]].append((b, c, policies[task]))
        verdicts.append(judge_candidate(cand.name, cand.kind, by_tier, sequential=outcomes or None, family=family))
    return RunVerdict(verdicts, judge_release(verdicts, release))
