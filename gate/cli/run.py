"""`gate run`: the main job, a thin shell over `gate.pipeline.run`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from gate.cli.common import config_options, handle_errors, overrides_from
from gate.cli.summary import print_verdict, run_quietly
from gate.cli.terminal import verbosity_options


@click.command("run")
@config_options
@click.option("--require-baseline", is_flag=True, default=None,
              help="Exit 2 instead of computing a missing or stale baseline (no GPU time on the base).")
@click.option("--store", help="Baseline store: a directory or wandb://ENTITY/PROJECT/NAME[:ALIAS] (overrides baseline.store).")
@click.option("--wandb-project", help="Log the verdict to this W&B project.")
@click.option("--wandb-entity", help="W&B entity (team or user).")
@click.option("--wandb-run-id", help="Attach to this W&B run (e.g. the fine-tuning run) instead of creating one.")
@verbosity_options
@handle_errors
def run_cmd(config: Path | None, require_baseline: bool | None, store: str | None, wandb_project: str | None,
            wandb_entity: str | None, wandb_run_id: str | None, verbose: bool, quiet_flag: bool,
            **kwargs: Any) -> None:
    """Serve base and candidates, run the suite, compare, write the verdict.

    Exit codes: 0 the release passes, 1 it fails, 2 bad input, 3 infrastructure.
    """
    from gate.config.load import load_setup

    overrides = overrides_from(kwargs)
    overrides.require_baseline = require_baseline
    overrides.store = store
    overrides.wandb_project, overrides.wandb_entity, overrides.wandb_run_id = wandb_project, wandb_entity, wandb_run_id
    setup = load_setup(config, overrides)
    result = run_quietly(setup, verbose=verbose, quiet_flag=quiet_flag)
    print_verdict(result, quiet_flag=quiet_flag)
    sys.exit(result.exit_code)
