"""Comparing runs in the Runs step: select runs of one folder, see their curves overlaid, their figures side by
side and what pre-training bought in words; one click trains the from-scratch baseline in the Train step.

The runs are written as the engine writes them (tests/gui_runs.py), so no training is needed, except in the
one test where the baseline really trains (EfficientNet-Lite0 at 32 px, in a child process, seconds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from gui_runs import make_run
from PySide6.QtCore import QItemSelectionModel
from PySide6.QtWidgets import QMessageBox

from bit_engine import runs


def _transfer_top1(step: int) -> float:
    return 0.62 + 0.33 * (1 - math.exp(-step / 5))


def _scratch_top1(step: int) -> float:
    return 0.30 + 0.015 * step


@pytest.fixture
def flower_runs(tmp_path):
    flowers, birds = tmp_path / "flowers", tmp_path / "birds"
    common = {"total": 20, "batch": 64, "val_images": 60, "seconds_per_step": 0.5}
    return {
        "transfer": make_run(
            "run-transfer", flowers, "done", 20, accuracy=0.95, top1=_transfer_top1, age_s=300, **common
        ),
        "scratch": make_run(
            "run-scratch",
            flowers,
            "done",
            20,
            accuracy=0.60,
            strategy="scratch",
            top1=_scratch_top1,
            age_s=200,
            **common,
        ),
        "birds": make_run("run-birds", birds, "done", 20, accuracy=0.7, age_s=100),
    }


def _open_runs(window, qtbot):
    page = window.pages["runs"]
    with qtbot.waitSignal(page.runsLoaded, timeout=10_000):
        window.go_to("runs")
    return page


def _select(page, names: list[str]) -> None:
    """Select the runs named `names` in the list, as Ctrl+click would."""
    selection = page.table.selectionModel()
    selection.clearSelection()
    proxy = page.table.model()
    for row in range(proxy.rowCount()):
        if proxy.index(row, 0).data() in names:
            selection.select(
                proxy.index(row, 0),
                QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows,
            )


def _compare(page, qtbot, names: list[str]):
    _select(page, names)
    view = page.compare_view
    with qtbot.waitSignal(view.compared, timeout=10_000):
        page.compare_button.click()
    return view


def _cells(view) -> list[list[str]]:
    model = view.table.model()
    return [[model.index(r, c).data() for c in range(model.columnCount())] for r in range(model.rowCount())]


def test_compare_is_offered_for_runs_of_one_folder_and_says_why_not_for_others(window, qtbot, flower_runs):
    page = _open_runs(window, qtbot)
    assert page.compare_button.objectName() == "compareButton"
    assert not page.compare_button.isEnabled()
    assert "Select runs of the same photos" in page.compare_hint.text()

    _select(page, ["run-transfer", "run-scratch"])
    assert page.compare_button.isEnabled()
    assert page.compare_hint.text() == "2 runs of flowers selected."

    _select(page, ["run-transfer", "run-scratch", "run-birds"])
    assert not page.compare_button.isEnabled()
    why = page.compare_button.toolTip()
    assert why.startswith("These runs trained on different folders (birds, flowers)")
    assert "only runs of the same folder can be compared" in why
    assert page.compare_hint.text() == why and page.compare_hint.isVisible()
    page.compare_button.click()  # disabled: nothing happens
    assert page.stack.currentWidget() is page.browse


def test_the_comparison_shows_curves_figures_and_what_transfer_bought_in_words(window, qtbot, flower_runs):
    page = _open_runs(window, qtbot)
    view = _compare(page, qtbot, ["run-transfer", "run-scratch"])
    assert page.stack.currentWidget() is view and view.isVisible()
    assert "2 runs of <b>flowers</b>" in view.subtitle.text()
    assert _cells(view) == [
        # The list shows the newest first: the scratch run started after the transfer run.
        ["run-scratch", "BiT-M-R50x1", "From scratch", "20", "64", "128×128 px", "10s", "60.0%", "60.0%"],
        ["run-transfer", "BiT-M-R50x1", "Fine-tune", "20", "64", "128×128 px", "10s", "95.0%", "95.0%"],
    ]
    assert view.curve_count() == 2
    assert view.legend_names() == ["BiT-M-R50x1 · From scratch", "BiT-M-R50x1 · Fine-tune"]
    assert view.legend.isVisible() and "━━●━━</span>&nbsp;BiT-M-R50x1 · Fine-tune" in view.legend.text()
    assert "╍╍●╍╍" in view.legend.text()  # from scratch: dashed, on the chart too
    xs, ys = view.chart.listDataItems()[1].getData()
    assert list(xs) == [5 * 64, 10 * 64, 15 * 64, 20 * 64]  # images seen, not steps
    assert ys[0] == pytest.approx(100 * _transfer_top1(5))
    assert view.chart.getAxis("bottom").labelText.startswith("images seen")

    words = view.summary_text()
    start, end = 100 * _transfer_top1(5), 100 * _scratch_top1(5)
    assert words.splitlines()[0] == "BiT-M-R50x1 · Fine-tune against BiT-M-R50x1 · From scratch"
    assert (
        f"• Higher start: starting from pre-trained weights, the model was at {start:.0f}% at the first "
        f"evaluation (after 320 images), where training from scratch was at {end:.0f}%." in words
    )
    assert (
        "• Higher asymptote: the pre-trained model ended at 95% (best 95%), training from scratch at 60%"
        in words
    )
    # Over the first half both gain about 7.5 points (within one of the 60 validation photos): no claim.
    assert (
        "• Slope: from 320 images to 640 images both learned about as fast (pre-trained gained 8 points, "
        "from scratch gained 7 points)." in words
    )
    assert (
        words.splitlines()[-1]
        == "• With 60 validation photos, one photo is 2%: differences that small count as level."
    )
    assert "Higher start" in view.summary.text()  # the label shows the same words

    # The baseline is already here: the button says so instead of training a second one.
    assert not view.scratch_button.isEnabled()
    assert "is in this comparison" in view.scratch_button.toolTip()

    view.back_button.click()
    assert page.stack.currentWidget() is page.browse


def test_the_scratch_button_asks_the_train_step_for_the_same_schedule(
    window, qtbot, flower_runs, monkeypatch
):
    page = _open_runs(window, qtbot)
    view = _compare(page, qtbot, ["run-transfer"])
    assert view.curve_count() == 1
    assert "None of these runs was trained from scratch" in view.summary_text()
    button = view.scratch_button
    assert button.objectName() == "scratchBaselineButton" and button.isEnabled()
    assert view.baseline_label.text() == (
        "Trains BiT-M-R50x1 from random weights with the schedule of BiT-M-R50x1 · Fine-tune: 20 steps of "
        "64 images at 128×128 px, learning rate 0.00038, on the same photos."
    )

    # A run is training: the window says so and nothing starts.
    train = window.pages["train"]
    told = []
    monkeypatch.setattr(train, "is_training", lambda: True)
    monkeypatch.setattr(QMessageBox, "information", lambda *args: told.append(args[2]))
    button.click()
    assert told and "A run is training" in told[0]
    assert button.isEnabled() and window.current_step() == "runs"

    started = []
    monkeypatch.setattr(train, "is_training", lambda: False)
    monkeypatch.setattr(train, "start", started.append)
    button.click()
    assert window.current_step() == "train"
    (config,) = started
    transfer = runs.read_config(flower_runs["transfer"])
    assert config.strategy == "scratch" and transfer.strategy == "full"
    assert (config.data_dir, config.model, config.seed) == (transfer.data_dir, transfer.model, transfer.seed)
    assert (config.steps, config.batch, config.resolution, config.mixup) == (20, 64, 128, 0.0)
    assert not button.isEnabled() and "is training in the Train step" in view.baseline_label.text()


def test_a_baseline_that_ends_joins_the_comparison_and_other_runs_do_not(
    window, qtbot, flower_runs, monkeypatch, tmp_path
):
    page = _open_runs(window, qtbot)
    view = _compare(page, qtbot, ["run-transfer"])
    monkeypatch.setattr(window.pages["train"], "start", lambda config: None)
    view.scratch_button.click()

    # Another run ending (another folder, not asked for) changes nothing.
    other = make_run("run-other", tmp_path / "birds", "done", 20, accuracy=0.5, strategy="scratch")
    page.run_ended(str(other))
    qtbot.wait(300)
    assert view.model.rowCount() == 1

    # The baseline, cancelled half way: it joins, unfinished, and the button says how to finish it.
    settings = {"total": 20, "batch": 64, "resolution": 128, "strategy": "scratch", "top1": _scratch_top1}
    baseline = make_run("run-baseline", tmp_path / "flowers", "cancelled", 10, **settings)
    with qtbot.waitSignal(view.compared, timeout=10_000):
        page.run_ended(str(baseline))
    assert [row[0] for row in _cells(view)] == ["run-transfer", "run-baseline"]
    assert _cells(view)[1][3] == "10 of 20" and _cells(view)[1][7] == "not finished"
    assert view.legend_names()[1] == "BiT-M-R50x1 · From scratch (not finished)"
    assert "has not finished (step 10 of 20)" in view.summary_text()
    assert "stopped at step 10 of 20: resume it from the run list" in view.baseline_label.text()
    assert not view.scratch_button.isEnabled()


@pytest.mark.slow
def test_the_baseline_trains_in_a_child_process_and_joins_the_comparison(window, qtbot, tmp_path):
    from conftest import make_color_folder

    folder = make_color_folder(tmp_path / "colours", per_class=10)
    fast = {"device": "cpu", "workers": 0, "evaluations": 2, "precision": "fp32"}
    transfer = make_run(
        "run-lite0",
        folder,
        "done",
        4,
        total=4,
        accuracy=1.0,
        model="EfficientNet-Lite0",
        strategy="head",
        batch=8,
        resolution=32,
        every=2,
        settings=fast,
    )
    page = _open_runs(window, qtbot)
    view = _compare(page, qtbot, ["run-lite0"])
    train = window.pages["train"]
    with qtbot.waitSignal(train.runEnded, timeout=180_000) as ended:
        view.scratch_button.click()
        assert train.is_training() and window.current_step() == "train"
        assert "training from scratch" in train.plan_label.text()
    scratch = Path(ended.args[0])
    assert json.loads((scratch / "status.json").read_text())["state"] == "done"
    config, plan = runs.read_config(scratch), runs.read_plan(scratch)
    assert (config.strategy, config.model, config.data_dir) == ("scratch", "EfficientNet-Lite0", str(folder))
    before = runs.read_plan(transfer)
    for name in (
        "total_steps",
        "batch",
        "crop",
        "resize",
        "base_lr",
        "warmup_steps",
        "lr_boundaries",
        "mixup_alpha",
    ):
        assert getattr(plan, name) == getattr(before, name), name

    qtbot.waitUntil(lambda: view.model.rowCount() == 2, timeout=10_000)
    assert [row[2] for row in _cells(view)] == ["Head only", "From scratch"]
    assert _cells(view)[1][3] == "4"
    assert view.curve_count() == 2
    assert "EfficientNet-Lite0 · Head only against EfficientNet-Lite0 · From scratch" in view.summary_text()
    assert not view.scratch_button.isEnabled() and "is in this comparison" in view.baseline_label.text()


def test_the_runs_step_and_the_comparison_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, app.pages.runs_page, app.pages.compare_view, bit_engine.compare; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
