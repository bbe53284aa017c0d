"""Sanity probes: prove a number means what it says before trusting it.

Real failures this catches (cheap: a handful of short texts per model):

- an adapter that was silently not applied, so the "tuned" scores equal the
  base's (lm-eval #2432, #808): the adapter's log-likelihoods on the probe
  texts must differ from the base's by more than numerical noise;
- a served engine that scores differently from the transformers + peft
  reference (a wrong dtype, a dropped lm_head delta as in vLLM #51594, a
  mis-mapped LoRA as in vLLM #16668): for models small enough, the served
  per-token log-likelihoods must agree with the `hf` engine's; disagreement
  stops the run (exit 3) showing both numbers.

How close is close enough (`parity_allowance`): the reference runs in
float32. An engine serving in bfloat16 rounds every layer's output to 8 bits
of mantissa; the roundings of L residual layers add up like a random walk, so
its summed log-likelihoods differ from the reference by about the unit
roundoff times sqrt(L) of their size (the probabilistic error bound of Higham
and Mary, 2019), and most where the model is far from its training (an
adapter that wrecks the model puts every token at -10 nats). So a text may
differ by `parity_tolerance` per token plus roundoff x sqrt(layers) of the
reference's magnitude: nothing extra in float32, 0.39% x sqrt(L) in
bfloat16 (2.1% on SmolLM2-135M's 30 layers, where a healthy model served in
bf16 was measured 1.2% from the reference). A wrecked adapter then reaches
the verdict, which FAILs it (exit 1), instead of being reported as broken
infrastructure.

What it still stops: in float32 (engines agree to 1e-5 nats a token) any
gap beyond 0.02 nats a token, so a wrong or missing BOS, a dropped lm_head
delta or a mis-mapped LoRA. In half precision only gaps beyond the
roundoff's reach: a whole nat lost on one token of a short text can hide in
a deep model's bf16 noise. For a definitive check, run once in float32.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.config.models import RunConfig
from gate.errors import EngineError
from gate.evaluate.records import TaskRecords
from gate.serve.base import BASE_NAME, ModelSpec, weight_bytes

#: Summed log-likelihood differences below this (nats per probe) are noise.
NOOP_TOLERANCE = 1e-4

#: unit roundoff of each serving dtype (2^-mantissa bits): the share of a summed
#: log-likelihood by which an engine computing in it may differ from float32
ROUNDOFF = {"float32": 0.0, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


def served_dtype(dtype: str) -> str:
    """The dtype parity is judged for. `auto` lets the engine choose, and vLLM
    serves a float32 checkpoint in half precision on most platforms: judged as
    bfloat16, the widest roundoff it may pick."""
    return dtype if dtype in ROUNDOFF else "bfloat16"


def parity_allowance(reference: float, n_tokens: int, tolerance: float, dtype: str, layers: int = 1) -> float:
    """The largest served-vs-reference difference (nats) one probe text may show."""
    return max(1, n_tokens) * tolerance + relative_allowance(dtype, layers) * abs(reference)


def relative_allowance(dtype: str, layers: int) -> float:
    """The share of a text's log-likelihood half precision may move it: roundoff x sqrt(layers)."""
    return ROUNDOFF[served_dtype(dtype)] * math.sqrt(max(1, layers))


def model_layers(model_dir: str) -> int:
    """num_hidden_layers (or n_layer) from a model folder's config.json; 1 when unknown."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 1
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = text.get(key) if isinstance(text, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return 1


@dataclass
class ProbeResult:
    """One probe's outcome, as results.json's `probes` entries."""

    probe: str  # "adapter_applied" | "engine_parity"
    model: str
    status: str  # "ok" | "noop" | "mismatch" | "skipped"
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The results.json entry (schema `$defs/probe`: name, message, candidate, severity)."""
        severity = {"ok": "info", "skipped": "info", "noop": "warning", "mismatch": "error"}[self.status]
        return {"name": self.probe, "message": self.detail, "candidate": self.model, "severity": severity,
                "status": self.status, **self.values}


def rolling_loglikelihoods(lm: Any, texts: Sequence[str]) -> list[float]:
    """Summed log-likelihood of each text under an lm-eval LM."""
    from lm_eval.api.instance import Instance

    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
                for i, t in enumerate(texts)]
    out = lm.loglikelihood_rolling(requests)
    return [float(x[0]) if isinstance(x, (tuple, list)) else float(x) for x in out]


