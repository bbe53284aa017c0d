"""The baseline store: reuse what matches, refuse what is damaged, explain misses."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gate import atomic
from gate.baseline.fingerprint import BaselineKey
from gate.baseline.store import BaselineStore, open_store
from gate.cli.baseline import baseline as baseline_cli
from gate.errors import InputError, StoreError
from gate.evaluate.records import Aggregation, ItemKey, TaskRecords, records_to_dict

REPO = Path(__file__).resolve().parents[2]


def make_records(task: str = "toy_capitals", n: int = 8, seed: int = 0) -> TaskRecords:
    rng = np.random.default_rng(seed)
    return TaskRecords(
        task=task, metric="acc", higher_is_better=True, aggregation=Aggregation.MEAN,
        keys=[ItemKey(i, f"doc{i}", f"p{i}", f"t{i}") for i in range(n)],
        num=rng.integers(0, 2, n).astype(float), den=np.ones(n),
        reported_score=0.5, n_choices=4, binary=True, version="1.0", config_hash="cfg1",
    )


def make_key(**changes: object) -> BaselineKey:
    key = BaselineKey(
        model={"config": "c1", "weights": "w1", "tokenizer": "t1", "chat_template": "none"},
        dtype="float32", engine="vllm", engine_version="0.32.0", lm_eval_version="0.4.13",
        task="toy_capitals", task_config="cfg1", task_version="1.0", data="d1", num_fewshot=0,
    )
    return dataclasses.replace(key, **changes)  # type: ignore[arg-type]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the store except lock files, by relative name."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def entry_file(store: BaselineStore, key: BaselineKey) -> Path:
    return Path(store.backend.where(store.show(key.digest()).name))


# --------------------------------------------------------------------------- round trip


def test_round_trip(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "baselines")
    records = make_records()
    digest = store.put(make_key(), records)
    assert digest == make_key().digest()
    got = store.get(make_key())
    assert got is not None
    assert records_to_dict(got) == records_to_dict(records)
    manifest = json.loads((tmp_path / "baselines" / "manifest.json").read_text())
    row = manifest["entries"][digest]
    assert row["task"] == "toy_capitals" and row["parts"] == make_key().parts()
    assert row["n_items"] == 8 and row["metric"] == "acc" and len(row["checksum"]) == 64
    assert row["gate_version"] and row["created"].endswith("Z")


def test_get_on_a_missing_store_is_none_and_creates_nothing(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "nowhere")
    assert store.get(make_key()) is None
    assert store.list() == [] and store.explain_miss(make_key()) == []
    assert store.verify() == [] and store.verify(repair=True) == []
    with pytest.raises(InputError, match="no baseline entry matches"):
        store.rm("ab12")
    assert not (tmp_path / "nowhere").exists()


def test_put_is_idempotent(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.put(make_key(), make_records())
    before = snapshot(tmp_path)
    assert store.put(make_key(), make_records(seed=1)) == make_key().digest()
    assert snapshot(tmp_path) == before  # the first valid entry is kept byte for byte


def test_put_replace_swaps_the_entry_file(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.put(make_key(), make_records(seed=0))
    old_file = entry_file(store, make_key())
    store.put(make_key(), make_records(n=5), replace=True)
    got = store.get(make_key())
    assert got is not None and got.n == 5
    assert not old_file.exists()
    assert len(list((tmp_path / "entries").iterdir())) == 1


def test_records_of_another_task_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="'piqa' cannot be stored under a key for task 'toy_capitals'"):
        BaselineStore(tmp_path).put(make_key(), make_records(task="piqa"))


def test_uncompressed_entries_round_trip(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, compress=False)
    store.put(make_key(), make_records())
    assert entry_file(store, make_key()).suffix == ".json"
    assert store.get(make_key()) is not None


# --------------------------------------------------------------------------- damage


def test_flipped_byte_is_detected_and_names_the_file_and_fix(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.put(make_key(), make_records())
    path = entry_file(store, make_key())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as info:
        store.get(make_key())
    message = str(info.value)
    assert str(path) in message and "corrupt" in message
    assert f"gate baseline rm {make_key().digest()[:12]}" in message
    assert "gate baseline verify --repair" in message
    assert info.value.exit_code == 3


def test_truncated_entry_is_detected(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.put(make_key(), make_records(n=200))
    path = entry_file(store, make_key())
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(StoreError, match="corrupt"):
        store.get(make_key())


def test_tampered_entry_with_forged_checksum_is_still_refused(tmp_path: Path) -> None:
    """An entry whose key parts no longer match its digest is not trusted."""
    store = BaselineStore(tmp_path)
    store.put(make_key(), make_records())
    path = entry_file(store, make_key())
    doc = json.loads(gzip.decompress(path.read_bytes()))
    doc["parts"]["engine_version"] = "0.1.0"
    forged = gzip.compress(json.dumps(doc).encode())
    path.write_bytes(forged)
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    import hashlib

    manifest["entries"][make_key().digest()]["checksum"] = hashlib.sha256(forged).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="do not match its digest"):
        store.get(make_key())


def test_missing_entry_file_is_an_error_not_a_miss(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.put(make_key(), make_records())
    entry_file(store, make_key()).unlink()
    with pytest.raises(StoreError, match="listed in the manifest but missing"):
        store.get(make_key())


def test_unreadable_manifest_is_an_error_and_repair_rebuilds_it(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.put(make_key(), make_records())
    (tmp_path / "manifest.json").write_text('{"format": 1, "entr')
    with pytest.raises(StoreError, match=r"manifest .* is unreadable") as info:
        store.get(make_key())
    assert "gate baseline verify --repair" in str(info.value)
    problems = store.verify(repair=True)
    assert any("unreadable" in p.message for p in problems)
    assert store.get(make_key()) is not None
    assert store.verify() == []


# --------------------------------------------------------------------------- killed writers


def test_failed_manifest_write_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BaselineStore(tmp_path)
    store.put(make_key(), make_records())
    before = snapshot(tmp_path)
    real_replace = os.replace

    def crash_on_manifest(src: str, dst: str) -> None:
        if Path(dst).name == "manifest.json":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash_on_manifest)
    with pytest.raises(StoreError, match="No space left"):
        store.put(make_key(task_config="cfg2"), make_records())
    with pytest.raises(StoreError):
        store.put(make_key(), make_records(n=3), replace=True)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before  # no new entry file, no temp file, same manifest
    assert store.verify() == []
    got = store.get(make_key())
    assert got is not None and got.n == 8


def test_interrupted_entry_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BaselineStore(tmp_path)
    store.put(make_key(), make_records())
    before = snapshot(tmp_path)

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put(make_key(data="d2"), make_records())
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_entry_written_but_never_listed_is_adopted_by_repair(tmp_path: Path) -> None:
    """A writer killed between the entry file and the manifest (SIGKILL, power cut)."""
    store = BaselineStore(tmp_path)
    store.put(make_key(), make_records())
    (tmp_path / "entries" / ".x.json.gz.abc.tmp").write_bytes(b"half")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "entries": {}}))
    assert store.get(make_key()) is None
    problems = store.verify()
    assert sorted(p.message for p in problems) == [
        "entry file not in the manifest (an interrupted write)",
        "temporary file left by an interrupted write",
    ]
    store.verify(repair=True)
    assert store.get(make_key()) is not None
    assert store.verify() == []
    assert [p.name for p in (tmp_path / "entries").iterdir() if p.name.startswith(".")] == []


def test_verify_repair_drops_corrupt_entries(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.put(make_key(), make_records())
    store.put(make_key(task="toy_math", data="m1"), make_records(task="toy_math"))
    entry_file(store, make_key()).write_bytes(b"garbage")
    problems = store.verify()
    assert len(problems) == 1 and "corrupt" in problems[0].message
    assert store.verify(repair=True) == problems
    assert [e.task for e in store.list()] == ["toy_math"]
    assert store.get(make_key()) is None and store.verify() == []


# --------------------------------------------------------------------------- concurrency

RACER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from tests.baseline.test_baseline_store import make_key, make_records
    from gate.baseline.store import BaselineStore

    store_dir, marker, go, ready = (Path(a) for a in sys.argv[2:6])
    ready.write_text("ready")
    while not go.exists():
        time.sleep(0.01)

    def compute():
        with open(marker, "a") as handle:
            handle.write("computed\\n")
        time.sleep(1.0)
        return make_records()

    records, reused = BaselineStore(store_dir).compute_or_wait(make_key(), compute)
    print(json.dumps({"reused": reused, "n": records.n, "score": records.score}))
""")


