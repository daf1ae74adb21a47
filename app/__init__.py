"""BiT Studio's desktop application (PySide6) over `bit_engine`.

`from app import MainWindow` is the one name tests and automation need. It is resolved lazily, so importing
`app` (for the command line, say) loads neither Qt nor torch.
"""

from __future__ import annotations

from app.qt_workarounds import protect_none

__all__ = ["MainWindow"]

protect_none()  # before any Qt call: PySide6 6.12 on Python 3.11 frees None otherwise (see qt_workarounds)


def __getattr__(name: str):
    if name == "MainWindow":
        from app.main_window import MainWindow

        return MainWindow
    raise AttributeError(f"module 'app' has no attribute {name!r}")
