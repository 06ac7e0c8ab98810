"""A progress line for long fits: a redrawn bar on a terminal, plain periodic lines elsewhere (logs, CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update(step, value)`` after each step; ``close()`` at the end. Silent for fits under ``delay`` s.

    On a terminal the bar is redrawn at most ``redraw_seconds`` apart; elsewhere one plain line is
    written per ``line_fraction`` of the steps, so a log file gets about ten lines per fit.
    """

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        delay: float = 1.0,
        redraw_seconds: float = 0.2,
        line_fraction: float = 0.1,
    ) -> None:
        self.total, self.label = total, label
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.delay, self.redraw_seconds = delay, redraw_seconds
        self.line_every = max(1, round(total * line_fraction))
        self.started = time.perf_counter()
        self.last_draw = 0.0
        self.next_line = self.line_every
        self.drawn = False
        self.value: float | None = None  # the latest held-out estimate, shown until the next one

    def _text(self, step: int, value: float | None) -> str:
        elapsed = time.perf_counter() - self.started
        remaining = elapsed / step * (self.total - step) if step else 0.0
        shown = "" if value is None else f"  held-out {value:.3f} nats"
        return (
            f"{self.label}: step {step}/{self.total}{shown}  {elapsed:.0f}s elapsed, ~{remaining:.0f}s left"
        )

    def update(self, step: int, value: float | None = None) -> None:
        self.value = value if value is not None else self.value
        value = self.value
        now = time.perf_counter()
        if now - self.started < self.delay:
            return
        if self.interactive:
            if now - self.last_draw >= self.redraw_seconds or step == self.total:
                filled = int(20 * step / self.total)
                bar = "#" * filled + "-" * (20 - filled)
                self.stream.write(f"\r[{bar}] {self._text(step, value)}\033[K")
                self.stream.flush()
                self.last_draw, self.drawn = now, True
        elif step >= self.next_line:
            self.stream.write(self._text(step, value) + "\n")
            self.stream.flush()
            self.next_line = (step // self.line_every + 1) * self.line_every

    def close(self) -> None:
        if self.interactive and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
