"""The Data step as a user meets it: welcome view, opening a folder (dialog or drop), the report, cancel."""

from __future__ import annotations

import threading

from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QListWidget,
    QMessageBox,
    QPushButton,
    QTableView,
)

from app import settings
from app.self_test import file_mime, send_drop


def _data_page(window):
    return window.pages["data"]


def _wait_for_report(qtbot, window):
    page = _data_page(window)
    qtbot.waitUntil(lambda: not page.is_scanning() and page.views.currentIndex() == 2, timeout=30_000)
    return page


def _table(window):
    table = window.findChild(QTableView, "classTable")
    model = table.model()
    return [[model.index(r, c).data() for c in range(3)] for r in range(model.rowCount())]


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_open_a_folder_through_the_dialog_shows_classes_counts_and_thumbnails(
    window, qtbot, color_folder, monkeypatch
):
    (color_folder / "red" / "notes.jpg").write_text("not a photo")
    before = _snapshot(color_folder)
    asked = []
    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", lambda *a, **k: asked.append(a) or str(color_folder)
    )
    assert window.findChild(QPushButton, "dataFolderButton").isVisible()
    assert window.step_reason("plan") is not None
    qtbot.mouseClick(window.findChild(QPushButton, "dataFolderButton"), Qt.MouseButton.LeftButton)
    assert asked
    page = _wait_for_report(qtbot, window)
    # 10 photos per class, 20% planned for validation.
    assert _table(window) == [["blue", "8", "2"], ["green", "8", "2"], ["red", "8", "2"]]
    split = window.findChild(QLabel, "splitLabel").text()
    assert "20%" in split and "24" in split and "6" in split
    skipped = window.findChild(QListWidget, "skippedList")
    assert skipped.isVisible() and skipped.count() == 1
    assert "red/notes.jpg" in skipped.item(0).text() and "not" in skipped.item(0).text()
    assert window.step_reason("plan") is None
    assert window.state.report is not None and window.state.report.classes == ("blue", "green", "red")
    # Example thumbnails are decoded in the background and end up in the cache.
    paths = page.class_model.rows()[0].examples
    qtbot.waitUntil(lambda: all(page.class_model.thumbnail(p) is not None for p in paths), timeout=20_000)
    assert page.class_model.thumbnail(paths[0]).width() <= 64
    assert str(color_folder) in settings.load().recent_folders
    assert _snapshot(color_folder) == before  # nothing written into the user's folder
    qtbot.mouseClick(window.findChild(QPushButton, "continueToPlanButton"), Qt.MouseButton.LeftButton)
    assert window.current_step() == "plan"


def test_a_folder_dropped_on_the_window_is_opened(window, qtbot, color_folder):
    send_drop(window, file_mime([color_folder]), QPoint(300, 300))
    _wait_for_report(qtbot, window)
    assert [row[0] for row in _table(window)] == ["blue", "green", "red"]


def test_a_folder_without_usable_photos_says_what_to_do(window, qtbot, tmp_path):
    folder = tmp_path / "broken"
    (folder / "cats").mkdir(parents=True)
    (folder / "cats" / "a.jpg").write_text("text, not a photo")
    (folder / "dogs").mkdir()
    window.open_folder(str(folder))
    _wait_for_report(qtbot, window)
    errors = window.findChild(QLabel, "errorsLabel")
    assert errors.isVisible()
    assert "No usable photos" in errors.text() and "Rescan" in errors.text()
    assert not window.findChild(QPushButton, "continueToPlanButton").isEnabled()
    assert "fix" in window.step_reason("plan").lower()


def test_rescan_sees_the_fixed_folder(window, qtbot, color_folder):
    from tests.conftest import make_color_folder

    window.open_folder(str(color_folder))
    _wait_for_report(qtbot, window)
    make_color_folder(color_folder, classes=("yellow",), per_class=5, seed=3)
    qtbot.mouseClick(window.findChild(QPushButton, "rescanButton"), Qt.MouseButton.LeftButton)
    _wait_for_report(qtbot, window)
    assert [row[:2] for row in _table(window)][-1] == ["yellow", "4"]


