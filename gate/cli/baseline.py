"""`gate baseline`: look after the store of base-model results.

Each command is a thin shell over `gate.baseline.BaselineStore`; library
errors (StoreError exit 3, InputError exit 2) become messages and exit codes
in `gate.cli.common.handle_errors`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.table import Table

from gate.baseline.store import DEFAULT_STORE, EntryInfo, open_store
from gate.cli.common import handle_errors
from gate.errors import StoreError

F = TypeVar("F", bound=Callable[..., Any])


def store_option(func: F) -> F:
    """--store, shared by every baseline command."""
    return click.option(
        "--store", "store", default=str(DEFAULT_STORE), show_default=True, envvar="GATE_BASELINE_STORE",
        help="Baseline store: a directory or wandb://ENTITY/PROJECT/NAME[:ALIAS] (env GATE_BASELINE_STORE).",
    )(func)


def _console() -> Console:
    # The current sys.stdout (CliRunner swaps it); rich drops colour in pipes.
    # In CI logs and pipes there is no terminal width: use one that fits a row.
    console = Console(file=sys.stdout)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120
    return console


def _score(info: EntryInfo) -> str:
    return "-" if info.score is None else f"{info.score:.4g}"


def _model_of(info: EntryInfo) -> str:
    """A short readable model identity: the hub id, else the weights digest."""
    parts = info.parts
    if "model.hub_id" in parts:
        rev = parts.get("model.revision") or "unpinned"
        return f"{parts['model.hub_id']}@{rev[:8]}"
    return f"local {parts.get('model.weights', '?')[:8]}"


@click.group("baseline")
def baseline() -> None:
    """List, inspect, verify and remove stored base-model baselines."""


@baseline.command("list")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@handle_errors
def list_cmd(store: str, as_json: bool) -> None:
    """List the stored baselines, one row per task and base-model fingerprint."""
    entries = open_store(store).list()
    if as_json:
        click.echo(json.dumps([{"digest": e.digest, **e.to_row()} for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"no baselines in {store}")
        return
    table = Table(title=f"baselines in {store}", box=box.SIMPLE_HEAD)
    for column in ("digest", "task", "score", "items", "model", "engine", "created"):
        table.add_column(column, justify="right" if column in ("items", "score") else "left",
                         no_wrap=column != "model")
    for e in entries:
        engine = f"{e.parts.get('engine', '?')} {e.parts.get('engine_version', '')}".strip()
        table.add_row(e.digest[:12], e.task, f"{e.metric} {_score(e)}", str(e.n_items),
                      _model_of(e), engine, e.created[:10])
    _console().print(table)


@baseline.command("show")
@click.argument("digest")
@store_option
@handle_errors
def show_cmd(digest: str, store: str) -> None:
    """Show one entry (by digest or a unique prefix) and check its checksum."""
    bstore = open_store(store)
    info = bstore.show(digest)
    records = bstore.load(info.digest)  # verifies the checksum before printing anything
    table = Table(title=f"baseline {info.digest}", show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    rows = [("task", info.task), ("metric", info.metric), ("items", str(records.n)),
            ("score", _score(info)), ("created", info.created),
            ("gate version", info.gate_version), ("file", bstore.backend.where(info.name)),
            ("sha256", info.checksum)]
    rows += [(f"key: {k}", v) for k, v in info.parts.items()]
    for field, value in rows:
        table.add_row(field, value)
    _console().print(table)


@baseline.command("verify")
@store_option
@click.option("--repair", is_flag=True,
              help="Drop corrupt entries, adopt complete unlisted ones, rebuild the manifest.")
@handle_errors
def verify_cmd(store: str, repair: bool) -> None:
    """Check every entry against its checksum; exit 3 if any is damaged."""
    bstore = open_store(store)
    problems = bstore.verify(repair=repair)
    if not problems:
        click.echo(f"ok: {len(bstore.list())} baseline(s) verified in {store}")
        return
    if not repair:
        raise StoreError(problems=problems)
    for problem in problems:
        click.echo(f"repaired: {problem.render()}")
    click.echo(f"ok: {len(bstore.list())} baseline(s) kept in {store}")
    if published := bstore.flush():  # a wandb:// store publishes the repaired copy
        click.echo(published)


@baseline.command("rm")
@click.argument("digest")
@store_option
@handle_errors
def rm_cmd(digest: str, store: str) -> None:
    """Remove one entry (by digest or a unique prefix); the next run recomputes it."""
    bstore = open_store(store)
    removed = bstore.rm(digest)
    click.echo(f"removed {removed}")
    if published := bstore.flush():  # a wandb:// store publishes the copy without it
        click.echo(published)
