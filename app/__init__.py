"""BiT Studio's desktop application (PySide6) over `bit_engine`.

`from app import MainWindow` is the one name tests and automation need. It is resolved lazily, so importing
`app` (for the command line, say) loads neither Qt nor torch.
"""

from __future__ import annotations

__all__ = ["MainWindow"]


def __getattr__(name: str):
    if name == "MainWindow":
        from app.main_window import MainWindow

        return MainWindow
    raise AttributeError(f"module 'app' has no attribute {name!r}")
