"""Reading YAML into the config models: every pydantic or YAML error becomes a
`Problem` naming the file, the dotted key and a fix, all reported at once."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gate.config.models import RunConfig, Suite, Thresholds
from gate.errors import ConfigError, Problem

M = TypeVar("M", bound=BaseModel)


def _suggest(word: str, options: list[str]) -> str | None:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid field names of the (sub)model at `loc`, for 'did you mean' hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        current = _unwrap_model(ann)
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _unwrap_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def problems_from_validation(err: ValidationError, file: str, model: type[BaseModel]) -> list[Problem]:
    """Turn pydantic's errors into Problems naming file, dotted key and a fix."""
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"]
        fix = None
        if e["type"] == "extra_forbidden":
            options = _fields_at(model, loc[:-1])
            guess = _suggest(str(loc[-1]), options) if loc else None
            msg = "unknown key"
            fix = f"did you mean `{guess}`?" if guess else f"remove it; allowed keys here: {', '.join(options)}"
        elif e["type"] == "missing":
            msg = "required key is missing"
            fix = "add it"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        else:
            if "input" in e and not isinstance(e.get("input"), (dict, list)):
                msg = f"{msg} (got {e.get('input')!r})"
            fix = "change the value; the README's configuration reference lists what is allowed"
        out.append(Problem(message=msg, file=file, key=key, fix=fix))
    return out


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, turning a missing file or a syntax error into a ConfigError."""
    if not path.is_file():
        raise ConfigError("file not found", file=str(path), fix="check the path (relative paths are resolved against the file that names them)")
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"YAML syntax error at {where}: {problem}", file=str(path), fix="fix the YAML syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path), fix="check the file's permissions and encoding") from None


def parse_model(model: type[M], data: Any, file: str) -> M:
    """Validate `data` as `model`, raising one ConfigError with every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}", file=file, fix="write `key: value` pairs")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(problems=problems_from_validation(err, file, model)) from None


def load_suite(path: Path) -> Suite:
    return parse_model(Suite, read_yaml(path), str(path))


def load_thresholds(path: Path) -> Thresholds:
    return parse_model(Thresholds, read_yaml(path), str(path))


def load_run_config(path: Path) -> RunConfig:
    return parse_model(RunConfig, read_yaml(path), str(path))
