"""Which photos train and which validate: the `Split` a run keeps, and how a folder without one is split.

    split(report, val_fraction=0.2, seed=0) -> Split
        The folder's own split as is when it has one; otherwise stratified and seeded (the same seed gives
        the same split on every machine), at least one validation photo per class that has two or more,
        exact duplicates kept on the same side; `round(total * val_fraction)` validation photos in all, so
        small classes may have none (`Split.classes_without_validation`). Raises BitStudioError when
        `report.errors` is not empty.

    Split                                         frozen dataclass, saved with the run (split.json) so that a
                                                  resume trains and validates on the same photos
        classes, train, val (`dataset.Sample`s), source: "disk" | "random", seed: int | None,
        val_fraction: float | None, root: str, .classes_without_validation -> tuple[str, ...]
        .to_json() -> str, Split.from_json(text) -> Split, .to_dict(), Split.from_dict(d),
        .path_of(sample, root=None) -> Path, .missing(root=None) -> list[str]

A split read back from a run folder is checked like any other file from disk: its paths must stay under the
data folder, its labels in range.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from bit_engine.dataset import DatasetReport, Sample
from bit_engine.errors import BitStudioError


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
