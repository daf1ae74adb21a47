"""Long engine calls off the GUI thread: `Worker` runs one call on a QThread and reports back by signals.

The engine speaks plain Python (a progress callback and a cancel flag, see `bit_engine.progress`); this module
adapts that to Qt. The call runs on a thread of its own; every signal is emitted on the GUI thread, after the
thread has ended for the final ones, so slots may touch widgets and a page may delete the worker at once.
Progress is sampled by a timer at a human rate (the newest report wins) instead of being queued per call:
an engine that reports every file or every step cannot flood the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal

log = logging.getLogger("bit_studio")

#: Milliseconds between two progress signals at most (about ten a second).
PROGRESS_INTERVAL_MS = 100

# Workers whose thread is running are kept alive here, so a page that drops its reference early cannot
# make Python delete a QThread that is still running.
_RUNNING: set[Worker] = set()

_NO_PROGRESS = object()


class _Thread(QThread):
    """Runs the call and remembers how it ended; the Worker reads the outcome once the thread finished."""

    def __init__(
        self, fn: Callable[..., Any], on_progress: Callable[[object], None], cancel: threading.Event
    ):
        super().__init__()
        self._fn = fn
        self._on_progress = on_progress
        self._cancel = cancel
        self.outcome = "failed"
        self.value: object = None

    def run(self) -> None:
        # Imported here: bit_engine.progress is light, but the GUI thread should not pay even that at start-up.
        from bit_engine.progress import OperationCancelled

        try:
            self.value = self._fn(self._on_progress, self._cancel)
            self.outcome = "succeeded"
        except OperationCancelled as exc:
            self.outcome, self.value = "cancelled", exc
        except BaseException as exc:  # everything reaches the GUI as a signal, nothing dies silently
            self.outcome, self.value = "failed", exc


class Worker(QObject):
    """Runs `fn(on_progress, cancel)` on a QThread of its own; results come back as signals, on the GUI thread.

    `fn` receives `on_progress` (call it with anything, typically a `bit_engine.progress.Progress`; the newest
    one is delivered at most ~10 times a second, and the last one always) and `cancel` (a `threading.Event`).

    Signals:
        progress(object): the newest progress report.
        succeeded(object): fn's return value.
        failed(object): the exception fn raised (a BitStudioError carries a message for the user; anything
            else is a bug: it is logged with its traceback to the log file, and `user_message` gives the
            user a short sentence).
        cancelled(): fn raised bit_engine.progress.OperationCancelled.
        done(): always emitted last, after exactly one of the three above.
    """

    progress = Signal(object)
    succeeded = Signal(object)
    failed = Signal(object)
    cancelled = Signal()
    done = Signal()

    def __init__(self, fn: Callable[..., Any], parent: QObject | None = None, name: str = ""):
        super().__init__(parent)
        self.name = name or getattr(fn, "__name__", "worker")
        self._fn = fn
        self._cancel = threading.Event()
        self._latest: object = _NO_PROGRESS  # written by the worker thread, read by the timer
        self._thread: _Thread | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(PROGRESS_INTERVAL_MS)
        self._timer.timeout.connect(self._on_tick)

    def start(self) -> None:
        """Start the call. A Worker runs once."""
        if self._thread is not None:
            raise RuntimeError(f"Worker {self.name!r} was already started.")
        self._thread = _Thread(self._fn, self._store_progress, self._cancel)
        self._thread.setObjectName(self.name)
        # Queued to this object's (GUI) thread: the slot runs after the worker thread's run() returned.
        self._thread.finished.connect(self._on_finished)
        _RUNNING.add(self)
        self._timer.start()
        self._thread.start()

    def cancel(self) -> None:
        """Ask the call to stop; the engine stops at its next check and `cancelled` follows."""
        self._cancel.set()

    def is_running(self) -> bool:
        return self._thread is not None and self in _RUNNING

    def wait(self, ms: int = 10000) -> bool:
        """Block until the thread ended (on close and in tests); True when it has (or never started).

        The final signals are delivered by the event loop afterwards; `wait` itself does not emit them.
        """
        if self._thread is None:
            return True
        return self._thread.wait(ms)

    def _store_progress(self, report: object) -> None:
        # Called on the worker thread: one reference assignment, no Qt call.
        self._latest = report

    def _on_tick(self) -> None:
        report, self._latest = self._latest, _NO_PROGRESS
        if report is not _NO_PROGRESS:
            self.progress.emit(report)

    def _on_finished(self) -> None:
        thread = self._thread
        assert thread is not None
        thread.wait()  # run() has returned; this makes the end of the thread itself certain
        self._timer.stop()
        self._on_tick()  # the last report always arrives, before the outcome
        _RUNNING.discard(self)
        if thread.outcome == "succeeded":
            self.succeeded.emit(thread.value)
        elif thread.outcome == "cancelled":
            self.cancelled.emit()
        else:
            exc = thread.value
            if not _is_user_error(exc):
                log.error("%s failed", self.name, exc_info=(type(exc), exc, exc.__traceback__))
            self.failed.emit(exc)
        thread.value = None  # no reference cycle through the traceback
        self.done.emit()


class WorkerGroup:
    """The workers one page has started: each let go when it is done, all stopped when the page shuts down."""

    def __init__(self):
        self._workers: set[Worker] = set()

    def __len__(self) -> int:
        return len(self._workers)

    def track(self, worker: Worker) -> Worker:
        """Keep `worker` until its `done` (started or not); returns it."""
        self._workers.add(worker)
        worker.done.connect(lambda: self._forget(worker))
        return worker

    def start(self, worker: Worker) -> Worker:
        """Track `worker` and start it; returns it."""
        self.track(worker).start()
        return worker

    def _forget(self, worker: Worker) -> None:
        self._workers.discard(worker)
        worker.deleteLater()

    def shutdown(self, ms: int = 60_000) -> None:
        """Cancel every worker, then wait for each thread to end (at most `ms` each)."""
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        for worker in workers:
            worker.wait(ms)


def _is_user_error(exc: object) -> bool:
    from bit_engine.errors import BitStudioError

    return isinstance(exc, BitStudioError)


def user_message(exc: BaseException) -> str:
    """What to show the user for an exception from a Worker's `failed` signal.

    A BitStudioError is the message itself. Anything else is a bug: a short sentence that names it and
    points at the log file, where Worker wrote the traceback.
    """
    if _is_user_error(exc):
        return str(exc)
    from app import settings

    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return (
        f"Something went wrong inside BiT Studio ({detail}). This is a bug; the details are in "
        f"{settings.log_file()}."
    )
