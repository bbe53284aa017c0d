"""Load and check everything up front: the run config, its suite and thresholds.

`load_setup` reads the run config (or builds one from CLI flags alone),
resolves every relative path against the file that names it, and loads the
suite and the thresholds. `check_setup` then checks what can be checked
without a model (files exist, tasks resolve, adapters look like adapters)
and returns ALL problems, so a user fixes them in one round.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.config.hub import (
    cache_folder,
    hub_snapshot,
    is_hub_id,
    looks_like_hub_id,
    resolve,
    split_revision,
)
from gate.config.models import RunConfig, Suite, Thresholds
from gate.config.policy import Waiver
from gate.config.sweep import Sweep, expand_sweeps
from gate.config.waivers import load_waivers
from gate.config.yaml_io import load_suite, load_thresholds, parse_model, read_yaml
from gate.errors import ConfigError, GateError, Problem
from gate.suites import shipped_suite


@dataclass
class Overrides:
    """CLI flags that override (or replace) the run config."""

    base: str | None = None
    adapters: Sequence[tuple[str, str]] = ()
    models: Sequence[tuple[str, str]] = ()
    sweeps: Sequence[tuple[str, str]] = ()
    suite: str | None = None
    thresholds: str | None = None
    waivers: str | None = None
    dataset_mirror: str | None = None
    engine: str | None = None
    out: str | None = None
    release: Sequence[str] = ()
    require_baseline: bool | None = None
    store: str | None = None
    wandb_project: str | None = None
    wandb_entity: str | None = None
    wandb_run_id: str | None = None

    def any(self) -> bool:
        return any([self.base, self.adapters, self.models, self.sweeps, self.suite, self.thresholds, self.waivers,
                    self.dataset_mirror, self.engine, self.out, self.release, self.require_baseline is not None, self.store])


@dataclass
class GateSetup:
    """A run config with absolute paths, plus the suite and thresholds it names."""

    config: RunConfig
    config_file: Path | None
    suite: Suite
    suite_file: Path
    thresholds: Thresholds
    thresholds_file: Path
    notes: list[str] = field(default_factory=list)
    #: candidates given as `sweep:` (their checkpoints are in config.candidates)
    sweeps: list[Sweep] = field(default_factory=list)
    #: every waiver of the waivers file (gate.config.waivers); which apply is
    #: decided by fingerprint when the run starts
    waivers: list[Waiver] = field(default_factory=list)
    #: candidate key -> why its hub id could not be resolved to a local folder
    unresolved: dict[str, str] = field(default_factory=dict)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out)


PATH_KEYS = ("suite", "thresholds", "waivers", "out", "cache_dir", "dataset_mirror")


def _resolve_path(key: str, value: str, root: Path) -> Path:
    """A path key's value against `root`; `suite: default` names a shipped suite
    (gate.suites) unless a file of that name is there."""
    if key == "suite":
        shipped = shipped_suite(value, root)
        if shipped is not None:
            return shipped
    return resolve(value, root)


def _absolutize(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """Resolve the run config's relative paths against `root` (its directory)."""
    data = dict(data)
    for key in PATH_KEYS:
        if isinstance(data.get(key), str):
            data[key] = str(_resolve_path(key, data[key], root))
    base = data.get("base")
    if isinstance(base, dict) and isinstance(base.get("path"), str) and not looks_like_hub_id(base["path"], root):
        data["base"] = {**base, "path": str(resolve(base["path"], root))}
    cands = data.get("candidates")
    if isinstance(cands, list):
        fixed = []
        for c in cands:
            if isinstance(c, dict):
                c = dict(c)
                for k in ("adapter", "model", "sweep"):
                    if isinstance(c.get(k), str) and not (k != "sweep" and looks_like_hub_id(c[k], root)):
                        c[k] = str(resolve(c[k], root))
            fixed.append(c)
        data["candidates"] = fixed
    bl = data.get("baseline")
    if isinstance(bl, dict) and isinstance(bl.get("store"), str) and "://" not in bl["store"]:
        data["baseline"] = {**bl, "store": str(resolve(bl["store"], root))}
    return data


