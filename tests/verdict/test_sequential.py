"""gate.verdict.sequential: early decisions that stay valid however often the gate looks.

The Monte Carlo tests are seeded and small (a few hundred simulated tasks of
up to 2000 paired items, looked at on the gate's schedule 64, 128, ..., 2000);
their error rates are compared with alpha itself, no slack: the sequence is
conservative at a handful of looks, so the true rates sit well below alpha.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest

from gate.errors import InputError
from gate.verdict import sequential as seq

N = 2000
LOOKS = seq.schedule(N)
DISCORDANCE = 0.2  # share of items where exactly one of base and candidate is right


def paired_binary(rng: np.random.Generator, n: int, mean: float,
                  discordance: float = DISCORDANCE) -> np.ndarray:
    """Improvements d = cand - base of 0/1 scores: +1 w.p. (q + mean)/2, -1 w.p. (q - mean)/2."""
    p_up, p_down = (discordance + mean) / 2, (discordance - mean) / 2
    return rng.choice([-1.0, 0.0, 1.0], size=n, p=[p_down, 1 - discordance, p_up])


@dataclass
class Run:
    decision: str | None
    n_stop: int | None
    low_missed: bool  # the lower bound rose above the true mean at some look
    high_missed: bool  # the upper bound fell below it at some look


def monitor(d: np.ndarray, truth: float, threshold: float, *, alpha_fail: float,
            alpha_pass: float, stop: bool = True) -> Run:
    """Score in rounds, looking at every round; stop at the first decision unless told not to."""
    state = seq.SequentialState(-1.0, 1.0, alpha_fail=alpha_fail, alpha_pass=alpha_pass,
                                horizons=seq.horizons_for(N))
    decision, n_stop, low_missed, high_missed = None, None, False, False
    previous = 0
    for n in LOOKS:
        state.update(d[previous:n])
        previous = n
        low, high = state.interval()
        low_missed |= low > truth
        high_missed |= high < truth
        if decision is None:
            decision = seq.decide(state, threshold)
            n_stop = n if decision else None
            if decision and stop:
                break
    return Run(decision, n_stop, low_missed, high_missed)


def simulate(seed: int, runs: int, mean: float, threshold: float, *, alpha_fail: float,
             alpha_pass: float, stop: bool = True) -> list[Run]:
    rng = np.random.default_rng(seed)
    return [monitor(paired_binary(rng, N, mean), mean, threshold, alpha_fail=alpha_fail,
                    alpha_pass=alpha_pass, stop=stop) for _ in range(runs)]


# ------------------------------------------------------------------ validity

def test_the_sequence_never_excludes_the_truth_more_often_than_alpha() -> None:
    """Worst case for both claims: the true improvement sits exactly on the threshold,
    and every round is looked at (no stopping), so any miss at any look counts."""
    alpha, runs = 0.05, 500
    out = simulate(11, runs, -0.02, -0.02, alpha_fail=alpha / 2, alpha_pass=alpha / 2, stop=False)
    ever_missed = np.mean([r.low_missed or r.high_missed for r in out])
    print(f"\nP(ever excludes the truth), alpha={alpha}: {ever_missed:.3f} over {runs} runs")
    assert ever_missed <= alpha
    # the same holds for each side at its own level, here a loose 0.2 per side
    loose = simulate(12, runs, -0.02, -0.02, alpha_fail=0.2, alpha_pass=0.2, stop=False)
    low_rate = np.mean([r.low_missed for r in loose])
    high_rate = np.mean([r.high_missed for r in loose])
    print(f"one side at 0.2: lower bound missed {low_rate:.3f}, upper bound missed {high_rate:.3f}")
    assert low_rate <= 0.2 and high_rate <= 0.2
    assert low_rate > 0 and high_rate > 0  # the test can see a miss: the bounds are not vacuous


def test_repeated_fixed_sample_intervals_would_not_be_valid() -> None:
    """Why the module exists: the same looks with a plain one-sided z-interval at
    0.05 err far more often than 0.05, while the sequence stays below it."""
    rng = np.random.default_rng(13)
    runs, z = 500, 1.6448536269514722
    naive_misses = 0
    for _ in range(runs):
        d = paired_binary(rng, N, -0.02)
        naive_misses += any(
            d[:n].mean() - z * d[:n].std(ddof=1) / math.sqrt(n) > -0.02 for n in LOOKS)
    naive = naive_misses / runs
    print(f"\nrepeated fixed-sample lower bound at 0.05 over {len(LOOKS)} looks: {naive:.3f}")
    assert naive > 0.08


@pytest.mark.parametrize("epsilon", [0.0, 0.01])
def test_a_candidate_at_or_above_the_threshold_is_rarely_failed(epsilon: float) -> None:
    alpha, runs = 0.05, 400
    threshold = -0.02
    out = simulate(21, runs, threshold + epsilon, threshold, alpha_fail=alpha, alpha_pass=alpha)
    wrong_fail = np.mean([r.decision == "FAIL" for r in out])
    print(f"\nwrong FAIL at threshold + {epsilon}: {wrong_fail:.3f} (alpha {alpha})")
    assert wrong_fail <= alpha


def test_bonferroni_over_a_tier_keeps_the_family_wise_false_fail_rate() -> None:
    """Four tasks of one tier, all exactly at the threshold: P(any FAIL) <= alpha
    with the FAIL side of each at alpha / 4 (split_alpha with early_share=1)."""
    alpha, k, runs = 0.2, 4, 150
    split = seq.split_alpha(alpha, k, early_share=1.0)
    rng = np.random.default_rng(31)
    any_fail = 0
    for _ in range(runs):
        tier = [monitor(paired_binary(rng, N, -0.02), -0.02, -0.02, alpha_fail=split.fail,
                        alpha_pass=split.pass_) for _ in range(k)]
        any_fail += any(r.decision == "FAIL" for r in tier)
    print(f"\nP(any false FAIL in a tier of {k}) at alpha={alpha}: {any_fail / runs:.3f}")
    assert any_fail / runs <= alpha


# --------------------------------------------------------------------- power

def test_a_clear_regression_fails_within_half_the_items() -> None:
    """A drop of 10 points against an allowed 2 (4x the margin), at the early FAIL level
    the gate uses for a single-task tier (split_alpha(0.05, 1).fail = 0.01)."""
    split = seq.split_alpha(0.05, 1)
    runs = 300
    out = simulate(41, runs, -0.10, -0.02, alpha_fail=split.fail, alpha_pass=split.pass_)
    assert all(r.decision != "PASS" for r in out)
    stops = np.array([r.n_stop if r.decision == "FAIL" else N + 1 for r in out])
    early = np.mean(stops <= N // 2)
    print(f"\nFAIL within {N // 2} items: {early:.3f}; median stop {np.median(stops):.0f}; "
          f"within 256: {np.mean(stops <= 256):.3f}")
    assert early >= 0.8


def test_a_clearly_fine_candidate_passes_early() -> None:
    split = seq.split_alpha(0.05, 1)
    runs = 300
    out = simulate(51, runs, 0.05, -0.02, alpha_fail=split.fail, alpha_pass=split.pass_)
    assert all(r.decision != "FAIL" for r in out)
    stops = np.array([r.n_stop if r.decision == "PASS" else N + 1 for r in out])
    print(f"\nPASS at +0.05 vs -0.02: median stop {np.median(stops):.0f}, "
          f"within {N // 2}: {np.mean(stops <= N // 2):.3f}, by {N}: {np.mean(stops <= N):.3f}")
    assert np.median(stops) <= 512  # the median run stops at the look a quarter of the way in
    assert np.mean(stops <= N // 2) >= 0.5
    assert np.mean(stops <= N) >= 0.95


# ----------------------------------------------------------- exact behaviour

def reference_lower_bound_capital(d: np.ndarray, m: float, alpha: float,
                                  horizons: tuple[int, ...]) -> float:
    """K+_n(m), written out item by item from Waudby-Smith & Ramdas (2023), eq. 26."""
    x = (d + 1.0) / 2.0
    capital = np.ones(len(horizons))
    sum_x, sum_sq = 0.0, 0.0
    for i, xi in enumerate(x, start=1):
        s2 = (0.25 + sum_sq) / i  # from items 1..i-1 only
        for j, h in enumerate(horizons):
            bet = min(0.5, math.sqrt(2 * math.log(1 / alpha) / (s2 * h)))
            capital[j] *= 1 + bet * (xi - m)
        sum_x += xi
        sum_sq += (xi - (0.5 + sum_x) / (i + 1)) ** 2
    return float(capital.mean())


def test_the_lower_bound_is_where_the_betting_capital_reaches_one_over_alpha() -> None:
    rng = np.random.default_rng(61)
    d = paired_binary(rng, 300, -0.1)
    alpha, horizons = 0.05, (64, 256)
    state = seq.SequentialState(-1.0, 1.0, alpha_fail=alpha, alpha_pass=alpha, horizons=horizons)
    state.update(d)
    low, _ = state.interval()
    m_low = (low + 1.0) / 2.0  # the unit scale the capital lives on
    assert reference_lower_bound_capital(d, m_low + 1e-6, alpha, horizons) < 1 / alpha
    assert reference_lower_bound_capital(d, m_low - 1e-6, alpha, horizons) >= 1 / alpha


def test_the_interval_only_narrows_and_ends_near_the_mean() -> None:
    rng = np.random.default_rng(71)
    d = paired_binary(rng, N, 0.03)
    state = seq.SequentialState(-1.0, 1.0, alpha_fail=0.05, alpha_pass=0.05)
    assert state.interval() == (-1.0, 1.0) and math.isnan(state.mean)
    widths, previous = [], 0
    for n in LOOKS:
        state.update(d[previous:n])
        previous = n
        low, high = state.interval()
        assert low <= state.mean <= high
        widths.append(high - low)
    assert all(b <= a for a, b in itertools.pairwise(widths))
    assert widths[-1] < 0.1
    assert state.n == N and state.looks == tuple(LOOKS)
    assert state.mean == pytest.approx(d.mean())


def test_bounds_are_in_the_metric_units_whatever_the_declared_range() -> None:
    """The same data on [0, 1] and mapped to [-1, 1] give the mapped interval."""
    rng = np.random.default_rng(81)
    unit = rng.beta(2, 5, size=500)
    a = seq.SequentialState(0.0, 1.0, alpha_fail=0.05, alpha_pass=0.05)
    b = seq.SequentialState(-1.0, 1.0, alpha_fail=0.05, alpha_pass=0.05)
    a.update(unit)
    b.update(2 * unit - 1)
    (la, ha), (lb, hb) = a.interval(), b.interval()
    assert lb == pytest.approx(2 * la - 1, abs=1e-9)
    assert hb == pytest.approx(2 * ha - 1, abs=1e-9)
    assert la < unit.mean() < ha


def test_decide_compares_the_interval_with_the_threshold() -> None:
    state = seq.SequentialState(-1.0, 1.0, alpha_fail=0.05, alpha_pass=0.05)
    state.update(np.r_[np.full(100, -1.0), np.zeros(300)])  # mean -0.25, clearly a drop
    low, high = state.interval()
    assert seq.decide(state, high + 0.01) == "FAIL"
    assert seq.decide(state, high) is None  # a tie keeps scoring
    assert seq.decide(state, low - 0.01) == "PASS"
    assert seq.decide(state, (low + high) / 2) is None


def test_same_seed_same_decisions() -> None:
    first = simulate(91, 20, -0.06, -0.02, alpha_fail=0.01, alpha_pass=0.01)
    again = simulate(91, 20, -0.06, -0.02, alpha_fail=0.01, alpha_pass=0.01)
    other = simulate(92, 20, -0.06, -0.02, alpha_fail=0.01, alpha_pass=0.01)
    assert first == again
    assert first != other


# ----------------------------------------------------- schedule, levels, input

def test_schedule_doubles_up_to_the_task_size() -> None:
    assert seq.schedule(2000) == [64, 128, 256, 512, 1024, 2000]
    assert seq.schedule(100) == [100]  # a last round under `first` items joins the one before
    assert seq.schedule(1100) == [64, 128, 256, 512, 1024, 1100]
    assert seq.schedule(5) == [5]
    assert seq.schedule(1000, first=100, growth=3.0) == [100, 300, 900, 1000]
    assert seq.schedule(950, first=100, growth=3.0) == [100, 300, 950]
    for n_total in range(1, 3000, 37):
        looks = seq.schedule(n_total)
        assert looks[-1] == n_total
        assert all(b > a for a, b in itertools.pairwise(looks))


def test_horizons_span_the_schedule() -> None:
    assert seq.horizons_for(2000) == (64, 256, 2000)
    assert seq.horizons_for(5000) == (64, 256, 1024, 5000)
    assert seq.horizons_for(50) == (50,)


def test_split_alpha_spends_a_share_early_and_divides_the_fail_side() -> None:
    split = seq.split_alpha(0.05, 4)
    assert split.fail == pytest.approx(0.05 * 0.2 / 4)
    assert split.pass_ == pytest.approx(0.05 * 0.2)
    assert split.final == pytest.approx(0.05 * 0.8)
    assert seq.split_alpha(0.05, 1, early_share=1.0) == seq.AlphaSplit(0.05, 0.05, 0.0)
    state = seq.SequentialState.for_task(split, 2000)
    assert (state.alpha_fail, state.alpha_pass) == (split.fail, split.pass_)
    assert state.horizons == seq.horizons_for(2000)


@pytest.mark.parametrize("bad", [[0.5, 1.5], [float("nan")], [-2.0]])
def test_an_improvement_outside_the_bounds_is_refused(bad: list[float]) -> None:
    state = seq.SequentialState(-1.0, 1.0, alpha_fail=0.05, alpha_pass=0.05)
    state.update([0.0, 1.0])
    with pytest.raises(InputError) as err:
        state.update(bad)
    problem = err.value.problems[0]
    assert problem.key == "improvements" and problem.fix
    assert "outside the declared bounds [-1.0, 1.0]" in problem.message
    assert state.n == 2  # nothing of the refused round was kept


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"lo": 1.0, "hi": -1.0}, "bounds"),
    ({"alpha_fail": 0.0}, "alpha_fail"),
    ({"alpha_pass": 1.0}, "alpha_pass"),
    ({"horizons": ()}, "horizons"),
])
def test_bad_settings_are_refused_with_the_key(kwargs: dict[str, object], key: str) -> None:
    settings: dict[str, object] = {"lo": -1.0, "hi": 1.0, "alpha_fail": 0.05,
                                   "alpha_pass": 0.05, **kwargs}
    with pytest.raises(InputError) as err:
        seq.SequentialState(**settings)  # type: ignore[arg-type]
    assert err.value.problems[0].key == key


def test_bad_schedule_levels_and_threshold_are_refused() -> None:
    with pytest.raises(InputError):
        seq.schedule(0)
    with pytest.raises(InputError):
        seq.schedule(100, growth=1.0)
    with pytest.raises(InputError):
        seq.split_alpha(0.05, 0)
    with pytest.raises(InputError):
        seq.split_alpha(0.05, 2, early_share=0.0)
    with pytest.raises(InputError):
        seq.decide(seq.SequentialState(-1.0, 1.0, alpha_fail=0.05, alpha_pass=0.05), math.nan)
