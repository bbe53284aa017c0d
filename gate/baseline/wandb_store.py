"""A baseline store kept in a W&B artifact, so CI machines share one baseline.

`baseline.store: wandb://entity/project/name:alias` (alias default `latest`)
names an artifact of type `gate-baseline` holding exactly what a directory
store holds (`manifest.json` and `entries/`). The backend works on a local
copy of it, `$XDG_CACHE_HOME/gate/wandb-store/<entity>/<project>/<name>/<alias>`
(default `~/.cache/...`):

- open (online): download the alias's version and merge it into the local
  copy (`BaselineStore.merge_from`: entries the copy lacks or holds damaged).
  No artifact yet means an empty store: the first run computes the baseline.
  No credentials or no network is an infrastructure error (exit 3), raised
  before any model is served.
- reads, writes and locks go to the local copy through a `DirectoryBackend`,
  so fingerprints, checksums and the refusal of damaged entries are those of
  the directory store, unchanged.
- `flush()` (`BaselineStore.flush`, called by the pipeline once the new
  entries are stored) downloads the alias again, merges, and logs the whole
  store (manifest and every entry it lists) as a new artifact version with
  the alias, from a run of `job_type="gate-baseline"`. Nothing is logged when
  the copy holds exactly what the alias holds.

Concurrency: two machines that publish at once each log a version; the alias
ends on the last one (last writer wins), which holds everything that was
published before its own download plus its own entries. The other machine's
new entries stay in its version, not under the alias, until a later run
recomputes and republishes them: work may be repeated, but a result can
never be wrong, because an entry is addressed by the fingerprint of
everything that changes results and checked against its sha256 on every
read, so entries from any machine are interchangeable or refused. Processes
on one machine share the local copy and its locks, as with a directory store.

Offline (`WANDB_MODE=offline`): nothing can be downloaded, so the store is
the local copy as it is (empty on a fresh CI machine: the base is computed,
which costs time but is never wrong), with a warning; a store that must not
recompute should set `baseline.require: true`, which then stops the run
(exit 2) instead. `flush()` logs the artifact into the offline run, to be
uploaded with `wandb sync`. `WANDB_MODE=disabled` reads the local copy and
publishes nothing.

`gate baseline rm`/`verify --repair` on a wandb store publish exactly the
local copy (no merge before publishing, which would bring the removed entry
back).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from gate.baseline.store import MANIFEST, BaselineStore, DirectoryBackend, EntryInfo, StoreBackend
from gate.errors import InputError, StoreError

__all__ = [
    "ARTIFACT_TYPE",
    "JOB_TYPE",
    "Fetch",
    "Publish",
    "WandbArtifactBackend",
    "WandbStoreRef",
    "default_cache_root",
    "download_artifact",
    "open_wandb_store",
    "parse_store_uri",
    "publish_artifact",
]

log = logging.getLogger(__name__)

SCHEME = "wandb://"
ARTIFACT_TYPE = "gate-baseline"
JOB_TYPE = "gate-baseline"
INSTALL_HINT = "pip install 'forgetting-gate[wandb]'"
FETCH_TIMEOUT = 19
KEY = "baseline.store"
FORM = "wandb://ENTITY/PROJECT/NAME[:ALIAS], e.g. wandb://my-team/finetunes/gate-baseline:latest"
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_URI = re.compile(rf"^wandb://(?P<entity>{_PART})/(?P<project>{_PART})/(?P<name>{_PART})"
                  rf"(?::(?P<alias>{_PART}))?$")
_VERSION = re.compile(r"^v\d+$")
NO_ACCESS_FIX = ("run `wandb login` (or set WANDB_API_KEY) and check that this machine reaches "
                 "W&B; or set WANDB_MODE=offline to use this machine's copy; or set "
                 "baseline.store to a directory")


@dataclass(frozen=True)
class WandbStoreRef:
    """The parts of `wandb://entity/project/name:alias`."""

    entity: str
    project: str
    name: str
    alias: str = "latest"

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.entity}/{self.project}/{self.name}:{self.alias}"

    @property
    def path(self) -> str:
        """The artifact's path as `wandb.Api().artifact()` takes it."""
        return f"{self.entity}/{self.project}/{self.name}:{self.alias}"

    @property
    def pinned(self) -> bool:
        """A version (`:v3`) rather than an alias: read it, never move it."""
        return bool(_VERSION.match(self.alias))


