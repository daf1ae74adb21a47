"""Reading a photo folder without surprises: the listing that the scan and the layout detection share.

`Walker` lists folders in name order and records every entry it does not use as a `SkippedFile`:
    - hidden and system entries, skipped and listed, never warned about: names starting with a dot
      (.DS_Store, ._photo.jpg), Thumbs.db, desktop.ini, __MACOSX, $RECYCLE.BIN, @eaDir, ..., and on Windows
      entries with the hidden or system attribute (`is_hidden`);
    - names that are not valid text (undecodable bytes), which could not be saved in a report;
    - links are followed, each real folder (st_dev, st_ino) is read once: a link back into a folder being
      read is a "symlink_loop", a second link to a folder already read a "duplicate_link"; broken links,
      sockets and devices are named as such.
Class names are normalised to Unicode NFC (`class_name`: macOS writes decomposed names), and only ever used as
labels: nothing is created from them.

`ScanTicker` is the scan's progress and cancel check: it sends a `ScanProgress` at most every 0.1 s (and at
every change of stage) and raises `ScanCancelled` once the cancel flag is set.
"""

from __future__ import annotations

import errno
import os
import stat
import time
import unicodedata
from collections.abc import Callable

from bit_engine.dataset import SKIP_REASONS, ScanCancelled, ScanProgress, SkippedFile
from bit_engine.progress import CancelFlag

# Operating-system litter, compared lower-case. Dotfiles (".DS_Store", "._photo.jpg") are caught by the dot.
_SYSTEM_NAMES = frozenset(
    {
        "thumbs.db",
        "ehthumbs.db",
        "ehthumbs_vista.db",
        "desktop.ini",
        "icon\r",
        "__macosx",
        "$recycle.bin",
        "system volume information",
        "@eadir",
        "lost+found",
    }
)

_PROGRESS_INTERVAL = 0.1  # seconds between progress callbacks: a human rate, and cheap


class ScanTicker:
    """Calls `on_progress` at most every `_PROGRESS_INTERVAL` seconds, and checks the cancel flag."""

    def __init__(self, on_progress: Callable[[ScanProgress], None] | None, cancel: CancelFlag | None):
        self.on_progress = on_progress
        self.cancel = cancel
        self._last = 0.0
        self._stage = ""

    def tick(self, stage: str, done: int, total: int | None, current: str, force: bool = False) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise ScanCancelled()
        if self.on_progress is None:
            return
        now = time.monotonic()
        # A new stage is always announced, so a progress bar can switch its label at once.
        if force or stage != self._stage or now - self._last >= _PROGRESS_INTERVAL:
            self._last, self._stage = now, stage
            self.on_progress(ScanProgress(stage, done, total, current))


def is_hidden(name: str, entry: os.DirEntry | None = None) -> bool:
    if name.startswith(".") or name.lower() in _SYSTEM_NAMES:
        return True
    if entry is not None and os.name == "nt":
        # Windows' own "hidden" and "system" attributes (FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM).
        try:
            return bool(getattr(entry.stat(follow_symlinks=False), "st_file_attributes", 0) & 0x6)
        except OSError:
            return False
    return False


def valid_text(name: str) -> bool:
    # Undecodable bytes in a file name come back as lone surrogates; they could not be saved in JSON.
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def class_name(folder_name: str) -> str:
    # macOS hands out decomposed (NFD) names: "café" from a Mac and from Windows must be one class.
    return unicodedata.normalize("NFC", folder_name)


class Walker:
    """Lists files below class folders, following links once and never looping."""

    def __init__(self, root: str, progress: ScanTicker):
        self.root = root
        self.progress = progress
        self.skipped: list[SkippedFile] = []
        self.visited: set[tuple[int, int]] = set()
        # Folders above every class folder (the root; train/ and val/): a link to one of them is a loop.
        self.ancestors: frozenset[tuple[int, int]] = frozenset()
        self.files_seen = 0

    def skip(self, rel: str, reason: str, message: str | None = None) -> None:
        self.skipped.append(SkippedFile(rel, reason, message or SKIP_REASONS[reason]))

    def entries(self, abs_dir: str, rel_dir: str) -> list[tuple[os.DirEntry, str]]:
        """Sorted (entry, relative path) of a folder, hidden, badly named and unreadable ones skipped."""
        try:
            with os.scandir(abs_dir) as it:
                found = sorted(it, key=lambda e: e.name)
        except PermissionError:
            self.skip(rel_dir or ".", "unreadable", "a folder that cannot be opened (no permission)")
            return []
        except OSError as e:
            self.skip(rel_dir or ".", "unreadable", f"a folder that cannot be read ({e.strerror or e})")
            return []
        out = []
        for entry in found:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if not valid_text(entry.name):
                self.skip(_printable(rel), "bad_name")
            elif is_hidden(entry.name, entry):
                self.skip(rel, "hidden")
            else:
                out.append((entry, rel))
        return out

    def kind(self, entry: os.DirEntry, rel: str) -> tuple[str, os.stat_result | None]:
        """("dir" | "file" | "", stat) of an entry, following a link; "" after reporting a skip."""
        try:
            st = entry.stat()  # follows links
        except FileNotFoundError:
            self.skip(rel, "broken_link" if entry.is_symlink() else "missing")
            return "", None
        except OSError as e:
            if entry.is_symlink():
                self.skip(rel, "symlink_loop" if e.errno == errno.ELOOP else "broken_link")
            else:
                self.skip(rel, "unreadable")
            return "", None
        if stat.S_ISDIR(st.st_mode):
            return "dir", st
        if stat.S_ISREG(st.st_mode):
            return "file", st
        self.skip(rel, "not_a_file")
        return "", None

    def files_under(self, abs_dir: str, rel_dir: str, st: os.stat_result, ancestors: frozenset) -> list:
        """Every regular file below a folder as (abs, rel, size), depth first, in name order."""
        out: list[tuple[str, str, int]] = []
        key = (st.st_dev, st.st_ino)
        if key in self.visited:
            self.skip(rel_dir, "symlink_loop" if key in ancestors else "duplicate_link")
            return out
        self.visited.add(key)
        stack = [(abs_dir, rel_dir, ancestors | {key})]
        while stack:
            d_abs, d_rel, anc = stack.pop()
            self.progress.tick("listing", self.files_seen, None, d_rel)
            subdirs = []
            for entry, rel in self.entries(d_abs, d_rel):
                kind, est = self.kind(entry, rel)
                if kind == "file":
                    self.files_seen += 1
                    out.append((entry.path, rel, est.st_size))
                elif kind == "dir":
                    k = (est.st_dev, est.st_ino)
                    if k in self.visited:
                        self.skip(rel, "symlink_loop" if k in anc else "duplicate_link")
                        continue
                    self.visited.add(k)
                    subdirs.append((entry.path, rel, anc | {k}))
            stack.extend(reversed(subdirs))  # popped in name order
        return out


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
