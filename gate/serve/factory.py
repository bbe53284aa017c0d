"""The engine a run config names, and the models it serves.

    make_engine(cfg)  -> Engine  (vllm server, endpoint, hf reference, fake)
    model_specs(cfg)  -> [ModelSpec] for the base and every candidate

The only place that maps `engine:` settings onto an engine's options, so a
default lives in one place (gate.config.models).
"""

from __future__ import annotations

from collections.abc import Mapping

from gate.config.models import RunConfig
from gate.serve.adapters import AdapterInfo
from gate.serve.base import BASE_NAME, Engine, ModelSpec


def make_engine(cfg: RunConfig) -> Engine:
    """The engine the config names, with its options mapped from the config."""
    kind = cfg.engine.kind
    allow_pickle = any(c.allow_pickle for c in cfg.candidates)
    if kind == "vllm":
        from gate.serve.vllm_server import VllmEngine, VllmOptions

        v = cfg.engine.vllm
        opts = VllmOptions(
            tensor_parallel_size=v.tensor_parallel_size, data_parallel_size=v.data_parallel_size,
            pipeline_parallel_size=v.pipeline_parallel_size, gpu_memory_utilization=v.gpu_memory_utilization,
            max_model_len=v.max_model_len, dtype=None if cfg.base.dtype == "auto" else cfg.base.dtype,
            quantization=cfg.base.quantization, max_num_seqs=v.max_num_seqs,
            enforce_eager=bool(v.enforce_eager), extra_args=list(v.extra_args),
            health_timeout_s=v.health_timeout_s, request_timeout_s=v.request_timeout_s,
            num_concurrent=v.num_concurrent, batch_size=v.batch_size, max_retries=v.max_retries, port=v.port,
            trust_remote_code=cfg.base.trust_remote_code,
        )
        return VllmEngine(opts, allow_pickle=allow_pickle)
    if kind == "endpoint":
        from gate.serve.endpoint import EndpointEngine, EndpointOptions

        e = cfg.engine.endpoint
        if e is None:  # RunConfig's validator requires it for kind: endpoint
            raise AssertionError("engine.endpoint missing for kind endpoint")
        names = {BASE_NAME: e.base_name, **{c.name: e.names.get(c.name, c.name) for c in cfg.candidates}}
        return EndpointEngine(EndpointOptions(
            base_url=e.base_url, api_key_env=e.api_key_env, served_names=names,
            request_timeout_s=e.request_timeout_s, num_concurrent=e.num_concurrent, batch_size=e.batch_size,
            max_retries=e.max_retries,
            trust_remote_code=cfg.base.trust_remote_code, version_label=e.engine_version))
    if kind == "hf":
        from gate.serve.hf import HfEngine, HfOptions

        h = cfg.engine.hf
        return HfEngine(HfOptions(dtype="float32" if cfg.base.dtype == "auto" else cfg.base.dtype, device=h.device,
                                  batch_size=h.batch_size, trust_remote_code=cfg.base.trust_remote_code,
                                  allow_pickle=allow_pickle))
    from gate.serve.fake import FakeEngine

    return FakeEngine()


def model_specs(cfg: RunConfig, adapters: Mapping[str, AdapterInfo] | None = None) -> list[ModelSpec]:
    """The base first, then every candidate, in the config's order. `adapters`:
    the LoRAs already checked against the base (gate.config.validate), so the
    engine does not read them again."""
    checked = adapters or {}
    base = ModelSpec(BASE_NAME, "base", cfg.base.path, cfg.base.path, cfg.base.revision, cfg.base.quantization)
    cands = [ModelSpec(c.name, c.kind, c.path, cfg.base.path, cfg.base.revision, cfg.base.quantization,
                       adapter=checked.get(c.name)) for c in cfg.candidates]
    return [base, *cands]
