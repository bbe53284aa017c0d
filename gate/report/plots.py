"""Forest plots of each candidate's per-task deltas, and a sweep's forgetting curve, as inline SVG.

One row per task, grouped by tier: the delta (candidate minus base) with its
interval, a grey line at "no change" and a red line at the task's threshold.
Every row is oriented so that *right is better*: for a lower-is-better metric
(perplexity) the delta and interval are mirrored. Rows have their own x-axis
because tasks do not share units (points of accuracy, perplexity, BLEU);
accuracy-like rows share one scale so they can be compared by eye.

The SVG is made deterministic so that a re-render of the same results.json
gives the same bytes (reports diff cleanly, tests can compare them): a fixed
`svg.hashsalt` for element ids, no date in the metadata, and text drawn as
paths (`svg.fonttype = "path"`) so the file needs no font and leaks no raw
task text into the markup. matplotlib's object API is used directly (no
pyplot, so no GUI backend and no global figure state); `Figure.savefig`
renders through the SVG canvas.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from gate.report import format as fmt

VERDICT_COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "INCONCLUSIVE": "#9a6700", "STOPPED": "#6e7781", "WAIVED": "#8250df"}
THRESHOLD_COLOUR = "#cf222e"
ROW_HEIGHT_IN = 0.5
FIGURE_WIDTH_IN = 8.5

_XML_PROLOGUE = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_XML_COMMENT = re.compile(r"<!--.*?-->\s*", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def _oriented(task: dict[str, Any]) -> tuple[float | None, float | None, float | None, float]:
    """(improvement, low, high, threshold) in display units, right = better."""
    scale = fmt.plot_scale(task)
    sign = 1.0 if task["higher_is_better"] else -1.0
    delta, low, high = task["delta"], task["ci_low"], task["ci_high"]
    point = None if delta is None else sign * delta * scale
    ends = None if low is None or high is None else sorted((sign * low * scale, sign * high * scale))
    threshold = task["threshold"] * scale
    if ends is None:
        return point, None, None, threshold
    return point, ends[0], ends[1], threshold


def _rows(candidate: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    tiers = fmt.tiers_in_order(candidate)
    for tier in tiers:
        for task in tier["tasks"]:
            yield tier["tier"], task


def _limits(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = max((high - low) * 0.12, 0.5 if high - low > 2 else 0.05)
    return low - pad, high + pad


def forest_svg(candidate: dict[str, Any], *, id_prefix: str = "forest") -> str:
    """The candidate's forest plot as an `<svg>` element (no XML prologue).

    `id_prefix` keeps element ids unique when several plots share one HTML
    page (matplotlib numbers them `figure_1`, `axes_1`, ... in every file).
    """
    rows = list(_rows(candidate))
    if not rows:
        return ""
    oriented = [_oriented(task) for _, task in rows]
    shared: list[float] = []
    for (_, task), (point, low, high, thr) in zip(rows, oriented, strict=True):
        if fmt.is_points(task):
            shared += [v for v in (point, low, high, thr, 0.0) if v is not None]
    shared_limits = _limits(shared) if shared else None

    with matplotlib.rc_context(_rc(f"gate-forest-{candidate['name']}")):
        fig = Figure(figsize=(FIGURE_WIDTH_IN, ROW_HEIGHT_IN * len(rows) + 0.9))
        axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
        fig.subplots_adjust(left=0.34, right=0.84, top=1 - 0.3 / fig.get_figheight(),
                            bottom=0.6 / fig.get_figheight(), hspace=1.1)
        previous_tier = None
        for ax, (tier, task), (point, low, high, thr) in zip(axes, rows, oriented, strict=True):
            colour = VERDICT_COLOURS[task["verdict"]]
            ax.axvline(0.0, color="#8c959f", linestyle="--", linewidth=0.8)
            ax.axvline(thr, color=THRESHOLD_COLOUR, linewidth=1.4)
            if low is not None and high is not None:
                ax.hlines(0.0, low, high, color=colour, linewidth=2.2)
            if point is not None:
                ax.plot([point], [0.0], marker="o", markersize=6, color=colour)
            values = [v for v in (point, low, high, thr, 0.0) if v is not None]
            ax.set_xlim(shared_limits if fmt.is_points(task) and shared_limits else _limits(values))
            ax.set_ylim(-1, 1)
            ax.set_yticks([])
            for side in ("left", "right", "top"):
                ax.spines[side].set_visible(False)
            ax.tick_params(axis="x", labelsize=6.5, length=2, pad=1)
            label = f"{task['task']}  ({fmt.unit_label(task)}, {fmt.arrow(task)} better)"
            ax.text(-0.02, 0.0, label, transform=ax.get_yaxis_transform(), ha="right",
                    va="center", fontsize=7.5, parse_math=False)
            ax.text(1.02, 0.0, task["verdict"], transform=ax.get_yaxis_transform(), ha="left",
                    va="center", fontsize=7.5, color=colour, fontweight="bold", parse_math=False)
            if tier != previous_tier:
                ax.text(-0.52, 0.95, tier.upper(), transform=ax.transAxes, ha="left",
                        va="bottom", fontsize=8, fontweight="bold", color="#57606a")
                previous_tier = tier
        return _render(fig, 0.34, "candidate − base, right is better (accuracy-like in points); "
                                  "red: threshold, dashed: no change", id_prefix)


def _rc(salt: str) -> dict[Any, Any]:
    """matplotlib settings for a deterministic, font-free SVG (see the module docstring)."""
    return {"svg.hashsalt": salt, "svg.fonttype": "path", "font.family": "DejaVu Sans", "font.size": 8}


def _render(fig: Figure, left: float, note: str, id_prefix: str) -> str:
    """The figure with its footnote, as an inline `<svg>` (call inside the rc context)."""
    fig.text(left, 0.08 / fig.get_figheight(), note, fontsize=7, color="#57606a", ha="left", va="bottom")
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return _inline(buffer.getvalue(), id_prefix)


def _inline(svg: str, id_prefix: str) -> str:
    """Strip what an inline SVG must not carry (prologue, DOCTYPE, comments —
    matplotlib writes each text string as one — and RDF metadata) and give
    every id, and every reference to one, the page-unique prefix."""
    svg = _XML_PROLOGUE.sub("", svg, count=1)
    svg = _XML_COMMENT.sub("", svg)
    svg = _METADATA.sub("", svg).strip()
    svg = svg.replace(' id="', f' id="{id_prefix}-')
    svg = svg.replace('url(#', f'url(#{id_prefix}-')
    return svg.replace('href="#', f'href="#{id_prefix}-')


#: a curve's values beyond this many threshold-widths (or 100 units) are drawn
#: at the edge with a triangle: one exploding perplexity must not flatten the rest
CURVE_CLIP = 10.0


def _clip(value: float | None, bound: float) -> float | None:
    return None if value is None else max(-bound, min(bound, value))


def _curve_tasks(sweep: dict[str, Any], by_name: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(tier, task) in the suite's order, from the first scored checkpoint."""
    for point in sweep["checkpoints"]:
        cand = by_name.get(point["candidate"])
        if cand is not None:
            return [(tier, task["task"]) for tier, task in _rows(cand)]
    return []