def adapter_applied(name: str, base_ll: Sequence[float], cand_ll: Sequence[float]) -> ProbeResult:
    """An adapter whose log-likelihoods equal the base's on every probe is a no-op."""
    diffs = [abs(a - b) for a, b in zip(base_ll, cand_ll, strict=True)]
    biggest = max(diffs, default=0.0)
    if biggest <= NOOP_TOLERANCE:
        return ProbeResult("adapter_applied", name, "noop",
                           f"{name} scores the probe texts exactly like the base (max |diff| {biggest:.2e} nats): "
                           "the adapter is not applied, or it is a no-op (LoRA B = 0)",
                           {"max_abs_diff": biggest})
    return ProbeResult("adapter_applied", name, "ok", f"{name} differs from the base (max |diff| {biggest:.3g} nats)",
                       {"max_abs_diff": biggest})


def engine_parity(name: str, served: Sequence[float], reference: Sequence[float], n_tokens: Sequence[int],
                  tolerance: float, dtype: str = "float32", layers: int = 1) -> ProbeResult:
    """Served (in `dtype`) vs float32 reference log-likelihoods; a text apart by more
    than `parity_allowance` is a mismatch (an error)."""
    rows = list(zip(served, reference, n_tokens, strict=True))
    allowed = [parity_allowance(r, n, tolerance, dtype, layers) for _, r, n in rows]
    used = [abs(s - r) / a for (s, r, _), a in zip(rows, allowed, strict=True)]
    worst = max(range(len(used)), key=used.__getitem__) if used else 0
    per_token = max((abs(s - r) / max(1, n) for s, r, n in rows), default=0.0)
    per_text = max((abs(s - r) for s, r, _ in rows), default=0.0)
    judged = served_dtype(dtype)
    values = {"max_abs_diff_per_token": per_token, "max_abs_diff": per_text, "served": served[worst] if served else None,
              "reference": reference[worst] if reference else None, "tolerance": tolerance, "dtype": judged,
              "layers": layers,
              "allowed": allowed[worst] if allowed else None, "share_of_allowance": used[worst] if used else 0.0}
    if used and used[worst] > 1.0:
        s, r, n = rows[worst]
        share = relative_allowance(judged, layers)
        extra = f" + {share:.2%} of the total ({layers} layers)" if share else ""
        return ProbeResult("engine_parity", name, "mismatch",
                           f"{name}: the served engine gives {s:.6f} nats on probe {worst}, the hf reference "
                           f"{r:.6f} ({abs(s - r):.3g} nats apart over {n} tokens; served in {judged}, the probe "
                           f"allows {allowed[worst]:.3g}: {tolerance:g}/token{extra})", values)
    return ProbeResult("engine_parity", name, "ok",
                       f"{name}: served engine ({judged}) agrees with the hf reference within "
                       f"{per_token:.1e} nats/token ({used[worst] if used else 0.0:.0%} of the allowance)", values)


def raise_on_mismatch(results: Sequence[ProbeResult]) -> None:
    """Stop the run (exit 3) when any engine-parity probe failed."""
    bad = [r for r in results if r.probe == "engine_parity" and r.status == "mismatch"]
    if bad:
        raise EngineError(problems=[], message="; ".join(r.detail for r in bad),
                          fix="serve in float32, check the adapter (lm_head/embeddings are not served by vLLM "
                              "prompt logprobs, vllm-project/vllm #51594), or use the hf engine")


def chance_floor(task: str, base_score: float, chance: float | None, n: int) -> ProbeResult | None:
    """A base at or below chance on a task: probably plumbing (prompt format,
    answer extraction) or a task the base cannot do, not a measurement."""
    from gate.verdict.judge import chance_tolerance

    if chance is None or base_score != base_score:  # no choices known, or NaN
        return None
    if base_score > chance + chance_tolerance(chance, n):
        return None
    return ProbeResult("chance_floor", "base", "noop",
                       f"the base scores {base_score:.3f} on {task}, at chance ({chance:.3f}): check the task's "
                       "prompt format and answer extraction; its related/general verdicts are INCONCLUSIVE",
                       {"task": task, "base_score": base_score, "chance": chance})


def chance_floors(base: Mapping[str, TaskRecords]) -> list[ProbeResult]:
    """A chance-floor note for every task the base scores at chance on, in `base`'s order."""
    return [r for task, rec in base.items() if (r := chance_floor(task, rec.score, rec.chance, rec.n)) is not None]


#: bump when what a cached reference holds changes
REFERENCE_CACHE_FORMAT = 1


