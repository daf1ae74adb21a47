"""The Qt side of a training run: the engine's `TrainingProcess` driven from a worker thread.

The engine owns the training processes (`bit_engine.launcher`): it starts them, turns their output into
`Progress` objects, stops them politely then by force, and says in words how a run ended. This module only
adapts that to Qt:

- `TrainingSession` calls `start_training(...)` and the blocking `TrainingProcess.run(...)` on a `Worker`
  thread, so neither the child's start (spawn, torch's import for the device check) nor the wait for it ever
  runs on the GUI thread;
- progress reports arrive on that thread, one per step; `ProgressDigest` boils them down there (the newest
  report, the chart points, the moments worth a log line) and the page reads the digest from a ~4 Hz timer,
  so the window never does work per training step.

The window's process never trains: `isolate=True` puts one device in a child process, several in the
engine's data-parallel processes. `isolate=False` exists for the responsiveness benchmark, which compares.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from app.workers import Worker

log = logging.getLogger("bit_studio")

if TYPE_CHECKING:  # the engine's launcher imports torch: only for type checkers here
    from bit_engine.config import TrainConfig
    from bit_engine.progress import Progress

#: After Cancel, how long the run gets to finish its micro-batch and write its checkpoint before the engine
#: stops the process by force (the run stays resumable from its last checkpoint either way).
CANCEL_GRACE_S = 60.0

#: The same when the window closes: the user is waiting for the window to go away.
CLOSE_GRACE_S = 10.0

# The phases of a run, as the progress bar and the log say them.
PHASE_WORDS = {
    "starting": "Starting the training process",
    "scanning": "Reading the folder",
    "downloading": "Downloading weights",
    "caching": "Reading images",
    "features": "Computing features",
    "training": "Training",
    "evaluating": "Evaluating",
    "done": "Done",
}


@dataclass
class Digest:
    """What happened since the page last looked.

    Attributes:
        latest: the newest progress report (None when none came).
        train_points: (step, loss, lr) per training step.
        val_points: (step, loss, top1) per evaluation.
        messages: sentences for the log (phases begun, evaluations).
        history: a resumed run's recorded metrics (`bit_engine.runs.MetricRecord`s), once, before its new
            points; None otherwise.
    """

    latest: Progress | None = None
    train_points: list[tuple[int, float | None, float | None]] = field(default_factory=list)
    val_points: list[tuple[int, float | None, float | None]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    history: list | None = None


class ProgressDigest:
    """Collects every progress report on the training thread; `take()` hands the summary to the GUI thread.

    A report per step (or per image while caching) is reduced here to what the window shows, so the GUI
    thread's work per refresh does not grow with the speed of training.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._pending = Digest()
        self._phase: str | None = None
        self._evaluating_at: int | None = None

    def add(self, p: Progress) -> None:
        """Record one report (called on the training thread)."""
        with self._lock:
            d = self._pending
            d.latest = p
            if p.phase != self._phase:
                self._phase = p.phase
                if p.phase not in ("training", "evaluating", "done"):
                    d.messages.append(f"{PHASE_WORDS.get(p.phase, p.phase.capitalize())}…")
                elif p.phase == "training" and not d.train_points and self._evaluating_at is None:
                    # A step's report counts it as done; one from inside a step, the step before it.
                    first = p.step if p.train_loss is None else max(0, p.step - 1)
                    d.messages.append(f"Training from step {first} of {p.total_steps}…")
            if p.phase == "evaluating":
                self._evaluating_at = p.step
            elif p.phase == "training" and p.train_loss is None:
                pass  # from inside a long step: the bar shows it (progress_text), the curves wait for the step
            elif p.phase == "training":
                d.train_points.append((p.step, p.train_loss, p.lr))
                if self._evaluating_at == p.step:
                    self._evaluating_at = None
                    d.val_points.append((p.step, p.val_loss, p.val_top1))
                    if p.val_top1 is not None:
                        d.messages.append(f"Step {p.step}: validation accuracy {p.val_top1:.1%}.")
            elif p.phase == "done":
                self._evaluating_at = None
                d.val_points.append((p.step, p.val_loss, p.val_top1))
                if p.val_top1 is not None:
                    d.messages.append(f"Finished: validation accuracy {p.val_top1:.1%} after {p.step} steps.")

    def preload(self, history: list) -> None:
        """A resumed run's curves so far (called on the training thread, before its first report)."""
        with self._lock:
            self._pending.history = list(history)

    def take(self) -> Digest:
        """Everything since the last call (called on the GUI thread)."""
        with self._lock:
            d, self._pending = self._pending, Digest()
            return d


