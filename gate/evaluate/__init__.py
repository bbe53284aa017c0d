"""Stage 3, evaluate: task plans and served LMs in; typed per-item `TaskRecords` out.

    plan.py       build each task once: count documents, hash data and config, draw items
    harness.py    run lm-eval on one model (a response cache per model fingerprint)
    lmeval_io.py  the lm-eval boundary: its stringly output parsed once into records
    records.py    TaskRecords: every item's value, the edge to the baseline and verdict stages
    rounds.py     early stopping: a candidate scored in rounds until its verdict is decided
    qlora_split.py  the QLoRA split's three models, scored through the hf engine

lm-eval dicts never leave this package.
"""
