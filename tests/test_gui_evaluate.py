"""The Evaluate step: the run's report on screen, the images behind a matrix cell, another folder, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shown
from gui_runs import make_confusing_folder, shared_exported_run
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from app.widgets.confusion_matrix import RATE_ROLE, ConfusionMatrixModel, ConfusionMatrixView


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return shared_exported_run(tmp_path_factory)[0]


@pytest.fixture
def page(evaluate_page):
    return evaluate_page


def _load(qtbot, page, run):
    with qtbot.waitSignal(page.evaluationShown, timeout=30_000):
        page.load_run(str(run))


def _click_cell(qtbot, view, row, column):
    rect = view.visualRect(view.model().index(row, column))
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_matrix_equals_the_report_and_a_cell_shows_its_images(qtbot, page, run):
    report = json.loads((run / "report.json").read_text())
    _load(qtbot, page, run)

    matrix = page.findChild(ConfusionMatrixView, "confusionMatrix")
    model = matrix.model()
    classes = report["classes"]
    n = len(classes)
    assert [model.headerData(i, Qt.Orientation.Horizontal) for i in range(n)] == classes
    assert [model.headerData(i, Qt.Orientation.Vertical) for i in range(n)] == classes
    counts = [[model.index(r, c).data() for c in range(n)] for r in range(n)]
    assert counts == report["confusion"]
    assert page.accuracy_label.text() == f"{report['accuracy']:.1%}"
    assert f"on {report['num_images']} validation images" in page.summary_label.text()

    # The report of this run has mistakes: a blue photo taken for green, say. Clicking that cell lists them.
    mistakes = report["misclassified"]
    assert mistakes, "the fixture run is expected to make mistakes"
    true, predicted = classes.index(mistakes[0]["true"]), classes.index(mistakes[0]["predicted"])
    row_total = sum(report["confusion"][true])
    count = report["confusion"][true][predicted]
    tip = model.index(true, predicted).data(Qt.ItemDataRole.ToolTipRole)
    assert tip.startswith(f"{count} {classes[true]} image")
    assert f"predicted as {classes[predicted]} ({count / row_total:.0%} of {classes[true]})" in tip
    _click_cell(qtbot, matrix, true, predicted)
    gallery = page.gallery
    shown = [gallery.model().index(i).data() for i in range(gallery.model().rowCount())]
    expected = [m for m in mistakes if m["true"] == classes[true] and m["predicted"] == classes[predicted]]
    assert len(shown) == count == len(expected)
    assert shown[0] == f"{classes[true]} taken for {classes[predicted]} ({expected[0]['confidence']:.0%})"
    confidences = [gallery.gallery_model.item(i).confidence for i in range(len(shown))]
    assert confidences == sorted(confidences, reverse=True)
    assert classes[predicted] in page.cell_label.text()

    # Thumbnails arrive from the background decoder.
    qtbot.waitUntil(lambda: gallery.gallery_model.thumbnail(gallery.gallery_model.item(0).path) is not None)

    # Clicking the thumbnail shows it large, with the model's top 3; its top answer is the report's.
    with qtbot.waitSignal(page.topKShown, timeout=30_000) as top:
        rect = gallery.visualRect(gallery.model().index(0))
        qtbot.mouseClick(gallery.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    label, probability = top.args[0][0]
    assert label == expected[0]["predicted"]
    assert probability == pytest.approx(expected[0]["confidence"], abs=1e-5)
    assert len(top.args[0]) == 3
    qtbot.waitUntil(
        lambda: page.detail.image_label.pixmap() is not None and not page.detail.image_label.pixmap().isNull()
    )

    # A diagonal cell lists the correct answers (all validation images of the class not among the mistakes);
    # the report has no confidence for them, so the page measures it in the background, least sure first.
    _click_cell(qtbot, matrix, predicted, predicted)
    assert gallery.model().rowCount() == report["confusion"][predicted][predicted]
    items = gallery.gallery_model.items
    qtbot.waitUntil(lambda: all(i.confidence is not None for i in items()), timeout=30_000)
    measured = [i.confidence for i in items()]
    assert measured == sorted(measured)
    assert "least sure first" in page.cell_label.text()
    from bit_engine.inference import Predictor

    top = Predictor(run / "model.onnx").predict(items()[0].path, top_k=1)[0]
    assert (top.label, top.probability) == (classes[predicted], pytest.approx(measured[0], abs=1e-4))


def test_class_table_is_sortable_by_number(qtbot, page, run):
    report = json.loads((run / "report.json").read_text())
    _load(qtbot, page, run)
    table = page.metrics_table
    model = table.model()
    assert model.rowCount() == len(report["classes"])
    headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert headers == ["Class", "Precision", "Recall", "F1", "Support"]
    table.sortByColumn(2, Qt.SortOrder.DescendingOrder)
    recalls = [model.index(r, 2).data() for r in range(model.rowCount())]
    expected = sorted((m["recall"] for m in report["per_class"].values()), reverse=True)
    assert recalls == [f"{r:.1%}" for r in expected]
    supports = {model.index(r, 0).data(): int(model.index(r, 4).data()) for r in range(model.rowCount())}
    assert supports == {name: m["support"] for name, m in report["per_class"].items()}


def test_evaluate_on_another_folder_in_the_background(qtbot, page, run, tmp_path, monkeypatch):
    folder = make_confusing_folder(tmp_path / "test set")
    _load(qtbot, page, run)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    with qtbot.waitSignal(page.evaluationShown, timeout=60_000) as shown:
        qtbot.mouseClick(page.folder_button, Qt.MouseButton.LeftButton)
        assert page.progress.isVisible()  # the evaluation runs in the background, with progress
    evaluation = shown.args[0]
    assert not evaluation.is_validation
    assert evaluation.report["num_images"] == 11
    assert str(folder) in page.summary_label.text()
    classes = evaluation.classes
    red = classes.index("red")
    # The three green photos filed under "red" are all wrong; the matrix row says where they went.
    model = page.matrix.model()
    assert sum(model.index(red, c).data() for c in range(len(classes))) == 3
    assert model.index(red, red).data() == 0
    wrong_cell = max(range(len(classes)), key=lambda c: model.index(red, c).data())
    _click_cell(qtbot, page.matrix, red, wrong_cell)
    paths = [Path(page.gallery.gallery_model.item(i).path) for i in range(page.gallery.model().rowCount())]
    assert paths and all(p.parent == folder / "red" and p.is_file() for p in paths)

    assert page.validation_button.isVisible()
    qtbot.mouseClick(page.validation_button, Qt.MouseButton.LeftButton)
    assert page.evaluation.is_validation and not page.validation_button.isVisible()


def test_another_folder_without_known_classes_says_so(qtbot, page, run, tmp_path):
    from conftest import make_color_folder

    folder = make_color_folder(tmp_path / "other", classes=("yellow",), per_class=2)
    _load(qtbot, page, run)
    page.evaluate_folder(str(folder))
    qtbot.waitUntil(lambda: page.message.isVisible(), timeout=30_000)
    assert "None of the classes" in page.message.text()
    assert page.evaluation.is_validation  # what was shown stays


def test_export_shows_its_figures_and_feeds_predict(qtbot, page, run, tmp_path, monkeypatch):
    out = tmp_path / "exports" / "colours"  # no suffix: the panel adds .onnx
    out.parent.mkdir()
    _load(qtbot, page, run)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), "ONNX model (*.onnx)"))
    panel = page.export_panel
    panel.int8_box.setChecked(True)
    with qtbot.waitSignal(page.state.modelExported, timeout=180_000) as exported:
        qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
        assert not panel.export_button.isEnabled() and panel.progress.isVisible()
    path = Path(exported.args[0])
    assert path == out.with_suffix(".onnx") and path.is_file()
    assert page.state.onnx_path == str(path)
    e, q = panel.result.export, panel.result.quantized
    text = panel.status.text()
    assert str(path) in text
    assert f"for {e.top1_agree} of {e.n_images}" in text and f"{e.max_abs_prob_diff:.1e}" in text
    assert q is not None and Path(q.path).is_file() and "int8 copy" in text
    assert f"{q.speedup:.2f}x" in text
    qtbot.waitUntil(lambda: panel.export_button.isEnabled())


def test_export_replaces_a_foreign_file_only_when_the_save_dialog_agreed(
    qtbot, page, run, tmp_path, monkeypatch
):
    foreign = tmp_path / "notes.onnx"
    foreign.write_bytes(b"someone else's file")
    _load(qtbot, page, run)
    panel = page.export_panel
    panel.int8_box.setChecked(False)
    # Without the dialog's agreement (a script calling export_to): the engine keeps the person's file.
    panel.export_to(str(foreign))
    qtbot.waitUntil(lambda: not panel.is_busy(), timeout=180_000)
    assert foreign.read_bytes() == b"someone else's file"
    assert page.state.onnx_path != str(foreign)
    # Through the button: the save dialog asked "replace?" before returning the path, so it is replaced.
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(foreign), "ONNX model (*.onnx)"))
    with qtbot.waitSignal(page.state.modelExported, timeout=180_000):
        qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    assert foreign.read_bytes() != b"someone else's file" and page.state.onnx_path == str(foreign)
    qtbot.waitUntil(lambda: panel.export_button.isEnabled())


def test_failed_verification_says_so_and_keeps_the_previous_file(qtbot, page, run, tmp_path, monkeypatch):
    from bit_engine import export, run_export

    previous = tmp_path / "model.onnx"
    previous.write_bytes(b"the earlier export")

    def failing_export(run_dir, out_path=None, **kwargs):
        raise export.ExportVerificationError(
            "The exported model does not predict like the trained one, so it was not saved: largest "
            "probability difference 0.2 (allowed 0.0001), same top-1 class on 5 of 6 images.",
            {"max_abs_prob_diff": 0.2},
        )

    monkeypatch.setattr(run_export, "export_run", failing_export)
    _load(qtbot, page, run)
    panel = page.export_panel
    panel.export_to(str(previous))
    assert not panel.export_button.isEnabled()
    qtbot.waitUntil(lambda: panel.export_button.isEnabled(), timeout=30_000)
    text = panel.status.text()
    assert "failed its check" in text and "same top-1 class on 5 of 6" in text
    assert "left as it was" in text
    assert previous.read_bytes() == b"the earlier export"
    assert page.state.onnx_path is None


def test_hundred_classes_fit_with_tooltips(qtbot):
    model = ConfusionMatrixModel()
    view = ConfusionMatrixView()
    view.setModel(model)
    shown(qtbot, view, (700, 600))
    classes = [f"species {i:03d}" for i in range(100)]
    counts = [[(20 if r == c else (3 if c == (r + 1) % 100 else 0)) for c in range(100)] for r in range(100)]
    model.set_matrix(classes, counts)
    view.zoom_to_fit()
    qtbot.wait(10)
    assert view.cell_size >= 3
    assert not view.horizontalScrollBar().isVisible() and not view.verticalScrollBar().isVisible()
    index = model.index(5, 6)
    assert (
        index.data(Qt.ItemDataRole.ToolTipRole)
        == "3 species 005 images predicted as species 006 (13% of species 005)"
    )
    assert index.data(RATE_ROLE) == pytest.approx(3 / 23)
    # Colour follows the row-normalised rate: a bigger share of a row is a stronger red.
    light = model.index(7, 8).data(Qt.ItemDataRole.BackgroundRole)
    counts[9][10] = 20
    model.set_matrix(classes, counts)
    strong = model.index(9, 10).data(Qt.ItemDataRole.BackgroundRole)
    assert strong.green() < light.green()
    # Zooming in makes the matrix scroll; clicking still answers with (true, predicted).
    for _ in range(10):
        view.zoom_in()
    assert view.cell_size > 20
    with qtbot.waitSignal(view.cellChosen) as chosen:
        _click_cell(qtbot, view, 1, 2)
    assert chosen.args == [1, 2]


def test_two_classes_are_big_and_labelled(qtbot):
    model = ConfusionMatrixModel()
    view = ConfusionMatrixView()
    qtbot.addWidget(view)
    view.setModel(model)
    view.resize(500, 400)
    view.show()
    model.set_matrix(["cats", "dogs"], [[9, 1], [0, 10]])
    view.zoom_to_fit()
    assert view.cell_size >= 60
    assert view.horizontalHeader().height() > view.fontMetrics().horizontalAdvance("dogs")
    assert (
        model.index(0, 1).data(Qt.ItemDataRole.ToolTipRole) == "1 cats image predicted as dogs (10% of cats)"
    )
    assert (
        model.index(1, 1).data(Qt.ItemDataRole.ToolTipRole)
        == "10 dogs images predicted correctly (100% of dogs)"
    )


def test_from_the_report_to_a_prediction_in_the_window(qtbot, window, run, tmp_path, monkeypatch):
    """The path through the window: report on screen -> a cell's images -> export -> drop -> the CLI's answer."""
    from gui_runs import cli_rows, drop
    from PIL import Image

    report = json.loads((run / "report.json").read_text())
    evaluate, predict = window.pages["evaluate"], window.pages["predict"]
    with qtbot.waitSignal(evaluate.evaluationShown, timeout=30_000):
        window.state.set_run(str(run))
    window.go_to("evaluate")
    assert window.step_reason("evaluate") is None
    matrix = window.findChild(ConfusionMatrixView, "confusionMatrix")
    assert matrix.isVisible()
    n = len(report["classes"])
    assert [[matrix.model().index(r, c).data() for c in range(n)] for r in range(n)] == report["confusion"]
    _click_cell(qtbot, matrix, 0, 0)
    assert evaluate.gallery.model().rowCount() == report["confusion"][0][0]

    out = tmp_path / "exported.onnx"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    with qtbot.waitSignal(predict.modelOpened, timeout=180_000):  # the export is opened in Predict at once
        qtbot.mouseClick(
            window.findChild(type(evaluate.export_panel.export_button), "exportButton"),
            Qt.MouseButton.LeftButton,
        )
    assert predict.model_path == str(out)

    window.go_to("predict")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (50, 40), (40, 60, 210)).save(photo)
    with qtbot.waitSignal(predict.predictionsFinished, timeout=30_000):
        assert drop(window.findChild(type(predict.drop_area), "predictDropArea"), [photo])
    shown = predict.list.model().index(0).data()
    expected = cli_rows(out, [photo], tmp_path / "cli.csv")[0]
    assert shown == f"photo.png: {expected['label']} {float(expected['probability']):.1%}"
    csv_path = tmp_path / "gui.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(csv_path), ""))
    qtbot.mouseClick(window.findChild(type(predict.save_button), "saveCsvButton"), Qt.MouseButton.LeftButton)
    assert csv_path.read_text().splitlines()[1].startswith(f"{photo},{expected['label']},")


def test_zoom_keys_and_fit(qtbot, page, run):
    _load(qtbot, page, run)
    matrix = page.matrix
    fitted = matrix.cell_size
    matrix.setFocus()
    qtbot.keyClick(matrix, Qt.Key.Key_Plus, Qt.KeyboardModifier.ControlModifier)
    assert matrix.cell_size > fitted
    qtbot.keyClick(matrix, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)
    assert matrix.cell_size == fitted
    qtbot.mouseClick(page.findChild(type(page.fit_button), "matrixZoomOutButton"), Qt.MouseButton.LeftButton)
    assert matrix.cell_size < fitted


def test_class_names_are_shown_as_text_never_as_markup(qtbot):
    from app.widgets.mistake_gallery import GalleryItem, PhotoDetail

    detail = PhotoDetail()
    qtbot.addWidget(detail)
    detail.show_item(GalleryItem("/photos/<img src=x>.jpg", "<b>bees</b>", "ants", 0.9))
    assert "&lt;b&gt;bees&lt;/b&gt;" in detail.title.text() and "<b>bees</b>" not in detail.title.text()
    detail.set_top_k([("<i>ants</i>", 0.9), ("<b>bees</b>", 0.1)])
    captions = [label.text() for label in detail.bars.findChildren(type(detail.title))]
    assert "<i>ants</i>" in captions and all(
        label.textFormat() == Qt.TextFormat.PlainText
        for label in detail.bars.findChildren(type(detail.title))
    )


def test_cancelling_another_folder_keeps_what_was_shown(qtbot, page, run, tmp_path):
    folder = make_confusing_folder(tmp_path / "test set")
    _load(qtbot, page, run)
    page.evaluate_folder(str(folder))
    assert page.cancel_button.isVisible()
    qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)  # before the engine's first check
    qtbot.waitUntil(lambda: not page.progress.isVisible(), timeout=60_000)
    assert page.message.text() == "Evaluation cancelled."
    assert page.evaluation.is_validation and page.folder_button.isEnabled()
