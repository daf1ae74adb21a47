"""Errors as a person reads them: what happened, what to do, and a button where one helps.

`advise` turns any exception from training into an `ErrorAdvice` (a sentence and a few actions); `ErrorPanel`
shows it inside the page, so the window stays usable around it. The user never sees a traceback: anything that
is not a `BitStudioError` is a bug, logged with its traceback to the log file that the panel links to.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

log = logging.getLogger("bit_studio")

# The actions an error can offer; the page that shows the panel carries them out.
DOWNLOAD_WEIGHTS = "download_weights"
IMPORT_WEIGHTS = "import_weights"
RESUME = "resume"
CHANGE_PLAN = "change_plan"

_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


@dataclass(frozen=True)
class ErrorAdvice:
    """What the user is told about one failure.

    Attributes:
        kind: out_of_memory, weights_missing, disk_full, process_died, error (a BitStudioError) or bug.
        title: a few words, shown in bold.
        text: what happened and what to do, in sentences.
        actions: what the panel offers as buttons (DOWNLOAD_WEIGHTS, IMPORT_WEIGHTS, RESUME, CHANGE_PLAN).
        model: the model whose weights are missing (weights_missing only).
    """

    kind: str
    title: str
    text: str
    actions: tuple[str, ...] = ()
    model: str | None = None


def _chain(exc: BaseException):
    """`exc` and the exceptions it was raised from (a child's error re-raised by a launcher keeps its cause)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_disk_full(exc: BaseException) -> bool:
    from bit_engine.weights_cache import DiskFullError

    for e in _chain(exc):
        if isinstance(e, DiskFullError):
            return True
        if isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS:
            return True
        if "no space left on device" in str(e).lower():
            return True
    return False


def _is_out_of_memory(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, MemoryError):
            return True
        text = str(e).lower()
        if "out of memory" in text or "can't allocate memory" in text or "outofmemoryerror" in text:
            return True
    return False


def _missing_weights_model(exc: BaseException) -> str | None:
    """The model whose pre-trained weights could not be had (download failed or not allowed), else None."""
    from bit_engine import weights_cache

    missing = (
        weights_cache.HostUnreachableError,
        weights_cache.DownloadHTTPError,
        weights_cache.DownloadInterruptedError,
        weights_cache.WeightsNotCachedError,
        weights_cache.CorruptWeightsError,
    )
    for e in _chain(exc):
        if isinstance(e, missing):
            if e.model:  # the engine names the model it is about
                return e.model
            for spec_name in _known_model_names():
                if spec_name in str(e):
                    return spec_name
            return ""
    return None


def _known_model_names() -> list[str]:
    from bit_engine.models import KNOWN_MODELS

    # Longest first: "BiT-M-R50x1" must not match inside "BiT-M-R50x1-ILSVRC2012" and the like.
    return sorted(KNOWN_MODELS, key=len, reverse=True)


def advise(exc: BaseException, *, resumable: bool = False) -> ErrorAdvice:
    """The message and actions for an exception that ended a training run.

    Args:
        exc: what the training call raised (in this process, or re-raised from a training process).
        resumable: the run folder holds a run that Resume can continue.
    """
    from bit_engine.errors import BitStudioError

    resume_hint = " Resume continues from the last checkpoint." if resumable else ""
    resume = (RESUME,) if resumable else ()
    said = str(exc).strip()

    if _is_disk_full(exc):
        return ErrorAdvice(
            "disk_full",
            "The disk is full",
            f"{said}\n\nFree some space on that disk, then try again.{resume_hint}",
            resume,
        )
    model = _missing_weights_model(exc)
    if model is not None:
        return ErrorAdvice(
            "weights_missing",
            "The pre-trained weights are missing",
            f"{said}\n\nDownload them again, or import a weights file (.npz) you fetched on another "
            f"computer.{resume_hint}",
            (DOWNLOAD_WEIGHTS, IMPORT_WEIGHTS, *resume),
            model or None,
        )
    if _is_process_death(exc):
        return ErrorAdvice(
            "process_died",
            "A training process stopped unexpectedly",
            f"{said}\n\nThe window and the run are safe.{resume_hint}",
            resume,
        )
    if _is_out_of_memory(exc):
        return ErrorAdvice(
            "out_of_memory",
            "Out of memory",
            f"{said}\n\nTrain with a smaller micro-batch, on another device, or close other programs that use "
            f"the same memory.{resume_hint}",
            (CHANGE_PLAN, *resume),
        )
    if isinstance(exc, BitStudioError):
        text = f"{said}\n\n{resume_hint.strip()}" if resumable else said
        return ErrorAdvice("error", "Training stopped", text, resume)
    detail = f"{type(exc).__name__}: {said}" if said else type(exc).__name__
    return ErrorAdvice(
        "bug",
        "Something went wrong inside BiT Studio",
        f"{detail}. This is a bug, not something you did; the details are in the log file.{resume_hint}",
        resume,
    )


def _is_process_death(exc: BaseException) -> bool:
    from bit_engine.distributed import DistributedError

    return any(isinstance(e, DistributedError) for e in _chain(exc))


def record(exc: BaseException, context: str) -> None:
    """Write the exception with its traceback to the log file (the user sees only `advise`'s sentences)."""
    log.error("%s: %s", context, exc, exc_info=(type(exc), exc, exc.__traceback__))
    details = getattr(exc, "details", "")
    if details:  # a training process's own traceback, carried across the process boundary
        log.error("%s: traceback in the training process:\n%s", context, details)


def log_file() -> Path:
    from app import settings

    return settings.log_file()


class ErrorPanel(QFrame):
    """A message inside the page: a bold title, the advice, and the buttons it calls for.

    Signals:
        actionRequested(str): a button was pressed; one of DOWNLOAD_WEIGHTS, IMPORT_WEIGHTS, RESUME,
            CHANGE_PLAN.
    """

    actionRequested = Signal(str)

    _LABELS: ClassVar[dict[str, tuple[str, str]]] = {
        DOWNLOAD_WEIGHTS: ("downloadWeightsButton", "Download weights"),
        IMPORT_WEIGHTS: ("importWeightsButton", "Import weights…"),
        RESUME: ("errorResumeButton", "Resume"),
        CHANGE_PLAN: ("changePlanButton", "Change the plan"),
    }

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("errorPanel")
        self.setAccessibleName("Error")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet(
            "#errorPanel { background: #fdecea; border: 1px solid #e0a39c; border-radius: 4px; }"
        )
        self.advice: ErrorAdvice | None = None
        self.title = QLabel()
        self.title.setObjectName("errorTitle")
        self.title.setStyleSheet("font-weight: bold; color: #8a1c10;")
        self.text = QLabel()
        self.text.setObjectName("errorText")
        self.text.setAccessibleName("Error message")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        for action, (name, label) in self._LABELS.items():
            button = QPushButton(label)
            button.setObjectName(name)
            button.setAccessibleName(label.rstrip("…"))
            button.clicked.connect(lambda _=False, a=action: self.actionRequested.emit(a))
            row.addWidget(button)
            self.buttons[action] = button
        self.log_button = QPushButton("Open the log")
        self.log_button.setObjectName("openLogButton")
        self.log_button.setAccessibleName("Open the log file")
        self.log_button.clicked.connect(self._on_open_log)
        row.addWidget(self.log_button)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.text)
        layout.addLayout(row)
        self.hide()

    def show_advice(self, advice: ErrorAdvice) -> None:
        self.advice = advice
        self.title.setText(advice.title)
        self.text.setText(advice.text)
        for action, button in self.buttons.items():
            button.setVisible(action in advice.actions)
        self.log_button.setVisible(log_file().exists())
        self.show()

    def clear(self) -> None:
        self.advice = None
        self.hide()

    def _on_open_log(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(log_file())))
