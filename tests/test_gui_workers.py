"""Worker: an engine call on a QThread, reported back by signals on the GUI thread, in a fixed order."""

from __future__ import annotations

import threading

import pytest

from app.workers import Worker, user_message
from bit_engine.errors import BitStudioError
from bit_engine.progress import OperationCancelled, Progress


def _order(qtbot, worker, outcome):
    with qtbot.waitSignals([outcome, worker.done], order="strict", timeout=10_000):
        worker.start()


def test_succeeded_then_done_with_the_last_progress(qtbot):
    def fn(on_progress, cancel):
        for i in range(1, 1001):
            on_progress(Progress("scanning", i, 1000))
        return 42

    worker = Worker(fn, name="count")
    reports, results = [], []
    worker.progress.connect(reports.append)
    worker.succeeded.connect(results.append)
    _order(qtbot, worker, worker.succeeded)
    assert results == [42]
    # Sampled at a human rate, never one signal per call, and the last report always arrives.
    assert 1 <= len(reports) < 100
    assert reports[-1].done == 1000
    assert worker.wait(1000) and not worker.is_running()


def test_failed_carries_the_exception_and_logs_bugs(qtbot, tmp_path):
    import logging

    logger = logging.getLogger("bit_studio")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        worker = Worker(lambda on_progress, cancel: 1 / 0, name="bug")
        errors = []
        worker.failed.connect(errors.append)
        _order(qtbot, worker, worker.failed)
    finally:
        logger.removeHandler(handler)
    assert isinstance(errors[0], ZeroDivisionError)
    assert records and records[0].exc_info[0] is ZeroDivisionError
    message = user_message(errors[0])
    assert "ZeroDivisionError" in message and "bit-studio.log" in message

    def user_error(on_progress, cancel):
        raise BitStudioError("The folder is empty. Put one sub-folder per class in it.")

    worker = Worker(user_error, name="user error")
    errors.clear()
    worker.failed.connect(errors.append)
    _order(qtbot, worker, worker.failed)
    assert user_message(errors[0]) == "The folder is empty. Put one sub-folder per class in it."


def test_cancel_stops_the_call_and_reports_cancelled(qtbot):
    started = threading.Event()

    def fn(on_progress, cancel):
        started.set()
        while not cancel.is_set():
            cancel.wait(0.01)
        raise OperationCancelled()

    worker = Worker(fn, name="cancellable")
    outcomes = []
    worker.succeeded.connect(lambda _v: outcomes.append("succeeded"))
    worker.failed.connect(lambda _e: outcomes.append("failed"))
    worker.cancelled.connect(lambda: outcomes.append("cancelled"))
    with qtbot.waitSignals([worker.cancelled, worker.done], order="strict", timeout=10_000):
        worker.start()
        assert started.wait(5)
        assert worker.is_running()
        worker.cancel()
    assert outcomes == ["cancelled"]
    assert worker.wait(1000) and not worker.is_running()


def test_a_worker_runs_once(qtbot):
    worker = Worker(lambda on_progress, cancel: None)
    with qtbot.waitSignal(worker.done, timeout=10_000):
        worker.start()
    with pytest.raises(RuntimeError):
        worker.start()


def test_a_group_lets_finished_workers_go_and_stops_the_rest_on_shutdown(qtbot):
    from app.workers import WorkerGroup

    group = WorkerGroup()
    quick = Worker(lambda on_progress, cancel: 1, name="quick")
    with qtbot.waitSignal(quick.done, timeout=10_000):
        group.start(quick)
    qtbot.waitUntil(lambda: len(group) == 0, timeout=2_000)  # let go once done

    started = threading.Event()

    def until_cancelled(on_progress, cancel):
        started.set()
        while not cancel.wait(0.01):
            pass
        raise OperationCancelled("stopped")

    slow = Worker(until_cancelled, name="slow")
    cancelled = []
    slow.cancelled.connect(lambda: cancelled.append(True))
    group.start(slow)
    assert started.wait(5) and len(group) == 1
    group.shutdown(ms=5_000)
    assert slow.wait(0)  # shutdown waited for the thread to end
    qtbot.waitUntil(lambda: cancelled == [True] and len(group) == 0, timeout=2_000)
