"""Where the pre-trained weights live on this machine, and what the weights store raises.

Weights live in `locations.weights_dir()` as `{NAME}.npz`; a download in progress lands in `{NAME}.npz.partial`
next to it (see `bit_engine.weights_download`). They come from the official host, or from the server named by
`BIT_STUDIO_WEIGHTS_URL` (a mirror, an offline site's server, tests). EfficientNet-Lite0's weights ship in a
Python package: it has no file here and is always available.

Every error is a `WeightsError` whose message says what happened and what to do in words, and which carries
the model (`.model`), where its weights can be fetched (`.url`) and the action that fixes it (`.remedy`:
"download", "import", ...) as data, for a front end to offer as a button or a command.
"""

from __future__ import annotations

import os
from pathlib import Path

from bit_engine import fileio, locations
from bit_engine.errors import BitStudioError
from bit_engine.models import ModelSpec, NotAnNpzError, get_spec
from bit_engine.progress import OperationCancelled
from bit_engine.units import format_bytes

#: Environment variable replacing the official base URL (a mirror, an offline site's server, tests).
WEIGHTS_URL_ENV = "BIT_STUDIO_WEIGHTS_URL"

_PARTIAL_SUFFIX = ".partial"


# ------------------------------------------------------------------------------------------------------------
# Errors


class WeightsError(BitStudioError):
    """Base of the weights store's errors."""


class HostUnreachableError(WeightsError):
    """The weights host could not be reached (offline, DNS, firewall, timeout)."""


class DownloadHTTPError(WeightsError):
    """The server answered with an HTTP error (404 and others).

    Attributes:
        status: the HTTP status code.
    """

    def __init__(self, message: str, status: int = 0, **context):
        super().__init__(message, **context)
        self.status = status


class DownloadInterruptedError(WeightsError):
    """The connection dropped before the whole file arrived; the partial file is kept for resuming."""


class DownloadCancelledError(WeightsError, OperationCancelled):
    """The caller cancelled the download; the partial file is kept for resuming."""


class DiskFullError(WeightsError, fileio.DiskFullError):
    """No space left while writing weights; the message says how much is needed and where."""


class DownloadTooLargeError(WeightsError):
    """The server sends more than the weights file can be: the download is discarded, nothing is kept."""


class CorruptWeightsError(WeightsError, NotAnNpzError):
    """A truncated or corrupted `.npz` (bad zip structure, bad checksum, inconsistent array header)."""


class WeightsNotCachedError(WeightsError):
    """The weights are not in the cache and downloading was not allowed."""


class NothingToDownloadError(WeightsError):
    """The model's weights ship inside a Python package: there is no file to download or import."""


class WeightsImportError(WeightsError):
    """A file cannot be imported (missing, or its model cannot be told from its name)."""


# ------------------------------------------------------------------------------------------------------------
# Where things are


def weights_url(name: str) -> str:
    """Where the named model's npz is downloaded from: the official URL, or under `BIT_STUDIO_WEIGHTS_URL`."""
    spec = get_spec(name)
    base = os.environ.get(WEIGHTS_URL_ENV, "").strip().rstrip("/")
    return f"{base}/{spec.name}.npz" if base else spec.url


def cache_file(name: str) -> Path:
    """Where the named model's npz lives in the cache once downloaded or imported (it may not exist)."""
    return locations.weights_dir() / f"{get_spec(name).name}.npz"


def partial_path(name: str) -> Path:
    """Where an interrupted download of the named model is kept for resuming (it may not exist)."""
    final = cache_file(name)
    return final.with_name(final.name + _PARTIAL_SUFFIX)


def downloadable_spec(name: str, action: str) -> ModelSpec:
    """The table entry of a model whose weights are a file (BiT); `action` ("download", "import") words the
    refusal for the others.

    Raises:
        UnknownModelError: no such model.
        NothingToDownloadError: the model's weights ship in a Python package.
    """
    spec = get_spec(name)
    if spec.family != "bit":
        raise NothingToDownloadError(
            f"{spec.name}'s weights ship with the app (a Python package), so there is nothing to {action}.",
            model=spec.name,
        )
    return spec


def kept_note(partial: Path, size: int | None = None) -> str:
    """The sentence saying that a partial download is kept for resuming ("" when nothing is kept)."""
    if size is None:
        size = partial.stat().st_size if partial.is_file() else 0
    if size == 0:
        return ""
    return (
        f"\nThe {format_bytes(size)} already downloaded are kept in {partial}; "
        "the next download resumes from there."
    )


def disk_full(
    spec: ModelSpec, folder: Path, needed: int, kept: Path | None = None, free: int | None = None
) -> DiskFullError:
    """The error for too little space in `folder`: how much more `spec`'s weights need, and where."""
    have = f" (only {format_bytes(free)} free)" if free is not None else ""
    return DiskFullError(
        f"Not enough disk space for {spec.name}: it needs {format_bytes(needed)} more in {folder}{have}. "
        f"Free some space there, or set {locations.CACHE_ENV} to a folder on a bigger disk, then try again."
        f"{kept_note(kept) if kept is not None else ''}",
        model=spec.name,
    )
