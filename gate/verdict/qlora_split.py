"""A QLoRA candidate's change split into what quantizing the base cost and what the tuning did.

    split_candidate(name, base16, base4, trained, ...) -> QloraSplit

A QLoRA adapter is trained on the base loaded in 4 bits. Compared with the
16-bit base, its change is the sum of two effects whose remedies differ:

    quantization = base in 4 bits      - base in 16 bits   (serve on a 16-bit base)
    tuning       = adapter on 4-bit base - base in 4 bits  (change the training)
    as trained   = adapter on 4-bit base - base in 16 bits (the sum, for a mean metric)

Each is a paired comparison on the same items, with the interval and the
level the release policy gives that task (the same `judge_one` that judges
candidates, so the statistics are the verdicts' own). The split explains; it
decides nothing: the candidate's verdict is its comparison as served.

The larger part is read on the task where the adapter as trained dropped
most against its threshold, among the related and general tasks (forgetting
is what the remedies are for); on the target tier when none dropped there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from gate.config.policy import TaskPolicy, Tier
from gate.evaluate.records import TaskRecords
from gate.verdict.model import TaskVerdict, _num
from gate.verdict.run import CandidateRecords, judge_one

Effect = Literal["quantization", "tuning"]
FORGETTING_TIERS = ("related", "general")


@dataclass(frozen=True)
class SplitTask:
    """One task's three comparisons. Each TaskVerdict is used for its numbers only."""

    quantization: TaskVerdict
    tuning: TaskVerdict
    as_trained: TaskVerdict

    @property
    def dropped(self) -> bool:
        """The adapter as trained scores worse than the 16-bit base (oriented)."""
        return self.as_trained.improvement < 0

    @property
    def larger(self) -> Effect | None:
        """The effect that moved the task more in the bad direction; None when neither did."""
        q, t = self.quantization.improvement, self.tuning.improvement
        if not (math.isfinite(q) and math.isfinite(t)) or min(q, t) >= 0:
            return None
        return "quantization" if q < t else "tuning"

    def to_dict(self) -> dict[str, object]:
        def effect(v: TaskVerdict) -> dict[str, object]:
            c = v.comparison
            return {"base_score": _num(c.base_score), "candidate_score": _num(c.candidate_score),
                    "delta": _num(c.delta), "improvement": _num(c.improvement), "ci_low": _num(c.ci_low),
                    "ci_high": _num(c.ci_high), "ci_level": c.ci_level, "n": c.n}

        t = self.as_trained
        return {"task": t.task, "tier": t.tier, "metric": t.metric, "higher_is_better": t.higher_is_better,
                "aggregation": t.aggregation.value, "larger": self.larger,
                "quantization": effect(self.quantization), "tuning": effect(self.tuning),
                "as_trained": effect(self.as_trained)}


@dataclass(frozen=True)
class QloraSplit:
    """A QLoRA candidate's split over the suite's tasks."""

    candidate: str
    engine: str
    tasks: tuple[SplitTask, ...]

    @property
    def deciding_task(self) -> SplitTask | None:
        """The task the larger part is read on (see the module docstring)."""
        for tiers in (FORGETTING_TIERS, ("target",)):
            dropped = [t for t in self.tasks if t.as_trained.tier in tiers and t.dropped and t.larger]
            if dropped:
                return min(dropped, key=lambda t: t.as_trained.improvement - t.as_trained.threshold)
        return None

    @property
    def larger(self) -> Effect | None:
        task = self.deciding_task
        return task.larger if task else None

    def to_dict(self) -> dict[str, object]:
        task = self.deciding_task
        return {"engine": self.engine, "models": dict(SPLIT_MODELS), "larger": self.larger,
                "deciding_task": task.as_trained.task if task else None,
                "tasks": [t.to_dict() for t in self.tasks]}


#: what each model of the split is, as results.json names them
SPLIT_MODELS = {
    "base_16bit": "the base in 16/32 bits, as the baseline scores it",
    "base_4bit": "the base loaded in 4 bits (nf4), as the adapter was trained on it",
    "as_trained": "the adapter on the 4-bit base",
}


def _by_task(name: str, base: Mapping[str, TaskRecords], cand: Mapping[str, TaskRecords], *,
             tiers: Mapping[str, Tier], policies: Mapping[str, TaskPolicy], family: str) -> dict[str, TaskVerdict]:
    verdict = judge_one(base, CandidateRecords(name, "lora", cand), tiers=tiers, policies=policies, family=family)
    return {t.task: t for tier in verdict.tiers for t in tier.tasks}


def split_candidate(name: str, *, base16: Mapping[str, TaskRecords], base4: Mapping[str, TaskRecords],
                    trained: Mapping[str, TaskRecords], tiers: Mapping[str, Tier],
                    policies: Mapping[str, TaskPolicy], family: str, engine: str,
                    order: Sequence[str] | None = None) -> QloraSplit:
    """The three comparisons of every task, paired on the same items."""
    kw = {"tiers": tiers, "policies": policies, "family": family}
    quant = _by_task("base@4bit", base16, base4, **kw)  # type: ignore[arg-type]
    tune = _by_task(name, base4, trained, **kw)  # type: ignore[arg-type]
    total = _by_task(name, base16, trained, **kw)  # type: ignore[arg-type]
    tasks = tuple(SplitTask(quant[t], tune[t], total[t]) for t in (order or list(total)) if t in total)
    return QloraSplit(name, engine, tasks)
