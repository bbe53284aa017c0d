"""The wheel users install: built from the tree, installed (not editable) into a
fresh venv, it runs the CLI on the configs it ships.

What a user of the reusable workflow gets is `pip install forgetting-gate`: a
wheel, not this checkout. Package data missing from it (the report template,
the results schema, the shipped suites, `gate init`'s templates) breaks only
there, so this test builds the wheel from a copy of the tree and runs the
installed `gate` from outside the repository. The dependencies (torch,
lm-eval, ...) are the test venv's own, put on the fresh venv's path by a
`.pth` line: that makes them importable without running the test venv's
`.pth` files, so the editable install of this checkout stays invisible.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from fakeworld import fake_gate_config

REPO = Path(__file__).resolve().parents[1]
DIST = "forgetting-gate"

pytestmark = pytest.mark.heavy


def _run(cmd: list[str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload,no-any-return]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".gate", "gate-out", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache",
        ".ruff_cache", ".pytest_cache", "node_modules"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(work / "dist"), str(src)], work)
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("*.whl")
    assert wheel.name.startswith("forgetting_gate-")
    venv = work / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], work)
    assert made.returncode == 0, made.stderr
    site = Path(_run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     work).stdout.strip())
    (site / "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    inst = _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                 "--no-deps", "--no-index", str(wheel)], work)
    assert inst.returncode == 0, inst.stderr
    return venv / "bin"


def test_the_wheel_carries_its_package_data(installed: Path) -> None:
    (wheel,) = installed.parent.parent.glob("dist/*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("gate/report/templates/report.html.j2", "gate/report/schema/results.schema.json",
                   "gate/cli/templates/thresholds.yaml", "gate/cli/templates/release-gate.yml",
                   "gate/suites/default.yaml", "gate/suites/toy/toy.yaml", "gate/suites/toy/thresholds.yaml",
                   "gate/suites/toy/tasks/toy_data.py", "gate/suites/toy/data/toy_sub.jsonl", "gate/py.typed",
                   "gate/suites/real/real.yaml", "gate/suites/real/thresholds.yaml",
                   "gate/suites/real/tasks/real_data.py", "gate/suites/real/data/num_words.jsonl"):
        assert needed in names, f"{needed} is not in {wheel.name}"
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert f"Name: {DIST}" in text
    assert "Provides-Extra: vllm" in text


def test_the_installed_cli_runs_from_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = _run([str(installed / "python"), "-c", "import gate; print(gate.__file__)"], tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout
    helped = _run([str(installed / "gate"), "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    for command in ("run", "validate", "compare", "demo", "init", "waive", "baseline"):
        assert command in helped.stdout
    version = _run([str(installed / "gate"), "--version"], tmp_path)
    assert "0.1.0" in version.stdout


def test_the_installed_gate_validates_the_configs_it_ships(installed: Path, tmp_path: Path) -> None:
    gate = str(installed / "gate")
    shipped = Path(_run([str(installed / "python"), "-c", "import gate.suites as s; print(s.ROOT)"],
                        tmp_path).stdout.strip())
    files = [shipped / "default.yaml", shipped / "toy" / "toy.yaml", shipped / "toy" / "thresholds.yaml"]
    res = _run([gate, "validate", *[a for f in files for a in ("--file", str(f))]], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok: 3 file(s) valid" in res.stdout

    # `gate init` writes its templates from the wheel; they validate
    res = _run([gate, "init", "--yes", "--dir", "proj", "--base", "org/base", "--adapter", "a=./a",
                "--target", "pubmedqa", "--related", "medmcqa"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    proj = tmp_path / "proj"
    res = _run([gate, "validate", "--file", str(proj / "suite.yaml"), "--file", str(proj / "thresholds.yaml")],
               tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr

    # a whole run config naming the shipped toy suite by name: its lm-eval tasks
    # (YAMLs, data and the loader beside them) are built from the installed package
    cfg = fake_gate_config(tmp_path / "world", suite=None, thresholds=str(shipped / "toy" / "thresholds.yaml"))
    data = cfg.read_text(encoding="utf-8").replace("suite: suite/suite.yaml", "suite: toy")
    cfg.write_text(data, encoding="utf-8")
    res = _run([gate, "validate", "--config", str(cfg)], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok: suite toy (1 target, 2 related, 3 general tasks, 694 items)" in res.stdout
