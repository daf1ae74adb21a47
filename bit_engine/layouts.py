"""Where the classes are in a folder, decided from its structure before any photo is read.

    find_layout(walker) -> Layout
        The class folders, by part ("train", and "val" when the folder holds its own split), and a note
        saying where they were found when that is not the folder itself.

What it recognises:
    - Class folders directly in the folder (cats/, dogs/): the common case.
    - A folder holding a single folder that holds the classes (an unpacked archive: photos/dataset/cats/),
      opened at the level of the classes, up to `MAX_WRAPPERS` deep ("The classes are in dataset/.").
    - A split, recognised by what the top folders hold, whatever their names: top folders holding the same
      class folders are the parts of a split (train/ + test/, training_set/ + test_set/, Training/ + Testing/,
      seg_train/seg_train + seg_test/seg_test, ...). The one named like training trains, or else the largest;
      the others validate. See `_find_split`.
    - A training folder with class folders next to folders without any (a competition's unlabelled test/):
      the training folder holds the classes, the others are reported as not used.
Files next to class folders belong to no class and are reported as skipped ("outside_class").
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from bit_engine.units import join_and
from bit_engine.walker import Walker, class_name, is_hidden, valid_text


@dataclass
class Layout:
    """Where the class folders are, as `find_layout` found them; the scan then lists the files below them."""

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


def find_layout(walker: Walker) -> Layout:
    """Find the class folders, and whether the folder already holds a train/val split.

    Folders above the class folders are listed for real through `walker` (their loose files and odd entries
    are recorded as skipped, links back to them count as loops); the class folders themselves are not
    entered: `Walker.files_under` lists them afterwards.
    """
    layout = Layout()
    root_st = os.stat(walker.root)
    walker.ancestors = frozenset({(root_st.st_dev, root_st.st_ino)})
    walker.visited.add((root_st.st_dev, root_st.st_ino))
    dirs, files = _dirs_and_files(walker, walker.root, "")
    layout.empty = not dirs and not files
    layout.loose_images += _skip_loose(walker, files)

    # A folder holding a single folder (an unpacked archive: photos/dataset/cats, ...): open the level that
    # holds the classes. A single folder holding only photos stays a class (and the report says one is few).
    wrapper = ""
    for _ in range(MAX_WRAPPERS):
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
        others = join_and([f"{d.rel}/" for d in plan.unused])
        layout.note = (
            f"The classes are in {plan.train.holder}/ ({others} "
            f"{'holds' if len(plan.unused) == 1 else 'hold'} no class folders and {_is(plan.unused)} not used)."
        )
        return layout
    val_dirs = [d for part in plan.vals for d in _open_part(walker, layout, part)]
    layout.parts["val"] = _class_folders(val_dirs)
    layout.split_dirs = (plan.train.holder, *(p.holder for p in plan.vals))
    vals = join_and([f"{p.holder}/" for p in plan.vals])
    layout.note = f"The classes are in {plan.train.holder}/ (for training) and {vals} (for validation)."
    return layout


#: How many single folders in a row are opened to reach the classes (photos/archive/dataset/...).
MAX_WRAPPERS = 4

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
                if valid_text(e.name) and not is_hidden(e.name, e) and _is_dir_entry(e)
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
    for _ in range(MAX_WRAPPERS):
        if len(subs) != 1:
            break
        inner = _peek_dirs(subs[0][1])
        if not inner:
            break
        holder, subs = f"{holder}/{subs[0][0]}", inner
    return _Part(d, holder, frozenset(class_name(name) for name, _ in subs))


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
    used = join_and([f"{p.holder}/" for p in (plan.train, *plan.vals)])
    return f"not used: the photos come from {used}"


def _open(walker: Walker, layout: Layout, d: _Dir) -> list[_Dir]:
    """List a folder above the class folders for real: its files are in no class, links back to it loop."""
    key = (d.st.st_dev, d.st.st_ino)
    walker.visited.add(key)
    walker.ancestors |= {key}
    dirs, files = _dirs_and_files(walker, d.abs, d.rel)
    layout.loose_images += _skip_loose(walker, files)
    return dirs


def _open_part(walker: Walker, layout: Layout, part: _Part) -> list[_Dir]:
    """The class folders of a part, opening the single folders above them as the quick look did."""
    d = part.top
    while True:
        dirs = _open(walker, layout, d)
        inner = next((x for x in dirs if part.holder.startswith(x.rel + "/") or part.holder == x.rel), None)
        if d.rel == part.holder or inner is None:
            return dirs
        d = inner


def _dirs_and_files(walker: Walker, abs_dir: str, rel_dir: str) -> tuple[list[_Dir], list[str]]:
    dirs, files = [], []
    for entry, rel in walker.entries(abs_dir, rel_dir):
        kind, st = walker.kind(entry, rel)
        if kind == "dir":
            dirs.append(_Dir(entry.name, entry.path, rel, st))
        elif kind == "file":
            walker.files_seen += 1
            files.append(rel)
    return dirs, files


def _skip_loose(walker: Walker, files: list[str]) -> int:
    for rel in files:
        walker.skip(rel, "outside_class", "not inside a class folder, so it has no class")
    return len(files)


def _class_folders(dirs: list[_Dir]) -> dict[str, list]:
    classes: dict[str, list] = defaultdict(list)
    for name, abs_path, rel, st in dirs:
        classes[class_name(name)].append((abs_path, rel, st))
    return dict(sorted(classes.items()))


def _is(items: Sequence) -> str:
    return "is" if len(items) == 1 else "are"
