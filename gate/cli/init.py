"""`gate init`: a starting gate.yaml, three-tier suite, release policy and CI workflow.

A user with a fine-tune and no config answers a few questions (or passes
flags with `--yes`) and gets files that `gate validate` accepts:

    gate.yaml                            the run config: base, candidates, suite, policy
    suite.yaml                           target / related / general tiers (lm-eval tasks)
    thresholds.yaml                      the default release policy, every key commented
    .github/workflows/release-gate.yml   a caller of the gate's reusable workflow

Nothing is overwritten without `--force`: when any of the files exists, the
command exits 2 naming them and writes nothing.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import click
import yaml

from gate.atomic import atomic_write_text
from gate.cli.common import handle_errors
from gate.config.load import parse_named_path
from gate.errors import ConfigError, Problem

#: the shipped default suite's general tier: the standard forgetting check
GENERAL_DEFAULT = ("mmlu", "hellaswag", "arc_easy", "arc_challenge", "winogrande")
FILES = ("gate.yaml", "suite.yaml", "thresholds.yaml", ".github/workflows/release-gate.yml")


def _interactive() -> bool:
    """Questions are asked only on a terminal (never in CI, where stdin is not one)."""
    return sys.stdin.isatty()


def _template(name: str) -> str:
    return resources.files("gate.cli").joinpath("templates", name).read_text(encoding="utf-8")


def _ask(value: str | None, prompt: str, flag: str, interactive: bool, problems: list[Problem],
         default: str | None = None) -> str | None:
    if value:
        return value
    if interactive:
        return str(click.prompt(prompt, default=default))
    if default is not None:
        return default
    problems.append(Problem(f"{flag} is required with --yes (or run without --yes to be asked)", key=flag,
                            fix=f"pass {flag}"))
    return None


@click.command("init")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to write the files.")
@click.option("--base", help="Base model: a folder or a hub id (org/name).")
@click.option("--adapter", "adapters", multiple=True, metavar="NAME=PATH", help="A LoRA/QLoRA candidate; repeatable.")
@click.option("--model", "models", multiple=True, metavar="NAME=PATH", help="A full fine-tune candidate; repeatable.")
@click.option("--target", help="Tier 1: the lm-eval task (or task YAML) the fine-tune is for.")
@click.option("--related", multiple=True, help="Tier 2: a neighbouring task; repeatable.")
@click.option("--general", multiple=True,
              help=f"Tier 3: a general task; repeatable (default: {', '.join(GENERAL_DEFAULT)}).")
@click.option("--engine", type=click.Choice(["vllm", "endpoint", "hf", "fake"]), default="vllm", show_default=True)
@click.option("--yes", "-y", is_flag=True, help="Ask nothing: take flags and defaults (for scripts).")
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
@handle_errors
def init_cmd(folder: Path, base: str | None, adapters: tuple[str, ...], models: tuple[str, ...],
             target: str | None, related: tuple[str, ...], general: tuple[str, ...], engine: str, yes: bool,
             force: bool) -> None:
    """Write a gate.yaml, a three-tier suite, thresholds and a CI workflow to start from."""
    existing = [name for name in FILES if (folder / name).exists()]
    if existing and not force:
        raise ConfigError(problems=[Problem("already exists", file=str(folder / name),
                                            fix="pass --force to overwrite, or --dir another folder")
                                    for name in existing])
    interactive = not yes and _interactive()
    problems: list[Problem] = []
    base = _ask(base, "Base model (folder or hub id org/name)", "--base", interactive, problems)
    candidates = [{"name": n, "adapter": p} for n, p in (parse_named_path(v, "--adapter") for v in adapters)]
    candidates += [{"name": n, "model": p} for n, p in (parse_named_path(v, "--model") for v in models)]
    if not candidates:
        answer = _ask(None, "A LoRA adapter to gate, as NAME=PATH", "--adapter", interactive, problems)
        if answer:
            name, path = parse_named_path(answer, "--adapter")
            candidates.append({"name": name, "adapter": path})
    target = _ask(target, "Target task (the lm-eval task the fine-tune is for)", "--target", interactive, problems)
    related_tasks = list(related)
    if not related_tasks:
        answer = _ask(None, "A related task (a neighbour of the target)", "--related", interactive, problems)
        related_tasks = [answer] if answer else []
    general_tasks = list(general) or list(GENERAL_DEFAULT)
    if problems:
        raise ConfigError(problems=problems)

    texts = {
        "gate.yaml": _run_config(base or "", candidates, engine),
        "suite.yaml": _suite(target or "", related_tasks, general_tasks),
        "thresholds.yaml": _template("thresholds.yaml"),
        ".github/workflows/release-gate.yml": _template("release-gate.yml"),
    }
    _check(texts, folder)
    for name, text in texts.items():
        dest = folder / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dest, text)
        click.echo(f"wrote {dest}")
    click.echo(f"next: gate validate --config {folder / 'gate.yaml'}   then: gate run --config {folder / 'gate.yaml'}")


def _run_config(base: str, candidates: list[dict[str, str]], engine: str) -> str:
    body = yaml.safe_dump({
        "base": {"path": base, "dtype": "auto"},
        "candidates": candidates,
        "suite": "suite.yaml",
        "thresholds": "thresholds.yaml",
        "engine": {"kind": engine},
        "baseline": {"store": ".gate/baselines"},
        "out": "gate-out",
    }, sort_keys=False)
    return ("# Written by `gate init`. Check it with: gate validate --config gate.yaml\n"
            "# Run it with:           gate run --config gate.yaml\n"
            "# Pin `base.revision` to a commit when the base is a hub id, so the stored baseline stays valid.\n"
            + body)


def _suite(target: str, related: list[str], general: list[str]) -> str:
    body = yaml.safe_dump({
        "name": "my-suite",
        "description": "Written by `gate init`: the fine-tune's target, its neighbours, and general ability.",
        "tiers": {
            "target": [{"task": target}],
            "related": [{"task": t} for t in related],
            "general": [{"task": t} for t in general],
        },
    }, sort_keys=False)
    return ("# Runs with: gate run --config gate.yaml\n"
            "# Tier 1 must improve; tiers 2 and 3 may not drop beyond thresholds.yaml's margins.\n"
            "# Per task: `metric:` (default: the task's first), `samples: N` (a seeded subset), `num_fewshot:`.\n"
            + body)


def _check(texts: dict[str, str], folder: Path) -> None:
    """What is written parses as the models `gate run` reads (nothing is written otherwise)."""
    from gate.config.models import RunConfig, Suite, Thresholds
    from gate.config.yaml_io import parse_model

    problems: list[Problem] = []
    for name, model in (("gate.yaml", RunConfig), ("suite.yaml", Suite), ("thresholds.yaml", Thresholds)):
        try:
            parse_model(model, yaml.safe_load(texts[name]), str(folder / name))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems=problems)
