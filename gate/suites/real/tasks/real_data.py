"""Loads a real-world suite task's JSONL relative to this folder, so lm-eval works from any cwd.

Shipped with the real suite; lm-eval imports it through `custom_dataset: !function real_data.load`.
"""

from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def load(data_files=None, **_metadata):
    files = {split: str((HERE / path).resolve()) for split, path in (data_files or {}).items()}
    return datasets.load_dataset("json", data_files=files)


def text_docs(dataset):
    """HellaSwag's contexts with their gold endings as plain text (general_text's documents).

    The WikiHow items carry markup (`[title]`, `[step]`, ...): a title ends a
    sentence, the other tags go, as lm-eval's own hellaswag preprocessing does.
    """
    import re

    def clean(doc):
        text = (doc["ctx"] + " " + doc["endings"][int(doc["label"])]).strip().replace(" [title]", ". ")
        return {"text": re.sub(r"\s+", " ", re.sub(r"\[.*?\]", "", text)).strip()}

    return dataset.map(clean)