class ProbeRun:
    """Runs the sanity probes (gate.serve.probes) on each served group, before evaluation.

    The parity probe's hf reference (a child process loading torch, PEFT and
    the weights: seconds to minutes) is cached per model under
    `cache_dir/parity/`, keyed by the model's fingerprint (weights, tokenizer,
    adapter), the probe texts and the reference's library versions: a rerun,
    or a run that adds one candidate, computes the reference only for what is
    new. The served side is always scored: it is what the probe checks.
    """

    def __init__(self, cfg: RunConfig, texts: list[str], engine_kind: str, say: Callable[[str], None],
                 fingerprints: Mapping[str, str] | None = None) -> None:
        self.cfg, self.texts, self.engine_kind, self.say = cfg, texts, engine_kind, say
        self.fingerprints = dict(fingerprints or {})
        self.results: list[ProbeResult] = []
        self.base_ll: list[float] | None = None

    def _small_enough(self, spec: ModelSpec) -> bool:
        size = weight_bytes(spec.path if spec.kind == "full" else spec.base_path)
        return size is not None and size <= self.cfg.probes.parity_max_bytes

    def check(self, group: list[ModelSpec], lms: dict[str, Any]) -> None:
        pcfg = self.cfg.probes
        if not pcfg.enabled or not self.texts or self.engine_kind == "fake":
            return
        served = {spec.name: rolling_loglikelihoods(lms[spec.name], self.texts) for spec in group}
        if BASE_NAME in served:
            self.base_ll = served[BASE_NAME]
        for spec in group:
            if spec.name != BASE_NAME and self.base_ll is not None:
                result = adapter_applied(spec.name, self.base_ll, served[spec.name])
                self.results.append(result)
                if result.status == "noop":
                    self.say(f"probe: {result.detail}")
        if pcfg.parity and self.engine_kind in ("vllm", "endpoint") and all(self._small_enough(s) for s in group):
            self._parity(group, served)

    def _parity(self, group: list[ModelSpec], served: dict[str, list[float]]) -> None:
        from transformers import AutoTokenizer

        from gate.serve.hf import HfOptions
        from gate.serve.hf_reference import reference_loglikelihoods

        tok = AutoTokenizer.from_pretrained(group[0].base_path, trust_remote_code=self.cfg.base.trust_remote_code)
        n_tokens = [len(tok(t).input_ids) for t in self.texts]
        options = HfOptions(dtype="float32", trust_remote_code=self.cfg.base.trust_remote_code,
                            allow_pickle=any(c.allow_pickle for c in self.cfg.candidates))
        refs = {spec.name: got for spec in group if (got := self._cached(spec.name)) is not None}
        need = [spec for spec in group if spec.name not in refs]
        if any(s.kind == "lora" for s in need) and all(s.name != BASE_NAME for s in need):
            # the reference serves a LoRA on its base: the base comes along (and is cheap)
            need = [s for s in group if s.name == BASE_NAME or s in need]
        if need:
            self.say(f"probe: engine parity against the hf reference ({', '.join(s.name for s in need)})")
            # In a child process: torch, PEFT and the weights never enter the gate's own memory.
            fresh = reference_loglikelihoods(need, self.texts, options, Path(self.cfg.out) / "logs")
            for name, values in fresh.items():
                self._store(name, values)
            refs.update(fresh)
        if cached := [spec.name for spec in group if spec not in need]:
            self.say(f"probe: engine parity against the hf reference cached for {', '.join(cached)}")
        for spec in group:
            self.results.append(engine_parity(spec.name, served[spec.name], refs[spec.name], n_tokens,
                                              self.cfg.probes.parity_tolerance, self.cfg.base.dtype,
                                              model_layers(spec.path if spec.kind == "full" else spec.base_path)))
        raise_on_mismatch(self.results)

    def _cache_file(self, name: str) -> Path | None:
        from gate.baseline.fingerprint import canonical_json, installed_version, sha256_text

        if name not in self.fingerprints:
            return None
        key = sha256_text(canonical_json({
            "format": REFERENCE_CACHE_FORMAT, "model": self.fingerprints[name], "texts": self.texts,
            "dtype": "float32", "quantization": self.cfg.base.quantization,
            "trust_remote_code": self.cfg.base.trust_remote_code,
            "versions": {d: installed_version(d) for d in ("torch", "transformers", "peft", "lm_eval")}}))
        return Path(self.cfg.cache_dir) / "parity" / f"{key[:32]}.json"

    def _cached(self, name: str) -> list[float] | None:
        path = self._cache_file(name)
        if path is None or not path.is_file():
            return None
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed, never trusted
        if not (isinstance(values, list) and len(values) == len(self.texts)
                and all(isinstance(v, float) for v in values)):
            return None
        return values

    def _store(self, name: str, values: list[float]) -> None:
        from gate.atomic import atomic_write_text

        path = self._cache_file(name)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(values))
