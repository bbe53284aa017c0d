"""Scoring a candidate's tasks in rounds, and stopping each task once it is decided.

Why. Most of a gate's cost is scoring items that no longer change the
verdict: a candidate that forgot half of a general task is visibly failing
after a few dozen items. The statistics that make stopping safe live in
`gate.verdict.sequential` (always-valid confidence sequences and the alpha split);
this module is the loop around them: which items go into which round, what
the sequences are fed, and when a task stops. The base model is never scored
this way: it is the stored baseline, scored in full once, and every round of
every candidate is paired with it.

Items. A task's items (its planned selection, pooled over a group's members
with `gate.evaluate.pool_records` ids) are scored in a seeded random order,
`task_seed(seed, "order:<task>")`: every prefix is a random sample of the
task (task files are often sorted by subject or difficulty), and a rerun
scores the same rounds, so lm-eval's response cache serves them.

Rounds. A task looks at `schedule(n, first_round, growth)` items (64, 128,
256, ... by default). Every active task of a candidate advances one look per
round, all of them in one lm-eval call, so the engine batches them together.
lm-eval reads an empty per-member selection as "every document", so a group
member with no item in a round borrows its next item in the order; that
record is dropped from the round and, when its turn comes, comes from the
response cache.

What is judged sequentially: tasks whose metric is a mean of per-item values
in [0, 1] (acc, exact_match, f1, ...), the improvements then lying in
[-1, 1]. Other tasks (perplexity, bits per byte, per-item BLEU) advance round
by round too, so that `fail_fast` can stop them, but they are decided only on
all their items, by the paired test; a corpus metric is scored in one round,
because lm-eval computes it over the whole corpus. A task whose base scores
at chance under a drop policy gets no verdict anyway (gate.verdict), so it is
not judged sequentially either. A task with clusters (suite `cluster:`) is
scored whole cluster by whole cluster, in a seeded random order of clusters,
each round ending at a cluster boundary; it is decided on all its items,
because the confidence sequence assumes independent items.

Stopping. A task stops when its sequence decides it (PASS or FAIL at the
early levels of `split_alpha`). With `fail_fast`, the first FAIL stops every
other task of the candidate: the candidate fails whatever they would show.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from gate.config.models import SequentialConfig
from gate.config.policy import TaskPolicy
from gate.errors import EngineError
from gate.evaluate.plan import TaskPlan
from gate.evaluate.records import Aggregation, TaskRecords, concat_records, select_items
from gate.verdict.sequential import (
    AlphaSplit,
    Decision,
    SequentialOutcome,
    SequentialState,
    StopReason,
    decide,
    schedule,
    split_alpha,
)
from gate.verdict.stats import task_seed

#: per-item values this far outside [0, 1] are float noise
VALUE_SLACK = 1e-9

Evaluate = Callable[[list[TaskPlan]], Mapping[str, TaskRecords]]
Say = Callable[[str], None]
#: told as each round starts: (round number, items scored so far, tasks still scored)
RoundTrack = Callable[[int, int, Sequence[str]], None]


@dataclass
class _TaskRun:
    """One task of one candidate while it is being scored in rounds."""

    plan: TaskPlan
    base: TaskRecords
    policy: TaskPolicy
    order: list[int]
    looks: list[int]
    split: AlphaSplit
    threshold: float
    state: SequentialState | None
    note: str | None
    leaf_of: dict[int, str]
    #: pooled id -> position in `base`, to pair each round with the base's items
    base_at: dict[int, int]
    parts: list[TaskRecords] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)
    decision: Decision | None = None
    stopped: StopReason | None = None

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def done(self) -> int:
        return self.seen[-1] if self.seen else 0

    @property
    def active(self) -> bool:
        return self.stopped is None and self.done < len(self.order)

    def outcome(self) -> SequentialOutcome:
        judged = self.state is not None
        interval = self.state.interval() if self.state is not None and self.state.n else None
        return SequentialOutcome(
            n_total=len(self.order), looks=tuple(self.seen), decision=self.decision,
            stopped=self.stopped, interval=interval, threshold=self.threshold if judged else None,
            alpha_fail=self.split.fail if judged else None,
            alpha_pass=self.split.pass_ if judged else None, alpha_final=self.split.final,
            note=self.note, base_score=float(self.base.score), base_n=self.base.n)


def pooled_ids(plan: TaskPlan) -> dict[int, tuple[str, int]]:
    """The task's items as pooled ids -> (member, document index), in pooled order.

    The ids are those of `pool_records` with member sizes as offsets.
    """
    out: dict[int, tuple[str, int]] = {}
    for leaf, offset in _offsets(plan).items():
        docs = plan.selection.get(leaf)
        for doc in (docs if docs is not None else range(plan.n_docs[leaf])):
            out[offset + int(doc)] = (leaf, int(doc))
    return out


def scoring_order(plan: TaskPlan, seed: int) -> list[int]:
    """The task's pooled ids in the seeded random order the rounds follow."""
    ids = sorted(pooled_ids(plan))
    rng = np.random.default_rng(task_seed(seed, f"order:{plan.name}"))
    return [ids[i] for i in rng.permutation(len(ids))]


