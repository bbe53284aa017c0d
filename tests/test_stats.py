"""gate.stats: the numbers behind every verdict, checked against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from gate import stats
from gate.errors import PairingError
from gate.records import Aggregation, ItemKey, TaskRecords


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


def naive_bootstrap(diff_fn, n: int, n_boot: int, seed: int) -> np.ndarray:
    """Textbook index bootstrap in float64: the reference for both fast paths."""
    rng = np.random.default_rng(seed)
    return np.array([diff_fn(rng.integers(0, n, n)) for _ in range(n_boot)])


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
    assert stats.items_needed(0.4, 0.02, alpha=0.05) == 2474
    # Bonferroni over 4 tasks: z_{1 - .0125} = 2.2414
    assert stats.items_needed(0.4, 0.02, alpha=0.05, k=4) == math.ceil(
        ((2.241403 + 0.8416212) * 20) ** 2)
    assert stats.items_needed(0.0, 0.02, alpha=0.05) is None
    assert stats.items_needed(0.4, 0.0, alpha=0.05) is None


def test_binary_bootstrap_agrees_with_textbook_bootstrap() -> None:
    base, cand = binary_pair(500, 0.12, 0.06, 0.6, seed=3)
    r = stats.compare(mean_records(base, binary=True), mean_records(cand, binary=True), -0.02,
                      n_boot=4000, seed=1)
    ref = naive_bootstrap(lambda i: cand[i].mean() - base[i].mean(), 500, 4000, seed=2)
    assert r.delta == pytest.approx(cand.mean() - base.mean())
    # same distribution up to Monte Carlo error (5th/95th percentiles, 4000 draws)
    assert r.ci_low == pytest.approx(np.quantile(ref, 0.05), abs=0.004)
    assert r.ci_high == pytest.approx(np.quantile(ref, 0.95), abs=0.004)
    # sigma^2 = discordance rate - mean difference^2 for a binary metric
    d = cand - base
    assert r.sigma == pytest.approx(math.sqrt(np.mean(d != 0) - d.mean() ** 2))
    assert r.p_value == pytest.approx(stats.mcnemar_exact(base > 0, cand > 0))


def test_continuous_bootstrap_agrees_with_textbook_bootstrap() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(0.5, 0.2, 800)
    cand = base + rng.normal(-0.01, 0.05, 800)
    r = stats.compare(mean_records(base), mean_records(cand), -0.02, n_boot=3000, seed=1)
    ref = naive_bootstrap(lambda i: cand[i].mean() - base[i].mean(), 800, 3000, seed=2)
    spread = ref.std()
    assert r.ci_low == pytest.approx(np.quantile(ref, 0.05), abs=0.15 * spread)
    assert r.ci_high == pytest.approx(np.quantile(ref, 0.95), abs=0.15 * spread)
    assert r.p_value is None


def test_ratio_metric_is_resampled_as_a_ratio_and_lower_is_better() -> None:
    rng = np.random.default_rng(7)
    words = rng.integers(5, 60, 600).astype(float)
    ll_b = -words * rng.gamma(3.0, 1.0, 600)
    ll_c = ll_b - words * np.abs(rng.normal(0.05, 0.05, 600))  # candidate is worse
    b, c = ppl_records(ll_b, words), ppl_records(ll_c, words)
    r = stats.compare(b, c, -0.5, n_boot=3000, seed=1)
    assert r.base_score == pytest.approx(math.exp(-ll_b.sum() / words.sum()))
    assert r.delta > 0 and r.improvement == pytest.approx(-r.delta)
    assert r.ci_low <= r.delta <= r.ci_high

    def ppl_diff(i: np.ndarray) -> float:
        return math.exp(-ll_c[i].sum() / words[i].sum()) - math.exp(-ll_b[i].sum() / words[i].sum())

    ref = naive_bootstrap(ppl_diff, 600, 3000, seed=2)
    assert r.ci_low == pytest.approx(np.quantile(ref, 0.05), abs=0.15 * ref.std())
    assert r.ci_high == pytest.approx(np.quantile(ref, 0.95), abs=0.15 * ref.std())
    # the influence-function sigma predicts the bootstrap spread
    assert r.sigma is not None
    assert r.sigma / math.sqrt(600) == pytest.approx(ref.std(), rel=0.1)


def test_interval_and_p_values_make_the_same_decision() -> None:
    rng = np.random.default_rng(11)
    for trial in range(30):
        n = int(rng.integers(20, 300))
        base, cand = binary_pair(n, rng.uniform(0.02, 0.2), rng.uniform(0.02, 0.2), 0.5,
                                 seed=trial)
        for threshold in (-0.1, -0.05, -0.02, 0.0, 0.02, cand.mean() - base.mean()):
            r = stats.compare(mean_records(base, binary=True), mean_records(cand, binary=True),
                              threshold, n_boot=999, seed=trial)
            assert (r.ci_low > threshold) == (r.p_pass < 0.05)
            assert (r.ci_high < threshold) == (r.p_fail < 0.05)


def test_identical_models_give_exact_zero() -> None:
    rng = np.random.default_rng(2)
    words = rng.integers(5, 60, 300).astype(float)
    ll = -words * rng.gamma(3.0, 1.0, 300)
    r = stats.compare(ppl_records(ll, words), ppl_records(ll.copy(), words.copy()), -1.0,
                      n_boot=500, seed=0)
    assert (r.delta, r.ci_low, r.ci_high) == (0.0, 0.0, 0.0)
    assert r.p_pass == pytest.approx(1 / 501)


def test_same_seed_same_numbers_and_task_seed_ignores_order() -> None:
    base, cand = binary_pair(300, 0.1, 0.08, 0.6, seed=1)
    b, c = mean_records(base, binary=True), mean_records(cand, binary=True)
    assert stats.compare(b, c, -0.02, n_boot=500, seed=9) == stats.compare(b, c, -0.02,
                                                                            n_boot=500, seed=9)
    assert stats.task_seed(0, "mmlu") == stats.task_seed(0, "mmlu")
    assert stats.task_seed(0, "mmlu") != stats.task_seed(0, "arc")
    assert stats.task_seed(0, "mmlu") != stats.task_seed(1, "mmlu")


def test_large_n_uses_wide_indices() -> None:
    rng = np.random.default_rng(4)
    base = rng.normal(size=40_000)
    cand = base + rng.normal(0.0, 0.1, 40_000)
    r = stats.compare(mean_records(base), mean_records(cand), -0.01, n_boot=40, seed=0)
    assert r.ci_low < r.delta < r.ci_high
    assert r.ci_high - r.ci_low < 0.01


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


def test_batch_results_equal_single_results_whatever_the_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks sharing index chunks in a batch get exactly what they get alone."""
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 700 * 64)  # 11 chunks of 64 resamples
    rng = np.random.default_rng(8)
    jobs = []
    for i in range(3):
        base = rng.normal(0.5, 0.2, 700)
        jobs.append(stats.CompareJob(mean_records(base, task=f"c{i}"),
                                     mean_records(base + rng.normal(0, 0.05, 700), task=f"c{i}"),
                                     -0.02))
    words = rng.integers(5, 60, 700).astype(float)
    ll = -words * rng.gamma(3.0, 1.0, 700)
    jobs.append(stats.CompareJob(ppl_records(ll, words),
                                 ppl_records(ll + rng.normal(0, 0.1, 700) * words, words), -0.5))
    binary_b, binary_c = binary_pair(700, 0.1, 0.05, 0.6, seed=0)
    jobs.append(stats.CompareJob(mean_records(binary_b, binary=True, task="b"),
                                 mean_records(binary_c, binary=True, task="b"), -0.02))
    alone = [stats.compare(j.base, j.candidate, j.threshold, n_boot=700, seed=4) for j in jobs]
    assert stats.compare_many(jobs, n_boot=700, seed=4, workers=1) == alone
    assert stats.compare_many(jobs[::-1], n_boot=700, seed=4, workers=3) == alone[::-1]


def test_non_finite_items_are_dropped_from_both_models_and_flagged() -> None:
    base = np.array([1.0, 0.0, 1.0, np.nan, 1.0, 0.0])
    cand = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    r = stats.compare(mean_records(base), mean_records(cand), -0.02, n_boot=200)
    assert (r.n, r.n_used) == (6, 5)
    assert r.flags == ("dropped_nonfinite_items",)
    assert r.delta == pytest.approx(2 / 5 - 3 / 5)
