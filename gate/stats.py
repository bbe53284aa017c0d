"""Paired statistics for one task: how sure are we that the candidate moved?

Everything here is a pure function of two `TaskRecords` (base, candidate) and
a threshold; no model, no server, no configuration. `gate.verdict` turns the
numbers into PASS / FAIL / INCONCLUSIVE.

Orientation. Decisions are made on the *improvement*,

    improvement = candidate_score - base_score   if higher_is_better
                  base_score - candidate_score   otherwise

so "positive is better" for every metric (accuracy up, perplexity down). The
threshold is in the same units (`TaskPolicy.threshold`: -margin for a drop
policy, +margin for a gain policy). What we *report* (`delta`, `ci_low`,
`ci_high`) is the raw candidate-minus-base difference in the metric's units.

Paired bootstrap (`method="paired_bootstrap"`). Items are resampled jointly
for base and candidate (the same item indices for both, so the per-item
correlation between two models answering the same question is kept, which is
what makes paired tests several times more sensitive than unpaired ones). On
each resample both scores are recomputed exactly as lm-eval does,
`transform(sum(num) / sum(den))`, so ratio metrics such as word_perplexity are
resampled correctly rather than averaged per item. Two implementations, both
exact in distribution:

* few distinct paired tuples (binary metrics: the per-item difference takes at
  most three values; any metric with at most `MAX_DISTINCT_TUPLES` distinct
  `(num_b, den_b, num_c, den_c)` tuples): a resample of n items is a
  multinomial draw of n over the k distinct tuples, so we draw B x k counts
  instead of B x n indices;
* otherwise: item indices in chunks of about `CHUNK_ELEMENTS` (int16 when
  n < 32768), the centred columns gathered in float32 and summed (centring
  keeps float32 sums accurate to ~1e-6 of the bootstrap spread); memory stays
  bounded whatever n and B are. Tasks of a suite with the same number of
  items share each chunk of indices (`compare_many`), which halves the cost
  of a suite: drawing indices is most of the work.

The generator is numpy's `Generator(PCG64(...))`; `task_seed` derives the
seeds from the run seed and the task name (multinomial draws) or the item
count (shared index chunks), so results never depend on the order tasks are
listed in, nor on the number of threads.

Interval and p-values. With alpha the policy's level, the reported interval is
the two-sided (1 - 2 alpha) percentile interval of the improvement; its
endpoints are the one-sided alpha bounds. The one-sided bootstrap p-values are

    p_fail = (1 + #{improvement* >= threshold}) / (B + 1)
    p_pass = (1 + #{improvement* <= threshold}) / (B + 1)

and the interval endpoints are chosen as order statistics such that, before
any multiplicity correction, "lower bound above the threshold" holds exactly
when p_pass < alpha and "upper bound below the threshold" exactly when
p_fail < alpha (ties within `TIE_TOLERANCE` count against both). The
threshold is fixed at its value for the observed base score (a relative
margin is not re-derived per resample).

McNemar. For binary metrics `p_value` is McNemar's exact test (two-sided
binomial test on the discordant pairs, H0: no difference); it is reported,
not used for the decision (the decision needs a margin, McNemar has none).

Unpaired fallback (`method="unpaired_stderr"`). CORPUS aggregations (corpus
BLEU) cannot be resampled by item, and a record without items cannot be
paired: we use lm-eval's own standard errors, se = sqrt(se_b^2 + se_c^2), a
normal interval and normal one-sided p-values. It ignores the pairing, so it
is conservative; results say so through `method`.

Multiplicity (`holm`). The FAIL decisions of a tier form a family: a tier
fails when any of its tasks fails, so p_fail is Holm-adjusted within the tier
(controls the family-wise chance of a false FAIL at alpha). PASS needs every
task of a tier to pass, which is an intersection-union test: each task at
level alpha already gives a tier-level PASS error of at most alpha, so p_pass
is not adjusted.

Sample size (`items_needed`). For an inconclusive task, the number of items
that would decide it with 80% power,

    n* = ceil(((z_{1 - alpha/k} + z_{0.8}) * sigma / distance)^2)

with sigma the per-item standard deviation of the paired improvement (the
influence-function value; for a binary metric sigma^2 = discordance rate -
mean difference^2), k the number of tasks in the tier (Bonferroni, so the
promise also holds under Holm, which is never less powerful) and `distance`
the design effect's distance from the threshold (see gate.verdict).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from gate.errors import PairingError
from gate.records import Aggregation, FloatArray, TaskRecords

DEFAULT_N_BOOT = 10_000
#: use multinomial counts over distinct paired tuples up to this many tuples
MAX_DISTINCT_TUPLES = 64
#: indices drawn per chunk of the general bootstrap: bounds its memory
#: (250,000 x (2-byte index + up to 16 bytes gathered) < 5 MB per thread) and
#: keeps a chunk in cache; measured 30% faster than 2.5e6 (bench_compare.py)
CHUNK_ELEMENTS = 250_000
#: relative tolerance under which an improvement equals the threshold
TIE_TOLERANCE = 1e-9

Method = Literal["paired_bootstrap", "unpaired_stderr", "confidence_sequence"]


@dataclass(frozen=True)
class Comparison:
    """The statistics of one task for one candidate, before any decision.

    `ci_low`/`ci_high` bound `delta` (raw candidate minus base); `p_fail`,
    `p_pass` are about the oriented improvement versus `threshold`.
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
    p_value: float | None
    p_fail: float
    p_pass: float
    n: int
    n_used: int
    #: per-item standard deviation of the paired improvement (None if unknown)
    sigma: float | None
    flags: tuple[str, ...] = ()


