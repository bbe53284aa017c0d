"""The terminal view of results.json: a rich table per candidate.

Numbers go through gate.report.format, as in every other output: accuracy
in % and points, perplexity-like metrics as a change relative to the base,
the policy in words in the delta's units.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gate.report import format as fmt
from gate.report.qlora import split_sentence

if TYPE_CHECKING:
    from gate.config.load import GateSetup
    from gate.pipeline import GateResult

STYLE = {"PASS": "bold green", "FAIL": "bold red", "INCONCLUSIVE": "bold yellow", "STOPPED": "dim", "WAIVED": "bold magenta"}


def print_summary(results: dict[str, Any], console: Console | None = None) -> None:
    """One table per candidate (tier, task, base, candidate, delta, interval, policy, n, verdict)."""
    console = console or Console(stderr=False)
    if not console.is_terminal:
        console.width = max(console.width, 150)  # logs and CI: don't squeeze the table into 80 columns
    unpicked = {c["candidate"] for s in results.get("sweeps", []) for c in s["checkpoints"]
                if c["candidate"] != s["pick"]}
    for cand in results["candidates"]:
        if cand["name"] in unpicked:  # a sweep's other checkpoints: one line each, below
            continue
        table = Table(title=f"{escape(cand['name'])} ({cand['kind']}): "
                            f"[{STYLE.get(cand['verdict'], '')}]{escape(fmt.label(cand))}[/]",
                      title_justify="left", show_lines=False)
        for col in ("tier", "task", "metric", "base", "cand", "delta", "interval", "policy", "n", "verdict"):
            table.add_column(col, justify="right" if col in ("base", "cand", "delta", "n") else "left")
        for tier in fmt.tiers_in_order(cand):
            for t in tier["tasks"]:
                table.add_row(tier["tier"], escape(t["task"]), escape(t["metric"]),
                              fmt.score(t, t["base_score"]), fmt.score(t, t["candidate_score"]),
                              fmt.delta(t, t["delta"]), fmt.interval(t), fmt.margin(t), fmt.items(t),
                              f"[{STYLE.get(t['verdict'], '')}]{t['verdict']}[/]")
        console.print(table)
        console.print(f"  {escape(cand['reason'])}")
        if sentence := split_sentence(cand):  # a QLoRA candidate: quantization vs tuning, as trained
            console.print(f"  {escape(sentence)}")
    for sweep in results.get("sweeps", []):
        print_sweep(sweep, console)
    rel = results["release"]
    console.print(f"\nrelease: [{STYLE.get(rel['verdict'], '')}]{escape(fmt.label(rel))}[/] - {escape(rel['reason'])}")


def print_sweep(sweep: dict[str, Any], console: Console) -> None:
    """A sweep: one line per checkpoint (step, epoch, each tier's verdict), the pick marked."""
    k = len(sweep["checkpoints"])
    console.print(f"\n[bold]{escape(sweep['name'])}[/]: sweep of {k} {sweep['kind']} checkpoint"
                  f"{'s' if k != 1 else ''} in {escape(sweep['folder'])} "
                  f"(pick: {sweep['rule']}; each judged at alpha/{k})")
    for c in sweep["checkpoints"]:
        tiers = "  ".join(f"{tier} [{STYLE.get(v, '')}]{v}[/]" for tier, v in c["tiers"].items())
        mark = "  <- picked" if c["candidate"] == sweep["pick"] else ""
        step = "" if c["step"] is None else f"step {c['step']}"
        epoch = "" if c["epoch"] is None else f"epoch {c['epoch']:g}"
        console.print(f"  {escape(c['candidate']):<24} {step:<11} {epoch:<9} "
                      f"[{STYLE.get(c['verdict'], 'dim')}]{escape(c['verdict_label']):<8}[/] {tiers}{mark}")
    console.print(f"  {escape(sweep['name'])} {escape(sweep['reason'])}")


def run_quietly(setup: GateSetup, *, verbose: bool = False, quiet_flag: bool = False) -> GateResult:
    """`gate.run` with the terminal a person wants: the gate's stages on one
    live line (plain lines in CI), the libraries' output in out/logs/gate.log
    unless `verbose`, nothing but the verdict when `quiet_flag`."""
    from gate.cli.terminal import StageLine, quiet, terminal_console
    from gate.pipeline import run

    log_file = Path(setup.config.out) / "logs" / "gate.log"
    term = terminal_console()  # before the streams go to the log
    with quiet(log_file, enabled=not verbose), StageLine(term, show=not quiet_flag) as stage:
        result = run(setup, progress=stage, track=stage.model)
    if not verbose and not quiet_flag:
        click.echo(f"log: {log_file} (lm-eval, datasets and transformers output)", err=True)
    return result


def print_verdict(result: GateResult, *, quiet_flag: bool = False) -> None:
    """The tables and the files written; with `quiet_flag`, the release line only."""
    if quiet_flag:
        rel = result.results["release"]
        click.echo(f"release: {fmt.label(rel)} - {rel['reason']}")
        return
    print_summary(result.results, Console())
    for name, path in result.files.items():
        click.echo(f"{name}: {path}")
