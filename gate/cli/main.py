"""The `gate` command group. Each command lives in its own module."""

from __future__ import annotations

import importlib

import click

from gate import __version__

# name -> "module:attribute": one module per command, registered on one group.
# Heavy libraries (torch, lm-eval, vllm) are imported inside the commands only.
COMMANDS = {
    "init": "gate.cli.init:init_cmd",
    "validate": "gate.cli.validate:validate_cmd",
    "toy": "gate.cli.toy:toy",
    "baseline": "gate.cli.baseline:baseline",
    "report": "gate.cli.report:report_cmd",
    "compare": "gate.cli.compare:compare_cmd",
    "lm-eval": "gate.cli.lm_eval_cmd:lm_eval_cmd",
    "waive": "gate.cli.waive:waive_cmd",
    "run": "gate.cli.run:run_cmd",
    "demo": "gate.cli.demo:demo_cmd",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gate")
def cli() -> None:
    """gate: a regression gate for fine-tuned model releases.

    Serves the base model and the candidates, runs a three-tier suite
    (target, related, general), compares against a stored baseline with
    paired statistics, and fails the release on catastrophic forgetting.

    Exit codes: 0 pass, 1 fail, 2 bad input, 3 infrastructure, 130 interrupted.
    """


for _name, _target in COMMANDS.items():
    _module, _attr = _target.split(":")
    cli.add_command(getattr(importlib.import_module(_module), _attr), _name)
