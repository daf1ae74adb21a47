"""Export: the trained model as one verified ONNX file (optionally an int8 copy), in the background.

The engine's `export_run` writes the file only after onnxruntime predicted like the app's PyTorch model on the
run's own validation images; the panel shows those figures (largest probability difference, top-1
agreement, on how many images), the file's size and place, and for an int8 copy its measured accuracy
change and speed. A failed verification says so and leaves any earlier file where it was.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.state import AppState
from app.workers import Worker, user_message
from bit_engine.units import format_bytes


def _export_call(run_dir: str, out_path: str, int8: bool, force: bool):
    def call(on_progress, cancel):
        from bit_engine.progress import Progress
        from bit_engine.run_export import export_run

        on_progress(Progress("exporting", message="Exporting and checking it against the app's model…"))
        return export_run(
            run_dir,
            out_path,
            quantize="int8" if int8 else None,
            force=force,
            on_progress=on_progress,
            cancel=cancel,
        )

    return call


def describe_export(record) -> str:
    """The figures of a `bit_engine.run_export.RunExport`, as rich text for the panel."""
    e = record.export
    source = "validation images" if e.verify_images_source == "caller" else "random test images"
    lines = [
        f"<b>Written:</b> {_escape(e.path)} ({format_bytes(e.file_bytes)})",
        f"<b>Checked:</b> on {e.n_images} {source}, the file gives the same top answer as the app's PyTorch "
        f"model for {e.top1_agree} of {e.n_images}; the largest probability difference is "
        f"{e.max_abs_prob_diff:.1e} (allowed: {e.prob_tolerance:.0e}).",
    ]
    if e.data_path:
        lines.append(f"Its weights are in {_escape(e.data_path)}: keep both files together.")
    q = record.quantized
    if q is not None:
        accuracy = ""
        if q.fp32_accuracy is not None and q.int8_accuracy is not None:
            accuracy = (
                f"validation accuracy {q.fp32_accuracy:.1%} → {q.int8_accuracy:.1%} "
                f"({q.accuracy_change * 100:+.1f} points), "
            )
        lines.append(
            f"<b>int8 copy:</b> {_escape(q.path)} ({format_bytes(q.int8_bytes)}, {q.size_ratio:.0%} of the size); "
            f"{accuracy}speed {q.fp32_images_per_s:.1f} → {q.int8_images_per_s:.1f} images/s "
            f"({q.speedup:.2f}x) on this computer, measured on {q.n_images} validation images."
        )
        if q.accuracy_change is not None and q.accuracy_change <= -0.02:
            lines.append(
                f"<span style='color:#b42318'><b>The int8 copy is {-q.accuracy_change * 100:.1f} points less "
                f"accurate:</b> use {_escape(Path(e.path).name)} unless the smaller size matters more.</span>"
            )
        lines.extend(f"Note: {_escape(note)}" for note in q.notes)
    lines.append("The Predict step now uses this model.")
    return "<br>".join(lines)


def _escape(text: str) -> str:
    return html.escape(str(text), quote=False)


class ExportPanel(QGroupBox):
    """Export the current run's model.

    Signals:
        exported(str): the path of the ONNX file just written (also given to `AppState.set_exported`).
    """

    exported = Signal(str)

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__("Export", parent)
        self.setObjectName("exportPanel")
        self.state = state
        self.run_dir: str | None = None
        self.result = None  # the last RunExport
        self._target = ""  # where the running export writes
        self._worker: Worker | None = None

        self.intro = QLabel(
            "Save the model as one ONNX file: it takes photos as they are, knows its class names, and is "
            "checked against this app's model before it is written.",
            self,
        )
        self.intro.setWordWrap(True)
        self.int8_box = QCheckBox("Also an int8 copy", self)
        self.int8_box.setToolTip(
            "A smaller, often faster copy with 8-bit weights; its accuracy change and speed are measured on "
            "the validation images"
        )
        self.int8_box.setObjectName("int8Check")
        self.int8_box.setAccessibleName("Also write an int8 copy")
        self.export_button = QPushButton("Export model…", self)
        self.export_button.setObjectName("exportButton")
        self.export_button.setAccessibleName("Export the model as an ONNX file")
        self.export_button.clicked.connect(self._on_export_clicked)
        self.progress = QProgressBar(self)
        self.progress.setObjectName("exportProgress")
        self.progress.setAccessibleName("Export progress")
        self.progress.setRange(0, 0)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.status = QLabel(self)
        self.status.setObjectName("exportStatus")
        self.status.setAccessibleName("Export result")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        row = QHBoxLayout()
        row.addWidget(self.int8_box, 1)
        row.addWidget(self.progress)
        row.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.set_run(None)

    def set_run(self, run_dir: str | None) -> None:
        """The run whose model the button exports (None: nothing to export)."""
        self.run_dir = run_dir
        self.result = None
        busy = self.is_busy()
        self.export_button.setEnabled(run_dir is not None and not busy)
        if not busy:
            self._set_status("" if run_dir else "Train a model (or pick a finished run) to export it.")

    def is_busy(self) -> bool:
        return self._worker is not None

    def default_path(self) -> str:
        return str(Path(self.run_dir) / "model.onnx") if self.run_dir else "model.onnx"

    def export_to(self, out_path: str, int8: bool | None = None, replace: bool = False) -> None:
        """Export the run's model to `out_path` in the background (what the button does after its dialog).

        Args:
            out_path: the .onnx file to write.
            int8: also write an int8 copy (None: as the checkbox says).
            replace: the person agreed to replace an existing file that is not a BiT Studio export (the save
                dialog asks before it returns such a path); otherwise the engine refuses to overwrite it.
        """
        if self.run_dir is None or self.is_busy():
            return
        if int8 is not None:
            self.int8_box.setChecked(int8)
        if not out_path.lower().endswith(".onnx"):
            out_path += ".onnx"
        self._target = out_path
        worker = Worker(
            _export_call(self.run_dir, out_path, self.int8_box.isChecked(), replace), self, "export"
        )
        worker.progress.connect(self._on_progress)
        worker.succeeded.connect(self._on_succeeded)
        worker.failed.connect(self._on_failed)
        worker.done.connect(self._on_done)
        self._worker = worker
        self.export_button.setEnabled(False)
        self.int8_box.setEnabled(False)
        self.progress.show()
        what = "an int8 copy too, " if self.int8_box.isChecked() else ""
        self._set_status(f"Exporting to {_escape(out_path)} and checking it, {what}in the background…")
        worker.start()

    def shutdown(self) -> None:
        # The export has no cancel point; waiting lets its temporary folder be cleaned up.
        if self._worker is not None:
            self._worker.wait(120_000)

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
        self.status.setVisible(bool(text))

    def _on_export_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export the model", self.default_path(), "ONNX model (*.onnx)"
        )
        if path:
            self.export_to(path, replace=True)  # the dialog asked before returning an existing file

    def _on_progress(self, progress) -> None:
        message = getattr(progress, "message", "")
        if message:
            self.progress.setToolTip(message)

    def _on_succeeded(self, record) -> None:
        self.result = record
        self._set_status(describe_export(record))
        self.state.set_exported(record.export.path)
        self.exported.emit(record.export.path)

    def _on_failed(self, exc) -> None:
        from bit_engine.export import ExportVerificationError

        kept = (
            f" The file already at {_escape(self._target)} was left as it was."
            if os.path.exists(self._target)
            else " Nothing was written."
        )
        if isinstance(exc, ExportVerificationError):
            text = f"<b>The export failed its check:</b> {_escape(str(exc))}{kept}"
        else:
            text = f"<b>The export failed:</b> {_escape(user_message(exc))}{kept}"
        self._set_status(text)

    def _on_done(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.deleteLater()
        self.progress.hide()
        self.int8_box.setEnabled(True)
        self.export_button.setEnabled(self.run_dir is not None)
