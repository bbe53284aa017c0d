"""gate.verdict.stats: the numbers behind every verdict, checked against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from gate.errors import IncompleteEvaluation, PairingError
from gate.evaluate.records import Aggregation, ItemKey, TaskRecords
from gate.verdict import power, stats


def keys(n: int) -> list[ItemKey]:
    return [ItemKey(i, f"h{i}") for i in range(n)]


def mean_records(values: np.ndarray, *, binary: bool = False, task: str = "t",
                 higher_is_better: bool = True) -> TaskRecords:
    n = len(values)
    return TaskRecords(task, "acc" if binary else "f1", higher_is_better, Aggregation.MEAN,
                       keys(n), values, np.ones(n), binary=binary)


def ppl_records(ll: np.ndarray, words: np.ndarray) -> TaskRecords:
    return TaskRecords("wiki", "word_perplexity", False, Aggregation.WEIGHTED_PERPLEXITY,
                       keys(len(ll)), ll, words)


def binary_pair(n: int, p10: float, p01: float, p11: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired 0/1 outcomes: (base right, candidate wrong) w.p. p10, the reverse w.p. p01."""
    rng = np.random.default_rng(seed)
    cat = rng.choice(4, size=n, p=[p10, p01, p11, 1 - p10 - p01 - p11])
    base = np.isin(cat, [0, 2]).astype(float)
    cand = np.isin(cat, [1, 2]).astype(float)
    return base, cand


