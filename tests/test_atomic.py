"""Atomic writes: the old file or the new one, never half, never a stray temp."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gate import atomic
from gate.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writes_bytes_text_and_json(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.txt", "héllo")
    atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1.5, None]}, sort_keys=True)

    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    text = (tmp_path / "c.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"a": [1.5, None], "b": 1}
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
    assert _files(tmp_path) == ["a.bin", "b.txt", "c.json"]


def test_replaces_existing_file_with_ordinary_permissions(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    # mkstemp's 0o600 would hide reports from the CI user that uploads them.
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_failure_during_write_keeps_old_content_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(target, "new content")
    assert target.read_text() == "old"
    assert _files(tmp_path) == ["manifest.json"]


def test_failure_at_rename_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_replace(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # Ctrl-C at the worst moment

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert _files(tmp_path) == []


def test_unserializable_json_touches_nothing(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text("{}")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert target.read_text() == "{}"
    assert _files(tmp_path) == ["r.json"]


def test_strict_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"x": float("nan")}, allow_nan=False)
    assert _files(tmp_path) == []


def test_missing_directory_is_an_oserror_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "f.txt", "x")
    assert _files(tmp_path) == []
