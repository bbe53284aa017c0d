"""Fuzzed config parsing: any YAML value either parses or raises ConfigError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gate.config.models import RunConfig, Suite, Thresholds
from gate.config.yaml_io import parse_model
from gate.errors import ConfigError

KEYS = ["base", "candidates", "suite", "thresholds", "engine", "kind", "vllm", "path", "name", "adapter",
        "model", "tiers", "target", "related", "general", "task", "allowed_drop", "required_gain",
        "absolute", "relative", "alpha", "samples", "release", "out", "dtype", "inconclusive"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["vllm", "hf", "float32", "warn", "a", "x.yaml"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=4)), max_leaves=12)
documents = st.one_of(values, st.dictionaries(st.sampled_from(KEYS), values, max_size=6))


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from([RunConfig, Suite, Thresholds]))
def test_parse_never_crashes(doc: object, model: type) -> None:
    try:
        parse_model(model, doc, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.exit_code == 2
        for p in exc.problems:
            assert p.file == "fuzz.yaml"
            assert p.message
