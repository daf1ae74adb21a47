"""The Data step: open a folder of labelled photos, scan it in the background, show what was found.

Three views: the welcome view (open a folder, try the sample data, recent folders), the scan in progress
(a progress bar and Cancel), and the report (classes with counts and example thumbnails, the split, warnings
in plain words, skipped files with their reasons). Nothing is ever written into the user's folder; the
sample data is generated in the app's own data folder.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app import settings
from app.pages.label_issues_panel import LabelIssuesPanel
from app.state import AppState
from app.widgets.class_table import (
    EXAMPLES_PER_CLASS,
    THUMB_SIZE,
    ClassRow,
    ClassTableModel,
    ThumbnailStripDelegate,
)
from app.widgets.naming import named as _named
from app.widgets.page_style import PAGE_MARGINS, height_showing_every_row, page_title
from app.widgets.thumbnails import ThumbnailLoader
from app.workers import Worker, user_message

#: Skipped files listed one by one at most; the rest are counted (a list of 100,000 lines helps nobody).
MAX_SKIPPED_SHOWN = 2000

_SCAN_STAGES = {
    "listing": "Counting files",
    "reading": "Reading photos",
    "comparing": "Looking for duplicate photos",
}


class DataPage(QWidget):
    """The Data step.

    Signals:
        stepRequested(str): the user asked to go on to another step ("plan").
    """

    stepRequested = Signal(str)

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self._scan: Worker | None = None
        self._sample: Worker | None = None
        self._old_workers: list[Worker] = []  # cancelled, maybe still finishing: waited for at shutdown
        # One decoding thread: the scan and the GUI share two cores with it.
        self.thumbnails = ThumbnailLoader(size=THUMB_SIZE, threads=1, parent=self)
        self.views = QStackedWidget()
        self.views.addWidget(self._build_welcome())
        self.views.addWidget(self._build_scanning())
        self.views.addWidget(self._build_report())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.views)
        self._refresh_recent()

    # ------------------------------------------------------------------------------------------- views

    def _build_welcome(self) -> QWidget:
        page = QWidget()
        page.setObjectName("welcomeView")
        outer = QVBoxLayout(page)
        outer.setContentsMargins(48, 40, 48, 32)
        outer.addStretch(1)
        headline = page_title("Teach your computer to tell your photos apart", 1.7)
        headline.setWordWrap(True)
        outer.addWidget(headline)
        intro = QLabel(
            "Give BiT Studio a folder with one sub-folder per kind of photo, for example <b>cats/</b> and "
            "<b>dogs/</b>. It picks a pre-trained model and its settings for you, shows why, trains it, "
            "shows what it gets wrong, and exports a model you can use anywhere. "
            "Your folder is only read, never changed."
        )
        intro.setWordWrap(True)
        intro.setMaximumWidth(720)
        outer.addWidget(intro)
        outer.addSpacing(12)
        example = QLabel(
            "<pre>my-photos/\n    cats/     IMG_0012.jpg  IMG_0013.jpg  …\n"
            "    dogs/     DSC_0410.jpg  …\n    rabbits/  …</pre>"
        )
        example.setObjectName("folderExampleLabel")
        example.setAccessibleName("Example folder layout")
        outer.addWidget(example)
        buttons = QHBoxLayout()
        self.open_button = _named(QPushButton("Open a folder…"), "dataFolderButton", "Open a folder")
        self.open_button.setDefault(True)
        self.open_button.setMinimumHeight(36)
        self.open_button.clicked.connect(self._on_open_clicked)
        self.sample_button = _named(
            QPushButton("Try the sample data"), "sampleDataButton", "Try the sample data"
        )
        self.sample_button.setMinimumHeight(36)
        self.sample_button.setToolTip(
            "Generates 240 small pictures of circles, squares, stripes and triangles in BiT Studio's own "
            "data folder, then opens them."
        )
        self.sample_button.clicked.connect(self._on_sample_clicked)
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.sample_button)
        buttons.addStretch(1)
        outer.addLayout(buttons)
        hint = QLabel("You can also drop a folder anywhere on this window.")
        hint.setEnabled(False)  # the palette's muted text: a hint, not an instruction
        outer.addWidget(hint)
        self.welcome_status = _named(QLabel(), "welcomeStatusLabel", "Status")
        self.welcome_status.setWordWrap(True)
        self.welcome_status.setVisible(False)
        outer.addWidget(self.welcome_status)
        outer.addSpacing(16)
        self.recent_title = QLabel("<b>Recent folders</b>")
        outer.addWidget(self.recent_title)
        self.recent_list = _named(QListWidget(), "recentFoldersList", "Recent folders")
        self.recent_list.setMaximumHeight(150)
        self.recent_list.setMaximumWidth(720)
        self.recent_list.itemActivated.connect(
            lambda item: self.open_folder(item.data(Qt.ItemDataRole.UserRole))
        )
        self.recent_list.itemClicked.connect(
            lambda item: self.open_folder(item.data(Qt.ItemDataRole.UserRole))
        )
        outer.addWidget(self.recent_list)
        outer.addStretch(2)
        return page

    def _build_scanning(self) -> QWidget:
        page = QWidget()
        page.setObjectName("scanningView")
        outer = QVBoxLayout(page)
        outer.setContentsMargins(48, 40, 48, 32)
        outer.addStretch(1)
        self.scan_title = page_title("Reading the folder…")
        outer.addWidget(self.scan_title)
        self.scan_folder = QLabel()
        self.scan_folder.setWordWrap(True)
        self.scan_folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.scan_folder)
        self.scan_bar = _named(QProgressBar(), "scanProgressBar", "Scan progress")
        self.scan_bar.setMaximumWidth(640)
        outer.addWidget(self.scan_bar)
        self.scan_stage = _named(QLabel("Starting…"), "scanStageLabel", "Scan progress in words")
        outer.addWidget(self.scan_stage)
        row = QHBoxLayout()
        self.scan_cancel = _named(QPushButton("Cancel"), "scanCancelButton", "Cancel the scan")
        self.scan_cancel.clicked.connect(self.cancel_scan)
        row.addWidget(self.scan_cancel)
        row.addStretch(1)
        outer.addLayout(row)
        note = QLabel("The folder is only read. Large folders take a while; the window stays usable.")
        note.setWordWrap(True)
        note.setEnabled(False)
        outer.addWidget(note)
        outer.addStretch(2)
        return page

    def _build_report(self) -> QWidget:
        page = QWidget()
        page.setObjectName("reportView")
        outer = QVBoxLayout(page)
        outer.setContentsMargins(*PAGE_MARGINS)
        header = QHBoxLayout()
        titles = QVBoxLayout()
        self.folder_title = _named(page_title(""), "folderTitleLabel", "Folder name")
        self.folder_path = _named(QLabel(), "folderPathLabel", "Folder path")
        self.folder_path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.folder_path.setEnabled(False)
        titles.addWidget(self.folder_title)
        titles.addWidget(self.folder_path)
        header.addLayout(titles, 1)
        self.rescan_button = _named(QPushButton("Rescan"), "rescanButton", "Rescan the folder")
        self.rescan_button.setToolTip("Read the folder again, after you changed it.")
        self.rescan_button.clicked.connect(self.rescan)
        self.other_button = _named(
            QPushButton("Open another folder…"), "otherFolderButton", "Open another folder"
        )
        self.other_button.clicked.connect(self._on_open_clicked)
        self.continue_button = _named(
            QPushButton("Continue to Plan  →"), "continueToPlanButton", "Continue to Plan"
        )
        self.continue_button.setDefault(True)
        self.continue_button.clicked.connect(lambda: self.stepRequested.emit("plan"))
        for b in (self.rescan_button, self.other_button, self.continue_button):
            header.addWidget(b, 0, Qt.AlignmentFlag.AlignTop)
        outer.addLayout(header)

        self.summary = _named(QLabel(), "summaryLabel", "Summary")
        self.summary.setWordWrap(True)
        outer.addWidget(self.summary)
        self.split_label = _named(QLabel(), "splitLabel", "Training and validation split")
        self.split_label.setWordWrap(True)
        outer.addWidget(self.split_label)

        self.errors_label = _named(QLabel(), "errorsLabel", "Why training cannot start")
        self.errors_label.setWordWrap(True)
        self.errors_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.errors_label.setFrameShape(QFrame.Shape.StyledPanel)
        self.errors_label.setStyleSheet(
            "QLabel#errorsLabel { background: #fdecea; color: #611a15; border: 1px solid #f5c2c0;"
            " border-radius: 4px; padding: 8px; }"
        )
        outer.addWidget(self.errors_label)
        self.warnings_label = _named(QLabel(), "warningsLabel", "Warnings")
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warnings_label.setStyleSheet(
            "QLabel#warningsLabel { background: #fff8e1; color: #4a3b00; border: 1px solid #f0dc9b;"
            " border-radius: 4px; padding: 8px; }"
        )
        outer.addWidget(self.warnings_label)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setChildrenCollapsible(False)
        self.class_model = ClassTableModel(self.thumbnails, self)
        self.class_table = _named(QTableView(), "classTable", "Classes")
        self.class_table.setModel(self.class_model)
        self.class_table.setItemDelegateForColumn(
            ClassTableModel.EXAMPLES, ThumbnailStripDelegate(self.class_model, self.class_table)
        )
        self.class_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.class_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.class_table.verticalHeader().setVisible(False)
        self.class_table.verticalHeader().setDefaultSectionSize(THUMB_SIZE + 10)
        self.class_table.setAlternatingRowColors(True)
        self.class_table.setWordWrap(False)
        hh = self.class_table.horizontalHeader()
        hh.setSectionResizeMode(ClassTableModel.CLASS, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(ClassTableModel.TRAIN, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(ClassTableModel.VAL, QHeaderView.ResizeMode.ResizeToContents)
        hh.setStretchLastSection(True)
        splitter.addWidget(self.class_table)

        skipped_box = QGroupBox()
        self.skipped_box = skipped_box
        skipped_layout = QVBoxLayout(skipped_box)
        self.skipped_list = _named(QListWidget(), "skippedList", "Skipped files")
        self.skipped_list.setUniformItemSizes(True)
        skipped_layout.addWidget(self.skipped_list)
        splitter.addWidget(skipped_box)
        self.label_issues = LabelIssuesPanel(self.state)
        self.label_issues.issuesShown.connect(
            lambda report: self._share_the_height(reviewing=bool(report.issues))
        )
        splitter.addWidget(self.label_issues)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 3)
        self.report_splitter = splitter
        outer.addWidget(splitter, 1)
        return page

    def _share_the_height(self, reviewing: bool = False) -> None:
        """Give the class table the room its rows need (up to half the height), the skipped files what their
        list asks for (up to a fifth), and the label check the rest: the classes are what this step is for,
        and the label check's panel scrolls. `reviewing`: the label check listed photos to look at; the
        table and the skipped files give up more of their room (a third, an eighth) to that list."""
        splitter = self.report_splitter
        total = sum(splitter.sizes())
        if total <= 0 or not self.class_table.isVisible():
            return
        table_height = min(height_showing_every_row(self.class_table), total // (3 if reviewing else 2))
        skipped = 0
        if self.skipped_box.isVisible():
            skipped = min(self.skipped_box.sizeHint().height(), total // (8 if reviewing else 5))
        splitter.setSizes([table_height, skipped, max(0, total - table_height - skipped)])

    # ------------------------------------------------------------------------------------------ actions

    def open_folder(self, folder: str) -> None:
        """Scan `folder` in the background and show what it holds."""
        path = Path(folder).expanduser()
        if not path.is_dir():
            QMessageBox.warning(
                self,
                "Not a folder",
                f"{path} is not a folder (or no longer exists). Choose the folder that holds one "
                "sub-folder per class.",
            )
            return
        self._start_scan(str(path.resolve()))

    def rescan(self) -> None:
        """Read the current folder again (after the user changed it)."""
        if self.state.data_dir:
            self.open_folder(self.state.data_dir)

    def cancel_scan(self) -> None:
        if self._scan is not None:
            self.scan_stage.setText("Cancelling…")
            self._scan.cancel()

    def is_scanning(self) -> bool:
        return self._scan is not None

    def shutdown(self) -> None:
        """Cancel the scan, the sample data and the thumbnails, and wait for their threads."""
        workers = [w for w in (self._scan, self._sample, *self._old_workers) if w is not None]
        for w in workers:
            w.cancel()
        for w in workers:
            w.wait()
        self.thumbnails.shutdown()
        self.label_issues.shutdown()

    def _on_open_clicked(self) -> None:
        start = self.state.data_dir or (settings.load().recent_folders or [""])[0]
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of labelled photos", start)
        if folder:
            self.open_folder(folder)

    def _on_sample_clicked(self) -> None:
        if self._sample is not None:
            return
        target = settings.sample_data_dir()

        def make(on_progress, cancel):
            from bit_engine import demo

            # Reuse a complete earlier copy: same seed, same pictures.
            if target.is_dir() and all(
                (target / c).is_dir() and any((target / c).iterdir()) for c in demo.DEMO_CLASSES
            ):
                return str(target)
            return str(demo.make_demo_dataset(target))

        self.sample_button.setEnabled(False)
        self._show_welcome_status("Making the sample photos…")
        self._sample = Worker(make, self, name="sample data")
        self._sample.succeeded.connect(self._on_sample_ready)
        self._sample.failed.connect(self._on_sample_failed)
        self._sample.done.connect(self._on_sample_done)
        self._sample.start()

    def _on_sample_ready(self, folder: str) -> None:
        self.welcome_status.setVisible(False)
        self.open_folder(folder)

    def _on_sample_failed(self, exc: BaseException) -> None:
        self._show_welcome_status(f"The sample photos could not be made: {user_message(exc)}")

    def _on_sample_done(self) -> None:
        self._sample = None
        self.sample_button.setEnabled(True)

    def _show_welcome_status(self, text: str) -> None:
        self.welcome_status.setText(text)
        self.welcome_status.setVisible(True)

    # -------------------------------------------------------------------------------------------- scan

    def _start_scan(self, folder: str) -> None:
        if self._scan is not None:
            # A new folder replaces the scan in progress; its signals no longer matter.
            old = self._scan
            old.cancel()
            old.blockSignals(True)
            self._old_workers.append(old)
            self._scan = None
        self.thumbnails.clear()
        settings.add_recent_folder(folder)
        self._refresh_recent()
        self.state.set_folder(folder)
        self.scan_title.setText(f"Reading {Path(folder).name or folder}…")
        self.scan_folder.setText(folder)
        self.scan_bar.setRange(0, 0)  # busy until the number of files is known
        self.scan_stage.setText("Counting files…")
        self.scan_cancel.setEnabled(True)
        self.views.setCurrentIndex(1)

        def scan(on_progress, cancel):
            from bit_engine import data, holdout

            report = data.scan(folder, on_progress=on_progress, cancel=cancel)
            # The planned split, as training will make it (same fraction and seed as the defaults).
            split = holdout.split(report) if report.ok and not report.split_dirs else None
            return report, split

        worker = Worker(scan, self, name="scan")
        worker.progress.connect(self._on_scan_progress)
        worker.succeeded.connect(self._on_scan_succeeded)
        worker.failed.connect(self._on_scan_failed)
        worker.cancelled.connect(self._on_scan_cancelled)
        worker.done.connect(self._on_scan_done)
        self._scan = worker
        worker.start()

    def _on_scan_progress(self, p) -> None:
        stage = _SCAN_STAGES.get(getattr(p, "stage", ""), "Reading")
        done, total = getattr(p, "files_done", 0), getattr(p, "files_total", None)
        if total:
            self.scan_bar.setRange(0, total)
            self.scan_bar.setValue(done)
            self.scan_stage.setText(f"{stage}: {done:,} of {total:,} files")
        else:
            self.scan_bar.setRange(0, 0)
            self.scan_stage.setText(f"{stage}: {done:,} found so far")

    def _on_scan_succeeded(self, result) -> None:
        report, split = result
        self._show_report(report, split)
        self.state.set_report(report)

    def _on_scan_failed(self, exc: BaseException) -> None:
        self.views.setCurrentIndex(0)
        self._show_welcome_status(user_message(exc))
        QMessageBox.warning(self, "The folder could not be read", user_message(exc))

    def _on_scan_cancelled(self) -> None:
        self.views.setCurrentIndex(0)
        self._show_welcome_status(f"The scan of {self.state.data_dir} was cancelled. Nothing was changed.")

    def _on_scan_done(self) -> None:
        worker = self.sender()
        if worker is self._scan:
            self._scan = None
        if isinstance(worker, Worker):
            worker.deleteLater()
        self._old_workers = [w for w in self._old_workers if w.is_running()]

    # ------------------------------------------------------------------------------------------ report

    def _show_report(self, report, split) -> None:
        root = Path(report.root)
        self.folder_title.setText(root.name or str(root))
        self.folder_path.setText(str(root))
        self.continue_button.setEnabled(report.ok)
        self.continue_button.setToolTip("" if report.ok else "Fix what is listed above, then Rescan.")

        n_classes = len(report.classes)
        parts = [
            f"<b>{report.num_images:,}</b> photos in <b>{n_classes}</b> {'class' if n_classes == 1 else 'classes'}"
        ]
        if report.median_size:
            w, h = report.median_size
            parts.append(f"typical size {w}×{h} pixels")
        parts.append(f"{report.files_seen:,} files read in {report.seconds:.1f} s")
        if not report.notable_skipped:
            parts.append("no file skipped")
        summary = " · ".join(parts)
        if report.layout_note:
            summary += f"<br>{html.escape(report.layout_note, quote=False)}"
        self.summary.setText(summary)

        self.split_label.setText(self._split_text(report, split))
        self.split_label.setVisible(report.ok)

        if report.errors:
            items = "".join(f"<li>{html.escape(e, quote=False)}</li>" for e in report.errors)
            self.errors_label.setText(
                f"<b>Training cannot start with this folder yet.</b><ul>{items}</ul>"
                "Fix the folder, then press <b>Rescan</b>. (BiT Studio never changes it for you.)"
            )
        self.errors_label.setVisible(bool(report.errors))
        if report.warnings:
            items = "".join(f"<li>{html.escape(w, quote=False)}</li>" for w in report.warnings)
            self.warnings_label.setText(f"<b>Worth knowing before you train</b><ul>{items}</ul>")
        self.warnings_label.setVisible(bool(report.warnings))

        self.class_model.set_rows(self._class_rows(report, split), val_planned=split is not None)
        self.class_table.setVisible(bool(report.classes))
        self._show_skipped(report)
        self.label_issues.set_report(report)
        self.views.setCurrentIndex(2)
        # Once the report view is laid out at its new contents.
        QTimer.singleShot(0, self._share_the_height)

    @classmethod
    def _split_text(cls, report, split) -> str:
        text = cls._split_sentence(report, split)
        unmeasured = (
            split.classes_without_validation if split is not None else report.classes_without_validation
        )
        if text and unmeasured:
            names = ", ".join(html.escape(n, quote=False) for n in unmeasured[:8])
            more = f" and {len(unmeasured) - 8} more" if len(unmeasured) > 8 else ""
            text += (
                f"<br>No validation photo for <b>{names}</b>{more}: too few photos, so how well the model "
                "knows them cannot be measured. Add photos to them if you can."
            )
        return text

    @staticmethod
    def _split_sentence(report, split) -> str:
        if report.split_dirs:
            train_dir, *val_dirs = report.split_dirs
            vals = " and ".join(f"<b>{html.escape(v, quote=False)}/</b>" for v in val_dirs)
            return (
                f"Uses the folder's own split: <b>{html.escape(train_dir, quote=False)}/</b> ({len(report.train):,} photos) "
                f"to train, {vals} ({len(report.val):,} photos) to check the model."
            )
        if split is None:
            return ""
        return (
            f"The folder has no validation set of its own, so BiT Studio sets <b>20%</b> of each class aside to "
            f"check the model: <b>{len(split.train):,}</b> photos to train, <b>{len(split.val):,}</b> to check. "
            "The same photos every time; nothing is moved."
        )

    @staticmethod
    def _class_rows(report, split) -> list[ClassRow]:
        n = len(report.classes)
        train_counts = [0] * n
        val_counts = [0] * n
        source = split if split is not None else report
        for s in source.train:
            train_counts[s.label] += 1
        for s in source.val:
            val_counts[s.label] += 1
        by_class: list[list] = [[] for _ in range(n)]
        for s in report.train:
            by_class[s.label].append(s)
        rows = []
        for i, name in enumerate(report.classes):
            samples = by_class[i]
            # Spread over the class (sorted by path), not its first few files, which are often a burst.
            step = max(1, len(samples) // EXAMPLES_PER_CLASS)
            picked = samples[::step][:EXAMPLES_PER_CLASS]
            rows.append(
                ClassRow(name, train_counts[i], val_counts[i], tuple(str(report.path_of(s)) for s in picked))
            )
        return rows

    def _show_skipped(self, report) -> None:
        self.skipped_list.clear()
        skipped = report.skipped  # the ones worth reading first, hidden system files last
        notable = len(report.notable_skipped)
        hidden = len(skipped) - notable
        title = f"Skipped files ({notable:,})"
        if hidden:
            title += f", and {hidden:,} hidden system {'file' if hidden == 1 else 'files'} (.DS_Store, Thumbs.db, …)"
        self.skipped_box.setTitle(title)
        self.skipped_box.setVisible(bool(skipped))
        for s in skipped[:MAX_SKIPPED_SHOWN]:
            where = "the folder itself" if s.path == "." else s.path
            item = QListWidgetItem(f"{where}: {s.message}")
            item.setToolTip(s.message)
            self.skipped_list.addItem(item)
        if len(skipped) > MAX_SKIPPED_SHOWN:
            self.skipped_list.addItem(f"… and {len(skipped) - MAX_SKIPPED_SHOWN:,} more")

    def _refresh_recent(self) -> None:
        recent = [f for f in settings.load().recent_folders if Path(f).is_dir()]
        sample = str(settings.sample_data_dir())
        self.recent_list.clear()
        for folder in recent:
            label = "Sample data" if folder == sample else Path(folder).name or folder
            item = QListWidgetItem(f"{label}    {folder}")
            item.setData(Qt.ItemDataRole.UserRole, folder)
            item.setToolTip(folder)
            self.recent_list.addItem(item)
        self.recent_title.setVisible(bool(recent))
        self.recent_list.setVisible(bool(recent))
