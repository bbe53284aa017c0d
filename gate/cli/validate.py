"""`gate validate`: check everything that can be checked without a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gate.cli.common import config_options, handle_errors, overrides_from
from gate.config.load import load_setup, load_yaml_model
from gate.config.models import RunConfig, Suite, Thresholds
from gate.config.validate import validate
from gate.errors import ConfigError, GateError

KINDS: dict[str, type[RunConfig] | type[Suite] | type[Thresholds]] = {
    "run": RunConfig, "suite": Suite, "thresholds": Thresholds,
}


def _kind_of(path: Path) -> str:
    """Guess a YAML's kind from its top-level keys."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except Exception:
        return "run"
    if isinstance(data, dict):
        if "candidates" in data or "base" in data:
            return "run"
        if "tiers" in data and "name" in data:
            return "suite"
        if "tiers" in data:
            return "thresholds"
    return "run"


@click.command("validate")
@config_options
@click.option("--file", "files", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Validate a single suite, thresholds or run YAML (repeatable); kind guessed from its keys.")
@handle_errors
def validate_cmd(config: Path | None, files: tuple[Path, ...], **kwargs: Any) -> None:
    """Check everything `gate run` checks before serving: the config, suite and
    thresholds, paths and hub ids, tasks (built and planned), adapters against
    the base, the output folder, and the extras the engine and W&B need.

    Reports every problem at once, each with file, key and fix; exits 2 when
    there is any.
    """
    overrides = overrides_from(kwargs)
    problems = []
    if files:
        for f in files:
            try:
                load_yaml_model(f, KINDS[_kind_of(f)])
            except GateError as exc:
                problems += exc.problems
        if problems:
            raise ConfigError(problems=problems)
        click.echo(f"ok: {len(files)} file(s) valid")
        return
    setup = load_setup(config, overrides)
    checked = validate(setup)
    for note in [*setup.notes, *(n for t in checked.tasks for n in t.notes)]:
        click.echo(f"note: {note}")
    n = {tier: sum(1 for t in checked.tasks if t.tier == tier) for tier in ("target", "related", "general")}
    items = sum(p.n_items for p in checked.plans)
    click.echo(f"ok: suite {setup.suite.name} ({n['target']} target, {n['related']} related, {n['general']} general tasks, "
               f"{items:,} items), {len(setup.config.candidates)} candidate(s), engine {setup.config.engine.kind}")
