"""Scanning a folder of labelled photos: what can be trained on, and what a person should know about it.

    scan(folder, *, on_progress=None, cancel=None, max_pixels=images.MAX_PIXELS, min_side=MIN_SIDE,
         find_duplicates=True) -> dataset.DatasetReport
        Classes are the sub-folders of `folder` (photos in nested folders belong to their class folder and
        are reported in `nested_classes`); where they are, when the folder wraps them or holds its own split,
        is `bit_engine.layouts`. Reads headers only; never writes anything into `folder`.
        Raises BitStudioError when `folder` does not exist or is a file, ScanCancelled when `cancel` is set.
        Everything else (damaged files, too few classes) is reported in the returned report.

    check_folder(folder) -> str                   the absolute path, or BitStudioError (does not exist, ...)

The report's types are in `bit_engine.dataset`, the training/validation split in `bit_engine.holdout`, the
folder listing (hidden files, links, names) in `bit_engine.walker`. Image decoding lives in
`bit_engine.images`: `open_rgb(report.path_of(s))` gives the RGB pixels, and `probe(path) -> ImageInfo`
raises `ImageError` (with `.reason`, a key of `images.REASONS`) rather than returning a reason, so both
functions fail the same way.

How the scan decides:
    - Whether a file is a photo is decided by its content (Pillow's header check), not by its name: a
      text file called .jpg is skipped, a photo without an ending is kept. HEIC and camera RAW files are
      refused by name with a message saying what to do.
    - Exact duplicates: only files whose size equals another usable file's size are hashed (BLAKE2b).
    - Errors (training cannot start) and warnings (it can, but a person should know) are sentences in plain
      words, each saying what to do.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import NamedTuple

from bit_engine import images
from bit_engine.dataset import (
    QUIET_REASONS,
    SKIP_SHORT,
    DatasetReport,
    DuplicateGroup,
    Sample,
    ScanProgress,
    SkippedFile,
)
from bit_engine.errors import BitStudioError
from bit_engine.layouts import Layout, find_layout
from bit_engine.progress import CancelFlag
from bit_engine.units import join_and, plural
from bit_engine.walker import ScanTicker, Walker

MIN_SIDE = 8

#: Fewer photos than this in a class earns a warning.
FEW_IMAGES = 5

#: A largest/smallest class ratio above this earns a warning.
IMBALANCE_WARNING = 10.0

_HASH_CHUNK = 1 << 20


class _Candidate(NamedTuple):
    rel: str
    abs: str
    cls: str  # class name (NFC)
    part: str  # "train" or "val"
    size: int
    sub: str  # the sub-folder of the class folder it is in; "" when directly in the class folder


def scan(
    folder: str | os.PathLike,
    *,
    on_progress: Callable[[ScanProgress], None] | None = None,
    cancel: CancelFlag | None = None,
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
    progress = ScanTicker(on_progress, cancel)
    walker = Walker(root, progress)

    layout = find_layout(walker)
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


def _report(
    root: str,
    layout: Layout,
    walker: Walker,
    usable: list,
    progress: ScanTicker,
    find_duplicates: bool,
    started: float,
) -> DatasetReport:
    """The report of a scan: the usable photos by class, their figures, and the errors and warnings."""
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
            f"The folder holds {plural(layout.loose_images, 'file')} but no class sub-folders. "
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
            f"{plural(copies, 'validation photo')} {_are(copies)} {_copies(copies)} of training photos "
            f"(for example {_pair(leaks[0])}). Validation scores will look better than they really are: "
            "remove the copies from one of the two folders."
        )
    conflicts = [g for g in duplicates if g.crosses_classes]
    if conflicts:
        warnings.append(
            f"{plural(len(conflicts), 'photo')} {'appears' if len(conflicts) == 1 else 'appear'} in more "
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
        val_where = join_and([f"{v}/" for v in val_names])
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
            f"{plural(copies, 'photo')} {_are(copies)} {_copies(copies)} of other photos in the same class "
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


def _are(n: int) -> str:
    return "is an" if n == 1 else "are"


def _copies(n: int) -> str:
    return "exact copy" if n == 1 else "exact copies"


def _names(names: Sequence[str]) -> str:
    return join_and([repr(n) for n in names])


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


def _find_duplicates(kept, label, progress: ScanTicker) -> list[DuplicateGroup]:
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
