"""Compare runs of one folder: what transfer bought, on the user's own photos.

The Runs step opens this view on the runs the user selected. It shows their validation-accuracy curves on one
chart (against images seen, so runs with different batches line up by the photos they have seen), their
figures side by side in a table, and under the chart, in words, what pre-training bought: a higher start, a
higher slope, a higher asymptote, each claimed only when the curves support it (`bit_engine.compare`).

"Train from scratch for comparison" asks for the from-scratch baseline of a pre-trained run: the same data,
architecture and schedule from random weights. The view only asks (`scratchRequested`); the window trains it
in the Train step, through the same training process as any run, and tells the view when a run ended
(`run_ended`): the baseline then joins the comparison.

Runs are read with the engine's torch-free run readers, on a worker thread (a long run's history is
thousands of lines).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyqtgraph as pg
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractScrollArea,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app import errors_view
from app.widgets.naming import named
from app.widgets.page_style import page_title
from app.widgets.row_table import RowTableModel
from app.workers import Worker, WorkerGroup

if TYPE_CHECKING:
    from bit_engine.compare import ComparedRun
    from bit_engine.config import TrainConfig

pg.setConfigOptions(useOpenGL=False, antialias=True)

#: Okabe-Ito: told apart with the common colour-vision deficiencies; runs from scratch are dashed as well.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

#: The settings that make a run the baseline that was asked for (config.json may add resolved details).
_REQUEST_KEYS = ("strategy", "data_dir", "model", "steps", "batch", "resolution", "seed", "val_fraction")


def _compact(n: float) -> str:
    """1200 -> "1.2k", 256000 -> "256k", 3_000_000 -> "3M": tick labels that fit under a narrow chart."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.3g}{suffix}"
    return f"{n:.3g}"


class _ImagesAxis(pg.AxisItem):
    """An axis of image counts in compact numbers (pyqtgraph would otherwise print 2.56e+05)."""

    def tickStrings(self, values, scale, spacing):
        return [_compact(v * scale) for v in values]


def _duration(seconds: float) -> str:
    from bit_engine.units import format_duration

    return format_duration(seconds) if seconds > 0 else "—"


class CompareTableModel(RowTableModel):
    """The compared runs' figures, one row per run, its curve's colour beside its name."""

    COLUMNS = (
        "Run",
        "Model",
        "Strategy",
        "Steps",
        "Batch",
        "Resolution",
        "Time",
        "Final accuracy",
        "Best accuracy",
    )

    def __init__(self, parent=None):
        super().__init__(parent)
        self.colours: list[QColor] = []

    def set_runs(self, runs: list, colours: list[QColor]) -> None:
        self.colours = list(colours)
        self.set_rows(runs)

    def role_data(self, r: ComparedRun, index: QModelIndex | QPersistentModelIndex, role: int):
        column = index.column()
        if role == Qt.ItemDataRole.DecorationRole and column == 0:
            return self.colours[index.row()]
        if role == Qt.ItemDataRole.ToolTipRole and column == 0:
            return str(r.path)
        if role == Qt.ItemDataRole.TextAlignmentRole and column >= 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def text(self, r: ComparedRun, column: int) -> str:
        from bit_engine.compare import STRATEGY_NAMES

        if column == 0:
            return r.name
        if column == 1:
            return r.model
        if column == 2:
            return STRATEGY_NAMES.get(r.strategy, r.strategy)
        if column == 3:
            return f"{r.step:,}" if r.finished else f"{r.step:,} of {r.total_steps:,}"
        if column == 4:
            return "—" if r.batch is None else f"{r.batch:,}"
        if column == 5:
            return "—" if r.crop is None else f"{r.crop}×{r.crop} px"
        if column == 6:
            return _duration(r.seconds)
        if column == 7:
            if r.final_accuracy is None:
                return ("training" if r.state == "running" else "not finished") if not r.finished else "—"
            return f"{r.final_accuracy:.1%}"
        return "—" if r.best_accuracy is None else f"{r.best_accuracy:.1%}"


