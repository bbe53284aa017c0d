"""The wandb:// baseline store, checked offline.

What an offline run writes is read back from its transaction log
(`wandb_replay`), and a folder built from the artifact's staged files stands
in for the download (the one step that needs W&B's servers): the store read
through it must return the same records, and refuse a tampered entry exactly
as the directory store does.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from fakeworld import fake_adapter_dir, fake_model_dir
from test_baseline_store import make_key, make_records

wandb = pytest.importorskip("wandb")
from wandb_replay import hide_wandb, isolate_wandb, replay  # noqa: E402

from gate.baseline.store import BaselineStore, open_store  # noqa: E402
from gate.baseline.wandb_store import (  # noqa: E402
    ARTIFACT_TYPE,
    JOB_TYPE,
    WandbStoreRef,
    open_wandb_store,
    parse_store_uri,
)
from gate.cli.main import cli  # noqa: E402
from gate.errors import EXIT_INFRA, EXIT_INPUT, InputError, StoreError  # noqa: E402
from gate.evaluate.records import records_to_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
REF = WandbStoreRef("team", "finetunes", "base-store", "prod")


@pytest.fixture
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every place wandb and the store's local copies write, inside tmp_path."""
    isolate_wandb(tmp_path, monkeypatch, ("XDG_CACHE_HOME", "xdg-cache"))
    yield tmp_path
    wandb.teardown()


def _rows(store: BaselineStore) -> list[dict[str, Any]]:
    return [e.to_row() for e in store.list()]


def _same(a: Any, b: Any) -> bool:
    return bool(records_to_dict(a) == records_to_dict(b))


def _offline_artifact(home: Path) -> tuple[Any, Any]:
    """The one offline run under `home` and its gate-baseline artifact record."""
    wandb.teardown()  # wait for wandb-core to finish the transaction log
    (run_dir,) = (home / "wandb-dir" / "wandb").glob("offline-run-*")
    got = replay(run_dir)
    (artifact,) = [a for a in got["artifacts"] if a.type == ARTIFACT_TYPE]
    return got["run"], artifact


def _staged_folder(artifact: Any, dest: Path) -> Path:
    """The artifact's files as a download would lay them out."""
    for entry in artifact.manifest.contents:
        target = dest / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry.local_path, target)
    return dest


class FolderRemote:
    """A real folder standing in for the artifact's current version."""

    def __init__(self, root: Path) -> None:
        self.root, self.fetches = root, 0
        self.published: list[list[str]] = []

    def fetch(self, ref: WandbStoreRef, dest: Path) -> bool:
        self.fetches += 1
        if not (self.root / "manifest.json").exists():
            return False
        shutil.copytree(self.root, dest, dirs_exist_ok=True)
        return True

    def publish(self, ref: WandbStoreRef, folder: Path, names: list[str], mode: str) -> str:
        shutil.rmtree(self.root, ignore_errors=True)
        for name in names:
            (self.root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, self.root / name)
        self.published.append(names)
        return f"published {len(names)} files"


# --------------------------------------------------------------------------- the URL


@pytest.mark.parametrize(("uri", "ref"), [
    ("wandb://team/finetunes/base-store", WandbStoreRef("team", "finetunes", "base-store", "latest")),
    ("wandb://team/finetunes/base-store:prod", REF),
    ("wandb://my_team/llm.v2/gate-baseline:v3", WandbStoreRef("my_team", "llm.v2", "gate-baseline", "v3")),
])
def test_store_urls_name_entity_project_artifact_and_alias(uri: str, ref: WandbStoreRef) -> None:
    assert parse_store_uri(uri) == ref
    assert parse_store_uri(ref.uri) == ref
    assert ref.pinned is (ref.alias == "v3")


@pytest.mark.parametrize("uri", [
    "wandb://bad-form", "wandb://team/finetunes", "wandb://team/finetunes/base:",
    "wandb://team/finetunes/base/extra", "wandb://team//base", "wandb://team/fine tunes/base",
    "wandb://team/finetunes/base:a:b", "s3://bucket/baselines"])
def test_a_malformed_store_url_is_bad_input_showing_the_form(uri: str) -> None:
    with pytest.raises(InputError) as caught:
        open_store(uri)
    assert caught.value.exit_code == EXIT_INPUT
    problem = caught.value.problems[0]
    assert problem.key == "baseline.store" and repr(uri) in problem.message
    assert problem.fix is not None and "wandb://ENTITY/PROJECT/NAME[:ALIAS]" in problem.fix


def test_gate_run_with_a_malformed_store_url_exits_2_naming_the_key(tmp_path: Path) -> None:
    fake_model_dir(tmp_path / "base")
    fake_adapter_dir(tmp_path / "good", b"good")
    result = CliRunner().invoke(cli, [
        "run", "--base", str(tmp_path / "base"), "--adapter", f"good={tmp_path / 'good'}",
        "--suite", str(REPO / "tests/fixtures/fakesuite/suite.yaml"), "--engine", "fake",
        "--out", str(tmp_path / "out"), "--store", "wandb://bad-form"])
    assert result.exit_code == EXIT_INPUT, result.output
    assert "baseline.store" in result.output
    assert "'wandb://bad-form' is not a W&B artifact URL" in result.output
    assert "wandb://ENTITY/PROJECT/NAME[:ALIAS]" in result.output
    assert not (tmp_path / "out").exists()


