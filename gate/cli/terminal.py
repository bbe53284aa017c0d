"""What a person sees while the gate runs: its own stages, not its libraries' chatter.

lm-eval, datasets, transformers, bitsandbytes and tqdm write to the process's
stdout and stderr (prints, logging handlers bound to the streams, progress
bars, C-level writes). `quiet(log_file)` sends all of that to
`out/logs/gate.log` for the duration of a run: at the file-descriptor level
where the streams are real files (a terminal, a CI log), and by swapping
`sys.stdout`/`sys.stderr` where they are not (click's test runner). The
gate's own lines go to a console bound to the terminal as it was before.
The vLLM server and the parity probe's reference already log to files of
their own in `out/logs/`.

`-v/--verbose` leaves the libraries' output on the terminal; `-q/--quiet`
prints only the verdict. Any error still reaches the user: a GateError is
printed by the CLI after the streams are restored, with one line naming the
log that holds the libraries' side of it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console

from gate.errors import GateError, InfraError, InputError

Say = Callable[[str], None]

#: On a terminal, the latest stage is shown on one live status line; in a CI
#: log (not a terminal) each stage is one plain line, at most one every
#: PLAIN_EVERY_S seconds for the frequent ones (rounds).
PLAIN_EVERY_S = 5.0


def verbosity_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """-v/--verbose and -q/--quiet, shared by the commands that run the gate."""
    func = click.option("-q", "--quiet", "quiet_flag", is_flag=True,
                        help="Print only the verdict (libraries' output goes to out/logs/gate.log).")(func)
    return click.option("-v", "--verbose", is_flag=True,
                        help="Show the libraries' own output (lm-eval, datasets, transformers) on the terminal.")(func)


def _fd(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        return None


def terminal_console() -> Console:
    """A console on the terminal's stderr that keeps writing there while the
    process's own stderr is redirected to the log (a duplicate of its descriptor).
    Create it before entering `quiet`."""
    fd = _fd(sys.stderr)
    if fd is None:
        return Console(file=sys.stderr)
    term = Console(file=sys.stderr)  # ask before duplicating: a dup'ed file is no terminal to rich
    stream = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
    return Console(file=stream, force_terminal=term.is_terminal, width=term.width if term.is_terminal else None)


@contextlib.contextmanager
def quiet(log_file: Path, *, enabled: bool = True) -> Iterator[None]:
    """Libraries' output (stdout, stderr, logging, progress bars) goes to `log_file`.

    An unexpected exception (not a GateError) is written to the log with its
    traceback and raised again as an InfraError (exit 3) naming the log.

    A failed run (a GateError, exit 2 or 3, or Ctrl-C) leaves the output
    folder as it was (the CLI's contract): the log is cut back to what it held
    before and the folders made for it are removed when empty. For an
    infrastructure failure or an interruption, this run's part of the log is
    kept in the system's temp folder and named on stderr; for bad input
    (exit 2) the error says all there is."""
    if not enabled:
        yield
        return
    made = [d for d in (log_file.parent, *log_file.parent.parents) if not d.exists()]
    before = log_file.stat().st_size if log_file.is_file() else None
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log = log_file.open("a", encoding="utf-8", buffering=1)
    except OSError:
        # The output folder cannot be written: validation reports that (exit 2),
        # with nothing to hide the libraries' output in until then.
        yield
        return
    saved_env = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # progress bars say nothing a log reader needs
    log.write(f"\n===== gate {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
    saved_streams = sys.stdout, sys.stderr
    saved_fds: list[tuple[int, int]] = []
    kept: Path | None = None
    handler_streams: list[tuple[logging.StreamHandler[Any], Any]] = []
    try:
        for stream in saved_streams:
            fd = _fd(stream)
            if fd is not None and fd not in (f for f, _ in saved_fds):
                stream.flush()
                saved_fds.append((fd, os.dup(fd)))
                os.dup2(log.fileno(), fd)
        sys.stdout = sys.stderr = log
        for handler in dict.fromkeys(_console_handlers()):  # one handler may serve several loggers
            old_stream = handler.stream
            try:
                handler.stream = log  # not setStream: it flushes the old stream, which may be gone
            except AttributeError:  # logging.lastResort: it writes to sys.stderr, already the log
                continue
            handler_streams.append((handler, old_stream))
        try:
            yield
        except (GateError, KeyboardInterrupt) as exc:
            log.close()
            if not isinstance(exc, InputError):
                kept = _keep_aside(log_file, before)
            _undo(log_file, before, made)
            raise
        except Exception as exc:
            traceback.print_exc(file=log)
            raise InfraError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "),
                             fix=f"the traceback and the libraries' output are in {log_file}") from exc
    finally:
        if not log.closed:
            log.flush()
        for handler, stream in reversed(handler_streams):
            handler.stream = stream
        sys.stdout, sys.stderr = saved_streams
        for fd, copy in saved_fds:
            os.dup2(copy, fd)
            os.close(copy)
        log.close()
        if saved_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved_env
        if kept is not None:
            print(f"log: the libraries' output of this run is in {kept}", file=sys.stderr)


def _console_handlers() -> list[logging.StreamHandler[Any]]:
    """Logging handlers that write to a console stream (not to a file of their
    own): a library's handler keeps the stream it was made with, which may be
    the terminal whatever `sys.stderr` is now."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
            and not type(h).__module__.startswith("_pytest")]  # pytest's own capture handlers


def _keep_aside(log_file: Path, size_before: int | None) -> Path | None:
    """This run's part of the log, copied to the temp folder (None if that fails)."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(size_before or 0)
            text = handle.read()
        fd, name = tempfile.mkstemp(prefix="gate-", suffix=".log")
        with os.fdopen(fd, "wb") as out:
            out.write(text)
        return Path(name)
    except OSError:
        return None


def _undo(log_file: Path, size_before: int | None, made: list[Path]) -> None:
    """The log as it was before this run, and no folder this run made for it."""
    with contextlib.suppress(OSError):
        if size_before is None:
            log_file.unlink()
        else:
            os.truncate(log_file, size_before)
        for folder in made:  # deepest first
            folder.rmdir()


class StageLine:
    """The gate's progress lines: printed above one live status line on a
    terminal; plain lines in a log, the frequent ones at most every few seconds."""

    FREQUENT = (": round ",)

    def __init__(self, console: Console, *, show: bool = True) -> None:
        self.console, self.show = console, show
        self.started = time.monotonic()
        self._last_plain = 0.0
        self._status: Any = None

    def __enter__(self) -> StageLine:
        if self.show and self.console.is_terminal:
            self._status = self.console.status("gate: starting", spinner="dots")
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)

    def __call__(self, message: str) -> None:
        if not self.show:
            return
        elapsed = time.monotonic() - self.started
        stamp = f"{int(elapsed // 60):d}:{int(elapsed % 60):02d}"
        frequent = any(marker in message for marker in self.FREQUENT)
        if self._status is not None:
            self._status.update(f"gate [{stamp}]: {message}")
            if frequent:
                return
        elif frequent and time.monotonic() - self._last_plain < PLAIN_EVERY_S:
            return
        self._last_plain = time.monotonic()
        self.console.print(f"[dim]gate {stamp}:[/] {message}", highlight=False, soft_wrap=True)
