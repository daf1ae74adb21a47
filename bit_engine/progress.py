"""The one contract for long work: every slow engine call reports `Progress` and honours a `CancelFlag`.

A front end passes two keywords to any long operation (scan, download, caching, features, training,
evaluation, estimate, export, folder prediction):

    on_progress: a callable receiving `Progress` objects, called from the thread doing the work;
    cancel: anything with `is_set()` (a `threading.Event` fits), checked between units of work.

A cancelled operation ends one way everywhere: it raises `OperationCancelled` (a `BitStudioError`, so a
front end that shows errors shows a sensible sentence even when it forgets the case). No operation returns
a "cancelled" result: a value returned means the work is complete. Training is the one operation that keeps
something when cancelled: once training has started (the first step), a cancel in any phase (training,
evaluation, the final evaluation) leaves the run resumable with status.json `cancelled`, and the exception
says where (`OperationCancelled.run_dir`) and at which step. A cancel before that (scan, download, caching,
features) leaves no run, as there is nothing to resume (`run_dir` is None). This holds for `train.fit`, `train.resume`, `launcher.TrainingProcess`
(the exception is re-raised in the caller's process, whatever process trained) and every other long call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bit_engine.errors import BitStudioError


class CancelFlag(Protocol):
    """What `cancel=` must offer: `threading.Event` fits."""

    def is_set(self) -> bool: ...


class OperationCancelled(BitStudioError):
    """A long operation stopped because its `cancel` flag was set.

    Attributes:
        run_dir: the resumable run folder, when the operation was training that had made one.
        step: the optimizer step a resume continues from (training only).
        total_steps: the run's length in steps (training only; 0 otherwise).
    """

    def __init__(
        self,
        message: str = "Cancelled.",
        run_dir: str | Path | None = None,
        step: int = 0,
        total_steps: int = 0,
    ):
        super().__init__(message)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.step = step
        self.total_steps = total_steps
        if self.run_dir is not None:
            self.remedy = "resume"

    def __reduce__(self):
        # Crosses process boundaries (a training child reports its cancel to the launcher): keep the fields.
        return (type(self), (str(self), self.run_dir, self.step, self.total_steps))


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Phases: starting (training processes), scanning, downloading, caching, features, training, evaluating,
    exporting, verifying, quantizing, predicting, estimating, folds (the label-issue search), done.
    `done`/`total` count the units of the current phase (files, bytes, images, steps); the training fields
    are set during training.
    """

    phase: str
    done: int = 0
    total: int = 0
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    train_loss: float | None = None
    lr: float | None = None
    images_per_s: float | None = None
    elapsed: float = 0.0
    eta: float | None = None
    val_loss: float | None = None
    val_top1: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


ProgressCallback = Callable[[Progress], None]
