"""The toy world's character-level fast tokenizer.

A BPE model with an empty merge list splits text into single characters, and a
`Fuse` decoder joins them back without spaces, so the tokenizer is a plain
`tokenizer.json` that transformers' `AutoTokenizer` and vLLM load without custom
code. Like Llama's, its post-processor prepends `<s>` to every sequence, so
engines that follow the tokenizer default (transformers, vLLM) and lm-eval with
`add_bos_token=True` all see the same token ids.
"""

from __future__ import annotations

import json
from pathlib import Path

from gate.toy.corpus import CHARSET

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


def vocabulary() -> dict[str, int]:
    """Token -> id: the four special tokens first, then one token per character."""
    tokens = list(SPECIALS) + list(CHARSET)
    return {tok: i for i, tok in enumerate(tokens)}


def build_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """A fresh fast tokenizer object (deterministic: no training involved)."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = vocabulary()
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, vocab[BOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=256,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(out_dir: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save_pretrained(str(out_dir))
    # transformers 5 names its own backend class here, which transformers 4 and
    # older vLLM releases do not know; the generic fast class loads everywhere.
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # transformers 5 no longer writes this file; older loaders still read it.
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
