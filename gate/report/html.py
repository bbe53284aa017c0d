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

from gate.report import format as fmt
from gate.report.plots import forest_svg, sweep_svg
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


def render_html(results: dict[str, Any]) -> str:
    """The report page for a validated results dict (see gate.report.results)."""
    provenance = results["provenance"]
    context = {
        "results": results,
        "fmt": fmt,
        "candidates": [_candidate_view(c, i) for i, c in enumerate(results["candidates"], 1)],
        "probes": [_probe_view(p) for p in results["probes"]],
        "sweeps": results.get("sweeps", []),
        "sweep_svgs": {s["name"]: Markup(sweep_svg(s, results["candidates"], id_prefix=f"sweep{i}"))
                       for i, s in enumerate(results.get("sweeps", []), 1)},
        "sweep_remedy": {s["name"]: sweep_remedy(s) for s in results.get("sweeps", [])},
        "engine": _flatten("", provenance["engine"]) if provenance["engine"] else [("", "—")],
        "provenance_extra": [(key, _text(provenance[key])) for key in sorted(provenance)
                             if key not in _PROVENANCE_SHOWN],
    }
    return environment().get_template(TEMPLATE).render(context)
