"""Thumbnails decoded off the GUI thread, through the engine's decoder (EXIF orientation, odd formats).

Decoding a camera JPEG takes tens of milliseconds; a gallery of a few hundred would freeze the window for
seconds. A `ThumbnailLoader` decodes on a small thread pool of its own and hands back `QImage`s (which, unlike
`QPixmap`s, may be made outside the GUI thread) by a queued signal.
"""

from __future__ import annotations

import os
import threading

from PIL import Image
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from bit_engine.errors import BitStudioError
from bit_engine.images import open_rgb


def pil_to_qimage(image: Image.Image) -> QImage:
    """An RGB PIL image as a QImage that owns its pixels (safe to keep after `image` is gone)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    data = rgb.tobytes()
    qimage = QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888)
    return qimage.copy()  # detach from `data`, which Python frees


def decode_thumbnail(path: str | os.PathLike, size: int) -> QImage:
    """The photo at `path` shrunk to fit `size` x `size` (aspect ratio kept), upright.

    Raises:
        ImageError: the file is not a readable image.
    """
    image = open_rgb(path, draft_size=(size, size))
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
    return pil_to_qimage(image)


class _Job(QRunnable):
    def __init__(self, loader: ThumbnailLoader, path: str, size: int):
        super().__init__()
        self._loader, self._path, self._size = loader, path, size

    def run(self) -> None:
        if self._loader._closed.is_set():
            return
        try:
            image = decode_thumbnail(self._path, self._size)
        except BitStudioError as exc:
            self._loader.failed.emit(self._path, str(exc))
            return
        except Exception as exc:  # a decoder bug must not kill the pool thread; the tile says so instead
            self._loader.failed.emit(self._path, f"{type(exc).__name__}: {exc}")
            return
        self._loader.loaded.emit(self._path, image)


class ThumbnailLoader(QObject):
    """Decodes thumbnails on its own thread pool; each path is asked for at most once until `clear`.

    Args:
        size: the longest side of a thumbnail, in pixels.
        threads: decoding threads (small: the GUI and onnxruntime share the same cores).

    Signals:
        loaded(str, QImage): the thumbnail of a path.
        failed(str, str): a path that could not be decoded, and why.
    """

    loaded = Signal(str, QImage)
    failed = Signal(str, str)

    def __init__(self, size: int = 128, threads: int = 2, parent: QObject | None = None):
        super().__init__(parent)
        self.size = size
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, threads))
        self._requested: set[str] = set()
        self._closed = threading.Event()

    def request(self, path: str) -> None:
        """Decode `path` unless it was asked for already."""
        if path in self._requested or self._closed.is_set():
            return
        self._requested.add(path)
        self._pool.start(_Job(self, path, self.size))

    def forget(self, path: str) -> None:
        """Let `path` be asked for again (its thumbnail was dropped from a cache)."""
        self._requested.discard(path)

    def clear(self) -> None:
        """Forget pending requests (queued jobs are dropped; running ones finish)."""
        self._pool.clear()
        self._requested.clear()

    def shutdown(self, ms: int = 10000) -> bool:
        """Stop taking requests and wait for the running decodes; True when all ended in time."""
        self._closed.set()
        self._pool.clear()
        return self._pool.waitForDone(ms)
