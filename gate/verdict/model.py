"""The verdict stage's output types, each with `to_dict()` giving its results.json shape.

    Verdict            PASS / WAIVED / STOPPED / INCONCLUSIVE / FAIL, ordered by severity
    WaiverUse          a waiver a task was judged under (waivers.yaml)
    TaskVerdict        one task: the comparison, the threshold, the decision, advice, flipped items
    TierVerdict        the worst of a tier's tasks
    CandidateVerdict   one candidate: PASS or FAIL with one sentence why
    ReleaseVerdict     whether the release goes out, and its exit code

See docs/results-shape.md for the JSON they become.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from gate.config.policy import Waiver
from gate.evaluate.records import Aggregation
from gate.verdict.sequential import SequentialOutcome
from gate.verdict.stats import Comparison


class Verdict(str, enum.Enum):
    """A decision; `severity` orders them for "the worst of" (tiers)."""

    PASS = "PASS"
    #: within the drop a matching waiver accepts, but not shown within the
    #: thresholds' margin: counts as a pass, and every output says who waived it
    #: (a task or tier verdict only)
    WAIVED = "WAIVED"
    #: not judged: scoring stopped because the candidate had already failed
    #: another task (sequential.fail_fast); a task or tier verdict only
    STOPPED = "STOPPED"
    INCONCLUSIVE = "INCONCLUSIVE"
    FAIL = "FAIL"

    @property
    def severity(self) -> int:
        return {"PASS": 0, "WAIVED": 1, "STOPPED": 2, "INCONCLUSIVE": 3, "FAIL": 4}[self.value]


def _worst(verdicts: Sequence[Verdict]) -> Verdict:
    return max(verdicts, key=lambda v: v.severity, default=Verdict.PASS)


def _num(x: float | None) -> float | None:
    """JSON has no NaN or infinity: unknown or unbounded numbers become null."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


@dataclass(frozen=True)
class WaiverUse:
    """A task judged under a waiver: its margin is the waiver's allowed drop."""

    waiver: Waiver
    #: the allowed drop without the waiver (the thresholds' margin), in the metric's units
    margin_without: float

    def to_dict(self) -> dict[str, object]:
        return {**self.waiver.to_dict(), "margin_without": _num(self.margin_without)}


@dataclass(frozen=True)
class Advice:
    """What would decide an INCONCLUSIVE task (None items: more data cannot)."""

    items_needed: int | None
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"items_needed": self.items_needed, "message": self.message}


@dataclass(frozen=True)
class FlippedItem:
    """An item the base got right and the candidate got wrong."""

    doc_id: int
    prompt: str | None
    target: str | None
    base_response: str | None
    candidate_response: str | None

    def to_dict(self) -> dict[str, object]:
        return {"doc_id": self.doc_id, "prompt": self.prompt, "target": self.target,
                "base_response": self.base_response,
                "candidate_response": self.candidate_response}


@dataclass(frozen=True)
class TaskVerdict:
    """One task's numbers and decision for one candidate."""

    task: str
    tier: str
    metric: str
    higher_is_better: bool
    aggregation: Aggregation
    comparison: Comparison
    kind: str
    margin: float
    alpha: float
    inconclusive: str
    p_fail_adjusted: float
    verdict: Verdict
    advice: Advice | None
    chance: float | None
    flags: tuple[str, ...]
    flipped: tuple[FlippedItem, ...] = ()
    #: a value-in-[0,1] metric, shown in points (x100) in sentences
    in_points: bool = False
    #: how the task was scored in rounds (None: all items at once)
    sequential: SequentialOutcome | None = None
    #: the waiver the task was judged under (None: the thresholds' margin)
    waiver: WaiverUse | None = None

    @property
    def stopped_by_candidate(self) -> bool:
        """Scoring stopped because another task of the candidate had already failed."""
        return self.sequential is not None and self.sequential.stopped == "candidate_failed"

    @property
    def threshold(self) -> float:
        return self.comparison.threshold

    @property
    def p_value(self) -> float | None:
        """The p-value of the decision taken: the Holm-adjusted one-sided p_fail
        for a FAIL, the one-sided p_pass for a PASS, the smaller of the two for
        an undecided task (None when the looks of early stopping decided)."""
        c = self.comparison
        if c.method == "confidence_sequence" or self.verdict is Verdict.STOPPED:
            return None
        if self.verdict is Verdict.FAIL:
            return self.p_fail_adjusted
        if self.verdict is Verdict.PASS:
            return c.p_pass
        return min(self.p_fail_adjusted, c.p_pass)

    @property
    def improvement(self) -> float:
        return self.comparison.improvement

    @property
    def resolved(self) -> Verdict:
        """The verdict that counts for the candidate (inconclusive policy applied)."""
        if self.verdict is Verdict.WAIVED:
            return Verdict.PASS
        if self.verdict is not Verdict.INCONCLUSIVE:
            return self.verdict
        return Verdict.FAIL if self.inconclusive == "fail" else Verdict.PASS

    def to_dict(self) -> dict[str, object]:
        c = self.comparison
        if self.verdict is Verdict.STOPPED:
            # Not judged: an interval or p-value on the items scored before the
            # candidate failed elsewhere holds at no stated level; leave them out.
            c = replace(c, ci_low=math.nan, ci_high=math.nan, p_fail=math.nan, p_pass=math.nan, detectable=math.nan)
        return {
            "task": self.task, "metric": self.metric, "higher_is_better": self.higher_is_better,
            "aggregation": self.aggregation.value,
            "base_score": _num(c.base_score), "candidate_score": _num(c.candidate_score),
            "delta": _num(c.delta), "ci_low": _num(c.ci_low), "ci_high": _num(c.ci_high),
            "ci_level": c.ci_level, "method": c.method,
            "p_value": _num(self.p_value), "p_any_difference": _num(c.p_any_difference),
            "p_fail": _num(c.p_fail),
            "p_fail_adjusted": _num(math.nan if self.verdict is Verdict.STOPPED else self.p_fail_adjusted),
            "p_pass": _num(c.p_pass),
            "n": self.sequential.n_total if self.sequential is not None else c.n,
            "n_used": c.n_used,
            "kind": self.kind, "margin": _num(self.margin), "threshold": _num(c.threshold),
            "verdict": self.verdict.value, "inconclusive_policy": self.inconclusive,
            "advice": None if self.advice is None else self.advice.to_dict(),
            "changed": c.changed, "detectable": _num(c.detectable),
            "infinite_items": list(c.infinite_items),
            "chance": self.chance, "flags": list(self.flags),
            "flipped": [f.to_dict() for f in self.flipped],
            "sequential": None if self.sequential is None else self.sequential.to_dict(),
            "waiver": None if self.waiver is None else self.waiver.to_dict(),
        }


