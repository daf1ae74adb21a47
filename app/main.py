"""Entry point of the `bit-studio` command: the window with no arguments, the engine's command line with some.

Start-up is kept short by what is *not* imported here: torch and onnxruntime load in the background or when
a step first needs them, never before the window is on screen (`bench/startup.py` measures it).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

#: The application's icon, rendered from resources/bit-studio.svg by packaging/render_icons.py: next to the
#: package in a checkout and in the packaged build alike.
ICON_DIR = Path(__file__).resolve().parents[1] / "resources" / "icons"
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)
#: The desktop entry's name (packaging/linux/): desktops match the window to its menu entry and icon by it.
DESKTOP_ID = "io.github.bitstudio.BitStudio"


def display_problem(environ: os._Environ | dict | None = None, platform: str | None = None) -> str | None:
    """Why no window can be opened here, in one sentence; None when a display looks usable.

    Only Linux and the other X11/Wayland systems can lack a display; `QT_QPA_PLATFORM` (offscreen, vnc, ...)
    counts as a deliberate choice of one. Checked before Qt starts, because Qt aborts the process without one.
    """
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform in ("win32", "darwin") or env.get("QT_QPA_PLATFORM"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return (
        "BiT Studio cannot open its window because there is no display here (neither DISPLAY nor "
        "WAYLAND_DISPLAY is set); everything also works from the command line: see `bit-studio --help`."
    )


def setup_logging() -> None:
    """Warnings and unexpected errors (with tracebacks) go to the log file the error messages point at."""
    from app import settings

    logger = logging.getLogger("bit_studio")
    if any(isinstance(h, logging.FileHandler) for h in logger.handlers):
        return
    try:
        settings.log_dir().mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(settings.log_file(), encoding="utf-8")
    except OSError:
        return  # an unwritable log folder must not stop the app; errors still reach the user's screen
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def create_application(argv: list[str] | None = None):
    """The QApplication with the app's name and icon (the one place that makes it)."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(argv or [sys.argv[0]])
    app.setApplicationName("BiT Studio")
    app.setApplicationDisplayName("BiT Studio")
    app.setOrganizationName("BiT Studio")
    app.setDesktopFileName(DESKTOP_ID)
    app.setWindowIcon(app_icon())
    if sys.platform == "win32":
        # Without its own AppUserModelID, Windows groups the window under python.exe in the taskbar and
        # shows Python's icon there (the bundle's .exe carries the icon, a virtual environment does not).
        import ctypes

        ctypes.windll.shell32.SetCurrentProcessExplicitAppUserModelID(DESKTOP_ID)
    return app


def app_icon():
    """The window and taskbar icon: the rendered PNGs, or the one installed in the desktop's icon theme."""
    from PySide6.QtCore import QSize
    from PySide6.QtGui import QIcon

    icon = QIcon()
    for size in ICON_SIZES:
        path = ICON_DIR / f"bit-studio-{size}.png"
        if path.is_file():
            icon.addFile(str(path), QSize(size, size))
    # An installed wheel has no resources/ folder; packaging/install-linux.sh puts the icon in the theme.
    return icon if not icon.isNull() else QIcon.fromTheme(DESKTOP_ID)


def _install_excepthook() -> None:
    """An exception escaping a slot is a bug: log it with its traceback and tell the user once."""
    log = logging.getLogger("bit_studio")
    shown = []

    def hook(exc_type, exc, tb):
        log.error("Uncaught exception", exc_info=(exc_type, exc, tb))
        sys.__excepthook__(exc_type, exc, tb)
        if shown:
            return
        shown.append(True)
        from PySide6.QtWidgets import QMessageBox

        from app.workers import user_message

        QMessageBox.critical(None, "BiT Studio", user_message(exc))

    sys.excepthook = hook


def run_gui(demo: bool = False, demo_model: str | None = None) -> int:
    """Open the window and run until it is closed; with `demo`, the window plays the whole path first."""
    setup_logging()
    app = create_application()
    _install_excepthook()
    from app.main_window import MainWindow

    window = MainWindow()
    window.show()
    if demo:
        from app.guided_demo import GuidedDemo

        tour = GuidedDemo(window, model=demo_model)
        tour.start()
    return app.exec()


def has_screen(environ: os._Environ | dict | None = None) -> bool:
    """A window can be seen here: a display, and not Qt's offscreen platform (tests, the self-test)."""
    env = os.environ if environ is None else environ
    return display_problem(env) is None and env.get("QT_QPA_PLATFORM", "") not in ("offscreen", "minimal")


def _window_demo(argv: list[str]) -> tuple[bool, str | None]:
    """Whether `argv` asks for the demo in the window, and the model it must use (None: the default).

    `bit-studio demo` (optionally `--offline`) plays in the window where there is a screen; with other
    options (`--out`, `--no-window`) or without a screen it is the command-line demo.
    """
    if argv[:1] != ["demo"] or not set(argv[1:]) <= {"--offline"} or not has_screen():
        return False, None
    return True, ("EfficientNet-Lite0" if "--offline" in argv else None)


def main(argv: list[str] | None = None) -> int:
    """`bit-studio [COMMAND ...]`: no arguments opens the window; anything else is the command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--self-test"]:
        from app.self_test import run

        return run()
    window_demo, demo_model = _window_demo(argv)
    if window_demo:
        return run_gui(demo=True, demo_model=demo_model)
    if argv:
        from bit_engine.cli import main as cli_main

        return cli_main(argv)
    problem = display_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    return run_gui()


if __name__ == "__main__":
    sys.exit(main())
