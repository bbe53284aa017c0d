"""Which checkpoint of a training run to ship, and why that PASS can be trusted.

    split_alpha(policies, k)                -> the policies each of k checkpoints is judged under
    judge_sweep(sweep, verdicts, pick=...)  -> SweepVerdict (every checkpoint, the pick, why)

Choosing among K checkpoints is a selection. Judged each at alpha, K
checkpoints that all truly drop general capability by exactly the allowed
margin would give at least one false PASS up to 1 - (1 - alpha)^K of the time
(14% for K = 3 at alpha 5%), and the pick rule would ship it. So every
checkpoint of a sweep of K is judged at alpha/K (Bonferroni across
checkpoints, applied to each task's alpha, early-stopping looks included):
the chance that any truly unsafe checkpoint PASSes is then at most alpha, and
whichever rule picks among the PASSes, the pick's PASS carries the rate a
single candidate's does. `tests/verdict/test_sweep.py` checks this by
simulation (vectorised over the paired test, and through `judge_run`), and
that judging at alpha would not hold it. (A step-down Holm across checkpoints would be a little
more powerful, but needs a p-value for every PASS, which a task decided
early by its confidence sequence does not have.)

The price is power: at K = 3 each checkpoint needs the evidence of a 1.7%
test. Thin long runs (`every`, `steps`) to the checkpoints worth shipping.

Pick rules (thresholds.yaml `sweep.pick`):
  best_target  among the checkpoints that PASS, the one whose target tasks
               clear the required gain by the most (ties: the earlier);
  earliest     the earliest checkpoint that PASSes.
Checkpoints that PASS on every task come before those whose PASS rests on
inconclusive tasks (`not_shown_safe`), whatever the rule: a checkpoint not
shown safe is never preferred to one shown safe. When none is shown safe, the
rule gives way to the evidence: the pick is the checkpoint with the least
evidence of forgetting (the largest smallest Holm-adjusted p_fail over the
tasks it was not shown safe on), not the best target, since later epochs
typically gain more on the target and forget more. No checkpoint passes: the
sweep FAILs, and its release reason names every checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from gate.config.policy import TaskPolicy, Waiver, waiver_for
from gate.config.sweep import Sweep
from gate.verdict.model import CandidateVerdict, Verdict

PickRule = Literal["best_target", "earliest"]


def split_alpha(policies: Mapping[str, TaskPolicy], k: int) -> dict[str, TaskPolicy]:
    """Each task's policy with its alpha divided by the number of checkpoints."""
    return {task: replace(policy, alpha=policy.alpha / k) for task, policy in policies.items()}


def policies_for(candidate: str, policies: Mapping[str, TaskPolicy], sweeps: Sequence[Sweep],
                 waivers: Sequence[Waiver] = ()) -> Mapping[str, TaskPolicy]:
    """The policies `candidate` is scored and judged under: a sweep's checkpoint
    at alpha/K, any other candidate at the file's alpha; a task covered by one of
    the candidate's waivers (in force, matched by fingerprint) with the waiver's
    allowed drop. Scoring in rounds and judging both call this, so the looks and
    the verdict ask the same question at the same level."""
    out = policies
    for sweep in sweeps:
        if candidate in sweep.candidates:
            out = split_alpha(policies, len(sweep.checkpoints))
            break
    if waivers:
        out = {task: (w.waive(pol) if (w := waiver_for(waivers, task, pol.tier)) else pol)
               for task, pol in out.items()}
    return out


@dataclass(frozen=True)
class CheckpointVerdict:
    """One checkpoint on the curve."""

    candidate: str
    label: str
    step: int | None
    epoch: float | None
    #: None: not scored (sweep.stop_after_fail after an earlier checkpoint failed)
    verdict: CandidateVerdict | None

    @property
    def target_excess(self) -> float:
        """How far the target tasks clear the required gain (the smallest excess
        over them, in each task's own units); -inf when unknown."""
        if self.verdict is None:
            return -math.inf
        excess = [t.improvement - t.threshold for tier in self.verdict.tiers if tier.tier == "target"
                  for t in tier.tasks if math.isfinite(t.improvement - t.threshold)]
        return min(excess) if excess else -math.inf

    @property
    def forgetting_evidence(self) -> float:
        """The smallest Holm-adjusted p_fail over the tasks this checkpoint was not shown
        safe on (small: strong evidence that it forgets; an unknown p-value counts as 0);
        1.0 when it was shown safe on every task."""
        v = self.verdict
        if v is None:
            return 0.0
        p = [t.p_fail_adjusted for tier in v.tiers for t in tier.tasks if t.task in v.not_shown_safe]
        return min((x if math.isfinite(x) else 0.0 for x in p), default=1.0)

    @property
    def where(self) -> str:
        """"checkpoint-40 (step 40, epoch 1)"."""
        facts = [f"step {self.step}" if self.step is not None else None,
                 f"epoch {self.epoch:g}" if self.epoch is not None else None]
        shown = ", ".join(f for f in facts if f)
        return f"{self.label} ({shown})" if shown else self.label

    def to_dict(self) -> dict[str, object]:
        v = self.verdict
        return {"candidate": self.candidate, "label": self.label, "step": self.step, "epoch": self.epoch,
                "verdict": v.verdict.value if v is not None else "NOT_SCORED",
                "verdict_label": v.label if v is not None else "not scored",
                "tiers": {t.tier: t.verdict.value for t in v.tiers} if v is not None else {},
                "reason": v.reason if v is not None else "not scored: an earlier checkpoint failed "
                                                          "(sweep.stop_after_fail)"}