def task_seed(seed: int, task: str) -> int:
    """A seed for one task, fixed by the run seed and the task name alone."""
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

    b = items the base got right and the candidate wrong, c = the reverse;
    under H0 (no difference) c ~ Binomial(b + c, 1/2). No discordant pairs
    means no evidence of any difference: p = 1.
    """
    b_right = np.asarray(base_right, dtype=bool)
    c_right = np.asarray(candidate_right, dtype=bool)
    b = int(np.sum(b_right & ~c_right))
    c = int(np.sum(~b_right & c_right))
    if b + c == 0:
        return 1.0
    return float(sps.binomtest(c, b + c, 0.5, alternative="two-sided").pvalue)


def items_needed(sigma: float, distance: float, *, alpha: float, k: int = 1,
                 power: float = 0.8) -> int | None:
    """Items for a one-sided level alpha/k test to reach `power` at `distance`.

    None when it cannot be computed (no per-item variation, zero distance).
    """
    if not (math.isfinite(sigma) and math.isfinite(distance)) or sigma <= 0 or distance <= 0:
        return None
    z = float(sps.norm.ppf(1.0 - alpha / max(k, 1)) + sps.norm.ppf(power))
    return max(1, math.ceil((z * sigma / distance) ** 2))


@dataclass(frozen=True)
class CompareJob:
    """One task to compare: paired records and the threshold in improvement units."""

    base: TaskRecords
    candidate: TaskRecords
    threshold: float
    alpha: float = 0.05


def compare(base: TaskRecords, candidate: TaskRecords, threshold: float, *,
            alpha: float = 0.05, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> Comparison:
    """The paired bootstrap when items can be paired, else the unpaired fallback."""
    return compare_many([CompareJob(base, candidate, threshold, alpha)], n_boot=n_boot,
                        seed=seed)[0]


def compare_many(jobs: Sequence[CompareJob], *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                 workers: int = 1) -> list[Comparison]:
    """Compare many tasks at once (a candidate's whole suite).

    Batching is what makes a 50-task suite fast: tasks that need index
    resampling and have the same number of items share each chunk of drawn
    indices (common random numbers: every task still gets an exact bootstrap
    of its own items, only the Monte Carlo noise is shared), and chunks are
    spread over `workers` threads (numpy releases the GIL while drawing,
    gathering and summing). Randomness is fixed by the run seed alone:
    multinomial draws by `task_seed(seed, task)`, index chunk c of the tasks
    with n items by `task_seed(seed, "items:n")` and c. So results depend
    neither on task order nor on `workers`.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    results: list[Comparison | None] = [None] * len(jobs)
    paired: list[_Paired] = []
    for i, job in enumerate(jobs):
        _check_same_metric(job.base, job.candidate)
        if (job.base.aggregation is Aggregation.CORPUS or job.base.n == 0
                or job.candidate.n == 0):
            results[i] = compare_unpaired(job.base, job.candidate, job.threshold, alpha=job.alpha)
        else:
            paired.append(_Paired.prepare(i, job))
    _bootstrap(paired, n_boot=n_boot, seed=seed, workers=workers)
    for task in paired:
        results[task.index] = task.finish(n_boot)
    return [r for r in results if r is not None]


def compare_paired(base: TaskRecords, candidate: TaskRecords, threshold: float, *,
                   alpha: float = 0.05, n_boot: int = DEFAULT_N_BOOT,
                   seed: int = 0) -> Comparison:
    """Paired bootstrap interval and one-sided p-values (see module docstring)."""
    _check_same_metric(base, candidate)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    task = _Paired.prepare(0, CompareJob(base, candidate, threshold, alpha))
    _bootstrap([task], n_boot=n_boot, seed=seed, workers=1)
    return task.finish(n_boot)


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
    flags: list[str] = []
    n = max(base.n, candidate.n)
    if (se_b is None or se_c is None or not math.isfinite(se_b) or not math.isfinite(se_c)
            or not math.isfinite(delta)):
        flags.append("no_stderr")
        return Comparison(score_b, score_c, delta, improvement, threshold, math.nan, math.nan,
                          1.0 - 2.0 * alpha, "unpaired_stderr", None, 1.0, 1.0, n, 0, None,
                          tuple(flags))
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
                      1.0 - 2.0 * alpha, "unpaired_stderr", None, p_fail, p_pass, n, n, sigma,
                      tuple(flags))


