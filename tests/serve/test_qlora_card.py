"""A QLoRA adapter told by its model card (issue 14): PEFT up to 0.6 wrote the
base's bitsandbytes config into the adapter's README.md; such an adapter is
marked QLoRA without a `quantization:` key, and the run says so (the test
venv has the qlora extra). Current PEFT writes no such block."""

from __future__ import annotations

from pathlib import Path

from fakeworld import fake_gate_config

from gate.config.load import load_setup
from gate.serve.adapters import trained_in_4bit

# as PEFT 0.5 wrote it (copied from the layout of hub adapters trained with QLoRA)
OLD_PEFT_CARD = """---
library_name: peft
---
## Training procedure


The following `bitsandbytes` quantization config was used during training:
- quant_method: bitsandbytes
- load_in_8bit: {eight}
- load_in_4bit: {four}
- llm_int8_threshold: 6.0
- bnb_4bit_quant_type: nf4
- bnb_4bit_use_double_quant: True
- bnb_4bit_compute_dtype: bfloat16
### Framework versions


- PEFT 0.5.0
"""


def card(folder: Path, *, four: bool, eight: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(OLD_PEFT_CARD.format(four=four, eight=eight), encoding="utf-8")
    return folder


def test_the_card_of_a_4bit_base_marks_a_qlora_adapter(tmp_path: Path) -> None:
    assert trained_in_4bit(card(tmp_path / "q", four=True))
    assert not trained_in_4bit(card(tmp_path / "int8", four=False, eight=True))  # 8-bit: not nf4 QLoRA
    assert not trained_in_4bit(tmp_path / "nothing")  # no card at all
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "README.md").write_text("---\nlibrary_name: peft\n---\n- load_in_4bit: True\n", encoding="utf-8")
    assert not trained_in_4bit(plain)  # the line outside PEFT's quantization block says nothing


def test_a_carded_adapter_is_split_without_a_key(tmp_path: Path) -> None:
    config = fake_gate_config(tmp_path, adapters=("q", "plain"))
    card(tmp_path / "q", four=True)
    setup = load_setup(config)
    marks = {c.name: c.quantization for c in setup.config.candidates}
    assert marks == {"q": "bitsandbytes", "plain": None}
    assert any("candidate q: its model card says it was trained on a 4-bit base" in n for n in setup.notes)
