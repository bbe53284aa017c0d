"""The real suite's own tasks (gate/suites/real): their items and the fine-tune's data never overlap."""

from __future__ import annotations

import json

import pytest

from gate.suites import ROOT
from gate.toy.real import EPOCH_EXAMPLES, number_words, task_items, training_lines


@pytest.mark.parametrize(("n", "words"), [(100, "one hundred"), (110, "one hundred ten"), (119, "one hundred nineteen"),
                                          (340, "three hundred forty"), (347, "three hundred forty-seven"),
                                          (999, "nine hundred ninety-nine"), (7, "seven"), (21, "twenty-one")])
def test_numbers_are_written_as_english_words(n: int, words: str) -> None:
    assert number_words(n) == words


def test_the_shipped_task_data_is_what_the_generator_writes() -> None:
    for task, rows in task_items().items():
        lines = (ROOT / "real" / "data" / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == rows, f"rerun gate.toy.real.write_task_data for {task}"


def test_no_evaluated_number_is_in_the_training_data() -> None:
    items = task_items()
    evaluated = {r["prompt"].split(": ")[1].split("\n")[0] for r in items["num_words"]}
    evaluated |= {r["answer"].strip() for r in items["words_num"]}
    trained = {line.split("\n")[0].removeprefix("Number: ") for line in training_lines()}
    assert len(evaluated) == 200 and len(trained) == EPOCH_EXAMPLES
    assert not evaluated & trained
    # the related task reads back words the target task would write, for numbers no one trains on
    assert all(r["answer"].strip().isdigit() and r["prompt"].startswith("In words: ") for r in items["words_num"])
