"""A resolved release policy for one task: the numbers the verdict engine needs.

`gate.config.Thresholds` (the YAML) resolves tier defaults and per-task
overrides into one `TaskPolicy` per task, so the verdict engine never reads
configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Tier = Literal["target", "related", "general"]
TIERS: tuple[Tier, ...] = ("target", "related", "general")
Inconclusive = Literal["fail", "warn", "pass"]


@dataclass(frozen=True)
class TaskPolicy:
    """What a task must show, in the metric's own units.

    kind="drop": the candidate may be worse than the base by at most the
    margin (related and general tiers). kind="gain": the candidate must be
    better than the base by at least the margin (target tier).
    When both `absolute` and `relative` are set, the stricter one applies:
    the smaller allowed drop, the larger required gain.
    """

    tier: Tier
    kind: Literal["drop", "gain"]
    absolute: float | None
    relative: float | None
    alpha: float = 0.05
    inconclusive: Inconclusive = "warn"

    def margin(self, base_score: float) -> float:
        """The allowed drop (or required gain) as a non-negative number."""
        options = []
        if self.absolute is not None:
            options.append(self.absolute)
        if self.relative is not None:
            options.append(self.relative * abs(base_score))
        if not options:
            return 0.0
        return max(options) if self.kind == "gain" else min(options)

    def threshold(self, base_score: float) -> float:
        """The improvement (candidate minus base, oriented so that positive is
        better) the decision compares against: -margin for a drop, +margin
        for a gain."""
        m = self.margin(base_score)
        return m if self.kind == "gain" else -m
