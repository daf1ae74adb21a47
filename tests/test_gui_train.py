"""The Train step: progress digested off the GUI thread, charts, error messages, and real runs in a child.

The runs train the `tiny_bit` model in a spawned child process. A spawned child starts from a fresh
interpreter, so the fixture's entry in the model table does not reach it: the page passes `setup`, a picklable
callable that registers the same entry in the child first (`register_model` below). The weights cache and the
runs folder travel through the environment, which the child inherits.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

import gui_train_setup
import pytest
from PySide6.QtWidgets import QMessageBox

from app import errors_view
from app.training import ProgressDigest
from bit_engine.progress import Progress

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------------------
# Progress, as the page sees it


def _training(step, total=10, loss=1.0, lr=0.01, top1=None, **kw):
    return Progress(
        "training", step, total, step=step, total_steps=total, train_loss=loss, lr=lr, val_top1=top1, **kw
    )


def test_the_digest_keeps_every_step_and_the_evaluations_but_only_the_newest_report():
    digest = ProgressDigest()
    digest.add(Progress("scanning", 3, 30))
    digest.add(Progress("caching", 10, 24))
    digest.add(Progress("caching", 24, 24))
    for step in (1, 2):
        digest.add(_training(step, loss=2.0 / step))
    digest.add(Progress("evaluating", 0, 6, step=2, total_steps=10))
    digest.add(_training(2, loss=1.0, top1=0.5, val_loss=0.9))
    digest.add(_training(3, loss=0.5, top1=0.5, val_loss=0.9))  # the same accuracy, carried: not a new point
    d = digest.take()
    assert d.latest.step == 3
    assert [s for s, _, _ in d.train_points] == [1, 2, 2, 3]
    assert d.val_points == [(2, 0.9, 0.5)]
    assert d.messages == [
        "Reading the folder…",
        "Reading images…",
        "Training from step 0 of 10…",
        "Step 2: validation accuracy 50.0%.",
    ]
    assert digest.take().latest is None  # taken: the next look starts empty


def test_the_progress_bar_says_the_phase_the_step_the_speed_and_the_time_left():
    from app.pages.train_page import progress_text

    text, value, maximum = progress_text(_training(120, total=500, images_per_s=42.4, eta=185))
    assert text == "Training — step 120 / 500 · 42 images/s · 3m05s left"
    assert (value, maximum) == (120, 500)
    assert progress_text(Progress("downloading", 12_300_000, 98_000_000))[0] == (
        "Downloading weights — 12.3 MB of 98.0 MB"
    )
    assert progress_text(Progress("features", 5, 40))[0] == "Computing features — 5 / 40 images"
    assert progress_text(Progress("starting", 0, 1, message="1 process"))[0].startswith(
        "Starting the training"
    )
    assert progress_text(Progress("scanning"))[2] == 0  # no total yet: a busy bar


def _xs(chart) -> list:
    xs = chart.listDataItems()[0].getData()[0]
    return [] if xs is None else [int(x) for x in xs]


def test_charts_draw_points_only_on_flush_and_a_resumed_run_replaces_the_tail(qtbot):
    from app.widgets.charts import TrainingCharts

    charts = TrainingCharts()
    qtbot.addWidget(charts)
    for step in range(1, 6):
        charts.add_training(step, 1.0 / step, 0.01)
    charts.add_validation(5, 0.3, 0.8)
    assert len(_xs(charts.loss_chart)) == 0  # nothing drawn before the refresh
    charts.flush()
    assert _xs(charts.loss_chart) == [1, 2, 3, 4, 5]
    acc_x, acc_y = charts.accuracy_chart.listDataItems()[0].getData()
    assert list(acc_x) == [5] and list(acc_y) == [80.0]
    assert "80.0% at step 5" in charts.accuracy_chart.accessibleDescription()
    # A resume from the checkpoint at step 3 sends step 4 again: the old steps 4-5 go.
    charts.add_training(4, 0.9, 0.01)
    charts.flush()
    xs, ys = charts.loss_chart.listDataItems()[0].getData()
    assert list(xs) == [1, 2, 3, 4] and ys[-1] == pytest.approx(0.9)
    assert charts.loss_chart.objectName() == "lossChart"
    assert TrainingCharts(prefix="run").accuracy_chart.objectName() == "runAccuracyChart"


# --------------------------------------------------------------------------------------------------------------
# Error messages


def test_errors_say_what_to_do_with_the_buttons_that_help(tiny_bit):
    from bit_engine import weights_cache
    from bit_engine.distributed import DistributedError
    from bit_engine.train import TrainingError

    missing = errors_view.advise(
        weights_cache.HostUnreachableError(f"Could not reach 127.0.0.1:9 to download {tiny_bit} (refused)."),
        resumable=True,
    )
    assert missing.kind == "weights_missing" and missing.model == tiny_bit
    assert missing.actions == (errors_view.DOWNLOAD_WEIGHTS, errors_view.IMPORT_WEIGHTS, errors_view.RESUME)

    disk = OSError(errno.ENOSPC, "No space left on device")
    try:
        raise TrainingError("Could not write the checkpoint.") from disk
    except TrainingError as exc:
        full = errors_view.advise(exc)
    assert full.kind == "disk_full" and "Free some space" in full.text

    oom = errors_view.advise(TrainingError("Out of memory on cuda:0 (micro-batch 1)."), resumable=True)
    assert oom.kind == "out_of_memory" and errors_view.CHANGE_PLAN in oom.actions
    assert "smaller micro-batch" in oom.text

    died = errors_view.advise(DistributedError("Training process 1 of 2 (cpu) was killed (SIGKILL)."))
    assert died.kind == "process_died" and "window and the run are safe" in died.text

    bug = errors_view.advise(ZeroDivisionError("division by zero"))
    assert bug.kind == "bug" and "Traceback" not in bug.text and "log file" in bug.text


def test_the_error_panel_shows_only_the_buttons_of_its_advice(qtbot):
    panel = errors_view.ErrorPanel()
    qtbot.addWidget(panel)
    panel.show()
    advice = errors_view.ErrorAdvice(
        "weights_missing",
        "The pre-trained weights are missing",
        "No weights.",
        ("download_weights", "resume"),
    )
    panel.show_advice(advice)
    assert panel.isVisible() and panel.text.text() == "No weights."
    visible = {a for a, b in panel.buttons.items() if b.isVisible()}
    assert visible == {"download_weights", "resume"}
    with qtbot.waitSignal(panel.actionRequested) as blocker:
        panel.buttons["download_weights"].click()
    assert blocker.args == ["download_weights"]


# --------------------------------------------------------------------------------------------------------------
# The responsiveness probe of bench/gui_responsiveness.py


def _bench_module():
    spec = importlib.util.spec_from_file_location(
        "gui_responsiveness", ROOT / "bench" / "gui_responsiveness.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_the_probe_sees_a_blocked_gui_thread(qtbot):
    bench = _bench_module()
    probe = bench.LatencyProbe()
    probe.start()
    qtbot.wait(100)
    time.sleep(0.08)  # the GUI thread held for 80 ms
    qtbot.wait(100)
    probe.stop()
    stalls = probe.stalls()
    assert stalls.ticks > 5
    assert stalls.longest >= 60 and stalls.over >= 1
    assert bench.summarize([1.0] * 97 + [20.0, 60.0, 70.0]) == bench.Stalls(100, 70.0, 60.0, 2)


# --------------------------------------------------------------------------------------------------------------
# Real runs, in a child process

#: Tiny and quick: the head strategy computes features once, then steps on them; full fine-tunes everything.
FAST = {"batch": 8, "resolution": 32, "workers": 0, "evaluations": 2, "precision": "fp32", "device": "cpu"}

#: Generous: a spawned child imports torch first, and the machine may be busy.
RUN_TIMEOUT_MS = 120_000


def _plan(window, folder, model, **kw):
    """Give the window a scanned folder and a plan, as the Data and Plan steps would."""
    from bit_engine import data
    from bit_engine.config import TrainConfig

    window.state.set_folder(str(folder))
    window.state.set_report(data.scan(folder))
    config = TrainConfig(data_dir=str(folder), model=model, **{**FAST, **kw})
    window.state.set_config(config)
    return config


def test_the_plan_line_names_the_device_in_words(window, color_folder, tiny_bit):
    page = window.pages["train"]
    shown = {}
    for device, devices in (("cpu", None), ("cuda:1", None), ("cuda", "all"), (None, None)):
        window.state.devices = devices
        _plan(window, color_folder, tiny_bit, device=device)
        shown[device] = page.plan_label.text().rsplit(" · ", 1)[1]
    assert shown == {
        "cpu": "on the CPU",
        "cuda:1": "on GPU 1",
        "cuda": "on all GPUs",
        None: "on the best device available",
    }


def _train_page(window, tiny_bit, seconds_per_step: float = 0.0):
    from bit_engine import models

    spec = models.get_spec(tiny_bit)
    page = window.pages["train"]
    if seconds_per_step:
        page.setup = functools.partial(gui_train_setup.register_model_slowly, spec, seconds_per_step)
    else:
        page.setup = functools.partial(gui_train_setup.register_model, spec)
    window.go_to("train")
    return page


def _wait_for_training(qtbot, page, step: int = 1) -> int:
    """Wait until the page shows training at `step` or later; the training child's pid."""

    def training_or_ended() -> bool:
        if page.session is None:
            return True
        return page.bar_text().startswith("Training") and _shown_step(page) >= step

    qtbot.waitUntil(training_or_ended, timeout=RUN_TIMEOUT_MS)
    assert page.session is not None, f"the run ended before step {step}: {page.bar_text()}"
    pids = page.session.pids
    assert len(pids) == 1 and pids[0] != os.getpid()  # never the window's process
    return pids[0]


