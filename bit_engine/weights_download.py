"""Downloading a model's pre-trained weights over HTTP: resumable, bounded, and quick to fail offline.

A download first lands in `{NAME}.npz.partial` next to its place in the cache, so an interrupted or cancelled
download resumes with an HTTP Range request (a server that ignores Range, answers another range or says the
file changed makes it start over). The body may not exceed the size the model table allows, nor the free
space on the disk. Only a file that passed `weights_check.verify_npz` (every key of the architecture with the
right shape, every zip checksum) is renamed into place, with `os.replace`.

Network work uses only the standard library (urllib) and short timeouts, name resolution included, so an
offline machine fails in seconds instead of hanging. Every failure is a `weights_cache.WeightsError` that keeps
the partial file when resuming makes sense, and carries the remedy ("download" again, or "import" a file
fetched by other means from `.url`) as data.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import IO

from bit_engine import __version__, fileio, locations
from bit_engine.models import ModelSpec, NotAnNpzError, WeightsMismatchError
from bit_engine.progress import CancelFlag
from bit_engine.units import format_bytes
from bit_engine.weights_cache import (
    WEIGHTS_URL_ENV,
    DownloadCancelledError,
    DownloadHTTPError,
    DownloadInterruptedError,
    DownloadTooLargeError,
    HostUnreachableError,
    WeightsError,
    cache_file,
    disk_full,
    downloadable_spec,
    kept_note,
    partial_path,
    weights_url,
)
from bit_engine.weights_check import verify_npz

#: Seconds allowed to connect (and for each read): short, so that offline machines fail fast.
DEFAULT_TIMEOUT = 10.0

#: Bytes read per step; progress and cancellation are checked between steps.
CHUNK_SIZE = 256 * 1024

_DISK_FULL_ERRNOS = fileio.DISK_FULL_ERRNOS


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
    spec = downloadable_spec(name, "download")
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
            f"The download of {spec.name} from {url} is unusable: {exc} It was deleted: download it again.",
            remedy="download",
            model=spec.name,
            url=url,
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
        f"{WEIGHTS_URL_ENV} is set, check the mirror it names.\n{_import_hint(url)}",
        **_import_remedy(spec, url),
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
        raise WeightsError(
            f"Cannot download from {url!r} ({exc}). Check {WEIGHTS_URL_ENV}.", model=spec.name, url=url
        ) from exc

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
            raise disk_full(spec, partial.parent, needed, kept=partial) from exc
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
        raise disk_full(spec, partial.parent, needed, kept=partial if offset else None, free=free)


# ------------------------------------------------------------------------------------------------------------
# Messages


def _import_hint(url: str) -> str:
    return f"If this machine cannot reach it, fetch {url} by other means (another computer, a USB stick) and import that file."


def _import_remedy(spec: ModelSpec, url: str) -> dict[str, str]:
    """What fixes a download that cannot happen here: importing the file, fetched elsewhere from `url`."""
    return {"remedy": "import", "model": spec.name, "url": url}


def _unreachable(spec: ModelSpec, url: str, partial: Path, reason: object) -> HostUnreachableError:
    host = urllib.parse.urlsplit(url).netloc or url
    return HostUnreachableError(
        f"Could not reach {host} to download {spec.name} ({reason}). Check the network connection.\n"
        f"{_import_hint(url)}{kept_note(partial)}",
        **_import_remedy(spec, url),
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
    return DownloadHTTPError(f"{what}\n{_import_hint(url)}", status, **_import_remedy(spec, url))


def _interrupted(
    spec: ModelSpec, partial: Path, done: int, total: int | None, reason: object
) -> DownloadInterruptedError:
    of = f" of {format_bytes(total)}" if total else ""
    return DownloadInterruptedError(
        f"The download of {spec.name} stopped after {format_bytes(done)}{of} ({reason}). Download it "
        f"again to resume.{kept_note(partial, done)}",
        remedy="download",
        model=spec.name,
        url=weights_url(spec.name),
    )