class TrainingSession(QObject):
    """One run, new or resumed, trained outside the window's process; results come back as signals.

    Args:
        config: a new run's config (None for a resume).
        run_dir: the run folder to resume (None for a new run).
        devices: the device set (`cpu`, `cuda:0`, `all`, `0,1`, `cpu:2`, ...); None: the config's device.
        isolate: train one device in a child process (always True in the app; see the module).
        setup: a picklable callable the engine runs first in each training process (tests register models).
        parent: the owning QObject.

    Signals:
        runFolderKnown(str): the run folder, as soon as it exists (before training begins).
        finished(object): the engine's `RunResult` of a completed run.
        cancelled(object): the engine's `OperationCancelled` (its `run_dir` is resumable when not None).
        failed(object): the exception that ended the run (a `BitStudioError` carries its message).
        done(): emitted last, after exactly one of the three above.
    """

    runFolderKnown = Signal(str)
    finished = Signal(object)
    cancelled = Signal(object)
    failed = Signal(object)
    done = Signal()

    def __init__(
        self,
        config: TrainConfig | None = None,
        run_dir: str | Path | None = None,
        *,
        devices: str | None = None,
        isolate: bool = True,
        setup: Callable[[], None] | None = None,
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        if (config is None) == (run_dir is None):
            raise ValueError("A training session needs either a config (a new run) or a run folder (resume).")
        self.config = config
        self.resume_dir = str(run_dir) if run_dir is not None else None
        self.devices = devices or None
        self.isolate = isolate
        self.setup = setup
        self.digest = ProgressDigest()
        self.run_dir: str | None = self.resume_dir
        self._process = None  # the engine's TrainingProcess, set on the worker thread
        self._process_ready = threading.Event()
        self._stop_lock = threading.Lock()
        self._stop_grace: float | None = None
        self._cancel_exc = None
        self._worker = Worker(self._train, self, name="training")
        self._worker.succeeded.connect(self.finished)
        self._worker.failed.connect(self.failed)
        self._worker.cancelled.connect(self._on_cancelled)
        self._worker.done.connect(self.done)
        self._worker.progress.connect(self._on_progress_sampled)
        self._announced = False

    # Control (GUI thread) ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._worker.start()

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Stop politely: the run ends at its next micro-batch with a checkpoint; by force after `grace_s`."""
        with self._stop_lock:
            self._stop_grace = grace_s if self._stop_grace is None else min(self._stop_grace, grace_s)
            process = self._process
        if process is not None:
            process.stop(grace_s)
        self._worker.cancel()

    def is_running(self) -> bool:
        return self._worker.is_running()

    def wait(self, ms: int = 30_000) -> bool:
        """Block until the training thread ended (and with it the training processes); True when it has."""
        return self._worker.wait(ms)

    @property
    def pids(self) -> list[int]:
        """The training processes' ids (empty before they start and once they ended)."""
        process = self._process
        return list(process.pids) if process is not None and process.is_alive() else []

    # The worker thread ----------------------------------------------------------------------------------
    def _train(self, on_progress, cancel):
        # Imported here, on the worker thread: the launcher imports torch, which the window never waits for.
        from bit_engine.distributed import TrainJob
        from bit_engine.launcher import start_training
        from bit_engine.progress import OperationCancelled

        job = TrainJob(config=self.config) if self.config is not None else TrainJob(run_dir=self.resume_dir)
        if self.resume_dir is not None:
            self._load_history(self.resume_dir)
        process = start_training(job, self.devices, isolate=self.isolate, setup=self.setup)
        with self._stop_lock:
            self._process = process
            grace = self._stop_grace
        if process.run_dir is not None:
            self.run_dir = str(process.run_dir)
        on_progress(None)  # wakes the GUI side to announce the run folder
        if grace is not None:  # cancelled while the process was being prepared
            process.stop(grace)

        def relay(p: Progress) -> None:
            self.digest.add(p)

        try:
            return process.run(relay, cancel)
        except OperationCancelled as exc:
            self._cancel_exc = exc
            raise

    def _load_history(self, run_dir: str) -> None:
        from bit_engine import runs
        from bit_engine.runs import RunError

        try:
            self.digest.preload(runs.read_metrics(run_dir))
        except (
            RunError,
            OSError,
        ) as exc:  # the curves are a nicety: a damaged history must not stop a resume
            log.warning("Could not read the metrics of %s: %s", run_dir, exc)

    # Signals from the worker (GUI thread) ---------------------------------------------------------------
    def _on_progress_sampled(self, _report) -> None:
        # The Worker's sampled progress is only used as a wake-up: the digest holds the reports themselves.
        if not self._announced and self.run_dir:
            self._announced = True
            self.runFolderKnown.emit(self.run_dir)

    def _on_cancelled(self) -> None:
        from bit_engine.progress import OperationCancelled

        self.cancelled.emit(self._cancel_exc or OperationCancelled("Cancelled.", self.run_dir))
