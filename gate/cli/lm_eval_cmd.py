"""`gate lm-eval`: lm-eval's own CLI, with hub datasets loaded from a dataset mirror.

`gate compare` judges lm_eval output folders written elsewhere. On a machine
without hub access, lm_eval's CLI cannot load its tasks' datasets; this runs
the very same CLI (lm_eval.__main__.cli_evaluate, every argument passed
through unchanged) inside the gate's dataset mirror (gate.evaluate.mirror), so
`gate run` and `lm_eval` + `gate compare` read the same items.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("lm-eval", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                            "help_option_names": ["-h", "--help"]})
@click.option("--dataset-mirror", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of datasets as MIRROR/ORG/NAME (hub snapshots or save_to_disk copies).")
@click.argument("lm_eval_args", nargs=-1, type=click.UNPROCESSED)
def lm_eval_cmd(dataset_mirror: Path, lm_eval_args: tuple[str, ...]) -> None:
    """Run `lm_eval LM_EVAL_ARGS...` with its hub datasets read from the mirror.

    \b
    gate lm-eval --dataset-mirror /mnt/datasets -- run --model hf \\
        --model_args pretrained=/models/base --tasks mmlu,hellaswag \\
        --log_samples --output_path out/base
    gate compare --base out/base --candidate tuned=out/tuned --suite suite.yaml

    Exits with lm_eval's own exit status.
    """
    from lm_eval.__main__ import cli_evaluate

    from gate.evaluate.mirror import dataset_mirror as mirror

    argv, sys.argv = sys.argv, ["lm_eval", *lm_eval_args]
    try:
        with mirror(dataset_mirror.resolve()):
            cli_evaluate()
    finally:
        sys.argv = argv
