"""Log the gate's verdict to Weights & Biases, beside the fine-tuning run.

Teams compare fine-tuning runs in W&B, so the verdict belongs there: attached
to the training run itself (`run_id=`) so it sits next to the loss curves, or
as a run of its own (`job_type="gate"`). Everything logged is read from
results.json; nothing is computed here, so W&B can never disagree with the
HTML report.

What lands in the run:

    config   gate.run_config   the run config, secrets dropped
             gate.report.results      schema/gate version, created, baseline and
                               candidate fingerprints, provenance
    summary  gate/verdict, gate/exit_code, gate/reason
             gate/<candidate>/verdict
             gate/<candidate>/<tier>/verdict
             gate/<candidate>/<tier>/<task>/{delta,ci_low,ci_high,
                 base_score,candidate_score,verdict,n_used}
             gate/<candidate>/tasks     wandb.Table, one row per task
             gate/<candidate>/flipped   wandb.Table, items that flipped
             gate/report                wandb.Html of report.html
    artifact gate-report-<run id>, type "gate-report": results.json,
             report.html, junit.xml, summary.md

Everything goes to the run *summary*, never to the history: a verdict is a
fact about the run, not a point on a curve, and history rows written by an
attached (resumed) offline run would start again at step 0 and be dropped by
W&B when synced beside the training run's later steps. Summary keys are the
same for every run, so W&B's run comparison lines them up.

Secrets: the settings turn off what W&B records about the process (command
line, program, machine, git, code, requirements, system metrics, console
output), config keys named like a secret are dropped, and config strings that
contain the value of a secret-named environment variable are redacted.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from gate.config.models import RunConfig
from gate.errors import GateError, InfraError, InputError
from gate.report.results import validate_results

__all__ = [
    "ARTIFACT_TYPE",
    "FLIPPED_COLUMNS",
    "REPORT_FILES",
    "TASK_COLUMNS",
    "WandbRunInfo",
    "is_secret_name",
    "log_to_wandb",
    "log_verdict",
    "summary_metrics",
    "without_secrets",
]

INSTALL_HINT = "pip install 'gate[wandb]'"
ARTIFACT_TYPE = "gate-report"
REPORT_FILES = ("results.json", "report.html", "junit.xml", "summary.md")
TASK_COLUMNS = ["tier", "task", "metric", "base", "candidate", "delta", "ci_low", "ci_high",
                "p_value", "n", "n_used", "margin", "verdict"]
FLIPPED_COLUMNS = ["task", "doc_id", "prompt", "target", "base_response", "candidate_response"]
TASK_SUMMARY_FIELDS = ("delta", "ci_low", "ci_high", "base_score", "candidate_score",
                       "verdict", "n_used")

REDACTED = "[redacted]"
# A word of a key name that marks a secret: api_key, HF_TOKEN, hfToken,
# client_secret, DB_PASSWORD, credentials. "tokenizer" or "keyword" are not.
SECRET_WORD = re.compile(r"(key|token|secret|passw(or)?d|credential)s?$")
# ...unless it counts or names tokenizer tokens (max_new_tokens, add_bos_token):
# engine settings that belong in the provenance.
TOKEN_COUNT_WORDS = frozenset({"bos", "eos", "pad", "unk", "sep", "cls", "mask", "special",
                               "stop", "max", "min", "num", "new"})
# Values shorter than this are not treated as secrets when scrubbing strings
# (an env var `TOKEN_TYPE=jwt` must not redact every "jwt" in the config).
MIN_SECRET_LEN = 8


@dataclass(frozen=True)
class WandbRunInfo:
    """Where the verdict went: the run id, its local folder, and its URL online."""

    run_id: str
    run_dir: Path | None
    """The local run folder (`.../wandb/offline-run-...-<id>`); None when disabled."""
    url: str | None
    """The run's page; None offline or disabled."""


def _import_wandb() -> ModuleType:
    """wandb, imported only when asked for: it is an optional extra."""
    try:
        return importlib.import_module("wandb")
    except ImportError as exc:
        raise InputError(
            "Weights & Biases logging needs the `wandb` package, which is not installed",
            key="wandb", fix=f"{INSTALL_HINT}, or remove the `wandb` section from the run config",
        ) from exc