def sequential_note(base: TaskRecords, policy: TaskPolicy) -> str | None:
    """Why a task cannot be judged sequentially (None: it can)."""
    from gate.verdict.judge import chance_tolerance

    if base.aggregation is not Aggregation.MEAN:
        return (f"{base.metric} is not a mean of per-item scores; decided on all items "
                "by the paired test")
    if not _unit_bounded(base.values):
        return (f"per-item {base.metric} is not bounded in [0, 1]; decided on all items "
                "by the paired test")
    chance = base.chance
    if policy.kind == "drop" and chance is not None and base.score <= chance + chance_tolerance(chance, base.n):
        return "the base scores at chance, so no verdict is issued; scored in full"
    return None


def score_in_rounds(plans: Sequence[TaskPlan], base: Mapping[str, TaskRecords],
                    policies: Mapping[str, TaskPolicy], settings: SequentialConfig, *,
                    seed: int, evaluate: Evaluate, say: Say | None = None,
                    label: str = "candidate", family: str = "tier", at: RoundTrack | None = None,
                    ) -> tuple[dict[str, TaskRecords], dict[str, SequentialOutcome]]:
    """Score one candidate's tasks in rounds; return its records and each task's outcome.

    `base` holds the base model's full records per task, `policies` each
    task's resolved policy, `evaluate` scores a list of plans (their
    `selection` narrowed to one round) on the candidate and returns records
    per task. The returned records hold the items actually used, in scoring
    order; pair them with the base by doc id. `family` is the thresholds'
    `family` (tier or candidate): the tasks the FAIL side's alpha is split over.
    `at(round, items scored, tasks still scored)` is told as each round starts
    and once more at the end (with no tasks left).
    """
    say = say or (lambda _msg: None)
    at = at or (lambda _round, _done, _tasks: None)
    runs = _prepare(plans, base, policies, settings, seed, family)
    round_no = 0
    while True:
        active = [r for r in runs if r.active]
        if not active:
            break
        round_no += 1
        wanted: dict[str, list[int]] = {}
        subplans = []
        for r in active:
            upto = r.looks[len(r.seen)]
            wanted[r.name] = r.order[r.done:upto]
            subplans.append(replace(r.plan, selection=_round_selection(r, upto)))
        say(f"{label}: round {round_no}, {sum(map(len, wanted.values())):,} items of "
            f"{len(active)} task(s)")
        at(round_no, sum(r.done for r in runs), [r.name for r in active])
        got = evaluate(subplans)
        for r in active:
            _absorb(r, got, wanted[r.name], say, label)
        failed = [r.name for r in runs if r.decision == "FAIL"]
        if settings.fail_fast and failed:
            stopping = [r for r in runs if r.active]
            for r in stopping:
                r.stopped = "candidate_failed"
            if stopping:
                say(f"{label}: {failed[0]} failed; stopping {len(stopping)} other task(s) "
                    "(fail_fast)")
    at(round_no, sum(r.done for r in runs), [])
    records = {r.name: concat_records(r.parts) for r in runs}
    return records, {r.name: r.outcome() for r in runs}


def _prepare(plans: Sequence[TaskPlan], base: Mapping[str, TaskRecords],
             policies: Mapping[str, TaskPolicy], settings: SequentialConfig,
             seed: int, family: str) -> list[_TaskRun]:
    from gate.verdict.judge import base_score

    notes = {p.name: sequential_note(base[p.name], policies[p.name]) for p in plans}

    def family_of(p: TaskPlan) -> str:
        return "candidate" if family == "candidate" else policies[p.name].tier

    tier_size: dict[str, int] = {}
    tier_judged: dict[str, bool] = {}
    for p in plans:
        tier = family_of(p)
        tier_size[tier] = tier_size.get(tier, 0) + 1
        tier_judged[tier] = tier_judged.get(tier, False) or notes[p.name] is None
    runs = []
    for p in plans:
        policy, rec = policies[p.name], base[p.name]
        items = pooled_ids(p)
        order = scoring_order(p, seed)
        note = notes[p.name]
        base_at = {k.doc_id: i for i, k in enumerate(rec.keys)}
        if note is None and base_at.keys() != items.keys():
            note = "the stored base items do not match the task's items; scored in full"
        if tier_judged[family_of(p)]:
            split = split_alpha(policy.alpha, tier_size[family_of(p)], settings.early_share)
        else:  # no task of the tier looks early: the full-sample decision keeps all of alpha
            split = AlphaSplit(fail=0.0, pass_=0.0, final=policy.alpha)
        n = len(order)
        corpus = rec.aggregation is Aggregation.CORPUS
        looks = [n] if corpus or n == 0 else schedule(n, settings.first_round, settings.growth)
        if rec.clusters is not None and len(set(rec.clusters)) < rec.n and base_at.keys() == items.keys():
            order, looks = _by_cluster(order, looks, [rec.clusters[base_at[i]] for i in order], p.name, seed)
            if note is None:
                note = ("clustered items: the confidence sequence assumes independent items, so the "
                        "task is decided on all its items (rounds draw whole clusters)")
        state = None
        if note is None:
            state = SequentialState.for_task(split, n, first=settings.first_round)
        threshold = policy.threshold(base_score(rec))
        runs.append(_TaskRun(plan=p, base=rec, policy=policy, order=order, looks=looks, split=split,
                             threshold=threshold, state=state, note=note,
                             leaf_of={i: leaf for i, (leaf, _) in items.items()},
                             base_at=base_at))
    return runs