def _shown_step(page) -> int:
    text = page.bar_text()
    return int(text.split("step ")[1].split(" /")[0]) if "step " in text else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _status(run_dir) -> dict:
    import json

    return json.loads((Path(run_dir) / "status.json").read_text())


def _metric_steps(run_dir) -> list[int]:
    from bit_engine import runs

    return [m.step for m in runs.read_metrics(run_dir)]


@pytest.mark.slow
def test_a_run_trains_in_a_child_with_live_curves_and_is_listed_with_its_accuracy(
    window, qtbot, color_folder, tiny_bit
):
    _plan(window, color_folder, tiny_bit, strategy="head", steps=12)
    page = _train_page(window, tiny_bit, seconds_per_step=0.05)
    shown = []
    page.progressShown.connect(shown.append)
    assert page.start_button.isEnabled() and not page.cancel_button.isEnabled()
    page.start_button.click()
    child = _wait_for_training(qtbot, page)
    assert not page.start_button.isEnabled() and page.cancel_button.isEnabled()
    with qtbot.waitSignal(page.runEnded, timeout=RUN_TIMEOUT_MS):
        pass
    run_dir = window.state.run_dir
    assert run_dir and Path(run_dir, "model.pt").is_file()
    assert not _alive(child)
    # The window refreshed at its own pace: fewer reports shown than steps and features, and never all.
    assert 0 < len(shown) <= 12 + 10
    assert {p.phase for p in shown} >= {"training"}
    assert _xs(page.charts.loss_chart) == list(range(1, 13))  # every step on the curve all the same
    assert len(_xs(page.charts.accuracy_chart)) >= 2
    accuracy = _status(run_dir)
    report = __import__("json").loads(Path(run_dir, "report.json").read_text())
    assert page.bar_text() == f"Done — 12 steps · validation accuracy {report['accuracy']:.1%}"
    assert any("validation accuracy" in line for line in page.log_view.lines())
    assert accuracy["state"] == "done"
    assert page.evaluate_button.isVisible() and window.step_reason("evaluate") is None

    runs_page = window.pages["runs"]
    with qtbot.waitSignal(runs_page.runsLoaded, timeout=10_000):
        window.go_to("runs")
    model = runs_page.model
    assert model.rowCount() == 1
    row = [model.index(0, c).data() for c in range(model.columnCount())]
    assert row[0] == Path(run_dir).name and row[1] == color_folder.name and row[2] == tiny_bit
    assert row[3] == "Head only" and row[4] == "Done" and row[5] == f"{report['accuracy']:.1%}"


