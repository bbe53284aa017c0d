"""The baseline store: the base model's per-item results, kept per fingerprint.

Evaluating the base model is the most expensive step a gate run can skip, so
its `TaskRecords` are stored under the digest of a `BaselineKey` (one entry
per task) and reused by every candidate and every CI run whose key matches.

Layout of a directory store (default `.gate/baselines/`)::

    manifest.json                       digest -> task, parts, checksum, created
    entries/<digest>.<sum12>.json.gz    the entry: parts + records (gzip JSON)
    .lock                               serializes manifest read-modify-write
    locks/<digest>.lock                 one computation per key (compute_or_wait)

The manifest is the commit point: an entry exists once the manifest names it.
An entry file's name carries the start of its checksum, so replacing an entry
writes a new file, switches the manifest, then deletes the old file; a writer
killed at any point leaves the previous state readable and at worst an
unlisted file that `verify --repair` adopts or removes. Every read checks the
sha256 recorded in the manifest and raises `StoreError` rather than return
data from a truncated or tampered file.

Storage goes through `StoreBackend` (bytes by name, plus a lock): a
`DirectoryBackend`, or a W&B artifact (`wandb://entity/project/name:alias`,
`gate.baseline.wandb_store`) kept as a local directory copy, so the rules above
apply to both unchanged.
"""

from __future__ import annotations

import builtins
import contextlib
import gzip
import hashlib
import json
import math
import os
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock

from gate.atomic import atomic_write_bytes
from gate.baseline.fingerprint import BaselineKey, diff_parts, parts_digest
from gate.errors import InputError, Problem, StoreError
from gate.evaluate.records import TaskRecords, records_from_dict, records_to_dict

__all__ = [
    "DEFAULT_STORE",
    "BaselineStore",
    "DirectoryBackend",
    "EntryInfo",
    "StoreBackend",
    "open_store",
]

DEFAULT_STORE = Path(".gate/baselines")
MANIFEST = "manifest.json"
ENTRIES = "entries/"
FORMAT = 1
MANIFEST_LOCK_TIMEOUT = 120.0
REPAIR = "gate baseline verify --repair"


def _gate_version() -> str:
    from gate import __version__

    return __version__


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- backends


class StoreBackend(ABC):
    """Named byte blobs with atomic writes and advisory locks.

    Names are relative POSIX paths ("manifest.json", "entries/ab12...json.gz").
    Errors surface as `StoreError` naming the location and the fix.
    """

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store lives, as a user would type it (path or URL)."""

    @abstractmethod
    def where(self, name: str) -> str:
        """Where one object lives, for messages."""

    @abstractmethod
    def read(self, name: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    @abstractmethod
    def write(self, name: str, data: bytes) -> None:
        """Create or replace the object atomically."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object if it exists."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Names of all objects starting with `prefix` (locks excluded), sorted."""

    @abstractmethod
    def lock(self, name: str, timeout: float | None) -> AbstractContextManager[None]:
        """An exclusive lock shared by every process using this store."""

    def flush(self) -> str | None:
        """Share what this process wrote, for a backend that keeps a local copy.

        A directory is shared as soon as it is written: nothing to do (None).
        A remote backend publishes and returns a line saying where it went.
        """
        return None


class DirectoryBackend(StoreBackend):
    """A store in a local (or shared network) directory, locked with `filelock`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def where(self, name: str) -> str:
        return str(self.root / name)

    def _unwritable(self, exc: OSError, path: Path) -> StoreError:
        reason = exc.strerror or type(exc).__name__
        return StoreError(
            f"cannot write the baseline store {self.root}: {reason} ({path})", file=str(self.root),
            fix=f"make {self.root} a writable directory, or pass --store with one that is",
        )

    def read(self, name: str) -> bytes | None:
        path = self.root / name
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}", file=str(path),
                             fix=f"make {self.root} readable") from exc

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise self._unwritable(exc, path) from exc

    def delete(self, name: str) -> None:
        path = self.root / name
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._unwritable(exc, path) from exc

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        names = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            if rel == Path("."):
                dirnames[:] = [d for d in dirnames if d != "locks"]
            for filename in filenames:
                name = (rel / filename).as_posix()
                if name != ".lock" and name.startswith(prefix):
                    names.append(name)
        return sorted(names)

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float | None) -> Iterator[None]:
        path = self.root / name
        lock = filelock.FileLock(path, timeout=-1 if timeout is None else timeout)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except filelock.Timeout as exc:  # a TimeoutError, hence an OSError: first
            raise StoreError(
                f"timed out after {timeout:g}s waiting for the lock {path}", file=str(path),
                fix="another gate is using this baseline store; wait for it to finish",
            ) from exc
        except OSError as exc:
            raise self._unwritable(exc, path) from exc
        try:
            yield  # errors of the locked work (an engine's ConnectionError) pass through as they are
        finally:
            lock.release()