def is_secret_name(name: str) -> bool:
    """Whether a config key or variable name looks like it holds a secret."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    for index, word in enumerate(words):
        previous = words[index - 1] if index else None
        if SECRET_WORD.search(word) and not (
                word in ("token", "tokens") and previous in TOKEN_COUNT_WORDS):
            return True
    return False


def _env_secret_values() -> list[str]:
    """Values of environment variables named like secrets (API keys, tokens)."""
    return [value for name, value in os.environ.items()
            if is_secret_name(name) and len(value) >= MIN_SECRET_LEN]


def without_secrets(value: Any, secret_values: list[str] | None = None) -> Any:
    """A copy of `value` without secret-named keys, secret values redacted.

    Drops every mapping key named like a secret, at any depth (see
    `is_secret_name`: api_key, hf_token, client_secret, DB_PASSWORD), and
    replaces any string containing one of `secret_values` (default: the
    values of secret-named environment variables) with "[redacted]", so a
    token pasted into an innocent-looking field does not leak either.
    """
    secrets = _env_secret_values() if secret_values is None else secret_values
    if isinstance(value, dict):
        return {str(k): without_secrets(v, secrets) for k, v in value.items()
                if not is_secret_name(str(k))}
    if isinstance(value, (list, tuple)):
        return [without_secrets(v, secrets) for v in value]
    if isinstance(value, str) and any(s in value for s in secrets):
        return REDACTED
    return value


def _tasks(candidate: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(tier["tier"], task) for tier in candidate["tiers"] for task in tier["tasks"]]


def summary_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """The scalar summary keys for `results`, as W&B will show them (no tables)."""
    release = results["release"]
    summary: dict[str, Any] = {
        "gate/verdict": release["verdict"],
        "gate/exit_code": release["exit_code"],
        "gate/reason": release["reason"],
        "gate/label": release.get("label") or release["verdict"],
        "gate/not_shown_safe": release.get("not_shown_safe", 0),
    }
    for candidate in results["candidates"]:
        prefix = f"gate/{candidate['name']}"
        summary[f"{prefix}/verdict"] = candidate["verdict"]
        summary[f"{prefix}/label"] = candidate.get("label") or candidate["verdict"]
        summary[f"{prefix}/not_shown_safe"] = len(candidate.get("not_shown_safe", []))
        for tier in candidate["tiers"]:
            summary[f"{prefix}/{tier['tier']}/verdict"] = tier["verdict"]
            for task in tier["tasks"]:
                for field in TASK_SUMMARY_FIELDS:
                    summary[f"{prefix}/{tier['tier']}/{task['task']}/{field}"] = task[field]
    return summary


def _task_rows(candidate: dict[str, Any]) -> list[list[Any]]:
    return [[tier, t["task"], t["metric"], t["base_score"], t["candidate_score"], t["delta"],
             t["ci_low"], t["ci_high"], t["p_value"], t["n"], t["n_used"], t["margin"],
             t["verdict"]] for tier, t in _tasks(candidate)]


def _flipped_rows(candidate: dict[str, Any]) -> list[list[Any]]:
    # doc_id is an int in lm-eval's samples but may be a string; one type per
    # column keeps wandb.Table's type inference from rejecting a later row.
    return [[t["task"], str(item["doc_id"]), item["prompt"], item["target"],
             item["base_response"], item["candidate_response"]]
            for _, t in _tasks(candidate) for item in t.get("flipped") or []]


def _results_config(results: dict[str, Any]) -> dict[str, Any]:
    """Fingerprints and provenance: what makes two gate runs comparable."""
    return {
        "schema_version": results["schema_version"],
        "gate_version": results["gate_version"],
        "created": results["created"],
        "baseline": results["baseline"],
        "candidates": {c["name"]: {"kind": c["kind"], "path": c["path"],
                                   "fingerprint": c["fingerprint"]}
                       for c in results["candidates"]},
        "provenance": results["provenance"],
    }


def _short_time(created: str) -> str:
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        when = datetime.now(timezone.utc)
    return when.strftime("%Y%m%d-%H%M%S")


def _effective_mode(mode: str | None) -> str:
    chosen = mode or os.environ.get("WANDB_MODE") or "online"
    return "offline" if chosen == "dryrun" else chosen


def _settings(wandb: ModuleType, mode: str | None) -> Any:
    """Settings that keep the process itself out of the run.

    Metadata (command line, program, host), git, code, requirements, system
    metrics and console capture are all off: they describe the gate process,
    not the model, they would overwrite the training run's own metadata when
    attaching, and the command line may carry secrets.
    """
    options: dict[str, Any] = {
        "x_disable_meta": True, "x_disable_machine_info": True, "x_disable_stats": True,
        "x_save_requirements": False, "disable_git": True, "disable_code": True,
        "save_code": False, "console": "off", "silent": True,
    }
    if mode is not None:
        options["mode"] = mode
    return wandb.Settings(**options)


def _init(wandb: ModuleType, results: dict[str, Any], *, project: str, entity: str | None,
          run_id: str | None, mode: str | None) -> Any:
    """Attach to `run_id` (resume) or create a `gate` run; map W&B's errors to ours."""
    settings = _settings(wandb, mode)
    verdict = results["release"]["verdict"]
    kwargs: dict[str, Any] = {"project": project, "entity": entity, "settings": settings,
                              "reinit": "create_new"}
    if run_id is not None:
        # Online, "must" refuses a mistyped id instead of silently creating a
        # stray run; offline there is no server to ask, so "allow".
        kwargs.update(id=run_id,
                      resume="must" if _effective_mode(mode) == "online" else "allow")
    else:
        kwargs.update(job_type="gate", tags=["gate", verdict.lower()],
                      name=f"gate-{verdict}-{_short_time(results['created'])}")
    try:
        return wandb.init(**kwargs)
    except (wandb.errors.AuthenticationError, wandb.errors.UsageError) as exc:
        raise InputError(
            f"W&B refused the run: {exc}", key="wandb.run_id" if run_id else "wandb.project",
            fix="check wandb.project/entity/run_id, run `wandb login` or set WANDB_API_KEY, "
                "or set WANDB_MODE=offline and `wandb sync` later",
        ) from exc
    except wandb.errors.Error as exc:
        raise InfraError(f"W&B could not start the run: {exc}", key="wandb",
                         fix="retry, or set WANDB_MODE=offline and `wandb sync` later") from exc


