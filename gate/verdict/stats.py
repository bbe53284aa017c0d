"""Paired statistics for one task: how sure are we that the candidate moved?

Everything here is a pure function of two `TaskRecords` (base, candidate) and
a threshold; no model, no server, no configuration. `gate.verdict` turns the
numbers into PASS / FAIL / INCONCLUSIVE.

Orientation. Decisions are made on the *improvement*,

    improvement = candidate_score - base_score   if higher_is_better
                  base_score - candidate_score   otherwise

so "positive is better" for every metric (accuracy up, perplexity down). The
threshold t is in the same units (`TaskPolicy.threshold`: -margin for a drop
policy, +margin for a gain policy). What we *report* (`delta`, `ci_low`,
`ci_high`) is the raw candidate-minus-base difference in the metric's units.
Every decision is a pair of one-sided tests with analytic p-values:

    p_pass: H0 "improvement <= t" (small: shown above the threshold)
    p_fail: H0 "improvement >= t" (small: shown below the threshold)

and the reported (1 - 2 alpha) interval is the set of thresholds neither test
rejects, so before any multiplicity correction "interval wholly above t"
holds exactly when p_pass < alpha, and "wholly below" when p_fail < alpha.

Binary metrics (`method="paired_exact"`: acc, acc_norm, exact_match, any
MEAN metric whose per-item values are all 0 or 1). Items fall in three
classes: the candidate better (won items), worse (lost items), the same. The
improvement is d = p_g - p_l. Below `ASYMPTOTIC_DISCORDANT` (200) discordant
items the p-values are those of the exact unconditional test (`exact_pvalues`,
Berger & Boos 1994): outcomes are ordered by Tango's (1998) score statistic
Z, and

    p_pass = sup over the null of P(Z >= z_obs) + GAMMA     (null: d <= t)
    p_fail = sup over the null of P(Z <= z_obs) + GAMMA     (null: d >= t)

computed exactly from the multinomial, the unknown discordance rate held to
a 1 - GAMMA Clopper-Pearson set (GAMMA = 1e-4). The level holds exactly at
every n (no large-sample approximation), and the concordant items count:
with no flip in n items a 3-point drop is ruled out once 0.97^n < alpha (the
rule of three), so 50 identical items cannot pass a 3-point margin and 110
can. From 200 discordant items on, Tango's asymptotic score test, whose
exact size there stays at or below 5.2% at alpha 5% (enumerated over n up to
20,000, every flip one way included); below that Tango's test alone errs
(8.8% false FAIL at n=100 with 4% discordance), hence the exact test.

Other per-item metrics (`method="paired_t"`: F1-like means, word/byte
perplexity, bits per byte). Scores are ratios of sums, score = T(R) with
R = sum(num) / sum(den) (gate.evaluate.records). The test is on the ratio scale, where
the estimate is closest to normal (for perplexity: mean negative
log-likelihood per word, not its exponential):

    theta = s e (R_c - q(R_b)),   q(R_b) = T^-1(T(R_b) + s thr(T(R_b)))

(s = +1 when higher is better, e = the sign of T'), so theta > 0 exactly
when the improvement beats the threshold, and a relative margin moves with
the base's own estimate (its noise is part of the standard error; a
threshold fixed at the observed base score would not be). The standard error
is the delta method's (influence values of both ratios, n - 1 in the
denominator); p-values from Student's t with n - 1 degrees of freedom. For a
MEAN metric with an absolute margin this is exactly the paired t-test.
**Minimum information:** a paired_t task needs at least `MIN_CHANGED_ITEMS`
items on which the two models' scores differ; below that the standard error
rests on too few values to trust (measured: tests/verdict/test_calibration.py) and
the task is INCONCLUSIVE with the flag `too_little_information`.

McNemar. For binary metrics `p_any_difference` is McNemar's exact two-sided
test (H0: no difference at all); it is reported, labelled as that, and never
decides anything: the decision needs a margin, McNemar has none.

Unpaired fallback (`method="unpaired_stderr"`). CORPUS aggregations (corpus
BLEU) cannot be split by item, and a record without items cannot be paired:
lm-eval's own standard errors, se = sqrt(se_b^2 + se_c^2), a normal interval
and normal one-sided p-values. It ignores the pairing, so it is conservative;
results say so through `method`.

Non-finite values (`check_finite`). Nothing is dropped: NaN anywhere, a
non-finite denominator, +inf, or a base item at -inf log-likelihood stops the
evaluation (`IncompleteEvaluation`, exit 3) naming the task, the count and the
first items. A candidate item at -inf log-likelihood on a perplexity-like
metric makes the candidate's score infinite: the comparison is
`method="infinite"`, and the verdict is FAIL whatever the margin.
Impossible values (`check_possible`) stop it too: a positive
log-likelihood, a nonzero log-likelihood over 0 words, a value other than
0/1 in a 0/1 metric (acc, acc_norm, exact_match), and a task side with no
items and no score; base and candidate counting different words in the same
document is a pairing error.

Multiplicity (`holm`). A tier (or, with `family: candidate`, a candidate)
fails when any of its tasks fails, so p_fail is Holm-adjusted within the
family. PASS needs every task to pass, an intersection-union test, so p_pass
is not adjusted.

Sample size (`items_needed`, `detectable_improvement`). Normal-approximation
planning numbers: the items that would decide an inconclusive task with 80%
power, and the true improvement this run would have failed with 80% power
("this run could detect a drop of 4.1 points or more").
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from gate.errors import IncompleteEvaluation, PairingError
from gate.evaluate.records import Aggregation, FloatArray, TaskRecords
from gate.verdict.power import detectable_improvement

#: level of the Clopper-Pearson bound on the discordance rate (Berger-Boos);
#: it is added to every exact p-value, so it is also the smallest one
GAMMA = 1e-4
#: from this many discordant items on, binary p-values come from Tango's score test
#: (its exact size stays <= 0.052 at alpha 0.05 there, even with every flip one way)
ASYMPTOTIC_DISCORDANT = 200
#: nuisance values the exact binary test maximises over
EXACT_GRID = 40
#: a clustered task also needs this many clusters with at least one changed item
MIN_CHANGED_CLUSTERS = 20
#: a paired_t task needs at least this many items whose scores differ
MIN_CHANGED_ITEMS = 50
#: doc ids listed per task in messages about non-finite items
MAX_LISTED = 10

Method = Literal["paired_exact", "paired_t", "paired_cluster_t", "unpaired_stderr",
                 "confidence_sequence", "infinite"]
ThresholdFn = Callable[[float], float]


@dataclass(frozen=True)
class Comparison:
    """The statistics of one task for one candidate, before any decision.

    `ci_low`/`ci_high` bound `delta` (raw candidate minus base); `p_fail`,
    `p_pass` are about the oriented improvement versus `threshold`.
    `changed`: items whose scores differ between the two models;
    `detectable`: the improvement this run would have failed with 80% power
    (None when unknown); `infinite_items`: doc ids of candidate items whose
    score is infinite.
    """

    base_score: float
    candidate_score: float
    delta: float
    improvement: float
    threshold: float
    ci_low: float
    ci_high: float
    ci_level: float
    method: Method
    p_any_difference: float | None
    p_fail: float
    p_pass: float
    n: int
    n_used: int
    #: per-item standard deviation of the paired improvement (None if unknown)
    sigma: float | None
    flags: tuple[str, ...] = ()
    changed: int = 0
    detectable: float | None = None
    infinite_items: tuple[int, ...] = field(default=())


def task_seed(seed: int, task: str) -> int:
    """A seed for one task, fixed by the run seed and the task name alone
    (gate.evaluate.rounds orders each task's items with it)."""
    digest = hashlib.blake2b(f"{seed}\x00{task}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def holm(p_values: Sequence[float] | FloatArray) -> FloatArray:
    """Holm's step-down adjustment: sorted p_(i) -> max_{j<=i} min(1, (k-j+1) p_(j)).

    Controls the family-wise error rate at any level under arbitrary
    dependence between tasks; returned in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64)
    k = p.size
    if k == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = (k - np.arange(k)) * p[order]
    adjusted = np.minimum(1.0, np.maximum.accumulate(scaled))
    out = np.empty(k, dtype=np.float64)
    out[order] = adjusted
    return out


def mcnemar_exact(base_right: npt.ArrayLike, candidate_right: npt.ArrayLike) -> float:
    """McNemar's exact two-sided p-value: a binomial test on discordant pairs.

    Tests "any difference at all" (no margin); reported, never decisive.
    """
    b_right = np.asarray(base_right, dtype=bool)
    c_right = np.asarray(candidate_right, dtype=bool)
    b = int(np.sum(b_right & ~c_right))
    c = int(np.sum(~b_right & c_right))
    if b + c == 0:
        return 1.0
    return float(sps.binomtest(c, b + c, 0.5, alternative="two-sided").pvalue)


# ------------------------------------------------------------ binary metrics

def binary_pvalues(won: npt.ArrayLike, lost: npt.ArrayLike, n: npt.ArrayLike,
                   t: float | npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(p_pass, p_fail) of the paired test of a binary metric (vectorised).

    won: items the candidate gets right and the base wrong (oriented: "better"),
    lost: the reverse, n: all items, t: the threshold on d = p_g - p_l.
    H0 for p_pass is d <= t, for p_fail d >= t. Below `ASYMPTOTIC_DISCORDANT`
    discordant items: the exact unconditional test (`exact_pvalues`); from
    there on Tango's score test.
    """
    won_, lost_, n_, t_ = np.broadcast_arrays(np.asarray(won, dtype=np.float64),
                                              np.asarray(lost, dtype=np.float64),
                                              np.asarray(n, dtype=np.float64),
                                              np.asarray(t, dtype=np.float64))
    z = tango_z(won_, lost_, n_, t_)
    p_pass = np.asarray(sps.norm.sf(z), dtype=np.float64)
    p_fail = np.asarray(sps.norm.cdf(z), dtype=np.float64)
    small = (won_ + lost_) < ASYMPTOTIC_DISCORDANT
    if small.any():
        rows = np.column_stack([won_[small], lost_[small], n_[small], t_[small]])
        uniq, inverse = np.unique(rows, axis=0, return_inverse=True)
        exact = np.array([exact_pvalues(int(w), int(lo), int(m), float(x)) for w, lo, m, x in uniq])
        p_pass[small] = exact[inverse.ravel(), 0]
        p_fail[small] = exact[inverse.ravel(), 1]
    return p_pass, p_fail


@functools.lru_cache(maxsize=1 << 16)
def exact_pvalues(won: int, lost: int, n: int, t: float) -> tuple[float, float]:
    """Exact unconditional paired test (Berger & Boos 1994), ordered by Tango's statistic.

    p_pass = sup over the null of P(Z >= z_obs) + GAMMA, p_fail = sup of
    P(Z <= z_obs) + GAMMA, computed exactly: the m discordant items are
    Binomial(n, disc) and, given m, the wins are Binomial(m, pi) with
    pi = (1 + d / disc) / 2; for each m, Z grows with the wins, so the
    region Z >= z_obs is "at least g_up(m) wins". The nuisance disc is
    restricted to a two-sided 1 - GAMMA Clopper-Pearson set (`EXACT_GRID`
    points plus |t|); for each disc the worst null point is d = min(t, disc)
    for PASS and d = max(t, -disc) for FAIL (a null point needs |d| <= disc).
    m beyond `cap` carries less than 1e-12 of the mass at any allowed disc.
    """
    return exact_tail(won, lost, n, t, True), exact_tail(won, lost, n, t, False)


@functools.lru_cache(maxsize=256)  # at most 41 x (cap + 1) floats each: a few MB in all
def _nuisance(m_obs: int, n: int) -> tuple[float, float, int, FloatArray, FloatArray]:
    """(lo, hi, cap, grid, weight) of `exact_pvalues` for m_obs discordant items in n.

    They do not depend on the threshold, so the bisection of `binary_interval`
    (about twenty thresholds per edge) computes them once. weight[i, m] is
    P(m discordant items | disc = grid[i]).
    """
    lo = float(sps.beta.ppf(GAMMA / 2, m_obs, n - m_obs + 1)) if m_obs > 0 else 0.0
    hi = float(sps.beta.ppf(1 - GAMMA / 2, m_obs + 1, n - m_obs)) if m_obs < n else 1.0
    cap = int(min(n, sps.binom.ppf(1 - 1e-12, n, hi) + 5))
    grid = np.linspace(lo, hi, EXACT_GRID)
    weight = sps.binom.pmf(np.arange(cap + 1, dtype=np.float64)[None, :], n, grid[:, None])
    grid.setflags(write=False)  # shared by every caller: read-only
    weight.setflags(write=False)
    return lo, hi, cap, grid, weight


@functools.lru_cache(maxsize=1 << 16)
def exact_tail(won: int, lost: int, n: int, t: float, upper: bool) -> float:
    """One side of `exact_pvalues`: p_pass when upper, else p_fail.

    `binary_interval` bisects one side at a time, so it asks for one tail;
    the verdict asks for both through `exact_pvalues`. Same numbers either way.
    """
    m_obs = won + lost
    lo, hi, cap, grid, weight = _nuisance(m_obs, n)
    g_idx, l_idx = np.triu_indices(cap + 1)  # all (wins, discordant) with wins <= discordant
    wins, disc_items = g_idx.astype(np.float64), l_idx.astype(np.float64)
    z = tango_z(wins, disc_items - wins, n, t)
    z_obs = float(tango_z(won, lost, n, t))
    tol = 1e-9 * max(1.0, abs(z_obs))
    m = np.arange(cap + 1, dtype=np.float64)
    if lo < abs(t) < hi:  # the worst case often sits where the null begins
        at = int(np.searchsorted(grid, abs(t)))
        grid = np.insert(grid, at, abs(t))
        weight = np.insert(weight, at, sps.binom.pmf(m, n, abs(t)), axis=0)
    disc = grid[:, None]
    if upper:  # fewest wins with Z >= z_obs, per m; the worst null point d = min(t, disc)
        bound = np.full(cap + 1, np.inf)
        np.minimum.at(bound, l_idx[z >= z_obs - tol], wins[z >= z_obs - tol])
        d, feasible = np.minimum(t, disc), grid >= -t - 1e-15
    else:  # most wins with Z <= z_obs, per m; the worst null point d = max(t, -disc)
        bound = np.full(cap + 1, -np.inf)
        np.maximum.at(bound, l_idx[z <= z_obs + tol], wins[z <= z_obs + tol])
        d, feasible = np.maximum(t, -disc), grid >= t - 1e-15
    if not feasible.any():  # the bound on disc excludes the whole null: only GAMMA is left
        return GAMMA
    with np.errstate(divide="ignore", invalid="ignore"):
        pi = np.clip(np.where(disc > 0, (1 + d / disc) / 2, 0.5), 0.0, 1.0)
    if upper:
        inner = np.where(np.isfinite(bound), sps.binom.sf(np.nan_to_num(bound, posinf=0) - 1, m, pi), 0.0)
    else:
        inner = np.where(np.isfinite(bound), sps.binom.cdf(np.nan_to_num(bound, neginf=0), m, pi), 0.0)
    tails = (weight * inner).sum(axis=1)
    return min(1.0, float(np.max(tails[feasible])) + GAMMA)


def tango_z(won: npt.ArrayLike, lost: npt.ArrayLike, n: npt.ArrayLike,
            t: npt.ArrayLike) -> FloatArray:
    """Tango's (1998) score statistic for H0: d = t (vectorised).

    (d_hat - t) / sqrt((p_g + p_l - t^2) / n) at the maximum-likelihood
    (p_g, p_l) under p_g - p_l = t: p_l is the positive root of
    2n p^2 - B p - lost t (1 - t) = 0, B = won (1 - t) + lost (1 - 3t) - 2 (n - won - lost) t.
    """
    won_, lost_, n_, t_ = (np.asarray(x, dtype=np.float64) for x in (won, lost, n, t))
    s = n_ - won_ - lost_
    b = won_ * (1 - t_) + lost_ * (1 - 3 * t_) - 2 * s * t_
    p = (b + np.sqrt(np.maximum(b * b + 8 * n_ * lost_ * t_ * (1 - t_), 0.0))) / (4 * n_)
    p = np.clip(p, np.maximum(0.0, -t_), (1 - t_) / 2)
    var = np.maximum(2 * p + t_ - t_ * t_, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = ((won_ - lost_) / n_ - t_) / np.sqrt(var / n_)
    return np.asarray(np.nan_to_num(z, nan=0.0), dtype=np.float64)


@functools.lru_cache(maxsize=1 << 14)
def binary_interval(won: int, lost: int, n: int, alpha: float) -> tuple[float, float]:
    """The (1 - 2 alpha) interval of d: thresholds neither test rejects.

    lower = sup{t : p_pass(t) < alpha}, upper = inf{t : p_fail(t) < alpha}
    (-1 / +1 when no threshold is rejected: the data say nothing there).
    Each edge is first found on Tango's statistic (a vectorised grid), which
    is the answer from `ASYMPTOTIC_DISCORDANT` discordant items on; below,
    the exact test's edge is bracketed from there and bisected to 1e-6.
    """
    edge = 1.0 - 1e-12

    def tango_edge(side: int) -> float:
        def holds(t: FloatArray) -> npt.NDArray[np.bool_]:
            z = tango_z(won, lost, n, t)
            return (sps.norm.sf(z) < alpha) if side == 0 else ~(sps.norm.cdf(z) < alpha)
        ends = holds(np.array([-edge, edge]))
        if side == 0:
            return -1.0 if not ends[0] else 1.0 if ends[1] else _grid_edge(holds, -edge, edge)
        return 1.0 if ends[1] else -1.0 if not ends[0] else _grid_edge(holds, -edge, edge)

    if won + lost >= ASYMPTOTIC_DISCORDANT:
        return tango_edge(0), tango_edge(1)

    def holds(side: int, t: float) -> bool:
        p = exact_tail(won, lost, n, float(t), side == 0)  # below ASYMPTOTIC_DISCORDANT: the exact test
        return bool(p < alpha) if side == 0 else not bool(p < alpha)

    def exact_edge(side: int) -> float:
        if not holds(side, -edge):
            return -1.0
        if holds(side, edge):
            return 1.0
        start = min(max(tango_edge(side), -edge), edge)
        lo, hi, step = start, start, 0.01
        while lo > -edge and holds(side, lo) is False:
            lo = max(-edge, lo - step)
            step *= 2
        step = 0.01
        while hi < edge and holds(side, hi) is True:
            hi = min(edge, hi + step)
            step *= 2
        while hi - lo > 1e-6:
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if holds(side, mid) else (lo, mid)
        return (lo + hi) / 2

    return exact_edge(0), exact_edge(1)


# ------------------------------------------------------------ other metrics

def ratio_pvalues(nb: FloatArray, db: FloatArray, nc: FloatArray, dc: FloatArray,
                  agg: Aggregation, sign: float, thr: ThresholdFn | FloatArray,
                  clusters: npt.NDArray[np.int64] | None = None
                  ) -> tuple[FloatArray, FloatArray]:
    """(p_pass, p_fail) of the paired delta-method t test, one per row.

    nb, db, nc, dc: (rows, n) arrays of the base's and candidate's per-item
    sums (one row per task, or per simulated task in the calibration tests).
    thr: the threshold as a function of the base score, or one absolute
    threshold per row. clusters: per item, a cluster code 0..G-1 (None: every
    item its own): the influence values are summed per cluster and the G
    cluster totals are the independent units (a cluster-robust standard
    error, G/(G-1) small-sample factor; Student's t with G - 1 d.f.).
    See the module docstring: theta = s e (R_c - q(R_b)) on the ratio scale,
    se from both ratios' influence values, Student's t with n - 1 d.f.
    """
    nb, db, nc, dc = (np.atleast_2d(np.asarray(x, dtype=np.float64)) for x in (nb, db, nc, dc))
    n = nb.shape[1]
    r_b = nb.sum(axis=1) / db.sum(axis=1)
    r_c = nc.sum(axis=1) / dc.sum(axis=1)
    psi_b = (nb - r_b[:, None] * db) / db.mean(axis=1)[:, None]
    psi_c = (nc - r_c[:, None] * dc) / dc.mean(axis=1)[:, None]

    fixed = None if callable(thr) else np.broadcast_to(np.asarray(thr, dtype=np.float64), r_b.shape)

    def boundary(r: FloatArray) -> FloatArray:
        score = np.asarray(agg.transform(r), dtype=np.float64)
        if fixed is not None:
            target = score + sign * fixed
        else:
            target = score + sign * np.array([thr(float(x)) for x in score])  # type: ignore[operator]
        return np.array([agg.inverse(float(x)) if math.isfinite(x) else math.nan
                         for x in target])

    h = 1e-6 * np.maximum(1.0, np.abs(r_b))
    q = boundary(r_b)
    slope = (boundary(r_b + h) - boundary(r_b - h)) / (2 * h)
    slope = np.where(np.isfinite(slope), slope, 1.0)
    se_sign = sign * agg.direction
    psi = se_sign * (psi_c - slope[:, None] * psi_b)
    units = psi if clusters is None else _cluster_totals(psi, clusters)
    g = units.shape[1]
    se = (np.sqrt(g / (g - 1) * (units**2).sum(axis=1)) / n) if g > 1 else np.full(r_b.shape, np.nan)
    theta = se_sign * (r_c - q)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = theta / se
        # Hall's (1992) monotone transformation removes the studentized
        # statistic's skewness (a mixture of unchanged items and a few large
        # shifts is very skewed); gamma is the skewness of the influence values
        m2 = (units**2).mean(axis=1)
        gamma = np.where(m2 > 0, (units**3).mean(axis=1) / m2**1.5, 0.0)
        root = math.sqrt(g)
        z = t + gamma * t**2 / (3 * root) + gamma**2 * t**3 / (27 * g) + gamma / (6 * root)
    p_pass = np.asarray(sps.t.sf(z, max(g - 1, 1)), dtype=np.float64)
    p_fail = np.asarray(sps.t.cdf(z, max(g - 1, 1)), dtype=np.float64)
    undecidable = ~np.isfinite(se) | (se <= 0)
    p_pass = np.where(undecidable, 1.0, p_pass)
    p_fail = np.where(undecidable, 1.0, p_fail)
    # the threshold lies outside the metric's range (a required fall in perplexity
    # larger than the base's perplexity): it can never be met
    outside = np.isnan(q)
    return np.where(outside, 1.0, p_pass), np.where(outside, 0.0, p_fail)


def _cluster_totals(psi: FloatArray, clusters: npt.NDArray[np.int64]) -> FloatArray:
    """Per row, the sum of the influence values of each cluster (rows x G)."""
    g = int(clusters.max()) + 1
    onehot = np.zeros((clusters.size, g))
    onehot[np.arange(clusters.size), clusters] = 1.0
    return np.asarray(psi @ onehot, dtype=np.float64)


def cluster_codes(labels: Sequence[str] | None) -> npt.NDArray[np.int64] | None:
    """Cluster labels as codes 0..G-1 (None when there are none)."""
    if labels is None:
        return None
    return np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)[1].astype(np.int64)


def changed_items(nb: FloatArray, db: FloatArray, nc: FloatArray, dc: FloatArray) -> FloatArray:
    """Per row: the items whose scores differ between the two models."""
    return np.asarray(((np.atleast_2d(nb) != np.atleast_2d(nc))
                       | (np.atleast_2d(db) != np.atleast_2d(dc))).sum(axis=1))


def _ratio_interval(nb: FloatArray, db: FloatArray, nc: FloatArray, dc: FloatArray,
                    agg: Aggregation, sign: float, alpha: float, improvement: float,
                    sigma: float, clusters: npt.NDArray[np.int64] | None = None
                    ) -> tuple[float, float]:
    """(1 - 2 alpha) interval of the improvement: the absolute thresholds the
    two tests do not reject, found on a grid refined around each edge."""
    width = 60.0 * max(sigma, 1e-12) / math.sqrt(max(nb.size, 1)) + 1e-9 * max(1.0, abs(improvement))

    def rejects(side: int, a: FloatArray) -> npt.NDArray[np.bool_]:
        rows = a.size
        tb, tdb, tc, tdc = (np.broadcast_to(x, (rows, x.size)) for x in (nb, db, nc, dc))
        return ratio_pvalues(tb, tdb, tc, tdc, agg, sign, a, clusters)[side] < alpha

    def passes(a: FloatArray) -> npt.NDArray[np.bool_]:
        return rejects(0, a)

    def not_fails(a: FloatArray) -> npt.NDArray[np.bool_]:
        return ~rejects(1, a)

    ends = np.array([improvement - width, improvement + width])
    low = _grid_edge(passes, ends[0], improvement) if passes(ends[:1])[0] else -math.inf
    high = _grid_edge(not_fails, improvement, ends[1]) if not not_fails(ends[1:])[0] else math.inf
    return low, high


def _grid_edge(holds: Callable[[FloatArray], npt.NDArray[np.bool_]], lo: float, hi: float, *,
               steps: int = 5, points: int = 33) -> float:
    """Where a monotone predicate (True at lo, False at hi) turns False, by a
    vectorised grid refined `steps` times: precision (hi - lo) / (points - 1)^steps."""
    for _ in range(steps):
        grid = np.linspace(lo, hi, points)
        ok = holds(grid)
        last = int(np.flatnonzero(ok)[-1]) if ok.any() else 0
        lo, hi = float(grid[last]), float(grid[min(last + 1, points - 1)])
    return (lo + hi) / 2.0


# ------------------------------------------------------------------ the API

@dataclass(frozen=True)
class CompareJob:
    """One task to compare: paired records and the threshold in improvement units.

    `threshold` is a number, or a function of the base score (a relative
    margin: the paired_t test then carries the base's own noise); `family`
    is the number of tasks its FAIL decision is corrected over (planning
    numbers only).
    """

    base: TaskRecords
    candidate: TaskRecords
    threshold: float | ThresholdFn
    alpha: float = 0.05
    family: int = 1

    def threshold_at(self, base_score: float) -> float:
        thr = self.threshold
        return float(thr(base_score)) if callable(thr) else float(thr)

    def threshold_fn(self) -> ThresholdFn:
        thr = self.threshold
        return thr if callable(thr) else (lambda _b: float(thr))


def compare(base: TaskRecords, candidate: TaskRecords, threshold: float | ThresholdFn, *,
            alpha: float = 0.05, family: int = 1) -> Comparison:
    """The paired comparison when items can be paired, else the unpaired fallback."""
    return compare_many([CompareJob(base, candidate, threshold, alpha, family)])[0]


def compare_many(jobs: Sequence[CompareJob]) -> list[Comparison]:
    """Compare many tasks (a candidate's whole suite); each on its own numbers."""
    out = []
    for job in jobs:
        _check_same_metric(job.base, job.candidate)
        _check_has_evidence(job.base, job.candidate)
        if (job.base.aggregation is Aggregation.CORPUS or job.base.n == 0
                or job.candidate.n == 0):
            out.append(compare_unpaired(job.base, job.candidate, job.threshold_at(
                job.base.reported_score if job.base.reported_score is not None else math.nan),
                alpha=job.alpha))
        else:
            out.append(compare_paired(job))
    return out


def check_finite(base: TaskRecords, candidate: TaskRecords) -> list[int]:
    """Stop on values that cannot be judged; return the candidate's infinite items.

    Raises IncompleteEvaluation for NaN anywhere, a non-finite or negative
    denominator, +inf, any non-finite value of a MEAN metric, or a base item
    at -inf. Returns the doc ids of candidate items at -inf log-likelihood on
    a ratio metric (its score is then infinite: a verdict, not an error).
    """
    ratio = base.aggregation in (Aggregation.WEIGHTED_PERPLEXITY, Aggregation.BITS_PER_BYTE)
    for who, rec in (("base", base), ("candidate", candidate)):
        bad = ~np.isfinite(rec.den) | (rec.den < 0) | np.isnan(rec.num) | (rec.num == np.inf)
        if not ratio or who == "base":
            bad |= ~np.isfinite(rec.num)
        if bad.any():
            what = ("NaN or infinite" if not ratio else
                    "NaN, infinite or -inf log-likelihood" if who == "base" else "NaN or +inf")
            raise IncompleteEvaluation(
                f"task {base.task}: {int(bad.sum())} of {rec.n} {who} items have {what} "
                f"{base.metric} values (doc ids {_listed(rec, bad)}); no verdict is issued on the rest",
                fix="rerun the evaluation; if it repeats, inspect those items in the "
                    "per-sample output (out/logs/) and fix the task or the engine")
    if not ratio:
        return []
    inf = np.flatnonzero(candidate.num == -np.inf)
    return [candidate.keys[i].doc_id for i in inf]


#: Metrics whose per-item value is 0 or 1 by definition (lm-eval's multiple-choice and
#: exact-match metrics): any other value is an engine or parsing fault, not a score.
ZERO_ONE_METRICS = frozenset({"acc", "acc_norm", "acc_mutual_info", "exact_match"})
#: Ratio metrics whose denominator counts the document itself (words, bytes), the same
#: for every model; a token count may differ between tokenizers and is not checked.
_DOCUMENT_UNITS = frozenset({"word_perplexity", "byte_perplexity", "bits_per_byte"})


def check_possible(base: TaskRecords, candidate: TaskRecords) -> None:
    """Stop on values no model can produce (after `check_finite`): never a smaller n.

    IncompleteEvaluation (exit 3), naming the task, the side and the first
    items, for a perplexity-like item with a positive log-likelihood (a
    probability above 1) or with no words but a nonzero log-likelihood, and
    for a value other than 0 or 1 in a 0/1 metric (which would otherwise move
    the whole task from the exact test to the t test in silence). A
    PairingError when base and candidate count a different number of words or
    bytes in the same document: they did not score the same text."""
    ratio = base.aggregation in (Aggregation.WEIGHTED_PERPLEXITY, Aggregation.BITS_PER_BYTE)
    for who, rec in (("base", base), ("candidate", candidate)):
        checks: tuple[tuple[npt.NDArray[np.bool_], str], ...]
        if ratio:
            checks = ((rec.num > 0, "a positive log-likelihood (a probability above 1)"),
                      ((rec.den == 0) & (rec.num != 0), "no words or bytes but a nonzero log-likelihood"))
        elif base.metric in ZERO_ONE_METRICS and base.aggregation is Aggregation.MEAN:
            checks = ((~np.isin(rec.num, (0.0, 1.0)) | (rec.den != 1.0),
                       f"a {base.metric} other than 0 or 1 (a 0/1 metric)"),)
        else:
            checks = ()
        for bad, what in checks:
            if bad.any():
                raise IncompleteEvaluation(
                    f"task {base.task}: {int(bad.sum())} of {rec.n} {who} items have {what} "
                    f"(doc ids {_listed(rec, bad)}); no model produces that, so no verdict is issued",
                    fix="inspect those items in the per-sample output (out/logs/): the engine's "
                        "log-probabilities or the task's metric are wrong")
    if ratio and base.metric in _DOCUMENT_UNITS:
        differ = base.den != candidate.den
        if differ.any():
            raise PairingError(
                f"task {base.task}: {int(differ.sum())} documents have a different number of words or "
                f"bytes for base and candidate (doc ids {_listed(base, differ)}): they did not score "
                "the same text",
                key=base.task, fix="evaluate both models with the same task version and documents")


def compare_paired(job: CompareJob) -> Comparison:
    """Exact paired test for binary metrics, delta-method t otherwise (module doc)."""
    base, candidate, alpha = job.base, job.candidate, job.alpha
    _check_pairing(base, candidate)
    infinite = check_finite(base, candidate)
    check_possible(base, candidate)
    agg = base.aggregation
    sign = 1.0 if base.higher_is_better else -1.0
    nb, db, nc, dc = base.num, base.den, candidate.num, candidate.den
    score_b = float(agg.score(nb, db))
    threshold = job.threshold_at(score_b)
    if not (math.isfinite(score_b) and math.isfinite(threshold)):
        raise IncompleteEvaluation(
            f"task {base.task}: the base score ({score_b}) or the threshold ({threshold}) "
            "is not a finite number, so no margin can be applied",
            fix="check the base model's evaluation of this task and the task's margin in "
                "the thresholds file")
    changed = int(np.count_nonzero((nb != nc) | (db != dc)))
    level = 1.0 - 2.0 * alpha
    if infinite:
        return Comparison(score_b, math.inf, math.inf, -math.inf, threshold, math.inf, math.inf,
                          level, "infinite", None, 0.0, 1.0, base.n, base.n, None,
                          ("candidate_infinite",), changed, None, tuple(infinite))
    score_c = float(agg.score(nc, dc))
    delta = score_c - score_b
    improvement = sign * delta
    codes = cluster_codes(base.clusters)
    clustered = codes is not None and int(codes.max()) + 1 < base.n
    zero_one = (agg is Aggregation.MEAN and bool(np.isin(nb, (0.0, 1.0)).all())
                and bool(np.isin(nc, (0.0, 1.0)).all()) and bool(np.all(db == 1.0))
                and bool(np.all(dc == 1.0)))
    p_any = None
    if zero_one:
        right_b = nb > 0.5 if base.higher_is_better else nb < 0.5
        right_c = nc > 0.5 if base.higher_is_better else nc < 0.5
        p_any = mcnemar_exact(right_b, right_c)
    if zero_one and not clustered:
        won = int(np.sum(right_c & ~right_b))
        lost = int(np.sum(right_b & ~right_c))
        n = base.n
        pp, pf = binary_pvalues(won, lost, n, threshold)
        lo, hi = binary_interval(won, lost, n, alpha)
        disc = (won + lost) / n
        sigma = math.sqrt(max(disc - improvement**2, 0.0))
        detectable = detectable_improvement(threshold, disc, n, alpha=alpha, k=job.family,
                                            binary=True)
        ci = (lo, hi) if base.higher_is_better else (-hi, -lo)
        return Comparison(score_b, score_c, delta, improvement, threshold, ci[0], ci[1], level,
                          "paired_exact", p_any, float(pf[()]),
                          float(pp[()]), n, n, sigma, (), changed, detectable)
    use = codes if clustered else None
    sigma = _improvement_sigma(nb, db, nc, dc, agg, sign, use)
    flags: list[str] = []
    enough = changed >= MIN_CHANGED_ITEMS
    if clustered and use is not None:
        moved = np.unique(use[(nb != nc) | (db != dc)]).size
        enough = enough and moved >= MIN_CHANGED_CLUSTERS
    if not enough:
        flags.append("too_little_information")
        p_pass, p_fail = 1.0, 1.0
        lo, hi = -math.inf, math.inf
    else:
        pp_, pf_ = ratio_pvalues(nb, db, nc, dc, agg, sign, job.threshold_fn(), use)
        p_pass, p_fail = float(pp_[0]), float(pf_[0])
        lo, hi = _ratio_interval(nb, db, nc, dc, agg, sign, alpha, improvement, sigma, use)
    detectable = (detectable_improvement(threshold, sigma, base.n, alpha=alpha, k=job.family)
                  if enough else None)
    ci = (lo, hi) if base.higher_is_better else (-hi, -lo)
    return Comparison(score_b, score_c, delta, improvement, threshold, ci[0], ci[1], level,
                      "paired_cluster_t" if clustered else "paired_t", p_any, p_fail, p_pass,
                      base.n, base.n, sigma, tuple(flags), changed, detectable)


def compare_unpaired(base: TaskRecords, candidate: TaskRecords, threshold: float, *,
                     alpha: float = 0.05) -> Comparison:
    """Normal interval from lm-eval's reported stderrs, ignoring the pairing.

    Used for CORPUS aggregations and records without items. Without both
    stderrs nothing can be decided: p_fail = p_pass = 1 and flag "no_stderr".
    """
    _check_same_metric(base, candidate)
    score_b = _reported_or_recomputed(base)
    score_c = _reported_or_recomputed(candidate)
    sign = 1.0 if base.higher_is_better else -1.0
    delta = score_c - score_b
    improvement = sign * delta
    se_b, se_c = base.reported_stderr, candidate.reported_stderr
    n = max(base.n, candidate.n)
    if (se_b is None or se_c is None or not math.isfinite(se_b) or not math.isfinite(se_c)
            or not math.isfinite(delta) or not math.isfinite(threshold)):
        return Comparison(score_b, score_c, delta, improvement, threshold, math.nan, math.nan,
                          1.0 - 2.0 * alpha, "unpaired_stderr", None, 1.0, 1.0, n, 0, None,
                          ("no_stderr",))
    se = math.sqrt(se_b**2 + se_c**2)
    z = float(sps.norm.ppf(1.0 - alpha))
    lo, hi = improvement - z * se, improvement + z * se
    if se > 0:
        p_fail = float(sps.norm.sf((threshold - improvement) / se))
        p_pass = float(sps.norm.cdf((threshold - improvement) / se))
    else:  # a point mass: decided by the comparison itself
        p_fail = 0.0 if improvement < threshold else 1.0
        p_pass = 0.0 if improvement > threshold else 1.0
    ci_low, ci_high = (lo, hi) if base.higher_is_better else (-hi, -lo)
    sigma = se * math.sqrt(n) if n > 0 else None
    return Comparison(score_b, score_c, delta, improvement, threshold, ci_low, ci_high,
                      1.0 - 2.0 * alpha, "unpaired_stderr", None, p_fail, p_pass, n, n, sigma)


# ------------------------------------------------------------- internals

def _improvement_sigma(nb: FloatArray, db: FloatArray, nc: FloatArray, dc: FloatArray,
                       agg: Aggregation, sign: float,
                       clusters: npt.NDArray[np.int64] | None = None) -> float:
    """Per-item SD of the improvement on the metric's scale (delta method); with
    clusters the effective one (design effect included): se * sqrt(n)."""
    def influence(num: FloatArray, den: FloatArray) -> FloatArray:
        r = float(np.sum(num) / np.sum(den))
        h = 1e-6 * max(1.0, abs(r))
        slope = (float(agg.transform(r + h)) - float(agg.transform(r - h))) / (2 * h)
        return slope * (num - r * den) / float(np.mean(den))

    psi = sign * (influence(nc, dc) - influence(nb, db))
    if clusters is None:
        return float(np.sqrt(np.mean(psi**2)))
    totals = _cluster_totals(psi[None, :], clusters)[0]
    g = totals.size
    return float(np.sqrt(g / max(g - 1, 1) * np.sum(totals**2) / psi.size))


def _reported_or_recomputed(rec: TaskRecords) -> float:
    if rec.aggregation is not Aggregation.CORPUS and rec.n > 0:
        return rec.score
    return float(rec.reported_score) if rec.reported_score is not None else math.nan


def _check_same_metric(base: TaskRecords, candidate: TaskRecords) -> None:
    if (base.metric, base.higher_is_better, base.aggregation) != (
            candidate.metric, candidate.higher_is_better, candidate.aggregation):
        raise PairingError(
            f"base measures {base.metric} ({base.aggregation.value}) but the candidate "
            f"measures {candidate.metric} ({candidate.aggregation.value})",
            key=base.task, fix="evaluate both models with the same task version and metric")


def _listed(rec: TaskRecords, mask: npt.NDArray[np.bool_]) -> str:
    """The doc ids of the first MAX_LISTED items under `mask`, "[3, 17]" or "[...] ..."."""
    ids = [rec.keys[i].doc_id for i in np.flatnonzero(mask)[:MAX_LISTED]]
    return f"{ids}{' ...' if int(mask.sum()) > MAX_LISTED else ''}"


def _check_has_evidence(base: TaskRecords, candidate: TaskRecords) -> None:
    """A side with no items and no finite score of lm-eval's own has nothing to judge:
    an error (exit 3), never an INCONCLUSIVE that `inconclusive: warn` would pass."""
    for who, rec in (("base", base), ("candidate", candidate)):
        if rec.n == 0 and (rec.reported_score is None or not math.isfinite(rec.reported_score)):
            raise IncompleteEvaluation(
                f"task {base.task}: the {who} has no items and no score, so there is nothing to judge",
                fix="check the task's item selection (samples:, split:) and that the evaluation "
                    "ran with per-sample output (log_samples)")


def _check_pairing(base: TaskRecords, candidate: TaskRecords) -> None:
    if base.keys != candidate.keys or base.num.size != candidate.num.size:
        raise PairingError(
            f"base and candidate items differ ({base.n} vs {candidate.n} items, "
            "or a different order or content)",
            key=base.task,
            fix="pair the items (same doc_id and doc_hash, same order) before comparing")
