"""Work-arounds for bugs in the Qt bindings, applied once when `app` is imported.

PySide6 6.12.0 (its shiboken6 ``abi3`` build) drops one reference to ``None`` every time Python calls a C++
method that returns ``void`` (``QPainter.save``, ``QLabel.setText``, ``QWidget.update``...). Python 3.12 made
``None`` immortal, so the lost references do not matter there; on Python 3.11 ``None``'s count reaches zero
after a few thousand such calls and the interpreter aborts with "Fatal Python error: none_dealloc". Measured
here: 100 ``QPainter.save()`` calls lower ``sys.getrefcount(None)`` by 100 with PySide6 6.12.0 and leave it
unchanged with 6.11.3; a 50 x 50 table painted by a Python delegate crashes on its first paint. Every
``Signal.emit()`` drops a reference to ``True`` the same way (100 emits: -100), which aborted the test run
at exit with "bool_dealloc".

`protect_none` gives ``None``, ``True`` and ``False`` the immortality that 3.12 gives them: a reference count far beyond what any
session can drop. It touches nothing else, and is skipped on Python 3.12 and later.
"""

from __future__ import annotations

import sys

# 2**60 references: at a billion void calls a second, 36 years to drop them all.
_BALLAST = 1 << 60


def _affected() -> bool:
    # Not narrowed to 6.12.0: reading the installed version costs tens of milliseconds at every start, and the
    # ballast is harmless where the bindings behave.
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    from importlib.util import find_spec

    return find_spec("shiboken6") is not None


def protect_none() -> bool:
    """Make ``None`` practically immortal where PySide6 would otherwise free it; True when applied."""
    if not _affected():
        return False
    import ctypes

    # ob_refcnt is the first field of every PyObject in a release build of CPython < 3.12.
    for singleton in (None, True, False):
        refcount = ctypes.c_ssize_t.from_address(id(singleton))
        if refcount.value < _BALLAST:
            refcount.value += _BALLAST
    return True
