"""The one rule that tells a hub id from a local path.

`org/name` and `name` (e.g. `gpt2`) are hub ids unless a file or folder of
that name exists where the config looks for it; anything starting with `.`,
`/` or `~` is a path. Used by config loading (whether to resolve a path
against the config's folder) and by fingerprints (what identifies a model).
"""

from __future__ import annotations

import re
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(?:/[\w.\-]+)?$")


def resolve(path: str, relative_to: Path) -> Path:
    """A path from a config file, resolved against the file's directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (relative_to / p).resolve()


def is_hub_id(text: str) -> bool:
    """`org/name` or `name`, not written as a path (`./x`, `/x`, `~/x`)."""
    return not text.startswith((".", "/", "~")) and bool(HUB_ID.match(text))


def looks_like_hub_id(path: str, relative_to: Path) -> bool:
    """A hub id that is not also an existing local path under `relative_to`."""
    return is_hub_id(path) and not resolve(path, relative_to).exists()
