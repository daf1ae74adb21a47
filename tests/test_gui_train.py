"""The Train step: progress digested off the GUI thread, charts, error messages, and real runs in a child.

The runs train the `tiny_bit` model in a spawned child process. A spawned child starts from a fresh
interpreter, so the fixture's entry in the model table does not reach it: the page passes `setup`, a picklable
callable that registers the same entry in the child first (`register_model` below). The weights cache and the
runs folder travel through the environment, which the child inherits.
"""

from __future__ import annotations

import errno
import importlib.util
import sys
import time
from pathlib import Path

import pytest

from app import errors_view
from app.training import ProgressDigest
from bit_engine.progress import Progress

ROOT = Path(__file__).resolve().parents[1]


def register_model(spec) -> None:
    """Run first in the training child: the test's tiny model in the child's model table."""
    from bit_engine import models

    models.KNOWN_MODELS[spec.name] = spec


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
    from bit_engine import weights
    from bit_engine.distributed import DistributedError
    from bit_engine.train import TrainingError

    missing = errors_view.advise(
        weights.HostUnreachableError(f"Could not reach 127.0.0.1:9 to download {tiny_bit} (refused)."),
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
