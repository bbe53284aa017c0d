"""Fingerprints: they change when results could change, and only then."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from gate.baseline.fingerprint import (
    BaselineKey,
    HashMemo,
    adapter_identity,
    default_memo,
    diff_parts,
    hash_dir,
    hash_file,
    hash_files,
    model_identity,
    set_default_memo,
    unpinned_reason,
)
from gate.errors import AdapterError, InputError

OLD = 1_600_000_000  # a timestamp safely outside the racy window


def make_model(directory: Path, weights: bytes = b"\x01" * 4096) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(
        {"hidden_size": 128, "_name_or_path": "/home/a/base", "transformers_version": "5.19.0"}))
    (directory / "model.safetensors").write_bytes(weights)
    (directory / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "</s>", "chat_template": "{{ messages }}"}))
    return directory


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- files


def test_hash_file_streams_to_the_plain_sha256(tmp_path: Path) -> None:
    big = tmp_path / "w.bin"
    payload = os.urandom(3 * (1 << 20) + 17)  # crosses several 1 MiB chunks
    big.write_bytes(payload)
    assert hash_file(big, HashMemo()) == hashlib.sha256(payload).hexdigest()


def test_memo_skips_rehash_until_mtime_changes_then_rehashes_to_same_value(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"w" * 10_000)
    os.utime(weights, (OLD, OLD))
    memo = HashMemo()

    first = hash_file(weights, memo)
    assert (memo.hits, memo.misses) == (0, 1)
    assert hash_file(weights, memo) == first
    assert (memo.hits, memo.misses) == (1, 1)

    os.utime(weights, (OLD + 60, OLD + 60))  # touched, content unchanged
    assert hash_file(weights, memo) == first
    assert (memo.hits, memo.misses) == (1, 2)  # the memo was invalidated: a real re-hash


def test_freshly_written_files_are_never_memoised(tmp_path: Path) -> None:
    # A same-size rewrite within the filesystem's timestamp granularity would
    # otherwise return the stale digest.
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 64)
    memo = HashMemo()
    before = hash_file(f, memo)
    f.write_bytes(b"b" * 64)
    assert hash_file(f, memo) != before
    assert memo.hits == 0


def test_on_disk_memo_survives_a_new_process(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 100)
    os.utime(f, (OLD, OLD))
    memo = HashMemo(tmp_path / "memo" / "hash-memo.json")
    digest = hash_file(f, memo)
    memo.save()
    again = HashMemo(tmp_path / "memo" / "hash-memo.json")
    assert hash_file(f, again) == digest
    assert again.hits == 1


def test_identity_functions_use_the_configured_default_memo(tmp_path: Path) -> None:
    model = make_model(tmp_path / "base")
    for p in model.iterdir():
        os.utime(p, (OLD, OLD))
    memo = HashMemo(tmp_path / "hash-memo.json")
    previous = default_memo()
    set_default_memo(memo)
    try:
        first = model_identity(str(model))
        misses = memo.misses
        assert model_identity(str(model)) == first and memo.misses == misses and memo.hits > 0
        memo.save()
    finally:
        set_default_memo(previous)
    assert json.loads((tmp_path / "hash-memo.json").read_text())


def test_hash_files_ignores_order_but_not_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    assert hash_files([a, b]) == hash_files([b, a])
    c = tmp_path / "c.bin"
    c.write_bytes(b"2")  # b's content under another name: a renamed shard
    assert hash_files([a, c]) != hash_files([a, b])
    assert hash_dir(tmp_path, ["*.bin"]) == hash_files([a, b, c])
    assert hash_dir(tmp_path, ["a.*"]) == hash_files([a])


# --------------------------------------------------------------------------- models


def test_one_byte_in_the_weights_changes_only_the_weights_part(tmp_path: Path) -> None:
    model = make_model(tmp_path / "base", os.urandom(8192))
    before = model_identity(str(model))
    flip_byte(model / "model.safetensors")
    after = model_identity(str(model))
    assert after["weights"] != before["weights"]
    assert {k: v for k, v in after.items() if k != "weights"} == \
           {k: v for k, v in before.items() if k != "weights"}
    assert diff_parts({f"model.{k}": v for k, v in before.items()},
                      {f"model.{k}": v for k, v in after.items()}) == ["base model weights changed"]


def test_touching_the_model_keeps_its_identity(tmp_path: Path) -> None:
    model = make_model(tmp_path / "base")
    for p in model.iterdir():
        os.utime(p, (OLD, OLD))
    before = model_identity(str(model))
    for p in model.iterdir():
        os.utime(p, (OLD + 3600, OLD + 3600))
    assert model_identity(str(model)) == before


def test_resaving_config_does_not_change_identity_but_a_real_change_does(tmp_path: Path) -> None:
    model = make_model(tmp_path / "base")
    before = model_identity(str(model))
    cfg = json.loads((model / "config.json").read_text())
    cfg.update({"_name_or_path": "/ci/runner/base", "transformers_version": "5.20.0"})
    (model / "config.json").write_text(json.dumps(cfg, indent=4))
    assert model_identity(str(model)) == before
    cfg["hidden_size"] = 256
    (model / "config.json").write_text(json.dumps(cfg))
    assert model_identity(str(model))["config"] != before["config"]


def test_chat_template_and_tokenizer_are_told_apart(tmp_path: Path) -> None:
    model = make_model(tmp_path / "base")
    before = model_identity(str(model))
    (model / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "</s>", "chat_template": "{{ messages | tojson }}"}))
    after = model_identity(str(model))
    assert after["chat_template"] != before["chat_template"]
    assert after["tokenizer"] == before["tokenizer"]
    (model / "tokenizer.json").write_text('{"model": {"vocab": {"b": 0}}}')
    assert model_identity(str(model))["tokenizer"] != before["tokenizer"]


def test_training_state_files_are_not_weights(tmp_path: Path) -> None:
    model = make_model(tmp_path / "base")
    before = model_identity(str(model))
    (model / "optimizer.pt").write_bytes(b"adam state")
    (model / "training_args.bin").write_bytes(b"args")
    (model / "checkpoint-10").mkdir()
    (model / "checkpoint-10" / "model.safetensors").write_bytes(b"older")
    assert model_identity(str(model)) == before


def test_model_dir_without_weights_is_an_input_error(tmp_path: Path) -> None:
    model = make_model(tmp_path / "base")
    (model / "model.safetensors").unlink()
    with pytest.raises(InputError, match="no weight files") as info:
        model_identity(str(model))
    assert info.value.exit_code == 2


def test_hub_ids_are_named_not_downloaded_and_must_be_pinned(tmp_path: Path) -> None:
    assert model_identity("Qwen/Qwen2.5-0.5B", None) == {"hub_id": "Qwen/Qwen2.5-0.5B", "revision": ""}
    assert "no revision" in (unpinned_reason(model_identity("Qwen/Qwen2.5-0.5B")) or "")
    assert "branch or tag" in (unpinned_reason(model_identity("Qwen/Qwen2.5-0.5B", "main")) or "")
    assert unpinned_reason(model_identity("Qwen/Qwen2.5-0.5B", "a" * 40)) is None
    assert unpinned_reason(model_identity(str(make_model(tmp_path / "m")))) is None
    with pytest.raises(InputError, match="neither a model directory nor a hub id"):
        model_identity(str(tmp_path / "missing" / "model"))


def test_adapter_identity(tmp_path: Path) -> None:
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"r": 8, "base_model_name_or_path": "/home/a/base"}))
    (adapter / "adapter_model.safetensors").write_bytes(os.urandom(512))
    before = adapter_identity(adapter)
    assert set(before) == {"adapter_config", "adapter_weights"}

    (adapter / "adapter_config.json").write_text(json.dumps(
        {"r": 8, "base_model_name_or_path": "/ci/base"}))
    assert adapter_identity(adapter) == before  # where the base lived is not the adapter
    flip_byte(adapter / "adapter_model.safetensors")
    assert adapter_identity(adapter)["adapter_weights"] != before["adapter_weights"]

    (adapter / "adapter_config.json").unlink()
    with pytest.raises(AdapterError, match=r"adapter_config\.json") as info:
        adapter_identity(adapter)
    assert info.value.exit_code == 2


def make_key(**changes: object) -> BaselineKey:
    key = BaselineKey(
        model={"config": "c1", "weights": "w1", "tokenizer": "t1", "chat_template": "none"},
        dtype="float32", engine="vllm", engine_version="0.31.0", lm_eval_version="0.4.13",
        task="arc_easy", task_config="cfg1", task_version="1.0", data="d1", num_fewshot=0,
    )
    return dataclasses.replace(key, **changes)  # type: ignore[arg-type]


def test_key_digest_is_stable_and_covers_every_part() -> None:
    key = make_key()
    assert key.digest() == make_key().digest()
    assert len(key.digest()) == 64 and hash(key) == hash(make_key())
    json.dumps(key.parts())  # strings only: manifests store them as they are
    seen = {key.digest()}
    for change in ({"dtype": "bfloat16"}, {"quantization": "nf4"}, {"engine": "hf"},
                   {"engine_version": "0.32.0"}, {"lm_eval_version": "0.4.14"},
                   {"task_config": "cfg2"}, {"task_version": "2.0"}, {"data": "d2"},
                   {"num_fewshot": 5}, {"items": "limit=10"}, {"seed": 1234},
                   {"adapter": {"adapter_weights": "a"}},
                   {"model": {**make_key().model, "tokenizer": "t2"}}):
        seen.add(make_key(**change).digest())
    assert len(seen) == 14


def test_model_digest_ignores_task_parts() -> None:
    assert make_key().model_digest() == make_key(task="piqa", data="d9").model_digest()
    assert make_key().model_digest() != make_key(dtype="bfloat16").model_digest()


def test_diff_parts_messages() -> None:
    old = make_key().parts()
    assert diff_parts(old, make_key(task_config="cfg2").parts()) == ["task arc_easy config changed"]
    new = make_key(engine_version="0.32.0", task_version="2.0", data="d2",
                   model={**make_key().model, "weights": "w2"}).parts()
    assert diff_parts(old, new) == [
        "base model weights changed",
        "engine version changed (0.31.0 -> 0.32.0)",
        "task arc_easy version changed (1.0 -> 2.0)",
        "task arc_easy data changed",
    ]
    assert diff_parts(old, make_key(num_fewshot=None, seed=7).parts()) == [
        "task arc_easy num_fewshot changed (0 -> none)", "seed changed (none -> 7)"]
    hub = make_key(model={"hub_id": "org/base", "revision": "abc"}).parts()
    assert "base model changed ((none) -> org/base)" in diff_parts(old, hub)
    assert diff_parts(old, old) == []
    assert diff_parts({"custom": "1"}, {"custom": "2"}) == ["custom changed (1 -> 2)"]


def test_memo_timing_budget(tmp_path: Path) -> None:
    """Hashing a memoised 64 MiB file again costs a stat, not a read."""
    big = tmp_path / "model.safetensors"
    with open(big, "wb") as handle:
        handle.truncate(64 << 20)
    os.utime(big, (OLD, OLD))
    memo = HashMemo()
    start = time.perf_counter()
    first = hash_file(big, memo)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    assert hash_file(big, memo) == first
    warm = time.perf_counter() - start
    assert warm < cold / 10
