"""Progress of a long backtest on stderr, for either engine: each phase (grouping NDJSON
by patient, replaying ED visits, Spark's stages) with its tasks done, percent, elapsed
time and an estimate of what is left.

On a terminal one line is redrawn; otherwise (a log file, CI) a line is written at most
every ``every`` seconds and when a phase ends, so a long run shows it is moving.
"""

from __future__ import annotations

import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """``start(label, total)`` for each phase, then ``advance(n)`` as tasks end."""

    def __init__(self, stream: TextIO, redraw: bool, every: float = 5.0) -> None:
        self.stream = stream
        self.redraw = redraw  # a terminal: one line, redrawn
        self.every = every
        self.label = ""
        self.total = 0
        self.done = 0
        self.started = self.shown = time.monotonic()

    def start(self, label: str, total: int) -> None:
        self.finish()
        self.label, self.total, self.done = label, total, 0
        self.started = time.monotonic()
        self.shown = 0.0
        self._show()

    def advance(self, done: int = 1) -> None:
        self.done += done
        now = time.monotonic()
        if self.redraw or self.done >= self.total or now - self.shown >= self.every:
            self._show()

    def finish(self) -> None:
        """End the current phase's line (on a terminal)."""
        if self.label and self.redraw:
            self.stream.write("\n")
            self.stream.flush()
        self.label = ""

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        percent = 100 * self.done // self.total if self.total else 100
        text = f"{self.label}: {self.done}/{self.total} tasks ({percent}%), {_clock(elapsed)}"
        if 0 < self.done < self.total:
            text += f", about {_clock(elapsed * (self.total - self.done) / self.done)} left"
        return text

    def _show(self) -> None:
        self.shown = time.monotonic()
        if self.redraw:
            self.stream.write("\r\x1b[2K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
