"""The rules: thresholds -> verdicts, per task, per tier, per candidate, per release.

Pure functions over `TaskRecords` and `TaskPolicy`; the statistics come from
`gate.verdict.stats`; the verdict types are in `gate.verdict.model`, the
sentences that explain them in `gate.verdict.wording`.

The decision rule, as implemented:

Task (`judge_task`, or `judge_tier` for a whole tier):
  1. If the base model scores at chance (`TaskRecords.chance` is set and
     base_score <= chance + tolerance, see `chance_tolerance`) on a task with
     a drop policy (related, general): INCONCLUSIVE, flag "base_at_chance".
     A base that cannot beat guessing means broken plumbing (prompt format,
     answer extraction) or a task too hard to measure forgetting on; no PASS
     or FAIL is issued on it. On a gain policy (the target tier) a base at
     chance is expected: the fine-tune exists to teach that skill. The flag
     is recorded and the task is decided by the rules below.
  2. Else FAIL when the Holm-adjusted p_fail (within the tier) < alpha: the
     candidate's improvement is credibly below the threshold (a drop bigger
     than allowed, or a gain smaller than required).
  3. Else PASS when p_pass < alpha: the improvement is credibly above the
     threshold. Not adjusted: a tier passes only when all its tasks pass (an
     intersection-union test, which needs no correction).
  4. Else INCONCLUSIVE, with advice: how many items would decide.
  Without a correction the rule is the interval rule: the (1 - 2 alpha)
  interval wholly below the threshold <=> FAIL, wholly above <=> PASS.

Tier: the worst task verdict (FAIL > INCONCLUSIVE > STOPPED > PASS), after
correction. STOPPED: a task not judged because the candidate had already
failed another task and `fail_fast` stopped its scoring.

Candidate: each task's verdict is first resolved by its policy's
`inconclusive` setting: PASS and FAIL stay; INCONCLUSIVE becomes FAIL under
"fail", PASS under "pass", and PASS with a recorded warning under "warn".
The candidate FAILs when any resolved task fails, else it PASSes (so a
candidate verdict is never INCONCLUSIVE; task and tier verdicts keep the raw
INCONCLUSIVE).

Waivers (waivers.yaml, matched to a candidate by its fingerprint): a waived
task is judged as above with the waiver's allowed drop as its margin (the
rounds used it too). If it then PASSes but its interval's worse edge lies
beyond the thresholds' own margin, its verdict is WAIVED, which counts as a
pass (a tier whose worst task is WAIVED is WAIVED); otherwise it keeps its
verdict (a drop beyond the waived one still FAILs).

Release: the named candidates (all of them when none are named) must PASS;
exit code 0 when they do, 1 when not (gate.errors).

Advice (INCONCLUSIVE): `gate.verdict.power.items_needed` at 80% power, sized for a
design effect one margin away from the threshold (a true drop of twice the
margin for a drop policy, a true gain of twice the margin for a gain policy),
at level alpha/k with k the tier's task count. With a zero margin the
distance is the observed |improvement - threshold|, and the message says so.

A candidate identical to the base never passes a gain requirement: its
improvement is exactly 0 on every resample, so p_pass = 1 (FAIL when the
required gain is above 0, INCONCLUSIVE when it is 0).

Randomness: every number is fixed by the run `seed` (see
`gate.verdict.stats.compare_many`), whatever the order of tasks or the thread count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from gate.config.policy import TIERS, TaskPolicy
from gate.errors import EXIT_FAIL, EXIT_PASS, ConfigError, InputError
from gate.evaluate.records import Aggregation, TaskRecords
from gate.verdict import wording
from gate.verdict.model import (
    Advice,
    CandidateVerdict,
    FlippedItem,
    ReleaseVerdict,
    TaskVerdict,
    TierVerdict,
    Verdict,
    WaiverUse,
    _worst,
    verdict_label,
)
from gate.verdict.power import items_needed
from gate.verdict.sequential import SequentialOutcome
from gate.verdict.stats import (
    MIN_CHANGED_CLUSTERS,
    MIN_CHANGED_ITEMS,
    CompareJob,
    Comparison,
    compare_many,
    holm,
)

#: flipped items listed per task at most
MAX_FLIPPED = 20
#: smallest margin treated as non-zero when sizing advice
MARGIN_FLOOR = 1e-12


# --------------------------------------------------------------------- tasks

TaskTriple = tuple[TaskRecords, TaskRecords, TaskPolicy]


def chance_tolerance(chance: float, n: int) -> float:
    """How far above chance a base must be to count as above it.

    One point, or the one-sided 95% binomial noise of guessing on n items,
    whichever is larger: a base inside it is indistinguishable from guessing.
    """
    noise = 1.6448536269514722 * math.sqrt(chance * (1 - chance) / n) if n > 0 else 0.0
    return max(0.01, noise)


def judge_task(base: TaskRecords, candidate: TaskRecords, policy: TaskPolicy) -> TaskVerdict:
    """One task on its own (a family of one: p_fail_adjusted = p_fail)."""
    comparison = _compare_all([(base, candidate, policy)], family=1)[0]
    return _task_verdict(base, candidate, policy, comparison, comparison.p_fail, family=1)


def judge_tier(tier: str, tasks: Sequence[TaskTriple]) -> TierVerdict:
    """All tasks of a tier, p_fail Holm-adjusted across them."""
    _check_unique(tier, tasks)
    comparisons = _compare_all(list(tasks), family=len(tasks))
    adjusted = _holm_raw(tasks, comparisons, None)
    return _tier_verdict(tier, tasks, comparisons, adjusted, family=len(tasks))


def _check_unique(tier: str, tasks: Sequence[TaskTriple]) -> None:
    names = [base.task for base, _, _ in tasks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"task {duplicates[0]} is listed twice in tier {tier}",
                         key=f"{tier}.{duplicates[0]}", fix="list each task once per tier")


def _holm_raw(tasks: Sequence[TaskTriple], comparisons: Sequence[Comparison],
              sequential: Mapping[str, SequentialOutcome] | None) -> list[float]:
    """Holm over one family. A task that stopped early takes part with p_fail = 1:
    its decision was made by its confidence sequence at the early level, and
    Holm's adjusted p-values never shrink when a raw one grows, so the others
    are held to at least the standard of a full evaluation (gate.verdict.sequential)."""
    seq = sequential or {}
    raw = [1.0 if (o := seq.get(b.task)) is not None and o.stopped is not None else c.p_fail
           for (b, _, _), c in zip(tasks, comparisons, strict=True)]
    return [float(x) for x in holm(raw)]


def _tier_verdict(tier: str, tasks: Sequence[TaskTriple], comparisons: Sequence[Comparison],
                  adjusted: Sequence[float], *, family: int,
                  sequential: Mapping[str, SequentialOutcome] | None = None) -> TierVerdict:
    seq = sequential or {}
    verdicts = tuple(
        _task_verdict(b, c, p, comp, adj, family=family, sequential=seq.get(b.task))
        for (b, c, p), comp, adj in zip(tasks, comparisons, adjusted, strict=True))
    return TierVerdict(tier=tier, verdict=_worst([v.verdict for v in verdicts]), tasks=verdicts)


def _compare_all(tasks: list[TaskTriple], *, family: int,
                 sequential: Mapping[str, SequentialOutcome] | None = None) -> list[Comparison]:
    """Every task's statistics. A relative margin is passed as a function of the
    base score (the paired_t test carries the base's noise); a task scored in
    rounds keeps the threshold its looks used (from the base's full score)."""
    seq = sequential or {}
    jobs = []
    for base, candidate, policy in tasks:
        outcome = seq.get(base.task)
        threshold: float | object = policy.threshold
        if outcome is not None and outcome.threshold is not None:
            threshold = outcome.threshold
        alpha = outcome.alpha_final if outcome is not None else policy.alpha
        jobs.append(CompareJob(base, candidate, threshold, alpha, family))  # type: ignore[arg-type]
    return compare_many(jobs)


def base_score(base: TaskRecords) -> float:
    """The base score thresholds are relative to (lm-eval's own for CORPUS)."""
    if base.aggregation is Aggregation.CORPUS or base.n == 0:
        return base.reported_score if base.reported_score is not None else math.nan
    return base.aggregation.score(base.num, base.den)


def _task_verdict(base: TaskRecords, candidate: TaskRecords, policy: TaskPolicy,
                  comparison: Comparison, p_fail_adjusted: float, *, family: int,
                  sequential: SequentialOutcome | None = None) -> TaskVerdict:
    flags = list(comparison.flags)
    chance = base.chance
    alpha = sequential.alpha_final if sequential is not None else policy.alpha
    margin = policy.margin(base_score(base))
    if sequential is not None and sequential.threshold is not None:
        margin = abs(sequential.threshold)
    in_points = wording.in_points(base)
    # the chance floor is judged on the base's full items, once: a round's
    # subset of a base near chance would otherwise demote clear failures
    full_score, full_n = comparison.base_score, base.n
    if sequential is not None and sequential.base_score is not None:
        full_score = sequential.base_score
        full_n = sequential.base_n if sequential.base_n is not None else full_n
    at_chance = (chance is not None and math.isfinite(full_score)
                 and full_score <= chance + chance_tolerance(chance, full_n))
    if at_chance:
        flags.append("base_at_chance")
    decided = sequential.decision if sequential is not None and sequential.stopped == "decided" else None
    blocks = at_chance and policy.kind == "drop" and decided != "FAIL"
    stopped = sequential is not None and sequential.stopped == "candidate_failed"
    too_little = "too_little_information" in comparison.flags
    if comparison.method == "infinite":
        verdict = Verdict.FAIL
    elif decided is not None and sequential is not None:
        verdict = Verdict(decided)
        comparison = _sequential_comparison(comparison, sequential, base.higher_is_better)
        flags.append("stopped_early")
    elif blocks:
        verdict = Verdict.INCONCLUSIVE
    elif stopped:
        verdict = Verdict.STOPPED
        flags.append("stopped_candidate_failed")
    elif too_little:
        verdict = Verdict.INCONCLUSIVE
    elif p_fail_adjusted < alpha:
        verdict = Verdict.FAIL
    elif comparison.p_pass < alpha:
        verdict = Verdict.PASS
    else:
        verdict = Verdict.INCONCLUSIVE
    advice = None
    if comparison.method == "infinite":
        ids = ", ".join(str(i) for i in comparison.infinite_items[:10])
        more = " ..." if len(comparison.infinite_items) > 10 else ""
        advice = Advice(None, f"{len(comparison.infinite_items):,} of {comparison.n:,} candidate "
                              f"items have an infinite {base.metric} (log-likelihood -inf; doc ids "
                              f"{ids}{more}), so the candidate's score is infinite")
    elif blocks and verdict is Verdict.INCONCLUSIVE:
        advice = _advice(comparison, replace(policy, alpha=alpha), margin, family,
                         chance, base.n_choices, in_points)
    elif stopped and sequential is not None:
        advice = Advice(None, f"scoring stopped after {sequential.n_used:,} of "
                              f"{sequential.n_total:,} items because the candidate had already "
                              "failed another task; set sequential.fail_fast: false in the "
                              "thresholds to score it fully")
    elif too_little:
        where = (f" in at least {MIN_CHANGED_CLUSTERS} clusters"
                 if comparison.method == "paired_cluster_t" else "")
        advice = Advice(None, f"only {comparison.changed:,} of {comparison.n_used:,} items changed "
                              f"score between base and candidate; a {base.metric} verdict needs "
                              f"at least {MIN_CHANGED_ITEMS} changed items{where} (below that "
                              "the standard error cannot be trusted): score more items")
    elif verdict is Verdict.INCONCLUSIVE:
        advice = _advice(comparison, replace(policy, alpha=alpha), margin, family,
                         None, base.n_choices, in_points)
    flipped: tuple[FlippedItem, ...] = ()
    if verdict is not Verdict.PASS and base.binary and candidate.binary:
        flipped = _flipped(base, candidate)
    return TaskVerdict(
        task=base.task, tier=policy.tier, metric=base.metric,
        higher_is_better=base.higher_is_better, aggregation=base.aggregation,
        comparison=comparison, kind=policy.kind, margin=margin, alpha=alpha,
        inconclusive=policy.inconclusive, p_fail_adjusted=p_fail_adjusted, verdict=verdict,
        advice=advice, chance=chance, flags=tuple(flags), flipped=flipped, in_points=in_points,
        sequential=sequential)


def _sequential_comparison(c: Comparison, outcome: SequentialOutcome,
                           higher_is_better: bool) -> Comparison:
    """A task decided early: its interval is the confidence sequence's, turned
    into delta units, at the level the looks used. The bootstrap's interval and
    p-values on a sample whose size the data chose would not be valid, so the
    p-values are left out (null in results.json)."""
    if outcome.interval is None or outcome.alpha_fail is None or outcome.alpha_pass is None:
        return c
    low, high = outcome.interval
    ci = (low, high) if higher_is_better else (-high, -low)
    return replace(c, ci_low=ci[0], ci_high=ci[1],
                   ci_level=1.0 - outcome.alpha_fail - outcome.alpha_pass,
                   method="confidence_sequence", p_fail=math.nan, p_pass=math.nan)


def _advice(c: Comparison, policy: TaskPolicy, margin: float, family: int,
            chance: float | None, n_choices: int | None, in_points: bool) -> Advice:
    def amount(x: float) -> str:
        return wording.amount(x, in_points)

    if chance is not None:
        return Advice(None, f"the base scores {amount(c.base_score)}, at chance "
                            f"({amount(chance)} for {n_choices} choices): check the task's "
                            "prompt format and answer extraction before trusting any verdict")
    if "no_stderr" in c.flags:
        return Advice(None, "lm-eval reported no standard error for this corpus metric, so "
                            "nothing can be decided; report per-item scores or a stderr")
    if c.sigma is None or not math.isfinite(c.improvement):
        return Advice(None, "the per-item spread is unknown, so the items needed cannot be sized")
    if margin > MARGIN_FLOOR:
        distance = margin
        what = f"a {wording.amount(margin, in_points, unit_word=False)}-point margin" if in_points \
            else f"a margin of {amount(margin)}"
        design = ("a true drop of twice the margin" if policy.kind == "drop"
                  else "a true gain of twice the margin")
    else:
        distance = abs(c.improvement - c.threshold)
        what = "a zero margin"
        design = f"a true difference equal to the observed {amount(c.improvement)}"
    sigma = c.sigma
    if c.method == "paired_exact" and margin > MARGIN_FLOOR:
        # a true change of twice the margin flips at least that share of the items
        disc = c.changed / c.n_used if c.n_used else 0.0
        sigma = math.sqrt(max(max(disc, 2 * margin) - 4 * margin**2, 0.0))
    needed = items_needed(sigma, distance, alpha=policy.alpha, k=family)
    if needed is None:
        return Advice(None, f"n={c.n_used:,} cannot decide {what} here, and more items alone "
                            "will not: the models agree on every item; set a non-zero margin")
    if needed <= c.n_used:
        return Advice(needed, f"n={c.n_used:,} already gives 80% power for {design}; the observed "
                              f"change ({amount(c.improvement)} against the threshold "
                              f"{amount(c.threshold)}) sits too close to the threshold to settle")
    return Advice(needed, f"n={c.n_used:,} cannot decide {what} here; about {needed:,} items "
                          f"would (80% power for {design})")


def _flipped(base: TaskRecords, candidate: TaskRecords) -> tuple[FlippedItem, ...]:
    right_b = base.num > 0.5 if base.higher_is_better else base.num < 0.5
    right_c = candidate.num > 0.5 if base.higher_is_better else candidate.num < 0.5
    where = np.flatnonzero(right_b & ~right_c)[:MAX_FLIPPED]
    items = []
    for i in where:
        tb = base.texts[i] if base.texts is not None else None
        tc = candidate.texts[i] if candidate.texts is not None else None
        items.append(FlippedItem(
            doc_id=base.keys[i].doc_id,
            prompt=tb.prompt if tb else (tc.prompt if tc else None),
            target=tb.target if tb else (tc.target if tc else None),
            base_response=tb.response if tb else None,
            candidate_response=tc.response if tc else None))
    return tuple(items)


# ---------------------------------------------------------------- candidates

def judge_candidate(name: str, kind: str, tasks: Mapping[str, Sequence[TaskTriple]], *,
                    path: str | None = None, fingerprint: str | None = None,
                    sequential: Mapping[str, SequentialOutcome] | None = None,
                    family: str = "tier", waivers: Mapping[str, WaiverUse] | None = None) -> CandidateVerdict:
    """Every tier of one candidate; see the module docstring for the rule.

    `tasks` maps a tier name to its (base, candidate, policy) triples, the
    records already paired (same items, same order). `sequential` maps a task
    to how it was scored in rounds (gate.evaluate.rounds); a task decided early takes
    the decision of its confidence sequence. `family`: Holm's correction of
    FAIL decisions runs over each tier's tasks ("tier") or over all of the
    candidate's tasks ("candidate"). `waivers`: the tasks whose policy in
    `tasks` is a waiver's (see `_waived`).
    """
    unknown = sorted(set(tasks) - set(TIERS))
    if unknown:
        raise ConfigError(f"unknown tier {unknown[0]!r}", key=unknown[0],
                          fix=f"use one of: {', '.join(TIERS)}")
    if family not in ("tier", "candidate"):
        raise ConfigError(f"unknown family {family!r}", key="family",
                          fix="use tier or candidate")
    for tier, triples in tasks.items():
        for base, _, policy in triples:
            if policy.tier != tier:
                raise ConfigError(f"task {base.task} is listed under tier {tier} but its policy "
                                  f"is for tier {policy.tier}", key=f"{tier}.{base.task}",
                                  fix="resolve the task's policy from the tier it is listed in")
    present = [tier for tier in TIERS if tasks.get(tier)]
    for tier in present:
        _check_unique(tier, tasks[tier])
    flat = [triple for tier in present for triple in tasks[tier]]
    sizes = {tier: len(tasks[tier]) for tier in present}
    comparisons: list[Comparison] = []
    adjusted: list[float] = []
    if family == "candidate":
        comparisons = _compare_all(flat, family=len(flat), sequential=sequential)
        adjusted = _holm_raw(flat, comparisons, sequential)
    else:
        for tier in present:
            part = _compare_all(list(tasks[tier]), family=sizes[tier], sequential=sequential)
            comparisons += part
            adjusted += _holm_raw(tasks[tier], part, sequential)
    tiers = []
    at = 0
    for tier in present:
        k = sizes[tier]
        tiers.append(_tier_verdict(tier, tasks[tier], comparisons[at:at + k], adjusted[at:at + k],
                                   family=len(flat) if family == "candidate" else k,
                                   sequential=sequential))
        at += k
    if waivers:
        tiers = [_waived(tier, waivers) for tier in tiers]
    every = [t for tier in tiers for t in tier.tasks]
    warnings = tuple(
        f"{t.tier} tier: {t.task} is inconclusive ({wording.interval_text(t)}); counted as a pass "
        f"under inconclusive: warn" + (" (base at chance)" if "base_at_chance" in t.flags else "")
        for t in every if t.verdict is Verdict.INCONCLUSIVE and t.inconclusive == "warn"
        and not t.stopped_by_candidate)
    failing = [t for t in every if t.resolved is Verdict.FAIL and not t.stopped_by_candidate]
    verdict = Verdict.FAIL if failing else Verdict.PASS
    unproven = tuple(t.task for t in every if verdict is Verdict.PASS
                     and t.verdict is Verdict.INCONCLUSIVE)
    waived = tuple(t.task for t in every if t.verdict is Verdict.WAIVED)
    return CandidateVerdict(name=name, kind=kind, verdict=verdict,
                            reason=wording.candidate_reason(every, failing, warnings), tiers=tuple(tiers),
                            warnings=warnings, path=path, fingerprint=fingerprint,
                            not_shown_safe=unproven, family=family, waived=waived)


def _waived(tier: TierVerdict, waivers: Mapping[str, WaiverUse]) -> TierVerdict:
    """A tier judged with some tasks under a waiver's allowed drop. A task that
    passes under the waiver but is not shown within the thresholds' own margin
    (its interval's worse edge lies beyond it) is WAIVED: it counts as a pass
    and says so. One that passes within the thresholds' margin anyway stays
    PASS; FAIL and INCONCLUSIVE stay as judged under the waiver (a drop worse
    than the waived one fails). Every such task carries its waiver."""
    tasks = []
    for t in tier.tasks:
        use = waivers.get(t.task)
        if use is None:
            tasks.append(t)
            continue
        c = t.comparison
        worse_edge = c.ci_low if t.higher_is_better else -c.ci_high  # the improvement's lower bound
        within_own = math.isfinite(worse_edge) and worse_edge > -use.margin_without
        verdict = Verdict.WAIVED if t.verdict is Verdict.PASS and not within_own else t.verdict
        tasks.append(replace(t, verdict=verdict, waiver=use))
    return replace(tier, verdict=_worst([t.verdict for t in tasks]), tasks=tuple(tasks))


# ------------------------------------------------------------------- release

def judge_release(candidates: Sequence[CandidateVerdict],
                  release: Sequence[str] | None = None) -> ReleaseVerdict:
    """The release passes when every named candidate passes (all when None)."""
    if not candidates:
        raise InputError("there are no candidates to judge", key="candidates",
                         fix="list at least one fine-tuned candidate")
    by_name = {c.name: c for c in candidates}
    names = list(by_name) if release is None else list(release)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(f"release names unknown candidate {missing[0]!r}", key="release",
                          fix=f"name one of: {', '.join(by_name)}")
    if not names:
        raise ConfigError("the release names no candidates", key="release",
                          fix="name at least one candidate, or omit release to require all")
    failed = [by_name[n] for n in names if by_name[n].verdict is not Verdict.PASS]
    if failed:
        first = failed[0]
        others = [c.name for c in failed[1:]]
        more = f"; {', '.join(others)} fail{'s' if len(others) == 1 else ''} too" if others else ""
        return ReleaseVerdict(Verdict.FAIL, EXIT_FAIL, tuple(names),
                              f"{first.name} fails: {first.reason}{more}")
    n_warn = sum(len(by_name[n].warnings) for n in names)
    reason = f"{names[0]} passes" if len(names) == 1 else f"all {len(names)} candidates pass"
    if n_warn:
        reason += f" with {n_warn} warning{'s' if n_warn > 1 else ''}"
    unproven = sum(len(by_name[n].not_shown_safe) for n in names)
    if unproven:
        reason += (f"; not shown safe on {unproven} task{'s' if unproven != 1 else ''} "
                   "(inconclusive, counted as a pass by policy)")
    waived = [f"{n}: {t}" for n in names for t in by_name[n].waived]
    if waived:
        reason += f"; waived: {', '.join(waived)} (waivers.yaml)"
    return ReleaseVerdict(Verdict.PASS, EXIT_PASS, tuple(names), reason, unproven, len(waived))


__all__ = [
    "Advice",
    "CandidateVerdict",
    "FlippedItem",
    "ReleaseVerdict",
    "TaskTriple",
    "TaskVerdict",
    "TierVerdict",
    "Verdict",
    "base_score",
    "chance_tolerance",
    "judge_candidate",
    "judge_release",
    "judge_task",
    "judge_tier",
    "verdict_label",
]