def open_store(spec: str | os.PathLike[str] = DEFAULT_STORE) -> BaselineStore:
    """A store from a user's `--store` value: a directory, or `wandb://entity/project/name:alias`.

    A `wandb://` store downloads the artifact here (see `gate.baseline.wandb_store`):
    call `BaselineStore.flush()` once new entries are stored to publish them.
    """
    text = os.fspath(spec)
    if "://" in text:
        from gate.baseline.wandb_store import open_wandb_store, parse_store_uri

        return open_wandb_store(parse_store_uri(text))
    return BaselineStore(Path(text))


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class EntryInfo:
    """One manifest row: what `gate baseline list/show` prints."""

    digest: str
    task: str
    name: str
    checksum: str
    size: int
    created: str
    gate_version: str
    metric: str
    n_items: int
    score: float | None
    parts: dict[str, str]

    def to_row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "digest"}

    @classmethod
    def from_row(cls, digest: str, row: dict[str, Any]) -> EntryInfo:
        return cls(
            digest=digest, task=str(row["task"]), name=str(row["name"]),
            checksum=str(row["checksum"]), size=int(row["size"]), created=str(row["created"]),
            gate_version=str(row.get("gate_version", "unknown")), metric=str(row.get("metric", "")),
            n_items=int(row.get("n_items", 0)),
            score=None if row.get("score") is None else float(row["score"]),
            parts={str(k): str(v) for k, v in dict(row["parts"]).items()},
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest_of_name(name: str) -> str:
    """The key digest an entry file name carries ("entries/<digest>.<sum>.json.gz")."""
    return name[len(ENTRIES):].split(".", 1)[0]


def _is_temp(name: str) -> bool:
    return Path(name).name.startswith(".") and name.endswith(".tmp")


# --------------------------------------------------------------------------- the store


class BaselineStore:
    """Base-model `TaskRecords` per `BaselineKey`, verified on every read."""

    def __init__(self, root: str | os.PathLike[str] | StoreBackend = DEFAULT_STORE, *,
                 compress: bool = True,
                 lock_timeout: float | None = MANIFEST_LOCK_TIMEOUT) -> None:
        self.backend = root if isinstance(root, StoreBackend) else DirectoryBackend(root)
        self.compress = compress
        self.lock_timeout = lock_timeout

    # ---- manifest

    def _manifest_lock(self) -> AbstractContextManager[None]:
        return self.backend.lock(".lock", self.lock_timeout)

    def _read_manifest(self) -> dict[str, EntryInfo]:
        raw = self.backend.read(MANIFEST)
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"unsupported manifest format {data.get('format')!r}"
                                 if isinstance(data, dict) else "not an object")
            return {d: EntryInfo.from_row(d, row) for d, row in data["entries"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(
                f"the baseline manifest {self.backend.where(MANIFEST)} is unreadable ({exc})",
                file=self.backend.where(MANIFEST),
                fix=f"`{REPAIR}` rebuilds it from the entry files",
            ) from exc

    def _write_manifest(self, entries: dict[str, EntryInfo]) -> None:
        doc = {"format": FORMAT,
               "entries": {d: entries[d].to_row() for d in sorted(entries)}}
        self.backend.write(MANIFEST, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())

    # ---- encoding

    def _encode(self, key: BaselineKey, records: TaskRecords, created: str) -> bytes:
        doc = {"format": FORMAT, "digest": key.digest(), "parts": key.parts(), "created": created,
               "gate_version": _gate_version(), "records": records_to_dict(records)}
        raw = json.dumps(doc, sort_keys=True).encode()
        return gzip.compress(raw, mtime=0) if self.compress else raw

    def _decode(self, name: str, data: bytes, digest: str) -> tuple[dict[str, Any], TaskRecords]:
        """Parse an entry file, checking it names itself consistently."""
        try:
            raw = gzip.decompress(data) if name.endswith(".gz") else data
            doc = json.loads(raw)
            parts = {str(k): str(v) for k, v in doc["parts"].items()}
            if doc["digest"] != digest or parts_digest(parts) != digest:
                raise ValueError("its key parts do not match its digest")
            return doc, records_from_dict(doc["records"])
        except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError,
                AttributeError, IndexError) as exc:
            raise StoreError(
                f"baseline entry {self.backend.where(name)} cannot be decoded ({exc})",
                file=self.backend.where(name), fix=self._fix(digest),
            ) from exc

    @staticmethod
    def _fix(digest: str) -> str:
        return f"`gate baseline rm {digest[:12]}` or `{REPAIR}`, then rerun to recompute"

    def _load(self, info: EntryInfo) -> TaskRecords:
        data = self.backend.read(info.name)
        where = self.backend.where(info.name)
        if data is None:
            raise StoreError(f"baseline entry {where} is listed in the manifest but missing",
                             file=where, fix=self._fix(info.digest))
        actual = _sha256(data)
        if actual != info.checksum:
            raise StoreError(
                f"baseline entry {where} is corrupt: sha256 {actual[:12]}… differs from the "
                f"manifest's {info.checksum[:12]}… ({len(data)} of {info.size} bytes)",
                file=where, fix=self._fix(info.digest))
        return self._decode(info.name, data, info.digest)[1]

    # ---- the API

    def flush(self) -> str | None:
        """Publish what this process stored, where the backend is remote (wandb://).

        Call once the run's new entries are stored. A no-op (None) for a
        directory; otherwise a line saying where the entries went.
        """
        return self.backend.flush()

    def merge_from(self, other: BaselineStore) -> builtins.list[str]:
        """Add the entries of `other` that this store lacks or holds damaged; their digests.

        Entry files are copied byte for byte with their manifest rows, without
        decoding them: a damaged entry copied in is refused when read, with the
        same message and fix as any entry of this store. An intact entry here
        is kept (the same digest means the same inputs: interchangeable results).
        """
        theirs = other._read_manifest()
        if not theirs:
            return []
        added: builtins.list[str] = []
        superseded: builtins.list[str] = []
        with self._manifest_lock():
            ours = self._read_manifest()
            for digest, info in sorted(theirs.items()):
                mine = ours.get(digest)
                if mine is not None and self._intact(mine):
                    continue
                data = other.backend.read(info.name)
                if data is not None:
                    self.backend.write(info.name, data)
                if mine is not None and mine.name != info.name:
                    superseded.append(mine.name)
                ours[digest] = info
                added.append(digest)
            if added:
                self._write_manifest(ours)
            for name in superseded:
                self.backend.delete(name)
        return added

    def _intact(self, info: EntryInfo) -> bool:
        data = self.backend.read(info.name)
        return data is not None and _sha256(data) == info.checksum

    def get(self, key: BaselineKey) -> TaskRecords | None:
        """The stored records for `key`, None when there is no entry.

        Raises StoreError for an entry that is listed but missing or corrupt.
        """
        info = self._read_manifest().get(key.digest())
        return None if info is None else self._load(info)

    def put(self, key: BaselineKey, records: TaskRecords, *, replace: bool = False) -> str:
        """Store `records` under `key`; returns the digest.

        Idempotent: an existing valid entry is kept (the same key means the
        same inputs, so results are interchangeable) unless `replace`. A corrupt
        existing entry is overwritten.
        """
        if records.task != key.task:
            raise StoreError(f"records of task {records.task!r} cannot be stored under a key "
                             f"for task {key.task!r}", key="task",
                             fix="build the BaselineKey from the task the records came from")
        digest = key.digest()
        with self._manifest_lock():
            entries = self._read_manifest()
            old = entries.get(digest)
            if old is not None and not replace:
                with contextlib.suppress(StoreError):
                    self._load(old)
                    return digest
            created = _now()
            data = self._encode(key, records, created)
            checksum = _sha256(data)
            suffix = ".json.gz" if self.compress else ".json"
            name = f"{ENTRIES}{digest}.{checksum[:12]}{suffix}"
            score = records.score
            entries[digest] = EntryInfo(
                digest=digest, task=key.task, name=name, checksum=checksum, size=len(data),
                created=created, gate_version=_gate_version(), metric=records.metric,
                n_items=records.n, score=score if math.isfinite(score) else None,
                parts=key.parts())
            self.backend.write(name, data)
            try:
                self._write_manifest(entries)
            except BaseException:
                if old is None or old.name != name:
                    self.backend.delete(name)
                raise
            if old is not None and old.name != name:
                self.backend.delete(old.name)
        return digest

    def compute_or_wait(self, key: BaselineKey, compute: Callable[[], TaskRecords], *,
                        timeout: float | None = None) -> tuple[TaskRecords, bool]:
        """The records for `key` and whether they were reused from the store.

        Holds `locks/<digest>.lock` while computing, so of several processes
        asking for the same missing baseline one computes and the others wait,
        then reuse its entry. `timeout` bounds the wait (None: forever).
        """
        found = self.get(key)
        if found is not None:
            return found, True
        digest = key.digest()
        with self.backend.lock(f"locks/{digest}.lock", timeout):
            found = self.get(key)
            if found is not None:
                return found, True
            records = compute()
            self.put(key, records)
            return records, False

    def explain_miss(self, key: BaselineKey) -> list[str]:
        """Why no baseline applies to `key`: what changed since the closest entry.

        Compares with entries for the same task, preferring the one with the
        fewest differences (the same model if there is one), then the newest.
        Empty when `key` has an entry or there never was one for this task.
        """
        entries = self._read_manifest()
        if key.digest() in entries:
            return []
        new = key.parts()
        same_task = [e for e in entries.values() if e.parts.get("task") == key.task]
        if not same_task:
            return []
        closest = min(same_task, key=lambda e: (len(diff_parts(e.parts, new)),
                                                _neg_time(e.created)))
        return diff_parts(closest.parts, new)

    def list(self) -> list[EntryInfo]:
        """All entries, by task then creation time."""
        return sorted(self._read_manifest().values(), key=lambda e: (e.task, e.created, e.digest))

    def _resolve(self, prefix: str, digests: set[str]) -> str:
        wanted = prefix.strip().lower()
        matches = sorted(d for d in digests if d.startswith(wanted)) if wanted else []
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise InputError(f"no baseline entry matches {prefix!r} in {self.backend.location}",
                             key="digest", fix="run `gate baseline list` to see the digests")
        shown = ", ".join(m[:12] for m in matches[:5])
        raise InputError(f"{prefix!r} matches {len(matches)} baseline entries ({shown})",
                         key="digest", fix="give more characters of the digest")

    def show(self, digest_prefix: str) -> EntryInfo:
        """The manifest row of the one entry whose digest starts with the prefix."""
        entries = self._read_manifest()
        return entries[self._resolve(digest_prefix, set(entries))]

    def load(self, digest_prefix: str) -> TaskRecords:
        """The verified records of the entry whose digest starts with the prefix."""
        return self._load(self.show(digest_prefix))

    def rm(self, digest_prefix: str) -> str:
        """Remove one entry (listed, or an unlisted file); returns its digest."""
        self._resolve(digest_prefix, self._known_digests())  # fail before locking (creating) anything
        with self._manifest_lock():
            entries = self._read_manifest()
            digest = self._resolve(digest_prefix, self._known_digests(entries))
            if entries.pop(digest, None) is not None:
                self._write_manifest(entries)
            for name in self.backend.list(ENTRIES):
                if not _is_temp(name) and _digest_of_name(name) == digest:
                    self.backend.delete(name)
        return digest

    def _known_digests(self, entries: dict[str, EntryInfo] | None = None) -> set[str]:
        listed = self._read_manifest() if entries is None else entries
        files = {_digest_of_name(n) for n in self.backend.list(ENTRIES) if not _is_temp(n)}
        return set(listed) | files

    def verify(self, *, repair: bool = False) -> builtins.list[Problem]:
        """Check every entry; returns the problems found (fixed too when `repair`).

        Repair drops corrupt or missing entries (they are recomputed on the
        next run), adopts complete unlisted entry files left by an interrupted
        writer, deletes temporary files, and rebuilds an unreadable manifest.
        """
        if not self.backend.list():
            return []  # no store here: nothing to check, and nothing to create
        lock = self._manifest_lock() if repair else contextlib.nullcontext()
        with lock:
            return self._verify(repair)

    def _verify(self, repair: bool) -> builtins.list[Problem]:
        problems: builtins.list[Problem] = []
        manifest_ok = True
        try:
            entries = self._read_manifest()
        except StoreError as exc:
            problems += exc.problems
            entries, manifest_ok = {}, False
        kept: dict[str, EntryInfo] = {}
        for digest, info in sorted(entries.items()):
            try:
                self._load(info)
                kept[digest] = info
            except StoreError as exc:
                problems += exc.problems
                if repair:
                    self.backend.delete(info.name)
        listed = {info.name for info in entries.values()}
        for name in self.backend.list():
            if name == MANIFEST or name in listed:
                continue
            where = self.backend.where(name)
            if _is_temp(name):
                problems.append(Problem("temporary file left by an interrupted write", file=where,
                                        fix=REPAIR))
                if repair:
                    self.backend.delete(name)
                continue
            if not name.startswith(ENTRIES):
                continue
            adopted = self._adopt(name, kept)
            problems.append(Problem(
                "entry file not in the manifest (an interrupted write)" if adopted
                else "unlisted entry file that is corrupt or superseded", file=where, fix=REPAIR))
            if repair and not adopted:
                self.backend.delete(name)
        if repair and (problems or not manifest_ok):
            self._write_manifest(kept)
        return problems

    def _adopt(self, name: str, kept: dict[str, EntryInfo]) -> bool:
        """Add a complete unlisted entry file to `kept`; False if corrupt or superseded."""
        digest = _digest_of_name(name)
        data = self.backend.read(name)
        if data is None or digest in kept:
            return False
        try:
            doc, records = self._decode(name, data, digest)
        except StoreError:
            return False
        score = records.score
        kept[digest] = EntryInfo(
            digest=digest, task=records.task, name=name, checksum=_sha256(data), size=len(data),
            created=str(doc.get("created", "")), gate_version=str(doc.get("gate_version", "")),
            metric=records.metric, n_items=records.n,
            score=score if math.isfinite(score) else None,
            parts={str(k): str(v) for k, v in doc["parts"].items()})
        return True


def _neg_time(created: str) -> float:
    """Sort key putting the newest ISO timestamp first (unparseable last)."""
    try:
        return -datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return math.inf

