"""Monte Carlo checks that the gate's error rates are the ones it promises.

Simulated paired binary tasks (the common case: accuracy, exact match) with a
known true difference, judged exactly as a real run would be. Seeded, small B
(the decisions here are not near the Monte Carlo resolution of B=1000), a few
hundred simulated tasks each; runs in seconds. Allowances are 3 binomial
standard errors of the simulated rate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gate.policy import TaskPolicy
from gate.records import Aggregation, ItemKey, TaskRecords
from gate.stats import items_needed
from gate.verdict import Verdict, judge_task, judge_tier

ALPHA = 0.05
N_BOOT = 1000
SIMS = 1000


def simulate(n: int, p10: float, p01: float, rng: np.random.Generator,
             task: str = "sim") -> tuple[TaskRecords, TaskRecords]:
    """n paired items: base right/candidate wrong w.p. p10, the reverse w.p. p01;
    the rest agree (both right w.p. 0.6)."""
    cat = rng.choice(4, size=n, p=[p10, p01, 0.6, 1 - p10 - p01 - 0.6])
    base = np.isin(cat, [0, 2]).astype(float)
    cand = np.isin(cat, [1, 2]).astype(float)
    k = [ItemKey(i, f"h{i}") for i in range(n)]

    def rec(values: np.ndarray) -> TaskRecords:
        return TaskRecords(task, "acc", True, Aggregation.MEAN, k, values, np.ones(n), binary=True)

    return rec(base), rec(cand)


def drop(margin: float) -> TaskPolicy:
    return TaskPolicy(tier="general", kind="drop", absolute=margin, relative=None, alpha=ALPHA)


def upper_allowance(rate: float, sims: int) -> float:
    return rate + 3 * math.sqrt(rate * (1 - rate) / sims)


def lower_allowance(rate: float, sims: int) -> float:
    return rate - 3 * math.sqrt(rate * (1 - rate) / sims)


@pytest.mark.parametrize("margin", [0.0, 0.02])
def test_no_true_difference_fails_at_most_alpha(margin: float) -> None:
    """A candidate exactly as good as the base (20% of items flip, both ways).

    The threshold sits at -margin; with margin 0 the truth is *on* the
    threshold, the hardest case for the FAIL error rate.
    """
    rng = np.random.default_rng(0)
    fails = sum(
        judge_task(*simulate(300, 0.10, 0.10, rng), drop(margin), n_boot=N_BOOT,
                   seed=i).verdict is Verdict.FAIL
        for i in range(SIMS))
    assert fails / SIMS <= upper_allowance(ALPHA, SIMS)
    if margin == 0.0:  # and the test is not vacuous: it does fail about alpha of the time
        assert fails / SIMS >= 0.01


def test_the_advised_sample_size_reaches_80_percent_power() -> None:
    """A true drop of twice the margin, at the n the advice asks for."""
    margin = 0.03
    p10, p01 = 0.13, 0.07  # true difference -0.06, discordance 20%
    sigma = math.sqrt((p10 + p01) - (p01 - p10) ** 2)
    n = items_needed(sigma, margin, alpha=ALPHA)
    assert n is not None and 1000 < n < 2000
    # the advice a pilot run prints is this same formula on the pilot's sigma
    pilot = judge_task(*simulate(300, p10, p01, np.random.default_rng(1)), drop(margin),
                       n_boot=N_BOOT)
    if pilot.advice is not None and pilot.advice.items_needed is not None:
        assert pilot.advice.items_needed == pytest.approx(n, rel=0.15)
    rng = np.random.default_rng(7)
    sims = 300
    fails = sum(
        judge_task(*simulate(n, p10, p01, rng), drop(margin), n_boot=N_BOOT,
                   seed=i).verdict is Verdict.FAIL
        for i in range(sims))
    assert fails / sims >= lower_allowance(0.8, sims)


def test_holm_keeps_tier_error_and_power_with_several_tasks() -> None:
    """Four tasks per tier: the chance that *any* task wrongly fails stays at
    most alpha, and at the advised n (k=4) each truly broken task still fails
    at least 80% of the time."""
    k, margin, sims = 4, 0.03, 200
    rng = np.random.default_rng(99)
    any_fail = 0
    for i in range(sims):
        tasks = [(*simulate(300, 0.10, 0.10, rng, task=f"t{j}"), drop(0.0)) for j in range(k)]
        tier = judge_tier("general", tasks, n_boot=N_BOOT, seed=i)
        any_fail += tier.verdict is Verdict.FAIL
    assert any_fail / sims <= upper_allowance(ALPHA, sims)

    p10, p01 = 0.13, 0.07
    n = items_needed(math.sqrt(0.2 - 0.06**2), margin, alpha=ALPHA, k=k)
    assert n is not None
    task_fails = 0
    for i in range(sims // 2):
        tasks = [(*simulate(n, p10, p01, rng, task=f"t{j}"), drop(margin)) for j in range(k)]
        tier = judge_tier("general", tasks, n_boot=N_BOOT, seed=i)
        task_fails += sum(t.verdict is Verdict.FAIL for t in tier.tasks)
    assert task_fails / (k * sims // 2) >= lower_allowance(0.8, sims // 2)
