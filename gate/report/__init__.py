"""Stage 6, report: verdicts and provenance in; results.json and every rendering of it out.

    assemble.py  the typed ResultsDocument (document.py) for `gate run` and `gate compare`
    results.py   the JSON Schema, validation, loading

Every output a person or CI reads is rendered from results.json alone:

    write_outputs(results, out_dir) -> results.json and every rendering of it
    write_all(results, out_dir)  -> report.html, junit.xml, summary.md
    render_html(results)         -> the self-contained HTML report
    render_junit(results)        -> JUnit XML, one testcase per candidate x task
    render_summary(results)      -> compact Markdown for a PR or job summary
    github.publish(results, md)  -> job summary + ::error annotations in Actions

Renderers format numbers; they never compute them (see docs/results-shape.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gate.atomic import atomic_write_json, atomic_write_text
from gate.errors import InfraError
from gate.report.html import render_html
from gate.report.junit import render_junit
from gate.report.markdown import render_summary
from gate.report.results import validate_results

__all__ = ["OUTPUT_NAMES", "render_html", "render_junit", "render_summary", "write_all", "write_outputs"]

OUTPUT_NAMES = {"html": "report.html", "junit": "junit.xml", "summary": "summary.md"}


def write_all(results: dict[str, Any], out_dir: Path, *, validated: bool = False) -> dict[str, Path]:
    """Validate `results` (unless the caller just did), render every output, and
    write each one atomically.

    All three are rendered before the first is written, so a rendering error
    leaves the folder as it was. Returns {"html": path, "junit": path,
    "summary": path}. Creates `out_dir` when missing.
    """
    if not validated:
        validate_results(results)
    texts = {
        "html": render_html(results),
        "junit": render_junit(results),
        "summary": render_summary(results),
    }
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for key, text in texts.items():
            path = out_dir / OUTPUT_NAMES[key]
            atomic_write_text(path, text)
            written[key] = path
    except OSError as exc:
        raise InfraError(f"cannot write the reports: {exc.strerror}",
                         file=str(exc.filename or out_dir),
                         fix="choose a writable output folder") from None
    return written


def write_outputs(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """results.json plus every rendering of it, each written atomically.

    results.json is validated against the shipped schema once, here, before
    anything is written. Returns {"results": path, "html": ..., ...}."""
    validate_results(results, source=str(Path(out_dir) / "results.json"))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / "results.json"
    atomic_write_json(path, results)
    return {"results": path, **write_all(results, out_dir, validated=True)}
