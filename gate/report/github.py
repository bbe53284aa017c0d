"""GitHub Actions: the job summary and error annotations for failing tasks.

Workflow commands are parsed by the runner from stdout, so untrusted text in
them (task names, reasons) must be escaped as the runner expects, or a task
named "x::warning::y" could forge commands: in the message `%`, CR and LF are
percent-encoded; in a property value (`title=`) also `:` and `,`. This is
the escaping of @actions/core's `toCommandValue`/`escapeData`/`escapeProperty`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from gate.report import format as fmt


def escape_data(text: str) -> str:
    """A workflow-command message."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow-command property value (e.g. `title=`)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation_lines(results: dict[str, Any]) -> list[str]:
    """One `::error` line per FAIL task, one `::warning` per INCONCLUSIVE or WAIVED
    task (none for a STOPPED task: it was not judged, and its candidate's FAIL is annotated)."""
    lines = []
    for candidate in results["candidates"]:
        for tier in fmt.tiers_in_order(candidate):
            for task in tier["tasks"]:
                if task["verdict"] in ("PASS", "STOPPED"):  # STOPPED: not judged, the FAIL says why
                    continue
                level = "error" if task["verdict"] == "FAIL" else "warning"  # WAIVED: a warning, never silent
                title = f"gate {task['verdict']}: {candidate['name']} / {tier['tier']} / {task['task']}"
                message = (f"{task['metric']} delta {fmt.delta(task, task['delta'])} "
                           f"{fmt.interval(task)}; policy {fmt.margin(task)}.")
                if task.get("waiver"):
                    message += f" {fmt.waiver(task)}."
                if task["advice"]:
                    message += f" {task['advice']['message']}"
                lines.append(f"::{level} title={escape_property(title)}::{escape_data(message)}")
    return lines


def publish(results: dict[str, Any], summary_md: str, *,
            environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> None:
    """Append the summary to $GITHUB_STEP_SUMMARY (when set) and, inside
    GitHub Actions ($GITHUB_ACTIONS == "true"), print annotations to stdout."""
    env = os.environ if environ is None else environ
    out = sys.stdout if stream is None else stream
    summary_file = env.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with Path(summary_file).open("a", encoding="utf-8") as handle:
            handle.write(summary_md if summary_md.endswith("\n") else summary_md + "\n")
    if env.get("GITHUB_ACTIONS") == "true":
        for line in annotation_lines(results):
            print(line, file=out)
        out.flush()
