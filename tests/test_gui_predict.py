"""The Predict step: dropped photos get the exported file's answers (equal to the command line's), streamed."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import shown
from gui_runs import cli_rows, drop, shared_exported_run
from PIL import Image
from PySide6.QtCore import QMimeData, Qt, QTimer
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.pages.predict_page import PredictPage
from app.self_test import send_drop
from app.state import AppState
from app.widgets.prediction_list import ROW_ROLE


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return shared_exported_run(tmp_path_factory)[1]


@pytest.fixture
def state():
    return AppState()


@pytest.fixture
def page(qtbot, state, monkeypatch):
    # Bad files are reported in the list, never by dialogs: any dialog fails the test.
    for name in ("critical", "warning", "information", "question"):
        monkeypatch.setattr(
            QMessageBox, name, lambda *a, _n=name, **k: pytest.fail(f"QMessageBox.{_n} shown")
        )
    page = shown(qtbot, PredictPage(state), (900, 700))
    yield page
    page.shutdown()


@pytest.fixture
def opened(qtbot, page, state, onnx_model):
    """The page with the exported model loaded the way the app does it: by the export's signal."""
    with qtbot.waitSignal(page.modelOpened, timeout=30_000):
        state.set_exported(str(onnx_model))
    return page


def rows(page):
    model = page.findChild(type(page.list), "predictionList").model()
    return [model.index(i).data(ROW_ROLE) for i in range(model.rowCount())], [
        model.index(i).data() for i in range(model.rowCount())
    ]


