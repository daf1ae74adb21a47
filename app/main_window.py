"""The main window: a sidebar of steps (Data, Plan, Train, Evaluate, Predict) beside the page of the step.

The window is a thin frame. It owns the `AppState`, builds one page per step, decides from the state which
steps can be used (a step that cannot says why, in the sidebar and in its page), opens folders dropped
anywhere on it, and shuts every page's workers down before it closes.

Pages are `QWidget` subclasses `XxxPage(state, parent=None)` with a `shutdown()` method. A page may also
have a `stepRequested(str)` signal (a step key) to move the user on, e.g. from Data to Plan.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QByteArray, QModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QFont, QKeySequence, QPalette
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from app import pyside_imports, settings
from app.state import AppState
from app.widgets.page_style import page_title


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    module: str  # the page's module, imported when the window is built
    page_class: str
    blurb: str  # what the step is for, under its title in the sidebar


STEPS = (
    Step("data", "Data", "app.pages.data_page", "DataPage", "Your labelled photos"),
    Step("plan", "Plan", "app.pages.plan_page", "PlanPage", "Model, device, settings"),
    Step("train", "Train", "app.pages.train_page", "TrainPage", "Fine-tune the model"),
    Step("runs", "Runs", "app.pages.runs_page", "RunsPage", "Past runs: reopen, resume"),
    Step("evaluate", "Evaluate", "app.pages.evaluate_page", "EvaluatePage", "What it gets wrong"),
    Step("predict", "Predict", "app.pages.predict_page", "PredictPage", "Use the exported model"),
    Step(
        "howto",
        "How it works",
        "app.pages.how_it_works_page",
        "HowItWorksPage",
        "Why BiT works, on your photos",
    ),
)

_SUBTITLE_ROLE = Qt.ItemDataRole.UserRole + 1


class _StepDelegate(QStyledItemDelegate):
    """Draws a step as its title with a smaller second line: what it is for, or why it cannot be used yet."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        metrics = option.fontMetrics
        return QSize(200, metrics.height() * 2 + 22)

    def paint(self, painter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        title, opt.text = opt.text, ""
        style = opt.widget.style() if opt.widget else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        enabled = bool(opt.state & QStyle.StateFlag.State_Enabled)
        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        group = QPalette.ColorGroup.Normal if enabled else QPalette.ColorGroup.Disabled
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        rect = opt.rect.adjusted(14, 6, -8, -6)
        line = opt.fontMetrics.height()
        painter.save()
        font = QFont(opt.font)
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.1)
        painter.setFont(font)
        painter.setPen(opt.palette.color(group, role))
        painter.drawText(
            QRect(rect.left(), rect.top(), rect.width(), line + 2), Qt.AlignmentFlag.AlignLeft, title
        )
        small = QFont(opt.font)
        small.setPointSizeF(small.pointSizeF() * 0.9)
        painter.setFont(small)
        sub = index.data(_SUBTITLE_ROLE) or ""
        sub_rect = QRect(rect.left(), rect.top() + line + 4, rect.width(), line + 2)
        elided = painter.fontMetrics().elidedText(sub, Qt.TextElideMode.ElideRight, sub_rect.width())
        painter.setPen(opt.palette.color(QPalette.ColorGroup.Disabled if not selected else group, role))
        painter.drawText(sub_rect, Qt.AlignmentFlag.AlignLeft, elided)
        painter.restore()


class NotBuiltPage(QWidget):
    """Stands in for a step whose page is not part of this build; says so instead of pretending."""

    def __init__(self, step: Step, parent: QWidget | None = None):
        super().__init__(parent)
        label = QLabel(f"The {step.title} step is not part of this build of BiT Studio.")
        label.setObjectName(f"{step.key}NotBuiltLabel")
        label.setAccessibleName(f"{step.title} step not built")
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout = QVBoxLayout(self)
        layout.addWidget(label)

    def shutdown(self) -> None:
        pass


class _StepFrame(QStackedWidget):
    """One step in the window's stack: its page, or, while the step cannot be used, why not."""

    def __init__(self, step: Step, page: QWidget, go_to, parent: QWidget | None = None):
        super().__init__(parent)
        self.page = page
        blocked = QWidget()
        layout = QVBoxLayout(blocked)
        layout.addStretch(1)
        title = page_title(step.title)
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.reason = QLabel()
        self.reason.setObjectName(f"{step.key}UnavailableLabel")
        self.reason.setAccessibleName(f"Why the {step.title} step cannot be used yet")
        self.reason.setWordWrap(True)
        self.reason.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.back = QPushButton()
        self.back.setObjectName(f"{step.key}UnavailableButton")
        self.back.clicked.connect(lambda: go_to(self.back.property("target")))
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.back)
        row.addStretch(1)
        for w in (title, self.reason):
            layout.addWidget(w)
        layout.addLayout(row)
        layout.addStretch(2)
        self.addWidget(blocked)
        self.addWidget(page)

    def set_blocked(self, reason: str | None, target: Step | None) -> None:
        if reason is None:
            self.setCurrentWidget(self.page)
            return
        self.reason.setText(reason)
        self.back.setVisible(target is not None)
        if target is not None:
            self.back.setText(f"Go to {target.title}")
            self.back.setAccessibleName(f"Go to the {target.title} step")
            self.back.setProperty("target", target.key)
        self.setCurrentIndex(0)