@dataclass
class _Paired:
    """One paired task on its way through the bootstrap.

    `mode`: "zero" (identical models: every resample agrees exactly),
    "mean" (unit denominators, MEAN: one column, the per-item difference),
    "ratio" (columns num_b, den_b, num_c[, den_c]), "empty" (no usable items).
    """

    index: int
    job: CompareJob
    nb: FloatArray
    db: FloatArray
    nc: FloatArray
    dc: FloatArray
    flags: list[str]
    mode: str
    cols: FloatArray
    same_den: bool
    sums: FloatArray | None = None

    @property
    def n_used(self) -> int:
        return int(self.nb.size)

    @classmethod
    def prepare(cls, index: int, job: CompareJob) -> _Paired:
        base, candidate = job.base, job.candidate
        _check_pairing(base, candidate)
        raw = np.column_stack([base.num, base.den, candidate.num, candidate.den])
        keep = np.all(np.isfinite(raw), axis=1)
        flags = [] if keep.all() else ["dropped_nonfinite_items"]
        nb, db, nc, dc = (np.ascontiguousarray(raw[keep, j]) for j in range(4))
        same_den = bool(np.array_equal(db, dc))
        if nb.size == 0:
            mode, cols = "empty", np.zeros((0, 1))
            flags.append("no_items")
        elif same_den and np.array_equal(nb, nc):
            mode, cols = "zero", np.zeros((0, 1))
        elif (base.aggregation is Aggregation.MEAN and bool(np.all(db == 1.0))
              and bool(np.all(dc == 1.0))):
            mode, cols = "mean", (nc - nb)[:, None]  # mean(c) - mean(b) = mean(c - b)
        else:
            mode = "ratio"
            cols = np.column_stack([nb, db, nc] if same_den else [nb, db, nc, dc])
        return cls(index, job, nb, db, nc, dc, flags, mode, cols, same_den)

    def improvements(self, n_boot: int) -> FloatArray:
        """The B bootstrap replicates of the oriented improvement."""
        sign = 1.0 if self.job.base.higher_is_better else -1.0
        if self.mode == "zero":
            return np.zeros(n_boot)
        if self.mode == "empty" or self.sums is None:
            return np.full(n_boot, np.nan)
        if self.mode == "mean":
            return np.asarray(sign * self.sums[:, 0] / self.n_used, dtype=np.float64)
        agg = self.job.base.aggregation
        s = self.sums
        den_c = s[:, 1] if self.same_den else s[:, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            score_b = np.asarray(agg.transform(s[:, 0] / s[:, 1]), dtype=np.float64)
            score_c = np.asarray(agg.transform(s[:, 2] / den_c), dtype=np.float64)
        return np.asarray(sign * (score_c - score_b), dtype=np.float64)

    def finish(self, n_boot: int) -> Comparison:
        base, candidate, alpha = self.job.base, self.job.candidate, self.job.alpha
        threshold = self.job.threshold
        agg = base.aggregation
        sign = 1.0 if base.higher_is_better else -1.0
        score_b = float(agg.score(self.nb, self.db))
        score_c = float(agg.score(self.nc, self.dc))
        tol = TIE_TOLERANCE * max(1.0, abs(score_b), abs(score_c), abs(threshold))
        p_fail, p_pass, lo, hi = _bootstrap_decision_numbers(self.improvements(n_boot),
                                                             threshold, alpha, tol)
        p_value = None
        if base.binary and candidate.binary:
            right_b = self.nb > 0.5 if base.higher_is_better else self.nb < 0.5
            right_c = self.nc > 0.5 if base.higher_is_better else self.nc < 0.5
            p_value = mcnemar_exact(right_b, right_c)
        ci_low, ci_high = (lo, hi) if base.higher_is_better else (-hi, -lo)
        sigma = (_improvement_sigma(self.nb, self.db, self.nc, self.dc, agg, sign)
                 if self.n_used else None)
        return Comparison(
            base_score=score_b, candidate_score=score_c, delta=score_c - score_b,
            improvement=sign * (score_c - score_b), threshold=threshold,
            ci_low=float(ci_low), ci_high=float(ci_high), ci_level=1.0 - 2.0 * alpha,
            method="paired_bootstrap", p_value=p_value, p_fail=p_fail, p_pass=p_pass,
            n=base.n, n_used=self.n_used, sigma=sigma, flags=tuple(self.flags))


def _bootstrap(tasks: Sequence[_Paired], *, n_boot: int, seed: int, workers: int) -> None:
    """Fill each task's `sums`: B resampled column sums (see `compare_many`)."""
    by_items: dict[int, list[_Paired]] = {}
    for task in tasks:
        if task.mode not in ("mean", "ratio"):
            continue
        uniq, counts = np.unique(task.cols, axis=0, return_counts=True)
        if uniq.shape[0] <= MAX_DISTINCT_TUPLES:
            # a resample is a multinomial draw of n over the distinct tuples
            rng = np.random.Generator(np.random.PCG64(task_seed(seed, task.job.base.task)))
            draws = rng.multinomial(task.n_used, counts / task.n_used, size=n_boot)
            task.sums = draws.astype(np.float64) @ uniq
        else:
            by_items.setdefault(task.n_used, []).append(task)
    for n, group in by_items.items():
        _index_bootstrap(n, group, n_boot=n_boot, seed=task_seed(seed, f"items:{n}"),
                         workers=workers)


def _index_bootstrap(n: int, group: Sequence[_Paired], *, n_boot: int, seed: int,
                     workers: int) -> None:
    """Chunked index resampling for tasks with n items, sharing each chunk of indices.

    Columns are centred and gathered in float32 (the centre is added back in
    float64); rows of 2-4 columns are gathered as one 8- or 16-byte element
    and summed by one batched BLAS product. Memory: one chunk of about
    `CHUNK_ELEMENTS` indices plus its gathered values per thread.
    """
    index_type = np.int16 if n < 2**15 else np.int64
    rows = max(1, CHUNK_ELEMENTS // n)
    starts = list(range(0, n_boot, rows))
    ones = np.ones((1, n), dtype=np.float32)
    prepared = []
    for task in group:
        m = task.cols.shape[1]
        centre = task.cols.mean(axis=0)
        centred = (task.cols - centre).astype(np.float32)
        if m == 1:
            element = np.ascontiguousarray(centred[:, 0])
            width = 1
        else:
            width = 2 if m <= 2 else 4
            packed = np.zeros((n, width), dtype=np.float32)
            packed[:, :m] = centred
            element = packed.view(np.float64 if width == 2 else np.complex128).ravel()
        out = np.empty((n_boot, m), dtype=np.float64)
        prepared.append((task, element, width, m, centre, out))

    def run(chunk_ids: Sequence[int]) -> None:
        for c in chunk_ids:
            start = starts[c]
            r = min(rows, n_boot - start)
            sequence = np.random.SeedSequence(seed, spawn_key=(c,))
            rng = np.random.Generator(np.random.PCG64(sequence))
            idx = rng.integers(0, n, size=(r, n), dtype=index_type)
            for _, element, width, m, _, out in prepared:
                if width == 1:
                    out[start:start + r, 0] = element[idx].sum(axis=1)
                else:
                    gathered = element[idx].view(np.float32).reshape(r, n, width)
                    out[start:start + r] = np.matmul(ones, gathered)[:, 0, :m]

    blocks = [list(range(len(starts)))[w::workers] for w in range(max(1, workers))]
    blocks = [b for b in blocks if b]
    if len(blocks) == 1:
        run(blocks[0])
    else:
        with ThreadPoolExecutor(max_workers=len(blocks)) as pool:
            list(pool.map(run, blocks))
    for task, _, _, _, centre, out in prepared:
        task.sums = out + n * centre


def _bootstrap_decision_numbers(boot: FloatArray, threshold: float, alpha: float,
                                tol: float) -> tuple[float, float, float, float]:
    """(p_fail, p_pass, lower bound, upper bound) of the improvement.

    The bounds are order statistics picked so that lower > threshold + tol
    <=> p_pass < alpha and upper < threshold - tol <=> p_fail < alpha.
    """
    b = boot.size
    valid = boot[np.isfinite(boot)]
    if valid.size < b or b == 0:
        return 1.0, 1.0, math.nan, math.nan
    at_or_above = int(np.count_nonzero(valid >= threshold - tol))
    at_or_below = int(np.count_nonzero(valid <= threshold + tol))
    p_fail = (1 + at_or_above) / (b + 1)
    p_pass = (1 + at_or_below) / (b + 1)
    # largest count m with (1 + m) / (B + 1) < alpha, by the same arithmetic
    m = max(-1, math.floor(alpha * (b + 1)) - 1)
    while m >= 0 and not (1 + m) / (b + 1) < alpha:
        m -= 1
    while (2 + m) / (b + 1) < alpha:
        m += 1
    if m < 0 or m >= b:
        return p_fail, p_pass, -math.inf, math.inf
    # p_pass < alpha <=> #(<= thr) <= m <=> the (m+1)-th smallest > thr
    part = np.partition(valid, (m, b - 1 - m))
    return p_fail, p_pass, float(part[m]), float(part[b - 1 - m])


def _improvement_sigma(nb: FloatArray, db: FloatArray, nc: FloatArray, dc: FloatArray,
                       aggregation: Aggregation, sign: float) -> float:
    """Per-item SD of the improvement, via each item's influence on the score.

    For score = g(sum num / sum den) an item moves the score by about
    g'(R) (num_i - R den_i) / mean(den); the paired improvement's influence is
    the oriented difference of the two. For MEAN metrics this is just the
    per-item difference minus its mean.
    """
    def influence(num: FloatArray, den: FloatArray) -> FloatArray:
        mean_den = float(np.mean(den))
        if mean_den == 0:
            return np.zeros_like(num)
        ratio = float(np.sum(num)) / float(np.sum(den))
        h = 1e-6 * max(1.0, abs(ratio))
        slope = (float(aggregation.transform(ratio + h)) - float(aggregation.transform(ratio - h))) / (2 * h)
        return slope * (num - ratio * den) / mean_den

    psi = sign * (influence(nc, dc) - influence(nb, db))
    return float(np.sqrt(np.mean(psi**2)))


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


def _check_pairing(base: TaskRecords, candidate: TaskRecords) -> None:
    if base.keys != candidate.keys or base.num.size != candidate.num.size:
        raise PairingError(
            f"base and candidate items differ ({base.n} vs {candidate.n} items, "
            "or a different order or content)",
            key=base.task,
            fix="pair the items (same doc_id and doc_hash, same order) before comparing")