def _artifact(wandb: ModuleType, run: Any, results: dict[str, Any], out_dir: Path) -> Any:
    """The report files as one `gate-report` artifact, results.json always included."""
    release = results["release"]
    artifact = wandb.Artifact(
        f"gate-report-{run.id}", type=ARTIFACT_TYPE,
        description=release["reason"],
        metadata={"verdict": release["verdict"], "exit_code": release["exit_code"],
                  "gate_version": results["gate_version"], "created": results["created"]},
    )
    for name in REPORT_FILES:
        if (out_dir / name).is_file():
            artifact.add_file(str(out_dir / name), name=name)
    if not (out_dir / "results.json").is_file():
        # A library caller may hand us the dict without having written it.
        with artifact.new_file("results.json", mode="w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return artifact


def log_to_wandb(results: dict[str, Any], out_dir: Path, *, project: str,
                 entity: str | None = None, run_id: str | None = None,
                 mode: str | None = None, config: dict[str, Any] | None = None) -> WandbRunInfo:
    """Log the verdict in `results` (and the reports in `out_dir`) to W&B.

    `run_id` attaches to an existing run (the fine-tuning run) so the verdict
    sits beside its training curves; without it a new run with
    `job_type="gate"` is created. `mode` ("online", "offline", "disabled")
    overrides WANDB_MODE. `config` is the gate's run config; keys named like
    secrets are dropped before it is logged.

    Offline, wandb 0.31's core may still be writing the run's transaction
    log (`run-<id>.wandb`) when this returns; it is complete once the process
    exits (W&B's atexit hook) or after `wandb.teardown()`. This function does
    not call teardown itself: that would also finish any run the caller has
    open.

    Raises InputError when results do not match the schema, wandb is not
    installed, or W&B refuses the run (login, project, unknown run id);
    InfraError when W&B fails otherwise.
    """
    validate_results(results)
    wandb = _import_wandb()
    out_dir = Path(out_dir)
    active = wandb.run
    # Called from inside the training script with that very run active: log
    # into it and leave finishing it to its owner.
    reuse = active is not None and run_id is not None and active.id == run_id
    run = active if reuse else _init(wandb, results, project=project, entity=entity,
                                     run_id=run_id, mode=mode)
    failed = True
    try:
        gate_config = without_secrets({"run_config": config or {},
                                       "results": _results_config(results)})
        run.config.update({"gate": gate_config}, allow_val_change=True)
        summary: dict[str, Any] = summary_metrics(results)
        for candidate in results["candidates"]:
            prefix = f"gate/{candidate['name']}"
            summary[f"{prefix}/tasks"] = wandb.Table(columns=TASK_COLUMNS,
                                                     data=_task_rows(candidate))
            summary[f"{prefix}/flipped"] = wandb.Table(columns=FLIPPED_COLUMNS,
                                                       data=_flipped_rows(candidate))
        if (out_dir / "report.html").is_file():
            summary["gate/report"] = wandb.Html(out_dir / "report.html", inject=False)
        run.summary.update(summary)
        run.log_artifact(_artifact(wandb, run, results, out_dir))
        offline_or_off = bool(run.offline or run.disabled)
        info = WandbRunInfo(run_id=run.id,
                            run_dir=None if run.disabled else Path(run.settings.sync_dir),
                            url=None if offline_or_off else run.url)
        failed = False
    except wandb.errors.Error as exc:
        raise InfraError(f"W&B failed while logging the verdict: {exc}", key="wandb",
                         fix="retry, or set WANDB_MODE=offline and `wandb sync` later") from exc
    finally:
        if not reuse:
            # Never mark an attached training run as crashed because logging failed.
            run.finish(exit_code=1 if failed and run_id is None else 0)
    return info


def log_verdict(results: dict[str, Any], out: Path, cfg: RunConfig, say: Callable[[str], None]) -> None:
    """Log a run's verdict to W&B as its config says. A logging failure is
    reported, never turned into a different release verdict: the gate's answer
    is already in results.json. Bad W&B settings (exit 2) still stop the run."""
    if cfg.wandb is None:
        return
    try:
        info = log_to_wandb(results, out, project=cfg.wandb.project, entity=cfg.wandb.entity,
                            run_id=cfg.wandb.run_id, mode=cfg.wandb.mode, config=cfg.model_dump(mode="json"))
    except InputError:
        raise
    except GateError as exc:
        say(f"warning: W&B logging failed: {exc.render()}")
        return
    where = info.url or (f"offline, in {info.run_dir}; upload with `wandb sync`" if info.run_dir else "offline")
    say(f"W&B: logged to run {info.run_id} ({where})")
