"""The one rule that tells a hub id from a local path, and where a hub id lives.

`org/name` and `name` (e.g. `gpt2`), optionally pinned as `org/name@REV`, are
hub ids unless a file or folder of that name exists where the config looks for
it; anything starting with `.`, `/` or `~` is a path. Used by config loading
(whether to resolve a path against the config's folder) and by fingerprints
(what identifies a model).

`hub_snapshot` finds a hub id in huggingface_hub's cache
(`models--org--name/snapshots/<commit>/`, the revision resolved through
`refs/`), so the gate then reads, fingerprints and serves a local folder named
by its commit: a baseline keyed on the files, and a report that names the
commit even when the config said `main`.
"""

from __future__ import annotations

import re
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(?:/[\w.\-]+)?(?:@[\w.\-/]+)?$")


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


def split_revision(ref: str) -> tuple[str, str | None]:
    """`org/name@REV` -> ("org/name", "REV"); without `@`, the revision is None."""
    repo_id, sep, revision = ref.partition("@")
    return repo_id, (revision if sep else None)


def cache_folder(repo_id: str) -> Path:
    """Where huggingface_hub's cache keeps (or would keep) a model repository."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def hub_snapshot(repo_id: str, revision: str | None, *, download: bool) -> Path | None:
    """The local snapshot folder of `repo_id` at `revision` (default `main`): from the
    cache, or downloaded when `download` (and the hub is reachable); None when the
    cache does not hold it and nothing may be downloaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=not download))
    except LocalEntryNotFoundError:
        return None
