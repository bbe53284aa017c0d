"""A plain, seeded torch training loop for the toy models (base and candidates).

Why not `transformers.Trainer`: for a 0.5M-parameter model its per-step
overhead dominates the build budget (three minutes on two cores for five
models). The loop still writes a `trainer_state.json` shaped like Trainer's, so
tools that read training logs find what they expect.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gate.toy.tokenizer import vocabulary

IGNORE = -100


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of one training run (recorded next to the weights)."""

    name: str
    learning_rate: float
    steps_per_epoch: int
    epochs: int = 1
    batch_size: int = 64
    warmup_steps: int = 0
    weight_decay: float = 0.0
    seed: int = 0
    general_share: float = 0.0
    """Share of general (replay) data mixed into the target data."""
    replay_steps: int | None = None
    """Replay general data for this many steps only, then target data alone (a replay
    set that ran out); None: for the whole run."""
    lora_rank: int | None = None
    lora_alpha: int | None = None
    lora_targets: tuple[str, ...] = ()
    quantized_base: str | None = None
    save_every_epoch: bool = False

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


@dataclass
class TrainLog:
    """What Trainer would have logged: one entry per logging step."""

    log_history: list[dict[str, Any]] = field(default_factory=list)


def encode_lines(lines: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lines -> (input_ids, labels): `<s>` + characters + newline, right-padded.

    The newline ends every example because the eval tasks generate until "\\n".
    """
    vocab = vocabulary()
    bos, pad = vocab["<s>"], vocab["<pad>"]
    seqs = [[bos, *(vocab[ch] for ch in line), vocab["\n"]] for line in lines]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(s)
    return ids, labels


def _batch_loss(model: torch.nn.Module, lines: list[str], buckets: int = 3) -> torch.Tensor:
    """Mean next-token loss over a batch, computed in length buckets.

    Lines differ a lot in length (``3+4=7`` vs a sentence); padding them all to
    the longest wastes most of the compute, so the batch is sorted by length
    and split into `buckets` micro-batches whose summed losses are combined.
    Right padding under causal attention never reaches a real token, so no
    attention mask is passed (a padding mask also slows CPU attention a lot).
    """
    ordered = sorted(lines, key=len)
    size = math.ceil(len(ordered) / buckets)
    total = torch.zeros(())
    count = 0
    for start in range(0, len(ordered), size):
        ids, labels = encode_lines(ordered[start : start + size])
        logits = model(input_ids=ids).logits[:, :-1]
        target = labels[:, 1:]
        total = total + torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
            ignore_index=IGNORE, reduction="sum")
        count += int((target != IGNORE).sum())
    return total / count


def _lr_at(step: int, recipe: Recipe) -> float:
    """Linear warmup then cosine decay to 10% (a common small-model schedule)."""
    if step < recipe.warmup_steps:
        return recipe.learning_rate * (step + 1) / recipe.warmup_steps
    span = max(1, recipe.total_steps - recipe.warmup_steps)
    progress = (step - recipe.warmup_steps) / span
    return recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    model: torch.nn.Module,
    lines: Iterator[str],
    recipe: Recipe,
    on_epoch_end: Callable[[int, int, TrainLog], None] | None = None,
    log_every: int = 10,
) -> TrainLog:
    """Train `model` in place on `recipe.total_steps` batches drawn from `lines`.

    `on_epoch_end(epoch, global_step, log_so_far)` runs after each epoch (used to save
    per-epoch checkpoints). An "epoch" is a fixed number of steps over an
    endless generated stream: the data has no natural end.
    """
    torch.manual_seed(recipe.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    model.train()
    log = TrainLog()
    running = 0.0
    step = 0
    for epoch in range(1, recipe.epochs + 1):
        for _ in range(recipe.steps_per_epoch):
            lr = _lr_at(step, recipe)
            for group in optim.param_groups:
                group["lr"] = lr
            loss = _batch_loss(model, [next(lines) for _ in range(recipe.batch_size)])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            step += 1
            running += float(loss.detach())
            if step % log_every == 0 or step == recipe.total_steps:
                n = log_every if step % log_every == 0 else step % log_every
                log.log_history.append({
                    "epoch": round(step / recipe.steps_per_epoch, 4),
                    "step": step,
                    "loss": round(running / n, 4),
                    "learning_rate": lr,
                })
                running = 0.0
        if on_epoch_end is not None:
            on_epoch_end(epoch, step, log)
    model.eval()
    return log


def write_trainer_state(out_dir: Path, recipe: Recipe, log: TrainLog, upto_step: int | None = None) -> None:
    """Write `trainer_state.json` (Trainer's shape) and `training_args.json` (the recipe)."""
    history = [e for e in log.log_history if upto_step is None or e["step"] <= upto_step]
    global_step = upto_step if upto_step is not None else recipe.total_steps
    state = {
        "global_step": global_step,
        "epoch": global_step / recipe.steps_per_epoch,
        "max_steps": recipe.total_steps,
        "num_train_epochs": recipe.epochs,
        "train_batch_size": recipe.batch_size,
        "learning_rate": recipe.learning_rate,
        "logging_steps": 10,
        "log_history": history,
    }
    (out_dir / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
    (out_dir / "training_args.json").write_text(
        json.dumps(asdict(recipe), indent=2, default=list) + "\n")


def line_stream(factory: Callable[[random.Random], Iterator[str]], seed: int) -> Iterator[str]:
    return factory(random.Random(seed))
