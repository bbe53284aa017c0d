"""How numbers from results.json are shown: formatting only, no arithmetic
beyond unit scaling.

Accuracy-like metrics (mean of 0/1 or [0, 1] items) are shown as percentages
and their deltas, intervals and margins as percentage *points*, because
"-4.0 pts" reads correctly where "-0.04" invites a relative reading.
Perplexity and bits per byte are ratios of the base: their deltas, intervals
and margins are shown as a change relative to the base's score ("+5.4%",
and a factor such as "×3.1e+08" when the candidate is thousands of times
worse), in the same units as the margin they are compared with. Every other
metric keeps its own units; huge numbers are shown in scientific form.
"""

from __future__ import annotations

import math
from typing import Any

from gate.config.policy import TIERS

Task = dict[str, Any]

_NOT_POINTS = ("perplexity", "bits", "bpb", "loss", "bleu", "chrf", "ter")


def tiers_in_order(candidate: Task) -> list[Task]:
    """A candidate's tier entries in the flow's order: target, related, general."""
    return sorted(candidate["tiers"], key=lambda t: TIERS.index(t["tier"]))


def is_points(task: Task) -> bool:
    """Whether a task's scores are proportions shown as % and deltas as points."""
    if task["aggregation"] != "mean":
        return False
    metric = str(task["metric"]).lower()
    if any(word in metric for word in _NOT_POINTS):
        return False
    scores = [s for s in (task["base_score"], task["candidate_score"]) if s is not None]
    return all(0.0 <= s <= 1.0 for s in scores)


#: aggregations whose scores are best read relative to the base's
_RELATIVE = ("weighted_perplexity", "bits_per_byte")


def is_relative(task: Task) -> bool:
    """Whether a task's deltas are shown as a change relative to the base's score."""
    base = task.get("base_score")
    return (task["aggregation"] in _RELATIVE and base is not None and math.isfinite(base) and base > 0
            and not is_points(task))


def change(relative: float, *, signed: bool = True) -> str:
    """A relative change: "+4.2%", "-37%", or the factor for big ones ("×87", "×3.1e+08")."""
    if not math.isfinite(relative):
        return "—"
    sign = "+" if signed else ""
    if abs(relative) < 1:
        return f"{relative * 100:{sign}.1f}%"
    if abs(relative) < 9:
        return f"{relative * 100:{sign}.0f}%"
    factor = 1 + relative
    return f"×{factor:.3g}" if factor < 1e4 else f"×{factor:.1e}"


def level(ci_level: float) -> str:
    """An interval's level: "90%", "98.7%" (never "98.6667%")."""
    shown = f"{ci_level * 100:.1f}".rstrip("0").rstrip(".")
    return f"{shown}%"


def _plain(value: float, *, signed: bool) -> str:
    sign = "+" if signed else ""
    size = abs(value)
    if size >= 1e6:
        return f"{value:{sign}.3g}"
    if size >= 100:
        return f"{value:{sign},.1f}"
    if size >= 1:
        return f"{value:{sign}.2f}"
    return f"{value:{sign}.3f}"


def score(task: Task, value: float | None) -> str:
    """A base or candidate score: "86.0%" or "18.50"."""
    if value is None or math.isnan(value):
        return "—"
    if is_points(task):
        return f"{value * 100:.1f}%"
    return _plain(value, signed=False)


def delta(task: Task, value: float | None) -> str:
    """A difference in the metric's units: "+55.5 pts" or "+13.50"."""
    if value is None or math.isnan(value):
        return "—"
    if is_points(task):
        return f"{value * 100:+.1f} pts"
    if is_relative(task):
        return change(value / task["base_score"])
    return _plain(value, signed=True)


def interval(task: Task) -> str:
    """The task's confidence interval of the delta: "[-27.0, -15.0] pts (90%)"."""
    if task.get("verdict") == "STOPPED":
        return "not judged"
    low, high = task["ci_low"], task["ci_high"]
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "—"
    at = level(task["ci_level"])
    if is_points(task):
        return f"[{low * 100:+.1f}, {high * 100:+.1f}] pts ({at})"
    if is_relative(task):
        base = task["base_score"]
        return f"[{change(low / base)}, {change(high / base)}] ({at})"
    return f"[{_plain(low, signed=True)}, {_plain(high, signed=True)}] ({at})"