def photo(path: Path, colour, size=(48, 36), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.array(colour, dtype=np.int16) + rng.integers(-30, 30, (size[1], size[0], 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
    return path


def test_a_dropped_photo_gets_the_command_lines_answer_and_a_csv(
    qtbot, opened, onnx_model, tmp_path, monkeypatch
):
    page = opened
    image = photo(tmp_path / "in" / "mostly red.png", (220, 40, 30))
    assert "3 classes" in page.model_label.text()
    area = page.findChild(type(page.drop_area), "predictDropArea")
    with qtbot.waitSignal(page.predictionsFinished, timeout=30_000):
        assert drop(area, [image])
    found, texts = rows(page)
    assert len(found) == 1 and found[0].error is None
    expected = cli_rows(onnx_model, [image], tmp_path / "cli.csv")[0]
    label, probability = found[0].predictions[0]
    assert label == expected["label"]
    assert probability == pytest.approx(float(expected["probability"]), abs=1e-6)
    assert [p[0] for p in found[0].predictions] == [
        expected["label"],
        expected["label_2"],
        expected["label_3"],
    ]
    # The display text carries the answer for screen readers and automation.
    assert texts[0] == f"mostly red.png: {label} {probability:.1%}"

    out = tmp_path / "out" / "predictions.csv"
    out.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), "CSV (*.csv)"))
    qtbot.mouseClick(page.findChild(type(page.save_button), "saveCsvButton"), Qt.MouseButton.LeftButton)
    with open(out, newline="", encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    assert written[0].keys() == expected.keys()
    assert written[0]["file"] == expected["file"] == str(image)
    for key in ("label", "label_2", "label_3"):
        assert written[0][key] == expected[key]
    for key in ("probability", "probability_2", "probability_3"):
        assert float(written[0][key]) == pytest.approx(float(expected[key]), abs=2e-6)
    assert "Saved 1 predictions" in page.message.text()


def test_a_text_file_and_a_broken_photo_get_their_reason_in_the_list(qtbot, opened, tmp_path):
    page = opened
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    good = photo(tmp_path / "good.png", (30, 200, 40))
    with qtbot.waitSignal(page.predictionsFinished, timeout=30_000):
        assert drop(page, [notes, broken, good])  # anywhere on the step, not only on the drop area
    found, texts = rows(page)
    assert [Path(r.path).name for r in found] == ["notes.txt", "broken.jpg", "good.png"]
    assert found[0].error and texts[0].startswith("notes.txt: ") and str(notes) not in texts[0]
    assert found[1].error and texts[1].startswith("broken.jpg: ")
    assert found[2].error is None and found[2].predictions
    assert page.count_label.text() == "1 photo predicted, 2 could not be read"
    expected = cli_rows(page.model_path, [notes, broken, good], tmp_path / "cli.csv")
    assert [r["error"] for r in expected[:2]] == [found[0].error, found[1].error]


def test_a_dropped_folder_of_50_photos_streams_in_without_blocking_the_window(qtbot, opened, tmp_path):
    page = opened
    folder = tmp_path / "photos"
    colours = [(220, 40, 30), (30, 200, 40), (30, 40, 220)]
    for i in range(50):
        # Camera-like sizes, so decoding is real work.
        photo(folder / f"sub{i % 2}" / f"img_{i:02d}.jpg", colours[i % 3], size=(640, 480), seed=i)
    (folder / ".hidden.jpg").write_bytes(b"litter")

    inserted = []
    page.list.model().rowsInserted.connect(lambda parent, first, last: inserted.append(last - first + 1))
    longest, last = [0.0], [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        longest[0] = max(longest[0], now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    started = time.perf_counter()
    with qtbot.waitSignal(page.predictionsFinished, timeout=120_000):
        assert drop(page.drop_area, [folder])
        last[0] = time.perf_counter()
    elapsed = time.perf_counter() - started
    timer.stop()

    found, _ = rows(page)
    assert len(found) == 50 and all(r.error is None and r.predictions for r in found)
    assert [Path(r.path).name for r in found] == sorted(
        f"img_{i:02d}.jpg" for i in range(50) if i % 2 == 0
    ) + sorted(f"img_{i:02d}.jpg" for i in range(50) if i % 2 == 1)
    assert len(inserted) > 1, "rows arrive as they finish, not all at the end"
    # The window kept answering: its 10 ms timer never waited long (generous bound: the test machine is shared).
    assert longest[0] < 0.5, (
        f"GUI thread stalled {longest[0] * 1000:.0f} ms while predicting ({elapsed:.1f} s)"
    )
    assert page.count_label.text() == "50 photos predicted"


def test_an_onnx_file_that_is_not_a_bit_studio_export_is_refused(qtbot, page, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    foreign = tmp_path / "resnet.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(foreign))
    page.open_model(str(foreign))
    qtbot.waitUntil(lambda: page.open_button.isEnabled(), timeout=30_000)
    assert page.predictor is None
    assert "is not a BiT Studio model" in page.message.text()
    assert "No model open" in page.model_label.text()

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not onnx at all")
    page.open_model(str(garbage))
    qtbot.waitUntil(lambda: page.open_button.isEnabled(), timeout=30_000)
    assert "not a readable ONNX model" in page.message.text()


def test_photos_dropped_before_a_model_wait_for_it(qtbot, page, onnx_model, tmp_path, monkeypatch):
    image = photo(tmp_path / "blue.png", (30, 40, 220))
    assert drop(page.drop_area, [image])
    assert "Open a model first" in page.message.text()
    assert page.list.model().rowCount() == 0
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", lambda *a, **k: (str(onnx_model), "ONNX model (*.onnx)")
    )
    with qtbot.waitSignal(page.predictionsFinished, timeout=30_000):
        qtbot.mouseClick(page.findChild(type(page.open_button), "openModelButton"), Qt.MouseButton.LeftButton)
    found, _ = rows(page)
    assert len(found) == 1 and found[0].predictions
    assert not page.message.isVisible()


def test_drag_of_something_that_is_not_a_file_is_not_accepted(qtbot, page):
    mime = QMimeData()
    mime.setText("just text")
    enter, drop = send_drop(page.drop_area, mime)
    assert drop is None
    assert not enter.isAccepted()


def test_thumbnails_beyond_the_cache_are_let_go_and_decoded_again(qtbot, tmp_path):
    from app.widgets.prediction_list import PredictionList, PredictionRow
    from app.widgets.thumbnails import decode_thumbnail

    view = PredictionList()
    qtbot.addWidget(view)
    model = view.prediction_model
    model.THUMBNAIL_CACHE = 3
    paths = [photo(tmp_path / f"p{i}.png", (40 * i, 100, 100), seed=i) for i in range(5)]
    model.append(
        PredictionRow(str(p), predictions=(("red", 0.9),), thumbnail=decode_thumbnail(p, 32)) for p in paths
    )
    try:
        assert model.cached_thumbnails() == 3
        assert all(r.thumbnail is None for r in model.rows())  # the rows hold no pictures themselves
        first = model.index(0)
        assert first.data(Qt.ItemDataRole.DecorationRole) is None  # let go: asked for again
        qtbot.waitUntil(lambda: first.data(Qt.ItemDataRole.DecorationRole) is not None, timeout=10_000)
        assert model.cached_thumbnails() == 3
    finally:
        view.thumbnails.shutdown()
