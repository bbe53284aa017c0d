"""summary.md: the verdicts in a few lines of Markdown, for a pull request
comment or a GitHub job summary.

Task names, reasons and advice are text the gate did not write (suite
authors, models), so every such string is escaped (numbers the gate formatted itself are not): HTML-special characters
become entities (GitHub renders raw HTML in Markdown) and Markdown
punctuation is backslash-escaped, `|` included so a cell cannot split a table.
"""

from __future__ import annotations

import re
from typing import Any

from gate.config.policy import TIERS
from gate.report import format as fmt
from gate.report.qlora import split_rows, split_sentence

WAIVER_STATUS = {"in_force": "🔖 in force:", "expired": "⌛ expired, not applied:", "no_match": "❔ not applied:"}
VERDICT_ICONS = {"PASS": "✅", "FAIL": "❌", "INCONCLUSIVE": "⚠️", "STOPPED": "⏹️", "WAIVED": "🔖"}
# Inline markup characters; `(`, `)` and `!` are inert once `[`/`]` are escaped.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
# Block markup that only counts at the start of a line (heading, list, quote).
_LEADING_BLOCK = re.compile(r"^(\s*)([#+\-=]|\d+(?=[.)]))")
_HTML_SPECIAL = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
_LINE_BREAKS = re.compile(r"[\r\n\t\x0b\x0c]+")


def md_escape(text: Any) -> str:
    """`text` as inert Markdown/HTML inline text, on one line (safe in a table cell)."""
    value = _LINE_BREAKS.sub(" ", str(text))
    value = "".join(_HTML_SPECIAL.get(ch, ch) for ch in value)
    value = _MARKDOWN_SPECIAL.sub(r"\\\1", value)
    return _LEADING_BLOCK.sub(lambda m: m.group(1) + "\\" + m.group(2), value, count=1)


def _verdict(verdict: str, label: str | None = None) -> str:
    return f"{VERDICT_ICONS[verdict]} {md_escape(label or verdict)}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _tiers(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    return fmt.tiers_in_order(candidate)


def _sweep_lines(sweep: dict[str, Any]) -> list[str]:
    """A sweep: one row per checkpoint, the pick in bold, the reason under it."""
    k = len(sweep["checkpoints"])
    lines = ["", f"### Sweep {md_escape(sweep['name'])}: {k} checkpoint{'s' if k != 1 else ''}, "
                 f"pick `{sweep['rule']}`, each judged at alpha/{k}", "",
             _row(["checkpoint", "step", "epoch", "target", "related", "general", "verdict"]),
             _row(["---"] * 7)]
    for c in sweep["checkpoints"]:
        name = md_escape(c["candidate"])
        verdict = _verdict(c["verdict"], c["verdict_label"]) if c["verdict"] in VERDICT_ICONS else "not scored"
        lines.append(_row([
            f"**{name}** (picked)" if c["candidate"] == sweep["pick"] else name,
            "—" if c["step"] is None else str(c["step"]),
            "—" if c["epoch"] is None else f"{c['epoch']:g}",
            *(_verdict(c["tiers"][t]) if t in c["tiers"] else "—" for t in TIERS),
            verdict]))
    lines += ["", f"{md_escape(sweep['name'])} {md_escape(sweep['reason'])}"]
    return lines


def _split_lines(candidate: dict[str, Any]) -> list[str]:
    """A QLoRA candidate's quantization and tuning effects (none for other candidates)."""
    rows = split_rows(candidate)
    if not rows:
        return []
    lines = ["", f"### QLoRA split: {md_escape(candidate['name'])}", "",
             md_escape(split_sentence(candidate) or ""), "",
             _row(["task", "quantization", "tuning", "as trained − base", "larger drop"]), _row(["---"] * 5)]
    lines += [_row([md_escape(r["task"]), f"{r['quantization']} {r['quantization_interval']}",
                    f"{r['tuning']} {r['tuning_interval']}", f"{r['as_trained']} {r['as_trained_interval']}",
                    r["larger"]]) for r in rows]
    return lines


def render_summary(results: dict[str, Any]) -> str:
    """The Markdown summary of a validated results dict."""
    release = results["release"]
    lines = [
        f"## gate: release {_verdict(release['verdict'], fmt.label(release))}",
        "",
        md_escape(release["reason"]),
        "",
        _row(["candidate", "tier", "deciding task", "delta", "verdict"]),
        _row(["---"] * 5),
    ]
    failing: list[list[str]] = []
    for candidate in results["candidates"]:
        name = md_escape(candidate["name"])
        for tier in _tiers(candidate):
            worst = next((t for t in tier["tasks"] if t["task"] == tier["worst_task"]), None)
            lines.append(_row([
                name,
                tier["tier"],
                md_escape(worst["task"]) if worst else "—",
                fmt.delta(worst, worst["delta"]) if worst else "—",
                _verdict(tier["verdict"]),
            ]))
            for task in tier["tasks"]:
                if task["verdict"] == "PASS":
                    continue
                note = fmt.waiver(task) if task.get("waiver") else task["advice"]["message"] if task["advice"] else ""
                failing.append([
                    name, tier["tier"], md_escape(task["task"]),
                    fmt.delta(task, task["delta"]),
                    fmt.interval(task),
                    fmt.margin(task),
                    _verdict(task["verdict"]),
                    md_escape(note) if note else "",
                ])
    if failing:
        lines += [
            "",
            "### Tasks that did not pass",
            "",
            _row(["candidate", "tier", "task", "delta", "interval", "policy", "verdict", "advice"]),
            _row(["---"] * 8),
        ]
        lines += [_row(cells) for cells in failing]
    for sweep in results.get("sweeps", []):
        lines += _sweep_lines(sweep)
    if results.get("waivers"):
        lines += ["", "### Waivers", ""]
        lines += [f"- {WAIVER_STATUS[w['status']]} {md_escape(w['note'])}: {md_escape(w['reason'])} "
                  f"(approved by {md_escape(w['approved_by'])})" for w in results["waivers"]]
    for candidate in results["candidates"]:
        lines += _split_lines(candidate)
    lines += ["", "### Candidates", ""]
    lines += [f"- **{md_escape(c['name'])}** {_verdict(c['verdict'], fmt.label(c))}: {md_escape(c['reason'])}"
              for c in results["candidates"]]
    lines.append("")
    return "\n".join(lines)
