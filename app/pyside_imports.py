"""Imports after Qt at the speed they have without it.

PySide6 replaces `__import__` to support its opt-in `from __feature__ import snake_case, true_property`.
After every import it asks whether the new module's source mentions "PySide6"
(`shibokensupport.feature._mod_uses_pyside`), through `inspect.getsource`: that looks the module up among all
loaded modules, resolves paths and tokenizes the file. The window imports the engine, torch and onnxruntime
after Qt, thousands of modules, on worker threads that hold the GIL while they do, so every step that first
needs the engine paid for it. `bench/qt_imports.py` measures it.

`install()` answers the same question by reading the module's file as bytes. BiT Studio does not use
`__feature__`; the answers are the same as PySide6's own (a test compares them), so code that does use it
would behave the same too. Where a PySide6 version lacks the hook, nothing is changed.
"""

from __future__ import annotations

import sys


def install() -> bool:
    """Replace PySide6's check with the file read (idempotent); True when it is in place."""
    feature = sys.modules.get("shibokensupport.feature")
    upstream = getattr(feature, "_mod_uses_pyside", None)
    if upstream is None:
        return False
    if getattr(upstream, "reads_bytes", False):
        return True

    def mod_uses_pyside(module) -> bool:
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path.endswith(".py"):
            return upstream(module)  # built-in, compiled or source-less: PySide6's own answer (cheap there)
        try:
            with open(path, "rb") as source:
                return b"PySide6" in source.read()
        except OSError:
            return upstream(module)

    mod_uses_pyside.reads_bytes = True
    mod_uses_pyside.upstream = upstream
    feature._mod_uses_pyside = mod_uses_pyside
    return True
