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
    """Stands in for QMessageBox and QFileDialog while the self-test runs.

    Nobody is there to answer a modal dialog offscreen; one would hang the test. A message box the window
    shows is recorded instead (errors and warnings fail the stage with their text, as a user would have read
    them); a question gets its default button; a file dialog means a step asked the user for a path it should
    have been given, which fails the stage.
    """

    def __init__(self):
        self.problems: list[str] = []
        self._saved: list[tuple[object, str, object]] = []

    def install(self) -> None:
        from PySide6.QtWidgets import QFileDialog, QMessageBox

        def record(kind: str, result):
            def show(_parent, title, text, *args, **kwargs):
                if kind in ("critical", "warning"):
                    self.problems.append(f"{title}: {text}")
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

        def no_file_dialog(*_args, **_kwargs):
            raise StageFailed("a step opened a file dialog instead of using the path it was given")

        patches = {
            (QMessageBox, "critical"): record("critical", ok),
            (QMessageBox, "warning"): record("warning", ok),
            (QMessageBox, "information"): record("information", ok),
            (QMessageBox, "question"): record("question", default_button),
            (QFileDialog, "getExistingDirectory"): no_file_dialog,
            (QFileDialog, "getOpenFileName"): no_file_dialog,
            (QFileDialog, "getOpenFileNames"): no_file_dialog,
            (QFileDialog, "getSaveFileName"): no_file_dialog,
        }
        for (owner, name), replacement in patches.items():
            self._saved.append((owner, name, owner.__dict__.get(name, getattr(owner, name))))
            setattr(owner, name, staticmethod(replacement))

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def check(self) -> None:
        if self.problems:
            problem, self.problems = self.problems[0], []
            raise StageFailed(f"the window showed an error: {problem}")


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    """Run the event loop until `condition()` is true (returns its value), or fail after `timeout_s`."""
    from PySide6.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout_s
    while True:
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


class SelfTest:
    """The stages, in order, sharing the window and what each stage produced."""

    STAGES = ("window", "data", "plan", "train", "export", "predict")

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.dialogs = _Dialogs()
        self.window = None
        self.photos: Path | None = None
        self.onnx_path: Path | None = None
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
        self.photos = make_photos(self.workdir / "photos")
        state = self.window.state
        self.window.open_folder(str(self.photos))
        if not hasattr(self.window.pages["data"], "open_folder"):  # DEV: until the Data page lands
            from bit_engine.data import scan

            state.set_report(scan(str(self.photos)))
        report = wait_until(
            lambda: state.report, TIMEOUT_S["data"], "the Data step's scan of the photo folder"
        )
        if not report.ok:
            raise StageFailed("the scan found the generated folder unusable: " + " ".join(report.errors))
        found = sorted(report.classes)
        if found != sorted(CLASSES):
            raise StageFailed(f"the scan found the classes {found}, expected {sorted(CLASSES)}")

    def plan_stage(self) -> None:
        from bit_engine.config import TrainConfig

        self.window.state.set_config(
            TrainConfig(data_dir=str(self.photos), model=MODEL, strategy="head", steps=STEPS, device="cpu")
        )

    def train_stage(self) -> None:
        from bit_engine.train import fit

        result = fit(self.window.state.config)
        self.window.state.set_run(str(result.run_dir))

    def export_stage(self) -> None:
        from bit_engine.export import export_run

        exported = export_run(self.window.state.run_dir)
        self.window.state.set_exported(str(exported.export.path))
        self.onnx_path = Path(self.window.state.onnx_path)

    def predict_stage(self) -> None:
        from bit_engine.inference import Predictor

        photo = next(iter(sorted((self.photos / CLASSES[0]).iterdir())))
        engine = Predictor(self.onnx_path).predict(photo, top_k=1)[0]
        self.detail = f"{photo.name}: {engine.label} {engine.probability:.2f}, same as the engine"

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
