"""Atomic file writes: a reader sees the old file or the new one, never half.

Every file the gate leaves behind (baselines, caches, results.json, reports)
goes through these helpers, because a gate that is killed mid-write (CI
timeout, Ctrl-C, OOM) must not leave a truncated file that a later run trusts.

The recipe is the usual POSIX one: write a temporary file in the *same*
directory (so the rename cannot cross filesystems), flush and fsync it,
`os.replace` it over the target, then fsync the directory so the rename itself
survives a power cut. On any exception the temporary file is removed.

The parent directory must exist: creating it is the caller's decision (the
baseline store creates its own layout; the report writer its output folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def _default_mode() -> int:
    """The mode a plain `open(path, "w")` would give, i.e. 0o666 minus umask.

    `mkstemp` creates files 0o600; results and reports must stay readable by
    the CI user that uploads them, so the temp file gets the ordinary mode.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _default_mode()


def _fsync_dir(directory: Path) -> None:
    """Persist a rename in `directory` (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically (see the module docstring).

    Raises the underlying `OSError` when the directory is missing or not
    writable; callers that own a user-facing location turn it into a
    `gate.errors` error naming the path and the fix.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _MODE)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
    allow_nan: bool = True,
) -> None:
    """Serialize `obj` as JSON (UTF-8, trailing newline) and write it atomically.

    Serialization happens before any file is touched, so an object that cannot
    be encoded leaves the old file in place and no temporary behind.
    Pass `allow_nan=False` for files other tools parse strictly (results.json).
    """
    text = json.dumps(
        obj, indent=indent, sort_keys=sort_keys, default=default, allow_nan=allow_nan,
        ensure_ascii=False,
    )
    atomic_write_text(path, text + "\n")
