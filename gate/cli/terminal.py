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
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from gate.errors import GateError, InfraError, InputError
from gate.evaluate.progress import ModelProgress

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
    """What a person watches during a run. On a terminal: one live display, a
    row per model (its tasks, items scored of planned, round, items per second,
    time left; its verdict line once done) above a status line with the latest
    stage; stages that matter stay printed above it. In a log (CI): plain lines,
    the frequent ones (rounds) at most every few seconds, and each model's
    verdict line when it is known."""

    FREQUENT = (": round ",)

    def __init__(self, console: Console, *, show: bool = True) -> None:
        self.console, self.show = console, show
        self.started = time.monotonic()
        self._last_plain = 0.0
        self._live: Live | None = None
        self.board = ModelBoard()
        self.status = "starting"

    def __enter__(self) -> StageLine:
        if self.show and self.console.is_terminal:
            self._live = Live(self, console=self.console, refresh_per_second=4, transient=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self.status = ""
            self._live.__exit__(None, None, None)

    def __rich__(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self.board.rows:
            parts.append(self.board.render(time.monotonic()))
        if self.status:
            line = Table.grid(padding=(0, 1))
            line.add_row(Spinner("dots", style="green"), Text(f"gate [{self._stamp()}]: {self.status}"))
            parts.append(line)
        return Group(*parts)

    def _stamp(self) -> str:
        elapsed = time.monotonic() - self.started
        return f"{int(elapsed // 60):d}:{int(elapsed % 60):02d}"

    def __call__(self, message: str) -> None:
        if not self.show:
            return
        frequent = any(marker in message for marker in self.FREQUENT)
        if self._live is not None:
            self.status = message
            if frequent:
                return
        elif frequent and time.monotonic() - self._last_plain < PLAIN_EVERY_S:
            return
        self._last_plain = time.monotonic()
        self.console.print(f"[dim]gate {self._stamp()}:[/] {message}", highlight=False, soft_wrap=True)

    def model(self, event: ModelProgress) -> None:
        """A model's scoring moved on (gate.evaluate.progress)."""
        if not self.show:
            return
        self.board.update(event, time.monotonic())
        if self._live is not None:
            self._live.refresh()  # a round can be shorter than the display's refresh period
        elif event.verdict is not None:
            self.console.print(f"[dim]gate {self._stamp()}:[/] {escape(event.model)}: "
                               f"{_verdict_markup(event.verdict)}", highlight=False, soft_wrap=True)


class ModelBoard:
    """The rows of the live display: each model's latest event, and when its
    scoring started (for the rate and the time left)."""

    #: the widest the tasks / verdict column gets
    TEXT_WIDTH = 80

    def __init__(self) -> None:
        self.rows: dict[str, ModelProgress] = {}
        self.since: dict[str, float] = {}
        self.ended: dict[str, float] = {}

    def update(self, event: ModelProgress, now: float) -> None:
        if event.state == "scoring":
            self.since.setdefault(event.model, now)
        elif event.state == "done" and event.model in self.since:
            self.ended.setdefault(event.model, now)
        self.rows[event.model] = event

    def render(self, now: float) -> Table:
        table = Table.grid(padding=(0, 2))
        for i in range(6):  # model, tasks or verdict, items, rate, time left, time taken
            # one line per model: a long verdict line is cut (the tables below hold it whole)
            table.add_column(justify="right" if i in (2, 3, 4) else "left", no_wrap=True, overflow="ellipsis",
                             max_width=self.TEXT_WIDTH if i == 1 else None)
        for name, row in self.rows.items():
            table.add_row(*self._cells(name, row, now))
        return table

    def _cells(self, name: str, row: ModelProgress, now: float) -> list[RenderableType]:
        who = Text(name, style="bold")
        if row.state == "queued":
            return [who, Text("queued", style="dim"), Text(f"{row.planned:,} items", style="dim"), "", "", ""]
        if row.state == "skipped":
            return [who, Text("not scored (sweep.stop_after_fail)", style="dim"), "", "", "", ""]
        if row.state in ("done", "cached"):
            took = self.ended.get(name, now) - self.since[name] if name in self.since else None
            how = "cached" if row.state == "cached" else f"{row.done:,} items"
            when = "" if took is None else _clock(took)
            what = (Text.from_markup(_verdict_markup(row.verdict)) if row.verdict
                    else Text("scored" if row.state == "done" else "known", style="green"))
            return [who, what, Text(how, style="dim"), Text(when, style="dim"), "", ""]
        took = now - self.since.get(name, now)
        rate = row.done / took if row.done and took > 0 else None
        tasks = ", ".join(row.tasks[:2]) + (f" +{len(row.tasks) - 2}" if len(row.tasks) > 2 else "")
        where = f"round {row.round}: {tasks}" if row.round is not None else tasks
        eta = ""
        if rate:
            eta = f"{'≤ ' if row.round is not None else ''}{_clock((row.planned - row.done) / rate)} left"
        return [who, Text(where), f"{row.done:,} / {row.planned:,} items",
                f"{rate:,.1f} items/s" if rate else "", eta, Text(_clock(took), style="dim")]


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60:d}:{seconds % 60:02d}"


def _verdict_markup(line: str) -> str:
    """"FAIL: general tier fails..." with the verdict word coloured."""
    word, _, rest = line.partition(":")
    style = {"PASS": "bold green", "FAIL": "bold red"}.get(word.split(" ")[0], "bold")
    return f"[{style}]{escape(word)}[/]" + (f":{escape(rest)}" if rest else "")