@pytest.mark.slow
def test_cancel_then_resume_ends_with_the_steps_of_an_uninterrupted_run(
    window, qtbot, color_folder, tiny_bit
):
    _plan(window, color_folder, tiny_bit, strategy="head", steps=10)
    page = _train_page(window, tiny_bit, seconds_per_step=0.3)
    page.start_button.click()
    child = _wait_for_training(qtbot, page, step=2)
    clicked_at = _shown_step(page)
    started = time.monotonic()
    with qtbot.waitSignal(page.runEnded, timeout=RUN_TIMEOUT_MS):
        page.cancel_button.click()
        assert page.cancel_button.text() == "Cancelling…" and not page.cancel_button.isEnabled()
    # Honoured at once: at most a step or two past the one on screen when Cancel was clicked (each step takes
    # 0.3 s here); the rest of the wait is the child's exit, slow only on a busy machine.
    assert time.monotonic() - started < 30
    assert not _alive(child)
    run_dir = page.run_dir
    status = _status(run_dir)
    assert status["state"] == "cancelled" and clicked_at <= status["step"] <= clicked_at + 2
    assert page.bar_text().startswith(f"Cancelled at step {status['step']} of 10")
    assert page.resume_button.isEnabled() and page.start_button.isEnabled()

    page.setup = functools.partial(gui_train_setup.register_model, page.setup.args[0])
    with qtbot.waitSignal(page.runEnded, timeout=RUN_TIMEOUT_MS):
        page.resume_button.click()
    assert _status(run_dir)["state"] == "done"
    assert _metric_steps(run_dir) == list(range(1, 11))  # each step once, as a run never cancelled
    assert _xs(page.charts.loss_chart) == list(range(1, 11))
    assert page.bar_text().startswith("Done — 10 steps")