@dataclass(frozen=True)
class TierVerdict:
    """All tasks of one tier; its verdict is the worst task verdict."""

    tier: str
    verdict: Verdict
    tasks: tuple[TaskVerdict, ...]

    @property
    def mean_delta_items(self) -> float | None:
        """Item-weighted mean delta (raw units; mixes units across metrics)."""
        weights = [t.comparison.n_used for t in self.tasks if math.isfinite(t.comparison.delta)]
        deltas = [t.comparison.delta for t in self.tasks if math.isfinite(t.comparison.delta)]
        if not deltas or sum(weights) == 0:
            return None
        return float(np.average(deltas, weights=weights))

    @property
    def mean_delta_tasks(self) -> float | None:
        deltas = [t.comparison.delta for t in self.tasks if math.isfinite(t.comparison.delta)]
        return float(np.mean(deltas)) if deltas else None

    @property
    def worst_task(self) -> str | None:
        """The task that decided the tier: among the tasks whose verdict is the
        tier's (a FAIL tier: its failing tasks), the one with the lowest
        improvement relative to its threshold. A STOPPED task was never judged,
        so it decides a tier only when every task of the tier stopped."""
        judged = [t for t in self.tasks if t.verdict is not Verdict.STOPPED] or list(self.tasks)
        deciding = [t for t in judged if t.verdict is self.verdict] or judged
        scored = [t for t in deciding if math.isfinite(t.improvement - t.threshold)]
        if not scored:
            return deciding[0].task if deciding else None
        return min(scored, key=lambda t: t.improvement - t.threshold).task

    def to_dict(self) -> dict[str, object]:
        return {"tier": self.tier, "verdict": self.verdict.value,
                "mean_delta_items": _num(self.mean_delta_items),
                "mean_delta_tasks": _num(self.mean_delta_tasks),
                "worst_task": self.worst_task,
                "tasks": [t.to_dict() for t in self.tasks]}


@dataclass(frozen=True)
class CandidateVerdict:
    """One fine-tuned model against the base: PASS or FAIL, with one sentence why."""

    name: str
    kind: str
    verdict: Verdict
    reason: str
    tiers: tuple[TierVerdict, ...]
    warnings: tuple[str, ...] = ()
    path: str | None = None
    fingerprint: str | None = None
    #: tasks left INCONCLUSIVE that the policy counted as a pass: the PASS
    #: carries no guarantee about them
    not_shown_safe: tuple[str, ...] = ()
    family: str = "tier"
    #: tasks that pass only under a waiver (waivers.yaml)
    waived: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The verdict as every output shows it: a PASS that rests on undecided
        or waived tasks says so ("PASS (not shown safe on 2 tasks; 1 waived)")."""
        return verdict_label(self.verdict, len(self.not_shown_safe), len(self.waived))

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "path": self.path,
                "fingerprint": self.fingerprint, "verdict": self.verdict.value,
                "label": self.label, "not_shown_safe": list(self.not_shown_safe),
                "waived": list(self.waived), "family": self.family,
                "reason": self.reason, "warnings": list(self.warnings),
                "tiers": [t.to_dict() for t in self.tiers]}


def verdict_label(verdict: Verdict, unproven: int, waived: int = 0) -> str:
    """PASS, FAIL, "PASS (not shown safe on N tasks)", "PASS (1 task waived)"."""
    if verdict is not Verdict.PASS or not (unproven or waived):
        return verdict.value
    parts = [f"not shown safe on {unproven} task{'s' if unproven != 1 else ''}"] if unproven else []
    if waived:
        parts.append(f"{waived} waived" if unproven else f"{waived} task{'s' if waived != 1 else ''} waived")
    return f"PASS ({'; '.join(parts)})"


@dataclass(frozen=True)
class ReleaseVerdict:
    """Whether the release goes out, and the exit code that says so."""

    verdict: Verdict
    exit_code: int
    candidates: tuple[str, ...]
    reason: str
    #: undecided tasks, over the released candidates, that their policy counted as a pass
    not_shown_safe: int = 0
    #: tasks, over the released candidates, that pass only under a waiver
    waived: int = 0

    @property
    def label(self) -> str:
        return verdict_label(self.verdict, self.not_shown_safe, self.waived)

    def to_dict(self) -> dict[str, object]:
        return {"verdict": self.verdict.value, "label": self.label,
                "not_shown_safe": self.not_shown_safe, "waived": self.waived, "exit_code": self.exit_code,
                "candidates": list(self.candidates), "reason": self.reason}
