"""Shared fixtures. Tests never reach a hub: offline mode is forced here."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

# Imported now, not at the session's end: hypothesis' pytest plugin imports it
# lazily in its terminal summary, and after a vLLM-module run that late import
# (rewritten by pytest) hit CPython 3.11's spurious "AST constructor recursion
# depth mismatch" SystemError (cpython gh-106905, pytest #10763; seen in threaded
# processes) and turned a passing run of tests/serve/test_serve_vllm_slow.py
# alone into exit 1.
import hypothesis  # noqa: F401
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
# An offline W&B run writes `wandb/offline-run-*` under WANDB_DIR, by default the
# working directory: the checkout. Tests that look at those folders set their own.
os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp(prefix="gate-tests-wandb-"))

REPO = Path(__file__).resolve().parent.parent

# The Ctrl-C tests send SIGINT to a `gate` child process. A shell that starts a
# command in the background without job control (`make test &`, nohup, some CI
# runners) starts it with SIGINT ignored, and an ignored signal is inherited
# through exec: the gate would then never see the test's Ctrl-C. A handler set
# here is reset to the default in every child, as an interactive shell gives it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def repo() -> Path:
    return REPO


# Every vLLM server the suite starts, in this process or in a `gate` child
# process, appends a line to this file (gate/serve/vllm_server.py `_tally`);
# the summary below says how many and which tests started them.
_TALLY = os.environ.setdefault("GATE_SERVER_TALLY",
                               os.path.join(tempfile.mkdtemp(prefix="gate-tests-servers-"), "servers.jsonl"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    import json
    from collections import Counter

    try:
        lines = Path(_TALLY).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    starts = [json.loads(line) for line in lines if line.strip()]
    if not starts:
        return
    per_file = Counter(s["test"].split("::")[0] or "(outside a test)" for s in starts)
    seconds = sum(s["started_s"] for s in starts)
    terminalreporter.write_sep("-", f"vLLM servers started: {len(starts)} ({seconds:.0f} s of start-up)")
    for name, count in per_file.most_common():
        terminalreporter.write_line(f"{count:3d}  {name}")
