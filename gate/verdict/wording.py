"""The sentences that explain a verdict ("related tier: toy_add dropped 81.2 points
(interval -100.0..-6.5), beyond the allowed 5.0"), and whether a task reads in points.

Written once here and shown everywhere (terminal, report, summary, JUnit, W&B)
through the verdicts' `reason` fields.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gate.config.policy import TIERS
from gate.evaluate.records import Aggregation, TaskRecords
from gate.verdict.model import TaskVerdict, Verdict


def candidate_reason(every: Sequence[TaskVerdict], failing: Sequence[TaskVerdict],
                      warnings: Sequence[str]) -> str:
    if not every:
        return "no tasks were judged"
    if not failing:
        undecided = sum(t.verdict is Verdict.INCONCLUSIVE for t in every)
        waived = [t for t in every if t.verdict is Verdict.WAIVED]
        why = "".join(f"; {t.task} waived: {waiver_sentence(t)}" for t in waived)
        if not undecided and not waived:
            return (f"all {len(every)} tasks met their thresholds" if len(every) > 1
                    else f"{every[0].task} met its threshold")
        if not undecided:
            return f"no task failed: {len(every) - len(waived)} passed, {len(waived)} waived{why}"
        text = (f"no task failed: {len(every) - undecided - len(waived)} passed, {undecided} inconclusive "
                "counted as a pass by policy" + (f", {len(waived)} waived" if waived else ""))
        return text + (f" ({len(warnings)} with a warning)" if warnings else "") + why
    hard = [t for t in failing if t.verdict is Verdict.FAIL]
    pool = hard or list(failing)
    first_tier = next(tier for tier in TIERS if any(t.tier == tier for t in pool))
    worst = min((t for t in pool if t.tier == first_tier),
                key=lambda t: (t.improvement - t.threshold) if math.isfinite(
                    t.improvement - t.threshold) else math.inf)
    text = f"{worst.tier} tier: {task_sentence(worst)}"
    if len(failing) > 1:
        text += f" (and {len(failing) - 1} more failing task{'s' if len(failing) > 2 else ''})"
    return text


def task_sentence(t: TaskVerdict) -> str:
    c = t.comparison
    if t.verdict is Verdict.INCONCLUSIVE:
        why = " (base at chance)" if "base_at_chance" in t.flags else ""
        return (f"{t.task} is inconclusive{why} ({interval_text(t)}) and its policy counts "
                "inconclusive as fail")
    change = abs(c.delta)
    if t.kind == "drop":
        verb = "dropped" if t.higher_is_better else "rose"
        allowed = "waived" if t.waiver is not None else "allowed"
        return (f"{t.task} {verb} {amount(change, t.in_points)} ({interval_text(t)}), beyond the "
                f"{allowed} {amount(t.margin, t.in_points, unit_word=False)}")
    moved = "gained" if c.improvement >= 0 else "lost"
    return (f"{t.task} {moved} {amount(change, t.in_points)} ({interval_text(t)}), short of the "
            f"required gain of {amount(t.margin, t.in_points, unit_word=False)}")


def waiver_sentence(t: TaskVerdict) -> str:
    """"a drop up to 20.0 points accepted by alice until 2027-01-31 (the thresholds allow 3.0)"."""
    assert t.waiver is not None
    w = t.waiver.waiver
    return (f"a {'drop' if t.higher_is_better else 'rise'} up to {amount(t.margin, t.in_points)} accepted by "
            f"{w.approved_by} until {w.expires.isoformat()} (the thresholds allow "
            f"{amount(t.waiver.margin_without, t.in_points, unit_word=False)})")


def interval_text(t: TaskVerdict) -> str:
    c = t.comparison
    scale = 100.0 if t.in_points else 1.0
    if not (math.isfinite(c.ci_low) and math.isfinite(c.ci_high)):
        return "no interval"
    fmt = "{:.1f}" if t.in_points else "{:.3g}"
    return f"interval {fmt.format(c.ci_low * scale)}..{fmt.format(c.ci_high * scale)}"


def amount(x: float, in_points: bool, *, unit_word: bool = True) -> str:
    if not math.isfinite(x):
        return "n/a"
    if in_points:
        return f"{100 * x:.1f}" + (" points" if unit_word else "")
    return f"{x:.3g}"


def in_points(rec: TaskRecords) -> bool:
    """Accuracy-like metrics (a mean of values in [0, 1]) read best in points."""
    if rec.aggregation is not Aggregation.MEAN:
        return False
    if rec.binary:
        return True
    values = rec.values
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(np.all((finite >= 0) & (finite <= 1)))
