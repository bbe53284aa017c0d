"""gate: a continuous-evaluation regression gate for fine-tuned model releases.

The front door for Python users; the CLI calls the same functions::

    import gate

    setup = gate.load_config("gate.yaml")              # or gate.load_config(base=..., adapters=[...], suite=...)
    problems = gate.validate(setup)                    # every problem `run` would stop on, [] when none
    result = gate.run(setup)                           # serve, evaluate, compare, write out/
    result.verdict, result.exit_code, result.files["html"]

    result = gate.compare("lm-eval-out/base", {"tuned": "lm-eval-out/tuned"}, thresholds="thresholds.yaml")

Errors are `gate.GateError` subclasses carrying `problems` and the exit code
the CLI would use (2 bad input, 3 infrastructure); a regression is a result
(`result.exit_code == 1`), never an exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gate.errors import GateError, Problem

if TYPE_CHECKING:
    from gate.config.load import GateSetup
    from gate.pipeline import GateResult
    from gate.serve.base import Engine

__version__ = "0.1.0"

__all__ = ["GateError", "GateResult", "GateSetup", "Problem", "__version__", "compare", "load_config", "run",
           "validate"]

PathLike = str | os.PathLike[str]


def load_config(config: PathLike | None = None, *, base: str | None = None,
                adapters: Mapping[str, PathLike] | None = None, models: Mapping[str, PathLike] | None = None,
                suite: PathLike | None = None, thresholds: PathLike | None = None, engine: str | None = None,
                out: PathLike | None = None, release: Sequence[str] = (), require_baseline: bool | None = None,
                store: str | None = None) -> GateSetup:
    """Read a run config (gate.yaml) and the suite and thresholds it names.

    The keyword arguments are the CLI's flags: they override the file, and
    `adapters` / `models` ({name: path}) replace its candidates. Raises
    ConfigError (exit 2) listing every problem in the files."""
    from gate.config.load import Overrides, load_setup

    ov = Overrides(
        base=base, adapters=[(n, str(p)) for n, p in (adapters or {}).items()],
        models=[(n, str(p)) for n, p in (models or {}).items()],
        suite=str(suite) if suite else None, thresholds=str(thresholds) if thresholds else None,
        engine=engine, out=str(out) if out else None, release=release, require_baseline=require_baseline,
        store=store,
    )
    return load_setup(Path(config) if config is not None else None, ov)


def validate(config: GateSetup | PathLike) -> list[Problem]:
    """Every problem `run` would stop on before serving anything; [] when none."""
    from gate.config.load import GateSetup
    from gate.config.validate import find_problems

    try:
        setup = config if isinstance(config, GateSetup) else load_config(config)
    except GateError as exc:
        return list(exc.problems)
    problems, _ = find_problems(setup)
    return problems


def run(config: GateSetup | PathLike, *, progress: Callable[[str], None] | None = None,
        engine: Engine | None = None) -> GateResult:
    """Gate the config's candidates against its base and write out/ (results.json,
    report.html, junit.xml, summary.md). `progress` receives one line per step."""
    from gate.config.load import GateSetup
    from gate.pipeline import run as run_pipeline

    setup = config if isinstance(config, GateSetup) else load_config(config)
    return run_pipeline(setup, progress=progress, engine=engine)


def compare(base: PathLike, candidates: Mapping[str, PathLike], *, thresholds: PathLike = "thresholds.yaml",
            suite: PathLike | None = None, out: PathLike = "gate-out", release: Sequence[str] = ()) -> GateResult:
    """Gate lm-eval `--log_samples` output folders ({name: folder}) against the
    base's folder, with nothing served; writes the same outputs as `run`."""
    from gate.config.yaml_io import load_suite, load_thresholds
    from gate.pipeline import compare as compare_pipeline

    return compare_pipeline(
        Path(base), [(name, Path(p)) for name, p in candidates.items()], load_thresholds(Path(thresholds)),
        out=Path(out), suite=load_suite(Path(suite)) if suite else None,
        suite_file=str(suite) if suite else None, release=list(release) or None)


def __getattr__(name: str) -> Any:
    """The result and setup types, imported on first use (`import gate` stays light)."""
    if name == "GateResult":
        from gate.pipeline import GateResult

        return GateResult
    if name == "GateSetup":
        from gate.config.load import GateSetup

        return GateSetup
    raise AttributeError(f"module 'gate' has no attribute {name!r}")
