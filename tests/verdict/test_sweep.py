"""Picking a checkpoint of a sweep (gate.verdict.sweep): the rule, and the
selection's error rate.

The claim: each of K checkpoints judged at alpha/K, the chance that the pick
is a checkpoint whose true drop is at (or beyond) the margin is at most alpha,
whatever the rule; judged at alpha each, it is not. Checked by simulation:
the worst case for a union of K tests is independent checkpoints (real ones
share items and are positively correlated, which only lowers the rate), each
exactly at the margin, over tiny to large tasks, few and many flipped items,
K = 2, 3, 5; then through `judge_run` + `judge_sweep` themselves with one
safe checkpoint among unsafe ones (the pick rule prefers the unsafe ones'
larger target gain).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_calibration import ALPHA, MARGIN, acc_records, binary_cell, bound

from gate.config.policy import TaskPolicy
from gate.config.sweep import Checkpoint, Sweep
from gate.verdict.judge import Verdict
from gate.verdict.run import CandidateRecords, judge_run
from gate.verdict.stats import binary_pvalues
from gate.verdict.sweep import policies_for

GAIN = TaskPolicy(tier="target", kind="gain", absolute=0.10, relative=None, alpha=ALPHA, inconclusive="fail")
DROP = TaskPolicy(tier="general", kind="drop", absolute=MARGIN, relative=None, alpha=ALPHA, inconclusive="fail")
POLICIES = {"t": GAIN, "g": DROP}
TIERS = {"t": "target", "g": "general"}


def sweep_of(k: int, name: str = "run") -> Sweep:
    return Sweep(name, "/runs/x", "lora", tuple(Checkpoint(f"{name}@{10 * (i + 1)}", f"checkpoint-{10 * (i + 1)}",
                                                           10 * (i + 1), float(i + 1), f"/runs/x/c{i}")
                                                for i in range(k)))


def selection_rate(k: int, n: int, flip: float, level: float, reps: int, seed: int) -> float:
    """P(some checkpoint of k, each exactly at the drop margin, PASSes at `level`)."""
    pb, pw, policy = binary_cell("drop_at_margin", flip)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [pb, pw, 1 - pb - pw], size=(reps, k))
    p_pass, p_fail = binary_pvalues(counts[..., 0].ravel(), counts[..., 1].ravel(), n, policy.threshold(0.6))
    passes = (p_fail >= level) & (p_pass < level)
    return float(np.mean(passes.reshape(reps, k).any(axis=1)))


@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 3, 5])
def test_bonferroni_across_checkpoints_keeps_the_picks_false_pass_rate(k: int) -> None:
    reps = 20_000
    worst = 0.0
    for n in (20, 50, 200, 1000):
        for flip in (0.04, 0.20):
            rate = selection_rate(k, n, flip, ALPHA / k, reps, seed=1000 * k + n)
            worst = max(worst, rate)
            assert rate <= bound(reps), (k, n, flip, rate)
    assert worst > 0.02  # the test can see a rate near alpha, not only zeros


def test_judging_each_checkpoint_at_alpha_would_not_keep_it() -> None:
    """The same cells at alpha per checkpoint: a false pick far above alpha."""
    rate = selection_rate(5, 1000, 0.20, ALPHA, 20_000, seed=7)
    assert rate > 2 * ALPHA


def _paired(base: np.ndarray, p_better: float, p_worse: float, rng: np.random.Generator, task: str):
    """A candidate on the same items as `base`: a wrong item turns right with the
    chance that gives P(better) = p_better overall, a right one wrong likewise."""
    right = base.mean()
    up = rng.random(base.size) < (p_better / (1 - right) if right < 1 else 0.0)
    down = rng.random(base.size) < (p_worse / right if right > 0 else 0.0)
    cand = np.where(base == 1, np.where(down, 0.0, 1.0), np.where(up, 1.0, 0.0))
    return acc_records(cand, task)


@pytest.mark.slow
def test_the_pick_is_an_unsafe_checkpoint_at_most_alpha_of_the_time() -> None:
    """Through judge_run and judge_sweep: checkpoints 2 and 3 drop exactly the
    margin and gain more on the target than checkpoint 1, which keeps general
    ability. A pick of 2 or 3 is a false PASS."""
    reps, n = 300, 200
    rng = np.random.default_rng(5)
    at_margin = binary_cell("drop_at_margin", 0.20)[:2]
    wrong = picked_safe = 0
    sweep = sweep_of(3)
    for _ in range(reps):
        base_t = (rng.random(n) < 0.2).astype(float)
        base_g = (rng.random(n) < 0.6).astype(float)
        cands = []
        for i, name in enumerate(sweep.candidates):
            drop = (0.0, 0.0) if i == 0 else at_margin
            recs = {"t": _paired(base_t, 0.3 + 0.1 * i, 0.0, rng, "t"), "g": _paired(base_g, *drop, rng, "g")}
            cands.append(CandidateRecords(name, "lora", recs))
        verdict = judge_run({"t": acc_records(base_t, "t"), "g": acc_records(base_g, "g")}, cands, tiers=TIERS,
                            policies=POLICIES, family="tier", release=None, sweeps=[sweep])
        pick = verdict.sweeps[0].pick
        wrong += pick in sweep.candidates[1:]
        picked_safe += pick == sweep.candidates[0]
    assert wrong / reps <= bound(reps)
    assert picked_safe / reps > 0.5  # and the safe one is found most of the time


def _judged(pass_target: list[float], general_ok: list[bool], *, pick: str = "best_target"):
    rng = np.random.default_rng(3)
    n = 400
    base = {"t": acc_records(np.zeros(n), "t"), "g": acc_records(np.ones(n), "g")}
    sweep = sweep_of(len(pass_target))
    cands = []
    for name, gain, ok in zip(sweep.candidates, pass_target, general_ok, strict=True):
        t = acc_records((rng.random(n) < gain).astype(float), "t")
        g = acc_records(np.ones(n) if ok else (rng.random(n) < 0.5).astype(float), "g")
        cands.append(CandidateRecords(name, "lora", {"t": t, "g": g}))
    return judge_run(base, cands, tiers=TIERS, policies=POLICIES, family="tier", release=None, sweeps=[sweep],
                     pick=pick)  # type: ignore[arg-type]


def test_best_target_picks_the_largest_gain_among_passing_checkpoints() -> None:
    run = _judged([0.4, 0.7, 0.9], [True, True, False])
    sweep = run.sweeps[0]
    assert [c.verdict.verdict for c in sweep.checkpoints if c.verdict] == [Verdict.PASS, Verdict.PASS, Verdict.FAIL]
    assert sweep.pick == "run@20"
    assert sweep.drops_at == "run@30 fails the general tier"
    assert "the largest target gain among the 2 checkpoints that pass" in sweep.reason
    assert run.release.verdict is Verdict.PASS and run.release.candidates == ("run",)
    assert "run ships run@20" in run.release.reason


def test_earliest_picks_the_first_passing_checkpoint() -> None:
    run = _judged([0.4, 0.7, 0.9], [True, True, False], pick="earliest")
    assert run.sweeps[0].pick == "run@10"


def test_no_passing_checkpoint_fails_the_release_and_names_them_all() -> None:
    run = _judged([0.4, 0.7], [False, False])
    assert run.sweeps[0].pick is None
    assert run.release.verdict is Verdict.FAIL and run.release.exit_code == 1
    assert "none of its 2 checkpoints passes" in run.release.reason
    assert "run@10 general tier" in run.release.reason and "run@20 general tier" in run.release.reason


def test_checkpoints_are_judged_at_alpha_over_k_and_other_candidates_at_alpha() -> None:
    sweep = sweep_of(4)
    assert {p.alpha for p in policies_for("run@20", POLICIES, [sweep]).values()} == {ALPHA / 4}
    assert policies_for("lone", POLICIES, [sweep]) is POLICIES
    run = _judged([0.9, 0.9], [True, True])
    tasks = [t for c in run.candidates for tier in c.tiers for t in tier.tasks]
    assert {t.alpha for t in tasks} == {ALPHA / 2}


def test_a_checkpoint_can_be_released_alone() -> None:
    sweep = sweep_of(2)
    rng = np.random.default_rng(0)
    base = {"t": acc_records(np.zeros(200), "t"), "g": acc_records(np.ones(200), "g")}
    good = {"t": acc_records((rng.random(200) < 0.9).astype(float), "t"), "g": acc_records(np.ones(200), "g")}
    run = judge_run(base, [CandidateRecords(n, "lora", good) for n in sweep.candidates], tiers=TIERS,
                    policies=POLICIES, family="tier", release=["run@20"], sweeps=[sweep])
    assert run.release.candidates == ("run@20",) and run.release.verdict is Verdict.PASS


def _judged_warn(general_p: list[tuple[float, float]], gains: list[float], *, pick: str, n: int = 120):
    """Checkpoints none of which is shown safe (`inconclusive: warn`): each drops
    the general task's items with its own rate, and gains `gains` on the target."""
    warn = TaskPolicy(tier="general", kind="drop", absolute=MARGIN, relative=None, alpha=ALPHA,
                      inconclusive="warn")
    rng = np.random.default_rng(8)
    base_t = np.zeros(n)
    base_g = (rng.random(n) < 0.6).astype(float)
    sweep = sweep_of(len(gains))
    cands = [CandidateRecords(name, "lora", {"t": acc_records((rng.random(n) < gain).astype(float), "t"),
                                             "g": _paired(base_g, *pw, rng, "g")})
             for name, gain, pw in zip(sweep.candidates, gains, general_p, strict=True)]
    return judge_run({"t": acc_records(base_t, "t"), "g": acc_records(base_g, "g")}, cands, tiers=TIERS,
                     policies={"t": GAIN, "g": warn}, family="tier", release=None, sweeps=[sweep],
                     pick=pick)  # type: ignore[arg-type]


