"""The Runs step: every past run, and for the one picked its curves, plan and status, with what can be done.

Runs are read through the engine's run listing (`bit_engine.runs.list_runs`, `read_status`, `read_plan`,
`read_metrics`), on a worker thread: a long run's history is thousands of lines, and a runs folder on a
network drive can be slow. A run whose training process died shows as interrupted and can be resumed; a
finished one opens in the Evaluate step, where it can also be exported. Several runs of the same folder can be
selected and compared (`compare_view.CompareView`, which takes the page's place until "All runs").
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import (
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app import errors_view
from app.pages.compare_view import CompareView
from app.state import AppState
from app.widgets.charts import TrainingCharts
from app.widgets.page_style import PAGE_MARGINS, page_title
from app.widgets.row_table import RowTableModel
from app.workers import Worker, WorkerGroup

#: Status words, and whether such a run can be resumed.
STATUS_WORDS = {
    "done": ("Done", False),
    "running": ("Running", False),
    "cancelled": ("Cancelled · resumable", True),
    "failed": ("Failed · resumable", True),
    "interrupted": ("Interrupted · resumable", True),
}

_STRATEGY_WORDS = {"full": "Fine-tune", "head": "Head only", "scratch": "From scratch"}

_SORT_ROLE = Qt.ItemDataRole.UserRole + 1


class RunsTableModel(RowTableModel):
    """The run list: one row per `bit_engine.runs.RunSummary`, newest first."""

    COLUMNS = ("Run", "Data folder", "Model", "Strategy", "Status", "Accuracy", "Date")

    def row_of(self, path: str) -> int:
        for i, r in enumerate(self.rows):
            if str(r.path) == str(path):
                return i
        return -1

    def role_data(self, r, index: QModelIndex | QPersistentModelIndex, role: int):
        column = index.column()
        if role == _SORT_ROLE:
            if column == 5:
                return -1.0 if r.accuracy is None else r.accuracy
            if column == 6:
                return r.created.timestamp()
            return self.text(r, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 1:
                return r.data_dir
            if column == 4:
                return r.message or self.text(r, column)
            return str(r.path) if column == 0 else None
        if role == Qt.ItemDataRole.TextAlignmentRole and column == 5:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def text(self, r, column: int) -> str:
        if column == 0:
            return r.name
        if column == 1:
            return Path(r.data_dir).name or r.data_dir
        if column == 2:
            return r.model
        if column == 3:
            return _STRATEGY_WORDS.get(r.strategy, r.strategy)
        if column == 4:
            words = STATUS_WORDS.get(r.status, (r.status, False))[0]
            if r.status != "done" and r.total_steps:
                words += f" · step {r.step}/{r.total_steps}"
            return words
        if column == 5:
            return "" if r.accuracy is None else f"{r.accuracy:.1%}"
        return r.created.strftime("%Y-%m-%d %H:%M")


def _list_runs(on_progress, cancel) -> list:
    from bit_engine import runs

    return runs.list_runs()


def _open_run(path: str):
    """A run's details for the panel (on a worker thread): status, plan (or None), metrics."""

    def load(on_progress, cancel):
        from bit_engine import runs
        from bit_engine.runs import RunError

        status = runs.read_status(path)
        try:
            plan = runs.read_plan(path)
        except RunError:
            plan = None  # a run that died before its plan was written: the status says so
        return path, status, plan, runs.read_metrics(path)

    return load


