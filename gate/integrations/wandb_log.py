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
             gate/candidates            wandb.Table, one row per candidate
             gate/<candidate>/tasks     wandb.Table, one row per task
             gate/<candidate>/flipped   wandb.Table, items that flipped
             gate/report                wandb.Html of report.html
    artifact gate-report-<run id>, type "gate-report": results.json,
             report.html, junit.xml, summary.md

A run that stands for one candidate (its training run: `wandb_run:` per
candidate, or `--wandb-run-id` with a single candidate) gets keys without the
candidate's name instead (`unit_metrics`): gate/verdict, gate/<tier>/verdict,
gate/<tier>/<task>/{delta,...}, gate/tasks. Two training runs gated this way
share every key, so W&B's run comparison lines them up; a sweep also reports
gate/pick, gate/pick_step, gate/pick_epoch (and, as W&B copies a history's
last row into the summary, gate/train_step, gate/epoch, gate/passes,
gate/picked; the task keys are then overwritten with the pick's).

A verdict is a summary fact, not a point on a curve. The one exception is a
sweep's forgetting curve, which is a curve over training steps: each
checkpoint is a history row carrying `gate/train_step`, and
`define_metric("gate/*", step_metric="gate/train_step")` tells W&B to plot
gate's keys against it, so the rows sit at the checkpoints' steps beside the
loss even though they are logged after training ended (online, a resumed
run's own `_step` continues past the training's; the x-axis is the step
metric either way).

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
from collections.abc import Callable, Mapping
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

INSTALL_HINT = "pip install 'forgetting-gate[wandb]'"
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
        "gate/waived": release.get("waived", 0),
    }
    for candidate in results["candidates"]:
        summary.update(_candidate_keys(f"gate/{candidate['name']}", candidate))
    return summary


def _candidate_keys(prefix: str, candidate: dict[str, Any]) -> dict[str, Any]:
    """One candidate's verdict, label, tiers and task figures under `prefix`."""
    keys: dict[str, Any] = {f"{prefix}/verdict": candidate["verdict"],
                            f"{prefix}/label": candidate.get("label") or candidate["verdict"],
                            f"{prefix}/not_shown_safe": len(candidate.get("not_shown_safe", [])),
                            f"{prefix}/waived": len(candidate.get("waived", []))}
    for tier in candidate["tiers"]:
        keys[f"{prefix}/{tier['tier']}/verdict"] = tier["verdict"]
        for task in tier["tasks"]:
            for field in TASK_SUMMARY_FIELDS:
                keys[f"{prefix}/{tier['tier']}/{task['task']}/{field}"] = task[field]
    if split := candidate.get("qlora_split"):  # a QLoRA candidate: the two effects, as trained
        keys[f"{prefix}/qlora/larger"] = split["larger"] or ""
        for row in split["tasks"]:
            for effect in ("quantization", "tuning"):
                keys[f"{prefix}/qlora/{row['task']}/{effect}_delta"] = row[effect]["delta"]
    return keys


def release_units(results: dict[str, Any]) -> list[str]:
    """What a release is decided on: each candidate not in a sweep, and each sweep."""
    swept = {c["candidate"] for s in results.get("sweeps", []) for c in s["checkpoints"]}
    return [c["name"] for c in results["candidates"] if c["name"] not in swept] + \
        [s["name"] for s in results.get("sweeps", [])]


def _unit_candidate(results: dict[str, Any], unit: str) -> dict[str, Any] | None:
    """The candidate entry that stands for `unit`: itself, or a sweep's pick."""
    sweep = next((s for s in results.get("sweeps", []) if s["name"] == unit), None)
    name = sweep["pick"] if sweep is not None else unit
    return next((c for c in results["candidates"] if c["name"] == name), None)


def unit_metrics(results: dict[str, Any], unit: str) -> dict[str, Any]:
    """The summary keys of a run that stands for one candidate (its training run):
    no candidate name in them, so every training run gated this way has the same
    keys and W&B's run comparison lines them up. A sweep reports its pick."""
    sweep = next((s for s in results.get("sweeps", []) if s["name"] == unit), None)
    candidate = _unit_candidate(results, unit)
    summary: dict[str, Any] = {"gate/release_verdict": results["release"]["verdict"],
                               "gate/release_reason": results["release"]["reason"]}
    if sweep is not None:
        pick = next((c for c in sweep["checkpoints"] if c["candidate"] == sweep["pick"]), None)
        summary.update({"gate/reason": sweep["reason"], "gate/pick": sweep["pick"] or "",
                        "gate/pick_step": pick["step"] if pick else None,
                        "gate/pick_epoch": pick["epoch"] if pick else None})
        if pick is None:
            return {**summary, "gate/verdict": "FAIL", "gate/label": "FAIL"}
    if candidate is None:
        raise InputError(f"no candidate or sweep named {unit!r} in the results", key="wandb_run",
                         fix="name a candidate of this run")
    summary.setdefault("gate/reason", candidate["reason"])
    return {**summary, **_candidate_keys("gate", candidate)}


#: the step metric a sweep's history rows are plotted against (the training step)
TRAIN_STEP = "gate/train_step"


