"""`bit-studio --self-test`: does this installation work, end to end, the way a user would use it?

Headless (Qt's offscreen platform) and inside a temporary folder (settings, log, weights cache and runs are
all redirected there, so the user's own files are neither read nor touched), it opens the main window, opens
a small generated photo folder in the Data step, plans a short head-only run of the offline model
(EfficientNet-Lite0, whose weights ship in a Python package), trains it from the Train step (a child
process, as the window always trains), exports ONNX from the Evaluate step, predicts a photo in the Predict
step and checks the window shows what the engine's own `Predictor` says about the same photo and file.

It prints one line and exits 0:

    BiT Studio self-test passed in 38.1 s: window 1.9 s, data 0.4 s, plan 0.2 s, train 21.0 s, ...

or names the stage that failed and why, and exits 1. Packagers run it on a fresh build (packaging/build.py
does), users run it to know an installation can train and predict.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from bit_engine import locations

#: Small enough for a laptop CPU in well under a minute, large enough for a real split (train and val).
CLASSES = ("circles", "squares")
IMAGES_PER_CLASS = 8
IMAGE_SIZE = 48
MODEL = "EfficientNet-Lite0"
STEPS = 3

#: The window and the engine run the same file with the same onnxruntime; only thread scheduling differs.
PROBABILITY_TOLERANCE = 1e-5

#: How long each stage may take before the self-test calls it stuck (a slow laptop, a first start).
TIMEOUT_S = {"window": 60, "data": 60, "plan": 60, "train": 600, "export": 300, "predict": 120}

#: Every folder the app and the engine write to, moved into the self-test's temporary folder.
FOLDER_ENVS = {
    locations.CACHE_ENV: "cache",
    locations.DATA_ENV: "data",
    "BIT_STUDIO_CONFIG_DIR": "config",
    "BIT_STUDIO_LOG_DIR": "log",
}


class StageFailed(Exception):
    """A stage did not do what a user would see it do; the message says what happened."""


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by the training child) and restore them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _Dialogs:
    """Stands in for QMessageBox and QFileDialog, and catches exceptions escaping slots, while the test runs.

    Nobody is there to answer a modal dialog offscreen; one would hang the test. A message box the window
    shows is recorded instead (errors and warnings fail the stage with their text, as a user would have read
    them) and a question gets its default button. A save dialog is answered with the name it suggests, as
    pressing Enter would. Any other file dialog means a step asked for a path it should have been given: it is
    cancelled and fails the stage. An exception escaping a Qt slot (a bug) fails the stage too.
    """

    def __init__(self):
        self.problems: list[str] = []
        self._saved: list[tuple[object, str, object]] = []
        self._excepthook = None

    def install(self) -> None:
        from PySide6.QtWidgets import QFileDialog, QMessageBox

        def record(kind: str, result):
            def show(_parent, title, text, *args, **kwargs):
                if kind in ("critical", "warning"):
                    self.problems.append(f"the window showed an error: {title}: {text}")
                return result(args, kwargs)

            return show

        def default_button(args, kwargs):
            # question(parent, title, text, buttons, defaultButton): answer as pressing Enter would.
            default = kwargs.get("defaultButton", args[1] if len(args) > 1 else None)
            if default not in (None, QMessageBox.StandardButton.NoButton):
                return default
            return QMessageBox.StandardButton.Yes

        def ok(_args, _kwargs):
            return QMessageBox.StandardButton.Ok

        def accept_suggested_name(_parent=None, _caption="", suggested="", *_args, **_kwargs):
            return suggested, ""

        def unexpected(name: str, cancelled):
            def dialog(*_args, **_kwargs):
                self.problems.append(
                    f"a step opened a file dialog ({name}) instead of using the path it was given"
                )
                return cancelled

            return dialog

        patches = {
            (QMessageBox, "critical"): record("critical", ok),
            (QMessageBox, "warning"): record("warning", ok),
            (QMessageBox, "information"): record("information", ok),
            (QMessageBox, "question"): record("question", default_button),
            (QFileDialog, "getSaveFileName"): accept_suggested_name,
            (QFileDialog, "getExistingDirectory"): unexpected("getExistingDirectory", ""),
            (QFileDialog, "getOpenFileName"): unexpected("getOpenFileName", ("", "")),
            (QFileDialog, "getOpenFileNames"): unexpected("getOpenFileNames", ([], "")),
        }
        for (owner, name), replacement in patches.items():
            self._saved.append((owner, name, owner.__dict__[name]))
            setattr(owner, name, staticmethod(replacement))

        def excepthook(exc_type, exc, tb):
            self.problems.append(f"an error escaped the window's code: {_describe(exc)}")

        self._excepthook, sys.excepthook = sys.excepthook, excepthook

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()
        if self._excepthook is not None:
            sys.excepthook, self._excepthook = self._excepthook, None

    def check(self) -> None:
        """Fail the stage if the window showed an error, asked for a file, or raised in a slot."""
        if self.problems:
            problem, self.problems = self.problems[0], []
            raise StageFailed(problem)


def wait_until(
    condition: Callable[[], object], timeout_s: float, what: str, check: Callable[[], None] | None = None
) -> object:
    """Run the event loop until `condition()` is true (returns its value), or fail after `timeout_s`.

    `check` runs on every turn and raises to end the wait early (an error the window showed, say).
    """
    from PySide6.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout_s
    while True:
        if check is not None:
            check()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StageFailed(f"{what} did not happen within {timeout_s:.0f} s")
        loop = QEventLoop()
        QTimer.singleShot(50, loop.quit)
        loop.exec()


def make_photos(root: Path) -> Path:
    """The generated photo folder: a few images per class, drawn like the demo's."""
    import random

    from bit_engine.demo import draw_sample

    rng = random.Random(0)
    for kind in CLASSES:
        folder = root / kind
        folder.mkdir(parents=True)
        for i in range(IMAGES_PER_CLASS):
            draw_sample(kind, rng, IMAGE_SIZE).save(folder / f"{kind}_{i}.jpg", quality=90)
    return root


