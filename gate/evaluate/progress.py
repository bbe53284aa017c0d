"""Where each model's scoring stands: the events behind the live progress display.

The evaluate stage reports, per model, how many items it has scored of how
many it planned, in which round, and when it is done, the verdict line it
ends with. The terminal (gate.cli.terminal) turns these into one row per
model with its rate and time left; a test can collect them as they come.
Items are counted per round (a round is one batch of requests to the
engine); the base and runs without early stopping are one batch each, so
their rows move from 0 to all at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

State = Literal["queued", "scoring", "done", "cached", "skipped"]


@dataclass(frozen=True)
class ModelProgress:
    """One model's scoring at one moment."""

    model: str
    state: State
    #: items scored so far in this run (cached tasks not counted)
    done: int = 0
    #: items this run plans to score for the model: every item of its missing
    #: tasks (early stopping may finish with fewer)
    planned: int = 0
    #: tasks still being scored (their names, for the display)
    tasks: tuple[str, ...] = ()
    #: the round being scored, None outside early stopping
    round: int | None = None
    #: when state is "done" or "cached", the candidate's verdict in one line
    #: ("FAIL: general tier fails (toy_text)"); None for the base
    verdict: str | None = None


Track = Callable[[ModelProgress], None]


def no_track(_event: ModelProgress) -> None:
    """The default: nobody is watching."""
