"""Scoring candidates in rounds (gate.evaluate.rounds) and judging what the rounds decided.

The engine here is a function from a round's plans to records: each
synthetic model has a fixed per-item score for every pooled item id, so what
the rounds ask for and what they get back can be checked exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from gate.config.models import SequentialConfig, TaskSpec
from gate.config.policy import TaskPolicy
from gate.config.tasks import ResolvedTask
from gate.evaluate.plan import TaskPlan
from gate.evaluate.records import Aggregation, ItemKey, TaskRecords, select_items
from gate.evaluate.rounds import pooled_ids, score_in_rounds, scoring_order
from gate.verdict.judge import Verdict, judge_candidate

B = 1000


def plan(name: str, tier: str = "general", sizes: Mapping[str, int] | None = None) -> TaskPlan:
    sizes = dict(sizes or {name: 400})
    task = ResolvedTask(name=name, tier=tier, spec=TaskSpec(task=name), yaml_path=None,  # type: ignore[arg-type]
                        is_group=len(sizes) > 1)
    return TaskPlan(task=task, leaves=list(sizes), selection={leaf: None for leaf in sizes},
                    n_docs=sizes, data_hash="d", config_hash="c", version="1", metric="acc")


def records(p: TaskPlan, values: np.ndarray, ids: list[int], *,
            aggregation: Aggregation = Aggregation.MEAN, den: np.ndarray | None = None,
            higher_is_better: bool = True) -> TaskRecords:
    idx = np.asarray(ids, dtype=int)
    d = np.ones(len(ids)) if den is None else den[idx]
    return TaskRecords(p.name, "acc" if aggregation is Aggregation.MEAN else "word_perplexity",
                       higher_is_better, aggregation, [ItemKey(i, f"h{i}") for i in ids],
                       values[idx] * d, d, binary=aggregation is Aggregation.MEAN)


class Model:
    """A synthetic model: per task, a score for every pooled item id."""

    def __init__(self, plans: list[TaskPlan], values: Mapping[str, np.ndarray], **kw: object) -> None:
        self.plans = {p.name: p for p in plans}
        self.values = values
        self.kw = kw
        self.requested: list[dict[str, dict[str, list[int]]]] = []

    def full(self) -> dict[str, TaskRecords]:
        return {name: records(p, self.values[name], sorted(pooled_ids(p)), **self.kw)  # type: ignore[arg-type]
                for name, p in self.plans.items()}

    def evaluate(self, subplans: list[TaskPlan]) -> dict[str, TaskRecords]:
        self.requested.append({p.name: {leaf: list(sel or []) for leaf, sel in p.selection.items()}
                               for p in subplans})
        return {p.name: records(p, self.values[p.name], sorted(pooled_ids(p)), **self.kw)  # type: ignore[arg-type]
                for p in subplans}


def drop(margin: float = 0.03, tier: str = "general", alpha: float = 0.05) -> TaskPolicy:
    return TaskPolicy(tier=tier, kind="drop", absolute=margin, relative=None, alpha=alpha)  # type: ignore[arg-type]


def bernoulli(n: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def judge(name: str, plans: list[TaskPlan], base: dict[str, TaskRecords], cand: dict[str, TaskRecords],
          policies: Mapping[str, TaskPolicy], outcomes: Mapping[str, object] | None) -> object:
    by_tier: dict[str, list[object]] = {}
    for p in plans:
        c = cand[p.name]
        b = select_items(base[p.name], sorted(k.doc_id for k in c.keys))
        c = select_items(c, sorted(k.doc_id for k in c.keys))
        by_tier.setdefault(p.task.tier, []).append((b, c, policies[p.name]))
    return judge_candidate(name, "lora", by_tier,  # type: ignore[arg-type]
                           sequential=outcomes)  # type: ignore[arg-type]


def test_a_collapsed_task_fails_after_the_first_round_and_reports_items_used() -> None:
    p = plan("capitals", sizes={"capitals": 1000})
    base_v = bernoulli(1000, 0.95, 1)
    cand_v = base_v * bernoulli(1000, 0.4, 2)  # forgot 60% of what it knew
    base = Model([p], {"capitals": base_v}).full()
    model = Model([p], {"capitals": cand_v})
    recs, outcomes = score_in_rounds([p], base, {"capitals": drop()}, SequentialConfig(), seed=0,
                                     evaluate=model.evaluate)
    o = outcomes["capitals"]
    assert (o.decision, o.stopped, o.looks) == ("FAIL", "decided", (64,))
    assert len(model.requested) == 1
    # the items used are the first round of the seeded order, and nothing else
    assert sorted(k.doc_id for k in recs["capitals"].keys) == sorted(scoring_order(p, 0)[:64])
    v = judge("c", [p], base, recs, {"capitals": drop()}, outcomes)
    task = v.tiers[0].tasks[0]  # type: ignore[attr-defined]
    assert task.verdict is Verdict.FAIL and "stopped_early" in task.flags
    d = task.to_dict()
    assert (d["n"], d["n_used"], d["method"]) == (1000, 64, "confidence_sequence")
    assert d["p_fail"] is None and d["ci_high"] < -0.03
    assert d["sequential"]["looks"] == [64]


def test_an_unchanged_candidate_passes_before_the_last_item() -> None:
    p = plan("general_qa", sizes={"general_qa": 4000})
    base_v = bernoulli(4000, 0.7, 3)
    base = Model([p], {"general_qa": base_v}).full()
    recs, outcomes = score_in_rounds([p], base, {"general_qa": drop(0.05)}, SequentialConfig(),
                                     seed=0, evaluate=Model([p], {"general_qa": base_v}).evaluate)
    o = outcomes["general_qa"]
    assert o.decision == "PASS" and o.n_used < 4000
    v = judge("c", [p], base, recs, {"general_qa": drop(0.05)}, outcomes)
    assert v.verdict is Verdict.PASS  # type: ignore[attr-defined]


def test_fail_fast_stops_the_other_tasks_and_they_do_not_count_as_warnings() -> None:
    plans = [plan("capitals", sizes={"capitals": 1000}), plan("trivia", sizes={"trivia": 1000})]
    base_v = {"capitals": bernoulli(1000, 0.95, 4), "trivia": bernoulli(1000, 0.6, 5)}
    cand_v = {"capitals": base_v["capitals"] * bernoulli(1000, 0.3, 6),
              # a drop right at the margin: no sequence decides it early
              "trivia": np.where(bernoulli(1000, 0.03, 7) > 0, 0.0, base_v["trivia"])}
    base = Model(plans, base_v).full()
    policies = {p.name: drop() for p in plans}
    recs, outcomes = score_in_rounds(plans, base, policies, SequentialConfig(), seed=0,
                                     evaluate=Model(plans, cand_v).evaluate)
    assert outcomes["capitals"].stopped == "decided"
    assert outcomes["trivia"].stopped == "candidate_failed"
    assert outcomes["trivia"].n_used == outcomes["capitals"].n_used < 1000
    v = judge("c", plans, base, recs, policies, outcomes)
    trivia = next(t for t in v.tiers[0].tasks if t.task == "trivia")  # type: ignore[attr-defined]
    assert trivia.verdict is Verdict.STOPPED and "stopped_candidate_failed" in trivia.flags
    shown = trivia.to_dict()  # not judged: no interval or p-value at a level it never had
    assert shown["verdict"] == "STOPPED" and shown["ci_low"] is None and shown["p_value"] is None
    assert trivia.advice is not None and "fail_fast" in trivia.advice.message
    assert v.verdict is Verdict.FAIL and v.warnings == ()  # type: ignore[attr-defined]
    assert v.tiers[0].worst_task == "capitals"  # type: ignore[attr-defined]  # the task that decided, not the stopped one
    assert "capitals" in v.reason and "more failing" not in v.reason  # type: ignore[attr-defined]

    # without fail_fast the undecided task is scored to its last item
    _, outcomes = score_in_rounds(plans, base, policies, SequentialConfig(fail_fast=False), seed=0,
                                  evaluate=Model(plans, cand_v).evaluate)
    assert outcomes["trivia"].stopped is None and outcomes["trivia"].n_used == 1000


def test_a_ratio_metric_is_scored_in_rounds_but_decided_on_all_items() -> None:
    p = plan("text", sizes={"text": 300})
    rng = np.random.default_rng(8)
    loglik = -rng.uniform(2.0, 4.0, 300)  # lm-eval: per-item log-likelihood, negative
    words = rng.integers(5, 20, 300).astype(float)
    kw = {"aggregation": Aggregation.WEIGHTED_PERPLEXITY, "den": words, "higher_is_better": False}
    base = Model([p], {"text": loglik}, **kw).full()
    model = Model([p], {"text": loglik * 1.5}, **kw)  # perplexity up by far more than 10%
    policy = TaskPolicy(tier="general", kind="drop", absolute=None, relative=0.1)
    recs, outcomes = score_in_rounds([p], base, {"text": policy}, SequentialConfig(), seed=0,
                                     evaluate=model.evaluate)
    o = outcomes["text"]
    assert o.decision is None and o.stopped is None and o.looks == (64, 128, 300)
    assert o.note is not None and "not a mean" in o.note
    assert o.alpha_final == pytest.approx(0.05)  # no task of the tier looks early
    assert sorted(k.doc_id for k in recs["text"].keys) == list(range(300))
    v = judge("c", [p], base, recs, {"text": policy}, outcomes)
    assert v.verdict is Verdict.FAIL  # type: ignore[attr-defined]


def test_a_group_member_without_items_in_a_round_borrows_one_and_it_is_not_counted() -> None:
    p = plan("mmlu", sizes={"mmlu_tiny": 3, "mmlu_big": 500})
    ids = sorted(pooled_ids(p))
    assert ids == list(range(503))
    base_v = bernoulli(503, 0.8, 9)
    base = Model([p], {"mmlu": base_v}).full()
    near = np.where(bernoulli(503, 0.03, 10) > 0, 0.0, base_v)  # undecidable: runs to the end
    model = Model([p], {"mmlu": near})
    recs, outcomes = score_in_rounds([p], base, {"mmlu": drop()}, SequentialConfig(), seed=0,
                                     evaluate=model.evaluate)
    for request in model.requested:  # lm-eval reads an empty selection as "all documents"
        assert all(request["mmlu"][leaf] for leaf in p.leaves)
    used = [k.doc_id for k in recs["mmlu"].keys]
    assert sorted(used) == ids  # every item exactly once, borrowed ones included once
    assert outcomes["mmlu"].n_used == 503


def test_thresholds_come_from_the_base_full_score_not_the_items_used() -> None:
    p = plan("gq", sizes={"gq": 1000})
    base_v = bernoulli(1000, 0.9, 11)
    base = Model([p], {"gq": base_v}).full()
    policy = TaskPolicy(tier="general", kind="drop", absolute=None, relative=0.1)
    _, outcomes = score_in_rounds([p], base, {"gq": policy}, SequentialConfig(), seed=0,
                                  evaluate=Model([p], {"gq": base_v * 0}).evaluate)
    assert outcomes["gq"].threshold == pytest.approx(-0.1 * base_v.mean())


@pytest.mark.slow
def test_false_fail_rate_under_early_stopping_stays_within_alpha() -> None:
    """Calibration: two general tasks whose true drop is exactly the allowed margin
    (the worst case for a false FAIL). The candidate must fail in at most alpha of
    runs (plus Monte Carlo slack), rounds, early looks and Holm included."""
    n, runs, alpha = 600, 200, 0.05
    plans = [plan("t1", sizes={"t1": n}), plan("t2", sizes={"t2": n})]
    policies = {p.name: drop(0.05, alpha=alpha) for p in plans}
    fails = 0
    for r in range(runs):
        rng = np.random.default_rng(1000 + r)
        base_v = {p.name: (rng.random(n) < 0.7).astype(float) for p in plans}
        # 12.5% of the right answers lost, 5% of items won back: mean drop 0.0875 - 0.0375 = 0.05
        cand_v = {}
        for name, b in base_v.items():
            lost = (rng.random(n) < 0.125) & (b > 0)
            won = (rng.random(n) < 0.125) & (b == 0)
            cand_v[name] = np.where(lost, 0.0, np.where(won, 1.0, b))
        base = Model(plans, base_v).full()
        recs, outcomes = score_in_rounds(plans, base, policies, SequentialConfig(), seed=r,
                                         evaluate=Model(plans, cand_v).evaluate)
        fails += judge("c", plans, base, recs, policies, outcomes).verdict is Verdict.FAIL  # type: ignore[attr-defined]
    # binomial slack: 3 standard deviations of a rate of alpha over `runs` runs
    assert fails / runs <= alpha + 3 * (alpha * (1 - alpha) / runs) ** 0.5


def test_clustered_tasks_are_scored_whole_cluster_by_whole_cluster() -> None:
    from dataclasses import replace

    p = plan("passages", sizes={"passages": 1000})
    labels = [f"p{i // 25}" for i in range(1000)]  # 40 passages of 25 questions
    base_v = bernoulli(1000, 0.9, 11)
    cand_v = base_v * bernoulli(1000, 0.3, 12)  # a collapse: unclustered, it stops at 64
    base = {"passages": replace(Model([p], {"passages": base_v}).full()["passages"], clusters=labels)}
    model = Model([p], {"passages": cand_v})
    _recs, outcomes = score_in_rounds([p], base, {"passages": drop()}, SequentialConfig(), seed=0,
                                     evaluate=model.evaluate)
    o = outcomes["passages"]
    assert o.decision is None and o.note is not None and "clustered" in o.note
    assert o.n_used == 1000 and all(look % 25 == 0 for look in o.looks) and len(o.looks) > 1
    for request in model.requested:  # every round asks for whole passages
        docs = request["passages"]["passages"]
        assert {d // 25 for d in docs} and all(
            sum(1 for d in docs if d // 25 == c) == 25 for c in {d // 25 for d in docs})
