"""Fast checks of the toy suite's data and tokenizer (no training).

The committed gate/suites/toy/ must be exactly what scripts/make_toy_data.py
writes, so training data and eval data cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from gate.toy import corpus
from gate.toy.suite import suite_files, task_specs
from gate.toy.tokenizer import save_tokenizer

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "gate" / "suites" / "toy"


def test_shipped_suite_equals_generated() -> None:
    expected = suite_files()
    # thresholds.yaml is the suite's release policy, written by hand, not generated.
    shipped = {str(p.relative_to(SUITE)): p.read_text() for p in SUITE.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "thresholds.yaml"}
    assert sorted(shipped) == sorted(expected)
    for rel, content in expected.items():
        assert shipped[rel] == content, f"{rel} drifted: rerun scripts/make_toy_data.py"


@pytest.mark.heavy
def test_make_toy_data_script_is_deterministic(tmp_path: Path) -> None:
    for out in (tmp_path / "a", tmp_path / "b"):
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_toy_data.py"), str(out)],
                       check=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
    files_a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*.*")}
    files_b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*.*")}
    assert files_a == files_b


def test_every_tier_has_hundreds_of_scored_items() -> None:
    items: dict[str, int] = {}
    for spec in task_specs():
        items[spec.tier] = items.get(spec.tier, 0) + len(spec.docs)
    assert items["target"] >= 100
    assert items["related"] >= 200
    assert items["general"] >= 300


def test_suite_covers_the_three_output_types() -> None:
    kinds = {spec.fields["output_type"] for spec in task_specs()}
    assert {"multiple_choice", "generate_until", "loglikelihood_rolling"} <= kinds


def test_multiple_choice_items_are_well_formed() -> None:
    for spec in task_specs():
        if spec.fields["output_type"] != "multiple_choice":
            continue
        for doc in spec.docs:
            assert len(set(doc["choices"])) == 4
            assert 0 <= doc["label"] < 4


def test_heldout_sentences_never_appear_in_training_data() -> None:
    heldout = {json.loads(line)["text"] for line in (SUITE / "data" / "toy_text.jsonl").open()}
    stream = corpus.general_lines(random.Random(0))
    trained = {next(stream) for _ in range(20000)}
    assert not heldout & trained


def test_base_never_sees_the_non_identity_subtractions() -> None:
    stream = corpus.general_lines(random.Random(0))
    seen = {line for line in (next(stream) for _ in range(20000)) if "-" in line}
    assert seen, "the identity subtractions should be in the base corpus"
    for line in seen:
        left, difference = line.split("=")
        minuend, subtrahend = (int(x) for x in left.split("-"))
        assert corpus.is_identity_subtraction(minuend, subtrahend)
        assert minuend - subtrahend == int(difference)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tok")
    save_tokenizer(path)
    return AutoTokenizer.from_pretrained(str(path))


def test_tokenizer_files_are_written(tmp_path: Path) -> None:
    save_tokenizer(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / name).is_file()


def test_tokenizer_adds_bos_and_round_trips(tokenizer) -> None:
    text = "the capital of zorvia is mell.\n14-6=8 after 9 is 10, ok?"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert len(ids) == len(text) + 1  # one token per character
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.decode(tokenizer(corpus.CHARSET).input_ids[1:]) == corpus.CHARSET


def test_tokenizer_has_distinct_special_tokens(tokenizer) -> None:
    specials = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert None not in specials and len(specials) == 3


def test_every_shipped_character_is_in_the_vocabulary(tokenizer) -> None:
    for spec in task_specs():
        for doc in spec.docs:
            for value in doc.values():
                for text in (value if isinstance(value, list) else [value]):
                    if isinstance(text, str):
                        assert tokenizer.unk_token_id not in tokenizer(text).input_ids


# --------------------------------------------------------------------------- build cache (no training)

def test_build_reuses_a_complete_world_without_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from gate.toy import build
    from gate.toy.cache import ensure_built

    build_module = importlib.import_module("gate.toy.build")  # the package's `build` is the function

    def lay_out(tmp: Path) -> None:
        (tmp / "base").mkdir()
        (tmp / "base" / "config.json").write_text("{}")
        (tmp / "manifest.json").write_text("{}")

    ensure_built(tmp_path, build_module.world_key(), lay_out, what="toy world")

    def no_training(*_a: object) -> None:
        raise AssertionError("an intact world was trained again")

    monkeypatch.setattr(build_module, "_build_into", no_training)
    world = build(tmp_path)
    assert world.root == tmp_path
    assert world.base == tmp_path / "base"
    assert set(world.candidates) == {"careful", "overfit", "full", "qlora"}
    assert world.suite == tmp_path / "suite" / "toy.yaml"


def test_default_root_is_the_user_cache_keyed_by_what_builds_the_world(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gate.toy import BUILDER_VERSION, default_root
    from gate.toy.build import world_key

    monkeypatch.setenv("GATE_TOY_DIR", str(tmp_path))
    assert default_root() == tmp_path / BUILDER_VERSION
    monkeypatch.delenv("GATE_TOY_DIR")
    monkeypatch.delenv("GATE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "gate" / "worlds" / f"toy-{world_key()}"
    monkeypatch.setenv("GATE_CACHE_DIR", str(tmp_path / "mine"))
    assert default_root() == tmp_path / "mine" / "worlds" / f"toy-{world_key()}"


def test_cli_build_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gate.cli.toy import toy

    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(toy, ["build", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path} exists and is not a toy world" in result.output
    assert "--force" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
