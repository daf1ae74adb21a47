"""The Plan step as a user meets it: the HyperRule's values for their folder, overrides, estimates, weights."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel, QPushButton, QRadioButton, QTableView

from app import settings


def _fake_estimate(config, num_train=None, num_val=None, median_size=None, timed_steps=2):
    from bit_engine.train import Estimate

    seconds = 60.0 if config.strategy == "head" else 3600.0
    return Estimate(config.strategy, seconds, 0.01, 8, "cpu", f"About {seconds:.0f} seconds on CPU (fake).")


def _fake_time_strategies(spec, configs, num_train, num_val, median_size, on_result, cancel):
    for config in configs:
        on_result(config.strategy, _fake_estimate(config))


@pytest.fixture
def timing(request, monkeypatch):
    """Estimates are faked (instant, no child process) unless a test is marked `real_timing`: timed steps
    take tens of seconds on a busy test machine even for the tiny model, and most tests are not about them."""
    if "real_timing" not in request.keywords:
        from app import timing as app_timing

        monkeypatch.setattr(app_timing, "time_strategies", _fake_time_strategies)


@pytest.fixture
def plan_window(window, qtbot, color_folder, tiny_bit, timing):
    """The window with the colour folder scanned and the Plan step loaded for the tiny test model."""
    settings.update(last_model=tiny_bit, default_device="cpu")
    window.open_folder(str(color_folder))
    data = window.pages["data"]
    qtbot.waitUntil(lambda: window.state.report is not None and not data.is_scanning(), timeout=30_000)
    window.go_to("plan")
    page = window.pages["plan"]
    qtbot.waitUntil(lambda: page._engine is not None and window.state.config is not None, timeout=60_000)
    return window


def _rows(window):
    table = window.findChild(QTableView, "hyperRuleTable")
    model = table.model()
    return {
        model.index(r, 0).data(): (model.index(r, 1).data(), model.index(r, 2).data())
        for r in range(model.rowCount())
    }


def _wait_for_estimate(qtbot, window):
    label = window.findChild(QLabel, "estimateLabel")
    qtbot.waitUntil(lambda: "About" in label.text(), timeout=120_000)
    return label.text()


@pytest.mark.real_timing
def test_the_plan_shows_the_rule_for_this_folder_and_marks_an_edit_as_an_override(
    plan_window, qtbot, tiny_bit
):
    window = plan_window
    page = window.pages["plan"]
    assert window.findChild(QComboBox, "modelPicker").currentData() == tiny_bit
    rows = _rows(window)
    # 30 photos of 40x30 pixels, under 20,000 photos -> 500 steps, no mixup. Head only is recommended here, and
    # a frozen backbone keeps its pre-training size: 224 (280 before the crop), with the HyperRule's 128 named.
    assert rows["Resize, then crop"][0] == "280 px, random crop 224 px"
    assert "Head only" in rows["Resize, then crop"][1] and "128x128" in rows["Resize, then crop"][1]
    assert rows["Schedule length"][0].startswith("500 steps")
    assert rows["Warm-up"][0] == "100 steps"
    assert rows["Learning-rate drops"][0] == "÷10 at steps 200, 300, 400"
    assert rows["Base learning rate"][0] == "0.003"
    assert rows["Global batch"][0] == "512 photos per step"
    assert rows["Mixup"][0] == "off"
    assert rows["Horizontal flip"][0] == "on" and rows["Random crop"][0] == "on"
    reset = window.findChild(QPushButton, "resetHyperRuleButton")
    assert not reset.isEnabled()

    model = page.rule_model
    steps = model.index(model.row_of("steps"), 1)
    assert model.setData(steps, 100)
    rows = _rows(window)
    assert rows["Schedule length"][0].startswith("100 steps")
    assert rows["Schedule length"][1].startswith("Your choice.")
    assert (
        "100 steps instead of the rule's 500: shorter runs usually end less accurate"
        in rows["Schedule length"][1]
    )
    assert model.index(model.row_of("steps"), 1).data(Qt.ItemDataRole.FontRole).bold()
    assert model.index(model.row_of("batch"), 1).data(Qt.ItemDataRole.FontRole) is None
    # The schedule keeps its shape: warm-up and drops follow the new length.
    assert rows["Warm-up"][0] == "20 steps"
    assert window.state.config.steps == 100
    assert reset.isEnabled()

    qtbot.mouseClick(reset, Qt.MouseButton.LeftButton)
    rows = _rows(window)
    assert rows["Schedule length"][0].startswith("500 steps")
    assert "Your choice" not in rows["Schedule length"][1]
    assert window.state.config.steps is None and not reset.isEnabled()

    text = _wait_for_estimate(qtbot, window)
    assert "CPU" in text
    # The same figure for the other strategies (timed after the chosen one), to trade time for quality.
    labels = [window.findChild(QLabel, f"estimate_{key}") for key in ("full", "head", "scratch")]
    qtbot.waitUntil(lambda: all(label.text().startswith("about") for label in labels), timeout=120_000)


def test_a_refused_value_says_why_and_changes_nothing(plan_window):
    window = plan_window
    model = window.pages["plan"].rule_model
    assert not model.setData(model.index(model.row_of("batch"), 1), 0)
    error = window.findChild(QLabel, "planErrorLabel")
    assert error.isVisible() and "atch" in error.text() and "at least 1" in error.text()
    assert window.state.config.batch is None
    assert _rows(window)["Global batch"][0] == "512 photos per step"


def test_turning_flip_off_is_an_override_without_a_warning(plan_window):
    window = plan_window
    model = window.pages["plan"].rule_model
    index = model.index(model.row_of("flip"), 1)
    assert model.setData(index, Qt.CheckState.Unchecked.value, Qt.ItemDataRole.CheckStateRole)
    assert window.state.config.flip is False
    assert _rows(window)["Horizontal flip"][0] == "off"
    assert "Your choice (the rule: on)" in _rows(window)["Horizontal flip"][1]


def test_a_small_dataset_gets_head_only_recommended_with_the_reason(plan_window):
    window = plan_window
    head = window.findChild(QRadioButton, "strategy_head")
    assert head.isChecked() and "(recommended)" in head.text()
    reason = window.findChild(QLabel, "strategyRecommendationLabel").text()
    assert "24 training photos" in reason
    assert window.state.config.strategy == "head"
    window.findChild(QRadioButton, "strategy_full").setChecked(True)
    assert window.state.config.strategy == "full"


def test_models_without_weights_offer_download_and_import(plan_window):
    window = plan_window
    picker = window.findChild(QComboBox, "modelPicker")
    names = [picker.itemData(i) for i in range(picker.count())]
    assert {"BiT-M-R50x1", "BiT-S-R50x1", "BiT-M-R152x4", "EfficientNet-Lite0"} <= set(names)
    download = window.findChild(QPushButton, "downloadButton")
    importer = window.findChild(QPushButton, "importButton")
    assert not download.isVisible()  # the tiny model's weights are in the cache
    picker.setCurrentIndex(picker.findData("BiT-M-R50x1"))
    assert download.isVisible() and importer.isVisible()
    assert "not on this machine" in picker.currentText()
    assert "paper's default" in window.findChild(QLabel, "modelInfoLabel").text()
    picker.setCurrentIndex(picker.findData("EfficientNet-Lite0"))
    assert not download.isVisible()
    assert "works offline" in window.findChild(QLabel, "modelInfoLabel").text()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def weights_host(tmp_path, monkeypatch):
    """A local HTTP server for the weights; tests put files in the folder it serves."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("BIT_STUDIO_WEIGHTS_URL", f"http://127.0.0.1:{server.server_address[1]}")
    yield served
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_from_a_local_server_makes_the_model_available(plan_window, qtbot, tiny_bit, weights_host):
    from bit_engine import weights, weights_cache

    window = plan_window
    shutil.move(weights_cache.cache_file(tiny_bit), weights_host / f"{tiny_bit}.npz")
    page = window.pages["plan"]
    page._on_weights_done()  # as after any weights change: read the store again
    picker = window.findChild(QComboBox, "modelPicker")
    download = window.findChild(QPushButton, "downloadButton")
    assert download.isVisible() and "not on this machine" in picker.currentText()
    qtbot.mouseClick(download, Qt.MouseButton.LeftButton)
    status = window.findChild(QLabel, "weightsStatusLabel")
    qtbot.waitUntil(lambda: "ready" in status.text(), timeout=30_000)
    qtbot.waitUntil(lambda: page._weights_job is None, timeout=10_000)
    assert weights.is_available(tiny_bit)
    assert "on this machine" in picker.currentText() and "not" not in picker.currentText()
    assert not download.isVisible()


