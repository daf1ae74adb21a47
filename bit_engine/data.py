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
        skipped: tuple[SkippedFile, ...]          SkippedFile(path, reason, message); reasons: SKIP_REASONS
        median_size: tuple[int, int] | None       median (width, height) of the usable originals, for
                                                  `hyperrule.resolution`; None without usable photos
        imbalance: float | None                   photos in the largest class / in the smallest
        duplicates: tuple[DuplicateGroup, ...]    files with identical content (>= 2 paths per group)
        warnings: tuple[str, ...]                 plain-words messages a person should read
        errors: tuple[str, ...]                   plain-words reasons training cannot start
        files_seen: int                           files looked at (skipped ones included)
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
        None), "reading" or "comparing"; sent at most every 0.1 s and once at the end of each stage
    ScanCancelled(BitStudioError)                 raised by scan() when `cancel.is_set()`

Image decoding lives in `bit_engine.images` (`open_rgb`, `probe`): use `open_rgb(report.path_of(s))`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bit_engine import images
from bit_engine.errors import BitStudioError

#: Photos smaller than this on either side are skipped: there is nothing left to learn from them.
MIN_SIDE = 8


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


class ScanCancelled(BitStudioError):
    """The scan was stopped through its `cancel` flag; nothing was changed."""


def scan(folder, *, on_progress=None, cancel=None, max_pixels=images.MAX_PIXELS, min_side=MIN_SIDE):
    raise NotImplementedError


def split(report, val_fraction: float = 0.2, seed: int = 0):
    raise NotImplementedError


_ = (Path, dataclass)
