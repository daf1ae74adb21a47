"""The one exception family that carries a message meant for the user, and what fixes it, as data.

Every `BitStudioError` says what happened and what to do, in words that suit any front end: its message names
no command, flag or button. When a particular action fixes the problem, the error says which in `remedy` (with
the model, address or file it applies to), and each front end offers that action its own way: the window as a
button ("Download", "Import .npz…", "Resume"), the command line as the command to type
(`bit_engine.cli.render_error`). The CLI prints the message without a traceback and exits non-zero; the GUI
shows it in a dialog. Anything else escaping the engine is a bug.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

#: `BitStudioError.remedy` -> the action it stands for, and the attributes that action needs.
REMEDIES = MappingProxyType(
    {
        "resume": "continue the run in `run_dir` from its last checkpoint",
        "download": "download the weights of `model` (a file fetched by other means from `url` can be imported "
        "instead)",
        "import": "import the weights of `model` from a file fetched by other means, from `url`",
        "name_model": "import the weights file at `path` again, saying which model it holds",
        "offline_model": "train `model` instead: its weights ship with BiT Studio and need no download",
        "replace": "write over the file at `path` anyway (it was not written by BiT Studio)",
    }
)


class BitStudioError(Exception):
    """A problem the user can act on; `str(error)` is the whole message.

    Args:
        message: what happened and what to do, in words that name no front end's commands or buttons.
        remedy: a key of `REMEDIES` when one action fixes it; None otherwise.
        model: the model concerned (a name from the model table), when there is one.
        url: the address concerned (where weights can be fetched), when there is one.
        path: the file concerned, when there is one.
        run_dir: the run folder concerned, when there is one (the subject of "resume").

    Attributes:
        remedy, model, url, path, run_dir: as given (subclasses may set `remedy` as a class attribute, and
            take `run_dir` as an argument of their own). Errors about a device carry `device` (`DeviceError`).
    """

    remedy: str | None = None
    model: str | None = None
    url: str | None = None
    path: Path | None = None
    run_dir: Path | None = None

    def __init__(
        self,
        message: str = "",
        *,
        remedy: str | None = None,
        model: str | None = None,
        url: str | None = None,
        path: str | Path | None = None,
        run_dir: str | Path | None = None,
    ):
        super().__init__(message)
        if remedy is not None:
            if remedy not in REMEDIES:
                raise ValueError(f"unknown remedy {remedy!r}; known: {', '.join(REMEDIES)}")
            self.remedy = remedy
        if model is not None:
            self.model = model
        if url is not None:
            self.url = url
        if path is not None:
            self.path = Path(path)
        if run_dir is not None:
            self.run_dir = Path(run_dir)


class WeightsMismatchError(BitStudioError, ValueError):
    """Weights whose keys or shapes do not fit the architecture; the message names the first mismatch.

    Here rather than in models.py because both architectures' loaders raise it (models.py and
    efficientnet.py), and efficientnet.py sits below models.py.
    """