def test_a_cancelled_scan_returns_to_the_welcome_view(window, qtbot, color_folder, monkeypatch):
    from bit_engine import data
    from bit_engine.dataset import ScanCancelled, ScanProgress

    started = threading.Event()

    def slow_scan(folder, on_progress=None, cancel=None, **kwargs):
        started.set()
        done = 0
        while not cancel.is_set():  # reports progress like the real scan until cancelled
            done += 1
            on_progress(ScanProgress("reading", done, 100_000, f"c/{done}.jpg"))
            cancel.wait(0.005)
        raise ScanCancelled()

    monkeypatch.setattr(data, "scan", slow_scan)
    window.open_folder(str(color_folder))
    page = _data_page(window)
    assert started.wait(10)
    bar = page.scan_bar
    qtbot.waitUntil(lambda: bar.maximum() == 100_000 and bar.value() > 0, timeout=10_000)
    assert "of 100,000 files" in page.scan_stage.text()
    qtbot.mouseClick(window.findChild(QPushButton, "scanCancelButton"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.is_scanning(), timeout=10_000)
    assert page.views.currentIndex() == 0
    status = window.findChild(QLabel, "welcomeStatusLabel")
    assert status.isVisible() and "cancelled" in status.text()
    assert window.state.report is None and window.step_reason("plan") is not None


def test_the_sample_data_is_made_in_the_apps_folder_and_opened(window, qtbot, tmp_path):
    qtbot.mouseClick(window.findChild(QPushButton, "sampleDataButton"), Qt.MouseButton.LeftButton)
    _wait_for_report(qtbot, window)
    assert window.state.data_dir == str(settings.sample_data_dir().resolve())
    assert settings.sample_data_dir().is_relative_to(tmp_path)
    assert _table(window) == [[c, "48", "12"] for c in ("circles", "squares", "stripes", "triangles")]


def test_a_path_that_is_not_a_folder_is_refused_with_a_message(window, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a))
    window.open_folder(str(tmp_path / "nowhere"))
    assert shown and "not a folder" in shown[0][2]
    assert _data_page(window).views.currentIndex() == 0


def test_a_wrapped_folder_and_a_class_too_small_to_measure_are_explained(window, qtbot, tmp_path):
    from tests.conftest import make_color_folder

    root = tmp_path / "download"
    make_color_folder(root / "photos", classes=("red", "green"), per_class=10)
    make_color_folder(root / "photos", classes=("blue",), per_class=1, seed=2)
    window.open_folder(str(root))
    _wait_for_report(qtbot, window)
    assert "The classes are in photos/" in window.findChild(QLabel, "summaryLabel").text()
    split = window.findChild(QLabel, "splitLabel").text()
    assert "No validation photo for <b>blue</b>" in split
    assert ["blue", "1", "0: accuracy not measured"] in _table(window)


def test_the_class_table_gets_the_room_its_rows_need_before_the_panels_under_it(window, qtbot, tmp_path):
    from conftest import make_color_folder

    folder = make_color_folder(tmp_path / "three", per_class=6)
    (folder / "red" / "notes.txt").write_text("not a photo")
    window.resize(1280, 800)
    window.open_folder(str(folder))
    page = _wait_for_report(qtbot, window)
    table = window.findChild(QTableView, "classTable")

    def every_row_in_view() -> bool:
        last = table.visualRect(table.model().index(2, 0))
        return last.isValid() and last.bottom() <= table.viewport().height()

    # The label check's panel and the skipped files list take what is left (they scroll).
    qtbot.waitUntil(every_row_in_view, timeout=5_000)
    assert page.label_issues.height() > 0 and window.findChild(QListWidget, "skippedList").isVisible()
