"""A whole run judged: each candidate's records paired with the base's, then verdicts.

    judge_run(base, candidates, tiers, policies, ...) -> RunVerdict

Shared by `gate run` and `gate compare`, so both pair, judge and roll up
the same way; a run's sweeps are picked here (gate.verdict.sweep). A candidate scored in rounds used a subset of items: the
base's records are narrowed to those items before pairing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from gate.config.policy import TIERS, TaskPolicy, Tier, Waiver, waiver_for
from gate.config.sweep import Sweep
from gate.evaluate.records import TaskRecords, select_items
from gate.evaluate.rounds import outcome_of
from gate.verdict.judge import (
    CandidateVerdict,
    ReleaseVerdict,
    TaskTriple,
    base_score,
    judge_candidate,
    judge_release,
)
from gate.verdict.model import WaiverUse
from gate.verdict.pairing import pair_all
from gate.verdict.sweep import PickRule, SweepVerdict, judge_sweep, policies_for


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
    sweeps: list[SweepVerdict] = field(default_factory=list)


def judge_one(base: Mapping[str, TaskRecords], cand: CandidateRecords, *, tiers: Mapping[str, Tier],
              policies: Mapping[str, TaskPolicy], family: str, sweeps: Sequence[Sweep] = (),
              waivers: Sequence[Waiver] = ()) -> CandidateVerdict:
    """Pair and judge one candidate: a sweep's checkpoint at alpha/K, a task one
    of its `waivers` (in force for it) covers at that waiver's allowed drop."""
    cand_policies = policies_for(cand.name, policies, sweeps, waivers)
    uses = {task: WaiverUse(w, policies[task].margin(base_score(base[task])))
            for task in cand.records if (w := waiver_for(waivers, task, tiers[task]))}
    outcomes = {task: o for task, rec in cand.records.items() if (o := outcome_of(rec)) is not None}
    base_used = {task: select_items(rec, sorted(k.doc_id for k in cand.records[task].keys))
                 if task in outcomes else rec for task, rec in base.items()}
    by_tier: dict[str, list[TaskTriple]] = {tier: [] for tier in TIERS}
    for task, (b, c) in pair_all(base_used, cand.records).items():
        by_tier[tiers[task]].append((b, c, cand_policies[task]))
    return judge_candidate(cand.name, cand.kind, by_tier, sequential=outcomes or None, family=family,
                           waivers=uses or None)


def judge_run(base: Mapping[str, TaskRecords], candidates: Sequence[CandidateRecords], *,
              tiers: Mapping[str, Tier], policies: Mapping[str, TaskPolicy], family: str,
              release: Sequence[str] | None, sweeps: Sequence[Sweep] = (),
              pick: PickRule = "best_target", waivers: Mapping[str, Sequence[Waiver]] | None = None,
              judged: Mapping[str, CandidateVerdict] | None = None) -> RunVerdict:
    """Pair, judge every candidate (`judge_one`), pick each sweep's checkpoint,
    and decide the release. A release unit is a candidate or a whole sweep (its
    pick); a checkpoint may also be named alone. `waivers`: per candidate, the
    waivers in force for it (gate.config.waivers.match_waivers). `judged`:
    candidates already judged on these same records (as the run settles each
    one during scoring), taken as they are."""
    verdicts = [(judged or {}).get(cand.name)
                or judge_one(base, cand, tiers=tiers, policies=policies, family=family, sweeps=sweeps,
                             waivers=(waivers or {}).get(cand.name, ()))
                for cand in candidates]
    by_name = {v.name: v for v in verdicts}
    swept = [judge_sweep(s, by_name, pick=pick) for s in sweeps]
    in_sweep = {name for s in sweeps for name in s.candidates}
    units = [v for v in verdicts if v.name not in in_sweep] + [s.release_verdict() for s in swept]
    named = [by_name[n] for n in release or () if n in in_sweep]  # a checkpoint named alone
    decision = judge_release(units + named, release)
    shipped = [f"{s.name} ships {s.pick}" for s in swept if s.pick and s.name in decision.candidates]
    if shipped:
        decision = replace(decision, reason=f"{decision.reason} ({'; '.join(shipped)})")
    return RunVerdict(verdicts, decision, swept)
