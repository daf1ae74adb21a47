"""Small previews of photos, decoded in the background and kept in memory.

Decoding a 12-megapixel JPEG takes long enough to stutter a window, so the GUI thread never does it: a
Worker opens each photo with Pillow's `draft` (the JPEG decoder then reads a reduced scale directly, several
times faster) and `thumbnail`, and hands back raw RGB bytes. Requests are served one batch at a time, in the
order asked for, so the rows on screen first fill first; a batch that is no longer wanted is dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from app.workers import Worker

#: Side of the square a thumbnail fits in, in pixels.
THUMB_SIZE = 64

#: Photos decoded per background job: small enough that a new request does not wait long.
_BATCH = 8


def decode_thumbnail(path: str, size: int = THUMB_SIZE) -> tuple[int, int, bytes] | None:
    """(width, height, RGB bytes) of a thumbnail of `path` fitting `size`x`size`; None if it cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a reduced scale, a no-op for others
            img = ImageOps.exif_transpose(img)
            img.thumbnail((size, size))
            rgb = img.convert("RGB")
            return rgb.width, rgb.height, rgb.tobytes()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


class ThumbnailCache(QObject):
    """Thumbnails by file path, decoded on request in the background.

    Signals:
        ready(str): the thumbnail of this path is now in the cache (or could not be made: `get` stays None).
    """

    ready = Signal(str)

    def __init__(self, parent: QObject | None = None, size: int = THUMB_SIZE):
        super().__init__(parent)
        self.size = size
        self._images: dict[str, QImage | None] = {}
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._worker: Worker | None = None
        self._stopped = False

    def get(self, path: str) -> QImage | None:
        """The thumbnail of `path` if it is decoded; None otherwise (request it first)."""
        return self._images.get(path)

    def has(self, path: str) -> bool:
        return path in self._images

    def request(self, paths: Iterable[str]) -> None:
        """Decode these paths (those not cached or queued yet), after what was already asked for."""
        for path in paths:
            if path not in self._images and path not in self._queued:
                self._queue.append(path)
                self._queued.add(path)
        self._next()

    def clear_queue(self) -> None:
        """Forget what was requested and not yet started (a new folder was opened)."""
        self._queue.clear()
        self._queued.clear()

    def pending(self) -> int:
        return len(self._queue) + (1 if self._worker is not None else 0)

    def shutdown(self) -> None:
        """Stop decoding and wait for the batch in progress."""
        self._stopped = True
        self.clear_queue()
        if self._worker is not None:
            self._worker.cancel()
            self._worker.wait()

    def _next(self) -> None:
        if self._worker is not None or not self._queue or self._stopped:
            return
        batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
        size = self.size

        def decode(on_progress, cancel):
            out = []
            for path in batch:
                if cancel.is_set():
                    break
                out.append((path, decode_thumbnail(path, size)))
            return out

        self._worker = Worker(decode, self, name="thumbnails")
        self._worker.succeeded.connect(self._on_decoded)
        self._worker.done.connect(self._on_batch_done)
        self._worker.start()

    def _on_decoded(self, results: list) -> None:
        for path, decoded in results:
            self._queued.discard(path)
            if decoded is None:
                self._images[path] = None
            else:
                w, h, data = decoded
                # copy(): the QImage must own its pixels, not borrow the Python bytes object.
                self._images[path] = QImage(data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
            self.ready.emit(path)

    def _on_batch_done(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.deleteLater()
        self._next()
