"""Engines: serve the base and its candidates, hand lm-eval one LM per model.

    vllm      one vLLM OpenAI server (base + every LoRA), full fine-tunes alone
    endpoint  an existing OpenAI-compatible vLLM deployment
    hf        transformers + PEFT in process (the reference)
    fake      deterministic fake LMs with chosen per-task accuracy (tests)

Heavy backends are imported lazily by the engine that needs them.
"""

from gate.serve.adapters import (
    AdapterInfo,
    max_lora_rank,
    refuse_lm_head_on_loglikelihood,
    round_lora_rank,
    validate_adapter,
)
from gate.serve.base import BASE_NAME, Engine, ModelSpec
from gate.serve.endpoint import EndpointEngine, EndpointOptions
from gate.serve.fake import FakeEngine, FakeLM, FakeSkill
from gate.serve.hf import HfEngine, HfOptions
from gate.serve.vllm_server import VllmEngine, VllmOptions

__all__ = [
    "BASE_NAME",
    "AdapterInfo",
    "EndpointEngine",
    "EndpointOptions",
    "Engine",
    "FakeEngine",
    "FakeLM",
    "FakeSkill",
    "HfEngine",
    "HfOptions",
    "ModelSpec",
    "VllmEngine",
    "VllmOptions",
    "max_lora_rank",
    "refuse_lm_head_on_loglikelihood",
    "round_lora_rank",
    "validate_adapter",
]