def size_of(task: Task, size: float, *, points: str) -> str:
    """An unsigned amount in the units the task's deltas are shown in."""
    if is_points(task):
        return f"{size * 100:.1f} {points}"
    if is_relative(task):
        return change(size / task["base_score"], signed=False)
    return _plain(size, signed=False)


def margin(task: Task) -> str:
    """The policy in words: "drop ≤ 5.0 pts" or "gain ≥ 5.0 pts"."""
    shown = size_of(task, task["margin"], points="pts")
    if task["kind"] == "gain":
        return f"gain ≥ {shown}"
    worse = "drop" if task["higher_is_better"] else "rise"
    return f"{worse} ≤ {shown}"


def waiver(task: Task) -> str:
    """The waiver a task was judged under, in one line: "waived by alice until
    2027-01-31 (drop ≤ 20.0 pts accepted; the thresholds allow 3.0 pts): reason".
    Empty when none."""
    w = task.get("waiver")
    if not w:
        return ""
    own = size_of(task, w["margin_without"], points="pts") if w.get("margin_without") is not None else "?"
    used = "waived" if task["verdict"] == "WAIVED" else "waiver in force, not needed" \
        if task["verdict"] == "PASS" else "a waiver was in force"
    return (f"{used} by {w['approved_by']} until {w['expires']} ({margin(task)} accepted; the thresholds "
            f"allow {own}): {w['reason']}")


def label(verdict: Task) -> str:
    """A candidate's or the release's verdict as shown: "PASS (not shown safe on
    2 tasks)" when the pass rests on undecided tasks (older results: the verdict)."""
    return str(verdict.get("label") or verdict["verdict"])


def detectable(task: Task, *, short: bool = False) -> str:
    """What this run could see (PASS and INCONCLUSIVE tasks): "could detect a
    drop of 4.1 points or more" (80% power, normal approximation). `short`:
    "could see a drop ≥ 4.1 pts", for drop tasks only (the approver's matrix)."""
    d = task.get("detectable")
    if d is None or task["verdict"] == "FAIL" or d != d or (short and task["kind"] != "drop"):
        return ""
    shown = size_of(task, abs(d) if task["kind"] == "drop" else d, points="pts" if short else "points")
    if task["kind"] == "drop":
        if short:
            return f"could see a {'drop' if task['higher_is_better'] else 'rise'} ≥ {shown}"
        word = "drop" if task["higher_is_better"] else "worsening"
        return f"this run could detect a {word} of {shown} or more (80% power)"
    return f"this run would fail a gain of {shown} or less (80% power)"


def error_rates(candidate: Task) -> str:
    """Which error rate holds for this candidate's FAIL and PASS (README,
    "Which error rate holds where")."""
    tiers = len(candidate.get("tiers", []))
    if candidate.get("family", "tier") == "candidate":
        fail = "a FAIL is wrong at most alpha of the time (Holm over all its tasks)"
    else:
        fail = (f"a FAIL is wrong at most alpha of the time per tier (Holm within each tier), "
                f"so up to {tiers} x alpha for the candidate")
    unproven = len(candidate.get("not_shown_safe", []))
    if unproven:
        passed = (f"this PASS rests on {unproven} inconclusive task{'s' if unproven != 1 else ''} "
                  "and carries no guarantee for them")
    else:
        passed = "a PASS with every task shown safe is wrong at most alpha of the time"
    return f"Error rates: {fail}; {passed}."


def p_value(value: float | None) -> str:
    """A p-value, with tiny values shown as a bound rather than as 0."""
    if value is None or math.isnan(value):
        return "—"
    if value < 1e-4:
        return "<0.0001"
    return f"{value:.4f}" if value < 0.01 else f"{value:.3f}"


def items(task: Task) -> str:
    """Items used: "200", or "38 of 40" when some could not be paired/scored."""
    if task["n_used"] == task["n"]:
        return str(task["n"])
    return f"{task['n_used']} of {task['n']}"


def direction(task: Task) -> str:
    """Which way is better for this metric."""
    return "higher is better" if task["higher_is_better"] else "lower is better"


def arrow(task: Task) -> str:
    return "↑" if task["higher_is_better"] else "↓"


def unit_label(task: Task) -> str:
    """The unit a delta is plotted in."""
    if is_points(task):
        return "pts"
    return "% of base" if is_relative(task) else str(task["metric"])


def plot_scale(task: Task) -> float:
    """What a delta is multiplied by to be plotted in `unit_label`'s units."""
    if is_points(task):
        return 100.0
    return 100.0 / task["base_score"] if is_relative(task) else 1.0
