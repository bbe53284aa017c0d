"""waivers.yaml: drops the release approvers accept, each bound to one exact candidate.

A waiver names the candidate by its fingerprint (results.json's
`candidates[].fingerprint`: a digest of its weights and adapter), a task or a
drop tier, the largest drop accepted (`allowed_drop`, in thresholds.yaml's
units), why, who approved it and until when. It applies only to a candidate
whose fingerprint matches exactly, so retraining an adapter under the same
name ends its waivers; an expired waiver, or one that matches no candidate of
the run, is reported and never applied. `gate waive` writes entries from a
results.json.

    waivers:
      - candidate: overfit@100          # for people; matching is by fingerprint
        fingerprint: 6a11f873...        # 64 hex characters, from results.json
        task: toy_add                   # or `tier: related` (every task of the tier)
        allowed_drop: {absolute: 0.12}  # a drop beyond 12 points still fails
        reason: toy_add is not used by this product (TICKET-123)
        approved_by: alice@example.com
        expires: 2027-01-31             # applies through this date
"""

from __future__ import annotations

import datetime as dt
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from gate.config.models import Margin, Strict
from gate.config.policy import Waiver
from gate.config.yaml_io import parse_model, read_yaml
from gate.errors import ConfigError, Problem

FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


class WaiverEntry(Strict):
    """One waiver as written in waivers.yaml."""

    candidate: str | None = None
    """The candidate's name when the waiver was granted (for people; matching is by fingerprint)."""
    fingerprint: str
    """The candidate's `fingerprint` from results.json: 64 lowercase hex characters."""
    task: str | None = None
    """The task whose drop is accepted (give `task` or `tier`)."""
    tier: Literal["related", "general"] | None = None
    """Or a whole drop tier: every task of it."""
    allowed_drop: Margin
    """The largest drop accepted, in thresholds.yaml's units (absolute 0.12 = 12 points)."""
    reason: str = Field(min_length=1)
    """Why the drop is accepted (a ticket, a product decision)."""
    approved_by: str = Field(min_length=1)
    """Who accepted it."""
    expires: dt.date
    """The last day it applies (YYYY-MM-DD)."""

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint_form(cls, v: str) -> str:
        if not FINGERPRINT.match(v):
            raise ValueError(f"fingerprint {v!r} is not 64 lowercase hex characters: copy the candidate's "
                             "`fingerprint` from results.json (gate waive fills it in)")
        return v

    @field_validator("expires", mode="before")
    @classmethod
    def _a_date(cls, v: object) -> object:
        if isinstance(v, dt.datetime) or not isinstance(v, (dt.date, str)):
            raise ValueError(f"expires must be a date written YYYY-MM-DD (got {v!r})")
        if isinstance(v, str):
            try:
                return dt.date.fromisoformat(v)
            except ValueError:
                raise ValueError(f"expires must be a date written YYYY-MM-DD (got {v!r})") from None
        return v

    @field_validator("reason", "approved_by")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must say something: a waiver without a reason or an approver is not reviewable")
        return v.strip()

    @model_validator(mode="after")
    def _task_or_tier(self) -> WaiverEntry:
        if (self.task is None) == (self.tier is None):
            raise ValueError("give exactly one of `task` (one task) or `tier` (related or general)")
        return self


class WaiversFile(Strict):
    """waivers.yaml."""

    waivers: list[WaiverEntry] = Field(default_factory=list)


def load_waivers(path: Path) -> list[Waiver]:
    """Every waiver in `path`; raises ConfigError (exit 2) listing every problem."""
    parsed = parse_model(WaiversFile, read_yaml(path), str(path))
    seen: dict[tuple[str, str], int] = {}
    problems = []
    out = []
    for i, e in enumerate(parsed.waivers):
        scope = e.task if e.task is not None else f"tier {e.tier}"
        if (e.fingerprint, scope) in seen:
            problems.append(Problem(f"two waivers for {scope} of the same candidate (entries {seen[e.fingerprint, scope]} "
                                    f"and {i})", file=str(path), key=f"waivers.{i}",
                                    fix="keep one entry per candidate and task; remove or merge the other"))
        seen[e.fingerprint, scope] = i
        out.append(Waiver(fingerprint=e.fingerprint, task=e.task, tier=e.tier, absolute=e.allowed_drop.absolute,
                          relative=e.allowed_drop.relative, reason=e.reason, approved_by=e.approved_by,
                          expires=e.expires, candidate=e.candidate, source=f"{path}: waivers.{i}"))
    if problems:
        raise ConfigError(problems=problems)
    return out