@pytest.mark.slow
def test_a_killed_child_leaves_the_window_up_saying_so_and_resume_finishes_the_run(
    window, qtbot, color_folder, tiny_bit
):
    _plan(window, color_folder, tiny_bit, strategy="head", steps=8)
    page = _train_page(window, tiny_bit, seconds_per_step=0.3)
    page.start_button.click()
    child = _wait_for_training(qtbot, page, step=2)
    with qtbot.waitSignal(page.runEnded, timeout=RUN_TIMEOUT_MS):
        os.kill(child, signal.SIGKILL)
    assert window.isVisible()
    panel = page.error_panel
    assert panel.isVisible() and panel.advice.kind == "process_died"
    assert "killed" in panel.text.text() and "Traceback" not in panel.text.text()
    assert panel.buttons[errors_view.RESUME].isVisible()
    assert page.bar_text().startswith("Failed")
    run_dir = page.run_dir
    assert _status(run_dir)["state"] == "failed"

    page.setup = functools.partial(gui_train_setup.register_model, page.setup.args[0])
    with qtbot.waitSignal(page.runEnded, timeout=RUN_TIMEOUT_MS):
        panel.buttons[errors_view.RESUME].click()
    assert not panel.isVisible()
    assert _status(run_dir)["state"] == "done"
    assert _metric_steps(run_dir) == list(range(1, 9))