def send_drop(target, mime, at=None):
    """Drag `mime` onto `target` and drop it there, as a user does from a file manager (synthesised events).

    Args:
        target: the widget the drag enters.
        mime: the QMimeData being dragged.
        at: where in `target` (a QPoint); its centre by default.

    Returns:
        (enter, drop): the two events, to read whether they were accepted; drop is None when the drag was
        refused (a refused drag is never dropped).
    """
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    at = target.rect().center() if at is None else at
    action = Qt.DropAction.CopyAction
    buttons, modifiers = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    # Qt's drag events take an integer point, the drop a floating one (PySide6 6.11 insists on both).
    enter = QDragEnterEvent(at, action, mime, buttons, modifiers)
    QApplication.sendEvent(target, enter)
    if not enter.isAccepted():
        return enter, None
    drop = QDropEvent(QPointF(at), action, mime, buttons, modifiers)
    QApplication.sendEvent(target, drop)
    return enter, drop


def file_mime(paths) -> object:
    """QMimeData holding `paths` as local-file URLs, as a file manager's drag does."""
    from PySide6.QtCore import QMimeData, QUrl

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def drop_files(target, paths: list[Path]) -> None:
    """Drag files onto `target` and drop them, as a user does from a file manager."""
    _, drop = send_drop(target, file_mime(paths))
    if drop is None:
        raise StageFailed(f"{target.objectName()} did not accept the dragged photo")


def _read_json(path: Path) -> dict:
    import json

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _plain(rich_text: str) -> str:
    """A label's rich text as the words a user reads."""
    from PySide6.QtGui import QTextDocumentFragment

    return QTextDocumentFragment.fromHtml(rich_text).toPlainText()


