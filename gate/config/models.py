"""Strictly typed configuration: the run config, suites and thresholds.

Three kinds of YAML files, each a pydantic model with `extra="forbid"` so a
misspelled key is an error, never silently ignored:

- the run config (`gate.yaml`): `RunConfig`
- a suite (`gate/suites/*.yaml` ships two, named `default` and `toy`): `Suite`, three tiers of lm-eval tasks
- the release policy (`thresholds.yaml`): `Thresholds`

Loading turns every pydantic or YAML error into `gate.errors.Problem`s that
name the file, the dotted key and a fix, and reports them all at once
(`ConfigError`). Relative paths inside a file are resolved against that
file's directory, so a config works from any working directory.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gate.config.policy import TIERS, Inconclusive, TaskPolicy, Tier

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
RESERVED_NAMES = {"base"}

# Engine defaults, the one place they are set: the config's fields and the
# engines' option dataclasses (gate.serve) both use these.
REQUEST_TIMEOUT_S = 600.0
NUM_CONCURRENT = 8
HEALTH_TIMEOUT_S = 900.0
BATCH_SIZE = 32
MAX_RETRIES = 3


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors; field docstrings
    become the documentation (`use_attribute_docstrings`)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)


# ---------------------------------------------------------------- run config


class BaseModelConfig(Strict):
    """The model every candidate is compared against."""

    path: str
    """Local model directory, or a hub id (then `revision` should pin it)."""
    revision: str | None = None
    """Hub revision (commit sha or tag). Required for a reproducible baseline of a hub id."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype for serving. Baselines are keyed by it: bf16 and fp32 scores differ."""
    quantization: Literal["bitsandbytes"] | None = None
    """Serve the base quantized (QLoRA bases: 4-bit nf4 via bitsandbytes)."""
    trust_remote_code: bool = False
    """Run code shipped with the model. Off unless you trust the model's source."""


class Candidate(Strict):
    """One fine-tuned model to gate: exactly one of `adapter`, `model` or `sweep`."""

    name: str = Field(pattern=NAME_PATTERN)
    """Unique name; used as the served model name and in every report."""
    adapter: str | None = None
    """A LoRA/QLoRA adapter directory (adapter_config.json + adapter_model.safetensors)."""
    model: str | None = None
    """A full fine-tuned model directory (config.json + weights + tokenizer)."""
    sweep: str | None = None
    """A training run's output folder: every `checkpoint-<step>/` in it (and the final
    model, when it is a state no checkpoint holds) is gated as candidate `NAME@<step>`,
    and one is picked (thresholds.yaml `sweep.pick`)."""
    every: int | None = Field(None, ge=1)
    """Sweep only: gate the first checkpoint, every N-th after it, and the last."""
    steps: list[int] | None = Field(None, min_length=1)
    """Sweep only: gate exactly the checkpoints at these steps."""
    wandb_run: str | None = None
    """W&B run id that stands for this candidate (its training run): the gate writes the
    verdict into it under keys without the candidate's name, so runs line up in W&B."""
    allow_pickle: bool = False
    """Allow weights stored as pickle files (.bin/.pt). Pickles can run code on load."""
    quantization: Literal["bitsandbytes"] | None = None
    """A QLoRA adapter: it was trained on the base loaded in 4 bits (nf4, bitsandbytes).
    The gate then also scores it as trained, on a 4-bit base, and splits its change
    into the quantization effect (4-bit base vs 16-bit base) and the tuning effect
    (adapter vs 4-bit base), through the hf engine (needs the `qlora` extra)."""

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Candidate:
        if sum(x is not None for x in (self.adapter, self.model, self.sweep)) != 1:
            raise ValueError("give exactly one of `adapter` (a LoRA directory), `model` (a full fine-tune "
                             "directory) or `sweep` (a training run's folder of checkpoint-<step>/ folders)")
        if self.name in RESERVED_NAMES:
            raise ValueError(f"the name {self.name!r} is reserved for the base model; choose another")
        if self.sweep is None and (self.every is not None or self.steps is not None):
            raise ValueError("`every` and `steps` thin a sweep: use them with `sweep`")
        if self.every is not None and self.steps is not None:
            raise ValueError("give `every` or `steps`, not both")
        if self.quantization is not None and self.model is not None:
            raise ValueError("`quantization` marks a QLoRA adapter (trained on a 4-bit base); a full "
                             "fine-tune has no base to split from: remove `quantization`")
        return self

    @property
    def kind(self) -> Literal["lora", "full"]:
        return "lora" if self.adapter is not None else "full"

    @property
    def path(self) -> str:
        return next(p for p in (self.adapter, self.model, self.sweep, "") if p is not None)


