"""The terminal view of results.json: a rich table per candidate."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from gate.report import format as fmt

STYLE = {"PASS": "bold green", "FAIL": "bold red", "INCONCLUSIVE": "bold yellow"}


def _num(x: Any, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def print_summary(results: dict[str, Any], console: Console | None = None) -> None:
    """One table per candidate (tier, task, base, candidate, delta, interval, n, verdict)."""
    console = console or Console(stderr=False)
    if not console.is_terminal:
        console.width = max(console.width, 150)  # logs and CI: don't squeeze the table into 80 columns
    for cand in results["candidates"]:
        table = Table(title=f"{cand['name']} ({cand['kind']}): [{STYLE.get(cand['verdict'], '')}]{fmt.label(cand)}[/]",
                      title_justify="left", show_lines=False)
        for col in ("tier", "task", "metric", "base", "cand", "delta", "interval", "threshold", "n", "verdict"):
            table.add_column(col, justify="right" if col in ("base", "cand", "delta", "threshold", "n") else "left")
        for tier in cand["tiers"]:
            for t in tier["tasks"]:
                n = str(t["n"]) if t.get("n_used") in (None, t["n"]) else f"{t['n_used']}/{t['n']}"
                table.add_row(tier["tier"], t["task"], t["metric"], _num(t["base_score"]), _num(t["candidate_score"]),
                              _num(t["delta"], True), f"[{_num(t['ci_low'], True)}, {_num(t['ci_high'], True)}]",
                              _num(t["threshold"], True), n, f"[{STYLE.get(t['verdict'], '')}]{t['verdict']}[/]")
        console.print(table)
        console.print(f"  {cand['reason']}")
    rel = results["release"]
    console.print(f"\nrelease: [{STYLE.get(rel['verdict'], '')}]{fmt.label(rel)}[/] - {rel['reason']}")
