"""report.html: one self-contained page rendered from results.json alone.

Jinja2 with autoescaping on (model outputs, prompts and task names are
untrusted text) and StrictUndefined (a template that names a key results.json
lacks fails loudly instead of rendering a blank). The page carries inline CSS
and inline SVG only: no script, no external font, image or link, plus a
Content-Security-Policy that makes the browser refuse them anyway.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from gate.config.policy import TIERS
from gate.report import format as fmt
from gate.report.plots import forest_svg, sweep_svg
from gate.report.qlora import split_rows, split_sentence
from gate.report.remedies import remedies, summary_sentence, sweep_remedy

TEMPLATE = "report.html.j2"
_PROBE_KEYS = ("name", "candidate", "severity", "message")
_PROVENANCE_SHOWN = ("gate_version", "lm_eval_version", "engine", "suite_hash",
                     "thresholds_hash", "git_commit")


@cache
def environment() -> jinja2.Environment:
    """The one Jinja environment: templates as package data, escaping on."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gate.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _text(value: Any) -> str:
    """A provenance value as one line of text (nested objects as compact JSON)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict) and value:
        rows: list[tuple[str, str]] = []
        for key in sorted(value):
            rows += _flatten(f"{prefix}.{key}" if prefix else str(key), value[key])
        return rows
    return [(prefix, _text(value))]


def _candidate_view(candidate: dict[str, Any], index: int) -> dict[str, Any]:
    tiers = fmt.tiers_in_order(candidate)
    return {
        "candidate": candidate,
        "tiers": tiers,
        "remedies": remedies(candidate),
        "training_sentence": summary_sentence(candidate),
        "split_rows": split_rows(candidate),
        "split_sentence": split_sentence(candidate),
        # forest_svg is our own matplotlib output with every comment (the only
        # place raw text could appear) stripped; text is drawn as paths.
        "forest_svg": Markup(forest_svg(candidate, id_prefix=f"forest{index}")),
    }


def _probe_view(probe: dict[str, Any]) -> dict[str, Any]:
    extra = [(key, _text(probe[key])) for key in sorted(probe) if key not in _PROBE_KEYS]
    return {
        "name": probe["name"],
        "candidate": probe.get("candidate") or "all",
        "severity": probe.get("severity") or "info",
        "message": probe["message"],
        "extra": extra,
    }


def _matrix(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The approver's first screen: a row per candidate, a cell per tier with
    its verdict, the task that decided it (delta and interval), the items used
    and, for a tier that passed, the smallest drop the run could have seen."""
    picked = {s["pick"] for s in results.get("sweeps", []) if s["pick"]}
    swept = {c["candidate"] for s in results.get("sweeps", []) for c in s["checkpoints"]}
    released = set(results["release"]["candidates"])
    rows = []
    for cand in results["candidates"]:
        tiers = {t["tier"]: t for t in cand["tiers"]}
        cells: list[dict[str, Any] | None] = []
        for name in TIERS:
            tier = tiers.get(name)
            if tier is None:
                cells.append(None)
                continue
            task = next((t for t in tier["tasks"] if t["task"] == tier["worst_task"]), tier["tasks"][0])
            used = sum(t["n_used"] for t in tier["tasks"])
            total = sum(t["n"] for t in tier["tasks"])
            cells.append({"verdict": tier["verdict"], "task": task["task"],
                          "delta": fmt.delta(task, task["delta"]), "interval": fmt.interval(task),
                          "used": f"{used:,} of {total:,} items" if used != total else f"{total:,} items",
                          "detectable": fmt.detectable(task, short=True)
                          if tier["verdict"] in ("PASS", "WAIVED") else ""})
        role = ("picked checkpoint" if cand["name"] in picked else "checkpoint" if cand["name"] in swept
                else "released" if cand["name"] in released else "not released")
        rows.append({"name": cand["name"], "kind": cand["kind"], "verdict": cand["verdict"],
                     "label": fmt.label(cand), "role": role, "cells": cells,
                     "fingerprint": (cand.get("fingerprint") or "")[:12]})
    return rows


def _provenance_line(results: dict[str, Any]) -> str:
    """One line an approver pastes into a release ticket: what was compared, with what."""
    prov = results["provenance"]
    base = prov.get("base") or {}
    engine = prov.get("engine") or {}
    parts = [f"base {base.get('path', '?')}" + (f"@{base['revision'][:12]}" if base.get("revision") else ""),
             "candidates " + ", ".join(f"{c['name']} {c['fingerprint'][:12]}" if c.get("fingerprint") else c["name"]
                                       for c in results["candidates"]),
             f"engine {engine.get('kind', '?')} {engine.get('version', '')}".rstrip(),
             f"suite {prov.get('suite', '?')} {str(prov.get('suite_hash', ''))[:12]}".rstrip(),
             f"thresholds {str(prov.get('thresholds_hash', ''))[:12]}",
             f"gate {prov.get('gate_version', '?')}, lm-eval {prov.get('lm_eval_version', '?')}"]
    if prov.get("git_commit"):
        parts.append(f"commit {str(prov['git_commit'])[:12]}")
    return "; ".join(parts)


def render_html(results: dict[str, Any]) -> str:
    """The report page for a validated results dict (see gate.report.results)."""
    provenance = results["provenance"]
    context = {
        "results": results,
        "fmt": fmt,
        "candidates": [_candidate_view(c, i) for i, c in enumerate(results["candidates"], 1)],
        "probes": [_probe_view(p) for p in results["probes"]],
        "matrix": _matrix(results),
        "tier_order": TIERS,
        "provenance_line": _provenance_line(results),
        "waivers_in_force": [w for w in results.get("waivers", []) if w["status"] == "in_force"],
        "sweeps": results.get("sweeps", []),
        "sweep_svgs": {s["name"]: Markup(sweep_svg(s, results["candidates"], id_prefix=f"sweep{i}"))
                       for i, s in enumerate(results.get("sweeps", []), 1)},
        "sweep_remedy": {s["name"]: sweep_remedy(s) for s in results.get("sweeps", [])},
        "engine": _flatten("", provenance["engine"]) if provenance["engine"] else [("", "—")],
        "provenance_extra": [(key, _text(provenance[key])) for key in sorted(provenance)
                             if key not in _PROVENANCE_SHOWN],
    }
    return environment().get_template(TEMPLATE).render(context)