@pytest.mark.heavy
def test_two_processes_racing_on_one_key_compute_once(tmp_path: Path) -> None:
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    marker, go = tmp_path / "computations.txt", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(
        [sys.executable, str(script), str(REPO), str(tmp_path / "store"), str(marker), str(go),
         str(tmp_path / f"ready{i}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=tmp_path) for i in range(2)]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline, "racers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.02)
        go.write_text("go")  # both start compute_or_wait together
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), outputs
    results = [json.loads(out) for out, _ in outputs]
    assert marker.read_text() == "computed\n"
    assert sorted(r["reused"] for r in results) == [False, True]
    assert results[0]["score"] == results[1]["score"] and results[0]["n"] == 8


def test_compute_or_wait_reuses_and_stores_nothing_on_failure(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    calls: list[int] = []

    def compute() -> TaskRecords:
        calls.append(1)
        return make_records()

    def failing() -> TaskRecords:
        raise RuntimeError("engine died")

    def refused() -> TaskRecords:
        raise ConnectionRefusedError("engine at :8000 refused")  # an OSError

    with pytest.raises(RuntimeError):
        store.compute_or_wait(make_key(), failing)
    with pytest.raises(ConnectionRefusedError):  # not mistaken for an unwritable store
        store.compute_or_wait(make_key(), refused)
    assert store.get(make_key()) is None
    first, reused_first = store.compute_or_wait(make_key(), compute)
    second, reused_second = store.compute_or_wait(make_key(), compute)
    assert (reused_first, reused_second, len(calls)) == (False, True, 1)
    assert records_to_dict(first) == records_to_dict(second)


# --------------------------------------------------------------------------- misses


def test_explain_miss_names_what_changed(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    assert store.explain_miss(make_key()) == []  # never a baseline for this task
    store.put(make_key(), make_records())
    assert store.explain_miss(make_key()) == []  # not a miss
    assert store.explain_miss(make_key(task_config="cfg2")) == ["task toy_capitals config changed"]
    assert store.explain_miss(make_key(engine_version="0.33.0", data="d2")) == [
        "engine version changed (0.32.0 -> 0.33.0)", "task toy_capitals data changed"]
    assert store.explain_miss(make_key(task="piqa")) == []


def test_explain_miss_compares_with_the_closest_entry(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    other_model = {"config": "c9", "weights": "w9", "tokenizer": "t9", "chat_template": "none"}
    store.put(make_key(model=other_model), make_records())
    store.put(make_key(task_version="0.9"), make_records())
    assert store.explain_miss(make_key()) == ["task toy_capitals version changed (0.9 -> 1.0)"]


# --------------------------------------------------------------------------- list, rm, errors


def test_prefix_resolution_and_rm(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    keys = [make_key(seed=i) for i in range(40)]  # enough digests to share a first hex digit
    for key in keys:
        store.put(key, make_records())
    assert len(store.list()) == 40
    target = keys[0].digest()
    assert store.show(target[:10]).digest == target
    shared = next(d.digest()[0] for d in keys[1:] if d.digest()[0] == target[0])
    with pytest.raises(InputError, match=r"matches .* baseline entries") as info:
        store.show(shared)
    assert info.value.exit_code == 2
    with pytest.raises(InputError, match="no baseline entry matches 'zzz'"):
        store.rm("zzz")
    assert store.rm(target[:10]) == target
    assert store.get(keys[0]) is None and len(store.list()) == 39
    assert not any(p.name.startswith(target) for p in (tmp_path / "entries").iterdir())


def test_unwritable_store_is_a_store_error_naming_path_and_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = BaselineStore(blocker / "baselines")
    with pytest.raises(StoreError) as info:
        store.put(make_key(), make_records())
    assert str(blocker / "baselines") in str(info.value) and "--store" in str(info.value)
    assert info.value.exit_code == 3
    with pytest.raises(StoreError):
        store.compute_or_wait(make_key(), make_records)


def test_lock_wait_times_out_with_a_store_error(tmp_path: Path) -> None:
    import filelock

    store = BaselineStore(tmp_path)
    holder = filelock.FileLock(tmp_path / "locks" / f"{make_key().digest()}.lock")
    (tmp_path / "locks").mkdir()
    with holder, pytest.raises(StoreError, match="timed out after 0.2s waiting for the lock"):
        # flock locks conflict between open files even within one process
        store.compute_or_wait(make_key(), make_records, timeout=0.2)


def test_a_store_url_of_an_unknown_kind_is_bad_input() -> None:
    # wandb:// stores are tested in test_baseline_wandb.py.
    with pytest.raises(InputError, match=r"unknown scheme s3://.*wandb://ENTITY/PROJECT/NAME"):
        open_store("s3://bucket/baselines")


# --------------------------------------------------------------------------- CLI


def test_cli_list_show_verify_rm(tmp_path: Path) -> None:
    runner = CliRunner()
    store_dir = str(tmp_path / "store")
    result = runner.invoke(baseline_cli, ["list", "--store", store_dir])
    assert result.exit_code == 0 and result.output == f"no baselines in {store_dir}\n"

    store = BaselineStore(Path(store_dir))
    digest = store.put(make_key(), make_records())
    result = runner.invoke(baseline_cli, ["list", "--store", store_dir])
    assert result.exit_code == 0, result.output
    assert digest[:12] in result.output and "toy_capitals" in result.output
    listed = json.loads(runner.invoke(baseline_cli, ["list", "--json", "--store", store_dir]).output)
    assert [row["digest"] for row in listed] == [digest]

    result = runner.invoke(baseline_cli, ["show", digest[:8], "--store", store_dir])
    assert result.exit_code == 0 and "engine_version" in result.output and "0.32.0" in result.output

    assert runner.invoke(baseline_cli, ["verify", "--store", store_dir]).output.startswith("ok: 1")

    path = entry_file(store, make_key())
    path.write_bytes(path.read_bytes()[:10])
    result = runner.invoke(baseline_cli, ["verify", "--store", store_dir])
    assert result.exit_code == 3 and "corrupt" in result.output and str(path) in result.output
    result = runner.invoke(baseline_cli, ["show", digest[:8], "--store", store_dir])
    assert result.exit_code == 3
    result = runner.invoke(baseline_cli, ["verify", "--repair", "--store", store_dir])
    assert result.exit_code == 0 and "repaired:" in result.output

    store.put(make_key(), make_records())
    result = runner.invoke(baseline_cli, ["rm", digest[:8], "--store", store_dir])
    assert result.exit_code == 0 and result.output == f"removed {digest}\n"
    result = runner.invoke(baseline_cli, ["rm", digest[:8], "--store", store_dir])
    assert result.exit_code == 2 and "no baseline entry matches" in result.output
