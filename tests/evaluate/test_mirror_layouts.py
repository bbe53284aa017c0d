"""The dataset mirror's mapping, on small hand-made copies of both layouts."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from gate.evaluate.mirror import (
    DatasetNotMirrored,
    dataset_mirror,
    is_hub_id,
    locate,
    mirror_splits,
)


def _saved(folder: Path, **splits: list[dict[str, object]]) -> None:
    for split, rows in splits.items():
        datasets.Dataset.from_list(rows).save_to_disk(str(folder / split))


def test_only_hub_ids_are_mapped() -> None:
    assert is_hub_id("allenai/ai2_arc") and is_hub_id("hellaswag")
    for not_hub in ("json", "parquet", "csv", "/abs/folder", "./rel", "s3://bucket/x", "a/b/c"):
        assert not is_hub_id(not_hub), not_hub


def test_each_layout_loads_and_the_patch_is_gone_afterwards(tmp_path: Path) -> None:
    mirror = tmp_path / "m"
    _saved(mirror / "org" / "saved" / "cfg", validation=[{"x": 1}, {"x": 2}], test=[{"x": 3}])
    _saved(mirror / "org" / "plain" / "none", validation=[{"x": 4}])
    snap = mirror / "org" / "snap"
    (snap / "data").mkdir(parents=True)
    datasets.Dataset.from_list([{"x": 5}, {"x": 6}]).to_parquet(str(snap / "data" / "validation-0.parquet"))
    (snap / "README.md").write_text("---\nconfigs:\n- config_name: c1\n  data_files:\n  - split: validation\n"
                                    "    path: data/validation-*\n---\n")
    original = datasets.load_dataset
    with dataset_mirror(mirror):
        with dataset_mirror(mirror):  # re-entrant: the inner block leaves the outer's patch in place
            pass
        assert datasets.load_dataset is not original
        saved = datasets.load_dataset("org/saved", "cfg")
        assert sorted(saved) == ["test", "validation"] and saved["validation"]["x"] == [1, 2]
        assert datasets.load_dataset("org/saved", "cfg", split="test")["x"] == [3]
        assert datasets.load_dataset("org/plain")["validation"]["x"] == [4]
        assert datasets.load_dataset("org/snap", "c1", revision="abc")["validation"]["x"] == [5, 6]
        with pytest.raises(DatasetNotMirrored, match=r"split 'train' is not in the mirror's copy"):
            datasets.load_dataset("org/saved", "cfg", split="train")
        with pytest.raises(DatasetNotMirrored, match=r"has configs cfg, not other"):
            datasets.load_dataset("org/saved", "other")
    assert datasets.load_dataset is original
    assert mirror_splits(locate(mirror, "org/snap", "c1")) == ["validation"]  # type: ignore[arg-type]
    assert mirror_splits(locate(mirror, "org/saved", "cfg")) == ["test", "validation"]  # type: ignore[arg-type]
    assert locate(mirror, "org/absent", None) is None


def test_a_hub_id_the_mirror_lacks_names_the_folder_expected_when_the_hub_fails_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with dataset_mirror(tmp_path), pytest.raises(DatasetNotMirrored) as info:
        datasets.load_dataset("org/absent", "x")
    assert f"not in the mirror (expected {tmp_path / 'org' / 'absent'})" in str(info.value)
    assert f"--local-dir {tmp_path / 'org' / 'absent'}" in info.value.fix