def _load(paths: list[str]):
    """Read the runs (on a worker thread): (runs, one sentence per run that could not be read)."""

    def load(on_progress, cancel):
        from bit_engine import compare
        from bit_engine.runs import RunError

        loaded, problems = [], []
        for path in paths:
            try:
                loaded.append(compare.load_run(path))
            except (RunError, OSError) as exc:
                problems.append(f"{Path(path).name} could not be read: {exc}")
        return loaded, problems

    return load


class CompareView(QWidget):
    """Several runs of one folder: curves overlaid (`compareChart`), figures (`compareTable`), the words
    under the chart (`compareSummaryLabel`), and `scratchBaselineButton`.

    Args:
        parent: the owning widget.

    Signals:
        backRequested(): the user wants the run list back.
        scratchRequested(object): train this `TrainConfig` (a from-scratch baseline) in the Train step.
        compared(int): the runs are read and shown; how many.
    """

    backRequested = Signal()
    scratchRequested = Signal(object)
    compared = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.runs: list[ComparedRun] = []
        self._requests: list[dict] = []  # baselines asked for and not finished yet (their settings)
        self._workers = WorkerGroup()

        self.back_button = named(QPushButton("← All runs"), "compareBackButton", "Back to the run list")
        self.back_button.clicked.connect(self.backRequested)
        title = page_title("Compare runs")
        self.subtitle = named(QLabel(), "compareSubtitleLabel", "Runs compared")
        self.subtitle.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.model = CompareTableModel(self)
        self.table = named(QTableView(), "compareTable", "Compared runs")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        # As tall as its rows, no taller: the chart gets the rest.
        self.table.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
        self.table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._update_baseline())

        self.scratch_button = named(
            QPushButton("Train from scratch for comparison"),
            "scratchBaselineButton",
            "Train the same network from scratch with the same schedule, for comparison",
        )
        self.scratch_button.clicked.connect(self._on_scratch)
        self.baseline_label = named(QLabel(), "scratchBaselineLabel", "About the from-scratch baseline")
        self.baseline_label.setWordWrap(True)

        self.chart = self._chart()
        # The legend sits above the chart, not in it: inside, it would hide whichever curve runs under it.
        self.legend = named(QLabel(), "compareLegend", "Legend of the chart")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self._legend_names: list[str] = []
        self.summary = named(QLabel(), "compareSummaryLabel", "What pre-training bought, in words")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        words = QScrollArea()
        words.setObjectName("compareSummaryArea")
        words.setWidget(self.summary)
        words.setWidgetResizable(True)
        words.setFrameShape(QFrame.Shape.NoFrame)

        top = QHBoxLayout()
        top.addWidget(self.back_button)
        top.addSpacing(8)
        top.addWidget(title)
        top.addWidget(self.subtitle, 1)
        baseline = QHBoxLayout()
        baseline.addWidget(self.scratch_button)
        baseline.addWidget(self.baseline_label, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)  # the Runs step's margins hold it
        layout.addLayout(top)
        layout.addWidget(self.table)
        layout.addLayout(baseline)
        layout.addWidget(self.legend)
        layout.addWidget(self.chart, 1)
        layout.addWidget(words, 1)
        self._update_baseline()

    def _chart(self) -> pg.PlotWidget:
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.Text)
        chart = pg.PlotWidget(
            background=palette.color(QPalette.ColorRole.Base), axisItems={"bottom": _ImagesAxis("bottom")}
        )
        named(chart, "compareChart", "Validation accuracy of the compared runs")
        chart.setTitle("Validation accuracy (%)", color=text, size="9pt")
        chart.setLabel(
            "bottom", "images seen (steps × batch: runs with different batches line up)", color=text
        )
        for side in ("left", "bottom"):
            axis = chart.getAxis(side)
            axis.setTextPen(text)
            axis.setPen(palette.color(QPalette.ColorRole.Mid))
        chart.setMenuEnabled(False)
        chart.setYRange(0, 100, padding=0.02)
        chart.setMinimumSize(200, 160)
        return chart

    # Showing runs -----------------------------------------------------------------------------------------
    def compare(self, paths: list[str]) -> None:
        """Read the runs in `paths` (on a worker thread) and show them side by side."""
        self.subtitle.setText("Reading the runs…")
        worker = self._start(Worker(_load([str(p) for p in paths]), self, name="compare runs"))
        worker.succeeded.connect(self._on_loaded)

    def _on_loaded(self, loaded) -> None:
        runs, problems = loaded
        self._show(runs, problems)
        self.compared.emit(len(runs))

    def _show(self, runs: list, problems: list[str] = ()) -> None:
        from bit_engine.compare import explain

        self.runs = list(runs)
        colours = [QColor(COLOURS[i % len(COLOURS)]) for i in range(len(self.runs))]
        self.model.set_runs(self.runs, colours)
        folder = Path(self.runs[0].data_dir).name if self.runs else ""
        count = f"{len(self.runs)} run" + ("" if len(self.runs) == 1 else "s")
        self.subtitle.setText(f"· {count} of <b>{_escape(folder)}</b>" if folder else f"· {count}")
        self.subtitle.setToolTip(self.runs[0].data_dir if self.runs else "")
        self._draw(colours)
        html = []
        for paragraph in explain(self.runs):
            items = "".join(f"<li>{_escape(line)}</li>" for line in paragraph.lines)
            html.append(f"<p style='margin-bottom:0'><b>{_escape(paragraph.title)}</b></p><ul>{items}</ul>")
        if problems:
            html.append("<p>" + "<br>".join(_escape(p) for p in problems) + "</p>")
        self.summary.setText("".join(html))
        self.summary.setAccessibleDescription(self.summary_text())
        if self.runs and self.table.currentIndex().row() < 0:
            self.table.selectRow(0)
        self._update_baseline()

    def _draw(self, colours: list[QColor]) -> None:
        self.chart.clear()
        labels = [r.label for r in self.runs]
        described, entries, self._legend_names = [], [], []
        for i, (r, colour) in enumerate(zip(self.runs, colours, strict=True)):
            if not r.curve:
                continue
            name = labels[i] if labels.count(labels[i]) == 1 else f"{labels[i]} ({r.name[-15:]})"
            if not r.finished:
                name += " (not finished)"
            style = Qt.PenStyle.DashLine if r.from_scratch else Qt.PenStyle.SolidLine
            xs = [x for x, _ in r.curve]
            ys = [100.0 * a for _, a in r.curve]
            self.chart.plot(
                xs,
                ys,
                pen=pg.mkPen(colour, width=2, style=style),
                symbol="o",
                symbolSize=6,
                symbolBrush=colour,
                symbolPen=None,
            )
            described.append(f"{name}: {ys[-1]:.1f}% after {xs[-1]:,} images")
            line = "╍╍●╍╍" if r.from_scratch else "━━●━━"
            entries.append(f"<span style='color:{colour.name()}'>{line}</span>&nbsp;{_escape(name)}")
            self._legend_names.append(name)
        self.legend.setText("&nbsp;&nbsp;&nbsp;&nbsp; ".join(entries))
        self.legend.setVisible(bool(entries))
        self.legend.setAccessibleDescription("; ".join(self._legend_names))
        self.chart.enableAutoRange(axis="x")
        self.chart.setAccessibleDescription("; ".join(described) or "No curves.")

    def legend_names(self) -> list[str]:
        """The legend's entries, one per curve, in the table's order."""
        return list(self._legend_names)

    def curve_count(self) -> int:
        """The curves on the chart."""
        return len(self.chart.listDataItems())

    def summary_text(self) -> str:
        """The words under the chart as plain text (what a screen reader and the tests read)."""
        from bit_engine.compare import explain

        return "\n".join(line for p in explain(self.runs) for line in (p.title, *(f"• {s}" for s in p.lines)))

    # The from-scratch baseline ----------------------------------------------------------------------------
    def baseline_target(self) -> ComparedRun | None:
        """The pre-trained run the button trains a baseline for: the one picked in the table, else the
        first pre-trained run without a baseline here, else the first pre-trained run."""
        from bit_engine.compare import baseline_of

        row = self.table.currentIndex().row()
        if 0 <= row < len(self.runs) and not self.runs[row].from_scratch:
            return self.runs[row]
        transfer = [r for r in self.runs if not r.from_scratch]
        return next(
            (r for r in transfer if baseline_of(r, self.runs) is None), transfer[0] if transfer else None
        )

    def _update_baseline(self) -> None:
        from bit_engine.compare import baseline_of, scratch_config

        target = self.baseline_target()
        enabled, why = False, ""
        if not self.runs:
            why = ""
        elif target is None:
            why = "Every run here was trained from scratch: there is no pre-trained run to compare with."
        elif target.config is None or target.plan is None:
            why = f"{target.name} stopped before training began: its schedule is not known."
        elif (existing := baseline_of(target, self.runs)) is not None:
            if existing.finished:
                why = f"The from-scratch run with the schedule of {target.label} is in this comparison."
            elif existing.state == "running":
                why = (
                    f"The from-scratch run is training (step {existing.step} of {existing.total_steps}); "
                    "it joins this comparison when it ends."
                )
            else:
                why = (
                    f"The from-scratch run stopped at step {existing.step} of {existing.total_steps}: resume it "
                    "from the run list; it joins this comparison when it ends."
                )
        elif any(self._is_request(scratch_config(target.config, target.plan), r) for r in self._requests):
            why = "The from-scratch run is training in the Train step; it joins this comparison when it ends."
        else:
            enabled = True
            p = target.plan
            why = (
                f"Trains {target.model} from random weights with the schedule of {target.label}: "
                f"{p.total_steps:,} steps of {p.batch} images at {p.crop}×{p.crop} px, learning rate "
                f"{p.base_lr:.2g}, on the same photos."
            )
        self.scratch_button.setEnabled(enabled)
        self.scratch_button.setToolTip(why)
        self.baseline_label.setText(why)

    @staticmethod
    def _is_request(config: TrainConfig, request: dict) -> bool:
        settings = config.to_dict()
        return all(settings.get(k) == request.get(k) for k in _REQUEST_KEYS)

    def _on_scratch(self) -> None:
        from bit_engine.compare import scratch_config

        target = self.baseline_target()
        if target is None or target.config is None or target.plan is None:
            return
        config = scratch_config(target.config, target.plan)
        self._requests.append(config.to_dict())
        self._update_baseline()
        self.scratchRequested.emit(config)

    def forget_request(self, config: TrainConfig) -> None:
        """The baseline `config` was not started after all (the window said why)."""
        self._requests = [r for r in self._requests if not self._is_request(config, r)]
        self._update_baseline()

    def run_ended(self, run_dir: str) -> None:
        """A training run ended: when it is a baseline asked for here, it joins the comparison."""
        if not self._requests and not any(str(r.path) == str(run_dir) for r in self.runs):
            return
        worker = self._start(Worker(_load([run_dir]), self, name="compare runs"))
        worker.succeeded.connect(self._on_ended_run_loaded)

    def _on_ended_run_loaded(self, loaded) -> None:
        from bit_engine.compare import comparison_problem

        runs, _problems = loaded
        if not runs:
            return
        run = runs[0]
        requested = run.config is not None and any(self._is_request(run.config, r) for r in self._requests)
        known = [i for i, r in enumerate(self.runs) if r.path == run.path]
        if requested and run.finished:
            self._requests = [r for r in self._requests if not self._is_request(run.config, r)]
        if known:
            self.runs[known[0]] = run
        elif requested and comparison_problem([r.data_dir for r in self.runs] + [run.data_dir]) is None:
            self.runs.append(run)
        else:
            return
        self._show(self.runs)
        self.compared.emit(len(self.runs))

    # Workers ----------------------------------------------------------------------------------------------
    def _start(self, worker: Worker) -> Worker:
        worker.failed.connect(self._on_failed)
        return self._workers.start(worker)

    def _on_failed(self, exc) -> None:
        errors_view.record(exc, "Comparing runs")
        self.summary.setText(_escape(f"Could not read the runs: {exc}"))

    def shutdown(self) -> None:
        self._workers.shutdown()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