def curve_rows(results: dict[str, Any], sweep_name: str) -> list[dict[str, Any]]:
    """One history row per scored checkpoint of a sweep, keyed like `unit_metrics`
    and carrying `gate/train_step`, so W&B draws the forgetting curve on the
    training run's own step axis, beside its loss."""
    sweep = next(s for s in results.get("sweeps", []) if s["name"] == sweep_name)
    by_name = {c["name"]: c for c in results["candidates"]}
    rows = []
    for point in sweep["checkpoints"]:
        cand = by_name.get(point["candidate"])
        if cand is None or point["step"] is None:
            continue
        row: dict[str, Any] = {TRAIN_STEP: point["step"], "gate/passes": int(point["verdict"] == "PASS"),
                               "gate/picked": int(point["candidate"] == sweep["pick"])}
        if point["epoch"] is not None:
            row["gate/epoch"] = point["epoch"]
        for tier, task in _tasks(cand):
            for field in ("delta", "ci_low", "ci_high"):
                if task[field] is not None:
                    row[f"gate/{tier}/{task['task']}/{field}"] = task[field]
        rows.append(row)
    return rows


def _task_rows(candidate: dict[str, Any]) -> list[list[Any]]:
    return [[tier, t["task"], t["metric"], t["base_score"], t["candidate_score"], t["delta"],
             t["ci_low"], t["ci_high"], t["p_value"], t["n"], t["n_used"], t["margin"],
             t["verdict"]] for tier, t in _tasks(candidate)]


CANDIDATE_COLUMNS = ["candidate", "kind", "verdict", "label", "target", "related", "general", "fingerprint",
                     "reason"]


def _candidate_rows(results: dict[str, Any]) -> list[list[Any]]:
    """One row per candidate: a standalone gate run's overview table."""
    rows = []
    for c in results["candidates"]:
        tiers = {t["tier"]: t["verdict"] for t in c["tiers"]}
        rows.append([c["name"], c["kind"], c["verdict"], c.get("label") or c["verdict"],
                     tiers.get("target", ""), tiers.get("related", ""), tiers.get("general", ""),
                     c.get("fingerprint") or "", c["reason"]])
    return rows


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
                 mode: str | None = None, config: dict[str, Any] | None = None,
                 unit: str | None = None) -> WandbRunInfo:
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

    `unit`: the run stands for this one candidate or sweep (its training run):
    summary keys carry no candidate name (`unit_metrics`), its tasks table is
    `gate/tasks`, and a sweep's curve goes to history against `gate/train_step`
    (`curve_rows`). Without it: per-candidate keys and a `gate/candidates` table.
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
        summary: dict[str, Any]
        if unit is not None:
            summary = unit_metrics(results, unit)
            candidate = _unit_candidate(results, unit)
            if candidate is not None:
                summary["gate/tasks"] = wandb.Table(columns=TASK_COLUMNS, data=_task_rows(candidate))
                summary["gate/flipped"] = wandb.Table(columns=FLIPPED_COLUMNS, data=_flipped_rows(candidate))
            if any(s["name"] == unit for s in results.get("sweeps", [])):
                run.define_metric(TRAIN_STEP)
                run.define_metric("gate/*", step_metric=TRAIN_STEP)
                for row in curve_rows(results, unit):
                    run.log(row)
        else:
            summary = summary_metrics(results)
            summary["gate/candidates"] = wandb.Table(columns=CANDIDATE_COLUMNS, data=_candidate_rows(results))
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


def log_verdict(results: dict[str, Any], out: Path, cfg: RunConfig, say: Callable[[str], None],
                unit_runs: Mapping[str, str] | None = None) -> None:
    """Log a run's verdict to W&B as its config says. A logging failure is
    reported, never turned into a different release verdict: the gate's answer
    is already in results.json. Bad W&B settings (exit 2) still stop the run.

    `unit_runs`: candidate or sweep -> the W&B run that stands for it (`wandb_run:`
    in gate.yaml): each gets its verdict under keys without its name. A
    `wandb.run_id` with a single candidate (or sweep) stands for it the same way;
    otherwise that run (or a new `gate` run) gets the whole run's keys."""
    if cfg.wandb is None:
        return
    own = dict(unit_runs or {})
    units = release_units(results)
    main_unit = units[0] if cfg.wandb.run_id is not None and len(units) == 1 and units[0] not in own else None
    logs: list[tuple[str | None, str | None, dict[str, Any] | None]] = [
        (cfg.wandb.run_id, main_unit, cfg.model_dump(mode="json"))]
    logs += [(run_id, unit, None) for unit, run_id in own.items()]
    for run_id, unit, config in logs:
        try:
            info = log_to_wandb(results, out, project=cfg.wandb.project, entity=cfg.wandb.entity,
                                run_id=run_id, mode=cfg.wandb.mode, config=config, unit=unit)
        except InputError:
            raise
        except GateError as exc:
            say(f"warning: W&B logging failed: {exc.render()}")
            continue
        where = info.url or (f"offline, in {info.run_dir}; upload with `wandb sync`" if info.run_dir else "offline")
        say(f"W&B: logged {unit + ' ' if unit else ''}to run {info.run_id} ({where})")
