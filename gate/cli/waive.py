"""`gate waive`: add a waiver for one task of one candidate, from a results.json
(gate.config.waivers builds and appends the entry)."""

from __future__ import annotations

from pathlib import Path

import click

from gate.cli.common import handle_errors


@click.command("waive")
@click.option("--results", "results_file", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The run's results.json (the candidate's fingerprint and measured drop come from it).")
@click.option("--candidate", required=True, help="The candidate's name in the results.")
@click.option("--task", help="The task whose drop is accepted.")
@click.option("--tier", type=click.Choice(["related", "general"]), help="Or a whole drop tier.")
@click.option("--reason", required=True, help="Why the drop is accepted (a ticket, a product decision).")
@click.option("--by", "approved_by", required=True, help="Who accepts it.")
@click.option("--expires", required=True, help="The last day it applies, YYYY-MM-DD (UTC).")
@click.option("--allowed-drop", type=float,
              help="The largest drop accepted, in thresholds.yaml's units (0.12 = 12 points of accuracy; for "
                   "perplexity-like metrics a share of the base, 0.1 = 10%). Default: the worse end of the "
                   "measured interval.")
@click.option("--file", "waivers_file", type=click.Path(path_type=Path, dir_okay=False), default=Path("waivers.yaml"),
              show_default=True, help="The waivers file to add to (created if missing).")
@handle_errors
def waive_cmd(results_file: Path, candidate: str, task: str | None, tier: str | None, reason: str,
              approved_by: str, expires: str, allowed_drop: float | None, waivers_file: Path) -> None:
    """Accept a candidate's drop on a task (or tier) until a date, bound to its exact weights.

    Exit codes: 0 written, 2 bad input (nothing written).
    """
    from gate.config.waivers import append_entry, drop_words, entry_from_results, utc_today
    from gate.report import format as fmt
    from gate.report.results import load_results

    results = load_results(results_file)
    entry, covered = entry_from_results(results, str(results_file), candidate=candidate, task=task, tier=tier,
                                        reason=reason, approved_by=approved_by, expires=expires,
                                        allowed_drop=allowed_drop, today=utc_today())
    append_entry(waivers_file, entry)
    measured = "; ".join(f"{t['task']}: {fmt.delta(t, t['delta'])} {fmt.interval(t)}, {t['verdict']}"
                         for t in covered)
    click.echo(f"{waivers_file}: waiver added for {candidate} ({task or 'tier ' + str(tier)}), accepting a drop of "
               f"{drop_words(entry['allowed_drop'])} until {entry['expires'].isoformat()} (measured: {measured})")
    click.echo(f"use it: gate run ... --waivers {waivers_file}   (or `waivers: {waivers_file.name}` in gate.yaml)")
