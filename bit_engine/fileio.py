"""Writing the user's disk safely: atomic writes, output-place checks, disk-full messages, safe loading.

Atomic writes go to a temporary file in the destination folder, flushed, then `os.replace`: a crash or a
cancel at any moment leaves either the old file or the new one, never half of one. A kill between the two
leaves the temporary file (``.NAME.XXXXXXXX.tmp``); `remove_stale_temporaries` clears them on the next resume.

The rest is where the engine decides whether it may write somewhere at all: never into the photo folder it
was given (the README promises it), never over a folder of someone else's files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from bit_engine.errors import BitStudioError

#: errno values that mean "no room left": the disk is full, or the user's quota is.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})

_TMP_SUFFIX = ".tmp"


class DiskFullError(BitStudioError):
    """The disk filled up while writing; the file being written was left as it was before."""


class OutputPlaceError(BitStudioError):
    """An output path the engine refuses to write to (inside the photo folder, a folder of other files)."""


class UnsafeFileError(BitStudioError):
    """A file holding pickled Python objects: they could run code when loaded, so they never are."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` is an OSError meaning the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def disk_full_error(path: str | os.PathLike) -> DiskFullError:
    """The engine's message for a disk that filled up while writing `path`."""
    path = Path(path)
    return DiskFullError(
        f"The disk is full: {path.name} could not be written in {path.parent}. Free some space on that "
        "disk, then try again (a training run continues from its last checkpoint with `resume`)."
    )


@contextlib.contextmanager
def disk_full_as_error(path: str | os.PathLike) -> Iterator[None]:
    """Turn an out-of-space OSError raised inside the block into the engine's `DiskFullError`."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path) from exc
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path` atomically.

    On an exception the temporary file is removed and `path` is left as it was. A full disk raises
    `DiskFullError` (a message for the user) instead of the bare OSError.
    """
    path = Path(path)
    with disk_full_as_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
        try:
            with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def append_text(path: str | Path, text: str) -> None:
    """Append `text` to a file (a log line), with the engine's message when the disk is full."""
    with disk_full_as_error(path), open(path, "a", encoding="utf-8") as f:
        f.write(text)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed atomic write left in `folder` (``.NAME.XXXXXXXX.tmp``).

    Call it only where no write is under way (a run folder being resumed): a live write's temporary file
    looks the same.

    Returns:
        The files removed.
    """
    removed = []
    for entry in Path(folder).glob(f".*{_TMP_SUFFIX}"):
        if entry.is_file() and not entry.is_symlink() and entry.name.count(".") >= 3:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def load_torch_weights(path: str | Path, map_location: Any = "cpu") -> Any:
    """`torch.load` of tensors and plain containers only (``weights_only=True``).

    Raises:
        UnsafeFileError: the file holds other Python objects (a pickled model, a crafted payload); torch's
            own message would suggest loading it unsafely, which the app never does.
        Anything else `torch.load` raises for a damaged file.
    """
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(
            f"{Path(path).name} holds Python objects, which are never loaded (loading them could run any "
            "code). Use a file written by BiT Studio."
        ) from exc


# ----------------------------------------------------------------------------------------------------------
# Where the engine may write


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` is `folder` or inside it, links resolved (the path itself need not exist yet)."""
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError):  # a symlink loop: cannot be inside anything sensible
        return False


def refuse_inside_photos(
    path: str | os.PathLike, photo_folders: Iterable[str | os.PathLike | None], what: str = "output"
) -> None:
    """Refuse to write `path` inside any of `photo_folders` (the folders being scanned or predicted).

    Raises:
        OutputPlaceError: `path` is one of them or inside one.
    """
    for folder in photo_folders:
        if folder and Path(folder).is_dir() and is_within(path, folder):
            raise OutputPlaceError(
                f"The {what} {path} is inside the photo folder {folder}, and BiT Studio never writes into "
                "photo folders. Choose a place outside it."
            )


def check_new_run_folder(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> None:
    """Refuse a folder a new training run must not be written into.

    Accepted: a path that does not exist yet, or an empty folder. Refused: anything inside the photo folder
    `data_dir`, a file, and a folder that already holds files (a finished run, or someone else's files that
    the run's ``model.pt``, ``report.json`` ... would replace).

    Raises:
        OutputPlaceError: with what to do instead.
    """
    path = Path(path)
    refuse_inside_photos(path, [data_dir], "run folder")
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputPlaceError(f"{path} is a file, not a folder. Choose a new or empty folder for the run.")
    if (path / "config.json").is_file():
        raise OutputPlaceError(
            f"{path} already holds a run. Resume it, or choose another folder.", remedy="resume", run_dir=path
        )
    try:
        entries = sorted(entry.name for entry in path.iterdir())
    except OSError as exc:
        raise OutputPlaceError(f"Cannot read the folder {path} ({exc.strerror or exc}).") from exc
    if entries:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise OutputPlaceError(
            f"{path} already holds other files ({shown}), which a run would replace or mix with its own. "
            "Choose a new or empty folder."
        )