def _apply_overrides(data: dict[str, Any], ov: Overrides, cwd: Path) -> dict[str, Any]:
    data = dict(data)
    if ov.base:
        path = ov.base if looks_like_hub_id(ov.base, cwd) else str(resolve(ov.base, cwd))
        data["base"] = {**(data.get("base") or {}), "path": path}
    if ov.adapters or ov.models or ov.sweeps:
        # Flags replace the candidates from the file: a CI job names exactly what it gates.
        data["candidates"] = [{"name": n, "adapter": _local_or_hub(p, cwd)} for n, p in ov.adapters] + [
            {"name": n, "model": _local_or_hub(p, cwd)} for n, p in ov.models] + [
            {"name": n, "sweep": str(resolve(p, cwd))} for n, p in ov.sweeps
        ]
    for key in ("suite", "thresholds", "waivers", "out", "dataset_mirror"):
        value = getattr(ov, key)
        if value:
            data[key] = str(_resolve_path(key, value, cwd))
    if ov.engine:
        data["engine"] = {**(data.get("engine") or {}), "kind": ov.engine}
    if ov.release:
        data["release"] = list(ov.release)
    if ov.require_baseline is not None or ov.store:
        bl = dict(data.get("baseline") or {})
        if ov.require_baseline is not None:
            bl["require"] = ov.require_baseline
        if ov.store:
            bl["store"] = ov.store if "://" in ov.store else str(resolve(ov.store, cwd))
        data["baseline"] = bl
    flags = {"project": ov.wandb_project, "entity": ov.wandb_entity, "run_id": ov.wandb_run_id}
    if any(flags.values()):
        wandb = {**(data.get("wandb") or {}), **{k: v for k, v in flags.items() if v}}
        if "project" not in wandb:
            raise ConfigError("--wandb-entity/--wandb-run-id need a project", key="--wandb-project",
                              fix="add --wandb-project NAME")
        data["wandb"] = wandb
    data.setdefault("thresholds", str(resolve("thresholds.yaml", cwd)))
    data.setdefault("out", str(resolve("gate-out", cwd)))
    data.setdefault("cache_dir", str(resolve(".gate/cache", cwd)))
    if "baseline" not in data or "store" not in data.get("baseline", {}):
        data["baseline"] = {**(data.get("baseline") or {}), "store": str(resolve(".gate/baselines", cwd))}
    return data


def _local_or_hub(value: str, cwd: Path) -> str:
    """A candidate flag's value: a hub id (`org/lora@REV`) as given, else an absolute path."""
    return value if looks_like_hub_id(value, cwd) else str(resolve(value, cwd))


def _resolve_hub_refs(config: RunConfig, label: str) -> tuple[RunConfig, list[Problem], list[str], dict[str, str]]:
    """Hub ids to the local snapshot folders that hold them (gate.config.hub).

    The base is looked up in the cache only (serving engines download a base
    themselves, and `gate validate` must not fetch gigabytes); adapters and full
    models are downloaded when the hub is reachable, since they are read as
    folders before serving. A revision given as `@REV` (or `base.revision`) is
    resolved to its commit: the folder the gate uses is named by it. A
    candidate that cannot be resolved stays as written, with the reason under
    its key in the returned dict: `check_paths` reports it beside every other
    problem.
    """
    problems: list[Problem] = []
    notes: list[str] = []
    unresolved: dict[str, str] = {}
    base = config.base
    if is_hub_id(base.path) and not Path(base.path).exists():
        repo, rev = split_revision(base.path)
        if rev is not None and base.revision is not None and rev != base.revision:
            problems.append(Problem(f"{base.path} pins revision {rev}, and base.revision says {base.revision}",
                                    file=label, key="base.revision", fix="give the revision once"))
        rev = rev or base.revision
        snapshot = hub_snapshot(repo, rev, download=False)
        if snapshot is None:
            base = base.model_copy(update={"path": repo, "revision": rev})
        else:
            base = base.model_copy(update={"path": str(snapshot), "revision": None})
            notes.append(_pin_note("base model", repo, rev, snapshot))
    cands = []
    for i, cand in enumerate(config.candidates):
        field_name = "adapter" if cand.adapter is not None else "model"
        value = cand.adapter if cand.adapter is not None else cand.model
        if value is None or not is_hub_id(value) or Path(value).exists():
            cands.append(cand)
            continue
        repo, rev = split_revision(value)
        key = f"candidates.{i}.{field_name}"
        try:
            snapshot = hub_snapshot(repo, rev, download=not hub_offline())
        except Exception as exc:  # huggingface_hub's errors: unknown repo or revision, no network
            unresolved[key] = f"as a hub id, the hub did not give it: {exc}"
            cands.append(cand)
            continue
        if snapshot is None:
            unresolved[key] = (f"as a hub id it is not in the local hub cache (expected under {cache_folder(repo)}; "
                               "HF_HUB_OFFLINE is set, so nothing is downloaded)")
            cands.append(cand)
            continue
        cands.append(cand.model_copy(update={field_name: str(snapshot)}))
        notes.append(_pin_note(f"candidate {cand.name}", repo, rev, snapshot))
    return config.model_copy(update={"base": base, "candidates": cands}), problems, notes, unresolved


