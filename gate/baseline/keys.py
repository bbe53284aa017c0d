"""The baseline key of every (model, task) of a run.

A key holds everything that changes a task's per-item results: the model's
(and adapter's) content digests, dtype, quantization, engine and lm-eval
versions, the task's config, data and item selection. A candidate scored in
rounds used only the items its verdict needed; which ones depends on the
base's records, the policies and the round settings, so its key also carries
the `rounds_digest` of all of them (a rerun reproduces the same verdict from
the records cache, and a change to any of them rescores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gate.baseline import fingerprint as fp
from gate.config.load import GateSetup
from gate.config.policy import TaskPolicy
from gate.evaluate.plan import TaskPlan
from gate.serve.base import BASE_NAME

#: bump when what a cached candidate record holds changes meaning
#: (2: sequential outcomes carry the full base score)
OUTCOME_FORMAT = 2


class ModelIdentities:
    """What identifies each model of a run (its weights, tokenizer, adapter),
    hashed once: the keys and the candidates' fingerprints come from it, and
    the fingerprints decide which waivers apply before the keys are built."""

    def __init__(self, setup: GateSetup) -> None:
        cfg = setup.config
        self.base_identity = fp.model_identity(cfg.base.path, cfg.base.revision)
        #: model name -> (model identity, adapter identity); the base first
        self.model_ids: dict[str, tuple[dict[str, str], dict[str, str]]] = {BASE_NAME: (self.base_identity, {})}
        for c in cfg.candidates:
            if c.kind == "lora":
                self.model_ids[c.name] = (self.base_identity, fp.adapter_identity(c.path))
            else:
                self.model_ids[c.name] = (fp.model_identity(c.path), {})

    def fingerprints(self) -> dict[str, str]:
        """One digest per model (results.json's `fingerprint`): its weights and adapter."""
        return {name: fp.sha256_text(fp.canonical_json({"model": ident, "adapter": adapter}))
                for name, (ident, adapter) in self.model_ids.items()}


class RunKeys:
    """Keys for one run: built once from the config, the plans and the engine."""

    def __init__(self, setup: GateSetup, plans: Sequence[TaskPlan], *, engine_kind: str, engine_version: str,
                 policies: Mapping[str, Mapping[str, TaskPolicy]], identities: ModelIdentities) -> None:
        cfg = setup.config
        self._cfg = cfg
        self._engine_kind, self.engine_version = engine_kind, engine_version
        self._lm_eval_version = fp.installed_version("lm_eval", "lm-eval")
        self._sequential = setup.thresholds.sequential.enabled
        self.identities = identities
        self.base_identity = self.identities.base_identity
        self.model_ids = self.identities.model_ids
        base_keys = {p.name: self.key(BASE_NAME, p).digest() for p in plans}

        def rounds_digest(pols: Mapping[str, TaskPolicy]) -> str:
            return fp.sha256_text(fp.canonical_json({
                "settings": setup.thresholds.sequential.model_dump(mode="json"), "seed": setup.thresholds.seed,
                "family": setup.thresholds.family, "outcome_format": OUTCOME_FORMAT,
                "policies": {name: vars(pol) for name, pol in sorted(pols.items())},
                "base": base_keys,
            }))

        #: what the rounds of each candidate depend on; `policies` are per candidate
        #: (a sweep's checkpoints are judged at alpha/K, so their looks differ)
        self._rounds = {c.name: rounds_digest(policies[c.name]) for c in cfg.candidates}

    def key(self, model: str, plan: TaskPlan) -> fp.BaselineKey:
        """The key under which `model`'s records of `plan` are stored."""
        cfg = self._cfg
        identity, adapter = self.model_ids[model]
        items = plan.fingerprint_parts["selection"]
        if model != BASE_NAME and self._sequential:
            items = fp.sha256_text(f"{items}|rounds:{self._rounds[model]}")
        spec = plan.task.spec
        return fp.BaselineKey(
            model=identity, dtype=cfg.base.dtype, engine=self._engine_kind, engine_version=self.engine_version,
            lm_eval_version=self._lm_eval_version, task=plan.name,
            task_config=fp.sha256_text(plan.config_hash + "|metric=" + str(plan.metric)
                                       + (f"|cluster={spec.cluster}" if spec.cluster else "")),
            task_version=plan.version, data=plan.data_hash,
            quantization=cfg.base.quantization or "none", adapter=adapter,
            num_fewshot=spec.num_fewshot, items=items, seed=spec.seed,
        )

    def fingerprints(self) -> dict[str, str]:
        """One digest per model (results.json's `fingerprint`): its weights and adapter."""
        return self.identities.fingerprints()