class SelfTest:
    """The stages, in order, sharing the window and what each stage produced."""

    STAGES = ("window", "data", "plan", "train", "export", "predict")

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.dialogs = _Dialogs()
        self.window = None
        self.photos: Path | None = None
        self.onnx_path: Path | None = None
        self.accuracy = ""
        self.detail = ""

    # --------------------------------------------------------------------------------------------- stages

    def window_stage(self) -> None:
        from app.main import ICON_DIR, create_application
        from app.main_window import MainWindow

        app = create_application()
        # A bundle or a checkout carries the icons: missing there, the build is broken. An installed wheel has
        # no resources/ folder and takes the icon from the desktop's theme, if installed (install-linux.sh).
        if app.windowIcon().isNull() and (getattr(sys, "frozen", False) or ICON_DIR.parent.is_dir()):
            raise StageFailed(f"the application icon did not load from {ICON_DIR}")
        self.window = MainWindow()
        self.window.show()
        wait_until(self.window.isVisible, TIMEOUT_S["window"], "showing the main window")

    def data_stage(self) -> None:
        from PySide6.QtWidgets import QTableView

        self._page("data")
        self.photos = make_photos(self.workdir / "photos")
        state = self.window.state
        self.window.open_folder(str(self.photos))  # what opening or dropping a folder does
        report = self.wait(lambda: state.report, "data", "the Data step's scan of the photo folder")
        if not report.ok:
            raise StageFailed("the scan found the generated folder unusable: " + " ".join(report.errors))
        found = sorted(report.classes)
        if found != sorted(CLASSES):
            raise StageFailed(f"the scan found the classes {found}, expected {sorted(CLASSES)}")
        table = self._find(QTableView, "classTable")
        self.wait(
            lambda: table.model().rowCount() == len(CLASSES), "data", "the class table listing the classes"
        )

    def plan_stage(self) -> None:
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QComboBox, QRadioButton, QTableView

        from app.widgets.hyperrule_table import ROWS

        state = self.window.state
        self._page("plan")
        models = self._find(QComboBox, "modelPicker")
        self.wait(lambda: models.findData(MODEL) >= 0, "plan", f"the Plan step offering {MODEL}")
        models.setCurrentIndex(models.findData(MODEL))
        devices = self._find(QComboBox, "devicePicker")
        if devices.findData("cpu") >= 0:  # the self-test checks the installation, not the GPU driver
            devices.setCurrentIndex(devices.findData("cpu"))
        self._find(QRadioButton, "strategy_head").click()
        # A short schedule, typed into the HyperRule table as a user overrides the rule's number of steps.
        table = self._find(QTableView, "hyperRuleTable")
        row = next(i for i, r in enumerate(ROWS) if r.field == "steps")
        model = table.model()
        if not model.setData(model.index(row, model.VALUE), STEPS, Qt.ItemDataRole.EditRole):
            raise StageFailed(f"the HyperRule table refused {STEPS} steps")

        def planned():
            c = state.config
            return c is not None and (c.model, c.strategy, c.steps) == (MODEL, "head", STEPS)

        self.wait(planned, "plan", f"a plan of {STEPS} head steps of {MODEL}")

    def train_stage(self) -> None:
        from PySide6.QtWidgets import QLabel, QPushButton

        state = self.window.state
        page = self._page("train")
        start = self._find(QPushButton, "startButton")
        self.wait(start.isEnabled, "train", "the Start button becoming available")
        start.click()  # the Train step runs the engine in a child process, as it always does
        self.wait(page.is_training, "train", "the training process starting")

        def trained():
            return state.run_dir and (Path(state.run_dir) / "model.pt").is_file()

        self.wait(lambda: trained() or not page.is_training(), "train", f"training {STEPS} steps")
        if not trained():
            title = self.window.findChild(QLabel, "errorTitle")
            text = self.window.findChild(QLabel, "errorText")
            said = " ".join(_plain(w.text()) for w in (title, text) if w is not None and w.text())
            raise StageFailed(f"training ended without a model: {said or page.bar_text()}")
        # The run folder is signed by the process that trained (status.json): it must not be the window's.
        trainer = _read_json(Path(state.run_dir) / "status.json").get("pid", 0)
        if trainer == os.getpid():
            raise StageFailed("the window trained in its own process, not in a child process")

    def export_stage(self) -> None:
        from PySide6.QtWidgets import QLabel, QPushButton

        state = self.window.state
        self._page("evaluate")
        accuracy = self._find(QLabel, "accuracyLabel")
        self.wait(lambda: "%" in accuracy.text(), "export", "the Evaluate step showing the run's accuracy")
        self.accuracy = accuracy.text()
        button = self._find(QPushButton, "exportButton")
        self.wait(button.isEnabled, "export", "the Export button becoming available")
        button.click()  # the save dialog is answered with the file name it suggests
        status = self._find(QLabel, "exportStatus")
        self.wait(
            lambda: state.onnx_path or "failed" in status.text(), "export", "the export of the trained model"
        )
        if not state.onnx_path:
            raise StageFailed(_plain(status.text()))
        self.onnx_path = Path(state.onnx_path)

    def predict_stage(self) -> None:
        from PySide6.QtWidgets import QListView, QWidget

        from bit_engine.inference import Predictor

        page = self._page("predict")
        # The step opens the model just exported by itself.
        self.wait(
            lambda: page.model_path == str(self.onnx_path), "predict", "the Predict step opening the model"
        )
        photo = sorted((self.photos / CLASSES[0]).iterdir())[0]
        drop_files(self._find(QWidget, "predictDropArea"), [photo])
        shown = self._find(QListView, "predictionList")
        self.wait(lambda: shown.model().rowCount() > 0, "predict", "the prediction of the dropped photo")
        row = shown.model().index(0, 0)
        text = row.data()
        window_answer = shown.model().rows()[0].predictions
        engine = Predictor(self.onnx_path).predict(photo, top_k=len(window_answer) or 1)
        same_labels = [label for label, _p in window_answer] == [p.label for p in engine]
        same_probabilities = all(
            abs(p_window - p.probability) <= PROBABILITY_TOLERANCE
            for (_label, p_window), p in zip(window_answer, engine, strict=False)
        )
        if not (window_answer and same_labels and same_probabilities):
            raise StageFailed(
                f"the Predict step says {text!r} about {photo.name}, the engine says "
                + ", ".join(f"{p.label} {p.probability:.4f}" for p in engine)
            )
        self.detail = f"{text} ({self.accuracy} validation accuracy), as the engine predicts"

    # ------------------------------------------------------------------------------------------- helpers

    def wait(self, condition: Callable[[], object], stage: str, what: str) -> object:
        return wait_until(condition, TIMEOUT_S[stage], what, self.dialogs.check)

    def _page(self, key: str):
        """Show step `key` and return its page; a step missing from this build fails the stage."""
        from app.main_window import NotBuiltPage

        page = self.window.pages[key]
        if isinstance(page, NotBuiltPage):
            raise StageFailed(f"the {key.capitalize()} step is not part of this build of BiT Studio")
        self.window.go_to(key)
        return page

    def _find(self, kind, name: str):
        """The window's widget with this objectName (fixed by the GUI's contract)."""
        widget = self.window.findChild(kind, name)
        if widget is None:
            raise StageFailed(f"the window has no {kind.__name__} named {name!r}")
        return widget

    # ------------------------------------------------------------------------------------------------ run

    def run(self, say: Callable[[str], None]) -> int:
        from PySide6.QtCore import QtMsgType, qInstallMessageHandler

        timings: list[str] = []
        started = time.perf_counter()
        self.dialogs.install()
        # Qt's warnings (the offscreen platform's "does not support ..." notes) would bury the one line;
        # its errors are kept, and the last one is quoted when a stage fails.
        qt_errors: list[str] = []

        def on_qt_message(kind, _context, text: str) -> None:
            if kind in (QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg):
                qt_errors.append(text)

        previous_handler = qInstallMessageHandler(on_qt_message)
        stage = self.STAGES[0]
        try:
            for stage in self.STAGES:
                t0 = time.perf_counter()
                getattr(self, f"{stage}_stage")()
                self.dialogs.check()
                timings.append(f"{stage} {time.perf_counter() - t0:.1f} s")
        except Exception as exc:  # any failure is reported as the stage's, with what it said
            reason = str(exc) if isinstance(exc, StageFailed) else _describe(exc)
            if qt_errors:
                reason += f" (Qt's last error: {qt_errors[-1]})"
            say(
                f"BiT Studio self-test FAILED at the {stage} stage after {time.perf_counter() - started:.1f} s: "
                f"{reason}"
            )
            return 1
        finally:
            self._close()
            self.dialogs.uninstall()
            qInstallMessageHandler(previous_handler)
        say(
            f"BiT Studio self-test passed in {time.perf_counter() - started:.1f} s: {', '.join(timings)} "
            f"({MODEL}, {len(CLASSES)} classes x {IMAGES_PER_CLASS} images, {STEPS} head steps; {self.detail})"
        )
        return 0

    def _close(self) -> None:
        if self.window is not None:
            self.window.close()  # closeEvent shuts every page down: workers and the training child stop
            self.window.deleteLater()
            self.window = None


def _describe(exc: BaseException) -> str:
    """A BitStudioError's message is for users; anything else is a bug: name it and where it happened."""
    from bit_engine.errors import BitStudioError

    if isinstance(exc, BitStudioError):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"


def _say(line: str) -> None:
    # A windowed Windows build has no standard output: the exit code is all its caller gets there.
    if sys.stdout is not None:
        print(line, flush=True)


def run(say: Callable[[str], None] = _say) -> int:
    """The whole self-test in a fresh temporary folder; returns the exit code (0 passed, 1 failed)."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before the QApplication exists: no display is needed
    with tempfile.TemporaryDirectory(prefix="bit-studio-self-test-") as tmp:
        workdir = Path(tmp)
        folders = {env: str(workdir / name) for env, name in FOLDER_ENVS.items()}
        with _environment(folders):
            return SelfTest(workdir).run(say)