class MainWindow(QMainWindow):
    """BiT Studio's one window.

    Signals:
        stepChanged(str): the step now shown (a key of STEPS).
    """

    stepChanged = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        # Before any page imports the engine: imports after Qt at their speed without it.
        pyside_imports.install()
        self.setObjectName("mainWindow")
        self.setWindowTitle("BiT Studio")
        self.setAcceptDrops(True)
        self.state = AppState(self)
        self.pages: dict[str, QWidget] = {}
        self._frames: dict[str, _StepFrame] = {}
        self._reasons: dict[str, str | None] = {}

        self.step_list = QListWidget()
        self.step_list.setObjectName("stepList")
        self.step_list.setAccessibleName("Steps")
        self.step_list.setItemDelegate(_StepDelegate(self.step_list))
        self.step_list.setFixedWidth(210)
        self.step_list.setFrameShape(QListWidget.Shape.NoFrame)
        self.step_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.step_list.setStyleSheet(
            "QListWidget#stepList { background: palette(window); border-right: 1px solid palette(mid); }"
        )
        self.stack = QStackedWidget()
        self.stack.setObjectName("stepStack")

        for step in STEPS:
            page = self._make_page(step)
            self.pages[step.key] = page
            frame = _StepFrame(step, page, self.go_to)
            self._frames[step.key] = frame
            self.stack.addWidget(frame)
            item = QListWidgetItem(step.title)
            item.setData(Qt.ItemDataRole.UserRole, step.key)
            item.setData(_SUBTITLE_ROLE, step.blurb)
            self.step_list.addItem(item)
            requested = getattr(page, "stepRequested", None)
            if requested is not None:
                requested.connect(self.go_to)

        self.step_list.currentRowChanged.connect(self._on_step_row_changed)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.step_list)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self._build_menu()

        for signal in (
            self.state.folderChanged,
            self.state.datasetChanged,
            self.state.planChanged,
            self.state.runChanged,
            self.state.modelExported,
        ):
            signal.connect(self._update_steps)
        self.state.folderChanged.connect(self._on_folder_changed)
        self.pages["runs"].resumeRequested.connect(self._on_resume_requested)
        self.pages["runs"].trainRequested.connect(self._on_train_requested)
        self.pages["train"].runEnded.connect(self.pages["runs"].run_ended)
        self._update_steps()
        self.step_list.setCurrentRow(0)
        self._restore_geometry()

    # ---------------------------------------------------------------------------------------------- steps

    def _make_page(self, step: Step) -> QWidget:
        try:
            module = importlib.import_module(step.module)
        except ModuleNotFoundError as exc:
            if exc.name != step.module:
                raise
            return NotBuiltPage(step)
        return getattr(module, step.page_class)(self.state)

    def current_step(self) -> str:
        item = self.step_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else STEPS[0].key

    def go_to(self, key: str) -> None:
        """Show the step `key` (a key of STEPS); a step that cannot be used shows why."""
        row = next(i for i, s in enumerate(STEPS) if s.key == key)
        if self.step_list.currentRow() == row:
            self._show(key)
        else:
            self.step_list.setCurrentRow(row)

    def step_reason(self, key: str) -> str | None:
        """Why step `key` cannot be used now; None when it can."""
        return self._reasons.get(key)

    def _availability(self) -> dict[str, tuple[str | None, str, str | None]]:
        """Step key -> (why it cannot be used or None, the same in a few words, the step that unblocks it)."""
        s = self.state
        ok = (None, "", None)
        if s.report is None:
            plan = ("Open a folder of labelled photos first (the Data step).", "Open a folder first", "data")
        elif not s.report.ok:
            plan = (
                "The folder cannot be trained on yet: see what the Data step says, fix it, rescan.",
                "Fix the folder first",
                "data",
            )
        else:
            plan = ok
        training = "train" in self.pages and self.pages["train"].is_training()
        if s.run_dir or training:
            train = ok  # a run to follow, resume or look at, with or without a plan
        elif plan[0] is not None:
            train = plan
        elif s.config is None:
            train = ("Choose a model and settings first (the Plan step).", "Make a plan first", "plan")
        else:
            train = ok
        if s.run_dir and (Path(s.run_dir) / "model.pt").is_file():
            evaluate = ok
        else:
            evaluate = (
                "Train a model first, or pick a finished run in the Runs step.",
                "Train a model first",
                "runs",
            )
        # The demonstrations run on the user's own photos, so they wait for a folder (the sample data is one
        # click away in the Data step) rather than inventing photos of their own.
        no_folder = (
            "Open a folder of labelled photos in the Data step, or try the sample data there: this step "
            "shows how BiT works on your own photos.",
            "Open a folder first",
            "data",
        )
        howto = plan if s.report is not None else no_folder
        return {
            "data": ok,
            "plan": plan,
            "train": train,
            "runs": ok,
            "evaluate": evaluate,
            "predict": ok,
            "howto": howto,
        }

    def _update_steps(self, *_args) -> None:
        by_key = {s.key: s for s in STEPS}
        for row, (key, (reason, short, target)) in enumerate(self._availability().items()):
            self._reasons[key] = reason
            item = self.step_list.item(row)
            step = by_key[key]
            flags = item.flags()
            if reason is None:
                item.setFlags(flags | Qt.ItemFlag.ItemIsEnabled)
                item.setData(_SUBTITLE_ROLE, step.blurb)
                item.setToolTip(step.blurb)
            else:
                item.setFlags(flags & ~Qt.ItemFlag.ItemIsEnabled)
                item.setData(_SUBTITLE_ROLE, short)
                item.setToolTip(reason)
            item.setData(Qt.ItemDataRole.AccessibleDescriptionRole, reason or step.blurb)
            self._frames[key].set_blocked(reason, by_key.get(target) if target else None)

    def _on_step_row_changed(self, row: int) -> None:
        if row >= 0:
            self._show(STEPS[row].key)

    def _show(self, key: str) -> None:
        self.stack.setCurrentWidget(self._frames[key])
        self.stepChanged.emit(key)

    # --------------------------------------------------------------------------------------------- folders

    def open_folder(self, folder: str) -> None:
        """Open a data folder in the Data step (scanned in the background)."""
        self.go_to("data")
        page = self.pages["data"]
        open_folder = getattr(page, "open_folder", None)
        if open_folder is not None:
            open_folder(folder)
        else:
            self.state.set_folder(folder)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of labelled photos")
        if folder:
            self.open_folder(folder)

    def _on_folder_changed(self, folder: str) -> None:
        self.setWindowTitle(f"{Path(folder).name} — BiT Studio" if folder else "BiT Studio")

    @staticmethod
    def _dropped_folder(event) -> str | None:
        mime = event.mimeData()
        if not mime.hasUrls():
            return None
        for url in mime.urls():
            if url.isLocalFile() and Path(url.toLocalFile()).is_dir():
                return url.toLocalFile()
        return None

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._dropped_folder(event) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        if self._dropped_folder(event) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        folder = self._dropped_folder(event)
        if folder is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_folder(folder)

    # ------------------------------------------------------------------------------------------ the frame

    def _build_menu(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        open_action = QAction("&Open a folder…", self)
        open_action.setShortcut(QKeySequence.StandardKey.Open)
        open_action.triggered.connect(self._choose_folder)
        file_menu.addAction(open_action)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        go_menu = self.menuBar().addMenu("&Go")
        for i, step in enumerate(STEPS, start=1):
            action = QAction(step.title, self)
            action.setShortcut(QKeySequence(f"Ctrl+{i}"))
            action.triggered.connect(lambda _checked=False, key=step.key: self.go_to(key))
            go_menu.addAction(action)

    def _restore_geometry(self) -> None:
        saved = settings.load().window_geometry
        if saved:
            try:
                self.restoreGeometry(QByteArray.fromHex(saved.encode("ascii")))
                return
            except (UnicodeEncodeError, ValueError):
                pass
        self.resize(1180, 760)

    def shutdown(self) -> None:
        """Cancel and wait for every page's background work (idempotent). The Train step's run first: the
        user asked for it to stop, and another page's wait must not let it train on meanwhile."""
        for key in sorted(self.pages, key=lambda key: key != "train"):
            self.pages[key].shutdown()

    def _on_resume_requested(self, run_dir: str) -> None:
        self.state.set_run(run_dir)
        self.go_to("train")
        self.pages["train"].resume(run_dir)

    def _on_train_requested(self, config) -> None:
        """Train `config` (a from-scratch baseline asked for in the Runs step) in the Train step."""
        train = self.pages["train"]
        if train.is_training():
            QMessageBox.information(
                self,
                "BiT Studio",
                "A run is training in the Train step. Let it finish or cancel it, then ask for the "
                "from-scratch run again.",
            )
            self.pages["runs"].request_declined(config)
            return
        train.start(config)
        self._update_steps()
        self.go_to("train")

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.pages["train"].is_training():
            answer = QMessageBox.question(
                self,
                "BiT Studio",
                "Stop training and close? The run can be resumed later.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.shutdown()
        settings.update(window_geometry=bytes(self.saveGeometry().toHex()).decode("ascii"))
        super().closeEvent(event)