class VllmConfig(Strict):
    """Options passed through to the vLLM OpenAI server the gate launches."""

    tensor_parallel_size: int = Field(1, ge=1)
    """Shard each layer over this many GPUs (vLLM --tensor-parallel-size)."""
    pipeline_parallel_size: int = Field(1, ge=1)
    """Split layers over this many GPUs or nodes (vLLM --pipeline-parallel-size)."""
    data_parallel_size: int = Field(1, ge=1)
    """Replicas of the model behind one server (vLLM --data-parallel-size)."""
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    """Share of accelerator memory vLLM may use; on CPU, of host memory for the KV cache."""
    max_model_len: int | None = Field(None, ge=16)
    """Context length to serve; lower it to fit memory."""
    max_num_seqs: int | None = Field(None, ge=1)
    """Sequences per engine batch (the CPU build forces 1 with LoRA; see ENGINE notes)."""
    enforce_eager: bool | None = None
    """Skip CUDA graphs / compilation (faster start for small models)."""
    port: int | None = Field(None, ge=1, le=65535)
    """Fixed port on 127.0.0.1; default: a free port."""
    health_timeout_s: float = Field(HEALTH_TIMEOUT_S, gt=0)
    """How long to wait for the server to answer before giving up (exit 3)."""
    request_timeout_s: float = Field(REQUEST_TIMEOUT_S, gt=0)
    """Per-request timeout for scoring calls."""
    num_concurrent: int = Field(NUM_CONCURRENT, ge=1)
    """Requests in flight to the server, shared by the models scored on it at the same time."""
    batch_size: int = Field(BATCH_SIZE, ge=1)
    """Prompts per HTTP request: fewer round trips for short prompts (the server batches
    them all the same; 1 sends one prompt per request)."""
    max_retries: int = Field(MAX_RETRIES, ge=0)
    """Tries per request, the first one included (lm-eval's `max_retries`: 3 is one try and two
    retries; 0 and 1 are one try), with backoff, before the evaluation fails (exit 3)."""
    extra_args: list[str] = Field(default_factory=list)
    """Extra command-line arguments for `vllm serve`, appended verbatim."""


class EndpointConfig(Strict):
    """An existing OpenAI-compatible vLLM deployment to evaluate against."""

    base_url: str = Field(pattern=r"^https?://")
    """Server root, e.g. http://vllm.internal:8000 (the gate appends /v1/...)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (the key itself is never stored)."""
    base_name: str = "base"
    """Served model name of the base model."""
    names: dict[str, str] = Field(default_factory=dict)
    """Served name per candidate, when it differs from the candidate's name."""
    engine_version: str = "unknown"
    """The deployment's vLLM version; part of the baseline fingerprint, so set it to keep baselines honest."""
    request_timeout_s: float = Field(REQUEST_TIMEOUT_S, gt=0)
    """Per-request timeout for scoring calls."""
    num_concurrent: int = Field(NUM_CONCURRENT, ge=1)
    """Requests in flight to the server, shared by the models scored on it at the same time."""
    batch_size: int = Field(BATCH_SIZE, ge=1)
    """Prompts per HTTP request: fewer round trips for short prompts (the server batches
    them all the same; 1 sends one prompt per request)."""
    max_retries: int = Field(MAX_RETRIES, ge=0)
    """Tries per request, the first one included (lm-eval's `max_retries`: 3 is one try and two
    retries; 0 and 1 are one try), with backoff, before the evaluation fails (exit 3)."""


