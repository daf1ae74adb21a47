"""The one exception family that carries a message meant for the user.

Every `BitStudioError` says what happened and what to do; the CLI prints it without a traceback and exits
non-zero, and the GUI shows it in a dialog. Anything else escaping the engine is a bug.
"""


class BitStudioError(Exception):
    """A problem the user can act on; `str(error)` is the whole message."""
