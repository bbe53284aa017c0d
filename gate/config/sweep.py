"""Sweep input: every checkpoint of one training run, gated as its own candidate.

    expand_sweeps(config, label) -> (config with concrete candidates, [Sweep])

Why: the question after a fine-tuning run is rarely "does this adapter pass?"
but "which of my checkpoints should I ship?" (the peak of generalization
comes early; later epochs memorise). Trainers (transformers' Trainer, TRL,
PEFT's examples, Axolotl) write `checkpoint-<step>/` folders under the run's
output folder, each with a `trainer_state.json`, and the final model into the
folder itself. A candidate given as `sweep: DIR` becomes one candidate per
checkpoint, named `NAME@<step>` (`NAME@final` for a final model whose step is
unknown), so serving, scoring, caching and judging treat checkpoints exactly
like any other candidate; the verdict stage then picks one
(gate.verdict.sweep).

The final model is kept when it is a training state no checkpoint holds: a
final folder whose weights are identical to the last checkpoint (Trainer
saves both) is that checkpoint, and listed once.

Bad input is found here, before anything is served (exit 2, one problem per
sweep naming the folder and the fix): a folder with no checkpoints, a
checkpoint that holds neither adapter nor model files, two checkpoints at the
same step, LoRA and full checkpoints mixed, thinning that names steps the run
does not have.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gate.errors import ConfigError, Problem

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
FINAL = "final"


@dataclass(frozen=True)
class Checkpoint:
    """One training state of a sweep, gated as the candidate `candidate`."""

    candidate: str
    #: the folder's name (`checkpoint-40`), or "final" for the run's own folder
    label: str
    step: int | None
    epoch: float | None
    path: str


@dataclass(frozen=True)
class Sweep:
    """A training run's checkpoints, in step order (the final model last)."""

    name: str
    folder: str
    kind: Literal["lora", "full"]
    checkpoints: tuple[Checkpoint, ...]
    #: W&B run the sweep's curve is written into (the training run), if any
    wandb_run: str | None = None

    @property
    def candidates(self) -> list[str]:
        return [c.candidate for c in self.checkpoints]

    def checkpoint(self, candidate: str) -> Checkpoint:
        return next(c for c in self.checkpoints if c.candidate == candidate)


def _kind_of(folder: Path) -> Literal["lora", "full"] | None:
    if (folder / "adapter_config.json").is_file():
        return "lora"
    if (folder / "config.json").is_file():
        return "full"
    return None


def _weights(folder: Path, kind: str) -> list[Path]:
    patterns = ("adapter_model*.safetensors", "adapter_model*.bin") if kind == "lora" else \
        ("*.safetensors", "pytorch_model*.bin")
    return sorted(p for pat in patterns for p in folder.glob(pat))


def _trainer_state(folder: Path) -> dict[str, Any]:
    path = folder / "trainer_state.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _step_epoch(folder: Path, fallback: int | None) -> tuple[int | None, float | None]:
    """Step and epoch from trainer_state.json (Trainer's `global_step`, `epoch`),
    else the step from the folder's name."""
    state = _trainer_state(folder)
    step = state.get("global_step")
    epoch = state.get("epoch")
    step = int(step) if isinstance(step, int | float) and not isinstance(step, bool) else fallback
    epoch = float(epoch) if isinstance(epoch, int | float) and not isinstance(epoch, bool) else None
    return step, epoch


def _same_weights(a: Path, b: Path, kind: str) -> bool:
    from gate.baseline.fingerprint import hash_file

    wa, wb = _weights(a, kind), _weights(b, kind)
    return [p.name for p in wa] == [p.name for p in wb] and \
        all(hash_file(x) == hash_file(y) for x, y in zip(wa, wb, strict=True))


