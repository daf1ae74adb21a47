"""Text read from files (folder names, a model's class names) made safe to print on a terminal.

A folder named ``\x1b]0;pwned\x07`` or a label holding ``\x1b[2J`` would otherwise retitle or clear the
user's terminal, and a line break inside a name would forge a line of output.
"""

from __future__ import annotations

import unicodedata


def printable(text: object) -> str:
    """`text` with every control character escaped (``\\n``, ``\\x1b``, ``\\u202e``...), all else kept.

    Letters of every script, accents and emoji print as they are; only the categories Unicode calls
    control (Cc) and format (Cf: bidirectional overrides, zero-width characters) are escaped, the way
    Python's `repr` writes them.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(
        repr(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text
    )