def test_import_npz_through_the_file_dialog(plan_window, qtbot, tiny_bit, tmp_path, monkeypatch):
    from bit_engine import weights, weights_cache

    window = plan_window
    elsewhere = tmp_path / "downloads" / "weights file.npz"
    elsewhere.parent.mkdir()
    shutil.move(weights_cache.cache_file(tiny_bit), elsewhere)
    page = window.pages["plan"]
    page._on_weights_done()
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", lambda *a, **k: (str(elsewhere), "BiT weights (*.npz)")
    )
    qtbot.mouseClick(window.findChild(QPushButton, "importButton"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page._weights_job is None and weights.is_available(tiny_bit), timeout=30_000)
    assert elsewhere.is_file()  # the user's file is only read
    assert not window.findChild(QPushButton, "importButton").isVisible()


def test_devices_list_each_gpu_and_all_of_them(window, qtbot, color_folder, tiny_bit, timing, monkeypatch):
    from bit_engine import devices

    gpus = [
        devices.GpuInfo(0, "Test GPU A", 24_000_000_000, 20_000_000_000),
        devices.GpuInfo(1, "Test GPU B", 24_000_000_000, None),
    ]
    monkeypatch.setattr(devices, "gpu_unavailable_reason", lambda: None)
    monkeypatch.setattr(devices, "list_gpus", lambda: gpus)
    settings.update(last_model=tiny_bit, default_device="cpu")
    window.open_folder(str(color_folder))
    qtbot.waitUntil(lambda: window.state.config is not None, timeout=60_000)
    picker = window.findChild(QComboBox, "devicePicker")
    texts = [picker.itemText(i) for i in range(picker.count())]
    assert texts[0].startswith("CPU")
    assert texts[1] == "GPU 0: Test GPU A, 20.0 GB free of 24 GB"
    assert texts[2] == "GPU 1: Test GPU B, 24 GB"
    assert texts[3].startswith("All GPUs (2)")
    picker.setCurrentIndex(3)
    assert window.state.devices == "all" and window.state.config.device == "cuda"
    picker.setCurrentIndex(0)
    assert window.state.devices is None and window.state.config.device == "cpu"


def test_without_a_gpu_the_reason_is_given(plan_window):
    from bit_engine import devices

    window = plan_window
    reason = devices.gpu_unavailable_reason()
    note = window.findChild(QLabel, "deviceNoteLabel")
    if reason is None:
        pytest.skip("this machine has a usable GPU")
    assert note.isVisible() and reason in note.text()
    assert window.findChild(QComboBox, "devicePicker").count() == 1


@pytest.mark.real_timing
def test_closing_the_window_stops_a_running_estimate_at_once(plan_window, qtbot):
    import time

    page = plan_window.pages["plan"]
    qtbot.waitUntil(lambda: page._estimator is not None, timeout=10_000)
    started = time.monotonic()
    plan_window.close()
    # The timing child is terminated, not waited for (a large model's timing can take minutes).
    assert time.monotonic() - started < 5
    worker = page._estimator
    assert worker is None or worker.wait(0)  # its thread has ended
    qtbot.waitUntil(lambda: worker is None or not worker.is_running(), timeout=5_000)


def test_another_folder_makes_a_new_plan(plan_window, qtbot, tmp_path):
    from tests.conftest import make_color_folder

    window = plan_window
    other = make_color_folder(tmp_path / "other", classes=("red", "green", "blue", "yellow"), per_class=25)
    window.open_folder(str(other))
    qtbot.waitUntil(
        lambda: window.state.config is not None and window.state.config.data_dir == str(other), timeout=60_000
    )
    summary = window.findChild(QLabel, "planDatasetLabel").text()
    assert "80 photos to train on, 20 to check" in summary
    assert "80 images" in _rows(window)["Schedule length"][1]


def test_photos_left_out_are_not_counted_in_the_plan(plan_window, color_folder):
    from app import label_corrections

    window = plan_window
    subtitle = window.pages["plan"].subtitle
    assert "24 photos to train on, 6 to check the model" in subtitle.text()
    for i in range(5):  # half the red photos: wherever the split put them, the two counts add up to 25
        label_corrections.correct(str(color_folder), f"red/red_{i:02d}.png", "red", None)
    window.state.corrections_changed(str(color_folder))
    text = subtitle.text()
    train, val = (int(n) for n in re.findall(r"(\d+) (?:photos to train on|to check the model)", text))
    assert train + val == 25 and val >= 1
    corrections = window.findChild(QLabel, "planCorrectionsLabel").text()
    assert "5 label corrections will be applied (5 left out)" in corrections
    assert window.state.config.corrections  # and the run applies them


def test_every_setting_is_in_view_without_a_scroll_bar_of_the_table(plan_window, qtbot, color_folder):
    from app import label_corrections

    window = plan_window
    window.resize(1300, 800)
    label_corrections.correct(str(color_folder), "red/red_00.png", "red", None)
    window.state.corrections_changed(str(color_folder))  # one more line above: the page gets a scroll bar
    _wait_for_estimate(qtbot, window)
    table = window.findChild(QTableView, "hyperRuleTable")
    rows = sum(table.rowHeight(r) for r in range(table.model().rowCount()))
    qtbot.waitUntil(lambda: table.viewport().height() >= rows, timeout=5_000)
    assert not table.verticalScrollBar().isVisible()