@dataclass(frozen=True)
class SweepVerdict:
    """A sweep judged: every checkpoint's verdict, the pick and the sentence why."""

    name: str
    folder: str
    kind: str
    rule: PickRule
    checkpoints: tuple[CheckpointVerdict, ...]
    pick: str | None
    reason: str
    #: the alpha each checkpoint was judged at, as a share of the file's (1/K)
    alpha_share: float
    #: the first checkpoint after the pick that fails ("general capability drops from ...")
    drops_at: str | None = None

    @property
    def picked(self) -> CheckpointVerdict | None:
        return next((c for c in self.checkpoints if c.candidate == self.pick), None)

    def release_verdict(self) -> CandidateVerdict:
        """The sweep as one release unit: the pick's verdict under the sweep's name,
        or a FAIL when no checkpoint passes."""
        picked = self.picked
        if picked is not None and picked.verdict is not None:
            return replace(picked.verdict, name=self.name, reason=self.reason)
        scored = [c.verdict for c in self.checkpoints if c.verdict is not None]
        last = scored[-1]
        return replace(last, name=self.name, verdict=Verdict.FAIL, reason=self.reason, warnings=(),
                       not_shown_safe=())

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "folder": self.folder, "kind": self.kind, "rule": self.rule,
                "alpha_share": self.alpha_share, "pick": self.pick,
                "pick_label": self.picked.label if self.picked is not None else None,
                "reason": self.reason, "drops_at": self.drops_at,
                "checkpoints": [c.to_dict() for c in self.checkpoints]}


def _failing_tier(v: CandidateVerdict) -> str:
    tiers = [t.tier for t in v.tiers if t.verdict is Verdict.FAIL]
    return tiers[0] if tiers else "a tier"


def judge_sweep(sweep: Sweep, verdicts: Mapping[str, CandidateVerdict], *,
                pick: PickRule = "best_target") -> SweepVerdict:
    """Pick one checkpoint of `sweep` from its checkpoints' verdicts (see the module docstring).

    Every checkpoint must have been judged at alpha/K (`split_alpha`); a
    checkpoint missing from `verdicts` was not scored."""
    points = tuple(CheckpointVerdict(c.candidate, c.label, c.step, c.epoch, verdicts.get(c.candidate))
                   for c in sweep.checkpoints)
    k = len(points)
    passing = [(i, p) for i, p in enumerate(points) if p.verdict is not None and p.verdict.verdict is Verdict.PASS]
    if not passing:
        scored = [p for p in points if p.verdict is not None]
        parts = [f"{p.candidate} {_failing_tier(p.verdict)} tier" for p in scored if p.verdict is not None]
        skipped = k - len(scored)
        more = f"; {skipped} not scored after the first failure" if skipped else ""
        reason = (f"none of its {k} checkpoint{'s' if k != 1 else ''} passes "
                  f"(failing: {', '.join(parts)}{more})")
        return SweepVerdict(sweep.name, sweep.folder, sweep.kind, pick, points, None, reason, 1 / k)

    def unsafe(item: tuple[int, CheckpointVerdict]) -> tuple[int, float]:
        """Shown safe first; among the others, the least evidence of forgetting first."""
        v = item[1].verdict
        if v is not None and v.not_shown_safe:
            return 1, -item[1].forgetting_evidence
        return 0, 0.0

    shown_safe = [it for it in passing if unsafe(it)[0] == 0]
    pool = shown_safe or passing
    restricted = 0 < len(shown_safe) < len(passing)  # the rule chose among the safe ones only
    one, many = ("shown safe", "shown safe") if restricted else ("that passes", "that pass")
    if pick == "earliest":
        chosen_i, chosen = min(passing, key=lambda it: (*unsafe(it), it[0]))
    else:
        chosen_i, chosen = min(passing, key=lambda it: (*unsafe(it), -it[1].target_excess, it[0]))
    if not shown_safe and len(passing) > 1:
        why = (f"none of the {len(passing)} checkpoints that pass is shown safe: the one with the least "
               f"evidence of forgetting (smallest p_fail {chosen.forgetting_evidence:.2g})")
    elif pick == "earliest":
        why = f"the earliest checkpoint {one}"
    elif len(pool) == 1:
        why = f"the only checkpoint {one}"
    else:
        why = f"the largest target gain among the {len(pool)} checkpoints {many}"
    if restricted:
        why += f" ({len(passing) - len(pool)} more pass without being shown safe)"
    later_fail = next((p for p in points[chosen_i + 1:]
                       if p.verdict is not None and p.verdict.verdict is Verdict.FAIL), None)
    drops = None
    if later_fail is not None and later_fail.verdict is not None:
        drops = f"{later_fail.candidate} fails the {_failing_tier(later_fail.verdict)} tier"
    assert chosen.verdict is not None
    reason = f"picks {chosen.candidate}, {chosen.where}: {why} (each judged at alpha/{k})"
    if drops:
        reason += f"; {drops}"
    if chosen.verdict.not_shown_safe:
        reason += f"; not shown safe on {len(chosen.verdict.not_shown_safe)} task(s)"
    return SweepVerdict(sweep.name, sweep.folder, sweep.kind, pick, points, chosen.candidate, reason, 1 / k,
                        drops_at=drops)
