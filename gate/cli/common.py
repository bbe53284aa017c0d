"""What every command shares: error handling and the run-config flags.

Library code raises `gate.errors.GateError`; this module is the one place
that turns those into a message on stderr and the documented exit code, so
a user-fixable error never shows a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gate.config.load import Overrides, parse_named_path
from gate.errors import GateError, exit_code_for

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Map GateError to its exit code with a clean message; Ctrl-C to 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GateError as exc:
            click.echo(f"error: {exc.render()}", err=True)
            sys.exit(exit_code_for(exc))
        except KeyboardInterrupt as exc:
            click.echo("interrupted", err=True)
            sys.exit(exit_code_for(exc))
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # an unexpected bug: still the documented code
            import traceback

            traceback.print_exc()
            click.echo(f"error: internal error: {exc!r} (please report it)", err=True)
            sys.exit(exit_code_for(exc))

    return wrapper  # type: ignore[return-value]


def config_options(func: F) -> F:
    """--config and the flags that override it, shared by validate/run."""
    options = [
        click.option("--config", "-c", "config", type=click.Path(path_type=Path, dir_okay=False),
                     help="Run config (gate.yaml). Optional when the flags below say enough."),
        click.option("--base", help="Base model directory or hub id (overrides base.path)."),
        click.option("--adapter", "adapters", multiple=True, metavar="NAME=PATH",
                     help="A LoRA/QLoRA candidate; repeatable. Replaces the config's candidates."),
        click.option("--model", "models", multiple=True, metavar="NAME=PATH",
                     help="A full fine-tune candidate; repeatable. Replaces the config's candidates."),
        click.option("--sweep", "sweeps", multiple=True, metavar="NAME=DIR",
                     help="A training run's folder: each checkpoint-<step>/ is gated as NAME@<step> and "
                          "one is picked; repeatable. Replaces the config's candidates."),
        click.option("--suite", help="Suite YAML (overrides suite)."),
        click.option("--thresholds", help="Thresholds YAML (overrides thresholds)."),
        click.option("--waivers", help="Waivers YAML: accepted drops bound to exact candidates (overrides waivers)."),
        click.option("--dataset-mirror", help="Folder of datasets as MIRROR/ORG/NAME that lm-eval's tasks load "
                                              "from instead of the hub (overrides dataset_mirror)."),
        click.option("--engine", type=click.Choice(["vllm", "endpoint", "hf", "fake"]), help="Engine kind."),
        click.option("--out", help="Output directory (overrides out)."),
        click.option("--release", multiple=True, metavar="NAME", help="Candidate(s) whose verdict decides the release."),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def overrides_from(kwargs: dict[str, Any]) -> Overrides:
    """Build Overrides from the click kwargs of `config_options` (pops them)."""
    return Overrides(
        base=kwargs.pop("base", None),
        adapters=[parse_named_path(v, "--adapter") for v in kwargs.pop("adapters", ())],
        models=[parse_named_path(v, "--model") for v in kwargs.pop("models", ())],
        sweeps=[parse_named_path(v, "--sweep") for v in kwargs.pop("sweeps", ())],
        suite=kwargs.pop("suite", None),
        thresholds=kwargs.pop("thresholds", None),
        waivers=kwargs.pop("waivers", None),
        dataset_mirror=kwargs.pop("dataset_mirror", None),
        engine=kwargs.pop("engine", None),
        out=kwargs.pop("out", None),
        release=kwargs.pop("release", ()),
    )
