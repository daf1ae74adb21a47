"""The Predict step: drop photos or folders, get the exported model's answers as they finish.

Predictions come from onnxruntime running the exported ``.onnx`` file (`bit_engine.inference.Predictor`), not
from PyTorch: what the page shows is what the file will answer anywhere else, and it equals
``bit-studio predict MODEL.onnx FILES``. Decoding and inference run in a Worker, a few photos at a time; each
batch reaches the list by a queued signal as soon as it is done, so a folder of hundreds of photos fills the
list progressively while the window stays responsive. A file that is not a photo gets its reason in its row.

Driving the page from a script: `open_model(path)` (then wait for `modelOpened`), `predict_paths(paths)`
(then wait for `predictionsFinished`), `save_csv(path)`.
"""

from __future__ import annotations

import csv
import html
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.state import AppState
from app.widgets.prediction_list import PredictionList, PredictionRow
from app.workers import Worker, user_message

#: Labels kept per photo (shown, and written to the CSV): the command line's default.
TOP_K = 3

#: Photos decoded and run through the model together: small, so the first answers show at once.
BATCH = 8

THUMB = 144  # twice the list's thumbnail: sharp on high-DPI screens

_IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.gif *.webp *.tif *.tiff *.heic *.heif);;All files (*)"


def expand_paths(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files to predict, in order: each file as given, each folder's files sorted and recursively.

    Hidden files and folders (names starting with ".") inside a folder are passed over, as the command line
    does; every other file is tried, so a non-photo in a folder gets its reason like a dropped one.
    """
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = (
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            yield from sorted(found)
        else:
            yield path


class _Relay(QObject):
    """Carries finished rows from the prediction thread to the GUI thread (a queued connection).

    Signals:
        rows(object): a list of `PredictionRow`.
    """

    rows = Signal(object)


def _predict_call(predictor, paths: Sequence[str], relay: _Relay, top_k: int):
    def call(on_progress, cancel):
        import numpy as np
        from PIL import Image

        from app.widgets.thumbnails import pil_to_qimage
        from bit_engine.images import ImageError, open_rgb
        from bit_engine.progress import OperationCancelled, Progress

        files = list(expand_paths(paths))
        total, done = len(files), 0
        on_progress(Progress("predicting", 0, total))
        k = min(top_k, len(predictor.labels))
        for start in range(0, total, BATCH):
            if cancel.is_set():
                raise OperationCancelled("Prediction stopped.")
            rows: list[PredictionRow | None] = []
            images, thumbs, slots = [], [], []
            for path in files[start : start + BATCH]:
                try:
                    image = open_rgb(path)
                except ImageError as exc:
                    rows.append(PredictionRow(str(path), error=str(exc), detail=exc.detail))
                    continue
                thumb = image.copy()
                thumb.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
                slots.append(len(rows))
                rows.append(None)
                images.append(image)
                thumbs.append((str(path), pil_to_qimage(thumb)))
            if images:
                probabilities = predictor.probabilities(images)
                for slot, (path, thumb), p in zip(slots, thumbs, probabilities, strict=True):
                    order = np.argsort(-p, kind="stable")[:k]
                    top = tuple((predictor.labels[i], float(p[i])) for i in order)
                    rows[slot] = PredictionRow(path, predictions=top, thumbnail=thumb)
            done += len(rows)
            relay.rows.emit(rows)
            on_progress(Progress("predicting", done, total))
        return total

    return call


def _open_call(path: str):
    def call(on_progress, cancel):
        from bit_engine.inference import Predictor

        # One core stays free for the window: onnxruntime would otherwise take every core it sees.
        threads = max(1, (os.cpu_count() or 2) - 1)
        return Predictor(path, threads=threads)

    return call


def predictions_csv(rows: Sequence[PredictionRow], top_k: int = TOP_K) -> str:
    """The rows as CSV text, in the columns of ``bit-studio predict --csv``: file, label, probability,
    label_2, probability_2, ..., error."""
    from bit_engine.inference import spreadsheet_safe

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    # As many label columns as the answers have (fewer than `top_k` for a model with fewer classes).
    k = max((len(r.predictions) for r in rows), default=0) or top_k
    header = ["file", "label", "probability"]
    for i in range(2, k + 1):
        header += [f"label_{i}", f"probability_{i}"]
    writer.writerow([*header, "error"])
    for row in rows:
        # File names, class names and errors may start like a formula: escaped (OWASP, CSV injection).
        if row.error is not None:
            writer.writerow(
                [spreadsheet_safe(row.path), *[""] * (len(header) - 1), spreadsheet_safe(row.error)]
            )
            continue
        cells = [spreadsheet_safe(row.path)]
        for label, probability in row.predictions[:k]:
            cells += [spreadsheet_safe(label), f"{probability:.6f}"]
        cells += [""] * (len(header) - len(cells))
        writer.writerow([*cells, ""])
    return buffer.getvalue()


class DropArea(QFrame):
    """The target for photos and folders, with the buttons that do the same without a mouse drag.

    Signals:
        pathsDropped(list): local paths (files and folders) dropped on it.
    """

    pathsDropped = Signal(list)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName("predictDropArea")
        self.setAccessibleName("Drop photos or folders here to predict them")
        self.setStyleSheet(
            "QFrame#predictDropArea { border: 2px dashed palette(mid); border-radius: 8px; }"
            'QFrame#predictDropArea[hover="true"] { border-color: palette(highlight); }'
        )
        self.label = QLabel("Drop photos or folders here", self)
        font = self.label.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        self.label.setFont(font)
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.add_button = QPushButton("Add images…", self)
        self.add_button.setObjectName("addImagesButton")
        self.add_button.setAccessibleName("Add images to predict")
        self.folder_button = QPushButton("Add a folder…", self)
        self.folder_button.setObjectName("addFolderButton")
        self.folder_button.setAccessibleName("Add a folder of images to predict")
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.folder_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addLayout(buttons)

    @staticmethod
    def local_paths(event) -> list[str]:
        mime = event.mimeData()
        if not mime.hasUrls():
            return []
        return [url.toLocalFile() for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]

    def _set_hover(self, on: bool) -> None:
        self.setProperty("hover", on)
        self.style().unpolish(self)
        self.style().polish(self)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self.local_paths(event):
            self._set_hover(True)
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if self.local_paths(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragLeaveEvent(self, event) -> None:
        self._set_hover(False)
        super().dragLeaveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        self._set_hover(False)
        paths = self.local_paths(event)
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.pathsDropped.emit(paths)


class PredictPage(QWidget):
    """The Predict step.

    Signals:
        modelOpened(str): a model was opened (its path).
        predictionsFinished(): every photo dropped or added so far has its row.
    """

    modelOpened = Signal(str)
    predictionsFinished = Signal()

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.setAcceptDrops(True)  # anywhere on the step, not only on the drop area
        self.predictor = None
        self.model_path: str | None = None
        self._queue: list[list[str]] = []  # dropped or added, waiting for the model or for the running batch
        self._open_worker: Worker | None = None
        self._predict_worker: Worker | None = None
        self._relay: _Relay | None = None  # the running prediction's; rows from any other are stale
        self._done = 0
        self._total = 0
        self._build()
        state.modelExported.connect(self.open_model)
        if state.onnx_path:
            self.open_model(state.onnx_path)

    def _build(self) -> None:
        self.model_label = QLabel(self)
        self.model_label.setObjectName("modelLabel")
        self.model_label.setAccessibleName("The model in use")
        self.model_label.setWordWrap(True)
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("Open model…", self)
        self.open_button.setObjectName("openModelButton")
        self.open_button.setAccessibleName("Open an exported ONNX model")
        self.open_button.clicked.connect(self._on_open_clicked)
        top = QHBoxLayout()
        top.addWidget(self.model_label, 1)
        top.addWidget(self.open_button)

        self.drop_area = DropArea(self)
        self.drop_area.pathsDropped.connect(self.predict_paths)
        self.drop_area.add_button.clicked.connect(self._on_add_images_clicked)
        self.drop_area.folder_button.clicked.connect(self._on_add_folder_clicked)

        self.message = QLabel(self)
        self.message.setObjectName("predictMessage")
        self.message.setAccessibleName("Prediction message")
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.hide()
        self.progress = QProgressBar(self)
        self.progress.setObjectName("predictProgress")
        self.progress.setAccessibleName("Prediction progress")
        self.progress.setFormat("%v of %m photos")
        self.progress.hide()
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setObjectName("predictStopButton")
        self.stop_button.setAccessibleName("Stop predicting")
        self.stop_button.clicked.connect(self._on_stop_clicked)
        self.stop_button.hide()
        busy = QHBoxLayout()
        busy.addWidget(self.progress, 1)
        busy.addWidget(self.stop_button)

        self.list = PredictionList(self, top_k=TOP_K)
        self.list.setObjectName("predictionList")
        self.list.setAccessibleName("Predictions: each photo with its top 3 classes")
        self.list.prediction_model.rowsInserted.connect(self._update_buttons)
        self.list.prediction_model.modelReset.connect(self._update_buttons)

        self.count_label = QLabel(self)
        self.count_label.setObjectName("predictionCount")
        self.count_label.setAccessibleName("How many photos were predicted")
        self.save_button = QPushButton("Save as CSV…", self)
        self.save_button.setObjectName("saveCsvButton")
        self.save_button.setAccessibleName("Save the predictions as a CSV file")
        self.save_button.clicked.connect(self._on_save_clicked)
        self.clear_button = QPushButton("Clear", self)
        self.clear_button.setObjectName("clearPredictionsButton")
        self.clear_button.setAccessibleName("Clear the predictions")
        self.clear_button.clicked.connect(self.clear)
        bottom = QHBoxLayout()
        bottom.addWidget(self.count_label, 1)
        bottom.addWidget(self.clear_button)
        bottom.addWidget(self.save_button)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.drop_area)
        layout.addWidget(self.message)
        layout.addLayout(busy)
        layout.addWidget(self.list, 1)
        layout.addLayout(bottom)
        self._show_model()
        self._update_buttons()

    # ------------------------------------------------------------------------------------------ public
    def open_model(self, path: str) -> None:
        """Open an exported .onnx file in the background; photos waiting in the queue are predicted with it."""
        path = str(path)
        if self._open_worker is not None:
            self._open_worker.cancel()
        if self._predict_worker is not None:
            self._predict_worker.cancel()
        worker = Worker(_open_call(path), self, "open model")
        self._open_worker = worker
        worker.succeeded.connect(self._on_model_opened)
        worker.failed.connect(self._on_model_failed)
        worker.done.connect(self._on_open_done)
        self.model_label.setText(f"Opening {html.escape(Path(path).name)}…")
        self.open_button.setEnabled(False)
        worker.start()

    def predict_paths(self, paths: Sequence[str]) -> None:
        """Predict files and folders (folders recursively), streaming the rows into the list."""
        paths = [str(p) for p in paths if str(p)]
        if not paths:
            return
        self._queue.append(paths)
        if self.predictor is None:
            if self._open_worker is None:
                self._say("Open a model first (an .onnx file exported by BiT Studio): the photos will wait.")
            return
        self._next()

    def save_csv(self, path: str) -> None:
        """Write the predictions shown (path, top-3 labels and probabilities, error) to `path` as CSV."""
        from bit_engine.fileio import atomic_write_text

        atomic_write_text(Path(path), predictions_csv(self.list.rows(), TOP_K))

    def clear(self) -> None:
        """Empty the list (and stop what is still being predicted)."""
        self._queue.clear()
        if self._predict_worker is not None:
            self._predict_worker.cancel()
        self._relay = None  # rows still on their way belong to the cleared list
        self.list.prediction_model.clear()
        self.message.hide()

    def shutdown(self) -> None:
        self._queue.clear()
        for worker in (self._open_worker, self._predict_worker):
            if worker is not None:
                worker.cancel()
        for worker in (self._open_worker, self._predict_worker):
            if worker is not None:
                worker.wait(60_000)
        self.list.thumbnails.shutdown()

    # ------------------------------------------------------------------------------------------ drops
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        self.drop_area.dragEnterEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        self.drop_area.dragMoveEvent(event)

    def dragLeaveEvent(self, event) -> None:
        self.drop_area.dragLeaveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        self.drop_area.dropEvent(event)

    # ------------------------------------------------------------------------------------------ internals
    def _say(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def _show_model(self) -> None:
        p = self.predictor
        if p is None:
            self.model_label.setText(
                "<b>No model open.</b> Export one in the Evaluate step, or open an .onnx file exported by BiT Studio."
            )
            return
        # Names come from the file: escaped, so a class called "<b>" is shown, not obeyed.
        names = ", ".join(html.escape(label) for label in p.labels[:8])
        names += f" and {len(p.labels) - 8} more" if len(p.labels) > 8 else ""
        backbone = html.escape(p.metadata.get("bit_studio.backbone", ""))
        what = f"{backbone}, " if backbone else ""
        self.model_label.setText(
            f"<b>Model:</b> {html.escape(Path(self.model_path).name)} ({what}{len(p.labels)} classes: {names}; "
            f"{p.input_size[0]}×{p.input_size[1]} px input)"
        )
        self.model_label.setToolTip(str(self.model_path))

    def _next(self) -> None:
        if self._predict_worker is not None or self.predictor is None or not self._queue:
            return
        paths = self._queue.pop(0)
        self._relay = _Relay(self)
        self._relay.rows.connect(self._on_rows)
        worker = Worker(_predict_call(self.predictor, paths, self._relay, TOP_K), self, "predict")
        self._predict_worker = worker
        worker.progress.connect(self._on_progress)
        worker.failed.connect(self._on_predict_failed)
        worker.done.connect(self._on_predict_done)
        self._say("")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.stop_button.show()
        worker.start()

    def _update_buttons(self) -> None:
        rows = self.list.rows()
        self.save_button.setEnabled(bool(rows))
        self.clear_button.setEnabled(bool(rows))
        failed = sum(r.error is not None for r in rows)
        if not rows:
            self.count_label.setText("")
        else:
            text = f"{len(rows) - failed} photo{'s' if len(rows) - failed != 1 else ''} predicted"
            self.count_label.setText(text + (f", {failed} could not be read" if failed else ""))

    # ------------------------------------------------------------------------------------------ slots
    def _on_open_clicked(self) -> None:
        start = self.model_path or (self.state.onnx_path or "")
        path, _ = QFileDialog.getOpenFileName(self, "Open an exported model", start, "ONNX model (*.onnx)")
        if path:
            self.open_model(path)

    def _on_add_images_clicked(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Images to predict", "", _IMAGE_FILTER)
        if paths:
            self.predict_paths(paths)

    def _on_add_folder_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A folder of images to predict")
        if folder:
            self.predict_paths([folder])

    def _on_save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the predictions", "predictions.csv", "CSV (*.csv)")
        if not path:
            return
        try:
            self.save_csv(path)
        except OSError as exc:
            self._say(f"The CSV could not be written to {path}: {exc.strerror or exc}.")
            return
        self._say(f"Saved {len(self.list.rows())} predictions to {path}.")

    def _on_stop_clicked(self) -> None:
        self._queue.clear()
        if self._predict_worker is not None:
            self._predict_worker.cancel()

    def _on_model_opened(self, predictor) -> None:
        if self.sender() is not self._open_worker:
            return
        self.predictor = predictor
        self.model_path = str(predictor.path)
        self._show_model()
        self._say("")
        self.modelOpened.emit(self.model_path)

    def _on_model_failed(self, exc) -> None:
        if self.sender() is not self._open_worker:
            return
        self._show_model()  # the previous model, if any, stays in use
        self._say(user_message(exc))

    def _on_open_done(self) -> None:
        worker = self.sender()
        if worker is self._open_worker:
            self._open_worker = None
            self.open_button.setEnabled(True)
            self._next()
        worker.deleteLater()

    def _on_rows(self, rows: list[PredictionRow]) -> None:
        if self._relay is not None and self.sender() is self._relay:
            self.list.prediction_model.append(rows)

    def _on_progress(self, progress) -> None:
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.done)

    def _on_predict_failed(self, exc) -> None:
        self._say(user_message(exc))

    def _on_predict_done(self) -> None:
        worker, self._predict_worker = self._predict_worker, None
        if worker is not None:
            worker.deleteLater()
        if self._relay is not None:
            self._relay.deleteLater()  # queued rows were delivered before `done`
            self._relay = None
        if self._queue and self.predictor is not None:
            self._next()
            return
        self.progress.hide()
        self.stop_button.hide()
        self.predictionsFinished.emit()