def find_checkpoints(name: str, folder: Path, *, every: int | None = None, steps: list[int] | None = None,
                     wandb_run: str | None = None, file: str = "", key: str = "") -> Sweep:
    """The sweep under `folder`; raises ConfigError (exit 2) naming the folder and the fix."""
    def problem(message: str, fix: str) -> ConfigError:
        return ConfigError(f"sweep {name}: {message}", file=file or None, key=key or None, fix=fix)

    if not folder.is_dir():
        raise problem(f"folder not found: {folder}", "point `sweep` at a training run's output folder")
    found: list[tuple[int | None, float | None, str, Path]] = []
    for sub in sorted(folder.iterdir()):
        m = CHECKPOINT_DIR.match(sub.name)
        if m and sub.is_dir():
            step, epoch = _step_epoch(sub, int(m.group(1)))
            found.append((step, epoch, sub.name, sub))
    final_kind = _kind_of(folder)
    if not found and final_kind is None:
        raise problem(f"no checkpoint-<step>/ folders (and no final model) in {folder}",
                      "point `sweep` at the folder the trainer wrote its checkpoints into "
                      "(transformers' Trainer: output_dir); save checkpoints with save_strategy='epoch'")
    kinds: dict[str, list[str]] = {}
    for _, _, label, sub in found:
        sub_kind = _kind_of(sub)
        if sub_kind is None:
            raise problem(f"{sub} holds neither an adapter (adapter_config.json) nor a model (config.json)",
                          "remove the incomplete checkpoint folder, or copy its files again from the training run")
        if not _weights(sub, sub_kind):
            what = "adapter_model.safetensors" if sub_kind == "lora" else "model weights (*.safetensors)"
            raise problem(f"{sub} has no {what}",
                          "copy the checkpoint's weights again, or remove the incomplete folder")
        kinds.setdefault(sub_kind, []).append(label)
    if final_kind is not None:
        kinds.setdefault(final_kind, []).append(FINAL)
    if len(kinds) > 1:
        raise problem(f"mixes LoRA checkpoints ({', '.join(kinds['lora'][:3])}) with full-model ones "
                      f"({', '.join(kinds['full'][:3])})",
                      "sweep one training run at a time: its checkpoints are all adapters or all full models")
    kind: Literal["lora", "full"] = "lora" if "lora" in kinds else "full"
    found.sort(key=lambda f: (f[0] is None, f[0] or 0))
    seen: dict[int, str] = {}
    for step, _, label, _ in found:
        if step is not None and step in seen:
            raise problem(f"{seen[step]} and {label} are both at step {step}",
                          "keep one folder per step (remove the copy)")
        if step is not None:
            seen[step] = label
    if final_kind is not None:
        step, epoch = _step_epoch(folder, None)
        last = found[-1] if found else None
        if step is not None and step in seen:
            at = folder / seen[step]
            if not _same_weights(folder, at, kind):
                raise problem(f"the final model in {folder} and {seen[step]} are both at step {step} but "
                              "their weights differ",
                              "keep the checkpoint that was saved last, or fix global_step in trainer_state.json")
        elif not (step is None and last is not None and _same_weights(folder, last[3], kind)):
            found.append((step, epoch, FINAL, folder))
    found.sort(key=lambda f: (f[0] is None, f[0] or 0))
    found = _thin(found, every, steps, problem)
    checkpoints = tuple(Checkpoint(candidate=f"{name}@{step if step is not None else FINAL}", label=label,
                                   step=step, epoch=epoch, path=str(path))
                        for step, epoch, label, path in found)
    return Sweep(name=name, folder=str(folder), kind=kind, checkpoints=checkpoints, wandb_run=wandb_run)


def _thin(found: list[Any], every: int | None, steps: list[int] | None, problem: Any) -> list[Any]:
    """`steps`: exactly those; `every: N`: the first, every N-th after it, and the last
    (the last state is the one a run would ship without a sweep)."""
    if steps:
        have = {f[0]: f for f in found}
        missing = [s for s in steps if s not in have]
        if missing:
            raise problem(f"no checkpoint at step {', '.join(map(str, missing))}; the run has steps "
                          f"{', '.join(str(s) for s in have if s is not None)}",
                          "list steps the run saved, or drop `steps` to gate every checkpoint")
        return [have[s] for s in sorted(set(steps))]
    if every and every > 1:
        keep = {i for i in range(0, len(found), every)} | {len(found) - 1}
        return [f for i, f in enumerate(found) if i in keep]
    return found


def expand_sweeps(config: Any, label: str) -> tuple[Any, list[Sweep]]:
    """The run config with each sweep candidate replaced by its checkpoints
    (in place, in the config's order), and the sweeps found. Raises ConfigError
    listing every sweep's problem at once."""
    from gate.config.models import Candidate

    problems: list[Problem] = []
    sweeps: list[Sweep] = []
    concrete: list[Candidate] = []
    for i, cand in enumerate(config.candidates):
        if cand.sweep is None:
            concrete.append(cand)
            continue
        try:
            sweep = find_checkpoints(cand.name, Path(cand.sweep), every=cand.every, steps=cand.steps,
                                     wandb_run=cand.wandb_run, file=label, key=f"candidates.{i}.sweep")
        except ConfigError as exc:
            problems += exc.problems
            continue
        sweeps.append(sweep)
        source = "adapter" if sweep.kind == "lora" else "model"
        concrete += [Candidate.model_validate({"name": "checkpoint", source: c.path,
                                               "allow_pickle": cand.allow_pickle,
                                               "quantization": cand.quantization}).model_copy(
                         update={"name": c.candidate}) for c in sweep.checkpoints]
    if problems:
        raise ConfigError(problems=problems)
    return config.model_copy(update={"candidates": concrete}), sweeps
