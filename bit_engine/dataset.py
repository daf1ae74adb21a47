"""What a scan of a labelled photo folder found, as typed values: the report, its parts, the scan's progress.

These are the values `bit_engine.data.scan` returns and sends, and that front ends show; they hold no
logic beyond reading themselves back. The split into training and validation photos is
`bit_engine.holdout`.

    Sample(path: str, label: int)                 NamedTuple; `path` is relative to the dataset root,
                                                  '/'-separated; `label` indexes `classes`.
    DatasetReport                                 frozen dataclass
        root: str                                 the folder scanned (absolute)
        classes: tuple[str, ...]                  sorted class names; only classes with a usable photo
                                                  (in the training folder when the folder has its own split)
        train: tuple[Sample, ...]                 every usable photo, or the training part of an on-disk split
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
    ScanProgress(stage, files_done, files_total, current_path)   frozen; stage is "listing" (files_total
        None), "reading" or "comparing"; sent when a stage starts, at most every 0.1 s, and when it ends
    ScanCancelled(OperationCancelled)             raised by scan() when `cancel.is_set()`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from bit_engine import images
from bit_engine.progress import OperationCancelled

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