def test_missing_wandb_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hide_wandb(monkeypatch)
    with pytest.raises(InputError) as caught:
        open_wandb_store(REF, cache_root=tmp_path, mode="online")
    assert caught.value.exit_code == EXIT_INPUT
    assert "pip install 'forgetting-gate[wandb]'" in str(caught.value)


# --------------------------------------------------------------------------- no access


def test_no_credentials_is_an_infrastructure_error_saying_wandb_login(
        wandb_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(wandb_home))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    wandb.teardown()
    with pytest.raises(StoreError) as caught:
        open_wandb_store(REF, cache_root=wandb_home / "copies")
    assert caught.value.exit_code == EXIT_INFRA
    text = str(caught.value)
    assert "cannot download the baseline store wandb://team/finetunes/base-store:prod" in text
    assert "`wandb login`" in text and "set baseline.store to a directory" in text


def test_an_unreachable_server_is_an_infrastructure_error(
        wandb_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_HTTP_TIMEOUT", "3")
    wandb.teardown()
    with pytest.raises(StoreError) as caught:
        open_wandb_store(REF, cache_root=wandb_home / "copies")
    assert caught.value.exit_code == EXIT_INFRA and "WANDB_MODE=offline" in str(caught.value)


# --------------------------------------------------------------------------- round trip


def test_entries_published_offline_read_back_the_same(wandb_home: Path) -> None:
    store = open_wandb_store(REF, cache_root=wandb_home / "ci-machine-1")
    keys = [make_key(), make_key(task="toy_math", data="d2")]
    recs = [make_records(), make_records(task="toy_math", n=5, seed=3)]
    for key, rec in zip(keys, recs, strict=True):
        store.put(key, rec)
    message = store.flush()
    assert message is not None and "wandb sync" in message and REF.uri in message

    run, artifact = _offline_artifact(wandb_home)
    assert run.job_type == JOB_TYPE and run.project == "finetunes" and run.entity == "team"
    assert artifact.name == "base-store" and set(artifact.aliases) == {"prod", "latest"}
    staged = {e.path for e in artifact.manifest.contents}
    assert staged == {"manifest.json"} | {e.name for e in store.list()}

    # The files as W&B holds them are a directory store with the same entries...
    folder = _staged_folder(artifact, wandb_home / "as-uploaded")
    plain = BaselineStore(folder)
    assert _rows(plain) == _rows(store)
    for key, rec in zip(keys, recs, strict=True):
        assert _same(plain.get(key), rec)
    # ...and another machine that downloads them reads the same records.
    remote = FolderRemote(folder)
    other = open_wandb_store(REF, cache_root=wandb_home / "ci-machine-2", mode="online",
                             fetch=remote.fetch, publish=remote.publish)
    assert remote.fetches == 1 and _rows(other) == _rows(store)
    for key, rec in zip(keys, recs, strict=True):
        assert _same(other.get(key), rec)
    assert other.flush() is None and remote.published == [], "nothing new: nothing published"


def _tamper(path: Path) -> None:
    doc = json.loads(gzip.decompress(path.read_bytes()))
    doc["records"]["num"][0] = 1.0 - doc["records"]["num"][0]
    path.write_bytes(gzip.compress(json.dumps(doc, sort_keys=True).encode(), mtime=0))


def test_a_tampered_uploaded_entry_is_refused_like_in_a_directory(wandb_home: Path) -> None:
    store = open_wandb_store(REF, cache_root=wandb_home / "ci-machine-1")
    store.put(make_key(), make_records())
    store.flush()
    _, artifact = _offline_artifact(wandb_home)
    folder = _staged_folder(artifact, wandb_home / "as-uploaded")
    _tamper(folder / store.show(make_key().digest()).name)

    with pytest.raises(StoreError, match=r"is corrupt: sha256 .* differs from the manifest's") as plain:
        BaselineStore(folder).get(make_key())
    remote = FolderRemote(folder)
    other = open_wandb_store(REF, cache_root=wandb_home / "ci-machine-2", mode="online",
                             fetch=remote.fetch, publish=remote.publish)
    with pytest.raises(StoreError, match=r"is corrupt: sha256 .* differs from the manifest's") as viaw:
        other.get(make_key())
    assert viaw.value.exit_code == EXIT_INFRA
    assert f"(local copy of {REF.uri})" in str(viaw.value)
    assert viaw.value.problems[0].fix == plain.value.problems[0].fix  # gate baseline rm / verify --repair


def test_a_machine_keeps_its_own_entries_and_publishes_the_union(tmp_path: Path) -> None:
    remote = FolderRemote(tmp_path / "artifact")
    first = open_wandb_store(REF, cache_root=tmp_path / "m1", mode="online",
                             fetch=remote.fetch, publish=remote.publish)
    assert first.list() == [], "no artifact yet: an empty store"
    first.put(make_key(), make_records())
    assert first.flush() == "published 2 files"

    # Machine 2 holds an entry it never published (e.g. a run that died).
    second_copy = BaselineStore(tmp_path / "m2" / "team" / "finetunes" / "base-store" / "prod")
    second_copy.put(make_key(task="toy_math"), make_records(task="toy_math"))
    second = open_wandb_store(REF, cache_root=tmp_path / "m2", mode="online",
                              fetch=remote.fetch, publish=remote.publish)
    assert {e.task for e in second.list()} == {"toy_capitals", "toy_math"}
    assert second.flush() == "published 3 files", "what the alias lacks is published"
    assert {e.task for e in BaselineStore(remote.root).list()} == {"toy_capitals", "toy_math"}

    # Removing an entry publishes exactly the local copy: no merge brings it back.
    fetched = remote.fetches
    second.rm(make_key().digest())
    second.flush()
    assert remote.fetches == fetched
    assert [e.task for e in BaselineStore(remote.root).list()] == ["toy_math"]


def test_a_damaged_local_entry_is_replaced_by_the_published_one(tmp_path: Path) -> None:
    remote = FolderRemote(tmp_path / "artifact")
    first = open_wandb_store(REF, cache_root=tmp_path / "m1", mode="online",
                             fetch=remote.fetch, publish=remote.publish)
    first.put(make_key(), make_records())
    first.flush()
    (path,) = (tmp_path / "m1").rglob("entries/*.json.gz")
    _tamper(path)
    again = open_wandb_store(REF, cache_root=tmp_path / "m1", mode="online",
                             fetch=remote.fetch, publish=remote.publish)
    assert _same(again.get(make_key()), make_records())


def test_offline_reads_this_machines_copy_with_a_warning(
        wandb_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gate.baseline.wandb_store"):
        first = open_wandb_store(REF, cache_root=wandb_home / "copies")
    assert "WANDB_MODE=offline" in caplog.text and "(0 entries)" in caplog.text
    first.put(make_key(), make_records())
    later = open_wandb_store(REF, cache_root=wandb_home / "copies")
    assert _same(later.get(make_key()), make_records())
    assert later.flush() is None, "nothing written by this process, nothing known remotely"


# --------------------------------------------------------------------------- gate run


@pytest.mark.heavy
def test_gate_run_publishes_the_baseline_it_computed(wandb_home: Path) -> None:
    from test_pipeline_fake import _engine

    from gate.config.load import load_setup
    from gate.pipeline import run

    suite = wandb_home / "suite"
    shutil.copytree(REPO / "tests" / "fixtures" / "fakesuite", suite)
    fake_model_dir(wandb_home / "base", b"base-weights")
    fake_adapter_dir(wandb_home / "good", b"good")
    fake_adapter_dir(wandb_home / "forgetful", b"forgetful")
    cfg = {"base": {"path": "base"},
           "candidates": [{"name": "good", "adapter": "good"}, {"name": "forgetful", "adapter": "forgetful"}],
           "suite": "suite/suite.yaml", "thresholds": str(REPO / "thresholds.yaml"),
           "engine": {"kind": "fake"}, "baseline": {"store": REF.uri}, "cache_dir": "cache", "out": "out"}
    (wandb_home / "gate.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    said: list[str] = []

    result = run(load_setup(wandb_home / "gate.yaml"), engine=_engine(), progress=said.append)

    assert result.results["baseline"]["store"] == REF.uri
    assert result.evaluated["base"] == 3
    assert any("wandb sync" in line for line in said), said
    _, artifact = _offline_artifact(wandb_home)
    folder = _staged_folder(artifact, wandb_home / "as-uploaded")
    assert len(BaselineStore(folder).list()) == 3
    assert BaselineStore(folder).verify() == []


def test_baseline_commands_work_on_a_wandb_store_and_rm_publishes(wandb_home: Path) -> None:
    from gate.cli.baseline import baseline as baseline_cli

    store = open_store(REF.uri)  # offline: this machine's copy under $XDG_CACHE_HOME
    kept = store.put(make_key(task="toy_math"), make_records(task="toy_math"))
    gone = store.put(make_key(), make_records())
    runner = CliRunner()
    listed = runner.invoke(baseline_cli, ["list", "--json", "--store", REF.uri])
    assert listed.exit_code == 0, listed.output
    assert {row["digest"] for row in json.loads(listed.output)} == {kept, gone}

    result = runner.invoke(baseline_cli, ["rm", gone[:12], "--store", REF.uri])
    assert result.exit_code == 0, result.output
    assert f"removed {gone}" in result.output and "wandb sync" in result.output
    _, artifact = _offline_artifact(wandb_home)
    assert [e.digest for e in BaselineStore(_staged_folder(artifact, wandb_home / "up")).list()] == [kept]
