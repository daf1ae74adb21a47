"""Scanning a folder of labelled photos, and splitting it into training and validation sets.

Public API (the training loop, the CLI and the GUI rely on exactly this)::

    scan(folder, *, on_progress=None, cancel=None, max_pixels=images.MAX_PIXELS, min_side=MIN_SIDE,
         find_duplicates=True) -> DatasetReport
        Classes are the sub-folders of `folder` (photos in nested folders belong to their class folder and
        are reported in `nested_classes`). A folder holding a single folder is opened at the level of the
        classes ("The classes are in data/."). Top folders holding the same class folders are a split,
        whatever their names (train/ + test/, training_set/ + test_set/, seg_train/ + seg_test/, ...): see
        `_find_split`. Reads headers only; never writes anything into `folder`.
        Raises BitStudioError when `folder` does not exist or is a file, ScanCancelled when `cancel` is set.
        Everything else (damaged files, too few classes) is reported in the returned report.

    split(report, val_fraction=0.2, seed=0) -> Split
        The folder's own split as is when it has one; otherwise stratified and seeded (the same seed gives
        the same split on every machine), at least one validation photo per class that has two or more,
        exact duplicates kept on the same side; `round(total * val_fraction)` validation photos in all, so
        small classes may have none (`Split.classes_without_validation`). Raises BitStudioError when
        `report.errors` is not empty.

    check_folder(folder) -> str                   the absolute path, or BitStudioError (does not exist, ...)

    Sample(path: str, label: int)                 NamedTuple; `path` is relative to the dataset root,
                                                  '/'-separated; `label` indexes `classes`.
    DatasetReport                                 frozen dataclass
        root: str                                 the folder scanned (absolute)
        classes: tuple[str, ...]                  sorted class names; only classes with a usable photo
                                                  (in train/ when the folder has its own split)
        train: tuple[Sample, ...]                 every usable photo, or the train/ part of an on-disk split
        val: tuple[Sample, ...]                   the validation part(s) of an on-disk split; () without one
        split_dirs: tuple[str, ...] | None        the training folder, then the validation folder(s), relative
                                                  to root as spelled on disk, e.g. ("train", "val") or
                                                  ("data/seg_train/seg_train", "data/seg_test/seg_test");
                                                  None without
        counts: dict[str, tuple[int, ...]]        photos per class: {"train": (...)} (+ "val" with a split)
        skipped: tuple[SkippedFile, ...]          SkippedFile(path, reason, message); reasons: SKIP_REASONS;
                                                  by path, hidden files (reason "hidden") last
        median_size: tuple[int, int] | None       median (width, height) of the usable originals, for
                                                  `hyperrule.resolution`; None without usable photos
        imbalance: float | None                   photos in the largest class / in the smallest
        duplicates: tuple[DuplicateGroup, ...]    files with identical content (>= 2 paths per group)
        warnings: tuple[str, ...]                 plain-words messages a person should read
        errors: tuple[str, ...]                   plain-words reasons training cannot start
        files_seen: int                           regular files found (skipped ones included, hidden not)
        seconds: float                            how long the scan took
        layout_note: str                          where the classes were found, when not in the root itself:
                                                  "The classes are in data/." ("" otherwise)
        nested_classes: dict[str, tuple[str, ...]]  class -> sub-folders of its folder holding usable photos
        classes_without_validation: tuple[str, ...]  classes no validation photo can measure: none in the
                                                  on-disk validation folder(s), or (random split) one photo
        .notable_skipped -> the skipped entries worth reading (hidden litter left out); its length is the
        count every message gives
        .ok -> bool (no errors), .num_images -> int, .leaks -> duplicate groups spanning train and val,
        .path_of(sample) -> Path, .to_dict(include_samples=True) -> JSON-ready dict
    SkippedFile(path: str, reason: str, message: str)   NamedTuple; path relative to root ("." = root)
    DuplicateGroup(paths, labels, splits, size)   frozen; .crosses_split, .crosses_classes
    Split                                         frozen dataclass
        classes, train, val (as above), source: "disk" | "random", seed: int | None,
        val_fraction: float | None, root: str, .classes_without_validation -> tuple[str, ...]
        .to_json() -> str, Split.from_json(text) -> Split, .to_dict(), Split.from_dict(d),
        .path_of(sample, root=None) -> Path, .missing(root=None) -> list[str]
    ScanProgress(stage, files_done, files_total, current_path)   frozen; stage is "listing" (files_total
        None), "reading" or "comparing"; sent when a stage starts, at most every 0.1 s, and when it ends
    ScanCancelled(BitStudioError)                 raised by scan() when `cancel.is_set()`

Image decoding lives in `bit_engine.images`: `open_rgb(report.path_of(s))` gives the RGB pixels, and
`probe(path) -> ImageInfo` raises `ImageError` (with `.reason`, a key of `images.REASONS`) rather than
returning a reason, so both functions fail the same way.

How the scan decides:
    - Whether a file is a photo is decided by its content (Pillow's header check), not by its name: a
      text file called .jpg is skipped, a photo without an ending is kept. HEIC and camera RAW files are
      refused by name with a message saying what to do.
    - Hidden and system entries are skipped and listed, never warned about: names starting with a dot
      (.DS_Store, ._photo.jpg), Thumbs.db, desktop.ini, __MACOSX, $RECYCLE.BIN, @eaDir, ..., and on
      Windows entries with the hidden or system attribute.
    - Links are followed, each real folder (st_dev, st_ino) is read once: a link back into a folder being
      read is a "symlink_loop", a second link to a folder already read a "duplicate_link".
    - Class names are normalised to Unicode NFC (macOS writes decomposed names), and only ever used as
      labels: nothing is created from them.
    - Exact duplicates: only files whose size equals another usable file's size are hashed (BLAKE2b).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import stat
import statistics
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from types import MappingProxyType
from typing import NamedTuple, Protocol

from bit_engine import images
from bit_engine.errors import BitStudioError
from bit_engine.progress import OperationCancelled

#: Photos smaller than this on either side are skipped: there is nothing left to learn from them.
MIN_SIDE = 8

#: Fewer photos than this in a class earns a warning.
FEW_IMAGES = 5

#: A largest/smallest class ratio above this earns a warning.
IMBALANCE_WARNING = 10.0

#: `SkippedFile.reason` -> what it means, in plain words.
SKIP_REASONS = MappingProxyType(
    {
        **images.REASONS,
        "too_small": "the image is too small",
        "hidden": "a hidden or system file",
        "not_a_file": "not a regular file",
        "outside_class": "not inside a class folder",
        "symlink_loop": "a link that leads back into a folder already being read",
        "duplicate_link": "a link to a folder that was already read",
        "broken_link": "a link to something that does not exist",
        "bad_name": "a name that is not valid text",
        "no_train_class": "a validation class with no training folder",
        "unused_folder": "a folder that is not used",
    }
)

#: `SkippedFile.reason` -> a short label for counting ("damaged (cut off): 3").
SKIP_SHORT = MappingProxyType(
    {
        "missing": "gone",
        "empty": "empty file",
        "unreadable": "no permission to read",
        "not_an_image": "not a photo",
        "unsupported_format": "unsupported format (HEIC, RAW, ...)",
        "truncated": "damaged (cut off)",
        "corrupt": "damaged",
        "too_large": "too large",
        "too_small": "too small",
        "hidden": "hidden",
        "not_a_file": "not a regular file",
        "outside_class": "not in a class folder",
        "symlink_loop": "link that loops back",
        "duplicate_link": "link to a folder already read",
        "broken_link": "broken link",
        "bad_name": "name that is not valid text",
        "no_train_class": "validation class without training folder",
        "unused_folder": "unused folder",
    }
)

#: Skip reasons that are normal housekeeping, listed in the report but not worth a warning.
QUIET_REASONS = frozenset({"hidden"})

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
_HASH_CHUNK = 1 << 20


class _CancelFlag(Protocol):
    def is_set(self) -> bool: ...


class Sample(NamedTuple):
    path: str  # relative to the dataset root, '/'-separated
    label: int  # index into `classes`


class SkippedFile(NamedTuple):
    path: str  # relative to the dataset root, '/'-separated; "." for the root itself
    reason: str  # a key of SKIP_REASONS
    message: str  # what happened, in plain words


@dataclass(frozen=True)
class ScanProgress:
    stage: str  # "listing" (counting files), "reading" (headers), "comparing" (looking for duplicates)
    files_done: int
    files_total: int | None  # None while listing
    current_path: str  # relative to the root


class ScanCancelled(OperationCancelled):
    """The scan was stopped through its `cancel` flag; nothing was changed."""

    def __init__(self, message: str = "The scan of the folder was cancelled."):
        super().__init__(message)


@dataclass(frozen=True)
class DuplicateGroup:
    """Files with byte-for-byte identical content."""

    paths: tuple[str, ...]  # relative to the root, sorted
    labels: tuple[int, ...]  # the class of each path
    splits: tuple[str, ...]  # "train" or "val" for each path
    size: int  # bytes, of each

    @property
    def crosses_split(self) -> bool:
        """The same photo in training and validation: validation scores would be too optimistic."""
        return len(set(self.splits)) > 1

    @property
    def crosses_classes(self) -> bool:
        """The same photo under two labels: one of them is wrong."""
        return len(set(self.labels)) > 1


@dataclass(frozen=True)
class DatasetReport:
    """What `scan` found; see the module docstring for every field."""

    root: str
    classes: tuple[str, ...]
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    split_dirs: tuple[str, str] | None
    counts: dict[str, tuple[int, ...]]
    skipped: tuple[SkippedFile, ...]
    median_size: tuple[int, int] | None
    imbalance: float | None
    duplicates: tuple[DuplicateGroup, ...]
    warnings: tuple[str, ...]
    errors: tuple[str, ...]
    files_seen: int = 0
    seconds: float = 0.0
    layout_note: str = ""
    nested_classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    classes_without_validation: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def num_images(self) -> int:
        return len(self.train) + len(self.val)

    @property
    def notable_skipped(self) -> tuple[SkippedFile, ...]:
        """The skipped entries worth reading: hidden and system litter (.DS_Store, ...) left out."""
        return tuple(s for s in self.skipped if s.reason not in QUIET_REASONS)

    @property
    def leaks(self) -> tuple[DuplicateGroup, ...]:
        return tuple(g for g in self.duplicates if g.crosses_split)

    def path_of(self, sample: Sample) -> Path:
        return Path(self.root, *sample.path.split("/"))

    def to_dict(self, include_samples: bool = True) -> dict:
        d = {
            "root": self.root,
            "classes": list(self.classes),
            "split_dirs": list(self.split_dirs) if self.split_dirs else None,
            "counts": {k: list(v) for k, v in self.counts.items()},
            "num_images": self.num_images,
            "median_size": list(self.median_size) if self.median_size else None,
            "imbalance": self.imbalance,
            "warnings": list(self.warnings),
            "errors": list(self.errors),
            "skipped": [s._asdict() for s in self.skipped],
            "duplicates": [
                {"paths": list(g.paths), "labels": list(g.labels), "splits": list(g.splits), "size": g.size}
                for g in self.duplicates
            ],
            "files_seen": self.files_seen,
            "seconds": round(self.seconds, 3),
            "layout_note": self.layout_note,
            "nested_classes": {k: list(v) for k, v in self.nested_classes.items()},
            "classes_without_validation": list(self.classes_without_validation),
        }
        if include_samples:
            d["train"] = [list(s) for s in self.train]
            d["val"] = [list(s) for s in self.val]
        return d


@dataclass(frozen=True)
class Split:
    """The training and validation photos of one run; saved with the run so a resume uses the same ones."""

    classes: tuple[str, ...]
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    source: str  # "disk": the folder's own train/ and val/; "random": made by `split()`
    seed: int | None = None  # the seed of a "random" split
    val_fraction: float | None = None  # the fraction asked for, for a "random" split
    root: str = ""  # the dataset folder when the split was made (paths are relative to it)

    FORMAT = 1

    def path_of(self, sample: Sample, root: str | os.PathLike | None = None) -> Path:
        """The file of `sample`, under `root` (default: the folder the split was made from)."""
        return Path(root if root is not None else self.root, *sample.path.split("/"))

    @property
    def classes_without_validation(self) -> tuple[str, ...]:
        """Classes with no validation photo (too few photos for the share asked); () without validation."""
        if not self.val:
            return ()
        held = {s.label for s in self.val}
        return tuple(name for i, name in enumerate(self.classes) if i not in held)

    def missing(self, root: str | os.PathLike | None = None) -> list[str]:
        """Relative paths of this split's photos that are no longer on disk (check before a resume)."""
        return [s.path for s in (*self.train, *self.val) if not self.path_of(s, root).is_file()]

    def to_dict(self) -> dict:
        return {
            "format": self.FORMAT,
            "root": self.root,
            "classes": list(self.classes),
            "source": self.source,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "train": [list(s) for s in self.train],
            "val": [list(s) for s in self.val],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        try:
            if d.get("format") != cls.FORMAT:
                raise ValueError(f"unknown format {d.get('format')!r}")
            classes = tuple(str(c) for c in d["classes"])

            def samples(rows) -> tuple[Sample, ...]:
                out = tuple(Sample(str(p), int(label)) for p, label in rows)
                if any(not 0 <= s.label < len(classes) for s in out):
                    raise ValueError("a label is out of range")
                for s in out:
                    # Paths are relative to the data folder and must stay under it: a crafted split.json
                    # must not make a run read (or an export embed) files from anywhere else.
                    parts = s.path.replace("\\", "/").split("/")
                    if (
                        s.path.startswith("/")
                        or PureWindowsPath(s.path).drive
                        or ".." in parts
                        or "" in parts
                    ):
                        raise ValueError(f"the path {s.path!r} leads outside the data folder")
                return out

            return cls(
                classes=classes,
                train=samples(d["train"]),
                val=samples(d["val"]),
                source=str(d["source"]),
                seed=None if d.get("seed") is None else int(d["seed"]),
                val_fraction=None if d.get("val_fraction") is None else float(d["val_fraction"]),
                root=str(d.get("root", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BitStudioError(
                f"The saved training/validation split is damaged ({e}). Start a new run instead of resuming."
            ) from e

    @classmethod
    def from_json(cls, text: str) -> Split:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise BitStudioError(
                f"The saved training/validation split is damaged ({e}). Start a new run instead of resuming."
            ) from e
        if not isinstance(d, dict):
            raise BitStudioError("The saved training/validation split is damaged. Start a new run instead.")
        return cls.from_dict(d)


# -------------------------------------------------------------------------------------------------- scan


class _Candidate(NamedTuple):
    rel: str
    abs: str
    cls: str  # class name (NFC)
    part: str  # "train" or "val"
    size: int
    sub: str  # the sub-folder of the class folder it is in; "" when directly in the class folder


class _Progress:
    """Calls `on_progress` at most every `_PROGRESS_INTERVAL` seconds, and checks the cancel flag."""

    def __init__(self, on_progress: Callable[[ScanProgress], None] | None, cancel: _CancelFlag | None):
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


def _is_hidden(name: str, entry: os.DirEntry | None = None) -> bool:
    if name.startswith(".") or name.lower() in _SYSTEM_NAMES:
        return True
    if entry is not None and os.name == "nt":
        # Windows' own "hidden" and "system" attributes (FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM).
        try:
            return bool(getattr(entry.stat(follow_symlinks=False), "st_file_attributes", 0) & 0x6)
        except OSError:
            return False
    return False


def _valid_text(name: str) -> bool:
    # Undecodable bytes in a file name come back as lone surrogates; they could not be saved in JSON.
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _class_name(folder_name: str) -> str:
    # macOS hands out decomposed (NFD) names: "café" from a Mac and from Windows must be one class.
    return unicodedata.normalize("NFC", folder_name)


class _Walker:
    """Lists files below class folders, following links once and never looping."""

    def __init__(self, root: str, progress: _Progress):
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
            if not _valid_text(entry.name):
                self.skip(_printable(rel), "bad_name")
            elif _is_hidden(entry.name, entry):
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


def scan(
    folder: str | os.PathLike,
    *,
    on_progress: Callable[[ScanProgress], None] | None = None,
    cancel: _CancelFlag | None = None,
    max_pixels: int = images.MAX_PIXELS,
    min_side: int = MIN_SIDE,
    find_duplicates: bool = True,
) -> DatasetReport:
    """Look at every file below `folder` and report what can be trained on.

    Args:
        folder: a folder with one sub-folder per class, or with `train/` and `val/` holding those.
        on_progress: called with a `ScanProgress` at most every 0.1 s, from the calling thread.
        cancel: a `threading.Event`-like flag; checked between files. When set, `ScanCancelled` is raised
            (a partial report could be mistaken for the whole folder, so none is returned).
        max_pixels: images with more pixels (from the header) are skipped as too large.
        min_side: images narrower or lower than this are skipped as too small.
        find_duplicates: compare the content of files of equal size to find exact copies.

    Returns:
        A `DatasetReport`; `report.errors` says when it cannot be trained on.

    Raises:
        BitStudioError: `folder` does not exist, is a file, or cannot be opened.
        ScanCancelled: `cancel` was set.
    """
    started = time.monotonic()
    root = check_folder(folder)
    progress = _Progress(on_progress, cancel)
    walker = _Walker(root, progress)

    layout = _layout(walker)
    candidates: list[_Candidate] = []
    for part, class_dirs in layout.parts.items():
        for cls, folders in class_dirs.items():
            for abs_dir, rel_dir, st in folders:
                for abs_path, rel, size in walker.files_under(abs_dir, rel_dir, st, walker.ancestors):
                    sub, _, name = rel[len(rel_dir) + 1 :].partition("/")
                    candidates.append(_Candidate(rel, abs_path, cls, part, size, sub if name else ""))
    progress.tick("listing", walker.files_seen, None, "", force=True)

    # Read headers (the slow part: one open + two small reads per file).
    usable: list[tuple[_Candidate, images.ImageInfo]] = []
    total = len(candidates)
    for i, c in enumerate(candidates):
        progress.tick("reading", i, total, c.rel)
        try:
            info = images.probe(c.abs, max_pixels=max_pixels)
        except images.ImageError as e:
            walker.skip(c.rel, e.reason, e.detail)
            continue
        if info.width < min_side or info.height < min_side:
            walker.skip(
                c.rel,
                "too_small",
                f"the image is only {info.width} x {info.height} pixels; "
                f"photos need at least {min_side} pixels on each side",
            )
            continue
        usable.append((c, info))
    progress.tick("reading", total, total, "", force=True)

    return _report(root, layout, walker, usable, progress, find_duplicates, started)


def check_folder(folder: str | os.PathLike) -> str:
    """The absolute path of a folder that can be scanned: a quick check before announcing any work.

    Raises:
        BitStudioError: `folder` does not exist, is a file, or cannot be opened.
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    _check_root(root, folder)
    return root


def _check_root(root: str, given) -> None:
    hint = "Choose the folder that holds your photos, one sub-folder per class (for example cats/ and dogs/)."
    if not os.path.exists(root):
        raise BitStudioError(f"The folder {given} does not exist. {hint}")
    if not os.path.isdir(root):
        raise BitStudioError(f"{given} is a file, not a folder. {hint}")
    try:
        with os.scandir(root):
            pass
    except OSError as e:
        why = "no permission" if isinstance(e, PermissionError) else (e.strerror or str(e))
        raise BitStudioError(f"The folder {given} cannot be opened ({why}). {hint}") from e


@dataclass
class _Layout:
    # part ("train"/"val") -> class name -> folders [(abs, rel, stat)] (several folders when names differ only
    # in Unicode normalisation, or when several validation folders hold the class)
    parts: dict[str, dict[str, list]] = field(default_factory=dict)
    split_dirs: tuple[str, ...] | None = None  # the training folder, then the validation folder(s)
    loose_images: int = 0  # files next to the class folders (in the root, train/, val/, ...): in no class
    empty: bool = False  # nothing at all in the root (hidden files aside)
    note: str = ""  # where the classes were found, when that is not simply the root


class _Dir(NamedTuple):
    name: str
    abs: str
    rel: str
    st: os.stat_result


class _Part(NamedTuple):
    """A top folder that may be one part of a split, as seen by a quick look."""

    top: _Dir  # the folder next to the other parts (training_set/)
    holder: str  # relative path of the folder holding its class folders (training_set/training_set)
    classes: frozenset[str]  # names of the folders in `holder`


class _SplitPlan(NamedTuple):
    train: _Part
    vals: list[_Part]  # empty: `train` holds the classes and the other folders hold none
    unused: list[_Dir]


def _layout(walker: _Walker) -> _Layout:
    """Find the class folders, and whether the folder already holds a train/val split."""
    layout = _Layout()
    root_st = os.stat(walker.root)
    walker.ancestors = frozenset({(root_st.st_dev, root_st.st_ino)})
    walker.visited.add((root_st.st_dev, root_st.st_ino))
    dirs, files = _dirs_and_files(walker, walker.root, "")
    layout.empty = not dirs and not files
    layout.loose_images += _skip_loose(walker, files)

    # A folder holding a single folder (an unpacked archive: photos/dataset/cats, ...): open the level that
    # holds the classes. A single folder holding only photos stays a class (and the report says one is few).
    wrapper = ""
    for _ in range(_MAX_WRAPPERS):
        if len(dirs) != 1 or not _peek_dirs(dirs[0].abs):
            break
        wrapper = dirs[0].rel
        dirs = _open(walker, layout, dirs[0])

    plan = _find_split(dirs, walker.root)
    if plan is None:
        layout.parts["train"] = _class_folders(dirs)
        if wrapper:
            layout.note = f"The classes are in {wrapper}/."
        return layout

    for d in plan.unused:
        walker.skip(d.rel, "unused_folder", _unused_message(plan))
    layout.parts["train"] = _class_folders(_open_part(walker, layout, plan.train))
    if not plan.vals:
        others = _and([f"{d.rel}/" for d in plan.unused])
        layout.note = (
            f"The classes are in {plan.train.holder}/ ({others} "
            f"{'holds' if len(plan.unused) == 1 else 'hold'} no class folders and {_is(plan.unused)} not used)."
        )
        return layout
    val_dirs = [d for part in plan.vals for d in _open_part(walker, layout, part)]
    layout.parts["val"] = _class_folders(val_dirs)
    layout.split_dirs = (plan.train.holder, *(p.holder for p in plan.vals))
    vals = _and([f"{p.holder}/" for p in plan.vals])
    layout.note = f"The classes are in {plan.train.holder}/ (for training) and {vals} (for validation)."
    return layout


#: How many single folders in a row are opened to reach the classes (photos/archive/dataset/...).
_MAX_WRAPPERS = 4

# Words in a folder's name that say which part of a split it is ("seg_train", "Training", "test_set").
_TRAIN_WORDS = ("train",)
_VAL_WORDS = ("val", "test", "eval", "holdout")


def _looks_like(name: str, words: tuple[str, ...]) -> bool:
    return any(token.startswith(words) for token in re.findall(r"[a-z]+", name.lower()))


def _peek_dirs(abs_dir: str) -> list[tuple[str, str]]:
    """(name, abs path) of the visible sub-folders of a folder, sorted; [] when it cannot be read.

    A quick look to decide the layout: nothing is recorded, and `DirEntry.is_dir` needs no stat on most
    systems. The folders chosen are then listed for real, which reports what is wrong in them.
    """
    try:
        with os.scandir(abs_dir) as it:
            found = [
                (e.name, e.path)
                for e in it
                if _valid_text(e.name) and not _is_hidden(e.name, e) and _is_dir_entry(e)
            ]
    except OSError:
        return []
    return sorted(found)


def _is_dir_entry(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False


def _peek_part(d: _Dir) -> _Part:
    holder, subs = d.rel, _peek_dirs(d.abs)
    # Archives often repeat the folder (training_set/training_set/cats): look through single folders.
    for _ in range(_MAX_WRAPPERS):
        if len(subs) != 1:
            break
        inner = _peek_dirs(subs[0][1])
        if not inner:
            break
        holder, subs = f"{holder}/{subs[0][0]}", inner
    return _Part(d, holder, frozenset(_class_name(name) for name, _ in subs))


def _peek_size(part: _Part, root: str) -> int:
    """Entries in the class folders of a part (one level down): enough to tell which part is the largest."""
    total = 0
    for _, abs_dir in _peek_dirs(os.path.join(root, *part.holder.split("/"))):
        with contextlib.suppress(OSError), os.scandir(abs_dir) as it:
            total += sum(1 for _ in it)
    return total


def _find_split(dirs: list[_Dir], root: str) -> _SplitPlan | None:
    """Whether the top folders are the parts of a split, recognised by what they hold, not by their names.

    Top folders holding the same class folders are a split: the one named like training ("train",
    "training_set", "seg_train", ...) trains, or else the largest; the others validate. Without a training
    name two shared class folders are needed, so that two classes with an album folder each (cats/2023,
    dogs/2023) are not taken for a split. A training folder with class folders next to folders without any
    (a competition's unlabelled test/ photos) holds the classes on its own.
    """
    if not dirs:
        return None
    parts = [_peek_part(d) for d in dirs]
    with_classes = [p for p in parts if p.classes]
    trainish = [p for p in with_classes if _looks_like(p.top.name, _TRAIN_WORDS)]
    if len(with_classes) == 1 and trainish and len(parts) > 1:
        return _SplitPlan(trainish[0], [], [p.top for p in parts if p is not trainish[0]])
    if len(with_classes) < 2:
        return None
    if trainish:
        exact = [p for p in trainish if p.top.name.lower() == "train"]
        train = exact[0] if exact else max(trainish, key=lambda p: _peek_size(p, root))
    else:
        train = max(with_classes, key=lambda p: _peek_size(p, root))
    vals = []
    for p in with_classes:
        if p is train:
            continue
        common = len(p.classes & train.classes)
        named = bool(trainish) and _looks_like(p.top.name, _VAL_WORDS)
        if common >= (1 if named else 2) and 2 * common >= len(p.classes):
            vals.append(p)
    if not vals:
        return None
    taken = {train.top.rel, *(p.top.rel for p in vals)}
    return _SplitPlan(train, vals, [p.top for p in parts if p.top.rel not in taken])


def _unused_message(plan: _SplitPlan) -> str:
    if not plan.vals:
        return f"not used: it holds no class folders (the classes are in {plan.train.holder}/)"
    used = _and([f"{p.holder}/" for p in (plan.train, *plan.vals)])
    return f"not used: the photos come from {used}"


def _open(walker: _Walker, layout: _Layout, d: _Dir) -> list[_Dir]:
    """List a folder above the class folders for real: its files are in no class, links back to it loop."""
    key = (d.st.st_dev, d.st.st_ino)
    walker.visited.add(key)
    walker.ancestors |= {key}
    dirs, files = _dirs_and_files(walker, d.abs, d.rel)
    layout.loose_images += _skip_loose(walker, files)
    return dirs


def _open_part(walker: _Walker, layout: _Layout, part: _Part) -> list[_Dir]:
    """The class folders of a part, opening the single folders above them as the quick look did."""
    d = part.top
    while True:
        dirs = _open(walker, layout, d)
        inner = next((x for x in dirs if part.holder.startswith(x.rel + "/") or part.holder == x.rel), None)
        if d.rel == part.holder or inner is None:
            return dirs
        d = inner


def _dirs_and_files(walker: _Walker, abs_dir: str, rel_dir: str) -> tuple[list[_Dir], list[str]]:
    dirs, files = [], []
    for entry, rel in walker.entries(abs_dir, rel_dir):
        kind, st = walker.kind(entry, rel)
        if kind == "dir":
            dirs.append(_Dir(entry.name, entry.path, rel, st))
        elif kind == "file":
            walker.files_seen += 1
            files.append(rel)
    return dirs, files


def _skip_loose(walker: _Walker, files: list[str]) -> int:
    for rel in files:
        walker.skip(rel, "outside_class", "not inside a class folder, so it has no class")
    return len(files)


def _class_folders(dirs: list[_Dir]) -> dict[str, list]:
    classes: dict[str, list] = defaultdict(list)
    for name, abs_path, rel, st in dirs:
        classes[_class_name(name)].append((abs_path, rel, st))
    return dict(sorted(classes.items()))


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _is(items: Sequence) -> str:
    return "is" if len(items) == 1 else "are"


# ------------------------------------------------------------------------------------------------ report


def _report(root, layout, walker, usable, progress, find_duplicates, started) -> DatasetReport:
    warnings: list[str] = []
    errors: list[str] = []

    train_classes = sorted({c.cls for c, _ in usable if c.part == "train"})
    label = {name: i for i, name in enumerate(train_classes)}
    samples: dict[str, list[Sample]] = {"train": [], "val": []}
    kept: list[tuple[_Candidate, images.ImageInfo]] = []
    for c, info in usable:
        if c.cls not in label:
            # Only possible in val/: a class the model would never be trained on.
            walker.skip(
                c.rel, "no_train_class", f"its class {c.cls!r} has no folder (or no usable photo) in train/"
            )
            continue
        samples[c.part].append(Sample(c.rel, label[c.cls]))
        kept.append((c, info))

    parts = ["train", "val"] if layout.split_dirs else ["train"]
    counts = {}
    for p in parts:
        per_label = Counter(s.label for s in samples[p])
        counts[p] = tuple(per_label[i] for i in range(len(train_classes)))
    totals = [sum(counts[p][i] for p in parts) for i in range(len(train_classes))]

    median_size = None
    if kept:
        median_size = (
            statistics.median_low(info.width for _, info in kept),
            statistics.median_low(info.height for _, info in kept),
        )
    imbalance = (max(totals) / min(totals)) if totals else None

    duplicates = _find_duplicates(kept, label, progress) if find_duplicates else ()

    # ---- errors: training cannot start
    if layout.empty:
        errors.append(
            "The folder is empty. Put your photos in it, one sub-folder per class "
            "(for example cats/ and dogs/)."
        )
    elif not layout.parts.get("train") and layout.loose_images:
        errors.append(
            f"The folder holds {_count(layout.loose_images, 'file')} but no class sub-folders. "
            "Make one sub-folder per class (for example cats/ and dogs/) and move each photo into its class."
        )
    elif len(train_classes) == 0:
        errors.append(
            "No usable photos were found. "
            + (_skip_summary(walker.skipped) or "Each class sub-folder needs photos (JPEG, PNG, ...).")
        )
    elif len(train_classes) == 1:
        errors.append(
            f"Only one class has usable photos ({train_classes[0]!r}). A classifier needs at least two "
            "classes: add another sub-folder with photos of a different kind."
        )

    # ---- warnings: training can start, but a person should know
    leaks = [g for g in duplicates if g.crosses_split]
    if leaks:
        copies = sum(len(g.paths) - 1 for g in leaks)
        warnings.append(
            f"{_count(copies, 'validation photo')} {_are(copies)} {_copies(copies)} of training photos "
            f"(for example {_pair(leaks[0])}). Validation scores will look better than they really are: "
            "remove the copies from one of the two folders."
        )
    conflicts = [g for g in duplicates if g.crosses_classes]
    if conflicts:
        warnings.append(
            f"{_count(len(conflicts), 'photo')} {'appears' if len(conflicts) == 1 else 'appear'} in more "
            f"than one class (for example {_pair(conflicts[0])}). A photo can only be of one class: "
            "keep it in the right folder and delete the other copy."
        )
    for part, class_dirs in layout.parts.items():
        for name in class_dirs:
            if part == "train" and name not in label:
                where = f"{layout.split_dirs[0]}/{name}" if layout.split_dirs else class_dirs[name][0][1]
                warnings.append(f"The folder {where!r} has no usable photo, so that class is left out.")
    nested = _nested_classes(kept)
    if nested:
        listed = "; ".join(
            f"{name!r} ({', '.join(f'{s}/' for s in subs[:3])}{', ...' if len(subs) > 3 else ''})"
            for name, subs in nested.items()
        )
        warnings.append(
            f"Some class folders keep photos in sub-folders, which count for the class above them: {listed}. "
            "If those sub-folders are classes of their own, move them up one level."
        )
    if layout.split_dirs:
        train_name, *val_names = layout.split_dirs
        val_where = _and([f"{v}/" for v in val_names])
        no_val = tuple(train_classes[i] for i, n in enumerate(counts["val"]) if n == 0)
        if no_val:
            warnings.append(
                f"No validation photos for {_names(no_val)} in {val_where}: "
                f"{'its' if len(no_val) == 1 else 'their'} accuracy cannot be measured."
            )
        extra = sorted(set(layout.parts["val"]) - set(label))
        if extra:
            warnings.append(
                f"{_names(extra)} in {val_where} {'has' if len(extra) == 1 else 'have'} no training "
                f"photos in {train_name}/, so {'it is' if len(extra) == 1 else 'they are'} left out."
            )
    else:
        no_val = _single_photo_classes(samples["train"], duplicates, train_classes)
        if no_val and len(train_classes) >= 2:
            warnings.append(
                f"{_names(no_val)} {'has' if len(no_val) == 1 else 'have'} a single photo (or copies of one), "
                f"so none can be held out to validate {'it' if len(no_val) == 1 else 'them'}: "
                f"{'its' if len(no_val) == 1 else 'their'} accuracy cannot be measured. Add photos if you can."
            )
    few = [(name, totals[i]) for i, name in enumerate(train_classes) if totals[i] < FEW_IMAGES]
    if few and len(train_classes) >= 2:
        listed = ", ".join(f"{name!r} ({n})" for name, n in few)
        warnings.append(
            f"Some classes have fewer than {FEW_IMAGES} photos: {listed}. "
            "The model will learn them poorly; add photos if you can."
        )
    if imbalance is not None and imbalance > IMBALANCE_WARNING and len(train_classes) >= 2:
        big = train_classes[totals.index(max(totals))]
        small = train_classes[totals.index(min(totals))]
        warnings.append(
            f"The classes are unbalanced: {big!r} has {max(totals)} photos and {small!r} only {min(totals)} "
            f"({imbalance:.0f} to 1). The model may favour the large classes; add photos to the small "
            "ones if you can."
        )
    plain = [g for g in duplicates if not g.crosses_split and not g.crosses_classes]
    if plain:
        copies = sum(len(g.paths) - 1 for g in plain)
        warnings.append(
            f"{_count(copies, 'photo')} {_are(copies)} {_copies(copies)} of other photos in the same class "
            f"(for example {_pair(plain[0])}). Copies add nothing; they are harmless but can be deleted."
        )
    summary = _skip_summary(walker.skipped)
    if summary and len(train_classes) >= 1:
        warnings.append(summary + " See the list of skipped files for details.")

    return DatasetReport(
        root=root,
        classes=tuple(train_classes),
        train=tuple(samples["train"]),
        val=tuple(samples["val"]),
        split_dirs=layout.split_dirs,
        counts=counts,
        # The ones worth reading first; hidden litter (.DS_Store, ...) last.
        skipped=tuple(sorted(walker.skipped, key=lambda s: (s.reason in QUIET_REASONS, s.path))),
        median_size=median_size,
        imbalance=imbalance,
        duplicates=tuple(duplicates),
        warnings=tuple(warnings),
        errors=tuple(errors),
        files_seen=walker.files_seen,
        seconds=time.monotonic() - started,
        layout_note=layout.note,
        nested_classes=nested,
        classes_without_validation=no_val,
    )


def _nested_classes(kept) -> dict[str, tuple[str, ...]]:
    """Class name -> the sub-folders of its class folder(s) that hold usable photos."""
    subs: dict[str, set[str]] = defaultdict(set)
    for c, _ in kept:
        if c.sub:
            subs[c.cls].add(c.sub)
    return {name: tuple(sorted(found)) for name, found in sorted(subs.items())}


def _single_photo_classes(samples, duplicates, classes) -> tuple[str, ...]:
    """Classes whose photos are one photo, or copies of one: a random split cannot validate them."""
    group_of = {p: gid for gid, g in enumerate(duplicates) for p in g.paths}
    units: dict[int, set] = defaultdict(set)
    for s in samples:
        units[s.label].add(group_of.get(s.path, s.path))
    return tuple(name for i, name in enumerate(classes) if len(units[i]) == 1)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _are(n: int) -> str:
    return "is an" if n == 1 else "are"


def _copies(n: int) -> str:
    return "exact copy" if n == 1 else "exact copies"


def _names(names: Sequence[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _pair(group: DuplicateGroup) -> str:
    return f"{group.paths[0]} and {group.paths[1]}"


def _skip_summary(skipped: Sequence[SkippedFile]) -> str:
    counted: dict[str, int] = defaultdict(int)
    for s in skipped:
        if s.reason not in QUIET_REASONS:
            counted[s.reason] += 1
    if not counted:
        return ""
    n = sum(counted.values())
    parts = ", ".join(f"{SKIP_SHORT[r]}: {k}" for r, k in sorted(counted.items(), key=lambda kv: -kv[1]))
    return f"{n} {'item was' if n == 1 else 'items were'} skipped ({parts})."


def _find_duplicates(kept, label, progress: _Progress) -> list[DuplicateGroup]:
    """Groups of identical files. Only files whose size matches another's are read (sizes rarely collide)."""
    by_size: dict[int, list[_Candidate]] = defaultdict(list)
    for c, _ in kept:
        by_size[c.size].append(c)
    to_hash = [c for group in by_size.values() if len(group) > 1 for c in group]
    by_digest: dict[tuple[int, bytes], list[_Candidate]] = defaultdict(list)
    for i, c in enumerate(to_hash):
        progress.tick("comparing", i, len(to_hash), c.rel)
        digest = _digest(c.abs)
        if digest is not None:
            by_digest[(c.size, digest)].append(c)
    if to_hash:
        progress.tick("comparing", len(to_hash), len(to_hash), "", force=True)
    groups = []
    for (size, _), members in by_digest.items():
        if len(members) > 1:
            members.sort(key=lambda c: c.rel)
            groups.append(
                DuplicateGroup(
                    paths=tuple(c.rel for c in members),
                    labels=tuple(label[c.cls] for c in members),
                    splits=tuple(c.part for c in members),
                    size=size,
                )
            )
    groups.sort(key=lambda g: g.paths)
    return groups


def _digest(path: str) -> bytes | None:
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                h.update(chunk)
    except OSError:
        return None  # it was readable a moment ago; a vanished file is simply not a duplicate
    return h.digest()


# ------------------------------------------------------------------------------------------------- split


def split(report: DatasetReport, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Training and validation photos for a run.

    When the folder holds its own split (`report.split_dirs`), it is returned as is. Otherwise each class
    is split on its own (stratified): its photos sorted by path, shuffled by `random.Random(seed)`, and its
    share of the `round(total * val_fraction)` validation photos held out (see `_val_quota`: never all of a
    class; a class too small for a photo of its own is named by `Split.classes_without_validation`).
    Sorting first and a seeded generator make the split the same on every machine and Python version.
    Exact duplicates within a class move together, so the same photo is never on both sides.

    Args:
        report: a scan without errors.
        val_fraction: the share of each class held out for validation, in [0, 1). 0 gives no validation.
        seed: any integer; the same seed gives the same split.

    Raises:
        BitStudioError: the report has errors, or `val_fraction` is out of range.
    """
    if report.errors:
        raise BitStudioError(report.errors[0])
    if report.split_dirs is not None:
        return Split(report.classes, report.train, report.val, "disk", None, None, report.root)
    if not 0.0 <= val_fraction < 1.0:
        raise BitStudioError(
            "The validation share must be at least 0 and below 1 (for example 0.2 for 20%), "
            f"not {val_fraction}."
        )

    # Duplicates travel as one unit: otherwise the copy of a training photo could be validated on.
    group_of: dict[str, int] = {}
    for gid, group in enumerate(report.duplicates):
        for p in group.paths:
            group_of[p] = gid

    rng = random.Random(seed)
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in report.train:
        by_class[s.label].append(s)
    orders: dict[int, list[list[Sample]]] = {}
    for label in range(len(report.classes)):
        units: dict[object, list[Sample]] = {}
        for s in sorted(by_class[label], key=lambda s: s.path):
            units.setdefault(group_of.get(s.path, s.path), []).append(s)
        orders[label] = list(units.values())  # insertion order: by first path, i.e. sorted
        rng.shuffle(orders[label])
    quota = _val_quota({label: len(by_class[label]) for label in orders}, val_fraction, rng)

    train: list[Sample] = []
    val: list[Sample] = []
    for label, order in orders.items():
        taken = 0
        for i, unit in enumerate(order):
            # Stop before the last unit: every class keeps at least one training photo.
            if taken < quota[label] and i < len(order) - 1:
                val.extend(unit)
                taken += len(unit)
            else:
                train.extend(unit)
    train.sort(key=lambda s: s.path)
    val.sort(key=lambda s: s.path)
    return Split(report.classes, tuple(train), tuple(val), "random", seed, val_fraction, report.root)


def _val_quota(sizes: dict[int, int], fraction: float, rng: random.Random) -> dict[int, int]:
    """Validation photos per class: `round(total * fraction)` in all, each class near its own share.

    Each class first gets its share rounded down; the photos left over go first to classes that would
    otherwise have none (so that as many classes as possible are measured), then to the largest remainders,
    ties broken by `rng`. No class gives all its photos. The total stays at the fraction asked for: small
    classes do not each take one photo on top (at 0.2, fifteen classes of 3 photos hold out 9, not 15).
    """
    total = sum(sizes.values())
    if fraction <= 0 or total < 2:
        return dict.fromkeys(sizes, 0)
    want = max(1, int(total * fraction + 0.5))
    quota = {label: min(int(n * fraction), max(n - 1, 0)) for label, n in sizes.items()}
    tie = {label: rng.random() for label in sizes}
    left = want - sum(quota.values())
    while left > 0:
        open_ = [label for label, n in sizes.items() if quota[label] < n - 1]
        if not open_:
            break
        open_.sort(key=lambda lb: (quota[lb] > 0, -(sizes[lb] * fraction - quota[lb]), tie[lb]))
        for label in open_[:left]:
            quota[label] += 1
        left = want - sum(quota.values())
    return quota