class HfConfig(Strict):
    """The in-process transformers + peft reference engine."""

    batch_size: int = Field(8, ge=1)
    """Items per forward pass."""
    device: str = "cpu"
    """torch device, e.g. cpu or cuda:0."""


class EngineConfig(Strict):
    """Which engine scores the models, and its options. The choice is config, not code."""

    kind: Literal["vllm", "endpoint", "hf", "fake"] = "vllm"
    """vllm: launch a server; endpoint: use a running one; hf: in-process reference; fake: tests only."""
    vllm: VllmConfig = Field(default_factory=VllmConfig)  # type: ignore[arg-type]
    """Options for kind=vllm."""
    endpoint: EndpointConfig | None = None
    """Required for kind=endpoint."""
    hf: HfConfig = Field(default_factory=HfConfig)  # type: ignore[arg-type]
    """Options for kind=hf."""
    concurrent_candidates: int = Field(4, ge=1)
    """LoRA candidates (and sweep checkpoints) scored at the same time on one server, so the
    engine batches their requests together (vllm, endpoint; hf scores one at a time, its
    adapters share one in-process model). 1 scores them one after another."""

    @model_validator(mode="after")
    def _endpoint_needs_url(self) -> EngineConfig:
        if self.kind == "endpoint" and self.endpoint is None:
            raise ValueError("engine.kind is 'endpoint' but engine.endpoint (base_url, ...) is missing")
        return self


class BaselineConfig(Strict):
    """Where the base model's results are stored and whether they must exist."""

    store: str = ".gate/baselines"
    """Baseline store: a directory (relative to the config file) or wandb://entity/project/name[:alias]."""
    require: bool = False
    """Exit 2 instead of computing a missing or stale baseline (CI that must not spend GPU time on the base)."""

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: str) -> str:
        if "://" in v:
            from gate.baseline.wandb_store import parse_store_uri
            from gate.errors import InputError

            try:
                parse_store_uri(v)
            except InputError as exc:
                problem = exc.problems[0]
                raise ValueError(f"{problem.message} (fix: {problem.fix})") from exc
        return v


class WandbConfig(Strict):
    """Optional Weights & Biases logging."""

    project: str
    """W&B project to log to."""
    entity: str | None = None
    """W&B entity (team or user)."""
    run_id: str | None = None
    """Attach to this existing run (e.g. the fine-tuning run) instead of creating one."""
    mode: Literal["online", "offline", "disabled"] | None = None
    """Force a W&B mode; default follows WANDB_MODE."""


class ProbesConfig(Strict):
    """Sanity probes run before the full evaluation (see gate.serve.probes)."""

    enabled: bool = True
    """Check that each adapter changes the model's outputs (a no-op adapter is reported)."""
    parity: bool = True
    """Compare the served engine's log-likelihoods with the transformers reference (small models only)."""
    parity_max_bytes: int = Field(2_000_000_000, ge=0)
    """Largest model (weights on disk) for which the in-process reference is loaded."""
    parity_tolerance: float = Field(0.02, gt=0)
    """Allowed served-vs-reference difference, nats per token (fp32 agrees to ~1e-5; bf16 to ~1e-2).
    Half-precision serving is allowed its roundoff on top: 0.39% (bf16) or 0.05% (fp16)
    x sqrt(layers) of each text's log-likelihood (gate.serve.probes.parity_allowance)."""