def waiver_problems(waivers: Sequence[Waiver], tiers: Mapping[str, str], file: str) -> list[Problem]:
    """Waivers naming a task the suite lacks, or a target task (a waiver accepts a
    drop; the target tier requires a gain). `tiers`: task name -> tier."""
    problems = []
    for w in waivers:
        if w.task is None:
            continue
        key = w.source.rsplit(": ", 1)[-1] + ".task"
        if w.task not in tiers:
            problems.append(Problem(f"waiver for unknown task {w.task!r}", file=file, key=key,
                                    fix=f"name a task of the suite: {', '.join(sorted(tiers))}"))
        elif tiers[w.task] == "target":
            problems.append(Problem(f"task {w.task} is in the target tier: a waiver accepts a drop, and the "
                                    "target tier requires a gain", file=file, key=key,
                                    fix="remove the waiver, or change required_gain in thresholds.yaml"))
    return problems


@dataclass(frozen=True)
class WaiverCheck:
    """What became of one waiver in a run."""

    waiver: Waiver
    #: in_force: matches a candidate and has not expired; expired; no_match: its
    #: fingerprint is no candidate's in this run (retrained, or not gated)
    status: Literal["in_force", "expired", "no_match"]
    #: the candidates of the run with its fingerprint
    candidates: tuple[str, ...]

    @property
    def note(self) -> str:
        who = f" ({self.waiver.candidate})" if self.waiver.candidate else ""
        scope = self.waiver.task or f"tier {self.waiver.tier}"
        if self.status == "expired":
            return (f"waiver for {scope}{who} expired on {self.waiver.expires.isoformat()}: not applied "
                    f"({self.waiver.source})")
        if self.status == "no_match":
            return (f"waiver for {scope}{who}: no candidate of this run has fingerprint "
                    f"{self.waiver.fingerprint[:12]}... (retrained or not gated): not applied ({self.waiver.source})")
        return f"waiver for {scope} in force for {', '.join(self.candidates)} ({self.waiver.source})"

    def to_dict(self) -> dict[str, object]:
        return {**self.waiver.to_dict(), "status": self.status, "candidates": list(self.candidates),
                "note": self.note}


def match_waivers(waivers: Sequence[Waiver], fingerprints: Mapping[str, str], today: dt.date,
                  ) -> tuple[dict[str, list[Waiver]], list[WaiverCheck]]:
    """The waivers in force per candidate (by exact fingerprint, not expired), and
    what became of every waiver."""
    by_fp: dict[str, list[str]] = {}
    for name, fingerprint in fingerprints.items():
        by_fp.setdefault(fingerprint, []).append(name)
    active: dict[str, list[Waiver]] = {}
    checks = []
    for w in waivers:
        names = tuple(by_fp.get(w.fingerprint, ()))
        if w.expired(today):
            checks.append(WaiverCheck(w, "expired", names))
        elif not names:
            checks.append(WaiverCheck(w, "no_match", names))
        else:
            checks.append(WaiverCheck(w, "in_force", names))
            for name in names:
                active.setdefault(name, []).append(w)
    return active, checks


def utc_today() -> dt.date:
    """Today in UTC: a waiver's expiry means the same day on every runner."""
    return dt.datetime.now(dt.timezone.utc).date()


HEADER = """\
# Waivers: drops the release approvers accept, each bound to one exact candidate
# (its fingerprint: weights and adapter). A retrained candidate is not waived; an
# expired waiver is not applied; a drop worse than the accepted one still fails.
# Review changes to this file like code. Written by `gate waive`; see the README.
waivers:
"""


