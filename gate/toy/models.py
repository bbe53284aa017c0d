"""The toy base model and its four fine-tuned candidates, trained by project code.

The candidates span what a release gate must tell apart:

- ``careful``  LoRA, low learning rate, general data replayed: learns the target
  and keeps the general skills (should pass).
- ``overfit``  LoRA, three epochs, one checkpoint per epoch; general data is
  replayed in the first epoch only (the replay set ran out), so epoch 1 learns
  the target and keeps the general skills and epochs 2-3 forget: the seed's
  "the peak of generalization comes early". The final adapter should fail;
  a sweep of its checkpoints should pick checkpoint-100.
- ``full``     full fine-tune of every weight on target data only (forgets).
- ``qlora``    LoRA trained on the nf4-quantized base (bitsandbytes on CPU).

Adapters target the attention and MLP projections only, never ``lm_head`` or
``embed_tokens``: vLLM drops an lm_head LoRA delta from prompt logprobs
(vllm-project/vllm #51594), which would make loglikelihood tasks wrong.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from gate.errors import InputError
from gate.toy import corpus
from gate.toy.tokenizer import save_tokenizer, vocabulary
from gate.toy.train import Recipe, TrainLog, line_stream, train, write_trainer_state

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

BASE_RECIPE = Recipe(name="base", learning_rate=4e-3, steps_per_epoch=360, warmup_steps=30, seed=0)

CANDIDATE_RECIPES: dict[str, Recipe] = {
    # Low learning rate and 80% replay of the base's own data: learns the target
    # without costing the neighbouring addition skill (at 50% replay and lr 2e-3
    # it lost 12 points of addition, which the gate rightly failed).
    "careful": Recipe(name="careful", learning_rate=1e-3, steps_per_epoch=300, seed=1,
                      general_share=0.8, lora_rank=8, lora_alpha=16, lora_targets=LORA_TARGETS),
    # Replay for the first 100 steps only: at lr 3e-3 target-only data costs the
    # addition and word-order skills within 40 steps (measured at lr 1e-3 to 1e-2
    # and replay shares 0-30%), so only an epoch with replay can pass.
    "overfit": Recipe(name="overfit", learning_rate=3e-3, steps_per_epoch=100, epochs=3, seed=2,
                      general_share=0.8, replay_steps=100,
                      lora_rank=8, lora_alpha=16, lora_targets=LORA_TARGETS,
                      save_every_epoch=True),
    "full": Recipe(name="full", learning_rate=1e-3, steps_per_epoch=100, seed=3),
    "qlora": Recipe(name="qlora", learning_rate=2e-3, steps_per_epoch=100, seed=4,
                    general_share=0.5, lora_rank=8, lora_alpha=16, lora_targets=LORA_TARGETS,
                    quantized_base="nf4"),
}


def base_config():  # -> transformers.LlamaConfig
    """A 2-layer Llama with head_dim 64 (vLLM's CPU attention rejects 16)."""
    from transformers import LlamaConfig

    vocab = vocabulary()
    return LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=512,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
        dtype="float32",
    )


def train_base(out_dir: Path) -> None:
    """Train the base from a fixed seed on the general corpus; save it with its tokenizer."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(BASE_RECIPE.seed)
    model = LlamaForCausalLM(base_config())
    log = train(model, line_stream(corpus.general_lines, BASE_RECIPE.seed + 1), BASE_RECIPE)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    save_tokenizer(out_dir)
    write_trainer_state(out_dir, BASE_RECIPE, log)


def _stream(recipe: Recipe):
    if recipe.replay_steps is not None:
        share, replayed = recipe.general_share, recipe.replay_steps * recipe.batch_size

        def replay_then_target(rng: random.Random) -> Iterator[str]:
            mixed = corpus.mixed_lines(random.Random(rng.random()), share)
            target = corpus.target_lines(random.Random(rng.random()))
            return itertools.chain(itertools.islice(mixed, replayed), target)

        return line_stream(replay_then_target, recipe.seed + 1)
    if recipe.general_share > 0:
        share = recipe.general_share
        return line_stream(lambda rng: corpus.mixed_lines(rng, share), recipe.seed + 1)
    return line_stream(corpus.target_lines, recipe.seed + 1)


def _load_base(base_dir: Path, quantized: bool):
    from transformers import LlamaForCausalLM

    if not quantized:
        return LlamaForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    try:
        import bitsandbytes  # noqa: F401  (transformers needs it for the nf4 base)
    except ImportError as exc:
        raise InputError("the qlora toy candidate needs bitsandbytes, which is not installed",
                         key="qlora", fix="pip install 'forgetting-gate[qlora]'") from exc
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                             bnb_4bit_compute_dtype=torch.float32)
    return LlamaForCausalLM.from_pretrained(str(base_dir), quantization_config=bnb,
                                            device_map="cpu", dtype=torch.float32)


def train_lora(base_dir: Path, out_dir: Path, recipe: Recipe, final_base: Path) -> None:
    """Train a LoRA adapter on the base (quantized when the recipe says so).

    `final_base` is where the base will live once the build is moved into place;
    it is recorded as `base_model_name_or_path` so the adapter names its real base.
    """
    from peft import LoraConfig, get_peft_model

    base = _load_base(base_dir, quantized=recipe.quantized_base is not None)
    lora = LoraConfig(r=recipe.lora_rank or 8, lora_alpha=recipe.lora_alpha or 16,
                      lora_dropout=0.0, target_modules=list(recipe.lora_targets),
                      task_type="CAUSAL_LM")
    torch.manual_seed(recipe.seed)
    model = get_peft_model(base, lora)

    def save(dest: Path, log: TrainLog, upto: int | None) -> None:
        model.save_pretrained(str(dest), safe_serialization=True)
        _point_adapter_at(dest, final_base)
        write_trainer_state(dest, recipe, log, upto_step=upto)

    def on_epoch_end(epoch: int, step: int, log: TrainLog) -> None:
        if recipe.save_every_epoch:
            save(out_dir / f"checkpoint-{step}", log, step)

    log = train(model, _stream(recipe), recipe, on_epoch_end=on_epoch_end)
    save(out_dir, log, None)


def _point_adapter_at(adapter_dir: Path, base: Path) -> None:
    """Record the base's final location (PEFT recorded the temp build folder)."""
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = str(base)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def train_full(base_dir: Path, out_dir: Path, recipe: Recipe) -> None:
    """Fine-tune every weight of the base; save a full model dir with the tokenizer."""
    model = _load_base(base_dir, quantized=False)
    for p in model.parameters():
        p.requires_grad_(True)
    log = train(model, _stream(recipe), recipe)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(base_dir / name, out_dir / name)
    write_trainer_state(out_dir, recipe, log)


def train_candidate(name: str, base_dir: Path, out_dir: Path, final_base: Path) -> None:
    recipe = CANDIDATE_RECIPES[name]
    if recipe.lora_rank is None:
        train_full(base_dir, out_dir, recipe)
    else:
        train_lora(base_dir, out_dir, recipe, final_base)