def test_holm_matches_hand_worked_example() -> None:
    # sorted: .005 (x4 = .02), .01 (x3 = .03), .03 (x2 = .06), .04 (x1 = .04 -> max .06)
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_single_p() -> None:
    np.testing.assert_allclose(stats.holm([0.4, 0.5, 0.9]), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(stats.holm([0.03]), [0.03])
    assert stats.holm([]).size == 0


@pytest.mark.parametrize(("b", "c"), [(12, 3), (3, 12), (7, 7), (40, 25), (1, 0)])
def test_mcnemar_matches_exact_binomial(b: int, c: int) -> None:
    base = np.array([1] * b + [0] * c + [1] * 50 + [0] * 30, dtype=bool)
    cand = np.array([0] * b + [1] * c + [1] * 50 + [0] * 30, dtype=bool)
    expected = min(1.0, 2 * sps.binom.cdf(min(b, c), b + c, 0.5))
    assert stats.mcnemar_exact(base, cand) == pytest.approx(expected)
    assert stats.mcnemar_exact(base, cand) == pytest.approx(sps.binomtest(c, b + c).pvalue)


def test_mcnemar_without_discordant_pairs_is_one() -> None:
    same = np.array([1, 0, 1, 1], dtype=bool)
    assert stats.mcnemar_exact(same, same) == 1.0


def test_items_needed_hand_worked() -> None:
    # (z_.95 + z_.8) * sigma / distance = (1.6448536 + 0.8416212) * 0.4 / 0.02 = 49.7295
    assert power.items_needed(0.4, 0.02, alpha=0.05) == 2474
    # Bonferroni over 4 tasks: z_{1 - .0125} = 2.2414
    assert power.items_needed(0.4, 0.02, alpha=0.05, k=4) == math.ceil(
        ((2.241403 + 0.8416212) * 20) ** 2)
    assert power.items_needed(0.0, 0.02, alpha=0.05) is None
    assert power.items_needed(0.4, 0.0, alpha=0.05) is None


def brute_force_exact(won: int, lost: int, n: int, t: float) -> tuple[float, float]:
    """The exact unconditional test by enumerating every (wins, losses) outcome
    of the multinomial, a reference independent of gate.verdict.stats' factorisation."""
    from scipy.special import gammaln, xlogy

    m = won + lost
    lo = sps.beta.ppf(stats.GAMMA / 2, m, n - m + 1) if m > 0 else 0.0
    hi = sps.beta.ppf(1 - stats.GAMMA / 2, m + 1, n - m) if m < n else 1.0
    gs, ls = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    ok = gs + ls <= n
    gs, ls = gs[ok].astype(float), ls[ok].astype(float)
    z, z_obs = stats.tango_z(gs, ls, n, t), float(stats.tango_z(won, lost, n, t))
    best = [0.0, 0.0]
    for disc in np.append(np.linspace(lo, hi, 400), abs(t) if lo < abs(t) < hi else lo):
        for side, d in ((0, min(t, disc)), (1, max(t, -disc))):
            if abs(d) > disc + 1e-15:
                continue
            pg, pl = (disc + d) / 2, (disc - d) / 2
            logp = (gammaln(n + 1) - gammaln(gs + 1) - gammaln(ls + 1) - gammaln(n - gs - ls + 1)
                    + xlogy(gs, pg) + xlogy(ls, pl) + xlogy(n - gs - ls, 1 - disc))
            region = z >= z_obs - 1e-9 if side == 0 else z <= z_obs + 1e-9
            best[side] = max(best[side], float(np.exp(logp)[region].sum()))
    return min(1.0, best[0] + stats.GAMMA), min(1.0, best[1] + stats.GAMMA)


@pytest.mark.parametrize("case", [(10, 14, 100, -0.03), (28, 2, 100, 0.10), (0, 0, 60, -0.03),
                                  (3, 9, 40, 0.0), (6, 1, 30, 0.05), (0, 4, 25, -0.05)])
def test_binary_exact_pvalues_match_a_brute_force_enumeration(case: tuple[int, int, int, float]) -> None:
    got = stats.binary_pvalues(*case)
    ref = brute_force_exact(*case)
    assert float(got[0]) == pytest.approx(ref[0], rel=0.02, abs=2e-4)
    assert float(got[1]) == pytest.approx(ref[1], rel=0.02, abs=2e-4)


@pytest.mark.parametrize("case", [(10, 14, 100), (28, 2, 100), (3, 9, 40), (6, 1, 30), (40, 61, 1000), (0, 4, 25)])
def test_the_exact_interval_ends_where_the_verdicts_tests_start_to_reject(case: tuple[int, int, int]) -> None:
    """The reported interval is the set of thresholds neither test rejects, with
    the p-values the verdict uses: `binary_interval` bisects one tail at a time
    (`exact_tail`), the verdict asks `binary_pvalues` for both; they must agree
    at the edges, or a CI could sit wholly above a threshold the verdict fails."""
    won, lost, n = case
    low, high = stats.binary_interval(won, lost, n, 0.05)
    eps = 1e-5
    assert -1.0 < low < high < 1.0
    assert float(stats.binary_pvalues(won, lost, n, low - eps)[0]) < 0.05  # PASS below the lower end
    assert float(stats.binary_pvalues(won, lost, n, low + eps)[0]) >= 0.05
    assert float(stats.binary_pvalues(won, lost, n, high + eps)[1]) < 0.05  # FAIL above the upper end
    assert float(stats.binary_pvalues(won, lost, n, high - eps)[1]) >= 0.05


def test_binary_pvalues_switch_to_tangos_score_test_with_many_flips() -> None:
    won, lost, n, t = 180, 220, 2000, -0.03  # 400 discordant items
    z = (won - lost) / n - t
    # Tango's constrained MLE of p_lost under p_won - p_lost = t
    b = won * (1 - t) + lost * (1 - 3 * t) - 2 * (n - won - lost) * t
    p = (b + math.sqrt(b * b + 8 * n * lost * t * (1 - t))) / (4 * n)
    z /= math.sqrt((2 * p + t - t * t) / n)
    got = stats.binary_pvalues(won, lost, n, t)
    assert float(got[0]) == pytest.approx(sps.norm.sf(z))
    assert float(got[1]) == pytest.approx(sps.norm.cdf(z))


def test_agreement_on_every_item_is_evidence_only_at_large_n() -> None:
    """The gate's headline small-n bug: 50 identical items used to "prove" no
    drop beyond 3 points. Now the evidence is the rule of three's: with no
    flip in n items a flip rate of 3% is ruled out only once 0.97^n < alpha."""
    for n, shown in ((50, False), (90, False), (110, True), (400, True)):
        p_pass, p_fail = stats.binary_pvalues(0, 0, n, -0.03)
        assert (float(p_pass) < 0.05) is shown and float(p_fail) == 1.0
        if n < 200:
            assert float(p_pass) == pytest.approx(min(1.0, 0.97**n + stats.GAMMA), rel=1e-3)
    low, high = stats.binary_interval(0, 0, 50, 0.05)
    assert low == pytest.approx(-high) and 0.05 < high < 0.07


def test_a_perfect_tiny_target_task_passes_only_at_its_exact_level() -> None:
    # 0/5 -> 5/5: the worst null (a gain of exactly 2 points, every item
    # discordant) gives 5 wins of 5 with probability 0.51^5 = 0.035
    p_pass, _ = stats.binary_pvalues(5, 0, 5, 0.02)
    assert float(p_pass) == pytest.approx(0.51**5 + stats.GAMMA, rel=1e-6)
    assert 0.01 < float(p_pass) < 0.05  # a PASS at alpha 5%, not at 1%


def test_binary_comparison_reports_mcnemar_as_any_difference_only() -> None:
    base, cand = binary_pair(500, 0.12, 0.06, 0.6, seed=3)
    r = stats.compare(mean_records(base, binary=True), mean_records(cand, binary=True), -0.02)
    assert r.method == "paired_exact"
    assert r.delta == pytest.approx(cand.mean() - base.mean())
    d = cand - base
    assert r.sigma == pytest.approx(math.sqrt(np.mean(d != 0) - d.mean() ** 2))
    assert r.p_any_difference == pytest.approx(stats.mcnemar_exact(base > 0, cand > 0))
    assert r.changed == int(np.sum(d != 0))


def test_continuous_mean_with_absolute_margin_is_a_paired_t_test() -> None:
    """No skew: Hall's correction vanishes to first order and the delta-method
    t is the textbook paired t-test (up to the tiny skewness correction)."""
    rng = np.random.default_rng(5)
    base = rng.normal(0.5, 0.2, 800)
    cand = base + rng.normal(-0.01, 0.05, 800)
    r = stats.compare(mean_records(base), mean_records(cand), -0.02)
    ref = sps.ttest_1samp(cand - base, -0.02, alternative="less")
    assert r.method == "paired_t" and r.p_any_difference is None
    assert r.p_fail == pytest.approx(ref.pvalue, rel=0.1)
    half = sps.t.ppf(0.95, 799) * np.std(cand - base, ddof=1) / math.sqrt(800)
    assert r.ci_low == pytest.approx((cand - base).mean() - half, abs=0.1 * half)
    assert r.ci_high == pytest.approx((cand - base).mean() + half, abs=0.1 * half)


def test_ratio_metric_is_tested_as_a_ratio_and_lower_is_better() -> None:
    rng = np.random.default_rng(7)
    words = rng.integers(5, 60, 600).astype(float)
    ll_b = -words * rng.gamma(3.0, 1.0, 600)
    ll_c = ll_b - words * np.abs(rng.normal(0.05, 0.05, 600))  # candidate is worse
    b, c = ppl_records(ll_b, words), ppl_records(ll_c, words)
    r = stats.compare(b, c, -0.5)
    assert r.base_score == pytest.approx(math.exp(-ll_b.sum() / words.sum()))
    assert r.delta > 0 and r.improvement == pytest.approx(-r.delta)
    assert r.ci_low <= r.delta <= r.ci_high

    def ppl_diff(i: np.ndarray) -> float:
        return math.exp(-ll_c[i].sum() / words[i].sum()) - math.exp(-ll_b[i].sum() / words[i].sum())

    # the delta-method sigma predicts the spread of a textbook bootstrap
    boot = np.array([ppl_diff(np.random.default_rng(i).integers(0, 600, 600)) for i in range(400)])
    assert r.sigma is not None
    assert r.sigma / math.sqrt(600) == pytest.approx(boot.std(), rel=0.15)


def test_interval_and_p_values_make_the_same_decision() -> None:
    rng = np.random.default_rng(11)
    for trial in range(30):
        n = int(rng.integers(20, 600))
        base, cand = binary_pair(n, rng.uniform(0.02, 0.3), rng.uniform(0.02, 0.3), 0.3,
                                 seed=trial)
        for threshold in (-0.1, -0.05, -0.02, 0.0, 0.02, cand.mean() - base.mean()):
            r = stats.compare(mean_records(base, binary=True), mean_records(cand, binary=True),
                              threshold)
            assert (r.ci_low > threshold) == (r.p_pass < 0.05)
            assert (r.ci_high < threshold) == (r.p_fail < 0.05)
    for _ in range(10):
        base = rng.normal(0.5, 0.2, 200)
        cand = base + rng.normal(-0.01, 0.05, 200)
        for threshold in (-0.03, -0.01, 0.0):
            r = stats.compare(mean_records(base), mean_records(cand), threshold)
            assert (r.ci_low > threshold) == (r.p_pass < 0.05)
            assert (r.ci_high < threshold) == (r.p_fail < 0.05)


def test_too_few_changed_items_give_no_paired_t_decision() -> None:
    rng = np.random.default_rng(2)
    words = rng.integers(5, 60, 300).astype(float)
    ll = -words * rng.gamma(3.0, 1.0, 300)
    same = stats.compare(ppl_records(ll, words), ppl_records(ll.copy(), words.copy()), -1.0)
    assert same.delta == 0.0 and same.flags == ("too_little_information",)
    assert (same.p_pass, same.p_fail) == (1.0, 1.0) and same.changed == 0
    few = ll.copy()
    few[: stats.MIN_CHANGED_ITEMS - 1] -= 50.0
    r = stats.compare(ppl_records(ll, words), ppl_records(few, words), -1.0)
    assert r.flags == ("too_little_information",) and r.changed == stats.MIN_CHANGED_ITEMS - 1


def test_task_seed_is_fixed_by_seed_and_name() -> None:
    assert stats.task_seed(0, "mmlu") == stats.task_seed(0, "mmlu")
    assert stats.task_seed(0, "mmlu") != stats.task_seed(0, "arc")
    assert stats.task_seed(0, "mmlu") != stats.task_seed(1, "mmlu")


def test_a_relative_margin_carries_the_base_noise() -> None:
    """With a relative margin the threshold moves with the base's estimate; the
    test's standard error includes that (a fixed threshold would not)."""
    rng = np.random.default_rng(9)
    words = rng.integers(20, 200, 400).astype(float)
    ll_b = -words * rng.gamma(4.0, 0.5, 400)
    ll_c = ll_b - words * rng.normal(0.0, 0.05, 400)
    b, c = ppl_records(ll_b, words), ppl_records(ll_c, words)
    fixed = stats.compare(b, c, -0.05 * b.score)
    moving = stats.compare(b, c, lambda score: -0.05 * score)
    assert fixed.threshold == pytest.approx(moving.threshold)
    assert not math.isclose(moving.p_pass, fixed.p_pass, rel_tol=0.2)


def test_unpaired_fallback_for_corpus_metrics() -> None:
    def corpus(score: float, se: float | None) -> TaskRecords:
        return TaskRecords("wmt", "bleu", True, Aggregation.CORPUS, [], np.zeros(0), np.zeros(0),
                           reported_score=score, reported_stderr=se)

    r = stats.compare(corpus(0.30, 0.01), corpus(0.27, 0.01), -0.02)
    se = math.sqrt(2) * 0.01
    assert r.method == "unpaired_stderr"
    assert r.delta == pytest.approx(-0.03)
    assert r.p_fail == pytest.approx(sps.norm.sf(0.01 / se))
    assert r.p_pass == pytest.approx(sps.norm.cdf(0.01 / se))
    assert r.ci_low == pytest.approx(-0.03 - 1.6448536 * se)
    missing = stats.compare(corpus(0.30, None), corpus(0.27, 0.01), -0.02)
    assert missing.flags == ("no_stderr",) and missing.p_fail == missing.p_pass == 1.0


def test_unpaired_fallback_orients_lower_is_better() -> None:
    def ter(score: float) -> TaskRecords:
        return TaskRecords("wmt", "ter", False, Aggregation.CORPUS, [], np.zeros(0), np.zeros(0),
                           reported_score=score, reported_stderr=0.5)

    r = stats.compare(ter(40.0), ter(45.0), -1.0)  # TER up 5: worse
    assert r.improvement == pytest.approx(-5.0) and r.delta == pytest.approx(5.0)
    assert r.ci_low < 5.0 < r.ci_high
    assert r.p_fail < 1e-6


def test_mismatched_items_or_metrics_raise_pairing_error() -> None:
    a = mean_records(np.ones(5), binary=True)
    shifted = TaskRecords("t", "acc", True, Aggregation.MEAN,
                          [ItemKey(i + 1, f"h{i + 1}") for i in range(5)], np.ones(5), np.ones(5))
    with pytest.raises(PairingError, match="pair the items"):
        stats.compare(a, shifted, -0.02)
    other_metric = mean_records(np.ones(5))
    with pytest.raises(PairingError):
        stats.compare(a, other_metric, -0.02)


def test_nan_items_stop_the_evaluation_naming_task_and_count() -> None:
    base = np.array([1.0, 0.0, 1.0, np.nan, 1.0, 0.0])
    cand = np.array([1.0, 0.0, 0.0, 1.0, 1.0, np.nan])
    with pytest.raises(IncompleteEvaluation) as err:
        stats.compare(mean_records(base), mean_records(cand), -0.02)
    assert "task t: 1 of 6 base items" in str(err.value) and "doc ids [3]" in str(err.value)
    assert err.value.exit_code == 3


def test_a_candidate_at_minus_infinity_is_infinitely_worse() -> None:
    rng = np.random.default_rng(3)
    words = rng.integers(5, 60, 200).astype(float)
    ll = -words * rng.gamma(3.0, 1.0, 200)
    broken = ll.copy()
    broken[::5] = -np.inf  # 40 items the candidate gives zero probability
    r = stats.compare(ppl_records(ll, words), ppl_records(broken, words), -1.0)
    assert r.method == "infinite" and r.candidate_score == math.inf
    assert r.infinite_items == tuple(range(0, 200, 5)) and r.p_fail == 0.0
    with pytest.raises(IncompleteEvaluation, match="base items"):
        stats.compare(ppl_records(broken, words), ppl_records(ll, words), -1.0)
    nan = ll.copy()
    nan[7] = np.nan
    with pytest.raises(IncompleteEvaluation, match="1 of 200 candidate items"):
        stats.compare(ppl_records(ll, words), ppl_records(nan, words), -1.0)


def test_a_non_finite_threshold_stops_the_evaluation() -> None:
    base, cand = binary_pair(50, 0.1, 0.1, 0.5, seed=1)
    with pytest.raises(IncompleteEvaluation, match="threshold"):
        stats.compare(mean_records(base, binary=True), mean_records(cand, binary=True),
                      float("nan"))