class RunConfig(Strict):
    """The run config (`gate.yaml`): what to gate, against what, and how."""

    base: BaseModelConfig
    """The base model."""
    candidates: list[Candidate] = Field(min_length=1)
    """The fine-tuned models to gate."""
    suite: str
    """Suite YAML (three tiers of lm-eval tasks), relative to this file."""
    thresholds: str = "thresholds.yaml"
    """Release policy YAML, relative to this file."""
    waivers: str | None = None
    """Waivers YAML (accepted drops, each bound to one candidate's fingerprint), relative to this file."""
    engine: EngineConfig = Field(default_factory=EngineConfig)  # type: ignore[arg-type]
    """Engine kind and options."""
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    """Baseline store."""
    out: str = "gate-out"
    """Output directory for results.json, report.html, junit.xml, summary.md and logs."""
    dataset_mirror: str | None = None
    """A local folder of datasets laid out as MIRROR/ORG/NAME (hub snapshots or save_to_disk copies):
    lm-eval's tasks load their hub datasets from it (air-gapped CI). Relative to this file."""
    cache_dir: str = ".gate/cache"
    """Per-model response caches (keyed by model fingerprint), for resumable runs."""
    release: list[str] | None = None
    """Candidates whose verdict decides the release; default: all of them."""
    wandb: WandbConfig | None = None
    """Weights & Biases settings; omit to disable."""
    probes: ProbesConfig = Field(default_factory=ProbesConfig)  # type: ignore[arg-type]
    """Sanity probes (adapter applied, engine parity)."""

    @field_validator("candidates")
    @classmethod
    def _names_unique(cls, v: list[Candidate]) -> list[Candidate]:
        names = [c.name for c in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"candidate names must be unique; repeated: {', '.join(dupes)}")
        return v

    @model_validator(mode="after")
    def _qlora_split_needs_a_16bit_base(self) -> RunConfig:
        marked = [c.name for c in self.candidates if c.quantization]
        if marked and self.base.quantization:
            raise ValueError(f"candidates {', '.join(marked)} are marked QLoRA (`quantization`), which splits "
                             "their change against the 16-bit base, but `base.quantization` serves the base "
                             "in 4 bits: remove one of the two")
        return self

    @model_validator(mode="after")
    def _wandb_runs_need_a_project(self) -> RunConfig:
        named = [c.name for c in self.candidates if c.wandb_run]
        if named and self.wandb is None:
            raise ValueError(f"candidates {', '.join(named)} name a `wandb_run` but there is no `wandb` "
                             "section: add `wandb: {project: NAME}`")
        return self

    @field_validator("release")
    @classmethod
    def _release_known(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        cands = info.data.get("candidates")
        if v is None or cands is None:
            return v
        names = [c.name for c in cands]
        unknown = [r for r in v if r not in names]
        if unknown:
            raise ValueError(f"release names unknown candidates {unknown}; known: {names}")
        return v


# --------------------------------------------------------------------- suites


class TaskSpec(Strict):
    """One lm-eval task in a tier."""

    task: str = Field(min_length=1)
    """A task name from lm-eval's registry or from the suite's `include` folders, or a task YAML path relative to the suite."""
    metric: str | None = None
    """The metric the gate judges (default: the task's first metric)."""
    num_fewshot: int | None = Field(None, ge=0)
    """Few-shot examples (default: the task's own)."""
    samples: int | None = Field(None, ge=1)
    """Evaluate a seeded random subset of this many documents (never the first N)."""
    seed: int = 1234
    """Seed of the subset draw and of lm-eval's few-shot sampling."""
    split: str | None = Field(None, min_length=1)
    """Evaluate this split instead of the task's own (its test split, else validation): e.g.
    `validation` where a dataset mirror has no test split. Reports name the split used."""
    cluster: str | None = Field(None, min_length=1)
    """Items that share this document field (a passage id, an article, a subject) are
    not independent: intervals then treat clusters as the sampling unit, and early
    stopping draws whole clusters. `member` for a group (MMLU): each member task is
    one cluster."""

    @property
    def cluster_field(self) -> str | None:
        """The document field items cluster by (None: none, or `member`)."""
        return self.cluster if self.cluster != "member" else None


class Tiers(Strict):
    """The three tiers of a suite; each must list at least one task."""

    target: list[TaskSpec] = Field(min_length=1)
    """Tier 1: the task the fine-tune is for; it must improve."""
    related: list[TaskSpec] = Field(min_length=1)
    """Tier 2: neighbouring tasks; they may not drop beyond the margin."""
    general: list[TaskSpec] = Field(min_length=1)
    """Tier 3: unrelated general capability (MMLU, HellaSwag, ARC, ...): catastrophic forgetting shows here."""


class Suite(Strict):
    """A three-tier benchmark suite."""

    name: str = Field(pattern=NAME_PATTERN)
    """Suite name, shown in reports."""
    description: str = ""
    """What this suite checks, in a sentence."""
    include: list[str] = Field(default_factory=list)
    """Folders of extra lm-eval task YAMLs, relative to the suite file."""
    tiers: Tiers
    """The three tiers."""

    @model_validator(mode="after")
    def _tasks_unique(self) -> Suite:
        seen: dict[str, str] = {}
        for tier in TIERS:
            for spec in getattr(self.tiers, tier):
                if spec.task in seen:
                    raise ValueError(f"task {spec.task!r} appears in tier {seen[spec.task]!r} and in tier {tier!r}; a task belongs to one tier")
                seen[spec.task] = tier
        return self

    def tasks(self) -> list[tuple[Tier, TaskSpec]]:
        """All tasks with their tier, in suite order."""
        return [(tier, spec) for tier in TIERS for spec in getattr(self.tiers, tier)]


# ----------------------------------------------------------------- thresholds


class Margin(Strict):
    """A margin in the metric's own units (`absolute`) and/or a share of the base score (`relative`).
    When both are given, the stricter one applies: the smaller allowed drop, the larger required gain."""

    absolute: float | None = Field(None, ge=0)
    """Absolute margin, e.g. 0.02 = 2 points of accuracy."""
    relative: float | None = Field(None, ge=0, le=1)
    """Relative margin, e.g. 0.05 = 5% of the base score."""

    @model_validator(mode="after")
    def _one_given(self) -> Margin:
        if self.absolute is None and self.relative is None:
            raise ValueError("give `absolute` and/or `relative`")
        return self


class TierPolicyConfig(Strict):
    """Policy of one tier, or an override for one task."""

    allowed_drop: Margin | None = None
    """How much worse than the base the candidate may be (related and general tiers)."""
    required_gain: Margin | None = None
    """How much better than the base the candidate must be (target tier)."""
    inconclusive: Inconclusive | None = None
    """What an undecided result means for the release: fail, warn (pass with a warning) or pass."""
    alpha: float | None = Field(None, gt=0, lt=1)
    """Significance level for this tier or task (default: the file's `alpha`)."""


class SequentialConfig(Strict):
    """Early stopping: score each candidate task in rounds and stop it once decided.

    Why: most of a gate's GPU time goes to items that no longer change the
    verdict. Rounds follow a seeded random order of the task's items; after
    each round an always-valid confidence sequence (gate.verdict.sequential) decides
    PASS or FAIL or asks for the next round. The base model is always scored
    in full (it is the stored baseline every candidate is compared with).
    """

    enabled: bool = True
    """Score candidates in rounds and stop decided tasks (false: every item of every task)."""
    first_round: int = Field(64, ge=8)
    """Items in the first round; later rounds grow by `growth` (a task smaller than two
    rounds is scored in one go)."""
    growth: float = Field(2.0, gt=1, le=16)
    """Ratio between consecutive cumulative round sizes."""
    early_share: float = Field(0.2, gt=0, le=1)
    """Share of each family's alpha spent on the early looks; the rest decides tasks that
    run to their last item (the paired test + Holm, as without early stopping)."""
    fail_fast: bool = True
    """Stop every task of a candidate once one of its tasks has FAILED: the candidate
    fails whatever the rest shows. Tasks stopped this way are reported as stopped."""


class SweepConfig(Strict):
    """How one checkpoint of a sweep is picked for release (gate.verdict.sweep).

    Every checkpoint of a sweep of K is judged at alpha/K (Bonferroni across
    checkpoints), so the pick's PASS keeps its false-PASS rate at alpha however
    it was chosen among the K."""

    pick: Literal["best_target", "earliest"] = "best_target"
    """best_target: among the checkpoints that PASS, the one with the largest target
    gain; earliest: the earliest checkpoint that PASSes. Checkpoints shown safe on every
    task come before those that pass with inconclusive tasks."""
    stop_after_fail: bool = False
    """Stop scoring a sweep's checkpoints after the first that FAILs (saves time;
    forgetting is not always monotonic, so later ones are scored by default)."""


class Thresholds(Strict):
    """The release policy (`thresholds.yaml`)."""

    alpha: float = Field(0.05, gt=0, lt=1)
    """Significance level: the false-FAIL rate per family (see `family`) is held at
    alpha (Holm), and so is each task's false-PASS rate."""
    family: Literal["tier", "candidate"] = "tier"
    """Over which tasks Holm's correction of FAIL decisions runs: `tier` (each tier's
    tasks: a candidate with three tiers can be falsely failed up to 3 alpha of the
    time) or `candidate` (all of a candidate's tasks: at most alpha per candidate)."""
    bootstrap_samples: int | None = Field(None, ge=200, le=1_000_000)
    """No longer used: every paired decision now has an analytic p-value (the exact
    paired test or the delta-method t), so no bootstrap size can limit Holm's
    correction. Accepted so that older thresholds files still validate."""
    seed: int = 0
    """Seed of the random item order that early-stopping rounds follow."""
    inconclusive: Inconclusive = "warn"
    """Default meaning of an undecided result."""
    tiers: dict[Tier, TierPolicyConfig]
    """Policy per tier: target, related, general."""
    tasks: dict[str, TierPolicyConfig] = Field(default_factory=dict)
    """Per-task overrides, keyed by task name."""
    sequential: SequentialConfig = Field(default_factory=SequentialConfig)  # type: ignore[arg-type]
    """Early stopping of candidate tasks (see SequentialConfig)."""
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    """How a sweep's checkpoint is picked (see SweepConfig)."""

    @field_validator("tiers")
    @classmethod
    def _all_tiers(cls, v: dict[Tier, TierPolicyConfig]) -> dict[Tier, TierPolicyConfig]:
        missing = [t for t in TIERS if t not in v]
        if missing:
            raise ValueError(f"missing tier policies: {', '.join(missing)}")
        if v["target"].required_gain is None:
            raise ValueError("tier 'target' needs `required_gain` (the fine-tune must improve its target)")
        for t in ("related", "general"):
            if v[t].allowed_drop is None:
                raise ValueError(f"tier {t!r} needs `allowed_drop`")
        return v

    def policy_for(self, tier: Tier, task: str) -> TaskPolicy:
        """Resolve tier defaults and a task override into one TaskPolicy."""
        base = self.tiers[tier]
        over = self.tasks.get(task) or TierPolicyConfig.model_validate({})
        kind: Literal["drop", "gain"] = "gain" if tier == "target" else "drop"
        margin = (over.required_gain or base.required_gain) if kind == "gain" else (over.allowed_drop or base.allowed_drop)
        assert margin is not None  # guaranteed by _all_tiers
        return TaskPolicy(
            tier=tier,
            kind=kind,
            absolute=margin.absolute,
            relative=margin.relative,
            alpha=over.alpha or base.alpha or self.alpha,
            inconclusive=over.inconclusive or base.inconclusive or self.inconclusive,
        )