def _pin_note(what: str, repo: str, rev: str | None, snapshot: Path) -> str:
    commit = snapshot.name
    if rev == commit:
        return f"{what} {repo}@{commit[:12]}: hub cache snapshot {snapshot}"
    said = f"at {rev}" if rev else "without a revision"
    return (f"{what} {repo} is a hub id {said}: commit {commit} in the hub cache ({snapshot}); "
            f"write {repo}@{commit} to pin it for a reproducible baseline")


def load_setup(config_file: Path | None, overrides: Overrides | None = None, cwd: Path | None = None) -> GateSetup:
    """Read the run config (or flags alone), then the suite and thresholds it names.

    Raises ConfigError listing every problem found in the files it could read.
    """
    cwd = cwd or Path(os.getcwd())
    ov = overrides or Overrides()
    label = str(config_file) if config_file else "command-line flags"
    data: dict[str, Any] = {}
    if config_file is not None:
        raw = read_yaml(config_file)
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError("expected a mapping at the top level", file=str(config_file), fix="write `key: value` pairs")
        data = _absolutize(dict(raw or {}), config_file.resolve().parent)
    elif not ov.any():
        raise ConfigError("no run config given", fix="pass --config gate.yaml, or --base, --suite and --adapter/--model flags")
    data = _apply_overrides(data, ov, cwd)
    config = parse_model(RunConfig, data, label)

    config, problems, hub_notes, unresolved = _resolve_hub_refs(config, label)
    sweeps: list[Sweep] = []
    try:
        config, sweeps = expand_sweeps(config, label)
    except GateError as exc:
        problems += exc.problems
    config, qlora_notes = _mark_qlora(config)
    hub_notes += qlora_notes
    suite_file = Path(config.suite)
    thresholds_file = Path(config.thresholds)
    suite = thresholds = None
    try:
        suite = load_suite(suite_file)
    except GateError as exc:
        problems += exc.problems
    try:
        thresholds = load_thresholds(thresholds_file)
    except GateError as exc:
        problems += exc.problems
    waivers: list[Waiver] = []
    if config.waivers is not None:
        try:
            waivers = load_waivers(Path(config.waivers))
        except GateError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems=problems)
    assert suite is not None and thresholds is not None
    return GateSetup(config, config_file, suite, suite_file, thresholds, thresholds_file, notes=hub_notes,
                     sweeps=sweeps, waivers=waivers, unresolved=unresolved)


def _mark_qlora(config: RunConfig) -> tuple[RunConfig, list[str]]:
    """Candidates whose model card says they were trained on a 4-bit base, marked
    QLoRA (`quantization`) so their change is split; notes saying so."""
    import importlib.util

    from gate.serve.adapters import trained_in_4bit

    if config.base.quantization:  # served in 4 bits: there is no 16-bit base to split from
        return config, []
    notes: list[str] = []
    cands = []
    for cand in config.candidates:
        if cand.kind == "lora" and cand.quantization is None and Path(cand.path).is_dir() \
                and trained_in_4bit(cand.path):
            if importlib.util.find_spec("bitsandbytes") is None:
                notes.append(f"candidate {cand.name}: its model card says it was trained on a 4-bit base; "
                             "install 'forgetting-gate[qlora]' to split its change into quantization and tuning")
            else:
                notes.append(f"candidate {cand.name}: its model card says it was trained on a 4-bit base "
                             "(bitsandbytes): its change is split into quantization and tuning")
                cand = cand.model_copy(update={"quantization": "bitsandbytes"})
        cands.append(cand)
    return config.model_copy(update={"candidates": cands}), notes


