"""Check a LoRA adapter against its base before anything is served.

Why: a bad adapter found by vLLM shows up as a server that dies 40 s into
start-up with a stack trace; found here it is one message naming the file, the
key and the fix (exit 2). Nothing here loads model weights: the base's module
names and shapes come from its config instantiated on the meta device, and the
adapter's tensor shapes from the safetensors header.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.errors import AdapterError, Problem

# `--max-lora-rank` accepts only these values (vLLM 0.32 LoRAConfig).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Modules whose LoRA/full copies change the logits layer; vLLM drops the
# lm_head delta from prompt logprobs (vllm-project/vllm #51594).
HEAD_MODULES = ("lm_head", "embed_tokens")


@dataclass(frozen=True)
class AdapterInfo:
    """What the gate needs to know about a validated adapter."""

    path: Path
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    trains_lm_head: bool
    weights_file: Path
    base_model_name_or_path: str | None
    warnings: tuple[str, ...] = field(default=())

    @property
    def vllm_max_lora_rank(self) -> int:
        return round_lora_rank(self.rank)


def round_lora_rank(rank: int) -> int:
    """The smallest `--max-lora-rank` value vLLM accepts that holds `rank`."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise AdapterError(
        f"LoRA rank {rank} is above vLLM's maximum {VLLM_LORA_RANKS[-1]}",
        key="r", fix="use the hf engine, or merge the adapter into a full model",
    )


