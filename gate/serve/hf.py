"""The hf engine: transformers + PEFT in process, the reference for parity.

Why it exists: it runs where vLLM does not (no vLLM install, adapters that
train lm_head, which vLLM scores wrongly: vllm-project/vllm #51594), and it is
what the vLLM engines are checked against. Slow, but simple and exact.

The base is loaded once per group; LoRA candidates are loaded onto it as named
PEFT adapters. lm-eval gets one LM per model name; each is a thin wrapper that
activates its own adapter (or disables all, for the base) before delegating
to the one shared HFLM, so scores never leak between candidates whatever order
lm-eval calls them in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from lm_eval.api.model import LM

from gate.errors import InputError
from gate.serve.adapters import validate_adapter
from gate.serve.base import Engine, ModelSpec, check_unique_names, served_model

QUANT_4BIT = ("bitsandbytes", "nf4")


@dataclass
class HfOptions:
    dtype: str = "float32"  # float32 on CPU: parity with vLLM-float32 within 1e-5 nats
    device: str = "cpu"
    batch_size: int = 1
    max_length: int | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False


def load_causal_lm(spec_path: str, options: HfOptions, revision: str | None = None,
                   quantization: str | None = None) -> Any:
    """A causal LM in the configured dtype; in 4-bit nf4 for QLoRA bases.

    lm-eval's `load_in_4bit=True` fails on transformers 5.x (ENGINE_NOTES), so
    the quantized model is built here and passed to HFLM as an object.
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = getattr(torch, options.dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": options.trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    if quantization:
        if quantization not in QUANT_4BIT:
            raise InputError(f"quantization {quantization!r} is not supported by the hf engine",
                             key="quantization", fix="use 'bitsandbytes' (nf4) or none")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = options.device
    model: Any = AutoModelForCausalLM.from_pretrained(spec_path, **kwargs)
    if not quantization:
        model.to(options.device)
    model.eval()
    return model


class AdapterLM(LM):
    """Activates one adapter (or none) on the shared model, then delegates."""

    def __init__(self, inner: LM, activate: Callable[[], contextlib.AbstractContextManager[None]]):
        super().__init__()
        self.inner = inner
        self._activate = activate

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        with self._activate():
            return self.inner.loglikelihood(requests, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        with self._activate():
            return self.inner.loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        with self._activate():
            return self.inner.generate_until(requests, disable_tqdm=disable_tqdm)

    def __getattr__(self, name: str) -> Any:  # tokenizer, max_length, ... for lm-eval
        return getattr(self.__dict__["inner"], name)


class HfEngine(Engine):
    kind: ClassVar[str] = "hf"

    def __init__(self, options: HfOptions | None = None) -> None:
        self.options = options or HfOptions()

    def version(self) -> str:
        return (f"hf-transformers-{metadata.version('transformers')}"
                f"-peft-{metadata.version('peft')}-{self.options.dtype}")

    @contextlib.contextmanager
    def serve(self, group: Sequence[ModelSpec], log_dir: Path) -> Iterator[dict[str, LM]]:
        from lm_eval.models.huggingface import HFLM
        from transformers import AutoTokenizer

        check_unique_names(group)
        served = served_model(group)
        if served is None:
            raise InputError("a LoRA candidate needs its base in the same group",
                             key="candidates", fix="serve the base with its adapters")
        loras = [m for m in group if m.kind == "lora"]
        for m in loras:
            if m.adapter is None:  # not checked by gate.config.validate (an engine used on its own)
                validate_adapter(m.path, m.base_path, allow_pickle=self.options.allow_pickle,
                                 trust_remote_code=self.options.trust_remote_code)
        model = load_causal_lm(served.path, self.options, served.revision, served.quantization)
        if loras:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, loras[0].path, adapter_name=loras[0].name)
            for m in loras[1:]:
                model.load_adapter(m.path, adapter_name=m.name)
            model.eval()
        tokenizer = AutoTokenizer.from_pretrained(
            served.path if served.kind == "full" else served.base_path,
            trust_remote_code=self.options.trust_remote_code, revision=served.revision)
        hflm_kwargs: dict[str, Any] = {"pretrained": model, "tokenizer": tokenizer,
                                       "batch_size": self.options.batch_size}
        if self.options.max_length:
            hflm_kwargs["max_length"] = self.options.max_length
        inner = HFLM(**hflm_kwargs)

        def activate(name: str | None) -> Callable[[], contextlib.AbstractContextManager[None]]:
            @contextlib.contextmanager
            def ctx() -> Iterator[None]:
                if not loras:
                    yield
                elif name is None:
                    with model.disable_adapter():
                        yield
                else:
                    model.set_adapter(name)
                    yield
            return ctx

        lms: dict[str, LM] = {}
        for m in group:
            lms[m.name] = AdapterLM(inner, activate(m.name if m.kind == "lora" else None))
        try:
            yield lms
        finally:
            lms.clear()  # drop our references; the weights go with the last LM
