"""The Evaluate step: how good the trained model is, where it goes wrong, and the export of the model.

What the page shows comes from the run's own report (report.json, written by the engine at the end of
training on the validation split) or from an evaluation on another labelled folder (a held-out test set),
run by the engine in the background. Clicking a cell of the confusion matrix shows the images behind it;
clicking one of those shows it large with the model's top 3, computed by the run's model in the background.
The validation photos are photos of the run's own folder: the large view records label corrections for them
("This photo belongs to…", "Leave it out"), kept by the engine's `CorrectionStore` for the next run, and the
gallery marks the corrected ones.

Driving the page from a script: `load_run(run_dir)` (then wait for `evaluationShown`), `show_cell(true,
predicted)`, `evaluate_folder(path)`, and the export panel's `export_to(path)`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QFont, QImage, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app import label_corrections
from app.pages.export_panel import ExportPanel
from app.state import AppState
from app.widgets.confusion_matrix import ConfusionMatrixModel, ConfusionMatrixView
from app.widgets.mistake_gallery import GalleryItem, MistakeGallery, PhotoDetail
from app.widgets.thumbnails import ThumbnailLoader
from app.workers import Worker, WorkerGroup, user_message

#: Sort key of a metrics cell (numbers sort as numbers, not as "9.0%" < "10.0%").
SORT_ROLE = Qt.ItemDataRole.UserRole + 1


@dataclass(frozen=True)
class Evaluation:
    """One evaluation as the page shows it.

    Attributes:
        run_dir: the run whose model was evaluated.
        source: "validation" (the run's own split) or the folder evaluated.
        report: the engine's report (accuracy, per_class, confusion, classes, misclassified...).
        root: the folder the report's file paths are relative to.
        files: every evaluated file per true class (relative to `root`), to list the correct answers of a
            diagonal cell; the report itself keeps only the mistakes.
    """

    run_dir: str
    source: str
    report: dict
    root: str
    files: dict[str, list[str]] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.report["classes"])

    @property
    def is_validation(self) -> bool:
        return self.source == "validation"

    def cell_items(self, true: int, predicted: int) -> list[GalleryItem]:
        """The images of one confusion cell: mistakes most confident first; correct answers in file order."""
        classes = self.classes
        t, p = classes[true], classes[predicted]
        mistakes = self.report.get("misclassified", [])
        if t != p:
            # The report lists mistakes most confident first: the ones worth looking at.
            return [
                GalleryItem(str(Path(self.root, m["file"])), t, p, float(m["confidence"]))
                for m in mistakes
                if m["true"] == t and m["predicted"] == p
            ]
        wrong = {m["file"] for m in mistakes if m["true"] == t}
        return [GalleryItem(str(Path(self.root, f)), t, t) for f in self.files.get(t, []) if f not in wrong]


def _files_by_class(samples, classes: Sequence[str], known: Sequence[str] | None = None) -> dict[str, list]:
    out: dict[str, list[str]] = {}
    for s in samples:
        name = classes[s.label]
        if known is None or name in known:
            out.setdefault(name, []).append(s.path)
    return out


def _read_validation(run_dir: str):
    """The run's validation report and split, for the page (runs in a Worker)."""

    def call(on_progress, cancel):
        from bit_engine.holdout import Split
        from bit_engine.runs import RunDir, read_report

        report = read_report(run_dir).to_dict()
        split = Split.from_dict(RunDir(run_dir).read_json("split.json"))
        files = _files_by_class(split.val, split.classes)
        return Evaluation(run_dir, "validation", report, split.root, files)

    return call


def _evaluate(run_dir: str, folder: str | None):
    """Evaluate the run's model with the engine (validation split when `folder` is None), in a Worker."""

    def call(on_progress, cancel):
        from bit_engine import data
        from bit_engine.evaluate import evaluate_run

        # Progress ("scanning", then "evaluating") and cancel go straight to the engine, which ends a
        # cancelled evaluation with OperationCancelled.
        report = evaluate_run(run_dir, folder, on_progress=on_progress, cancel=cancel).to_dict()
        if folder is None:
            return _read_validation(run_dir)(on_progress, cancel)
        # The report keeps mistakes only; the folder's listing names the correct answers too.
        scan = data.scan(folder)
        files = _files_by_class((*scan.train, *scan.val), scan.classes, report["classes"])
        return Evaluation(run_dir, folder, report, scan.root, files)

    return call


class _RunModel:
    """The run's PyTorch model, for the probabilities of single photos (used from Workers only)."""

    def __init__(self, run_dir: str):
        from bit_engine.runs import RunDir

        run = RunDir(run_dir)
        self.run_dir = run_dir
        self.model, meta = run.load_model()
        self.classes = list(meta["classes"])
        self.preprocessing = run.preprocessing()

    def probabilities(self, paths: Sequence[str], cancel=None):
        """Class probabilities (N x classes, a torch tensor) of `paths`; None when cancelled."""
        import torch

        from bit_engine.evaluate import predict_dataset
        from bit_engine.transforms import ImageDataset

        # The evaluation's own code path, so the numbers match the report's confidences.
        dataset = ImageDataset(list(paths), [0] * len(paths), self.preprocessing, train=False)
        result = predict_dataset(self.model, dataset, torch.device("cpu"), cancel=cancel)
        return None if result is None else result[0].softmax(1)

    def top_k(self, path: str, k: int = 3) -> list[tuple[str, float]]:
        probabilities = self.probabilities([path])[0]
        values, indices = probabilities.topk(min(k, len(self.classes)))
        return [(self.classes[i], float(v)) for v, i in zip(values.tolist(), indices.tolist(), strict=True)]


class _ModelCache:
    """One `_RunModel` at a time, loaded on first use by whichever Worker needs it first."""

    def __init__(self):
        self._lock = threading.Lock()
        self._model: _RunModel | None = None

    def get(self, run_dir: str) -> _RunModel:
        with self._lock:
            if self._model is None or self._model.run_dir != run_dir:
                self._model = None  # free the old weights before loading the new ones
                self._model = _RunModel(run_dir)
            return self._model

    def clear(self) -> None:
        with self._lock:
            self._model = None


class ClassMetricsModel(QAbstractTableModel):
    """Precision, recall, F1 and support per class; numbers under `SORT_ROLE` for sorting."""

    HEADERS = ("Class", "Precision", "Recall", "F1", "Support")
    TIPS = (
        "The class (a folder of your photos)",
        "Of the images the model called this class, the share that really are",
        "Of the images of this class, the share the model recognised",
        "The balance of precision and recall (their harmonic mean)",
        "How many images of this class were evaluated",
    )

    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list[tuple[str, float, float, float, int]] = []

    def set_report(self, report: dict | None) -> None:
        self.beginResetModel()
        self._rows = []
        if report is not None:
            for name in report["classes"]:
                m = report["per_class"][name]
                self._rows.append((name, m["precision"], m["recall"], m["f1"], int(m["support"])))
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, column = self._rows[index.row()], index.column()
        value = row[column]
        if role == Qt.ItemDataRole.DisplayRole:
            if column in (1, 2, 3):
                return f"{value:.1%}"
            return str(value)
        if role == SORT_ROLE:
            return value if column else str(value).casefold()
        if role == Qt.ItemDataRole.TextAlignmentRole and column:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.TIPS[section]
        return None


class EvaluatePage(QWidget):
    """The Evaluate step.

    Signals:
        evaluationShown(object): an `Evaluation` is now on screen (the run's, or another folder's).
        topKShown(object): the top 3 of the photo shown large, as (label, probability) pairs.
    """

    evaluationShown = Signal(object)
    topKShown = Signal(object)

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.evaluation: Evaluation | None = None
        self.validation: Evaluation | None = None  # kept to come back to after another folder
        self._run_dir: str | None = None
        self._models = _ModelCache()
        self._confidence_worker: Worker | None = None
        self._workers = WorkerGroup()
        self._evaluation_worker: Worker | None = None
        self._top_k_worker: Worker | None = None
        self._pending_photo: GalleryItem | None = None
        self.thumbnails = ThumbnailLoader(size=128, parent=self)
        self.photos = ThumbnailLoader(size=640, threads=1, parent=self)
        self.photos.loaded.connect(self._on_photo_loaded)
        self.photos.failed.connect(self._on_photo_failed)
        self._build()
        state.runChanged.connect(self._on_run_changed)
        state.correctionsChanged.connect(self._on_corrections_changed)
        if state.run_dir:
            self._on_run_changed(state.run_dir)

    # ------------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.accuracy_label = QLabel("–", self)
        self.accuracy_label.setObjectName("accuracyLabel")
        self.accuracy_label.setAccessibleName("Accuracy")
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() * 2.6)
        font.setBold(True)
        self.accuracy_label.setFont(font)
        self.summary_label = QLabel("Train a model (or pick a finished run) to see how well it does.", self)
        self.summary_label.setObjectName("evaluationSummary")
        self.summary_label.setAccessibleName("What was evaluated")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.PlainText)  # folder and class names are data
        self.folder_button = QPushButton("Evaluate on another folder…", self)
        self.folder_button.setObjectName("evaluateFolderButton")
        self.folder_button.setAccessibleName("Evaluate on another labelled folder")
        self.folder_button.setToolTip(
            "A held-out test set: a folder with one sub-folder per class, named as in training"
        )
        self.folder_button.clicked.connect(self._on_folder_clicked)
        self.validation_button = QPushButton("Back to the validation results", self)
        self.validation_button.setObjectName("showValidationButton")
        self.validation_button.setAccessibleName("Show the validation results again")
        self.validation_button.clicked.connect(self._on_validation_clicked)
        self.validation_button.hide()
        self.progress = QProgressBar(self)
        self.progress.setObjectName("evaluateProgress")
        self.progress.setAccessibleName("Evaluation progress")
        self.progress.setFormat("Evaluating: %v of %m images")
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName("evaluateCancelButton")
        self.cancel_button.setAccessibleName("Cancel the evaluation")
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        self.cancel_button.hide()
        self.message = QLabel(self)
        self.message.setObjectName("evaluateMessage")
        self.message.setAccessibleName("Evaluation message")
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.hide()

        numbers = QVBoxLayout()
        numbers.setSpacing(0)
        numbers.addWidget(self.accuracy_label)
        numbers.addWidget(self.summary_label)
        top = QHBoxLayout()
        top.addLayout(numbers, 1)
        top.addWidget(self.validation_button, 0, Qt.AlignmentFlag.AlignBottom)
        top.addWidget(self.folder_button, 0, Qt.AlignmentFlag.AlignBottom)
        busy = QHBoxLayout()
        busy.addWidget(self.progress, 1)
        busy.addWidget(self.cancel_button)

        # Left: the matrix and the per-class table.
        self.matrix_model = ConfusionMatrixModel(self)
        self.matrix = ConfusionMatrixView(self)
        self.matrix.setObjectName("confusionMatrix")
        self.matrix.setAccessibleName("Confusion matrix: rows are true classes, columns predicted classes")
        self.matrix.setModel(self.matrix_model)
        self.matrix.cellChosen.connect(self.show_cell)
        matrix_caption = QLabel("<b>Confusion matrix</b> — rows: true class, columns: predicted class", self)
        matrix_caption.setWordWrap(True)
        self.fit_button = QPushButton("Fit", self)
        self.fit_button.setObjectName("matrixFitButton")
        self.fit_button.setAccessibleName("Zoom the matrix to fit")
        self.fit_button.clicked.connect(self.matrix.zoom_to_fit)
        zoom_out = QPushButton("−", self)
        zoom_out.setObjectName("matrixZoomOutButton")
        zoom_out.setAccessibleName("Zoom the matrix out")
        zoom_out.clicked.connect(self.matrix.zoom_out)
        zoom_in = QPushButton("+", self)
        zoom_in.setObjectName("matrixZoomInButton")
        zoom_in.setAccessibleName("Zoom the matrix in")
        zoom_in.clicked.connect(self.matrix.zoom_in)
        for button in (zoom_out, zoom_in):
            button.setFixedWidth(button.sizeHint().height() + 6)
        # The usual zoom keys, while the matrix has the focus (Ctrl + wheel works too).
        for keys, slot, button in (
            (QKeySequence.StandardKey.ZoomIn, self.matrix.zoom_in, zoom_in),
            (QKeySequence.StandardKey.ZoomOut, self.matrix.zoom_out, zoom_out),
            (QKeySequence("Ctrl+0"), self.matrix.zoom_to_fit, self.fit_button),
        ):
            shortcut = QShortcut(keys, self.matrix, context=Qt.ShortcutContext.WidgetShortcut)
            shortcut.activated.connect(slot)
            sequence = QKeySequence(keys).toString(QKeySequence.SequenceFormat.NativeText)
            button.setToolTip(f"{button.accessibleName()} ({sequence}, or Ctrl + mouse wheel)")
        matrix_bar = QHBoxLayout()
        matrix_bar.addWidget(matrix_caption, 1)
        for button in (self.fit_button, zoom_out, zoom_in):
            matrix_bar.addWidget(button)
        matrix_box = QWidget(self)
        matrix_layout = QVBoxLayout(matrix_box)
        matrix_layout.setContentsMargins(0, 0, 0, 0)
        matrix_layout.addLayout(matrix_bar)
        matrix_layout.addWidget(self.matrix, 1)

        self.metrics_model = ClassMetricsModel(self)
        self.metrics_proxy = QSortFilterProxyModel(self)
        self.metrics_proxy.setSourceModel(self.metrics_model)
        self.metrics_proxy.setSortRole(SORT_ROLE)
        self.metrics_table = QTableView(self)
        self.metrics_table.setObjectName("classMetricsTable")
        self.metrics_table.setAccessibleName("Precision, recall, F1 and support per class")
        self.metrics_table.setModel(self.metrics_proxy)
        self.metrics_table.setSortingEnabled(True)
        self.metrics_table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.metrics_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.metrics_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.metrics_table.verticalHeader().hide()
        self.metrics_table.setAlternatingRowColors(True)
        header = self.metrics_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(ClassMetricsModel.HEADERS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)

        left = QSplitter(Qt.Orientation.Vertical, self)
        left.addWidget(matrix_box)
        left.addWidget(self.metrics_table)
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 2)

        # Right: the images of the chosen cell, and the chosen image large.
        self.cell_label = QLabel("Click a cell of the matrix to see its images.", self)
        self.cell_label.setObjectName("cellLabel")
        self.cell_label.setAccessibleName("Images shown")
        self.cell_label.setWordWrap(True)
        self.cell_label.setTextFormat(Qt.TextFormat.PlainText)
        self.gallery = MistakeGallery(self.thumbnails, self)
        self.gallery.setObjectName("mistakeGallery")
        self.gallery.setAccessibleName("Images of the chosen cell")
        self.gallery.itemChosen.connect(self.show_photo)
        self.detail = PhotoDetail(self)
        self.detail.setObjectName("photoDetail")
        self.detail.correctionAsked.connect(self._on_correction_asked)
        self.detail.undoAsked.connect(self._on_undo_asked)
        gallery_box = QWidget(self)
        gallery_layout = QVBoxLayout(gallery_box)
        gallery_layout.setContentsMargins(0, 0, 0, 0)
        gallery_layout.addWidget(self.cell_label)
        gallery_layout.addWidget(self.gallery, 1)
        right = QSplitter(Qt.Orientation.Vertical, self)
        right.addWidget(gallery_box)
        right.addWidget(self.detail)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 2)

        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)

        self.export_panel = ExportPanel(self.state, self)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(busy)
        layout.addWidget(self.message)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.export_panel)
        self._show(None)

    # ------------------------------------------------------------------------------------------ public
    def load_run(self, run_dir: str) -> None:
        """Show the run's validation results (evaluating it first when it has no report yet)."""
        self._run_dir = str(run_dir)
        self._models.clear()
        self.validation = None
        self.export_panel.set_run(self._run_dir)
        has_report = (Path(run_dir) / "report.json").is_file()
        call = _read_validation(self._run_dir) if has_report else _evaluate(self._run_dir, None)
        self._start_evaluation(call, counting=not has_report)

    def evaluate_folder(self, folder: str) -> None:
        """Evaluate the run's model on another labelled folder (a held-out test set), in the background."""
        if self._run_dir is None:
            return
        self._start_evaluation(_evaluate(self._run_dir, str(folder)), counting=True)

    def show_validation(self) -> None:
        """Back to the run's own validation results after another folder's."""
        if self.validation is not None:
            self._show(self.validation)

    def show_cell(self, true: int, predicted: int) -> None:
        """Show the images of the confusion cell (true class, predicted class) in the gallery."""
        if self.evaluation is None:
            return
        items = self.evaluation.cell_items(true, predicted)
        sentence = self.matrix_model.describe(true, predicted)
        if self._confidence_worker is not None:
            self._confidence_worker.cancel()
            self._confidence_worker = None
        if true == predicted:
            listed = (
                f"; {len(items)} listed" if len(items) != self.matrix_model.count(true, predicted) else ""
            )
            note = f"{sentence}{listed}."
            if items and self._run_dir is not None:
                note += " Measuring how sure the model was of each…"
                self._start_confidences(items)
        else:
            note = f"{sentence}, the most confident mistakes first." if items else f"{sentence}."
        self.cell_label.setText(note)
        self.gallery.set_items(items)
        self.gallery.scrollToTop()
        index = self.matrix_model.index(true, predicted)
        if self.matrix.currentIndex() != index:
            self.matrix.setCurrentIndex(index)
        self.detail.show_placeholder()

    def show_photo(self, item: GalleryItem) -> None:
        """Show one photo large and ask the run's model for its top 3 (in the background)."""
        self.detail.show_item(item)
        self._offer_corrections()
        self.photos.clear()
        self.photos.request(item.path)
        self._pending_photo = item
        if self._top_k_worker is None:
            self._start_top_k()

    def shutdown(self) -> None:
        self._workers.shutdown()
        self.export_panel.shutdown()
        self.thumbnails.shutdown()
        self.photos.shutdown()

    # ------------------------------------------------------------------------------------------ showing
    def _show(self, evaluation: Evaluation | None) -> None:
        self.evaluation = evaluation
        self.gallery.set_items([])
        self.detail.show_placeholder()
        if evaluation is None:
            self.matrix_model.clear()
            self.metrics_model.set_report(None)
            self.accuracy_label.setText("–")
            self.cell_label.setText("Click a cell of the matrix to see its images.")
            self.folder_button.setEnabled(False)
            self.validation_button.hide()
            return
        report = evaluation.report
        self.matrix_model.set_matrix(report["classes"], report["confusion"])
        self.metrics_model.set_report(report)
        n = int(report["num_images"])
        accuracy = report.get("accuracy")
        self.accuracy_label.setText(f"{accuracy:.1%}" if accuracy is not None else "–")
        wrong = len(report.get("misclassified", []))
        if evaluation.is_validation:
            where = f"on {n} validation image{'s' if n != 1 else ''} (held out from training)"
        else:
            where = f"on {n} image{'s' if n != 1 else ''} of {evaluation.source}"
        details = [f"accuracy {where}: {n - wrong} right, {wrong} wrong."]
        unknown = report.get("unknown_classes") or {}
        if unknown:
            left_out = sum(unknown.values())
            details.append(
                f"{left_out} image{'s' if left_out != 1 else ''} of classes the model does not know "
                f"({', '.join(sorted(unknown))}) left out."
            )
        if report.get("skipped"):
            details.append(f"{report['skipped']} unreadable file(s) skipped.")
        self.summary_label.setText(" ".join(details))
        self.accuracy_label.setToolTip(details[0])
        self.folder_button.setEnabled(True)
        self.validation_button.setVisible(not evaluation.is_validation and self.validation is not None)
        self._refresh_marks()
        self.matrix.zoom_to_fit()
        worst = self._worst_cell(report)
        if worst is None:
            self.cell_label.setText(
                "No mistakes: every image was classified correctly. Click a cell of the matrix to see its images."
            )
        else:
            self.show_cell(*worst)  # the most frequent confusion: what a person looks for first
        self.evaluationShown.emit(evaluation)

    @staticmethod
    def _worst_cell(report: dict) -> tuple[int, int] | None:
        confusion = report["confusion"]
        cells = [
            (count, t, p)
            for t, row in enumerate(confusion)
            for p, count in enumerate(row)
            if t != p and count
        ]
        if not cells:
            return None
        _, t, p = max(cells, key=lambda c: (c[0], -c[1], -c[2]))
        return t, p

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.evaluation is not None:
            self.matrix.zoom_to_fit()  # the view has its real size only once shown

    # ------------------------------------------------------------------------------------------ corrections
    def _correctable(self) -> Evaluation | None:
        """The evaluation whose photos can be corrected: the run's validation photos, of its own folder."""
        evaluation = self.evaluation
        return evaluation if evaluation is not None and evaluation.is_validation else None

    def _relative(self, evaluation: Evaluation, item: GalleryItem) -> str:
        return Path(item.path).relative_to(evaluation.root).as_posix()

    def _folder_label(self, evaluation: Evaluation, relative: str, shown: str) -> str:
        """The label the photo's folder gives it: a run trained with a correction shows the corrected one."""
        from bit_engine.corrections import run_corrections
        from bit_engine.errors import BitStudioError

        try:
            applied = run_corrections(evaluation.run_dir)
        except BitStudioError:
            applied = None
        used = {c.path: c.given for c in applied.applied} if applied else {}
        return used.get(relative, shown)

    def _store_corrections(self, evaluation: Evaluation) -> dict:
        from bit_engine.corrections import CorrectionStore
        from bit_engine.errors import BitStudioError

        try:
            return {c.path: c for c in CorrectionStore(evaluation.root).corrections()}
        except BitStudioError:
            return {}

    def _refresh_marks(self) -> None:
        evaluation = self._correctable()
        marks = {}
        if evaluation is not None:
            for relative, c in self._store_corrections(evaluation).items():
                path = str(Path(evaluation.root, *relative.split("/")))
                marks[path] = "left out" if c.corrected is None else f"→ {c.corrected}"
        self.gallery.gallery_model.set_marks(marks)
        self._offer_corrections()

    def _offer_corrections(self) -> None:
        evaluation, item = self._correctable(), self.detail.item
        if evaluation is None or item is None:
            self.detail.offer_corrections(None)
            return
        relative = self._relative(evaluation, item)
        current = self._store_corrections(evaluation).get(relative)
        folder_label = current.given if current else self._folder_label(evaluation, relative, item.true)
        mark = label_corrections.outcome(current) if current else None
        self.detail.offer_corrections(evaluation.classes, folder_label, mark)

    def _on_correction_asked(self, item: GalleryItem, target) -> None:
        evaluation = self._correctable()
        if evaluation is None:
            return
        relative = self._relative(evaluation, item)
        label_now = self._folder_label(evaluation, relative, item.true)
        self._change(
            evaluation, lambda: label_corrections.correct(evaluation.root, relative, label_now, target)
        )

    def _on_undo_asked(self, item: GalleryItem) -> None:
        evaluation = self._correctable()
        if evaluation is not None:
            relative = self._relative(evaluation, item)
            self._change(evaluation, lambda: label_corrections.take_back(evaluation.root, [relative]))

    def _change(self, evaluation: Evaluation, action) -> None:
        from bit_engine.errors import BitStudioError

        try:
            action()
        except (BitStudioError, OSError) as exc:
            text = (
                str(exc)
                if isinstance(exc, BitStudioError)
                else f"It could not be saved: {exc.strerror or exc}."
            )
            QMessageBox.warning(self, "The correction was not kept", text)
            return
        self.state.corrections_changed(evaluation.root)  # marks this gallery too, through the signal

    def _on_corrections_changed(self, folder: str) -> None:
        evaluation = self._correctable()
        if evaluation is not None and Path(folder).resolve() == Path(evaluation.root).resolve():
            self._refresh_marks()

    # ------------------------------------------------------------------------------------------ workers
    def _start_evaluation(self, call, counting: bool) -> None:
        if self._evaluation_worker is not None:
            self._evaluation_worker.cancel()
        worker = self._workers.track(Worker(call, self, "evaluate"))
        self._evaluation_worker = worker
        worker.progress.connect(self._on_evaluation_progress)
        worker.succeeded.connect(self._on_evaluation_succeeded)
        worker.failed.connect(self._on_evaluation_failed)
        worker.cancelled.connect(self._on_evaluation_cancelled)
        worker.done.connect(self._on_evaluation_done)
        self.message.hide()
        if counting:
            self.progress.setRange(0, 0)
            self.progress.show()
            self.cancel_button.show()
        self.folder_button.setEnabled(False)
        worker.start()

    def _start_confidences(self, items: list[GalleryItem]) -> None:
        """The report keeps confidences for mistakes only: measure them for a cell of right answers."""
        run_dir, models = self._run_dir, self._models

        def call(on_progress, cancel):
            from bit_engine.progress import OperationCancelled

            model = models.get(run_dir)
            probabilities = model.probabilities([item.path for item in items], cancel)
            if probabilities is None:
                raise OperationCancelled("Stopped measuring.")
            index = {name: i for i, name in enumerate(model.classes)}
            return [
                GalleryItem(item.path, item.true, item.predicted, float(p[index[item.predicted]]))
                for item, p in zip(items, probabilities, strict=True)
            ]

        worker = self._workers.track(Worker(call, self, "confidences"))
        self._confidence_worker = worker
        worker.succeeded.connect(self._on_confidences_measured)
        worker.failed.connect(self._on_confidences_failed)
        worker.start()

    def _start_top_k(self) -> None:
        item, self._pending_photo = self._pending_photo, None
        if item is None or self._run_dir is None:
            return
        run_dir, models = self._run_dir, self._models

        def call(on_progress, cancel):
            return item, models.get(run_dir).top_k(item.path)

        worker = self._workers.track(Worker(call, self, "top-3"))
        self._top_k_worker = worker
        worker.succeeded.connect(self._on_top_k_succeeded)
        worker.failed.connect(self._on_top_k_failed)
        worker.done.connect(self._on_top_k_done)
        worker.start()

    # ------------------------------------------------------------------------------------------ slots
    def _on_run_changed(self, run_dir: str) -> None:
        if not run_dir:
            self._run_dir = None
            self.validation = None
            self.export_panel.set_run(None)
            self._show(None)
            self.summary_label.setText("Train a model (or pick a finished run) to see how well it does.")
            return
        if run_dir != self._run_dir and (Path(run_dir) / "model.pt").is_file():
            self.load_run(run_dir)

    def _on_folder_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "A labelled folder to evaluate on (one sub-folder per class)"
        )
        if folder:
            self.evaluate_folder(folder)

    def _on_validation_clicked(self) -> None:
        self.show_validation()

    def _on_cancel_clicked(self) -> None:
        if self._evaluation_worker is not None:
            self._evaluation_worker.cancel()
            self.cancel_button.setEnabled(False)

    def _on_evaluation_progress(self, progress) -> None:
        if progress.phase == "scanning":
            self.progress.setFormat("Reading the folder: %v of %m files")
        else:
            self.progress.setFormat("Evaluating: %v of %m images")
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.done)
        else:
            self.progress.setRange(0, 0)

    def _on_evaluation_succeeded(self, evaluation: Evaluation) -> None:
        if self.sender() is not self._evaluation_worker:
            return  # a superseded evaluation
        if evaluation.is_validation:
            self.validation = evaluation
        self._show(evaluation)

    def _on_evaluation_failed(self, exc) -> None:
        if self.sender() is not self._evaluation_worker:
            return
        self.message.setText(user_message(exc))
        self.message.show()

    def _on_evaluation_cancelled(self) -> None:
        if self.sender() is not self._evaluation_worker:
            return
        self.message.setText("Evaluation cancelled.")
        self.message.show()

    def _on_evaluation_done(self) -> None:
        if self.sender() is not self._evaluation_worker:
            return
        self._evaluation_worker = None
        self.progress.hide()
        self.cancel_button.hide()
        self.cancel_button.setEnabled(True)
        self.folder_button.setEnabled(self.evaluation is not None)

    def _on_confidences_measured(self, items: list[GalleryItem]) -> None:
        if self.sender() is not self._confidence_worker:
            return  # another cell is shown by now
        self._confidence_worker = None
        # The least sure right answers first: the ones closest to becoming mistakes.
        items = sorted(items, key=lambda item: item.confidence)
        self.gallery.set_items(items)
        text = self.cell_label.text().replace(" Measuring how sure the model was of each…", "")
        self.cell_label.setText(f"{text} The least sure first.")

    def _on_confidences_failed(self, exc) -> None:
        if self.sender() is not self._confidence_worker:
            return
        self._confidence_worker = None
        text = self.cell_label.text().replace(" Measuring how sure the model was of each…", "")
        self.cell_label.setText(f"{text} (How sure the model was could not be measured: {user_message(exc)})")

    def _on_top_k_succeeded(self, result) -> None:
        item, predictions = result
        if self.detail.item == item:
            self.detail.set_top_k(predictions)
            self.topKShown.emit(predictions)

    def _on_top_k_failed(self, exc) -> None:
        self.detail.set_message(f"The model could not look at this photo: {user_message(exc)}")

    def _on_top_k_done(self) -> None:
        self._top_k_worker = None
        if self._pending_photo is not None:
            self._start_top_k()

    def _on_photo_loaded(self, path: str, image: QImage) -> None:
        if self.detail.item is not None and self.detail.item.path == path:
            self.detail.set_image(image)

    def _on_photo_failed(self, path: str, reason: str) -> None:
        if self.detail.item is not None and self.detail.item.path == path:
            self.detail.image_label.setText(reason)
