"""Stage 2, serve: model specs in; one lm-eval LM per model out, for as long as a group is served.

    vllm      one vLLM OpenAI server (base + every LoRA), full fine-tunes alone
    endpoint  an existing OpenAI-compatible vLLM deployment
    hf        transformers + PEFT in process (the reference)
    fake      deterministic fake LMs with chosen per-task accuracy (tests)

    factory.py   the engine a config names (make_engine) and the specs it serves (model_specs)
    adapters.py  a LoRA checked against its base from safetensors headers
    probes.py    an adapter is applied; the served engine agrees with the reference

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
