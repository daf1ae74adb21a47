"""The window as a frame: entry point, display check, steps and their availability, drops, settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import Qt

from app import settings
from app.main import display_problem
from app.self_test import file_mime, send_drop

ROOT = Path(__file__).resolve().parents[1]


def test_without_a_display_the_command_says_so_and_exits_2(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "bit-studio --help" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one sentence, no Qt abort, no traceback
    assert "Traceback" not in result.stderr


def test_display_check_accepts_x11_wayland_and_a_chosen_platform():
    assert display_problem({}, "linux") is not None
    assert display_problem({"DISPLAY": ":0"}, "linux") is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert display_problem({}, "win32") is None


def test_with_arguments_it_is_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "app", "--help"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "usage: bit-studio" in result.stdout


def test_importing_the_window_does_not_import_torch():
    code = "import sys; from app import MainWindow; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "False", result.stderr


def _step_item(window, key):
    from app.main_window import STEPS

    return window.step_list.item([s.key for s in STEPS].index(key))


def test_steps_that_cannot_be_used_are_disabled_and_say_why(window):
    assert [window.step_list.item(i).text() for i in range(6)] == [
        "Data",
        "Plan",
        "Train",
        "Runs",
        "Evaluate",
        "Predict",
    ]
    plan = _step_item(window, "plan")
    assert not plan.flags() & Qt.ItemFlag.ItemIsEnabled
    assert "Open a folder" in plan.toolTip()
    assert _step_item(window, "data").flags() & Qt.ItemFlag.ItemIsEnabled
    assert _step_item(window, "predict").flags() & Qt.ItemFlag.ItemIsEnabled
    # Shown anyway (a link, a shortcut): the page itself says why and offers the way there.
    window.go_to("plan")
    from PySide6.QtWidgets import QLabel, QPushButton

    label = window.findChild(QLabel, "planUnavailableLabel")
    assert label.isVisible() and "Open a folder" in label.text()
    button = window.findChild(QPushButton, "planUnavailableButton")
    button.click()
    assert window.current_step() == "data"


def test_the_evaluate_step_opens_once_a_run_has_a_model(window, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    window.state.set_run(str(run))
    assert window.step_reason("evaluate")
    (run / "model.pt").write_bytes(b"x")
    window.state.set_run(str(run))
    assert window.step_reason("evaluate") is None
    assert _step_item(window, "evaluate").flags() & Qt.ItemFlag.ItemIsEnabled


def _drop(window, path):
    return send_drop(window, file_mime([path]))


def test_a_dropped_file_is_refused_and_a_dropped_folder_accepted(window, tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(window, "open_folder", opened.append)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not a folder")
    enter, _ = _drop(window, photo)
    assert not enter.isAccepted()
    assert opened == []
    enter, drop = _drop(window, tmp_path)
    assert enter.isAccepted() and drop is not None and drop.isAccepted()
    assert opened == [str(tmp_path)]


def test_geometry_is_saved_on_close_under_the_redirected_config(qtbot, tmp_path):
    from app import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(700, 520)
    w.show()
    w.close()
    assert settings.settings_file().is_relative_to(tmp_path)
    assert settings.load().window_geometry
    w2 = MainWindow()
    qtbot.addWidget(w2)
    assert (w2.width(), w2.height()) == (700, 520)
    w2.close()


def test_settings_survive_damage_and_keep_recent_folders_unique(tmp_path):
    settings.settings_file().parent.mkdir(parents=True, exist_ok=True)
    settings.settings_file().write_text("{not json", encoding="utf-8")
    assert settings.load() == settings.Settings()
    for name in ["a", "b", "a", *map(str, range(10))]:
        settings.add_recent_folder(name)
    recent = settings.load().recent_folders
    assert recent[0] == "9" and len(recent) == settings.MAX_RECENT and len(set(recent)) == len(recent)
    settings.settings_file().write_text('{"last_model": 3, "default_device": "cpu"}', encoding="utf-8")
    loaded = settings.load()
    assert loaded.last_model == "" and loaded.default_device == "cpu"


def test_the_fixed_object_names_exist_with_accessible_names(window):
    from PySide6.QtWidgets import QWidget

    fixed = [
        "stepList",
        "dataFolderButton",
        "sampleDataButton",
        "classTable",
        "skippedList",
        "modelPicker",
        "strategyPicker",
        "devicePicker",
        "hyperRuleTable",
        "resetHyperRuleButton",
        "estimateLabel",
    ]
    for name in fixed:
        widget = window.findChild(QWidget, name)
        assert widget is not None, name
        assert widget.accessibleName(), name
    # Every control of the Data and Plan pages that has a name also has an accessible name.
    from PySide6.QtWidgets import QAbstractButton, QAbstractItemView, QComboBox, QProgressBar

    for page in (window.pages["data"], window.pages["plan"]):
        for kind in (QAbstractButton, QComboBox, QAbstractItemView, QProgressBar):
            for widget in page.findChildren(kind):
                if widget.objectName() and not widget.objectName().startswith("qt_"):
                    assert widget.accessibleName(), widget.objectName()


def test_imports_after_qt_skip_pysides_source_scan_with_the_same_answers(window):
    import random
    import sys

    import PySide6.QtCore

    import bit_engine.config

    feature = sys.modules["shibokensupport.feature"]
    ours = feature._mod_uses_pyside
    assert getattr(ours, "reads_bytes", False), "the window did not install app.pyside_imports"
    upstream = ours.upstream
    named = [sys.modules["app.main_window"], bit_engine.config, PySide6, PySide6.QtCore, sys, random]
    assert [ours(m) for m in named] == [True, False, True, False, False, False]
    loaded = sorted((n, m) for n, m in sys.modules.items() if m is not None)
    sample = [m for _, m in random.Random(0).sample(loaded, 40)] + named

    def answer(check, module):  # PySide6's own check raises for a few odd modules (torch._classes): so do we
        try:
            return check(module)
        except Exception as exc:
            return type(exc)

    assert [answer(ours, m) for m in sample] == [answer(upstream, m) for m in sample]