def parse_store_uri(text: str) -> WandbStoreRef:
    """The artifact a `baseline.store` URL names; InputError (exit 2) for any other form."""
    if not text.startswith(SCHEME):
        scheme = text.split("://", 1)[0]
        raise InputError(f"baseline store {text!r}: unknown scheme {scheme}://", key=KEY,
                         fix=f"use a directory path, or {FORM}")
    match = _URI.match(text)
    if match is None:
        raise InputError(f"baseline store {text!r} is not a W&B artifact URL", key=KEY,
                         fix=f"use {FORM} (letters, digits, '_', '-', '.')")
    return WandbStoreRef(entity=match["entity"], project=match["project"], name=match["name"],
                         alias=match["alias"] or "latest")


def default_cache_root() -> Path:
    """Where local copies live: `$XDG_CACHE_HOME/gate/wandb-store` (default ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gate" / "wandb-store"


def _import_wandb() -> ModuleType:
    try:
        return importlib.import_module("wandb")
    except ImportError as exc:
        raise InputError("a wandb:// baseline store needs the `wandb` package, which is not "
                         "installed", key=KEY,
                         fix=f"{INSTALL_HINT}, or set baseline.store to a directory") from exc


def _mode(mode: str | None) -> str:
    chosen = mode or os.environ.get("WANDB_MODE") or "online"
    return "offline" if chosen == "dryrun" else chosen


# --------------------------------------------------------------------------- W&B calls

Fetch = Callable[[WandbStoreRef, Path], bool]
"""Download the artifact version into a folder; False when there is none yet."""
Publish = Callable[[WandbStoreRef, Path, list[str], str], str]
"""Log the named files of a folder as a new version; a line saying where it went."""


def download_artifact(ref: WandbStoreRef, dest: Path) -> bool:
    """Download `ref` into `dest`; False when no such artifact exists yet.

    The one piece that needs W&B's servers; untested in this project's CI,
    which has no network (tests pass a folder-copying `fetch` instead).
    """
    wandb = _import_wandb()
    try:
        # WANDB_HTTP_TIMEOUT as it is now (wandb.Api reads it once, when wandb is imported).
        api = wandb.Api(timeout=wandb.env.get_http_timeout(FETCH_TIMEOUT))
        if not api.artifact_exists(ref.path):
            return False
        artifact = api.artifact(ref.path)
        if artifact.type != ARTIFACT_TYPE:
            raise InputError(f"{ref.uri} is a W&B artifact of type {artifact.type!r}, "
                             f"not a gate baseline ({ARTIFACT_TYPE!r})", key=KEY,
                             fix="choose another artifact name for the baseline store")
        artifact.download(root=str(dest))
    except wandb.errors.Error as exc:
        raise StoreError(f"cannot download the baseline store {ref.uri}: {exc}", key=KEY,
                         fix=NO_ACCESS_FIX) from exc
    return True


def publish_artifact(ref: WandbStoreRef, folder: Path, names: list[str], mode: str) -> str:
    """Log `names` (relative to `folder`) as a new version of `ref`, from a gate-baseline run."""
    from gate import __version__
    from gate.integrations.wandb_log import _settings

    wandb = _import_wandb()
    run = None
    try:
        run = wandb.init(project=ref.project, entity=ref.entity, job_type=JOB_TYPE,
                         name=f"gate-baseline-{ref.name}", settings=_settings(wandb, mode),
                         reinit="create_new")
        artifact = wandb.Artifact(ref.name, type=ARTIFACT_TYPE,
                                  description="gate baseline store: base-model results per fingerprint",
                                  metadata={"entries": len(names) - 1, "gate_version": __version__})
        for name in names:
            artifact.add_file(str(folder / name), name=name)
        run.log_artifact(artifact, aliases=[] if ref.pinned else [ref.alias])
        offline, where = bool(run.offline), str(run.settings.sync_dir)
    except wandb.errors.Error as exc:
        raise StoreError(f"cannot publish the baseline store {ref.uri}: {exc}", key=KEY,
                         fix=NO_ACCESS_FIX + "; this machine's copy keeps the entries for the "
                                             "next run to publish") from exc
    finally:
        if run is not None:
            run.finish()
    label = f"{ref.uri} ({len(names) - 1} entries)"
    if offline:
        return f"baseline: {label} logged to the offline W&B run {where}; upload it with `wandb sync {where}`"
    return f"baseline: published {label}"


# --------------------------------------------------------------------------- the backend


class WandbArtifactBackend(StoreBackend):
    """A W&B artifact worked on through a local directory copy; see the module docstring."""

    def __init__(self, ref: WandbStoreRef, *, cache_root: Path | None = None,
                 mode: str | None = None, fetch: Fetch = download_artifact,
                 publish: Publish = publish_artifact) -> None:
        self.ref = ref
        self.mode = _mode(mode)
        self.root = (cache_root or default_cache_root()) / ref.entity / ref.project / ref.name / ref.alias
        self.local = DirectoryBackend(self.root)
        self._fetch, self._publish = fetch, publish
        self._remote: dict[str, EntryInfo] | None = None
        self._wrote = False
        self._deleted = False
        if self.mode == "online":
            self._pull()
        else:
            log.warning("WANDB_MODE=%s: the baseline store %s is not downloaded; using this "
                        "machine's copy %s (%d entries)", self.mode, ref.uri, self.root,
                        len(self._local_entries()))

    # ---- the local copy

    def _local_entries(self) -> dict[str, EntryInfo]:
        return {e.digest: e for e in BaselineStore(self.local).list()}

    @contextlib.contextmanager
    def _download_dir(self) -> Iterator[Path]:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{self.ref.alias}.download-",
                                         dir=self.root.parent) as tmp:
            yield Path(tmp)

    def _pull(self) -> None:
        """Merge the alias's current version into the local copy; remember what it held."""
        with self._download_dir() as tmp:
            if not self._fetch(self.ref, tmp):
                self._remote = {}
                return
            remote = BaselineStore(tmp)
            try:
                self._remote = {e.digest: e for e in remote.list()}
            except StoreError as exc:
                raise StoreError(
                    f"the baseline artifact {self.ref.uri} is unreadable: {exc.problems[0].message}",
                    key=KEY, fix="point the alias back at an earlier version in the W&B UI, "
                                 "or use another artifact name") from exc
            BaselineStore(self.local).merge_from(remote)

    # ---- StoreBackend

    @property
    def location(self) -> str:
        return self.ref.uri

    def where(self, name: str) -> str:
        return f"{self.local.where(name)} (local copy of {self.ref.uri})"

    def read(self, name: str) -> bytes | None:
        return self.local.read(name)

    def write(self, name: str, data: bytes) -> None:
        self.local.write(name, data)
        self._wrote = True

    def delete(self, name: str) -> None:
        self.local.delete(name)
        self._wrote = self._deleted = True

    def list(self, prefix: str = "") -> list[str]:
        return self.local.list(prefix)

    def lock(self, name: str, timeout: float | None) -> contextlib.AbstractContextManager[None]:
        return self.local.lock(name, timeout)

    def flush(self) -> str | None:
        """Publish the local copy as a new version when it holds what the alias lacks."""
        if self.mode == "disabled":
            return f"baseline: WANDB_MODE=disabled, {self.ref.uri} not published" if self._wrote else None
        if self.mode == "online" and not self._deleted:
            self._pull()  # narrow the last-writer-wins window to this publish
        store = BaselineStore(self)
        with store.backend.lock(".lock", store.lock_timeout):
            entries = self._local_entries()
            if not self._wrote and (self._remote is None or entries == self._remote):
                return None
            files = sorted(e.name for e in entries.values() if self.local.read(e.name) is not None)
            names = [MANIFEST, *files]
            message = self._publish(self.ref, self.root, names, self.mode)
        self._remote, self._wrote, self._deleted = entries, False, False
        return message


def open_wandb_store(ref: WandbStoreRef, *, cache_root: Path | None = None,
                     mode: str | None = None, fetch: Fetch = download_artifact,
                     publish: Publish = publish_artifact) -> BaselineStore:
    """A `BaselineStore` over the artifact `ref`, downloaded now unless offline."""
    return BaselineStore(WandbArtifactBackend(ref, cache_root=cache_root, mode=mode,
                                              fetch=fetch, publish=publish))
