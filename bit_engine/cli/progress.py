"""A one-line text progress bar for the terminal (redrawn in place; plain lines when not a TTY)."""

from __future__ import annotations

import sys
import threading
import time

from bit_engine.units import format_bytes, format_duration

__all__ = ["TextProgress", "format_bytes", "format_duration"]


class TextProgress:
    """Draws `[#####.....]  42%  text` on one line, at most every `interval` seconds.

    When the stream is not a terminal (a log file, a pipe, CI), nothing can be redrawn: each update is a
    line of its own, without carriage returns, at most every `plain_interval` seconds (and the first and
    the last of each bar), so that a log shows the work going on without a line per step. With `heartbeat`,
    a log also gets a line when no update came for that many seconds (the latest update again, with the time
    since it and since the bar began), so a long silent stretch (one slow step) still shows that work goes
    on; the heartbeat runs on a thread of its own from the first line to `close()`.

    Args:
        stream: where to write (default: standard error).
        width: characters of the bar.
        interval: seconds between redraws on a terminal.
        plain_interval: seconds between lines when not a terminal.
        heartbeat: seconds of silence before a heartbeat line (not a terminal only); None: no heartbeat.
    """

    def __init__(
        self,
        stream=None,
        width: int = 30,
        interval: float = 0.2,
        plain_interval: float = 3.0,
        heartbeat: float | None = None,
    ):
        self.stream = stream or sys.stderr
        self.width = width
        self.interval = interval
        self.plain_interval = plain_interval
        self.heartbeat = heartbeat
        self._last = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._drawn = False
        # Lines are written whole under this lock: the heartbeat thread never splits one.
        self._lock = threading.Lock()
        self._line = ""  # the latest update's line, written or not (a heartbeat repeats it)
        self._began = 0.0  # when the first line of this bar was written
        self._written = 0.0  # when the last line (update or heartbeat) was written
        self._updated = 0.0  # when the last update (not a heartbeat) arrived
        self._stop: threading.Event | None = None
        self._beat: threading.Thread | None = None

    def update(self, fraction: float, text: str = "", force: bool = False) -> None:
        now = time.monotonic()
        fraction = min(max(fraction, 0.0), 1.0)
        filled = round(fraction * self.width)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:5.1f}%  {text}"
        with self._lock:
            self._updated, self._line = now, line  # what a heartbeat repeats, shown or not
            if self._tty:
                if not force and now - self._last < self.interval:
                    return
            elif not (force or not self._drawn or fraction >= 1.0 or now - self._last >= self.plain_interval):
                return
            self._last = now
            if self._tty:
                self.stream.write("\r" + line[:160].ljust(100))
            else:
                self.stream.write(line + "\n")
                if not self._drawn:
                    self._began = now
                self._written = now
            self._drawn = True
            self.stream.flush()
        if not self._tty and self.heartbeat is not None and self._beat is None:
            self._start_heartbeat()

    def close(self) -> None:
        self._stop_heartbeat()
        with self._lock:
            if self._tty and self._drawn:
                self.stream.write("\n")
                self.stream.flush()
            self._drawn = False

    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()
        self._beat = threading.Thread(
            target=self._run_heartbeat, args=(self._stop,), name="bit-studio-heartbeat"
        )
        self._beat.daemon = True  # never keeps the process alive; close() stops and joins it
        self._beat.start()

    def _stop_heartbeat(self) -> None:
        if self._beat is None:
            return
        self._stop.set()
        if self._beat is not threading.current_thread():
            self._beat.join()
        self._beat = self._stop = None

    def _run_heartbeat(self, stop: threading.Event) -> None:
        beat = self.heartbeat
        while not stop.wait(min(beat, 1.0) / 4):
            with self._lock:
                now = time.monotonic()
                if stop.is_set() or not self._drawn or now - self._written < beat:
                    continue
                quiet = format_duration(now - self._updated)
                total = format_duration(now - self._began)
                self.stream.write(
                    f"{self._line}  (still working: {quiet} since this update, {total} in all)\n"
                )
                self.stream.flush()
                self._written = now