def check_paths(setup: GateSetup) -> list[Problem]:
    """Problems with the model and adapter paths (no model is loaded)."""
    cfg = setup.config
    label = str(setup.config_file) if setup.config_file else "command-line flags"
    problems: list[Problem] = []
    root = setup.config_file.resolve().parent if setup.config_file else Path.cwd()
    base = cfg.base.path
    if not looks_like_hub_id(base, root):
        if not Path(base).is_dir():
            problems.append(Problem("base model directory not found: " + base, file=label, key="base.path",
                                    fix="point it at a model directory (config.json + weights) or a hub id org/name"))
        elif not (Path(base) / "config.json").is_file():
            problems.append(Problem(f"no config.json in {base}", file=label, key="base.path",
                                    fix="point it at a saved model directory (save_pretrained output)"))
    elif hub_offline() and not in_hub_cache(base, cfg.base.revision):
        problems.append(Problem(f"{base} is not a local folder, and as a hub id it is not in the local hub cache "
                                "(HF_HUB_OFFLINE is set, so nothing is downloaded)", file=label, key="base.path",
                                fix="point it at a model directory, or download the model into the cache first "
                                    "(`huggingface-cli download ORG/NAME`)"))
    elif cfg.base.revision is None:
        setup.notes.append(f"base model {base} is a hub id without a revision: pin `base.revision` for a reproducible baseline")
    for i, cand in enumerate(cfg.candidates):
        key = f"candidates.{i}.{'adapter' if cand.kind == 'lora' else 'model'}"
        p = Path(cand.path)
        if key in setup.unresolved:
            repo, rev = split_revision(cand.path)
            problems.append(Problem(f"directory not found: {cand.path}; {setup.unresolved[key]}", file=label,
                                    key=key, fix=f"check the path; as a hub id, download it first: huggingface-cli "
                                                 f"download {repo}" + (f" --revision {rev}" if rev else "")))
        elif not p.is_dir():
            problems.append(Problem(f"directory not found: {p}", file=label, key=key, fix="check the path"))
        elif cand.kind == "lora" and not (p / "adapter_config.json").is_file():
            problems.append(Problem(f"no adapter_config.json in {p}", file=label, key=key,
                                    fix="point `adapter` at a PEFT adapter folder, or use `model` for a full fine-tune"))
        elif cand.kind == "full" and not (p / "config.json").is_file():
            problems.append(Problem(f"no config.json in {p}", file=label, key=key,
                                    fix="point `model` at a saved model folder, or use `adapter` for a LoRA"))
    if cfg.dataset_mirror is not None and not Path(cfg.dataset_mirror).is_dir():
        problems.append(Problem(f"dataset mirror folder not found: {cfg.dataset_mirror}", file=label, key="dataset_mirror",
                                fix="point it at a folder of datasets laid out as MIRROR/ORG/NAME, or remove the key"))
    unknown = sorted(set(setup.thresholds.tasks) - {spec.task for _, spec in setup.suite.tasks()})
    if unknown:
        setup.notes.append(f"{setup.thresholds_file}: overrides for tasks not in suite {setup.suite.name}: {', '.join(unknown)}")
    return problems


def hub_offline() -> bool:
    """HF_HUB_OFFLINE set the way huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def in_hub_cache(repo_id: str, revision: str | None) -> bool:
    """Whether the local hub cache holds the model's config.json (nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)


def parse_named_path(value: str, flag: str) -> tuple[str, str]:
    """Parse NAME=PATH from a CLI flag."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"expected NAME=PATH, got {value!r}", key=flag, fix=f"write {flag} careful=./out/careful")
    return name, path


def load_yaml_model(path: Path, model: type[RunConfig] | type[Suite] | type[Thresholds]) -> Any:
    """Validate any shipped YAML against its model (used by `gate validate FILE`)."""
    return parse_model(model, read_yaml(path), str(path))