@pytest.mark.slow
def test_closing_during_training_asks_stops_the_child_and_keeps_the_run_resumable(
    window, qtbot, color_folder, tiny_bit, monkeypatch
):
    _plan(window, color_folder, tiny_bit, strategy="head", steps=10)
    page = _train_page(window, tiny_bit, seconds_per_step=0.3)
    page.start_button.click()
    child = _wait_for_training(qtbot, page, step=1)
    questions = []

    def answer(reply):
        def question(parent, title, text, *args, **kwargs):
            questions.append(text)
            return reply

        return question

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    assert not window.close()
    assert window.isVisible() and page.is_training() and _alive(child)
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    assert window.close()
    assert questions == ["Stop training and close? The run can be resumed later."] * 2
    assert not _alive(child)  # stopped and reaped before the window went
    qtbot.waitUntil(lambda: not page.is_training(), timeout=5_000)  # the page's own bookkeeping
    status = _status(page.run_dir)
    assert status["state"] == "cancelled" and Path(page.run_dir, "checkpoint.pt").is_file()


@pytest.mark.slow
def test_closing_after_cancel_stops_a_hung_child_by_force(window, qtbot, color_folder, tiny_bit, monkeypatch):
    import app.training
    from bit_engine import models

    monkeypatch.setattr(app.training, "CLOSE_GRACE_S", 1.0)  # the window's patience, shortened for the test
    _plan(window, color_folder, tiny_bit, strategy="head", steps=10)
    page = _train_page(window, tiny_bit)
    page.setup = functools.partial(gui_train_setup.register_model_and_hang, models.get_spec(tiny_bit), 3)
    page.start_button.click()
    child = _wait_for_training(qtbot, page, step=3)
    page.cancel_button.click()  # a polite stop, which the stuck step never reaches (forced after 60 s)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    started = time.monotonic()
    assert window.close()
    # Closing does not wait out the Cancel's minute: SIGTERM after its own grace, SIGKILL 5 s later at most.
    assert time.monotonic() - started < 20
    assert not _alive(child)
    qtbot.waitUntil(lambda: not page.is_training(), timeout=5_000)
    status = _status(page.run_dir)
    assert status["state"] == "cancelled" and "by force" in status["message"]


@pytest.mark.slow
def test_missing_weights_offer_import_and_then_start_again(
    window, qtbot, color_folder, tiny_bit, monkeypatch, tmp_path
):
    from bit_engine import weights_cache

    cached = weights_cache.cache_file(tiny_bit)
    kept = tmp_path / "usb-stick" / f"{tiny_bit}.npz"
    kept.parent.mkdir()
    cached.replace(kept)  # not in the cache, and the (unroutable) host cannot be reached
    _plan(window, color_folder, tiny_bit, strategy="head", steps=4)
    page = _train_page(window, tiny_bit)
    with qtbot.waitSignal(page.runEnded, timeout=RUN_TIMEOUT_MS):
        page.start_button.click()
    panel = page.error_panel
    assert panel.isVisible() and panel.advice.kind == "weights_missing"
    assert panel.buttons[errors_view.DOWNLOAD_WEIGHTS].isVisible()
    assert panel.buttons[errors_view.IMPORT_WEIGHTS].isVisible()

    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(kept), ""))
    panel.buttons[errors_view.IMPORT_WEIGHTS].click()
    qtbot.waitUntil(lambda: not panel.isVisible(), timeout=30_000)
    qtbot.waitUntil(lambda: page.start_button.isEnabled(), timeout=10_000)
    assert cached.is_file() and kept.is_file()  # imported as a copy; the user's file stays
    assert page.bar_text() == f"Imported {kept.name}."
    # The run ended before its first step: the engine kept nothing to resume, so the page offers Start.
    assert page.log_view.lines()[-1] == f"Imported {kept.name}. Start the run again."
    assert not page.resume_button.isEnabled()
