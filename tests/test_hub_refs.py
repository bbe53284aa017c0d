"""Models and adapters named by hub id, through the CLI (issue 15).

`base: org/base`, `adapter: org/lora@REV` and `--adapter name=org/lora` are
resolved through huggingface_hub's cache (built here by hand, laid out as
`huggingface-cli download` leaves it: `models--org--name/snapshots/<commit>/`,
`refs/main`), with HF_HUB_OFFLINE=1 as on an air-gapped runner. The gate then
works on the snapshot folder: results name the commit, the fingerprint is the
snapshot's files, and a hub id the cache lacks is exit 2 naming the folder
expected.
"""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import yaml
from click.testing import CliRunner
from fakeworld import BASE, FORGETFUL, GOOD, fake_adapter_dir, fake_gate_config, fake_model_dir

from gate.cli.main import cli
from gate.serve.fake import FakeEngine

pytestmark = pytest.mark.heavy

OLD = "1111111111111111111111111111111111111111"
NEW = "2222222222222222222222222222222222222222"


def _snapshot(hub: Path, repo_id: str, commit: str, make: object, payload: bytes, *, main: bool) -> Path:
    folder = hub / ("models--" + repo_id.replace("/", "--"))
    snap = folder / "snapshots" / commit
    make(snap, payload)  # type: ignore[operator]
    if main:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(commit, encoding="utf-8")
    return snap


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    _snapshot(hub, "org/base", OLD, fake_model_dir, b"base-weights", main=True)
    # the adapter repo: an old commit that forgets, main moved on to one that does not
    _snapshot(hub, "org/lora", OLD, fake_adapter_dir, b"forgetful", main=False)
    _snapshot(hub, "org/lora", NEW, fake_adapter_dir, b"good", main=True)
    fake_gate_config(tmp_path / "w", base="org/base", adapters=())
    monkeypatch.setattr("gate.serve.factory.make_engine", lambda _cfg: FakeEngine(
        {"base": BASE, "pinned": FORGETFUL, "latest": GOOD}))
    monkeypatch.chdir(tmp_path / "w")
    return tmp_path / "w"


def _run(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return done.exit_code, done.output


def test_hub_ids_resolve_to_their_commits_and_gate_as_local_folders(world: Path) -> None:
    cfg = yaml.safe_load((world / "gate.yaml").read_text(encoding="utf-8"))
    cfg["candidates"] = [{"name": "pinned", "adapter": f"org/lora@{OLD}"}, {"name": "latest", "adapter": "org/lora"}]
    (world / "gate.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    code, out = _run("run", "--config", "gate.yaml")
    assert code == 1, out  # the pinned old commit forgets
    results = json.loads((world / "out" / "results.json").read_text(encoding="utf-8"))
    verdicts = {c["name"]: c["verdict"] for c in results["candidates"]}
    assert verdicts == {"pinned": "FAIL", "latest": "PASS"}
    paths = {c["name"]: c["path"] for c in results["candidates"]}
    assert paths["pinned"].endswith(f"models--org--lora/snapshots/{OLD}")
    assert paths["latest"].endswith(f"models--org--lora/snapshots/{NEW}")  # main, resolved to its commit
    assert results["provenance"]["base"]["path"].endswith(f"models--org--base/snapshots/{OLD}")
    fingerprints = {c["name"]: c["fingerprint"] for c in results["candidates"]}
    assert fingerprints["pinned"] != fingerprints["latest"]
    assert f"write org/lora@{NEW} to pin it" in out  # the unpinned one is told its commit

    # the same adapter by flag, pinned to the new commit: same folder, same fingerprint
    code, out = _run("run", "--config", "gate.yaml", "--adapter", f"latest=org/lora@{NEW}")
    assert code == 0, out
    again = json.loads((world / "out" / "results.json").read_text(encoding="utf-8"))
    assert again["candidates"][0]["fingerprint"] == fingerprints["latest"]


def test_a_hub_id_the_cache_lacks_is_exit_2_naming_the_folder_expected(world: Path) -> None:
    code, out = _run("validate", "--config", "gate.yaml", "--adapter", "x=org/missing@v1", "--adapter",
                     f"y=org/lora@{'3' * 40}")
    assert code == 2, out
    assert "candidates.0.adapter: directory not found: org/missing@v1" in out
    assert "models--org--missing" in out and "huggingface-cli download org/missing --revision v1" in out
    assert "candidates.1.adapter" in out  # a revision the cache lacks, same message
    assert not (world / "out" / "results.json").exists()


def test_base_pinned_twice_differently_is_refused(world: Path) -> None:
    cfg = yaml.safe_load((world / "gate.yaml").read_text(encoding="utf-8"))
    cfg["base"] = {"path": f"org/base@{OLD}", "revision": NEW}
    cfg["candidates"] = [{"name": "latest", "adapter": "org/lora"}]
    (world / "gate.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    code, out = _run("validate", "--config", "gate.yaml")
    assert code == 2, out
    assert "base.revision" in out and "give the revision once" in out