def sweep_svg(sweep: dict[str, Any], candidates: list[dict[str, Any]], *, id_prefix: str = "sweep") -> str:
    """The forgetting curve of a sweep as an `<svg>` element: one panel per task
    (tasks do not share units), grouped by tier, each checkpoint's delta with its
    interval against the training step, the task's threshold in red, "no change"
    dashed, the picked checkpoint marked by a green band. Right is better is
    here up is better: lower-is-better metrics are mirrored as in the forest plot."""
    by_name = {c["name"]: c for c in candidates}
    tasks = _curve_tasks(sweep, by_name)
    if not tasks:
        return ""
    points = sweep["checkpoints"]
    xs = [p["step"] if p["step"] is not None else (points[i - 1]["step"] or 0) + 1 if i else 0
          for i, p in enumerate(points)]
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    with matplotlib.rc_context(_rc(f"gate-sweep-{sweep['name']}")):
        fig = Figure(figsize=(FIGURE_WIDTH_IN, 2.1 * rows + 0.5))
        axes = fig.subplots(rows, cols, squeeze=False)
        fig.subplots_adjust(left=0.08, right=0.98, top=1 - 0.35 / fig.get_figheight(),
                            bottom=0.55 / fig.get_figheight(), hspace=0.75, wspace=0.35)
        for ax in axes.flat[len(tasks):]:
            ax.set_visible(False)
        for ax, (tier, name) in zip(axes.flat, tasks, strict=False):
            threshold = None
            unit = ""
            drawn: list[float] = []
            series = []
            for x, point in zip(xs, points, strict=True):
                cand = by_name.get(point["candidate"])
                task = next((t for tr, t in _rows(cand) if t["task"] == name), None) if cand else None
                if task is None:
                    continue
                value, low, high, threshold = _oriented(task)
                unit = f"{fmt.unit_label(task)}, {fmt.arrow(task)} better"
                series.append((x, value, low, high, task["verdict"]))
                drawn += [v for v in (value, low, high) if v is not None]
            bound = max(abs(threshold or 0.0) * CURVE_CLIP, 100.0)
            if sweep["pick"] is not None:
                pick_x = xs[[p["candidate"] for p in points].index(sweep["pick"])]
                ax.axvspan(pick_x - 0.04 * max(xs or [1]), pick_x + 0.04 * max(xs or [1]),
                           color=VERDICT_COLOURS["PASS"], alpha=0.12, linewidth=0)
            ax.axhline(0.0, color="#8c959f", linestyle="--", linewidth=0.8)
            if threshold is not None:
                ax.axhline(threshold, color=THRESHOLD_COLOUR, linewidth=1.2)
            ax.plot([s[0] for s in series if s[1] is not None], [_clip(s[1], bound) for s in series if s[1] is not None],
                    color="#57606a", linewidth=0.8)
            for x, value, low, high, verdict in series:
                colour = VERDICT_COLOURS.get(verdict, "#6e7781")
                if low is not None and high is not None:
                    ax.vlines(x, _clip(low, bound), _clip(high, bound), color=colour, linewidth=2.0)
                if value is not None:
                    off = abs(value) > bound
                    ax.plot([x], [_clip(value, bound)], marker="^" if off and value > 0 else "v" if off else "o",
                            markersize=5, color=colour)
            values = [_clip(v, bound) for v in drawn] + [0.0] + ([threshold] if threshold is not None else [])
            ax.set_ylim(*_limits([v for v in values if v is not None]))
            ax.set_xticks(xs)
            ax.set_xticklabels([str(p["step"]) if p["step"] is not None else p["label"] for p in points],
                               fontsize=6.5)
            ax.tick_params(axis="y", labelsize=6.5)
            for side in ("right", "top"):
                ax.spines[side].set_visible(False)
            ax.set_title(f"{tier.upper()}  {name}", fontsize=7.5, loc="left", parse_math=False)
            ax.set_ylabel(unit, fontsize=6.5, parse_math=False)
        return _render(fig, 0.08, "candidate − base per checkpoint (x: step), up is better; red: threshold, "
                                  "dashed: no change, green: the pick; triangles: off the scale", id_prefix)