@pytest.mark.parametrize("pick", ["best_target", "earliest"])
def test_among_checkpoints_none_shown_safe_the_least_evidence_of_forgetting_is_picked(pick: str) -> None:
    """Later epochs gain more and forget more: the pick is the checkpoint whose general
    task is least likely to have dropped, not the best target nor simply the first."""
    run = _judged_warn([(0.04, 0.07), (0.06, 0.06), (0.04, 0.08)], [0.5, 0.7, 0.9], pick=pick)
    sweep = run.sweeps[0]
    points = {c.candidate: c for c in sweep.checkpoints}
    assert all(c.verdict is not None and c.verdict.label.startswith("PASS (not shown safe")
               for c in points.values()), [c.verdict.label for c in points.values() if c.verdict]
    best = max(points.values(), key=lambda c: c.forgetting_evidence)
    assert best.candidate == "run@20"  # balanced flips: the least evidence of a drop
    assert sweep.pick == "run@20"
    assert "none of the 3 checkpoints that pass is shown safe" in sweep.reason
    assert "least evidence of forgetting" in sweep.reason


def test_a_checkpoint_shown_safe_is_preferred_to_a_better_target_not_shown_safe() -> None:
    run = _judged([0.4, 0.9], [True, True])
    assert run.sweeps[0].pick == "run@20"  # both shown safe: the rule decides
    warn = _judged_warn([(0.0, 0.0), (0.05, 0.07)], [0.5, 0.95], pick="best_target", n=800)
    sweep = warn.sweeps[0]
    first = sweep.checkpoints[0].verdict
    assert first is not None and not first.not_shown_safe and first.verdict is Verdict.PASS
    assert sweep.pick == "run@10"
    assert "the only checkpoint shown safe (1 more pass without being shown safe)" in sweep.reason
