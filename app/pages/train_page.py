"""The Train step: start, follow, cancel and resume a training run that never runs in the window's process.

The run is a `TrainingSession` (app/training.py): the engine's training process owned from a worker thread.
A QTimer reads what happened about four times a second (the newest report, the new chart points, the
messages) and updates the widgets; nothing here runs per training step. When the run ends the page says how,
in words: done (with its accuracy), cancelled (resumable), or failed (what happened, what to do, and the
buttons that help). A finished run becomes the window's current run, which opens the Evaluate step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app import errors_view
from app.errors_view import ErrorPanel
from app.state import AppState
from app.training import PHASE_WORDS, TrainingSession
from app.widgets.charts import TrainingCharts
from app.widgets.log_view import RunLogView
from app.widgets.page_style import PAGE_MARGINS, page_title
from app.workers import Worker

if TYPE_CHECKING:
    from bit_engine.config import TrainConfig
    from bit_engine.progress import Progress

#: How often the page reads the run's progress (milliseconds): a human rate, never once per step.
REFRESH_MS = 250

#: How long closing the window waits for a run to stop before the engine's forced stop has happened.
CLOSE_WAIT_MS = 30_000

_STRATEGY_WORDS = {
    "full": "fine-tuning the whole network",
    "head": "training a new head on frozen features",
    "scratch": "training from scratch",
}


def progress_text(p: Progress) -> tuple[str, int, int]:
    """The progress bar's words, value and maximum for a report (maximum 0: a busy indicator)."""
    from bit_engine.units import format_bytes, format_duration

    words = PHASE_WORDS.get(p.phase, p.phase.capitalize())
    if p.phase in ("training", "evaluating", "done") and p.total_steps:
        parts = [f"{words} — step {p.step} / {p.total_steps}"]
        if p.phase == "training":
            if p.message:  # inside a long step: how far it is
                parts.append(p.message)
            if p.images_per_s:
                parts.append(f"{p.images_per_s:.0f} images/s")
            if p.eta is not None and p.step < p.total_steps:
                parts.append(f"{format_duration(p.eta)} left")
        if p.phase == "done" and p.val_top1 is not None:
            parts.append(f"validation accuracy {p.val_top1:.1%}")
        return " · ".join(parts), p.step, p.total_steps
    if p.total:
        if p.phase == "downloading":
            amount = f"{format_bytes(p.done)} of {format_bytes(p.total)}"
        else:
            unit = (
                "images" if p.phase in ("caching", "features") else "files" if p.phase == "scanning" else ""
            )
            amount = f"{p.done} / {p.total} {unit}".rstrip()
        return f"{words} — {amount}", p.done, p.total
    return f"{words}…", 0, 0


def _device_words(devices: str | None) -> str:
    """The device the run was planned for, in words: "the CPU", "GPU 1", "all GPUs"."""
    if devices and devices.startswith("cuda:"):
        return f"GPU {devices.removeprefix('cuda:')}"
    words = {None: "the best device available", "all": "all GPUs", "cpu": "the CPU", "cuda": "the GPU"}
    return words.get(devices or None, devices)


