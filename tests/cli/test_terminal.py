"""What a person sees (issue 18): the gate's stages and verdict on the terminal,
the libraries' chatter (lm-eval, datasets, tqdm) in out/logs/gate.log.

The CLI runs as a real child process, so its stdout and stderr are real file
descriptors, as on a terminal or in a CI log.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakeworld import fake_gate_config

pytestmark = pytest.mark.heavy

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "tests" / "fixtures" / "fakesuite"
#: lines the libraries print that must not reach the terminal
LIBRARY_LINES = ("Custom kwargs can be passed", "Generating test split", "it/s]", "Checking cached requests",
                 "Building contexts", "Requesting API")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_gate_config(tmp_path_factory.mktemp("terminal"))


def _gate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from gate.cli.main import cli; cli()", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_quiet_by_default_libraries_in_the_log(config: Path) -> None:
    done = _gate("run", "--config", str(config), cwd=config.parent)
    shown = done.stdout + done.stderr
    assert done.returncode in (0, 1), shown
    for line in LIBRARY_LINES:
        assert line not in shown, line
    assert "planned 3 task(s) of suite" in done.stderr          # the gate's stages
    assert "evaluating base" in done.stderr
    verdict = next(line for line in done.stdout.splitlines() if line.startswith("good ("))
    assert f"good: {verdict.split(': ', 1)[1].strip()}:" in done.stderr  # its verdict line, as soon as known
    assert "release:" in done.stdout and "results: " in done.stdout
    log = (config.parent / "out" / "logs" / "gate.log").read_text(encoding="utf-8")
    assert "Generating test split" in log                          # the libraries' lines are kept, in the log
    assert f"log: {config.parent / 'out' / 'logs' / 'gate.log'}" in done.stderr


def test_dash_q_prints_only_the_verdict(config: Path) -> None:
    done = _gate("run", "--config", str(config), "-q", cwd=config.parent)
    assert done.returncode in (0, 1), done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("release: ") and done.stdout.count("\n") == 1


def test_dash_v_brings_the_libraries_back(config: Path) -> None:
    shutil.rmtree(config.parent / "cache", ignore_errors=True)  # score again, so lm-eval runs
    done = _gate("run", "--config", str(config), "-v", cwd=config.parent)
    assert done.returncode in (0, 1), done.stderr
    assert "it/s]" in done.stderr  # lm-eval's progress bars


def test_an_unexpected_library_error_is_one_line_naming_the_log(tmp_path: Path) -> None:
    """A crash inside a library: exit 3, one message naming the log; the traceback is in the log."""
    from gate.cli.terminal import quiet
    from gate.errors import InfraError

    log = tmp_path / "logs" / "gate.log"
    with pytest.raises(InfraError) as err, quiet(log):
        print("chatter from a library")
        raise ValueError("tensor shapes do not match\nmore detail")
    assert err.value.exit_code == 3
    text = err.value.render()
    assert "ValueError: tensor shapes do not match" in text and str(log) in text and "\n" not in text
    written = log.read_text(encoding="utf-8")
    assert "chatter from a library" in written and "Traceback" in written


def test_bad_input_leaves_no_log_behind(tmp_path: Path) -> None:
    """Exit 2 leaves the output folder as it was: a new log and its folders go,
    an earlier run's log is cut back to what it held."""
    from gate.cli.terminal import quiet
    from gate.errors import ConfigError

    out = tmp_path / "out"
    with pytest.raises(ConfigError), quiet(out / "logs" / "gate.log"):
        print("planning chatter")
        raise ConfigError("unknown task", key="tiers")
    assert not out.exists()

    with quiet(out / "logs" / "gate.log"):
        print("a good run")
    kept = (out / "logs" / "gate.log").read_bytes()
    with pytest.raises(ConfigError), quiet(out / "logs" / "gate.log"):
        print("a bad one")
        raise ConfigError("unknown task", key="tiers")
    assert (out / "logs" / "gate.log").read_bytes() == kept


def test_an_infrastructure_failure_keeps_its_log_aside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 3 also leaves the output folder as it was, but the libraries' output,
    which explains it, is kept in the temp folder and named."""
    from gate.cli.terminal import quiet
    from gate.errors import EngineError

    out = tmp_path / "out"
    with pytest.raises(EngineError), quiet(out / "logs" / "gate.log"):
        print("CUDA out of memory (from a library)")
        raise EngineError("the engine died")
    assert not out.exists()
    said = capsys.readouterr().err
    assert "log: the libraries' output of this run is in " in said
    kept = Path(said.split(" is in ")[1].strip())
    assert "CUDA out of memory" in kept.read_text(encoding="utf-8")
    kept.unlink()


def test_a_library_logging_handler_bound_to_the_terminal_writes_to_the_log(tmp_path: Path) -> None:
    """lm-eval's handler keeps the stream it was made with: quiet() points it at
    the log for the run, and back afterwards."""
    import io
    import logging

    from gate.cli.terminal import quiet

    terminal = io.StringIO()
    handler = logging.StreamHandler(terminal)
    lib = logging.getLogger("some_library_under_test")
    lib.addHandler(handler)
    logging.getLogger("another_logger_sharing_it").addHandler(handler)
    lib.propagate = False
    try:
        log = tmp_path / "logs" / "gate.log"
        with quiet(log):
            lib.warning("Custom kwargs can be passed (a library warning)")
        lib.warning("after the run")
    finally:
        lib.removeHandler(handler)
        logging.getLogger("another_logger_sharing_it").removeHandler(handler)
    assert "Custom kwargs" in log.read_text(encoding="utf-8")
    assert "Custom kwargs" not in terminal.getvalue() and "after the run" in terminal.getvalue()


def test_the_last_resort_handler_is_left_alone(tmp_path: Path) -> None:
    """logging.lastResort's stream cannot be set (it is sys.stderr, already the log)."""
    import logging

    from gate.cli.terminal import quiet

    logging.getLogger("yet_another_library").addHandler(logging.lastResort)  # type: ignore[arg-type]
    try:
        with quiet(tmp_path / "logs" / "gate.log"):
            logging.getLogger("yet_another_library").warning("through the last resort")
    finally:
        logging.getLogger("yet_another_library").removeHandler(logging.lastResort)  # type: ignore[arg-type]
    assert "through the last resort" in (tmp_path / "logs" / "gate.log").read_text(encoding="utf-8")


def test_a_terminal_gets_one_live_row_per_model_ending_in_its_verdict(tmp_path: Path) -> None:
    """On a real terminal (a pseudo-terminal here) the display redraws a row per
    model: items scored of planned while it runs, its verdict line once done.
    What is left on the screen at the end is that last frame, no spinner."""
    import os
    import pty
    import re

    config = fake_gate_config(tmp_path)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    child = subprocess.Popen([sys.executable, "-c", "from gate.cli.main import cli; cli()", "run",
                              "--config", str(config)], cwd=tmp_path, stdin=follower, stdout=follower,
                             stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert child.wait(timeout=600) in (0, 1)
    os.close(leader)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    assert re.search(r"base +queued +[0-9,]+ items", screen)
    assert re.search(r"good +round 1: fk_\w+, fk_\w+ \+1 +0 / [0-9,]+ items", screen)
    start = [m.start() for m in re.finditer(r"base +(queued|scoring|scored|round)", screen)][-1]
    final = screen[start:screen.index("log: ", start)]  # the last frame, left on the screen
    assert re.search(r"^base +scored +[0-9,]+ items", final)
    assert re.search(r"\ngood +(PASS|FAIL)[^:]*: .+ +[0-9,]+ items", final)
    assert "gate [" not in final  # the status line is gone
