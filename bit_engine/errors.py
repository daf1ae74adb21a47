"""The one exception family that carries a message meant for the user.

Every `BitStudioError` says what happened and what to do; the CLI prints it without a traceback and exits
non-zero, and the GUI shows it in a dialog. Anything else escaping the engine is a bug.
"""


class BitStudioError(Exception):
    """A problem the user can act on; `str(error)` is the whole message.

    The message names no command or flag of a particular front end: what the user can do is data, which a
    front end turns into a button ("Resume") or a command (`bit-studio resume RUN`).

    Attributes:
        remedy: None, or what fixes it: "resume" (continue the run in `run_dir`), "download" or "import"
            (fetch or import the weights of `model`).
    """

    remedy: str | None = None


class WeightsMismatchError(BitStudioError, ValueError):
    """Weights whose keys or shapes do not fit the architecture; the message names the first mismatch.

    Here rather than in models.py because both architectures' loaders raise it (models.py and
    efficientnet.py), and efficientnet.py sits below models.py.
    """
