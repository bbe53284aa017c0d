"""What a run could detect, and how many items would decide: normal-approximation planning.

    items_needed(sigma, distance, alpha=, k=)          -> the items an undecided task would need
    detectable_improvement(threshold, spread, n, ...)  -> the true change this run would FAIL at 80% power

Used for the advice on INCONCLUSIVE tasks and for results.json's `detectable`;
never for a decision (those are the exact and delta-method tests of `stats`).
"""

from __future__ import annotations

import math

from scipy import stats as sps

#: planning power of `items_needed` and `detectable_improvement`
POWER = 0.8


def _z_plan(alpha: float, k: int) -> float:
    return float(sps.norm.ppf(1.0 - alpha / max(k, 1)) + sps.norm.ppf(POWER))


def items_needed(sigma: float, distance: float, *, alpha: float, k: int = 1,
                 power: float = POWER) -> int | None:
    """Items for a one-sided level alpha/k test to reach `power` at `distance`.

    None when it cannot be computed (no per-item variation, zero distance).
    """
    if not (math.isfinite(sigma) and math.isfinite(distance)) or sigma <= 0 or distance <= 0:
        return None
    z = float(sps.norm.ppf(1.0 - alpha / max(k, 1)) + sps.norm.ppf(power))
    return max(1, math.ceil((z * sigma / distance) ** 2))


def detectable_improvement(threshold: float, spread: float, n: int, *, alpha: float,
                           k: int = 1, binary: bool = False) -> float | None:
    """The true improvement this run would have FAILed with 80% power (normal
    approximation): threshold - (z_{1-alpha/k} + z_0.8) sigma / sqrt(n).

    For a binary metric `spread` is the observed discordance rate, and sigma
    at a true improvement d is sqrt(max(disc, |d|) - d^2) (a drop of |d| needs
    at least |d| of the items to flip), solved by a few fixed-point steps.
    """
    if n < 1 or not math.isfinite(threshold) or not math.isfinite(spread):
        return None
    z = _z_plan(alpha, k)
    if not binary:
        return threshold - z * spread / math.sqrt(n) if spread > 0 else None
    d = threshold
    for _ in range(50):
        sigma = math.sqrt(max(max(spread, abs(d)) - d * d, 0.0))
        d_next = max(-1.0, threshold - z * sigma / math.sqrt(n))
        if abs(d_next - d) < 1e-12:
            break
        d = d_next
    return d
