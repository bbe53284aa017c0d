"""What to try when a candidate forgot: the seed's advice, made concrete.

Forgetting shows as a FAIL in the related or general tier. The remedies are
the usual four (lower the learning rate, train for less / stop early, mix
general data back in — "replay" — and prefer LoRA or a lower rank over a full
fine-tune), and for a QLoRA adapter whose 4-bit base costs more than its
tuning (gate.report.qlora), keeping the base in 16 bits. They are far more useful with the candidate's own numbers in them
("trained at lr 1e-2 for 8 epochs ... try lr 1e-3"), so `training_facts`
reads those numbers from the files a PEFT/HF Trainer run leaves behind and the
run stores them in results.json under the candidate's `training`; the report
renders from that stored copy alone.

The learning rate says where it comes from (`learning_rate_source`). The
configured rate is read where a readable file beside the run states it: a
model card's hyperparameter list (`- learning_rate: 5e-03`, as transformers'
Trainer writes it), or a training config saved with the run
(`training_args.json|yaml`, LLaMA-Factory's `training_args.yaml`, an
Axolotl-style `config.yaml` with a top-level `learning_rate`, a torchtune
config's `optimizer.lr`). `training_args.bin` states it too, but it is a
pickle: loading it runs code, so it is never read. Otherwise the rate is the
largest one logged in trainer_state.json, said as "peak logged": with a
decaying schedule and no warm-up the first log already sits below the
setting (a 5e-3 run logs 4e-3 at step 10 of 50), so it is never presented as
the rate the run was configured with.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate.report.qlora import quantization_remedy

log = logging.getLogger(__name__)

FORGETTING_TIERS = ("related", "general")
_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")


@dataclass(frozen=True)
class Remedy:
    """One thing to change in the next training run, and why."""

    title: str
    advice: str


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing or unusable.

    Training facts only enrich the advice; a damaged trainer_state.json must
    not fail a release decision, so problems are logged, not raised.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s: ignored for remedies (%s)", path, exc)
        return None
    if not isinstance(data, dict):
        log.warning("%s: ignored for remedies (not a JSON object)", path)
        return None
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _trainer_state_file(candidate_dir: Path) -> Path | None:
    """trainer_state.json in the folder itself, else in its latest checkpoint-N."""
    direct = candidate_dir / "trainer_state.json"
    if direct.is_file():
        return direct
    checkpoints = []
    if candidate_dir.is_dir():
        for child in candidate_dir.iterdir():
            match = _CHECKPOINT.search(child.name)
            if match and (child / "trainer_state.json").is_file():
                checkpoints.append((int(match.group(1)), child / "trainer_state.json"))
    return max(checkpoints)[1] if checkpoints else None


def _adapter_facts(config: dict[str, Any]) -> dict[str, Any]:
    modules = config.get("target_modules")
    if isinstance(modules, list):
        modules = sorted(str(m) for m in modules)
    elif not isinstance(modules, str):
        modules = None
    peft_type = config.get("peft_type")
    return {
        "r": _integer(config.get("r")),
        "lora_alpha": _number(config.get("lora_alpha")),
        "target_modules": modules,
        "peft_type": peft_type if isinstance(peft_type, str) else None,
    }


#: files that may state the configured learning rate, in the candidate's folder or
#: the run folder above a checkpoint-N, in this order
CONFIG_FILES = ("training_args.json", "training_args.yaml", "config.yaml", "config.yml")
#: a model card's hyperparameter list item, as transformers' Trainer writes it
_CARD_RATE = re.compile(r"^\s*[-*]\s*learning_rate:\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$", re.MULTILINE)


def _rate_in_config(data: Any) -> float | None:
    """A top-level `learning_rate` (or `lr`), or torchtune's `optimizer: {lr: ...}`."""
    if not isinstance(data, dict):
        return None
    for key in ("learning_rate", "lr"):
        rate = _number(_as_float(data.get(key)))
        if rate is not None and rate > 0:
            return rate
    optimizer = data.get("optimizer")
    if isinstance(optimizer, dict):
        rate = _number(_as_float(optimizer.get("lr")))
        if rate is not None and rate > 0:
            return rate
    return None