class RunsPage(QWidget):
    """The list of past runs (`runList`) and the run picked in it.

    Args:
        state: the window's shared state (Evaluate and Export open the picked run through `state.set_run`).
        parent: the owning widget.

    Signals:
        stepRequested(str): show a step ("evaluate" for Evaluate and Export).
        resumeRequested(str): resume this run folder (the window hands it to the Train step).
        trainRequested(object): train this `TrainConfig` in the Train step (a from-scratch baseline asked for
            in the comparison); the window calls `request_declined` when it cannot.
        runsLoaded(int): the list was (re)read; the number of runs.
        runOpened(str): the picked run's details are shown.
    """

    stepRequested = Signal(str)
    resumeRequested = Signal(str)
    trainRequested = Signal(object)
    runsLoaded = Signal(int)
    runOpened = Signal(str)

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self._workers = WorkerGroup()
        self._wanted: str | None = None  # the run to select once the list is read
        self._shown = None  # (path, status, plan) of the run in the panel
        self._stale = True

        title = page_title("Runs")
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setObjectName("refreshRunsButton")
        self.refresh_button.setAccessibleName("Refresh the run list")
        self.refresh_button.clicked.connect(self.refresh)

        self.model = RunsTableModel(self)
        proxy = QSortFilterProxyModel(self)
        proxy.setSourceModel(self.model)
        proxy.setSortRole(_SORT_ROLE)
        self.proxy = proxy
        self.table = QTableView()
        self.table.setObjectName("runList")
        self.table.setAccessibleName("Past runs")
        self.table.setModel(proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(6, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # Several runs (Ctrl/Shift+click) for Compare; the details below follow the current one.
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)  # one line per run; a long run name loses its middle, not its date
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_changed)
        self.table.selectionModel().selectionChanged.connect(self._update_compare)
        self.compare_button = self._button("compareButton", "Compare", "Compare the selected runs")
        self.compare_button.clicked.connect(self._on_compare)
        self.compare_hint = QLabel()
        self.compare_hint.setObjectName("compareHintLabel")
        self.compare_hint.setAccessibleName("About comparing runs")
        self.compare_hint.setWordWrap(True)
        self.empty_label = QLabel("No runs yet. Runs appear here once you start training in the Train step.")
        self.empty_label.setObjectName("noRunsLabel")
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)

        self.run_title = QLabel()
        self.run_title.setObjectName("runTitleLabel")
        self.run_title.setAccessibleName("Run")
        self.run_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QLabel()
        self.status_label.setObjectName("runStatusLabel")
        self.status_label.setAccessibleName("Run status")
        self.status_label.setWordWrap(True)
        self.plan_label = QLabel()
        self.plan_label.setObjectName("runPlanLabel")
        self.plan_label.setAccessibleName("Run plan")
        self.plan_label.setWordWrap(True)
        self.plan_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.resume_button = self._button("runResumeButton", "Resume", "Resume this run")
        self.evaluate_button = self._button("runEvaluateButton", "Evaluate", "Evaluate this run")
        self.export_button = self._button("runExportButton", "Export…", "Export this run's model")
        self.resume_button.clicked.connect(self._on_resume)
        self.evaluate_button.clicked.connect(self._on_evaluate)
        self.export_button.clicked.connect(self._on_evaluate)  # export lives in the Evaluate step
        self.charts = TrainingCharts(prefix="run")

        top = QHBoxLayout()
        top.addWidget(title)
        top.addSpacing(12)
        top.addWidget(self.compare_hint, 1)
        top.addWidget(self.compare_button)
        top.addWidget(self.refresh_button)
        list_box = QWidget()
        list_layout = QVBoxLayout(list_box)
        list_layout.setContentsMargins(0, 0, 0, 0)
        list_layout.addWidget(self.table)
        list_layout.addWidget(self.empty_label)
        details = QWidget()
        details.setObjectName("runDetails")
        d = QVBoxLayout(details)
        d.setContentsMargins(0, 0, 0, 0)
        d.addWidget(self.run_title)
        d.addWidget(self.status_label)
        d.addWidget(self.plan_label)
        buttons = QHBoxLayout()
        for b in (self.resume_button, self.evaluate_button, self.export_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        d.addLayout(buttons)
        d.addWidget(self.charts, 1)
        self.details = details
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(list_box)
        splitter.addWidget(details)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        browse = QWidget()
        browse_layout = QVBoxLayout(browse)
        browse_layout.setContentsMargins(0, 0, 0, 0)
        browse_layout.addLayout(top)
        browse_layout.addWidget(splitter, 1)
        self.browse = browse
        self.compare_view = CompareView()
        self.compare_view.backRequested.connect(self.show_list)
        self.compare_view.scratchRequested.connect(self.trainRequested)
        self.stack = QStackedWidget()
        self.stack.addWidget(browse)
        self.stack.addWidget(self.compare_view)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(*PAGE_MARGINS)
        layout.addWidget(self.stack)
        self._show_details(None)
        self._update_compare()
        state.runChanged.connect(self._on_run_changed)

    def _button(self, name: str, text: str, accessible: str) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName(name)
        button.setAccessibleName(accessible)
        return button

    # Reading the list -------------------------------------------------------------------------------------
    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._stale:
            self.refresh()

    def refresh(self) -> None:
        """Read the run list again (on a worker thread), keeping the picked run picked."""
        self._stale = False
        if self._shown is not None and self._wanted is None:
            self._wanted = self._shown[0]
        worker = self._start(Worker(_list_runs, self, name="list runs"))
        worker.succeeded.connect(self._on_listed)

    def _on_listed(self, runs: list) -> None:
        self.model.set_rows(runs)
        self._update_compare()
        self.empty_label.setVisible(not runs)
        self.table.setVisible(bool(runs))
        wanted, self._wanted = self._wanted, None
        row = self.model.row_of(wanted) if wanted else -1
        if row >= 0:
            index = self.proxy.mapFromSource(self.model.index(row, 0))
            self.table.selectRow(index.row())
            self.table.setCurrentIndex(index)
            self._open(str(self.model.row_at(row).path))
        elif not runs:
            self._show_details(None)
        self.runsLoaded.emit(len(runs))

    def _on_run_changed(self, run_dir: str) -> None:
        # A run finished or was picked elsewhere: the list is out of date; reread it now if it is on screen.
        if run_dir:
            self._wanted = run_dir
        self._stale = True
        if self.isVisible():
            self.refresh()

    def select_run(self, path: str) -> None:
        """Pick the run in `path` (reading the list first when needed)."""
        row = self.model.row_of(path)
        if row < 0:
            self._wanted = path
            self.refresh()
            return
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        self.table.setCurrentIndex(index)

    # The picked run ---------------------------------------------------------------------------------------
    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        run = self.model.row_at(self.proxy.mapToSource(current).row()) if current.isValid() else None
        if run is not None and (self._shown is None or self._shown[0] != str(run.path)):
            self._open(str(run.path))

    def _open(self, path: str) -> None:
        worker = self._start(Worker(_open_run(path), self, name="open run"))
        worker.succeeded.connect(self._on_opened)

    def _on_opened(self, details) -> None:
        path, status, plan, metrics = details
        self._show_details((path, status, plan))
        self.charts.clear()
        if plan is not None:
            self.charts.set_total_steps(plan.total_steps)
        self.charts.load_metrics(metrics)
        self.runOpened.emit(path)

    def _show_details(self, shown) -> None:
        self._shown = shown
        self.details.setVisible(shown is not None)
        if shown is None:
            return
        path, status, plan = shown
        self.run_title.setText(f"<b>{Path(path).name}</b>")
        self.run_title.setToolTip(path)
        words, resumable = STATUS_WORDS.get(status.state, (status.state, False))
        self.status_label.setText(f"{words}. {status.message}".strip())
        if plan is not None:
            self.plan_label.setText(
                f"{plan.model} · {len(plan.classes)} classes · {plan.num_images} training images · "
                f"{plan.total_steps} steps of {plan.batch} images at {plan.crop}×{plan.crop} px · "
                f"learning rate {plan.base_lr:.2g}"
                + (f" · mixup {plan.mixup_alpha:g}" if plan.mixup_alpha else "")
            )
        else:
            self.plan_label.setText("This run has no plan: it stopped before training began.")
        has_model = (Path(path) / "model.pt").is_file()
        self.resume_button.setVisible(resumable)
        self.resume_button.setEnabled(resumable and plan is not None)
        self.evaluate_button.setVisible(has_model)
        self.export_button.setVisible(has_model)

    def _on_resume(self) -> None:
        if self._shown is not None:
            self.resumeRequested.emit(self._shown[0])

    def _on_evaluate(self) -> None:
        if self._shown is not None:
            self.state.set_run(self._shown[0])
            self.stepRequested.emit("evaluate")

    # Comparing runs ---------------------------------------------------------------------------------------
    def selected_runs(self) -> list:
        """The selected runs (`RunSummary`s), in the list's order."""
        rows = sorted(self.table.selectionModel().selectedRows(), key=lambda i: i.row())
        picked = (self.model.row_at(self.proxy.mapToSource(i).row()) for i in rows)
        return [r for r in picked if r is not None]

    def _update_compare(self, *_args) -> None:
        from bit_engine.compare import comparison_problem

        picked = self.selected_runs()
        problem = comparison_problem([r.data_dir for r in picked])
        if problem is not None:
            hint = problem
        elif not picked:
            hint = "Select runs of the same photos to compare them (Ctrl+click for several)."
        elif len(picked) == 1:
            hint = (
                "Ctrl+click to add runs of the same photos; Compare can also train a from-scratch baseline."
            )
        else:
            hint = f"{len(picked)} runs of {Path(picked[0].data_dir).name} selected."
        self.compare_button.setEnabled(bool(picked) and problem is None)
        self.compare_button.setToolTip(hint)
        self.compare_hint.setText(hint)
        self.compare_hint.setEnabled(problem is None)  # a hint in the quieter colour, a problem in full
        self.compare_hint.setToolTip(hint)

    def _on_compare(self) -> None:
        picked = self.selected_runs()
        if picked and self.compare_button.isEnabled():
            self.compare_view.compare([str(r.path) for r in picked])
            self.stack.setCurrentWidget(self.compare_view)

    def show_list(self) -> None:
        """Back from a comparison to the run list."""
        self.stack.setCurrentWidget(self.browse)

    def run_ended(self, run_dir: str) -> None:
        """A training run ended (however it ended): list it, and let a comparison that asked for it add it."""
        self._stale = True
        if self.isVisible():
            self.refresh()
        self.compare_view.run_ended(run_dir)

    def request_declined(self, config) -> None:
        """A run asked for by `trainRequested` was not started (the window told the user why)."""
        self.compare_view.forget_request(config)

    # Workers ----------------------------------------------------------------------------------------------
    def _start(self, worker: Worker) -> Worker:
        worker.failed.connect(self._on_failed)
        return self._workers.start(worker)

    def _on_failed(self, exc) -> None:
        errors_view.record(exc, "Reading runs")
        self.status_label.setText(f"Could not read the run: {exc}")

    def shutdown(self) -> None:
        self._workers.shutdown()
        self.compare_view.shutdown()
