"""Always-valid decisions for scoring a task in rounds and stopping early.

Why. Scoring every item of every task is most of the gate's GPU time, yet a
candidate that lost ten points on a task is visibly failing after a few
hundred items. The gate can score a task in rounds (a seeded random order of
its items, cumulative sizes from `schedule`) and stop as soon as the verdict
is decided. Re-running the fixed-sample test of `gate.verdict.stats` after every
round would not do: each look is another chance of a false verdict (at the
six looks of a 2000-item task a one-sided 5% z-test errs in about 20% of
runs, tests/verdict/test_sequential.py). The
intervals here are *confidence sequences*: they hold at every round at once,
so the decision may be taken at whatever round the data decide it.

What is estimated. The mean paired improvement mu of a task (the same
quantity as `gate.verdict.stats`: d_i = candidate_i - base_i oriented so that
positive is better), for metrics that are a mean of bounded per-item values
(acc, exact_match, f1: per-item values in [0, 1], so d_i in [-1, 1]; in
general values in [a, b] give d_i in [a - b, b - a] whichever way the metric
is oriented). Ratio and corpus aggregations (perplexity, corpus BLEU) are not
means of bounded items and stay with the fixed-sample path. As in the
bootstrap, items are treated as draws from the task's item distribution:
presenting them in a seeded random order makes every prefix a random sample
of the task (task files are often sorted by subject or difficulty, so a
plain prefix is not). A without-replacement sequence (Waudby-Smith & Ramdas
2020) would target the finite task's own mean instead and narrow faster near
the end; the gate's question, like the bootstrap's, is the wider one.

Method: a betting confidence sequence of Waudby-Smith & Ramdas (2023,
"Estimating means of bounded random variables by betting", JRSS-B; section
4), one-sided on each side, with their predictable plug-in bets averaged
over a few horizons. With x_i = (d_i - lo) / (hi - lo) in [0, 1] and, for
each horizon n_j, bets lambda_ji in [0, c] computed from x_1..x_{i-1} only,

    K+_n(m) = mean_j prod_{i<=n} (1 + lambda_ji (x_i - m))   (bets that mu > m)
    K-_n(m) = mean_j prod_{i<=n} (1 - lambda_ji (x_i - m))   (bets that mu < m)

lower bound L_n = sup{m : K+_n(m) >= 1/alpha_pass}, upper bound
U_n = inf{m : K-_n(m) >= 1/alpha_fail}. The bets are their fixed-horizon
plug-in rule lambda_ji = min(c, sqrt(2 log(1/alpha) / (s2_{i-1} n_j))), s2 a
running variance shrunk towards 1/4, c = `BET_CAP` = 1/2. A rule tuned for
one horizon is near-optimal within a factor of about 4 of it; averaging J
horizons four times apart (`horizons_for`: 64, 256, ... up to the task's
size) costs only log(J) of evidence and keeps the sequence tight across the
whole schedule. Measured on the schedule 64..2000 at alpha = 0.01 (a drop
of 10 points against a margin of 2, 20% discordant pairs), it stops by item
512 in about 85% of runs, against about 78% with their time-uniform rule
lambda_i ~ 1/sqrt(i log i). The bets do not depend on m,
so every factor is positive (>= 1 - c) and decreasing in m for K+
(increasing for K-): the bounds are roots of a monotone function, found to
1e-12 and rounded outwards.

Validity (why P(exists n: mu < L_n) <= alpha_pass, at any stopping time).
If the items have mean mu given the past, E[1 + lambda_ji (x_i - mu) | past] = 1
because lambda_ji is fixed before x_i is seen, so each product is a
nonnegative martingale starting at 1, and so is K+_n(mu), their average
with weights fixed in advance. Ville's inequality bounds the chance that a nonnegative
martingale starting at 1 *ever* reaches 1/alpha by alpha, and since K+
decreases in m, L_n exceeds mu only if K+_n(mu) >= 1/alpha. The same holds
for U_n with K-; it holds at every data-dependent stopping time, for any
number of looks, and for the running intersection of the intervals (if mu
lies in every interval it lies in their intersection). A wrong FAIL
(U_n < t while mu >= t) implies U_n < mu, so it too has probability
<= alpha_fail.

Decision (`decide`): FAIL when the running upper bound is below the
threshold (a wrong FAIL has probability <= alpha_fail), PASS when the running
lower bound is above it (wrong PASS <= alpha_pass), else keep scoring. The
threshold is `TaskPolicy.threshold`: -margin for a drop policy, +margin for
a gain policy. Because the bounds hold at every look simultaneously, the
argument above needs no fixed threshold: one that moves between looks (a
relative margin re-derived from the base score seen so far) is still
compared against intervals that are all valid at once.

Multiplicity (`split_alpha`). A tier fails when any task fails, so the FAIL
claims of its k tasks are a family. The early looks spend `early_share` of
alpha: each task's FAIL side runs at alpha_early / k (Bonferroni, valid under
any dependence between tasks and any stopping rule, because the k
confidence sequences each miss with probability <= alpha_early / k). PASS
needs every task to pass (intersection-union), so the PASS side runs at
alpha_early unadjusted. The full-sample decision of a task that was not
stopped early (the paired test and Holm of `gate.verdict.stats`) runs at the
rest, alpha_final = alpha - alpha_early, with Holm over all k tasks of the
family (k stays the family's task count) and p_fail = 1 for the tasks already
decided early. Holm's adjusted p-values never shrink when a raw p-value
grows, so this rejects no more than Holm would on the full data of every
task, which controls its family at alpha_final. By the union bound over the
two stages, the chance of any false FAIL in a tier stays
<= alpha_early + alpha_final = alpha, and the chance of a false PASS of a
task stays <= alpha. The default share, 1/5, keeps the full-sample decision
nearly as strong as today (one-sided z of 1.75 instead of 1.64 at alpha =
0.05) and still lets large effects stop early: the width of the sequence
grows only like sqrt(log(1/alpha)). With early_share = 1 the sequence alone
decides, including at the last round, and no bootstrap is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize

from gate.errors import InputError
from gate.evaluate.records import FloatArray

#: largest bet, as a fraction of capital (Waudby-Smith & Ramdas suggest 1/2 or 3/4);
#: keeps every capital factor >= 1/2, so one bad item never wipes out the evidence
BET_CAP = 0.5
#: accuracy of the interval bounds on the unit scale; bounds are rounded outwards by it
ROOT_TOL = 1e-12
#: share of a tier's alpha spent on the early (sequential) looks; the rest goes to the
#: full-sample decision of tasks that are not stopped early
DEFAULT_EARLY_SHARE = 0.2
#: improvements this far outside the declared bounds are float noise and clipped
BOUND_SLACK = 1e-9
#: horizons the bets are tuned for when the task size is not known (64 .. 16384)
DEFAULT_HORIZONS = (64, 256, 1024, 4096, 16384)
#: ratio between consecutive horizons: a bet tuned for n stays near-optimal from n/4 to 4n
HORIZON_RATIO = 4

Decision = Literal["PASS", "FAIL"]
#: why a task stopped before its last item: its own sequence decided it, or another
#: task of the same candidate failed first (fail_fast)
StopReason = Literal["decided", "candidate_failed"]


@dataclass(frozen=True)
class AlphaSplit:
    """The one-sided levels of one task in a tier of `k` tasks (see the module doc).

    `fail`: level of an early FAIL (the upper bound of the sequence);
    `pass_`: level of an early PASS (the lower bound);
    `final`: level left for the full-sample decision (bootstrap + Holm over the tier).
    """

    fail: float
    pass_: float
    final: float


def split_alpha(alpha: float, k: int, early_share: float = DEFAULT_EARLY_SHARE) -> AlphaSplit:
    """Divide a tier's alpha between early looks and the full-sample decision.

    FAIL side: alpha * early_share / k per task (Bonferroni over the tier);
    PASS side: alpha * early_share (intersection-union, no correction);
    final: alpha * (1 - early_share), to be used with Holm over all k tasks.
    early_share = 1 spends everything on the sequence (then a task that reaches
    its last round is decided by the sequence alone, with no bootstrap).
    """
    _check_level(alpha, "alpha")
    if k < 1:
        raise InputError(f"a tier needs at least one task, got k={k}", key="k",
                         fix="pass the number of tasks judged in the tier")
    if not 0.0 < early_share <= 1.0:
        raise InputError(f"early_share must be in (0, 1], got {early_share}", key="early_share",
                         fix="use e.g. 0.2 to spend a fifth of alpha on early looks")
    early = alpha * early_share
    return AlphaSplit(fail=early / k, pass_=early, final=alpha - early)


def schedule(n_total: int, first: int = 64, growth: float = 2.0) -> list[int]:
    """Cumulative item counts at which a task is looked at: first, first*growth, ..., n_total.

    Geometric rounds keep the number of looks (and server round trips) near
    log(n_total / first) while letting a clear verdict stop at the first
    rounds. A last round smaller than `first` is merged into the one before,
    so no round is a handful of items. The sequence is valid at any looks;
    the schedule only decides how often the gate pays for one.
    """
    if n_total < 1:
        raise InputError(f"a task needs at least one item, got n_total={n_total}", key="n_total",
                         fix="schedule only tasks that have items")
    if first < 1:
        raise InputError(f"the first round needs at least one item, got first={first}",
                         key="first", fix="use e.g. first=64")
    if not (math.isfinite(growth) and growth > 1.0):
        raise InputError(f"rounds must grow, got growth={growth}", key="growth",
                         fix="use a growth factor above 1, e.g. 2.0")
    looks: list[int] = []
    size = float(first)
    while math.ceil(size) < n_total:
        step = math.ceil(size)
        if not looks or step > looks[-1]:
            looks.append(step)
        size *= growth
    if looks and n_total - looks[-1] < first:
        looks.pop()
    looks.append(n_total)
    return looks


def horizons_for(n_total: int, first: int = 64) -> tuple[int, ...]:
    """The horizons to tune the bets for: first, 4 first, 16 first, ... up to n_total.

    A task of n_total items is looked at between `first` and n_total items
    (`schedule`), so those are the sample sizes where a tight interval pays.
    """
    if n_total < 1 or first < 1:
        raise InputError(f"need positive item counts, got n_total={n_total}, first={first}",
                         key="n_total", fix="pass the task's item count and the first round size")
    out = [min(first, n_total)]
    while out[-1] < n_total:
        out.append(min(out[-1] * HORIZON_RATIO, n_total))
    if len(out) > 1 and out[-1] < out[-2] * 2:  # a last horizon close to the one before
        out[-2:] = [out[-1]]
    return tuple(out)


@dataclass
class SequentialState:
    """The running confidence sequence of one task's mean paired improvement.

    Feed it the improvements of each round in the order the items were
    scored (`update`); read the running interval (`interval`) or the decision
    (`decide`). The levels are fixed when the state is made: the bets are
    tuned to them before any data arrive, and choosing a level after seeing
    the data would void the guarantee.

    lo, hi: bounds that every per-item improvement obeys (-1, 1 for the
    difference of two 0/1 or [0, 1] scores).
    alpha_fail: P(the upper bound ever falls below the true mean) <= alpha_fail.
    alpha_pass: P(the lower bound ever rises above the true mean) <= alpha_pass.
    horizons: item counts the bets are tuned for (`horizons_for`); they
    change how soon a verdict comes, never the guarantee.
    """

    lo: float
    hi: float
    alpha_fail: float
    alpha_pass: float
    horizons: tuple[int, ...] = DEFAULT_HORIZONS
    _x: FloatArray = field(init=False, repr=False)
    _low: float = field(init=False, repr=False)
    _high: float = field(init=False, repr=False)
    _looks: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi):
            raise InputError(f"improvement bounds must be finite with lo < hi, got "
                             f"[{self.lo}, {self.hi}]", key="bounds",
                             fix="pass the range of a per-item improvement, e.g. (-1, 1) "
                                 "for accuracy")
        _check_level(self.alpha_fail, "alpha_fail")
        _check_level(self.alpha_pass, "alpha_pass")
        self.horizons = tuple(int(h) for h in self.horizons)
        if not self.horizons or min(self.horizons) < 1:
            raise InputError(f"horizons must be positive item counts, got {self.horizons}",
                             key="horizons", fix="use horizons_for(n_total)")
        self._x = np.empty(0, dtype=np.float64)
        self._low, self._high = 0.0, 1.0
        self._looks = []

    @classmethod
    def for_task(cls, split: AlphaSplit, n_total: int, *, lo: float = -1.0, hi: float = 1.0,
                 first: int = 64) -> SequentialState:
        """A state for one task of `n_total` items at the early levels of `split_alpha`."""
        return cls(lo, hi, alpha_fail=split.fail, alpha_pass=split.pass_,
                   horizons=horizons_for(n_total, first))

    @property
    def n(self) -> int:
        """Items seen so far."""
        return int(self._x.size)

    @property
    def looks(self) -> tuple[int, ...]:
        """The item counts at which the interval was computed (one per `update`)."""
        return tuple(self._looks)

    @property
    def mean(self) -> float:
        """The plain mean improvement of the items seen (NaN before any)."""
        if not self._x.size:
            return math.nan
        return self.lo + (self.hi - self.lo) * float(self._x.mean())

    def update(self, improvements: Sequence[float] | npt.ArrayLike) -> None:
        """Add one round of paired improvements (in scoring order) and look once.

        An empty round is allowed and changes nothing but the record of looks.
        """
        d = np.asarray(improvements, dtype=np.float64).ravel()
        if d.size:
            bad = ~np.isfinite(d) | (d < self.lo - BOUND_SLACK) | (d > self.hi + BOUND_SLACK)
            if bad.any():
                i = int(np.argmax(bad))
                raise InputError(
                    f"improvement {d[i]!r} (item {self.n + i} of the sequence) is outside the "
                    f"declared bounds [{self.lo}, {self.hi}]", key="improvements",
                    fix="use the sequential test only for mean metrics with bounded per-item "
                        "values, and pass bounds that hold for every item")
            x = np.clip((d - self.lo) / (self.hi - self.lo), 0.0, 1.0)
            self._x = np.concatenate([self._x, x])
            low = _lower_bound(self._x, self.alpha_pass, self.horizons)
            high = 1.0 - _lower_bound(1.0 - self._x, self.alpha_fail, self.horizons)
            self._low = max(self._low, low)
            self._high = min(self._high, high)
        self._looks.append(self.n)

    def interval(self) -> tuple[float, float]:
        """The running (intersected over looks) interval of the mean improvement.

        Coverage: P(the true mean is ever outside it) <= alpha_fail + alpha_pass.
        Before any data it is the declared bounds. It can come out empty
        (low > high) only when it has already missed the true mean, a
        <= alpha event; it is returned as it is.
        """
        scale = self.hi - self.lo
        return self.lo + scale * self._low, self.lo + scale * self._high


def decide(state: SequentialState, threshold: float) -> Decision | None:
    """FAIL when the interval lies wholly below the threshold, PASS when wholly
    above, None (keep scoring) otherwise. Ties keep scoring.

    The threshold is in improvement units (`TaskPolicy.threshold`).
    """
    if not math.isfinite(threshold):
        raise InputError(f"the threshold must be a finite number, got {threshold}",
                         key="threshold", fix="pass TaskPolicy.threshold(base_score)")
    low, high = state.interval()
    if high < threshold:
        return "FAIL"
    if low > threshold:
        return "PASS"
    return None


@dataclass(frozen=True)
class SequentialOutcome:
    """How one candidate task was scored in rounds, and what the early looks decided.

    Produced by `gate.evaluate.rounds`, read by `gate.verdict` (which turns it into the
    task's verdict) and stored with the candidate's cached records, so a rerun
    reproduces the verdict without scoring anything.

    n_total: items the task has; looks: items scored at each look (the last
    one is the items used); decision: what the confidence sequence decided
    (None: it did not); stopped: why scoring stopped before n_total (None: it
    did not); interval: the running interval of the mean improvement at the
    last look (None for tasks not judged sequentially); threshold: the
    improvement threshold of the looks, from the base's full score;
    alpha_fail / alpha_pass: the early levels; alpha_final: the level left for
    the full-sample decision; note: why a task was not judged sequentially.
    """

    n_total: int
    looks: tuple[int, ...]
    decision: Decision | None
    stopped: StopReason | None
    interval: tuple[float, float] | None
    threshold: float | None
    alpha_fail: float | None
    alpha_pass: float | None
    alpha_final: float
    note: str | None = None
    #: the base's score and item count over the task's full items: the chance
    #: floor is judged on these, once, before any round (never on a round's items)
    base_score: float | None = None
    base_n: int | None = None

    @property
    def n_used(self) -> int:
        return self.looks[-1] if self.looks else 0

    def to_dict(self) -> dict[str, object]:
        return {"n_total": self.n_total, "looks": list(self.looks), "n_used": self.n_used,
                "decision": self.decision, "stopped": self.stopped,
                "interval": None if self.interval is None else list(self.interval),
                "threshold": self.threshold, "alpha_fail": self.alpha_fail,
                "alpha_pass": self.alpha_pass, "alpha_final": self.alpha_final,
                "note": self.note, "base_score": self.base_score, "base_n": self.base_n}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SequentialOutcome:
        interval = data.get("interval")
        return cls(
            n_total=int(data["n_total"]),  # type: ignore[call-overload]
            looks=tuple(int(x) for x in data["looks"]),  # type: ignore[attr-defined]
            decision=data.get("decision"),  # type: ignore[arg-type]
            stopped=data.get("stopped"),  # type: ignore[arg-type]
            interval=None if interval is None else (float(interval[0]), float(interval[1])),  # type: ignore[index]
            threshold=None if data.get("threshold") is None else float(data["threshold"]),  # type: ignore[arg-type]
            alpha_fail=None if data.get("alpha_fail") is None else float(data["alpha_fail"]),  # type: ignore[arg-type]
            alpha_pass=None if data.get("alpha_pass") is None else float(data["alpha_pass"]),  # type: ignore[arg-type]
            alpha_final=float(data["alpha_final"]),  # type: ignore[arg-type]
            note=data.get("note"),  # type: ignore[arg-type]
            base_score=None if data.get("base_score") is None else float(data["base_score"]),  # type: ignore[arg-type]
            base_n=None if data.get("base_n") is None else int(data["base_n"]),  # type: ignore[call-overload]
        )


# ------------------------------------------------------------------ internals

def _check_level(alpha: float, key: str) -> None:
    if not (math.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise InputError(f"{key} must be strictly between 0 and 1, got {alpha}", key=key,
                         fix="use a level such as 0.05")


def _bets(x: FloatArray, alpha: float, horizons: tuple[int, ...]) -> FloatArray:
    """Predictable plug-in bets, one row per horizon (Waudby-Smith & Ramdas 2023, eq. 26).

    lambda_ji = min(c, sqrt(2 log(1/alpha) / (s2_{i-1} n_j))) uses x_1..x_{i-1} only:
    s2_{i-1} = (1/4 + sum_{l<i} (x_l - m_l)^2) / i with m_l = (1/2 + sum_{k<=l} x_k) / (l + 1),
    shrunk towards 1/4 (the largest variance on [0, 1]) so that early bets stay modest.
    """
    n = x.size
    t = np.arange(1, n + 1, dtype=np.float64)
    running_mean = (0.5 + np.cumsum(x)) / (t + 1.0)
    sq = np.cumsum((x - running_mean) ** 2)
    s2_prev = (0.25 + np.concatenate([[0.0], sq[:-1]])) / t
    n_j = np.asarray(horizons, dtype=np.float64)[:, None]
    lam = np.sqrt(2.0 * math.log(1.0 / alpha) / (s2_prev[None, :] * n_j))
    return np.minimum(lam, BET_CAP)


def _lower_bound(x: FloatArray, alpha: float, horizons: tuple[int, ...]) -> float:
    """sup{m in [0, 1] : K+_n(m) >= 1/alpha}, rounded down; 0 when no m qualifies.

    log K+_n(m) = logsumexp_j(sum_i log(1 + lambda_ji (x_i - m))) - log J, decreasing in m.
    """
    lam = _bets(x, alpha, horizons)
    goal = math.log(1.0 / alpha) + math.log(lam.shape[0])

    def excess(m: float) -> float:
        log_capital = np.log1p(lam * (x - m)).sum(axis=1)
        top = float(log_capital.max())  # log-sum-exp by hand: scipy's costs 4x the sums
        return top + math.log(float(np.exp(log_capital - top).sum())) - goal

    if excess(0.0) < 0.0:
        return 0.0
    if excess(1.0) >= 0.0:  # impossible for alpha < 1 (K+(1) <= 1); kept for safety
        return 1.0
    root = optimize.brentq(excess, 0.0, 1.0, xtol=ROOT_TOL, rtol=4 * np.finfo(float).eps)
    return max(0.0, float(root) - 2 * ROOT_TOL)


__all__ = [
    "DEFAULT_EARLY_SHARE", "AlphaSplit", "Decision", "SequentialOutcome", "SequentialState",
    "StopReason", "decide", "horizons_for",
    "schedule", "split_alpha",
]
