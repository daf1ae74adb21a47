"""Scanning a folder of labelled photos, and splitting it into training and validation sets.

Public API (the training loop, the CLI and the GUI rely on exactly this)::

    scan(folder, *, on_progress=None, cancel=None, max_pixels=images.MAX_PIXELS, min_side=MIN_SIDE,
         find_duplicates=True) -> DatasetReport
        Classes are the sub-folders of `folder` (photos in nested folders belong to their top folder). A
        folder holding `train/` plus `val/`, `valid/`, `validation/` or `test/` (any case) with the same
        class folders is used as that split. Reads headers only; never writes anything into `folder`.
        Raises BitStudioError when `folder` does not exist or is a file, ScanCancelled when `cancel` is set.
        Everything else (damaged files, too few classes) is reported in the returned report.

    split(report, val_fraction=0.2, seed=0) -> Split
        The folder's own split as is when it has one; otherwise stratified and seeded (the same seed gives
        the same split on every machine), at least one validation photo per class that has two or more,
        exact duplicates kept on the same side. Raises BitStudioError when `report.errors` is not empty.

    Sample(path: str, label: int)                 NamedTuple; `path` is relative to the dataset root,
                                                  '/'-separated; `label` indexes `classes`.
    DatasetReport                                 frozen dataclass
        root: str                                 the folder scanned (absolute)
        classes: tuple[str, ...]                  sorted class names; only classes with a usable photo
                                                  (in train/ when the folder has its own split)
        train: tuple[Sample, ...]                 every usable photo, or the train/ part of an on-disk split
        val: tuple[Sample, ...]                   the validation part of an on-disk split; () without one
        split_dirs: tuple[str, str] | None        e.g. ("train", "val") as spelled on disk; None without
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
        .ok -> bool (no errors), .num_images -> int, .leaks -> duplicate groups spanning train and val,
        .path_of(sample) -> Path, .to_dict(include_samples=True) -> JSON-ready dict
    SkippedFile(path: str, reason: str, message: str)   NamedTuple; path relative to root ("." = root)
    DuplicateGroup(paths, labels, splits, size)   frozen; .crosses_split, .crosses_classes
    Split                                         frozen dataclass
        classes, train, val (as above), source: "disk" | "random", seed: int | None,
        val_fraction: float | None, root: str
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

import errno
import hashlib
import json
import os
import random
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

#: Names of validation folders next to `train/`, in order of preference (compared lower-case).
VAL_DIR_NAMES = ("val", "valid", "validation", "test")

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

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def num_images(self) -> int:
        return len(self.train) + len(self.val)

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
    root = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    _check_root(root, folder)
    progress = _Progress(on_progress, cancel)
    walker = _Walker(root, progress)

    layout = _layout(walker)
    candidates: list[_Candidate] = []
    for part, class_dirs in layout.parts.items():
        for cls, folders in class_dirs.items():
            for abs_dir, rel_dir, st in folders:
                for abs_path, rel, size in walker.files_under(abs_dir, rel_dir, st, walker.ancestors):
                    candidates.append(_Candidate(rel, abs_path, cls, part, size))
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
    # part ("train"/"val") -> class name -> folders [(abs, rel, stat)] (two folders when names differ only
    # in Unicode normalisation)
    parts: dict[str, dict[str, list]] = field(default_factory=dict)
    split_dirs: tuple[str, str] | None = None
    loose_images: int = 0  # files directly in the root (or in train/, val/): not in any class
    empty: bool = False  # nothing at all in the root (hidden files aside)


def _layout(walker: _Walker) -> _Layout:
    """Find the class folders, and whether the folder already holds a train/val split."""
    layout = _Layout()
    root_st = os.stat(walker.root)
    walker.ancestors = frozenset({(root_st.st_dev, root_st.st_ino)})
    walker.visited.add((root_st.st_dev, root_st.st_ino))
    dirs, files = _dirs_and_files(walker, walker.root, "")
    layout.empty = not dirs and not files
    layout.loose_images += _skip_loose(walker, files)

    by_lower = {d[0].lower(): d for d in dirs}
    split = _find_split(walker, by_lower)
    if split is None:
        layout.parts["train"] = _class_folders(dirs)
        return layout

    (train_name, train_dirs), (val_name, val_dirs) = split
    layout.split_dirs = (train_name, val_name)
    layout.parts["train"] = _class_folders(train_dirs)
    layout.parts["val"] = _class_folders(val_dirs)
    for name, *_ in dirs:
        if name not in (train_name, val_name):
            walker.skip(
                name, "unused_folder", f"not used: the photos come from {train_name}/ and {val_name}/"
            )
    return layout


def _dirs_and_files(walker: _Walker, abs_dir: str, rel_dir: str):
    dirs, files = [], []
    for entry, rel in walker.entries(abs_dir, rel_dir):
        kind, st = walker.kind(entry, rel)
        if kind == "dir":
            dirs.append((entry.name, entry.path, rel, st))
        elif kind == "file":
            walker.files_seen += 1
            files.append(rel)
    return dirs, files


def _skip_loose(walker: _Walker, files: list[str]) -> int:
    for rel in files:
        walker.skip(rel, "outside_class", "not inside a class folder, so it has no class")
    return len(files)


def _find_split(walker: _Walker, by_lower: dict):
    """((train name, its class dirs), (val name, its class dirs)) when the root holds a split, else None."""
    if "train" not in by_lower:
        return None
    val_key = next((k for k in VAL_DIR_NAMES if k in by_lower), None)
    if val_key is None:
        return None
    train_name, train_abs, _, train_st = by_lower["train"]
    val_name, val_abs, _, val_st = by_lower[val_key]
    train_dirs, train_files = _dirs_and_files(_Peek(walker), train_abs, train_name)
    val_dirs, val_files = _dirs_and_files(_Peek(walker), val_abs, val_name)
    train_classes = {_class_name(d[0]) for d in train_dirs}
    val_classes = {_class_name(d[0]) for d in val_dirs}
    if not train_classes & val_classes:
        # Two folders that happen to be called "train" and "test" (photos of trains?): plain classes.
        return None
    # Now list them for real (records skips and counts once).
    train_dirs, train_files = _dirs_and_files(walker, train_abs, train_name)
    val_dirs, val_files = _dirs_and_files(walker, val_abs, val_name)
    _skip_loose(walker, train_files + val_files)
    # A link from inside a class back to train/ or val/ is a loop, not a second copy of the photos.
    walker.ancestors |= {(train_st.st_dev, train_st.st_ino), (val_st.st_dev, val_st.st_ino)}
    return (train_name, train_dirs), (val_name, val_dirs)


class _Peek(_Walker):
    """A walker that looks without recording anything (to decide the layout before listing for real)."""

    def __init__(self, walker: _Walker):
        super().__init__(walker.root, walker.progress)

    def skip(self, rel: str, reason: str, message: str | None = None) -> None:
        pass


def _class_folders(dirs: list) -> dict[str, list]:
    classes: dict[str, list] = defaultdict(list)
    for name, abs_path, rel, st in dirs:
        classes[_class_name(name)].append((abs_path, rel, st))
    return dict(sorted(classes.items()))


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
                where = f"{layout.split_dirs[0]}/{name}" if layout.split_dirs else name
                warnings.append(f"The folder {where!r} has no usable photo, so that class is left out.")
    if layout.split_dirs:
        train_name, val_name = layout.split_dirs
        missing_val = [train_classes[i] for i, n in enumerate(counts["val"]) if n == 0]
        if missing_val:
            warnings.append(
                f"No validation photos for {_names(missing_val)} in {val_name}/: "
                "their accuracy cannot be measured."
            )
        extra = sorted(set(layout.parts["val"]) - set(label))
        if extra:
            warnings.append(
                f"{_names(extra)} in {val_name}/ {'has' if len(extra) == 1 else 'have'} no training "
                f"photos in {train_name}/, so {'it is' if len(extra) == 1 else 'they are'} left out."
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
    )


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
    is split on its own (stratified): its photos sorted by path, shuffled by `random.Random(seed)`, and
    `round(n * val_fraction)` of them (at least 1 when the class has 2 or more, never all) go to validation.
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
    train: list[Sample] = []
    val: list[Sample] = []
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in report.train:
        by_class[s.label].append(s)
    for label in range(len(report.classes)):
        units: dict[object, list[Sample]] = {}
        for s in sorted(by_class[label], key=lambda s: s.path):
            units.setdefault(group_of.get(s.path, s.path), []).append(s)
        order = list(units.values())  # insertion order: by first path, i.e. sorted
        rng.shuffle(order)
        n = len(by_class[label])
        n_val = int(n * val_fraction + 0.5) if val_fraction > 0 else 0
        if val_fraction > 0 and n >= 2:
            n_val = min(max(1, n_val), n - 1)
        taken = 0
        for i, unit in enumerate(order):
            # Stop before the last unit: every class keeps at least one training photo.
            if taken < n_val and i < len(order) - 1:
                val.extend(unit)
                taken += len(unit)
            else:
                train.extend(unit)
    train.sort(key=lambda s: s.path)
    val.sort(key=lambda s: s.path)
    return Split(report.classes, tuple(train), tuple(val), "random", seed, val_fraction, report.root)
