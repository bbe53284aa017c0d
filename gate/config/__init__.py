"""Stage 1, config: gate.yaml (or flags), the suite and thresholds in; a checked `GateSetup` out.

    models.py    the strict pydantic models (RunConfig, Suite, Thresholds, ...)
    yaml_io.py   YAML -> model, every error as a Problem naming file, key and fix
    load.py      load_setup: the run config with absolute paths, its suite and thresholds
    tasks.py     suite entries -> lm-eval tasks (built-in or the suite's own YAMLs)
    policy.py    tiers and the per-task policy the verdict stage applies
    hub.py       the one rule that tells a hub id from a local path
    validate.py  validate(): every problem `gate run` would stop on, found before serving

Nothing here loads a model or starts a process.
"""

from gate.config.load import (
    GateSetup,
    Overrides,
    check_paths,
    load_setup,
    load_yaml_model,
    parse_named_path,
)
from gate.config.models import (
    BaselineConfig,
    BaseModelConfig,
    Candidate,
    EndpointConfig,
    EngineConfig,
    HfConfig,
    Margin,
    ProbesConfig,
    RunConfig,
    SequentialConfig,
    Suite,
    TaskSpec,
    Thresholds,
    TierPolicyConfig,
    Tiers,
    VllmConfig,
    WandbConfig,
)
from gate.config.yaml_io import load_run_config, load_suite, load_thresholds, parse_model, read_yaml

__all__ = [
    "BaseModelConfig",
    "BaselineConfig",
    "Candidate",
    "EndpointConfig",
    "EngineConfig",
    "GateSetup",
    "HfConfig",
    "Margin",
    "Overrides",
    "ProbesConfig",
    "RunConfig",
    "SequentialConfig",
    "Suite",
    "TaskSpec",
    "Thresholds",
    "TierPolicyConfig",
    "Tiers",
    "VllmConfig",
    "WandbConfig",
    "check_paths",
    "load_run_config",
    "load_setup",
    "load_suite",
    "load_thresholds",
    "load_yaml_model",
    "parse_model",
    "parse_named_path",
    "read_yaml",
]