class TrainPage(QWidget):
    """Train the plan of the Plan step, watch it, cancel it, resume it.

    Args:
        state: the window's shared state (the plan comes from `state.config`; a finished run goes to
            `state.set_run`).
        parent: the owning widget.
        isolate: train in a child process (the app always does; the responsiveness benchmark compares).
        setup: a picklable callable run first in each training process (tests register their tiny model).

    Signals:
        stepRequested(str): move the window to a step ("plan" to change the plan, "evaluate" after a run).
        progressShown(object): the newest progress report, each time the page shows one.
        runEnded(str): a run ended, however it ended (its folder); the run list refreshes on it.
    """

    stepRequested = Signal(str)
    progressShown = Signal(object)
    runEnded = Signal(str)

    def __init__(self, state: AppState, parent: QWidget | None = None, *, isolate: bool = True, setup=None):
        super().__init__(parent)
        self.state = state
        self.isolate = isolate
        self.setup = setup
        self.session: TrainingSession | None = None
        self.run_dir: str | None = None  # the run shown, which Resume continues
        self._resumable = False
        self._helpers: list[Worker] = []  # weight downloads and imports started from an error message

        title = page_title("Train")
        self.plan_label = QLabel()
        self.plan_label.setObjectName("planSummaryLabel")
        self.plan_label.setAccessibleName("What will be trained")
        self.plan_label.setWordWrap(True)
        self.plan_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.start_button = self._button("startButton", "Start training", "Start training with this plan")
        self.cancel_button = self._button(
            "cancelButton", "Cancel", "Cancel training (the run can be resumed)"
        )
        self.resume_button = self._button("resumeButton", "Resume", "Resume the run from its last checkpoint")
        self.evaluate_button = self._button("trainEvaluateButton", "Evaluate →", "Evaluate the trained model")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button.clicked.connect(lambda: self.resume())
        self.evaluate_button.clicked.connect(lambda: self.stepRequested.emit("evaluate"))

        # The words go in a label above the bar: drawn inside it, they cross the filled part's edge and half of
        # them turn unreadable (white on the empty part) in several styles. The bar keeps them as its text for
        # screen readers.
        self.progress_label = QLabel()
        self.progress_label.setObjectName("progressLabel")
        self.progress_label.setAccessibleName("Training progress in words")
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("progressBar")
        self.progress_bar.setAccessibleName("Training progress")
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumHeight(12)
        self._set_bar("Not started", 0, 1)

        self.error_panel = ErrorPanel()
        self.error_panel.actionRequested.connect(self._on_error_action)
        self.charts = TrainingCharts()
        self.log_view = RunLogView()

        buttons = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.resume_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.evaluate_button)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.charts)
        splitter.addWidget(self.log_view)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(*PAGE_MARGINS)
        layout.addWidget(title)
        layout.addWidget(self.plan_label)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.error_panel)
        layout.addWidget(splitter, 1)

        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self._on_refresh)
        state.planChanged.connect(self._on_plan_changed)
        self._on_plan_changed(state.config)

    def _button(self, name: str, text: str, accessible: str) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName(name)
        button.setAccessibleName(accessible)
        return button

    # What the page shows ------------------------------------------------------------------------------------
    def is_training(self) -> bool:
        return self.session is not None

    def _update_buttons(self) -> None:
        busy = self.session is not None or any(w.is_running() for w in self._helpers)
        self.start_button.setEnabled(not busy and self.state.config is not None)
        self.cancel_button.setEnabled(self.session is not None)
        self.resume_button.setEnabled(not busy and self._resumable and self.run_dir is not None)
        done = self.run_dir is not None and (Path(self.run_dir) / "model.pt").is_file()
        self.evaluate_button.setVisible(done and self.session is None)
        if self.session is None:
            self.start_button.setToolTip(
                "" if self.state.config is not None else "Choose a model and settings in the Plan step first."
            )

    def _set_bar(self, text: str, value: int, maximum: int) -> None:
        self.progress_bar.setRange(0, max(0, maximum))
        if maximum:
            self.progress_bar.setValue(min(value, maximum))
        self.progress_bar.setFormat(text.replace("%", "%%"))
        self.progress_bar.setAccessibleDescription(text)
        self.progress_label.setText(text)

    def bar_text(self) -> str:
        """The progress in words, as the user reads them above the bar."""
        return self.progress_label.text()

    def _on_plan_changed(self, config: TrainConfig | None) -> None:
        if config is None:
            self.plan_label.setText(
                "No plan yet: open a folder in the Data step and choose settings in Plan."
            )
        else:
            self._describe(config, self._devices())
        self._update_buttons()

    def _describe(self, config: TrainConfig, devices: str | None) -> None:
        steps = f"{config.steps} steps" if config.steps else "the HyperRule's number of steps"
        device = _device_words(devices)
        self.plan_label.setText(
            f"<b>{Path(config.data_dir).name}</b> · {config.model} · "
            f"{_STRATEGY_WORDS.get(config.strategy, config.strategy)} · {steps} · on {device}"
        )

    # Starting and stopping ---------------------------------------------------------------------------------
    def start(self, config: TrainConfig | None = None) -> None:
        """Start a new run: of `config` when given (a from-scratch baseline asked for in the Runs step), else
        of the current plan."""
        if self.session is not None:
            return
        devices = self._devices()
        if config is not None:
            # Not the plan's run: the label says what trains; the Plan step's device set still applies.
            devices = self.state.devices or config.device
            self._describe(config, devices)
        config = config or self.state.config
        if config is None:
            return
        self.charts.clear()
        self.log_view.clear()
        scratch = " from scratch" if config.strategy == "scratch" else ""
        self.log_view.add_message(f"New run: {config.model}{scratch} on {config.data_dir}.")
        self._begin(TrainingSession(config, devices=devices, isolate=self.isolate, setup=self.setup))

    def resume(self, run_dir: str | None = None) -> None:
        """Continue `run_dir` (default: the run shown) from its last checkpoint."""
        run_dir = run_dir or self.run_dir
        if run_dir is None:
            return
        if self.session is not None:
            self.log_view.add_message(f"A run is training: cancel it before resuming {Path(run_dir).name}.")
            return
        if run_dir != self.run_dir:
            self.charts.clear()
            self.log_view.clear()
        self.run_dir = run_dir
        self.log_view.add_message(f"Resuming {Path(run_dir).name} from its last checkpoint.")
        # The devices of the current plan when there is one (a run resumes on any device set), else the run's own.
        self._begin(
            TrainingSession(run_dir=run_dir, devices=self._devices(), isolate=self.isolate, setup=self.setup)
        )

    def _devices(self) -> str | None:
        """The device set the Plan step chose: several (`all`) or the config's one device; None: the run's."""
        if self.state.devices:
            return self.state.devices
        return self.state.config.device if self.state.config is not None else None

    def _begin(self, session: TrainingSession) -> None:
        self.error_panel.clear()
        self.session = session
        session.setParent(self)
        self._resumable = False
        session.runFolderKnown.connect(self._on_run_folder)
        session.finished.connect(self._on_finished)
        session.cancelled.connect(self._on_cancelled)
        session.failed.connect(self._on_failed)
        session.done.connect(self._on_done)
        self._set_bar("Starting the training process…", 0, 0)
        self.cancel_button.setText("Cancel")
        session.start()
        self._timer.start()
        self._update_buttons()

    def cancel(self) -> None:
        """Ask the run to stop at its next step; it keeps a checkpoint and can be resumed."""
        if self.session is None:
            return
        self.session.cancel()
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancelling…")
        self.log_view.add_message("Cancelling: the run stops after the current step and keeps a checkpoint.")

    def shutdown(self) -> None:
        """Stop the run and every helper, and wait for them (the window is closing); idempotent."""
        for worker in self._helpers:
            worker.cancel()
        if self.session is not None:
            from app.training import CLOSE_GRACE_S

            self.session.cancel(CLOSE_GRACE_S)
            self.session.wait(CLOSE_WAIT_MS)
        for worker in self._helpers:
            worker.wait()
        self._timer.stop()

    # The ~4 Hz refresh --------------------------------------------------------------------------------------
    def _on_refresh(self) -> None:
        if self.session is None:
            return
        digest = self.session.digest.take()
        if digest.history is not None:  # a resumed run's curves so far, read on the training thread
            self.charts.load_metrics(digest.history)
        for step, loss, lr in digest.train_points:
            self.charts.add_training(step, loss, lr)
        for step, loss, top1 in digest.val_points:
            self.charts.add_validation(step, loss, top1)
        for message in digest.messages:
            self.log_view.add_message(message)
        p = digest.latest
        if p is not None:
            if p.total_steps:
                self.charts.set_total_steps(p.total_steps)
            self._set_bar(*progress_text(p))
            self.progressShown.emit(p)
        self.charts.flush()

    def _on_run_folder(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.log_view.add_message(f"Run folder: {run_dir}")

    # How the run ended -------------------------------------------------------------------------------------
    def _on_finished(self, result) -> None:
        self._on_refresh()
        self.run_dir = str(result.run_dir)
        accuracy = (
            f"validation accuracy {result.val_top1:.1%}" if result.val_top1 is not None else "no validation"
        )
        self._set_bar(f"Done — {result.step} steps · {accuracy}", result.step, max(1, result.total_steps))
        self.log_view.add_message(f"The run is complete: {accuracy}. Evaluate it to see what it gets wrong.")
        self._resumable = False
        self.state.set_run(self.run_dir)

    def _on_cancelled(self, exc) -> None:
        self._on_refresh()
        if exc.run_dir is not None:
            self.run_dir = str(exc.run_dir)
            self._resumable = True
            step, total = self._recorded_step(self.run_dir)
            text = f"Cancelled at step {step} of {total} — Resume continues from there"
            self._set_bar(text, step, max(1, total))
            self.log_view.add_message(f"Cancelled at step {step} of {total}. Resume continues the run.")
        else:
            self._set_bar("Cancelled before training began", 0, 1)
            self.log_view.add_message("Cancelled before the run began; nothing was kept.")

    def _on_failed(self, exc) -> None:
        from bit_engine.errors import BitStudioError

        self._on_refresh()
        run_dir = getattr(exc, "run_dir", None) or self.run_dir
        self.run_dir = str(run_dir) if run_dir else None
        self._resumable = self._is_resumable(self.run_dir)
        if isinstance(exc, BitStudioError):  # anything else the Worker has logged with its traceback already
            errors_view.record(exc, "Training failed")
        advice = errors_view.advise(exc, resumable=self._resumable)
        self.error_panel.show_advice(advice)
        self._set_bar(f"Failed — {advice.title}", 0, 1)
        self.log_view.add_message(f"Failed: {advice.title}.")

    def _on_done(self) -> None:
        self._timer.stop()
        session, self.session = self.session, None
        if session is not None:
            session.deleteLater()
        self.cancel_button.setText("Cancel")
        self._update_buttons()
        if self.run_dir:
            self.runEnded.emit(self.run_dir)

    @staticmethod
    def _recorded_step(run_dir: str) -> tuple[int, int]:
        from bit_engine import runs

        try:
            status = runs.read_status(run_dir)
        except Exception:
            return 0, 0
        return status.step, status.total_steps

    @staticmethod
    def _is_resumable(run_dir: str | None) -> bool:
        return run_dir is not None and (Path(run_dir) / "config.json").is_file()

    # Error actions -----------------------------------------------------------------------------------------
    def _on_error_action(self, action: str) -> None:
        if action == errors_view.RESUME:
            self.resume()
        elif action == errors_view.CHANGE_PLAN:
            self.stepRequested.emit("plan")
        elif action == errors_view.DOWNLOAD_WEIGHTS:
            self._download_weights()
        elif action == errors_view.IMPORT_WEIGHTS:
            self._import_weights()

    def _weights_model(self) -> str | None:
        advice = self.error_panel.advice
        if advice is not None and advice.model:
            return advice.model
        config = self.state.config
        return config.model if config is not None else None

    def _download_weights(self) -> None:
        model = self._weights_model()
        if model is None:
            return

        def download(on_progress, cancel):
            from bit_engine import weights_download
            from bit_engine.progress import Progress

            def relay(p) -> None:
                on_progress(Progress("downloading", p.done, p.total or 0, message=model))

            return weights_download.download(model, on_progress=relay, cancel=cancel)

        self.log_view.add_message(f"Downloading the weights of {model}…")
        self._run_helper(download, f"{model}'s weights are downloaded.")

    def _import_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import pre-trained weights", "", "BiT weights (*.npz);;All files (*)"
        )
        if not path:
            return
        model = self._weights_model()

        def import_file(on_progress, cancel):
            from bit_engine import weights

            return weights.import_npz(path, model)

        self.log_view.add_message(f"Importing {path}…")
        self._run_helper(import_file, f"Imported {Path(path).name}.")

    def _run_helper(self, fn, success: str) -> None:
        worker = Worker(fn, self, name="weights")
        self._helpers.append(worker)
        worker.progress.connect(lambda p: p is not None and self._set_bar(*progress_text(p)))

        def succeeded(_value) -> None:
            self.error_panel.clear()
            then = "Resume to continue the run." if self._resumable else "Start the run again."
            self._set_bar(success, 1, 1)
            self.log_view.add_message(f"{success} {then}")

        def failed(exc) -> None:
            errors_view.record(exc, "Weights")
            self.error_panel.show_advice(errors_view.advise(exc, resumable=self._resumable))
            self._set_bar("The weights are still missing", 0, 1)

        def finished() -> None:
            self._helpers.remove(worker)
            worker.deleteLater()
            self._update_buttons()

        worker.succeeded.connect(succeeded)
        worker.failed.connect(failed)
        worker.done.connect(finished)
        worker.start()
        self._set_bar("Working on the weights…", 0, 0)
        self._update_buttons()
