"""A resolved release policy for one task: the numbers the verdict engine needs.

`gate.config.Thresholds` (the YAML) resolves tier defaults and per-task
overrides into one `TaskPolicy` per task, so the verdict engine never reads
configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
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


@dataclass(frozen=True)
class Waiver:
    """A drop the release approvers accept on one task (or every task of a tier)
    of one exact candidate: the candidate's fingerprint (its weights and
    adapter, as results.json records it), so a retrained adapter under the
    same name is not waived. `absolute`/`relative` replace the task's allowed
    drop for that candidate; a worse drop still fails. Read from waivers.yaml
    (gate.config.waivers)."""

    fingerprint: str
    task: str | None
    tier: Tier | None
    absolute: float | None
    relative: float | None
    reason: str
    approved_by: str
    expires: date
    #: the candidate's name when the waiver was written, for people (matching is by fingerprint)
    candidate: str | None = None
    #: where it was read: "waivers.yaml: waivers.2"
    source: str = ""

    def expired(self, today: date) -> bool:
        """A waiver holds through its expiry date, not after."""
        return today > self.expires

    def waive(self, policy: TaskPolicy) -> TaskPolicy:
        """The task's policy with this waiver's allowed drop."""
        return replace(policy, absolute=self.absolute, relative=self.relative)

    def to_dict(self) -> dict[str, object]:
        return {"candidate": self.candidate, "fingerprint": self.fingerprint, "task": self.task,
                "tier": self.tier, "allowed_drop": {"absolute": self.absolute, "relative": self.relative},
                "reason": self.reason, "approved_by": self.approved_by, "expires": self.expires.isoformat(),
                "source": self.source}


def waiver_for(waivers: Sequence[Waiver], task: str, tier: str) -> Waiver | None:
    """The waiver that covers `task` among one candidate's: one naming the task
    wins over one for its whole tier."""
    named = [w for w in waivers if w.task == task]
    return named[0] if named else next((w for w in waivers if w.task is None and w.tier == tier), None)
