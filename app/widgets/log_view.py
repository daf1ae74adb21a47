"""The run's messages as a read-only, time-stamped list the user can scroll, select and copy."""

from __future__ import annotations

import time

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QWidget

#: Lines kept; older ones scroll away (a long run's log must not grow the window's memory without bound).
MAX_LINES = 5000


class RunLogView(QPlainTextEdit):
    """The messages of the current run: phases, evaluations, cancel, resume and failures.

    Args:
        parent: the owning widget.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("logView")
        self.setAccessibleName("Run log")
        self.setReadOnly(True)
        self.setMaximumBlockCount(MAX_LINES)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setPlaceholderText("The run's messages appear here.")

    def add_message(self, text: str) -> None:
        """Append `text` (one or more lines) with the time of day, and keep the newest line in view."""
        stamp = time.strftime("%H:%M:%S")
        for line in str(text).splitlines() or [""]:
            self.appendPlainText(f"{stamp}  {line}")
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def lines(self) -> list[str]:
        """The messages shown, without their time stamps (for tests and copying)."""
        return [line.split("  ", 1)[-1] for line in self.toPlainText().splitlines()]
