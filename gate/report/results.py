"""Load and validate results.json: the one file every output renders from.

Renderers (HTML, Markdown, JUnit, GitHub annotations) trust the shape of the
dict they are handed, so the shape is checked once, here, against the JSON
Schema shipped in the package (`gate/report/schema/results.schema.json`). A file that
does not match is the user's to fix (a hand-edited or truncated file, or one
from another gate version), hence `InputError` naming the file and the path.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from gate.errors import InputError, Problem

# Next to this module rather than through importlib.resources: it works the
# same from a checkout, a wheel, or while `gate` is still a namespace package.
SCHEMA_PATH = Path(__file__).parent / "schema" / "results.schema.json"
MAX_PROBLEMS = 20


@cache
def results_schema() -> dict[str, Any]:
    """The results.json JSON Schema (draft 2020-12), read from package data."""
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(results_schema())
    cls.check_schema(results_schema())
    validator: jsonschema.protocols.Validator = cls(
        results_schema(), format_checker=cls.FORMAT_CHECKER
    )
    return validator


def _json_path(error: jsonschema.ValidationError) -> str:
    """`$.candidates[0].tiers[1].tasks[2].delta`: a path a person can follow."""
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate_results(results: Any, *, source: str = "results.json") -> dict[str, Any]:
    """Check `results` against the schema; return it unchanged when it fits.

    Every violation is reported at once (up to MAX_PROBLEMS), each naming
    `source` and the JSON path of the offending value.
    """
    errors = sorted(_validator().iter_errors(results), key=lambda e: list(e.absolute_path))
    if errors:
        problems = [
            Problem(
                message=error.message,
                file=source,
                key=_json_path(error),
                fix="regenerate the file with `gate run` / `gate compare` of this gate version",
            )
            for error in errors[:MAX_PROBLEMS]
        ]
        raise InputError(problems=problems)
    if not isinstance(results, dict):  # unreachable: the schema says object
        raise InputError("results must be a JSON object", file=source)
    return results


def load_results(path: Path) -> dict[str, Any]:
    """Read and validate a results.json file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", file=str(path),
                         fix="pass the results.json written by `gate run`") from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", file=str(path)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            file=str(path),
            fix="the file is truncated or hand-edited; regenerate it with `gate run`",
        ) from None
    return validate_results(data, source=str(path))


SCHEMA_VERSION = 1


def new_results(*, release: dict[str, Any], candidates: list[dict[str, Any]], baseline: dict[str, Any],
                provenance: dict[str, Any], probes: list[dict[str, Any]] | None = None,
                sweeps: list[dict[str, Any]] | None = None,
                waivers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A results.json document: the parts given, stamped with the schema and gate
    versions and the creation time (one place, for `gate run` and `gate compare`)."""
    import datetime as _dt

    from gate import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "gate_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "release": release,
        "candidates": candidates,
        **({"sweeps": sweeps} if sweeps else {}),
        **({"waivers": waivers} if waivers else {}),
        "baseline": baseline,
        "probes": list(probes or []),
        "provenance": {"gate_version": __version__, **provenance},
    }
