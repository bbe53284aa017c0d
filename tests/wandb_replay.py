"""Read back what an offline W&B run wrote: its transaction log `run-<id>.wandb`.

wandb 0.31 offline writes no `files/wandb-summary.json` or `config.yaml` (its
Go core only materializes media files). Config, summary, run and artifact
records live only in the transaction log, and 0.31 ships no Python reader for
it (`wandb.sdk.internal.datastore` is gone). The log is LevelDB's log format
behind a 7-byte W&B header, holding `wandb.proto` `Record`s, so `_records`
unframes it and parses each record with wandb's own protobuf classes.

Offline, `run.finish()` may return while wandb-core is still writing that
log; `wandb.teardown()` waits for it. Call it before `replay`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

# LevelDB log framing, as wandb writes it: file header ":W&B" + magic 0xBEE1
# + version 0; then 32 KiB blocks of chunks, each chunk a header of
# crc32c (4) + length (2, LE) + type (1): FULL=1, FIRST=2, MIDDLE=3, LAST=4.
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(log: Path) -> list[Any]:
    data = log.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"not a W&B transaction log: {log}"
    records: list[Any] = []
    pos, pending = 7, b""
    while pos + _CHUNK_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK_HEADER])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + _CHUNK_HEADER:pos + _CHUNK_HEADER + length]
        pos += _CHUNK_HEADER + length
        if kind in (_FIRST, _MIDDLE):
            pending = chunk if kind == _FIRST else pending + chunk
            continue
        assert kind in (_FULL, _LAST), f"unknown chunk type {kind} in {log}"
        record = pb.Record()  # type: ignore[attr-defined]
        record.ParseFromString(pending + chunk if kind == _LAST else chunk)
        records.append(record)
        pending = b""
    return records


def _set(target: dict[str, Any], item: Any) -> None:
    path = [item.key] if item.key else list(item.nested_key)
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = json.loads(item.value_json)


def replay(run_dir: Path) -> dict[str, Any]:
    """What a run folder's transaction log says: run, config, summary, artifacts."""
    (log,) = run_dir.glob("run-*.wandb")
    out: dict[str, Any] = {"run": None, "config": {}, "summary": {}, "artifacts": [],
                           "history": [], "environment": []}
    for record in _records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            for item in record.run.config.update:
                _set(out["config"], item)
        elif kind == "config":
            for item in record.config.update:
                _set(out["config"], item)
        elif kind == "summary":
            for item in record.summary.update:
                _set(out["summary"], item)
        elif kind == "artifact":
            out["artifacts"].append(record.artifact)
        elif kind == "history":
            out["history"].append(record.history)
        elif kind == "environment":
            out["environment"].append(record.environment)
    return out


def hide_wandb(monkeypatch: Any) -> None:
    """Make `import wandb` fail as it does when the `wandb` extra is not installed."""
    import builtins
    import sys

    real_import = builtins.__import__

    def no_wandb(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "wandb" or name.startswith("wandb."):
            raise ModuleNotFoundError("No module named 'wandb'", name="wandb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    monkeypatch.setitem(sys.modules, "wandb", None)  # importlib's view: not installed


def isolate_wandb(tmp_path: Path, monkeypatch: Any, *extra: tuple[str, str]) -> None:
    """Send every place wandb writes (and `extra` (variable, folder) pairs) into
    tmp_path, offline, with a fresh wandb singleton: wandb caches settings read
    from the environment in a process-wide singleton. Call `wandb.teardown()`
    again when the test is done."""
    import wandb

    for var, sub in (("WANDB_DIR", "wandb-dir"), ("WANDB_DATA_DIR", "wandb-data"),
                     ("WANDB_CACHE_DIR", "wandb-cache"), ("WANDB_CONFIG_DIR", "wandb-config"),
                     ("WANDB_ARTIFACT_DIR", "wandb-artifacts"), *extra):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.teardown()
