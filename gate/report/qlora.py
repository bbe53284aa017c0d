"""A QLoRA candidate's split, in words and table rows, from results.json's `qlora_split`.

The numbers come from gate.verdict.qlora_split; this module only shows them,
with the same units as every other table (gate.report.format): each effect is
shown against the model it starts from (the quantization effect against the
16-bit base, the tuning effect against the 4-bit base).
"""

from __future__ import annotations

from typing import Any

from gate.report import format as fmt

EFFECTS = ("quantization", "tuning", "as_trained")
EFFECT_TITLES = {"quantization": "quantization (4-bit base − 16-bit base)",
                 "tuning": "tuning (adapter − 4-bit base)",
                 "as_trained": "as trained (adapter on 4-bit base − 16-bit base)"}


def effect_task(row: dict[str, Any], effect: str) -> dict[str, Any]:
    """One effect of one task as a task-shaped dict the formatters take."""
    return {"task": row["task"], "metric": row["metric"], "aggregation": row["aggregation"],
            "higher_is_better": row["higher_is_better"], **row[effect]}


def split_rows(candidate: dict[str, Any]) -> list[dict[str, str]]:
    """Per task: the three scores and each effect's delta with its interval, formatted."""
    split = candidate.get("qlora_split")
    if not split:
        return []
    rows = []
    for row in split["tasks"]:
        total = effect_task(row, "as_trained")
        cells = {"task": row["task"], "tier": row["tier"], "metric": row["metric"],
                 "base_16bit": fmt.score(total, row["as_trained"]["base_score"]),
                 "base_4bit": fmt.score(total, row["quantization"]["candidate_score"]),
                 "as_trained_score": fmt.score(total, row["as_trained"]["candidate_score"]),
                 "larger": row["larger"] or "—"}
        for effect in EFFECTS:
            task = effect_task(row, effect)
            cells[effect] = fmt.delta(task, task["delta"])
            cells[f"{effect}_interval"] = fmt.interval(task)
        rows.append(cells)
    return rows


def split_sentence(candidate: dict[str, Any]) -> str | None:
    """"As trained, toy_text rose +7.2% ...: the tuning is the larger part." (None: no split or no drop)."""
    split = candidate.get("qlora_split")
    if not split:
        return None
    row = next((r for r in split["tasks"] if r["task"] == split["deciding_task"]), None)
    if row is None:
        return (f"{candidate['name']} is a QLoRA adapter: neither quantizing the base nor the tuning lowered any "
                "task (the split, per task, is below).")
    q, t, total = (effect_task(row, e) for e in EFFECTS)
    part = "quantizing the base" if split["larger"] == "quantization" else "the tuning"
    unsettled = ("; their intervals overlap, so these items do not settle which is larger"
                 if _overlap(q, t) else "")
    return (f"{candidate['name']} is a QLoRA adapter. Scored as trained (on the 4-bit base), its largest drop is on "
            f"{row['task']}: {fmt.delta(total, total['delta'])} against the 16-bit base; quantizing the base "
            f"accounts for {fmt.delta(q, q['delta'])} {fmt.interval(q)} and the tuning for "
            f"{fmt.delta(t, t['delta'])} {fmt.interval(t)}: {part} is the larger part{unsettled}.")


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two effects' intervals share a value (unknown bounds count as overlapping)."""
    bounds = (a["ci_low"], a["ci_high"], b["ci_low"], b["ci_high"])
    if any(x is None for x in bounds):
        return True
    return bool(a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"])


def quantization_remedy(candidate: dict[str, Any]) -> str | None:
    """The advice when quantizing the base is the larger part of the drop; None otherwise."""
    split = candidate.get("qlora_split")
    if not split or split["larger"] != "quantization":
        return None
    row = next(r for r in split["tasks"] if r["task"] == split["deciding_task"])
    q, t = effect_task(row, "quantization"), effect_task(row, "tuning")
    return (f"As trained, quantizing the base costs more on {row['task']} ({fmt.delta(q, q['delta'])}) than the "
            f"tuning does ({fmt.delta(t, t['delta'])}): serve the adapter on the 16-bit base (or merged into the "
            "16-bit weights), never on the 4-bit one, and where memory allows train it as a plain LoRA on the "
            "16-bit base. A lower rate or fewer epochs will not recover a quantization loss.")
