"""Live training curves: loss, validation accuracy and learning rate against optimizer steps.

pyqtgraph draws them (QtCharts is not in the PySide6-Essentials wheel and is deprecated in Qt 6.10), with
its OpenGL path left off: a QOpenGLWidget does not work on the offscreen platform or on many remote
desktops, and a few thousand points per curve draw fast enough in software.

The charts never redraw per training step: points are collected with `add_training` / `add_validation`
and drawn by `flush()`, which the Train step calls from its ~4 Hz refresh timer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QStackedLayout, QWidget

pg.setConfigOptions(useOpenGL=False, antialias=True)

# Colour-blind-safe pair (Okabe-Ito blue and orange) for training vs validation; black-ish for the lr.
_TRAIN = QColor("#0072B2")
_VAL = QColor("#D55E00")
_LR = QColor("#009E73")


class _Series:
    """x/y points of one curve, kept sorted by step; a step seen again (a resumed run) replaces the tail.

    `dirty` says the points changed since they were last drawn: a curve that did not change (validation
    accuracy between two evaluations) is not handed to pyqtgraph again, which would redraw it.
    """

    def __init__(self):
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.dirty = False

    def add(self, x: float, y: float) -> None:
        while self.xs and self.xs[-1] >= x:
            self.xs.pop()
            self.ys.pop()
        self.xs.append(x)
        self.ys.append(y)
        self.dirty = True

    def clear(self) -> None:
        self.xs.clear()
        self.ys.clear()
        self.dirty = True

    @property
    def last(self) -> tuple[float, float] | None:
        return (self.xs[-1], self.ys[-1]) if self.xs else None


class TrainingCharts(QWidget):
    """Three small charts side by side: `lossChart`, `accuracyChart` and `lrChart`.

    Args:
        parent: the owning widget.
        prefix: put before the charts' object names ("run" gives runLossChart, ...), for a second set of
            charts in the same window.
    """

    def __init__(self, parent: QWidget | None = None, prefix: str = ""):
        super().__init__(parent)
        self.series = {name: _Series() for name in ("train_loss", "val_loss", "val_accuracy", "lr")}
        self._total_steps = 0

        def name(base: str) -> str:
            return prefix + base[0].upper() + base[1:] if prefix else base

        self.loss_chart = self._chart(
            name("lossChart"), "Loss", "Loss: training (line) and validation (dots)"
        )
        self.accuracy_chart = self._chart(
            name("accuracyChart"), "Validation accuracy (%)", "Validation accuracy"
        )
        self.lr_chart = self._chart(name("lrChart"), "Learning rate", "Learning rate")
        self.accuracy_chart.setYRange(0, 100, padding=0.02)
        self.loss_chart.addLegend(offset=(-10, 10), labelTextSize="8pt")

        self._curves = {
            "train_loss": self.loss_chart.plot(pen=pg.mkPen(_TRAIN, width=1), name="training"),
            "val_loss": self.loss_chart.plot(
                pen=None, symbol="o", symbolSize=6, symbolBrush=_VAL, symbolPen=None, name="validation"
            ),
            "val_accuracy": self.accuracy_chart.plot(
                pen=pg.mkPen(_VAL, width=1), symbol="o", symbolSize=6, symbolBrush=_VAL, symbolPen=None
            ),
            "lr": self.lr_chart.plot(pen=pg.mkPen(_LR, width=1)),
        }
        for curve in (self._curves["train_loss"], self._curves["lr"]):
            # Long runs log every step: draw what is visible, thinned to the pixels available.
            curve.setClipToView(True)
            curve.setDownsampling(auto=True, method="peak")

        charts = QWidget()
        row = QHBoxLayout(charts)
        row.setContentsMargins(0, 0, 0, 0)
        for chart in (self.loss_chart, self.accuracy_chart, self.lr_chart):
            row.addWidget(chart, 1)
        # Empty plots would show meaningless axes (steps 0.2, 0.4...): say what will appear instead.
        self.placeholder = QLabel("The curves of loss, validation accuracy and learning rate appear here.")
        self.placeholder.setObjectName(f"{prefix}chartsPlaceholder" if prefix else "chartsPlaceholder")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setEnabled(False)  # drawn in the palette's quieter text colour
        self._stack = QStackedLayout(self)
        self._stack.addWidget(self.placeholder)
        self._stack.addWidget(charts)
        self._describe()

    def _chart(self, object_name: str, title: str, accessible: str) -> pg.PlotWidget:
        palette = self.palette()
        chart = pg.PlotWidget(background=palette.color(QPalette.ColorRole.Base))
        chart.setObjectName(object_name)
        chart.setAccessibleName(accessible)
        text = palette.color(QPalette.ColorRole.Text)
        chart.setTitle(title, color=text, size="9pt")
        chart.setLabel("bottom", "step", color=text)
        for side in ("left", "bottom"):
            axis = chart.getAxis(side)
            axis.setTextPen(text)
            axis.setPen(palette.color(QPalette.ColorRole.Mid))
        # No grid: pyqtgraph draws it with the axes, and with it an axis repaint cost ~13 ms of the GUI thread
        # per chart and refresh (measured here), more than the curves themselves.
        chart.setMenuEnabled(False)
        chart.setMinimumSize(120, 110)
        chart.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        return chart

    # Feeding points -------------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every point (a new run)."""
        for s in self.series.values():
            s.clear()
        self._total_steps = 0
        self.flush()

    def set_total_steps(self, total: int) -> None:
        """Fix the step axis to the run's length, so curves grow from left to right instead of rescaling."""
        if total > 0 and total != self._total_steps:
            self._total_steps = total
            for chart in (self.loss_chart, self.accuracy_chart, self.lr_chart):
                chart.setXRange(0, total, padding=0.02)

    def add_training(self, step: int, loss: float | None, lr: float | None) -> None:
        """One training step's loss and learning rate (drawn at the next `flush`)."""
        if loss is not None and math.isfinite(loss):
            self.series["train_loss"].add(step, loss)
        if lr is not None and math.isfinite(lr):
            self.series["lr"].add(step, lr)

    def add_validation(self, step: int, loss: float | None, top1: float | None) -> None:
        """One evaluation on the validation images (`top1` a fraction, drawn as a percentage)."""
        if loss is not None and math.isfinite(loss):
            self.series["val_loss"].add(step, loss)
        if top1 is not None and math.isfinite(top1):
            self.series["val_accuracy"].add(step, 100.0 * top1)

    def load_metrics(self, records: Iterable) -> None:
        """Replace the curves with a run's recorded history (`bit_engine.runs.MetricRecord`s)."""
        for s in self.series.values():
            s.clear()
        for r in records:
            self.add_training(r.step, r.train_loss, r.lr)
            if r.val_top1 is not None or r.val_loss is not None:
                self.add_validation(r.step, r.val_loss, r.val_top1)
        self.flush()

    def flush(self) -> None:
        """Draw the points added since the last call (cheap when nothing changed)."""
        changed = [name for name, s in self.series.items() if s.dirty]
        if not changed:
            return
        for name in changed:
            s = self.series[name]
            s.dirty = False
            self._curves[name].setData(s.xs, s.ys)
        self._stack.setCurrentIndex(1 if self.has_points() else 0)
        if not self._total_steps:
            for chart in (self.loss_chart, self.accuracy_chart, self.lr_chart):
                chart.enableAutoRange(axis="x")
        self._describe()

    def has_points(self) -> bool:
        return any(s.xs for s in self.series.values())

    def _describe(self) -> None:
        # Screen readers cannot read a plot: the description says the latest values in words.
        def last(name: str, fmt: str) -> str:
            point = self.series[name].last
            return fmt.format(point[1], int(point[0])) if point else "no points yet"

        self.loss_chart.setAccessibleDescription(
            f"Training loss {last('train_loss', '{:.4f} at step {}')}; "
            f"validation loss {last('val_loss', '{:.4f} at step {}')}."
        )
        self.accuracy_chart.setAccessibleDescription(
            f"Validation accuracy {last('val_accuracy', '{:.1f}% at step {}')}."
        )
        self.lr_chart.setAccessibleDescription(f"Learning rate {last('lr', '{:.3g} at step {}')}.")