def _by_cluster(order: list[int], looks: list[int], labels: list[str], name: str,
                seed: int) -> tuple[list[int], list[int]]:
    """Whole clusters in a seeded random order (items of a cluster together, in
    their own random order), and each look moved to the next cluster boundary."""
    first_seen: dict[str, list[int]] = {}
    for item, label in zip(order, labels, strict=True):
        first_seen.setdefault(label, []).append(item)
    names = sorted(first_seen)
    perm = np.random.default_rng(task_seed(seed, f"clusters:{name}")).permutation(len(names))
    ordered = [item for i in perm for item in first_seen[names[i]]]
    ends = [int(e) for e in np.cumsum([len(first_seen[names[i]]) for i in perm])]
    moved = sorted({next(e for e in ends if e >= look) for look in looks})
    return ordered, moved


def _round_selection(r: _TaskRun, upto: int) -> dict[str, list[int] | None]:
    """Per member: the documents of this round (a borrowed one when it has none)."""
    offsets = _offsets(r.plan)
    chosen: dict[str, list[int]] = {leaf: [] for leaf in r.plan.leaves}
    for i in r.order[r.done:upto]:
        leaf = r.leaf_of[i]
        chosen[leaf].append(i - offsets[leaf])
    for leaf, docs in chosen.items():
        if docs:
            continue
        ahead = (i for i in [*r.order[upto:], *r.order[:r.done]] if r.leaf_of[i] == leaf)
        borrowed = next(ahead, None)
        if borrowed is not None:
            docs.append(borrowed - offsets[leaf])
    return {leaf: sorted(docs) for leaf, docs in chosen.items() if docs}


def _offsets(plan: TaskPlan) -> dict[str, int]:
    out, offset = {}, 0
    for leaf in plan.leaves:
        out[leaf] = offset
        offset += plan.n_docs[leaf]
    return out


def _absorb(r: _TaskRun, got: Mapping[str, TaskRecords], ids: list[int], say: Say,
            label: str) -> None:
    """Add one round's records to a task, feed its sequence, and decide."""
    if r.name not in got:
        raise EngineError(f"the round returned no records for task {r.name}",
                          fix="rerun; see the engine log")
    try:
        rec = select_items(got[r.name], ids)
    except KeyError as exc:
        raise EngineError(f"task {r.name}: item {exc} of the round was not scored",
                          fix="rerun; see the engine log") from None
    r.parts.append(rec)
    r.seen.append(r.done + len(ids))
    if r.state is None:
        return
    values = rec.values
    if not _unit_bounded(values):
        r.state = None
        r.note = (f"per-item {rec.metric} of the candidate is not bounded in [0, 1]; decided "
                  "on all items by the paired test")
        return
    base_values = r.base.values[[r.base_at[i] for i in ids]]
    diff = values - base_values
    r.state.update(np.clip(diff if r.base.higher_is_better else -diff, -1.0, 1.0))
    decision = decide(r.state, r.threshold)
    if decision is not None:
        r.decision, r.stopped = decision, "decided"
        low, high = r.state.interval()
        say(f"{label}: {r.name} {decision} after {r.done:,} of {len(r.order):,} items "
            f"(improvement in [{_fmt(low)}, {_fmt(high)}], threshold {_fmt(r.threshold)})")


def _unit_bounded(values: np.ndarray) -> bool:
    """Every per-item value finite and in [0, 1]: what the sequence's bounds assume."""
    return bool(np.all(np.isfinite(values)) and np.all(values >= -VALUE_SLACK)
                and np.all(values <= 1 + VALUE_SLACK))


def _fmt(x: float) -> str:
    return f"{x:+.3f}" if math.isfinite(x) else "n/a"


__all__ = ["pooled_ids", "score_in_rounds", "scoring_order", "sequential_note"]


# The outcome of a task scored in rounds rides along in its records, so the
# records cache keeps it; these two are the only places that write and read it.
_OUTCOME = "sequential"


def with_outcome(rec: TaskRecords, outcome: SequentialOutcome) -> TaskRecords:
    """`rec` carrying the task's sequential outcome."""
    return replace(rec, extra={**rec.extra, _OUTCOME: outcome.to_dict()})


def outcome_of(rec: TaskRecords) -> SequentialOutcome | None:
    """The sequential outcome a candidate's records carry (None: scored in full)."""
    data = rec.extra.get(_OUTCOME)
    return SequentialOutcome.from_dict(data) if isinstance(data, dict) else None
