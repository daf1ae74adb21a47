"""The "How it works" step as a user meets it: four sections with numbers from their own photos."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGroupBox, QLabel, QPushButton

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("normalizationSection", "standardizationSection", "mixupSection", "hyperRuleSection")


def _label(window, name) -> str:
    return window.findChild(QLabel, name).text()


def _fake_time_strategies(spec, configs, num_train, num_val, median_size, on_result, cancel):
    from bit_engine.train import Estimate

    for config in configs:
        on_result(config.strategy, Estimate(config.strategy, 60.0, 0.01, 8, "cpu", "About a minute (fake)."))


@pytest.fixture
def scanned(window, qtbot, color_folder, monkeypatch):
    """The window with the colour folder (3 classes of 10 photos) scanned and planned by the Plan step.

    The Plan step publishes its plan in the background after a scan; waiting for it here means the
    demonstrations are not recomputed under a test's feet. Its time estimates are faked (not under test).
    """
    from app import timing

    monkeypatch.setattr(timing, "time_strategies", _fake_time_strategies)
    window.open_folder(str(color_folder))
    data = window.pages["data"]
    qtbot.waitUntil(lambda: window.state.report is not None and not data.is_scanning(), timeout=30_000)
    qtbot.waitUntil(lambda: window.state.config is not None, timeout=60_000)
    return window


def _open(window, qtbot):
    page = window.pages["howto"]
    window.go_to("howto")
    qtbot.waitUntil(lambda: not page.is_busy() and page.explanation is not None, timeout=60_000)
    return page


def test_the_step_waits_for_a_folder_and_says_so(window):
    from app.main_window import STEPS

    item = window.step_list.item([s.key for s in STEPS].index("howto"))
    assert item.text() == "How it works"
    assert not item.flags() & Qt.ItemFlag.ItemIsEnabled
    assert "Open a folder" in item.toolTip() and "sample data" in item.toolTip()
    window.go_to("howto")
    assert "your own photos" in _label(window, "howtoUnavailableLabel")
    window.findChild(QPushButton, "howtoUnavailableButton").click()
    assert window.current_step() == "data"


def test_the_four_sections_show_numbers_from_the_folders_photos(scanned, qtbot):
    window = scanned
    page = window.pages["howto"]
    window.go_to("howto")
    # While it computes, the page says so with a progress bar instead of empty sections.
    assert page.is_busy() and page.progress_bar.isVisible() and page.status_label.text()
    page = _open(window, qtbot)
    for name in SECTIONS:
        assert window.findChild(QGroupBox, name).isVisible(), name

    demo = page.explanation.normalization
    assert demo.photo.split("/")[-1] in _label(window, "normalizationSourceLabel")
    summary = _label(window, "normalizationSummary")
    changed = float(re.search(r"BatchNorm changed your photo's output by ([\d.]+)", summary)[1])
    assert changed > 0.1 and "GroupNorm's changed by 0.0000" in summary
    for col in (1, 2):
        assert "changed 0.0000" in _label(window, f"gnCaption{col}")
        assert float(_label(window, f"bnCaption{col}").split("changed ")[1]) > 0.1
    # Same numbers as on their own for GroupNorm, different ones for BatchNorm.
    first_line = [_label(window, f"gnCaption{c}").splitlines()[0] for c in range(3)]
    assert len(set(first_line)) == 1
    assert _label(window, "bnCaption0").splitlines()[0] != _label(window, "bnCaption2").splitlines()[0]
    for name in ("normalizationPhoto", "bnMap0", "bnMap2", "gnMap2", "mixupFirst", "mixupMixed"):
        pixmap = window.findChild(QLabel, name).pixmap()
        assert pixmap is not None and not pixmap.isNull(), name

    assert "After: mean 0.0000, spread 1.0000" in _label(window, "wsAfterLabel")
    assert "Before: mean" in _label(window, "wsBeforeLabel")
    assert "spread 1.0000" not in _label(window, "wsBeforeLabel")
    bars = page.ws_plots["after"].getPlotItem().listDataItems()
    assert len(bars) == 1 and bars[0].yData.sum() == page.explanation.standardization.after.counts.sum()
    source = _label(window, "standardizationSourceLabel")
    assert "EfficientNet-Lite0" not in source or "does not standardize" in source

    a, b = page.explanation.pair.labels
    assert a != b
    blend = _label(window, "mixupLabel")
    assert a in blend and b in blend and "%" in blend
    assert "no mixup" in _label(window, "mixupPlanLabel")  # 24 photos: the rule turns mixup off

    plan = page.explanation.plan
    story = _label(window, "hyperRuleStory")
    assert plan.reasons["steps"] in story and f"{plan.num_images} photos" in story
    assert f"The plan from the Plan step: {plan.model}" in _label(window, "hyperRuleSourceLabel")


def test_draw_again_draws_another_lambda(scanned, qtbot):
    window = scanned
    page = _open(window, qtbot)
    before = _label(window, "mixupLambdaLabel")
    first = page.mixup
    button = window.findChild(QPushButton, "mixupRedrawButton")
    assert button.isEnabled()
    button.click()
    qtbot.waitUntil(lambda: page.mixup is not first and not page.is_busy(), timeout=30_000)
    assert page.mixup.draw == first.draw + 1 and page.mixup.lam != first.lam
    assert _label(window, "mixupLambdaLabel") != before and "draw 2" in _label(window, "mixupLambdaLabel")
    assert button.isEnabled()


def test_a_new_plan_is_explained_again(scanned, qtbot):
    from bit_engine.config import TrainConfig

    window = scanned
    page = _open(window, qtbot)
    old = page.explanation
    window.state.set_config(TrainConfig(data_dir=window.state.data_dir, strategy="full", steps=50, mixup=0.2))
    qtbot.waitUntil(lambda: page.explanation is not old and not page.is_busy(), timeout=60_000)
    story = _label(window, "hyperRuleStory")
    assert "50 steps (you chose it)" in story and "Your changes" in story
    assert "The plan from the Plan step" in _label(window, "hyperRuleSourceLabel")
    assert "α = 0.2" in _label(window, "mixupPlanLabel")
    assert "Beta(0.2, 0.2)" in _label(window, "mixupLambdaLabel")


def test_a_photo_gone_since_the_scan_is_a_message_with_a_way_out(scanned, qtbot):
    window = scanned
    report = window.state.report
    report.path_of(report.train[0]).unlink()
    page = window.pages["howto"]
    window.go_to("howto")
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=60_000)
    assert page.explanation is None
    error = _label(window, "howItWorksError")
    assert "scan the folder again" in error and "Traceback" not in error
    assert window.findChild(QPushButton, "howItWorksRetryButton").isVisible()


def test_the_window_paints_without_importing_torch(tmp_path):
    code = (
        "import sys\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from app import MainWindow\n"
        "w = MainWindow(); w.show(); app.processEvents()\n"
        "print('torch' in sys.modules)\n"
        "w.close()\n"
    )
    tmp = tmp_path
    env = {
        "PYTHONPATH": str(ROOT),
        "QT_QPA_PLATFORM": "offscreen",
        "BIT_STUDIO_CONFIG_DIR": str(tmp / "config"),
        "BIT_STUDIO_LOG_DIR": str(tmp / "log"),
        "BIT_STUDIO_CACHE_DIR": str(tmp / "cache"),
        "BIT_STUDIO_DATA_DIR": str(tmp / "data"),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr
