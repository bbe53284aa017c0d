"""Two of lm-eval's per-call costs, paid once per process instead.

The gate calls `lm_eval.simple_evaluate` once per round and per model (20
times for the toy world's five models, more with MMLU's subtasks), and
lm-eval was written for one call per process. Two of its fixed costs repeat
on every call without changing anything it computes:

- `add_env_info`: at the end of every call, torch's collect_env describes the
  machine by running pip, lscpu and friends in child processes (1.6 s on 2
  cores). Here it runs once per process and working directory; results.json's
  provenance reads the same lm-eval version from it.
- `apply_template`: every prompt, target and choice list of every document is
  rendered from a Jinja template that lm-eval compiles again each time (a third
  of lm-eval's own time per item on the tests' fake suite). Here each template string
  is compiled once, in lm-eval's own Jinja environment, so the text rendered is
  the same.

Both replace module attributes of lm-eval 0.4.13 (`lm_eval.evaluator.add_env_info`,
`lm_eval.utils.apply_template`); tests/evaluate/test_lmeval_fixed_costs.py checks
that the requests and results are lm-eval's own.
"""

from __future__ import annotations

import copy
import functools
import os
from typing import Any


@functools.lru_cache(maxsize=8)
def _environment(cwd: str) -> dict[str, Any]:
    from lm_eval.loggers.utils import add_env_info

    found: dict[str, Any] = {}
    add_env_info(found)
    return found


def add_env_info_once(storage: dict[str, Any]) -> None:
    """lm-eval's `add_env_info`, computed once per working directory."""
    storage.update(copy.deepcopy(_environment(os.getcwd())))


@functools.lru_cache(maxsize=4096)
def _compiled(template: str) -> Any:
    from lm_eval.utils import env

    return env.from_string(template)


def apply_template(template: str, doc: dict[str, Any]) -> str:
    """lm-eval's `apply_template` with the template compiled once (jinja2
    templates render thread-safely, so concurrent candidates share them)."""
    return str(_compiled(template).render(**doc))


_SHIPPED: dict[str, Any] = {}


def shipped() -> dict[str, Any]:
    """lm-eval's own `add_env_info` and `apply_template`, as shipped: what the
    test and the bench compare the replacements with."""
    import lm_eval.evaluator
    import lm_eval.utils

    if not _SHIPPED:
        _SHIPPED.update(add_env_info=lm_eval.evaluator.add_env_info,
                        apply_template=lm_eval.utils.apply_template)
    return _SHIPPED


def install() -> None:
    """Idempotent: point lm-eval's two module attributes at the versions above."""
    import lm_eval.evaluator
    import lm_eval.utils

    shipped()  # keep lm-eval's own before replacing them
    lm_eval.evaluator.add_env_info = add_env_info_once
    lm_eval.utils.apply_template = apply_template
