"""Loads a toy task's JSONL relative to this folder, so lm-eval works from any cwd.

Written by gate.toy.suite; lm-eval imports it through `custom_dataset: !function toy_data.load`.
"""

from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def load(data_files=None, **_metadata):
    files = {split: str((HERE / path).resolve()) for split, path in (data_files or {}).items()}
    return datasets.load_dataset("json", data_files=files)
