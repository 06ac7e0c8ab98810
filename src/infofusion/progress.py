"""Progress of every long step outside the MI library (which keeps its own, ``mi/progress.py``, because
it imports nothing outside itself): text encoding, feature extraction, training batches, sweeps, ablations.

On a terminal a bar is redrawn in place with counts, elapsed time and an ETA; anywhere else (a log file,
CI, a pipe) a plain line is written at most every ``line_seconds``, so a long step is never silent and a
short one prints nothing. Everything goes to stderr: stdout stays free for tables and ``--json``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

Item = TypeVar("Item")
BAR_WIDTH = 24
QUIET_SECONDS = 2.0  # a step shorter than this shows nothing
LINE_SECONDS = 15.0  # off a terminal, at most one line this often


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


class StepProgress:
    """``advance(n)`` after each piece of work; ``close()`` at the end (or use it as a context manager).

    Nothing is shown during the first ``delay`` seconds (``QUIET_SECONDS``): a step that quick needs none.
    """

    def __init__(
        self,
        total: int | None,
        label: str,
        unit: str = "items",
        stream: TextIO | None = None,
        delay: float | None = None,
        line_seconds: float | None = None,
        redraw_seconds: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.on_terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.delay = QUIET_SECONDS if delay is None else delay
        self.line_seconds = LINE_SECONDS if line_seconds is None else line_seconds
        self.redraw_seconds = redraw_seconds
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.last_shown: float | None = None
        self.bar_drawn = False

    def status(self) -> str:
        elapsed = self.clock() - self.started
        if not self.total:
            return f"{self.label}: {self.done} {self.unit}, {format_seconds(elapsed)} elapsed"
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        eta = format_seconds(left) if self.done else "?"
        return (
            f"{self.label}: {self.done}/{self.total} {self.unit} ({self.done / self.total:.0%}), "
            f"{format_seconds(elapsed)} elapsed, ~{eta} left"
        )

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        now = self.clock()
        # Off a terminal the first line waits a whole period too: a log gets no lines for short steps.
        quiet = self.delay if self.on_terminal else max(self.delay, self.line_seconds)
        if now - self.started < quiet:
            return
        gap = self.redraw_seconds if self.on_terminal else self.line_seconds
        finished = self.total is not None and self.done >= self.total
        if self.last_shown is not None and now - self.last_shown < gap and not finished:
            return
        if self.on_terminal:
            filled = int(BAR_WIDTH * self.done / self.total) if self.total else 0
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self.stream.write(f"\r[{bar}] {self.status()}\033[K")
            self.bar_drawn = True
        elif not finished:
            self.stream.write(self.status() + "\n")
        self.stream.flush()
        self.last_shown = now

    def close(self) -> None:
        if self.on_terminal and self.bar_drawn:
            self.stream.write("\n")
        elif not self.on_terminal and self.last_shown is not None:
            # A step that was reported while running also says when it ended.
            took = format_seconds(self.clock() - self.started)
            self.stream.write(f"{self.label}: {self.done} {self.unit} done in {took}\n")
        self.stream.flush()

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def track(
    items: Iterable[Item], label: str, total: int | None = None, unit: str = "items", **options
) -> Iterator[Item]:
    """Each item of ``items``, with a :class:`StepProgress` advanced after each one."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with StepProgress(total, label, unit, **options) as progress:
        for item in items:
            yield item
            progress.advance()
