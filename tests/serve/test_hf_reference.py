"""The parity probe's hf reference, computed in a child process: the same numbers as in process."""

from __future__ import annotations

import sys

import pytest
from test_serve_tiny import tiny_world

from gate.errors import AdapterError
from gate.serve.base import ModelSpec
from gate.serve.hf import HfEngine, HfOptions
from gate.serve.hf_reference import reference_loglikelihoods
from gate.serve.probes import rolling_loglikelihoods

pytestmark = pytest.mark.heavy

TEXTS = ["The capital of France is Paris.", "after a is b, after b is c", "Two plus two is four."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):  # type: ignore[no-untyped-def]
    return tiny_world(tmp_path_factory.getbasetemp() / "tiny")


def test_child_process_reference_equals_the_in_process_engine_exactly(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = str(tiny["base"])
    group = [ModelSpec("base", "base", base, base), ModelSpec("lora", "lora", str(tiny["lora"]), base)]
    options = HfOptions(dtype="float32")
    refs = reference_loglikelihoods(group, TEXTS, options, tmp_path / "logs")
    with HfEngine(options).serve(group, tmp_path) as lms:
        expected = {s.name: rolling_loglikelihoods(lms[s.name], TEXTS) for s in group}
    assert refs == expected  # bit for bit: floats travel as JSON reprs
    assert refs["base"] != refs["lora"]
    assert (tmp_path / "logs" / "hf-reference.log").is_file()


def test_a_gate_error_in_the_child_is_raised_again_with_its_class(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = str(tiny["base"])
    not_an_adapter = tmp_path / "empty-adapter"
    not_an_adapter.mkdir()
    group = [ModelSpec("base", "base", base, base), ModelSpec("bad", "lora", str(not_an_adapter), base)]
    with pytest.raises(AdapterError) as info:
        reference_loglikelihoods(group, TEXTS, HfOptions(), tmp_path / "logs")
    assert str(not_an_adapter) in str(info.value)


def test_the_reference_does_not_load_torch_into_the_calling_process(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    base = str(tiny["base"])
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from gate.serve.base import ModelSpec\n"
        "from gate.serve.hf import HfOptions\n"
        "from gate.serve.hf_reference import reference_loglikelihoods\n"
        f"refs = reference_loglikelihoods([ModelSpec('base', 'base', {base!r}, {base!r})], ['a b c'], HfOptions(), "
        f"Path({str(tmp_path)!r}))\n"
        "print(len(refs['base']), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]
