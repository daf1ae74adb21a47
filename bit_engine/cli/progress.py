"""A one-line text progress bar for the terminal (redrawn in place; plain lines when not a TTY)."""

from __future__ import annotations

import sys
import time

from bit_engine.units import format_bytes, format_duration

__all__ = ["TextProgress", "format_bytes", "format_duration"]


class TextProgress:
    """Draws `[#####.....]  42%  text` on one line, at most every `interval` seconds.

    When the stream is not a terminal (a log file, a pipe, CI), nothing can be redrawn: each update is a
    line of its own, without carriage returns, at most every `plain_interval` seconds (and the first and
    the last of each bar), so that a log shows the work going on without a line per step.
    """

    def __init__(self, stream=None, width: int = 30, interval: float = 0.2, plain_interval: float = 3.0):
        self.stream = stream or sys.stderr
        self.width = width
        self.interval = interval
        self.plain_interval = plain_interval
        self._last = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._drawn = False

    def update(self, fraction: float, text: str = "", force: bool = False) -> None:
        now = time.monotonic()
        fraction = min(max(fraction, 0.0), 1.0)
        if self._tty:
            if not force and now - self._last < self.interval:
                return
        elif not (force or not self._drawn or fraction >= 1.0 or now - self._last >= self.plain_interval):
            return
        self._last = now
        filled = round(fraction * self.width)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:5.1f}%  {text}"
        if self._tty:
            self.stream.write("\r" + line[:160].ljust(100))
        else:
            self.stream.write(line + "\n")
        self._drawn = True
        self.stream.flush()

    def close(self) -> None:
        if self._tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = False