def _read_config(adapter_dir: Path) -> dict[str, Any]:
    cfg_file = adapter_dir / "adapter_config.json"
    if not cfg_file.is_file():
        raise AdapterError(
            "adapter_config.json is missing", file=str(cfg_file),
            fix="point the candidate at a PEFT adapter directory (saved with save_pretrained)",
        )
    try:
        data = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"cannot read it: {exc}", file=str(cfg_file),
                           fix="re-save the adapter with PEFT's save_pretrained") from exc
    if not isinstance(data, dict):
        raise AdapterError("not a JSON object", file=str(cfg_file),
                           fix="re-save the adapter with PEFT's save_pretrained")
    peft_type = str(data.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterError(f"peft_type is {peft_type}; only LoRA adapters can be served",
                           file=str(cfg_file), key="peft_type",
                           fix="merge the adapter into a full model and add it as kind: full")
    return data


def _weights_file(adapter_dir: Path, allow_pickle: bool) -> Path:
    st = adapter_dir / "adapter_model.safetensors"
    if st.is_file():
        return st
    pickled = adapter_dir / "adapter_model.bin"
    if pickled.is_file():
        if allow_pickle:
            return pickled
        raise AdapterError(
            "adapter weights are a pickle (adapter_model.bin); loading a pickle can run code",
            file=str(pickled),
            fix="re-save with save_pretrained(..., safe_serialization=True), or allow pickles explicitly",
        )
    raise AdapterError("adapter weights are missing (adapter_model.safetensors)",
                       file=str(st), fix="copy the adapter's weights next to adapter_config.json")


def _tensor_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    if weights.suffix == ".bin":
        import torch

        state = torch.load(weights, map_location="cpu", weights_only=True)
        return {k: tuple(v.shape) for k, v in state.items()}
    try:
        header_len, header = _read_header(weights)
        shapes = _shapes(header)
        size = weights.stat().st_size
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdapterError(f"cannot read the safetensors file ({exc}); it is truncated or corrupt",
                           file=str(weights), fix="copy the adapter again from its source") from exc
    _check_not_truncated(weights, header_len, header, size)
    return shapes


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header (see `_read_header`)."""
    return _shapes(_read_header(path)[1])


def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
    """A safetensors header: 8 bytes of length, then JSON; returns (length, header).

    Read by hand rather than with safetensors' `safe_open(framework="pt")`,
    which needs torch: shapes and offsets are all validation needs, and keeping
    torch out of the gate's process keeps its memory small (bench/bench_memory.py).
    """
    with path.open("rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        if header_len <= 0 or header_len > 100_000_000:
            raise ValueError(f"implausible header length {header_len}")
        return header_len, json.loads(fh.read(header_len))


def _shapes(header: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _check_not_truncated(weights: Path, header_len: int, header: dict[str, Any], size: int) -> None:
    """The header's data offsets against the file size: a copy cut short is caught here."""
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        raise AdapterError(
            f"the safetensors file is truncated ({size} bytes, header expects {8 + header_len + end})",
            file=str(weights), fix="copy the adapter again from its source",
        )


def _base_modules(base_dir: str, trust_remote_code: bool,
                  wanted: set[str]) -> dict[str, tuple[int, ...]]:
    """Module name -> weight shape of the base.

    From the base's safetensors headers when they name every module the
    adapter has weights for (no torch, no model class: a few KB read);
    otherwise (a hub id, a quantized or tied checkpoint, a layout whose
    parameter names differ from its module names) from the model class built
    on the meta device, as transformers itself would build it.
    """
    from_headers = _base_modules_from_headers(Path(base_dir))
    if from_headers and wanted <= from_headers.keys():
        return from_headers
    return _base_modules_meta(base_dir, trust_remote_code)


def _base_modules_from_headers(base: Path) -> dict[str, tuple[int, ...]]:
    try:
        config = json.loads((base / "config.json").read_text(encoding="utf-8"))
        if config.get("quantization_config"):  # packed shapes: not the module's shape
            return {}
        files = sorted(base.glob("*.safetensors"))
        shapes: dict[str, tuple[int, ...]] = {}
        for f in files:
            shapes.update(header_shapes(f))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    return {k[: -len(".weight")]: v for k, v in shapes.items() if k.endswith(".weight")}


def _base_modules_meta(base_dir: str, trust_remote_code: bool) -> dict[str, tuple[int, ...]]:
    """Module name -> weight shape of the base, built on the meta device (no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            shapes[name] = tuple(weight.shape)
    return shapes


def _targets(cfg: dict[str, Any]) -> tuple[str, ...] | str:
    raw = cfg.get("target_modules") or ()
    if isinstance(raw, str):
        return raw  # a regex or "all-linear"
    return tuple(str(t) for t in raw)


def _matches(target: tuple[str, ...] | str, module: str) -> bool:
    if isinstance(target, str):
        if target == "all-linear":
            return module.rsplit(".", 1)[-1] != "lm_head"
        return re.fullmatch(target, module) is not None
    return any(module == t or module.endswith("." + t) for t in target)


_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>A|B)(?:\.[^.]+)?\.weight$")


def _check_shapes(shapes: dict[str, tuple[int, ...]], base: dict[str, tuple[int, ...]],
                  weights: Path, base_dir: str) -> list[Problem]:
    """Adapter tensor shapes against the base's modules, one problem per kind of
    mismatch (an adapter for another hidden size mismatches every tensor the same way)."""
    fix = "use the base model the adapter was trained on"
    missing: list[str] = []
    wrong: dict[tuple[str, int, int], list[str]] = {}
    for key, shape in sorted(shapes.items()):
        m = _LORA_KEY.match(key)
        if not m:
            continue
        module = m.group("module")
        if module not in base:
            missing.append(key)
            continue
        out_f, in_f = base[module][0], base[module][-1]
        if m.group("ab") == "A" and shape[-1] != in_f:
            wrong.setdefault(("input", shape[-1], in_f), []).append(key)
        if m.group("ab") == "B" and shape[0] != out_f:
            wrong.setdefault(("output", shape[0], out_f), []).append(key)
    problems: list[Problem] = []
    if missing:
        problems.append(Problem(
            f"{len(missing)} tensor(s) are for modules the base {base_dir} does not have (e.g. {missing[0]})",
            file=str(weights), fix=fix))
    for (side, got, want), keys in sorted(wrong.items()):
        problems.append(Problem(
            f"{len(keys)} tensor(s) have {side} size {got} where the base {base_dir} has {want} (e.g. {keys[0]})",
            file=str(weights), fix=fix))
    return problems


def _base_name_warning(recorded: str | None, base_dir: str) -> str | None:
    if not recorded:
        return "adapter_config.json names no base_model_name_or_path; cannot check the base"
    rec, base = Path(recorded), Path(base_dir)
    if rec.exists() and base.exists():
        if rec.resolve() == base.resolve():
            return None
    elif recorded.rstrip("/") == base_dir.rstrip("/"):
        return None
    if rec.name == base.name:
        return None
    return (f"adapter was trained on {recorded!r} but is served on {base_dir!r}; "
            "shapes fit, but scores are only meaningful on the adapter's own base")


def validate_adapter(adapter_dir: str | Path, base_dir: str | Path, *, allow_pickle: bool = False,
                     trust_remote_code: bool = False, served_by_vllm: bool = True) -> AdapterInfo:
    """Validate a PEFT LoRA adapter against its base; raise AdapterError listing every problem.

    `served_by_vllm`: check vLLM's rank limit (the hf engine has none)."""
    adapter = Path(adapter_dir)
    base = str(base_dir)
    cfg = _read_config(adapter)
    cfg_file = str(adapter / "adapter_config.json")
    weights = _weights_file(adapter, allow_pickle)
    shapes = _tensor_shapes(weights)

    problems: list[Problem] = []
    rank = int(cfg.get("r", 0) or 0)
    rank_pattern = cfg.get("rank_pattern") or {}
    if isinstance(rank_pattern, dict) and rank_pattern:
        rank = max([rank, *(int(v) for v in rank_pattern.values())])
    if rank < 1:
        problems.append(Problem("r is missing or below 1", file=cfg_file, key="r",
                                fix="re-save the adapter with PEFT"))
    elif served_by_vllm and rank > VLLM_LORA_RANKS[-1]:
        problems.append(Problem(f"rank {rank} is above vLLM's maximum {VLLM_LORA_RANKS[-1]}",
                                file=cfg_file, key="r",
                                fix="use the hf engine, or merge the adapter into a full model"))

    targets = _targets(cfg)
    wanted = {m.group("module") for k in shapes if (m := _LORA_KEY.match(k))}
    base_modules = _base_modules(base, trust_remote_code, wanted)
    matched = [name for name in base_modules if _matches(targets, name)]
    if not matched:
        problems.append(Problem(
            f"target_modules {targets!r} match no module of the base {base}",
            file=cfg_file, key="target_modules", fix="use the base model the adapter was trained on"))
    problems += _check_shapes(shapes, base_modules, weights, base)
    if problems:
        raise AdapterError(problems=problems)

    saved = [str(s) for s in (cfg.get("modules_to_save") or ())]
    head_touched = (
        any(n.rsplit(".", 1)[-1] in HEAD_MODULES for n in matched)
        or any(s.rsplit(".", 1)[-1] in HEAD_MODULES for s in saved)
        or any(any(h in k for h in HEAD_MODULES) for k in shapes)
    )
    names = targets if isinstance(targets, tuple) else (targets,)
    warning = _base_name_warning(cfg.get("base_model_name_or_path"), base)
    return AdapterInfo(
        path=adapter, rank=rank, alpha=float(cfg.get("lora_alpha", rank) or rank),
        target_modules=names, trains_lm_head=head_touched, weights_file=weights,
        base_model_name_or_path=cfg.get("base_model_name_or_path"),
        warnings=(warning,) if warning else (),
    )


def max_lora_rank(infos: Sequence[AdapterInfo]) -> int:
    """`--max-lora-rank` for a server holding all these adapters."""
    return round_lora_rank(max((i.rank for i in infos), default=1))


def refuse_lm_head_on_loglikelihood(info: AdapterInfo, engine_kind: str,
                                    uses_loglikelihood: bool) -> None:
    """Refuse adapters whose lm_head/embedding delta vLLM drops from prompt logprobs.

    vLLM computes prompt logprobs without an adapter's lm_head delta
    (vllm-project/vllm #51594, open; fix PR #51597): loglikelihood scores of
    such an adapter through vLLM are silently the wrong model's.
    """
    if info.trains_lm_head and uses_loglikelihood and engine_kind in ("vllm", "endpoint"):
        raise AdapterError(
            "the adapter trains lm_head/embed_tokens; vLLM leaves that delta out of prompt "
            "logprobs (vllm-project/vllm #51594), so loglikelihood scores would be wrong",
            file=str(info.path / "adapter_config.json"), key="target_modules",
            fix="use the hf engine (engine: hf), or merge the adapter and add it as kind: full",
        )


#: the line PEFT's model card puts above the quantization config a QLoRA adapter was trained with
_QUANT_CARD_PREFIX = "The following `bitsandbytes` quantization config was used during training:"


def trained_in_4bit(adapter_dir: str | Path) -> bool:
    """Whether the adapter's model card says its base was loaded in 4 bits (a QLoRA adapter).

    PEFT up to 0.6 wrote the base's bitsandbytes config into the adapter's
    README.md under `_QUANT_CARD_PREFIX` (`- load_in_4bit: True`); many hub
    adapters carry it. Later PEFT releases look the config up with `hasattr`
    on a dict (peft_model.create_or_update_model_card), so they never write
    it, and nothing else in an adapter folder records the base's
    quantization: without the card, the run config's `quantization` says so.
    """
    card = Path(adapter_dir) / "README.md"
    try:
        lines = card.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    inside = False
    for line in lines:
        text = line.strip()
        if text == _QUANT_CARD_PREFIX:
            inside = True
        elif inside and not text.startswith("- "):
            inside = False
        elif inside and text.replace(" ", "").lower() == "-load_in_4bit:true":
            return True
    return False
