"""The Data step's label review: photos that may be in the wrong folder, and the corrections kept for it.

"Find photos that may be in the wrong folder" runs the engine's `find_label_issues` on a Worker, with progress
and Cancel. It uses the model of the newest run on this folder when there is one (that run cached the
features: the search takes seconds), else the Plan step's model when its weights are here, else
EfficientNet-Lite0, whose weights come with BiT Studio. The list shows each photo with its folder's label,
the class the model is confident it belongs to and how sure it is; each row records a correction ("Move to
X", "Belongs to…", "Leave it out") in the engine's `CorrectionStore`, never by moving a file.

The corrections kept for the folder are listed beside it: undoable one by one, exportable as CSV (refused
inside the photo folder), importable from CSV. The Plan step applies them to the next run.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app import label_corrections
from app.state import AppState
from app.widgets.naming import named as _named
from app.widgets.thumbnails import ThumbnailLoader
from app.workers import Worker, user_message

#: The model searched with when no run or plan names one: its weights ship with BiT Studio (works offline)
#: and it is quick on a CPU.
FALLBACK_MODEL = "EfficientNet-Lite0"

#: Rows built at once; the rest come with "Show more" (each row is a few widgets).
ROWS_AT_ONCE = 100

#: Rows built per turn of the event loop: a row is a few widgets (about 15 ms on a busy 2-core machine),
#: and a hundred built in one go would freeze the window for a second or two.
ROWS_PER_TICK = 3

#: Thumbnail side in the lists, in pixels.
ROW_THUMB = 56

_PHASES = {
    "scanning": "Reading the folder",
    "downloading": "Downloading the model's weights",
    "features": "Looking at each photo",
    "folds": "Training and testing five small models, each without the photos it then judges",
}


def _same_folder(a: str, b: str) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, ValueError):
        return False


def choose_search(folder: str, run_dir: str | None, plan):
    """The config the search uses for `folder`, and where its features come from, in words.

    Args:
        folder: the data folder.
        run_dir: the window's current run (None when none).
        plan: the Plan step's `TrainConfig` (None when none).

    Returns:
        (a `TrainConfig`, a phrase such as "the features of EfficientNet-Lite0, cached by your run <name>").
    """
    from bit_engine import runs, weights
    from bit_engine.config import TrainConfig
    from bit_engine.errors import BitStudioError

    candidates = [run_dir] if run_dir else []
    candidates += [str(r.path) for r in runs.list_runs() if r.status == "done"]
    for candidate in candidates:
        try:
            config = runs.read_config(candidate)
        except (BitStudioError, OSError):
            continue
        if _same_folder(config.data_dir, folder) and weights.is_available(config.model):
            # The run's own model and resolution: a head run cached exactly these features.
            source = f"the features of {config.model} kept from the run {Path(candidate).name}"
            return config.replace(data_dir=folder, device=plan.device if plan else None), source
    if plan is not None and _same_folder(plan.data_dir, folder) and weights.is_available(plan.model):
        config = TrainConfig(folder, model=plan.model, device=plan.device)
        return config, f"{plan.model}, the model of your plan"
    return TrainConfig(folder, model=FALLBACK_MODEL), f"{FALLBACK_MODEL} (small and quick; it works offline)"


def _search_call(folder: str, run_dir: str | None, plan):
    def call(on_progress, cancel):
        from bit_engine.corrections import CorrectionStore
        from bit_engine.label_issues import find_label_issues

        config, source = choose_search(folder, run_dir, plan)
        # The corrections made so far first: a corrected photo is judged by its corrected label. No
        # DataLoader processes: this runs on a thread of the window's process.
        config = config.replace(corrections=CorrectionStore(folder).as_config(), workers=0)
        return find_label_issues(config, on_progress=on_progress, cancel=cancel), source

    return call


class _CompactList(QListWidget):
    """A list that asks for little height: it grows with the room it is given, but its preferred height
    (QListWidget asks for 192 px) is what the panel's scroll area makes room for, and in a short window that
    pushed the buttons under the list out of sight."""

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), 96)


class IssueRow(QWidget):
    """One likely label error: thumbnail, file, what its folder says, what the model suggests, and actions.

    Signals:
        correctionAsked(str, object): the photo's path and the class it belongs to (None: leave it out).
        undoAsked(str): take the photo's correction back.
    """

    correctionAsked = Signal(str, object)
    undoAsked = Signal(str)

    def __init__(self, issue, classes, judged=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.issue = issue
        # The search judged a photo corrected earlier by its corrected label (issue.given); `judged` is that
        # correction, and the photo's folder says another label.
        self.judged = judged
        folder_label = judged.given if judged is not None else issue.given
        where = f"In the folder {folder_label}"
        if folder_label != issue.given:
            where += f", corrected to {issue.given}"
        name = Path(issue.path).name
        self.thumb = QLabel(self)
        self.thumb.setFixedSize(ROW_THUMB, ROW_THUMB)
        self.thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.thumb.setStyleSheet("background: #e4e4e4;")
        self.title = QLabel(name, self)
        self.title.setTextFormat(Qt.TextFormat.PlainText)  # file and class names are data, never markup
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.title.setToolTip(issue.path)
        self.detail = QLabel(
            f"{where} · looks like {issue.suggested}: {label_corrections.how_sure(issue.confidence)}",
            self,
        )
        self.detail.setTextFormat(Qt.TextFormat.PlainText)
        self.detail.setToolTip(
            f"The model gives {issue.suggested} {issue.confidence:.0%} and {issue.given} "
            f"{issue.given_probability:.0%}, judging this photo without having seen its label."
        )
        self.move_button = _named(
            QPushButton(
                f"Back to {folder_label}"
                if issue.suggested == folder_label
                else f"Move to {issue.suggested}",
                self,
            ),
            "moveButton",
            f"Move {name} to {issue.suggested}",
        )
        self.move_button.setToolTip(
            f"Record that this photo is a {issue.suggested}; the file stays where it is."
        )
        self.move_button.clicked.connect(lambda: self.correctionAsked.emit(issue.path, issue.suggested))
        self.other_button = _named(
            QPushButton("Belongs to…", self), "belongsToButton", f"{name} belongs to another class"
        )
        menu = QMenu(self.other_button)
        for label in classes:
            if label not in (issue.given, issue.suggested):
                action = menu.addAction(label)
                action.triggered.connect(
                    lambda _checked=False, target=label: self.correctionAsked.emit(issue.path, target)
                )
        self.other_button.setMenu(menu)
        self.other_button.setVisible(not menu.isEmpty())
        self.leave_button = _named(QPushButton("Leave it out", self), "leaveOutButton", f"Leave {name} out")
        self.leave_button.setToolTip("Train and validate without this photo; the file stays where it is.")
        self.leave_button.clicked.connect(lambda: self.correctionAsked.emit(issue.path, None))
        self.outcome = _named(QLabel(self), "issueOutcomeLabel", f"What was recorded for {name}")
        self.outcome.setTextFormat(Qt.TextFormat.PlainText)
        self.outcome.setStyleSheet("color: #1d6b2c;")
        self.undo_button = _named(
            QPushButton("Undo", self), "undoIssueButton", f"Undo the correction of {name}"
        )
        self.undo_button.clicked.connect(lambda: self.undoAsked.emit(issue.path))

        text = QVBoxLayout()
        text.setSpacing(2)
        text.addWidget(self.title)
        text.addWidget(self.detail)
        actions = QHBoxLayout()
        actions.setSpacing(6)
        for w in (self.move_button, self.other_button, self.leave_button, self.outcome, self.undo_button):
            actions.addWidget(w)
        actions.addStretch(1)
        text.addLayout(actions)
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 4, 6, 4)
        row.addWidget(self.thumb, 0, Qt.AlignmentFlag.AlignTop)
        row.addLayout(text, 1)
        self.show_correction(None)

    def set_thumbnail(self, pixmap: QPixmap) -> None:
        self.thumb.setPixmap(
            pixmap.scaled(
                self.thumb.size(),
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        )

    def show_correction(self, correction) -> None:
        """Offer the actions, or say what was recorded since the search (with Undo)."""
        done = correction is not None and correction != self.judged
        for w in (self.move_button, self.leave_button):
            w.setVisible(not done)
        self.other_button.setVisible(not done and not self.other_button.menu().isEmpty())
        self.outcome.setVisible(done)
        self.undo_button.setVisible(done)
        if done:
            what = label_corrections.outcome(correction)
            self.outcome.setText(f"✓ {what[0].upper()}{what[1:]}: the next run uses it.")


class LabelIssuesPanel(QWidget):
    """Photos that may be in the wrong folder (found on request) and the corrections kept for the folder.

    Signals:
        issuesShown(object): a search ended and its `LabelIssueReport` is listed (its first rows built).
        searchEnded(): a search ended, however (found, failed or cancelled).
    """

    issuesShown = Signal(object)
    searchEnded = Signal()

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.folder: str | None = None
        self.issue_report = None
        self._search: Worker | None = None
        self._old: list[Worker] = []  # superseded searches, cancelled, waited for at shutdown
        self._rows: dict[str, IssueRow] = {}
        self._shown = 0
        self._pending: list = []  # issues whose rows are still to be built
        self._announce = False  # issuesShown is due once the pending rows are built
        self._by_path: dict = {}  # the corrections in force, by photo
        self._build_timer = QTimer(self)
        self._build_timer.setInterval(0)
        self._build_timer.timeout.connect(self._build_some)
        self._thumbs: dict[str, QPixmap] = {}
        self.thumbnails = ThumbnailLoader(size=ROW_THUMB * 2, threads=1, parent=self)
        self.thumbnails.loaded.connect(self._on_thumbnail)
        self._build()
        state.correctionsChanged.connect(self._on_corrections_changed)
        state.folderChanged.connect(self._on_folder_changed)

    # ------------------------------------------------------------------------------------------ layout

    def _build(self) -> None:
        top = QHBoxLayout()
        self.help = _named(
            QLabel(
                "<b>Photos that may be in the wrong folder.</b> A small model, trained without the photos it "
                "judges, lists those it is confident belong to another class. What you decide is kept by BiT "
                "Studio for the next run: <b>nothing in your folder is moved or changed.</b>"
            ),
            "labelIssuesHelp",
            "What the label check does",
        )
        self.help.setWordWrap(True)
        top.addWidget(self.help, 1)
        self.find_button = _named(
            QPushButton("Find photos that may be in the wrong folder"),
            "findLabelIssuesButton",
            "Find photos that may be in the wrong folder",
        )
        self.find_button.setToolTip(
            "Seconds after a run on this folder (its features are kept); a minute or so before, on a CPU."
        )
        self.find_button.clicked.connect(self.find_issues)
        top.addWidget(self.find_button, 0, Qt.AlignmentFlag.AlignTop)

        busy = QHBoxLayout()
        self.progress = _named(QProgressBar(), "labelIssuesProgress", "Progress of the label check")
        self.progress.setMaximumWidth(320)
        self.stage = _named(QLabel(), "labelIssuesStage", "What the label check is doing")
        self.cancel_button = _named(
            QPushButton("Cancel"), "labelIssuesCancelButton", "Cancel the label check"
        )
        self.cancel_button.clicked.connect(self.cancel_search)
        busy.addWidget(self.progress)
        busy.addWidget(self.stage, 1)
        busy.addWidget(self.cancel_button)
        self.busy = QWidget()
        self.busy.setLayout(busy)
        busy.setContentsMargins(0, 0, 0, 0)
        self.busy.setVisible(False)

        self.summary = _named(QLabel(), "labelIssueSummary", "What the label check found")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)  # every piece of data in it is escaped
        self.summary.setVisible(False)

        # Left: the issues (a hint until a search ran).
        self.issue_views = QStackedWidget()
        self.placeholder = QLabel(
            "No check yet. After a run on this folder the check takes seconds: it reuses what the run "
            "computed."
        )
        self.placeholder.setWordWrap(True)
        # At the top: in a short window the panel scrolls, and a centred hint would be cut in half.
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.placeholder.setContentsMargins(0, 24, 0, 0)
        self.placeholder.setEnabled(False)
        self.issue_list = _named(_CompactList(), "labelIssueList", "Photos that may be in the wrong folder")
        self.issue_list.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.issue_list.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.more_button = _named(QPushButton(), "moreLabelIssuesButton", "Show more photos")
        self.more_button.clicked.connect(self._show_more)
        issues_box = QWidget()
        issues_layout = QVBoxLayout(issues_box)
        issues_layout.setContentsMargins(0, 0, 0, 0)
        issues_layout.addWidget(self.issue_list, 1)
        issues_layout.addWidget(self.more_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.issue_views.addWidget(self.placeholder)
        self.issue_views.addWidget(issues_box)

        # Right: the corrections kept for this folder.
        box = QGroupBox("Corrections kept by BiT Studio")
        box.setObjectName("correctionsBox")
        box_layout = QVBoxLayout(box)
        self.count_label = _named(QLabel(), "correctionsCountLabel", "How many corrections the next run uses")
        self.count_label.setWordWrap(True)
        self.count_label.setTextFormat(Qt.TextFormat.PlainText)
        font = self.count_label.font()
        font.setBold(True)
        self.count_label.setFont(font)
        box_layout.addWidget(self.count_label)
        self.corrections_list = _named(_CompactList(), "correctionsList", "Corrections kept for this folder")
        self.corrections_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.corrections_list.setIconSize(QSize(32, 32))
        self.corrections_list.itemSelectionChanged.connect(self._on_selection_changed)
        box_layout.addWidget(self.corrections_list, 1)
        buttons = QHBoxLayout()
        self.undo_button = _named(
            QPushButton("Undo"), "undoCorrectionButton", "Undo the selected corrections"
        )
        self.undo_button.setToolTip("Take the selected corrections back: their folders' labels apply again.")
        self.undo_button.clicked.connect(self.undo_selected)
        self.export_button = _named(
            QPushButton("Export as CSV…"), "exportCorrectionsButton", "Export the corrections as CSV"
        )
        self.export_button.setToolTip(
            "path, given label, corrected label: for a spreadsheet or the command line"
        )
        self.export_button.clicked.connect(self._on_export_clicked)
        self.import_button = _named(
            QPushButton("Import CSV…"), "importCorrectionsButton", "Import corrections from a CSV file"
        )
        self.import_button.clicked.connect(self._on_import_clicked)
        for b in (self.undo_button, self.export_button, self.import_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        box_layout.addLayout(buttons)
        self.file_status = _named(QLabel(), "correctionsStatusLabel", "Export or import result")
        self.file_status.setWordWrap(True)
        self.file_status.setTextFormat(Qt.TextFormat.PlainText)
        self.file_status.setVisible(False)
        box_layout.addWidget(self.file_status)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.issue_views)
        splitter.addWidget(box)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([600, 400])

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.busy)
        layout.addWidget(self.summary)
        layout.addWidget(splitter, 1)
        # Scrolls in a small window instead of making the whole Data step (and so the window) taller.
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self._set_folder(None)

    # ------------------------------------------------------------------------------------------ public

    def set_report(self, report) -> None:
        """A scan of the folder finished: the search can run when it can be trained on."""
        if report is None:
            self._set_folder(None)
            return
        if self.folder is None or not _same_folder(self.folder, report.root):
            self._set_folder(report.root)
        self.find_button.setEnabled(report.ok and self._search is None)
        self.find_button.setToolTip(
            "Seconds after a run on this folder (its features are kept); a minute or so before, on a CPU."
            if report.ok
            else "Fix what the Data step lists above first, then Rescan."
        )
        self.refresh_corrections()

    def find_issues(self) -> None:
        """Look for photos that may be in the wrong folder, in the background."""
        if self.folder is None or self._search is not None:
            return
        worker = Worker(
            _search_call(self.folder, self.state.run_dir, self.state.config), self, "label issues"
        )
        worker.progress.connect(self._on_progress)
        worker.succeeded.connect(self._on_found)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        worker.done.connect(self._on_search_done)
        self._search = worker
        self.find_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.stage.setText("Starting…")
        self.cancel_button.setEnabled(True)
        self.busy.setVisible(True)
        worker.start()

    def cancel_search(self) -> None:
        if self._search is not None:
            self.stage.setText("Cancelling…")
            self.cancel_button.setEnabled(False)
            self._search.cancel()

    def is_searching(self) -> bool:
        return self._search is not None

    def issue_rows(self) -> list[IssueRow]:
        """The rows built so far, in order (for tests and automation; `issuesShown` says when a search's
        first rows are all built)."""
        return [self.issue_list.itemWidget(self.issue_list.item(i)) for i in range(self.issue_list.count())]

    def refresh_corrections(self) -> None:
        """Read the folder's corrections again: the list, its header and the rows' state."""
        from bit_engine.corrections import CorrectionStore
        from bit_engine.errors import BitStudioError

        self.corrections_list.clear()
        found: tuple = ()
        problem = ""
        if self.folder is not None:
            try:
                found = CorrectionStore(self.folder).corrections()
            except BitStudioError as exc:
                problem = str(exc)
        self.count_label.setText(problem or label_corrections.count_sentence(len(found)))
        by_path = self._by_path = {c.path: c for c in found}
        for c in found:
            what = "left out" if c.corrected is None else f"{c.given} → {c.corrected}"
            item = QListWidgetItem(f"{c.path}\n{what}")
            item.setData(Qt.ItemDataRole.UserRole, c.path)
            item.setToolTip(f"{c.path}: its folder says {c.given}; {label_corrections.outcome(c)}.")
            path = self._absolute(c.path)
            pixmap = self._thumbs.get(path)
            if pixmap is not None:
                item.setIcon(pixmap)
            else:
                self.thumbnails.request(path)
            self.corrections_list.addItem(item)
        has_folder = self.folder is not None and not problem
        self.export_button.setEnabled(has_folder and bool(found))
        self.import_button.setEnabled(has_folder)
        self._on_selection_changed()
        for path, row in self._rows.items():
            row.show_correction(by_path.get(path))

    def undo_selected(self) -> None:
        """Take back the selected corrections."""
        paths = [item.data(Qt.ItemDataRole.UserRole) for item in self.corrections_list.selectedItems()]
        if paths and self.folder is not None:
            self._change(lambda: label_corrections.take_back(self.folder, paths))

    def export_to(self, destination: str) -> int:
        """Write the corrections as CSV to `destination`; returns how many.

        Raises:
            BitStudioError: `destination` is inside the photo folder (the message says so).
            OSError: it cannot be written.
        """
        from bit_engine.corrections import CorrectionStore

        return CorrectionStore(self.folder).export_csv(destination)

    def shutdown(self) -> None:
        self._build_timer.stop()
        workers = [w for w in (self._search, *self._old) if w is not None]
        for w in workers:
            w.cancel()
        for w in workers:
            w.wait(60_000)
        self.thumbnails.shutdown()

    # ------------------------------------------------------------------------------------------ internals

    def _set_folder(self, folder: str | None) -> None:
        self.folder = folder
        self.issue_report = None
        self._rows = {}
        self._thumbs = {}
        self.thumbnails.clear()
        self._build_timer.stop()
        self._pending = []
        self._announce = False
        self.issue_list.clear()
        self.issue_views.setCurrentIndex(0)
        self.more_button.setVisible(False)
        self.summary.setVisible(False)
        self.find_button.setEnabled(folder is not None and self._search is None)
        self.refresh_corrections()

    def _absolute(self, path: str) -> str:
        return str(Path(self.folder, *path.split("/"))) if self.folder else path

    def _change(self, action) -> bool:
        """Run a change of the store; a damaged store or a refused correction becomes a message.

        Returns:
            Whether the change was made.
        """
        from bit_engine.errors import BitStudioError

        try:
            action()
        except BitStudioError as exc:
            QMessageBox.warning(self, "The corrections were not changed", str(exc))
            return False
        except OSError as exc:
            QMessageBox.warning(
                self,
                "The corrections were not changed",
                f"BiT Studio could not save them: {exc.strerror or exc}.",
            )
            return False
        # Every view of the corrections (this one included) reads them again from the signal.
        self.state.corrections_changed(self.folder)
        return True

    def _on_row_correction(self, path: str, target) -> None:
        row = self._rows.get(path)
        if row is None or self.folder is None:
            return
        folder = self.folder
        self._change(lambda: label_corrections.correct(folder, path, row.issue.given, target))

    def _on_row_undo(self, path: str) -> None:
        if self.folder is not None:
            folder = self.folder
            self._change(lambda: label_corrections.take_back(folder, [path]))

    def _show_issues(self, report, source: str) -> None:
        self.issue_report = report
        self._rows = {}
        self.issue_list.clear()
        self._shown = 0
        n, total = len(report.issues), report.num_photos
        seconds = f"{report.seconds:.0f} s" if report.seconds >= 1 else "under a second"
        checked = f"Checked with {html.escape(source, quote=False)}, in {seconds}."
        if report.corrections:
            checked += f" Your {report.corrections} correction{'s' if report.corrections != 1 else ''} were applied first."
        if n:
            self.summary.setText(
                f"<b>{n} of {total:,} photos may be in the wrong folder</b>, the most likely first. {checked}"
            )
        else:
            self.summary.setText(
                f"<b>No photo looks out of place.</b> For each of the {total:,} photos, the model agrees with "
                f"its folder or is not confident it belongs elsewhere. {checked}"
            )
        self.summary.setVisible(True)
        self.issue_views.setCurrentIndex(1 if n else 0)
        if not n:
            self.placeholder.setText("Nothing to review: every photo looks like the class of its folder.")
        self.refresh_corrections()
        self._announce = True
        self._show_more()

    def _show_more(self) -> None:
        """Queue the next rows (built a few per turn of the event loop, so the window stays responsive)."""
        report = self.issue_report
        if report is None:
            return
        end = min(len(report.issues), self._shown + ROWS_AT_ONCE)
        self._pending.extend(report.issues[self._shown : end])
        self._shown = end
        left = len(report.issues) - end
        self.more_button.setText(f"Show {min(left, ROWS_AT_ONCE)} more (of {left})")
        self.more_button.setVisible(left > 0)
        self._build_timer.start()

    def _build_some(self) -> None:
        report = self.issue_report
        batch, self._pending = self._pending[:ROWS_PER_TICK], self._pending[ROWS_PER_TICK:]
        for issue in batch if report is not None else ():
            row = IssueRow(issue, report.classes, self._by_path.get(issue.path), self.issue_list)
            row.correctionAsked.connect(self._on_row_correction)
            row.undoAsked.connect(self._on_row_undo)
            row.show_correction(self._by_path.get(issue.path))
            item = QListWidgetItem()
            # Read by screen readers and tests; the row widget paints over the item.
            item.setData(
                Qt.ItemDataRole.AccessibleTextRole,
                f"{issue.path}: in the folder {issue.given}, looks like {issue.suggested} ({issue.confidence:.0%})",
            )
            item.setSizeHint(row.sizeHint())
            self.issue_list.addItem(item)
            self.issue_list.setItemWidget(item, row)
            self._rows[issue.path] = row
            path = self._absolute(issue.path)
            if path in self._thumbs:
                row.set_thumbnail(self._thumbs[path])
            else:
                self.thumbnails.request(path)
        if not self._pending:
            self._build_timer.stop()
            if self._announce and report is not None:
                self._announce = False
                self.issuesShown.emit(report)

    # ------------------------------------------------------------------------------------------ slots

    def _on_folder_changed(self, folder: str) -> None:
        if self._search is not None:
            # A search of the previous folder: its result no longer matters.
            old, self._search = self._search, None
            old.cancel()
            old.blockSignals(True)
            self._old.append(old)
            self.busy.setVisible(False)
        self._set_folder(None)

    def _on_corrections_changed(self, folder: str) -> None:
        if self.folder is not None and _same_folder(folder, self.folder):
            self.refresh_corrections()

    def _on_selection_changed(self) -> None:
        self.undo_button.setEnabled(bool(self.corrections_list.selectedItems()))

    def _on_thumbnail(self, path: str, image: QImage) -> None:
        pixmap = QPixmap.fromImage(image)
        self._thumbs[path] = pixmap
        for issue_path, row in self._rows.items():
            if self._absolute(issue_path) == path:
                row.set_thumbnail(pixmap)
        for i in range(self.corrections_list.count()):
            item = self.corrections_list.item(i)
            if self._absolute(item.data(Qt.ItemDataRole.UserRole)) == path:
                item.setIcon(pixmap)

    def _on_progress(self, p) -> None:
        phase = getattr(p, "phase", "")
        words = _PHASES.get(phase, "Working")
        done, total = getattr(p, "done", 0), getattr(p, "total", 0)
        if total and phase != "downloading":
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.stage.setText(f"{words}: {done:,} of {total:,}")
        else:
            self.progress.setRange(0, 0)
            self.stage.setText(f"{words}…")

    def _on_found(self, result) -> None:
        report, source = result
        self._show_issues(report, source)

    def _on_failed(self, exc: BaseException) -> None:
        self.summary.setText(f"The check could not run: {html.escape(user_message(exc), quote=False)}")
        self.summary.setVisible(True)

    def _on_cancelled(self) -> None:
        self.summary.setText("The check was cancelled. Nothing was changed.")
        self.summary.setVisible(True)

    def _on_search_done(self) -> None:
        worker = self.sender()
        if worker is self._search:
            self._search = None
            self.busy.setVisible(False)
            self.find_button.setEnabled(self.folder is not None)
            self.searchEnded.emit()
        if isinstance(worker, Worker):
            worker.deleteLater()
        self._old = [w for w in self._old if w.is_running()]

    def _on_export_clicked(self) -> None:
        if self.folder is None:
            return
        suggested = str(Path.home() / f"{Path(self.folder).name or 'photos'}-corrections.csv")
        path, _ = QFileDialog.getSaveFileName(self, "Export the corrections as CSV", suggested, "CSV (*.csv)")
        if not path:
            return
        from bit_engine.errors import BitStudioError

        try:
            n = self.export_to(path)
        except BitStudioError as exc:
            QMessageBox.warning(self, "Not exported", str(exc))
            return
        except OSError as exc:
            QMessageBox.warning(self, "Not exported", f"{path} could not be written: {exc.strerror or exc}.")
            return
        self._say(f"Exported {n} correction{'' if n == 1 else 's'} to {path}.")

    def _on_import_clicked(self) -> None:
        if self.folder is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import corrections from a CSV file", "", "CSV (*.csv)")
        if not path:
            return
        from bit_engine.corrections import CorrectionStore

        folder = self.folder
        added: list[int] = []
        if self._change(lambda: added.append(CorrectionStore(folder).import_csv(path))):
            n = added[0]
            self._say(f"Imported {n} correction{'' if n == 1 else 's'} from {path}.")

    def _say(self, text: str) -> None:
        self.file_status.setText(text)
        self.file_status.setVisible(True)