def entry_from_results(results: Mapping[str, Any], results_file: str, *, candidate: str, task: str | None,
                       tier: str | None, reason: str, approved_by: str, expires: str, allowed_drop: float | None,
                       today: dt.date) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A waivers.yaml entry for `candidate`'s `task` (or drop `tier`) in a
    results.json, and the results' tasks it covers. The fingerprint comes from
    the results; the accepted drop is `allowed_drop`, or the measured
    interval's worse end. Raises ConfigError (exit 2) for anything a reviewer
    could not accept: an unknown candidate or task, a target task, a date in
    the past, an empty reason or approver."""
    cand = next((c for c in results["candidates"] if c["name"] == candidate), None)
    if cand is None:
        raise ConfigError(f"no candidate {candidate!r} in the results", file=results_file, key="--candidate",
                          fix=f"name one of: {', '.join(c['name'] for c in results['candidates'])}")
    if not cand.get("fingerprint"):
        raise ConfigError(f"candidate {candidate} has no fingerprint in the results (a `gate compare` run)",
                          file=results_file, key="--candidate",
                          fix="waive from the results.json of a `gate run`, which fingerprints every candidate")
    if (task is None) == (tier is None):
        raise ConfigError("give exactly one of --task or --tier", key="--task", fix="name one task, or one drop tier")
    try:
        until = dt.date.fromisoformat(expires)
    except ValueError:
        raise ConfigError(f"--expires {expires!r} is not a date", key="--expires",
                          fix="write it YYYY-MM-DD, e.g. 2027-01-31") from None
    if until < today:
        raise ConfigError(f"--expires {expires} is in the past", key="--expires",
                          fix="give the last day the waiver should apply, today or later")
    for key, value in (("--reason", reason), ("--by", approved_by)):
        if not value.strip():
            raise ConfigError(f"{key} is empty", key=key, fix="say why, and who accepts the drop")
    tasks = {t["task"]: (tr["tier"], t) for tr in cand["tiers"] for t in tr["tasks"]}
    covered = [t for name, (tr, t) in tasks.items() if (name == task if task else tr == tier)]
    if task is not None and task not in tasks:
        raise ConfigError(f"candidate {candidate} has no task {task!r} in the results", key="--task",
                          fix=f"name one of: {', '.join(tasks)}")
    if task is not None and tasks[task][0] == "target":
        raise ConfigError(f"task {task} is in the target tier: a waiver accepts a drop, and the target tier "
                          "requires a gain", key="--task", fix="waive a related or general task")
    if not covered:
        raise ConfigError(f"candidate {candidate} has no {tier} tasks in the results", key="--tier",
                          fix="waive a tier the suite has, or a single task")
    entry: dict[str, Any] = {"candidate": candidate, "fingerprint": cand["fingerprint"],
                             **({"task": task} if task else {"tier": tier}),
                             "allowed_drop": _allowed(covered, allowed_drop), "reason": reason.strip(),
                             "approved_by": approved_by.strip(), "expires": until}
    return entry, covered


def append_entry(path: Path, entry: Mapping[str, Any]) -> None:
    """Append `entry` to the waivers file as text (the others, and their
    comments, stay as written), creating the file if needed. The whole file as
    it would be written is validated first; then it is written atomically."""
    from gate.atomic import atomic_write_text

    before = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    count = len(load_waivers(path)) if path.is_file() else 0  # a broken file is reported as it is
    body = yaml.safe_dump([dict(entry)], sort_keys=False, allow_unicode=True, default_flow_style=None)
    text = before + ("" if before.endswith("\n") else "\n") + "".join(f"  {line}\n" for line in body.splitlines())
    with tempfile.TemporaryDirectory(prefix="gate-waive-") as tmp:
        probe = Path(tmp) / path.name
        probe.write_text(text, encoding="utf-8")
        try:
            got = load_waivers(probe)
        except ConfigError as exc:
            raise ConfigError(f"the new entry would not fit in {path}: {exc.problems[0].message}", file=str(path),
                              fix="keep `waivers:` a block-style list at the end of the file, or add the "
                                  "entry by hand") from None
    if len(got) != count + 1:
        raise ConfigError(f"the new entry would not land in the `waivers:` list of {path}", file=str(path),
                          fix="keep `waivers:` a block-style list at the end of the file, or add the entry by hand")
    atomic_write_text(path, text)


def drop_words(margin: Mapping[str, float]) -> str:
    """An accepted drop in words: "0.12 (absolute; 12.0 points of accuracy)"."""
    if "absolute" in margin:
        return f"{margin['absolute']:g} (absolute; {100 * margin['absolute']:.1f} points of accuracy)"
    return f"{100 * margin['relative']:.1f}% of the base"


def _points(task: dict[str, Any]) -> bool:
    from gate.report import format as fmt

    return fmt.is_points(task)


def _worse_edge(task: dict[str, Any]) -> float | None:
    """The measured interval's worse end, as a drop (positive), in the metric's units."""
    low, high = task.get("ci_low"), task.get("ci_high")
    edge = low if task["higher_is_better"] else high
    if edge is None or not math.isfinite(edge):
        return None
    return max(0.0, -edge if task["higher_is_better"] else edge)


def _allowed(tasks: list[dict[str, Any]], given: float | None) -> dict[str, float]:
    """The accepted drop: the value given, or the worse end of the measured
    interval(s), rounded up to 0.1 point (accuracy-like tasks, absolute) or to
    0.1% of the base (others, relative), so the same evidence is waived."""
    relative = not all(_points(t) for t in tasks)
    if given is not None:
        if not given > 0 or (relative and given > 1):
            raise ConfigError(f"--allowed-drop {given} is out of range", key="--allowed-drop",
                              fix="a positive number; a share of the base (at most 1) for perplexity-like tasks")
        return {"relative" if relative else "absolute": given}
    edges = []
    for t in tasks:
        edge = _worse_edge(t)
        base = float(t.get("base_score") or 0.0)
        if edge is None or (relative and not base):
            raise ConfigError(f"task {t['task']} has no measured interval to take the drop from "
                              f"(verdict {t['verdict']})", key="--allowed-drop",
                              fix="give the largest drop to accept with --allowed-drop")
        edges.append(edge / abs(base) if relative else edge)
    value = math.ceil(max(edges) * 1000 - 1e-9) / 1000
    return {"relative" if relative else "absolute": max(value, 0.001)}