def _as_float(value: Any) -> Any:
    """YAML 1.1 reads `5e-5` (no dot) as a string; accept it as the number it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return value


def configured_learning_rate(candidate_dir: Path) -> tuple[float, str] | None:
    """The configured learning rate and the file that states it, or None."""
    folders = [candidate_dir]
    if _CHECKPOINT.search(candidate_dir.name):
        folders.append(candidate_dir.parent)
    for folder in folders:
        card = folder / "README.md"
        if card.is_file():
            try:
                match = _CARD_RATE.search(card.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                match = None
            if match and (rate := _number(_as_float(match.group(1)))) is not None and rate > 0:
                return rate, _relative(card, candidate_dir)
        for name in CONFIG_FILES:
            path = folder / name
            if not path.is_file():
                continue
            if path.suffix == ".json":
                data: Any = _read_json(path)
            else:
                import yaml

                try:
                    data = yaml.safe_load(path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                    log.warning("%s: ignored for remedies (%s)", path, exc)
                    continue
            rate = _rate_in_config(data)
            if rate is not None:
                return rate, _relative(path, candidate_dir)
    return None


def _relative(path: Path, candidate_dir: Path) -> str:
    """`README.md`, or `../training_args.yaml` for the run folder above a checkpoint."""
    return "README.md" if path == candidate_dir / "README.md" else (
        path.name if path.parent == candidate_dir else f"../{path.name}")


def _trainer_facts(state: dict[str, Any]) -> dict[str, Any]:
    history = state.get("log_history")
    rates = []
    if isinstance(history, list):
        rates = [r for e in history if isinstance(e, dict)
                 if (r := _number(e.get("learning_rate"))) is not None]
    best_step = _integer(state.get("best_global_step"))
    checkpoint = state.get("best_model_checkpoint")
    if best_step is None and isinstance(checkpoint, str):
        match = _CHECKPOINT.search(checkpoint.rstrip("/"))
        best_step = int(match.group(1)) if match else None
    return {
        # The logged rate is the scheduled one at each logging step: its maximum is
        # the peak that was logged, at or below the configured rate.
        "learning_rate": max(rates) if rates else None,
        "learning_rate_source": "peak logged" if rates else None,
        "num_train_epochs": _number(state.get("num_train_epochs")),
        "epoch": _number(state.get("epoch")),
        "global_step": _integer(state.get("global_step")),
        "max_steps": _integer(state.get("max_steps")),
        "best_global_step": best_step,
        "best_general_step": None,
        "best_metric": _number(state.get("best_metric")),
    }


def training_facts(candidate_dir: Path) -> dict[str, Any] | None:
    """The `training` object for results.json, from a candidate's folder.

    Reads `adapter_config.json` (PEFT) and `trainer_state.json` (HF Trainer;
    in the folder or its latest `checkpoint-N`). Never reads
    `training_args.bin`: it is a pickle. Returns None when neither is there.
    """
    candidate_dir = Path(candidate_dir)
    config = _read_json(candidate_dir / "adapter_config.json")
    state_file = _trainer_state_file(candidate_dir)
    state = _read_json(state_file) if state_file else None
    if config is None and state is None:
        return None
    trainer = _trainer_facts(state) if state is not None else None
    configured = configured_learning_rate(candidate_dir) if trainer is not None else None
    if trainer is not None and configured is not None:
        trainer["learning_rate"], trainer["learning_rate_source"] = configured
    return {
        "adapter_config": _adapter_facts(config) if config is not None else None,
        "trainer_state": trainer,
    }


def forgetting_found(candidate: dict[str, Any]) -> bool:
    """A FAIL in a tier that measures what the base model already could do."""
    return any(t["tier"] in FORGETTING_TIERS and t["verdict"] == "FAIL"
               for t in candidate["tiers"])


def learning_rate_text(rate: float) -> str:
    """0.01 -> "1e-2", 0.0002 -> "2e-4", 3e-5 -> "3e-5": how people write rates,
    to three significant digits (a logged 4.96e-3 is not a 5e-3)."""
    mantissa, exponent = f"{rate:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _logged(state: dict[str, Any]) -> bool:
    """The rate is the peak logged, not a configured one (results written before
    `learning_rate_source` existed carry none: said as logged, the safe claim)."""
    return state.get("learning_rate_source") in (None, "peak logged")


def _number_text(value: float) -> str:
    return f"{value:g}"


def summary_sentence(candidate: dict[str, Any]) -> str | None:
    """"This adapter was trained at lr 1e-2 for 8 epochs on rank 16 ..." or None."""
    training = candidate.get("training") or {}
    config = training.get("adapter_config") or {}
    state = training.get("trainer_state") or {}
    parts = []
    if state.get("learning_rate") is not None:
        if _logged(state):
            parts.append(f"with a peak logged lr of {learning_rate_text(state['learning_rate'])}")
        else:
            parts.append(f"at lr {learning_rate_text(state['learning_rate'])}")
    if state.get("num_train_epochs") is not None:
        parts.append(f"for {_number_text(state['num_train_epochs'])} epochs")
    if config.get("r") is not None:
        rank = f"on rank {config['r']}"
        if config.get("lora_alpha") is not None:
            rank += f" (alpha {_number_text(config['lora_alpha'])})"
        parts.append(rank)
    modules = config.get("target_modules")
    if modules:
        parts.append("targeting " + (", ".join(modules) if isinstance(modules, list) else modules))
    if not parts:
        return None
    noun = "model" if candidate["kind"] == "full" else "adapter"
    return f"This {noun} was trained " + " ".join(parts) + "."


def _failed_tasks(candidate: dict[str, Any]) -> list[str]:
    return [task["task"] for tier in candidate["tiers"] if tier["tier"] in FORGETTING_TIERS
            for task in tier["tasks"] if task["verdict"] == "FAIL"]


def remedies(candidate: dict[str, Any]) -> list[Remedy]:
    """The remedies for a forgetting candidate (empty when it did not forget)."""
    if not forgetting_found(candidate):
        return []
    training = candidate.get("training") or {}
    config = training.get("adapter_config") or {}
    state = training.get("trainer_state") or {}
    found: list[Remedy] = []
    if quantized := quantization_remedy(candidate):  # a QLoRA candidate whose 4-bit base costs most
        found.append(Remedy("Keep the base in 16 bits", quantized))

    rate = state.get("learning_rate")
    if rate is not None and _logged(state):
        lr = (f"Its logged learning rate peaked at {learning_rate_text(rate)} (the configured rate is in no "
              f"file the gate reads; training_args.bin is a pickle); try about {learning_rate_text(rate / 10)} "
              "(10× lower).")
    elif rate is not None:
        lr = (f"It was trained at lr {learning_rate_text(rate)} (set in {state['learning_rate_source']}); "
              f"try lr {learning_rate_text(rate / 10)} (10× lower).")
    else:
        lr = "Try a learning rate about 10× lower than this run's."
    found.append(Remedy("Lower the learning rate", lr + " A rate that is too high overwrites "
                        "the pre-trained weights instead of adapting them."))

    epochs, best, last = state.get("num_train_epochs"), state.get("best_global_step"), state.get("global_step")
    if best is not None and last and best < last:
        at = ""
        if state.get("epoch"):
            at = f" (about epoch {state['epoch'] * best / last:.1f})"
        stop = (f"The trainer's best checkpoint was step {best} of {last}{at}: stop there, "
                "with load_best_model_at_end=True and early stopping on a held-out general set.")
    elif epochs is not None:
        stop = (f"It ran {_number_text(epochs)} epochs; try {_number_text(max(1, epochs // 2))} "
                "or fewer, with early stopping on a held-out general set.")
    else:
        stop = "Train for fewer epochs, with early stopping on a held-out general set."
    found.append(Remedy("Train for less, stop early", stop + " Generalisation often peaks "
                        "early; later epochs memorise the fine-tuning set."))

    failed = ", ".join(_failed_tasks(candidate))
    found.append(Remedy("Mix general data back in (replay)",
                        "Add a small share (5-10%) of general-purpose data to the fine-tuning "
                        f"set, of the kind the failing tasks measure ({failed})."))

    if candidate["kind"] == "full":
        lora = ("This is a full fine-tune: LoRA or QLoRA trains under 1% of the parameters "
                "and keeps the base model's weights, so it forgets far less.")
    elif config.get("r") is not None and config["r"] > 4:
        r = config["r"]
        alpha = config.get("lora_alpha")
        keep = (f", lora_alpha={_number_text(alpha / 2)} to keep alpha/r"
                if alpha is not None else "")
        lora = f"It uses rank {r}; try r={r // 2}{keep}: a smaller update moves the model less."
    else:
        lora = ("Prefer LoRA at a low rank over a full fine-tune; if the rank is already low, "
                "the other remedies matter more.")
    found.append(Remedy("Prefer LoRA, a lower rank", lora))
    return found


def sweep_remedy(sweep: dict[str, Any]) -> str | None:
    """"Ship checkpoint-40: epoch 1 is the last before general capability drops
    (overfit@80 fails the general tier)." for a sweep whose later checkpoints
    fail; the pick alone otherwise; None when none passes."""
    pick = next((c for c in sweep["checkpoints"] if c["candidate"] == sweep["pick"]), None)
    if pick is None:
        return None
    when = (f"epoch {pick['epoch']:g}" if pick["epoch"] is not None
            else f"step {pick['step']}" if pick["step"] is not None else pick["label"])
    if sweep.get("drops_at"):
        return (f"Ship {pick['label']}: {when} is the last before capability drops ({sweep['drops_at']}). "
                "Train for fewer epochs, or keep the later ones with a lower learning rate or general "
                "data replayed.")
    return f"Ship {pick['label']} ({when})."
