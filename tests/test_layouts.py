"""Folders as people really lay them out: unpacked archives, Kaggle-style splits under any name, classes one
level too deep, classes too small to validate. Each layout is generated; the test says which classes and
which split a person should get, and what the report tells them."""

from __future__ import annotations

from collections import Counter

import pytest
from corpus import make_class_folder, write_photo

from bit_engine.data import scan
from bit_engine.holdout import split

CLASSES = {"cats": 4, "dogs": 5}


def make(root, parts: dict[str, dict[str, int]], seed: int = 0):
    """`parts`: relative folder -> {class: photos}; each class folder gets distinct photos."""
    for i, (rel, counts) in enumerate(parts.items()):
        make_class_folder(root / rel, counts, seed=seed + i + 1)
    return root


# (name, folders to make, expected split_dirs, expected train counts, expected val counts, expected note)
SPLITS = [
    (
        "train/test",
        {"train": CLASSES, "test": {"cats": 2, "dogs": 2}},
        ("train", "test"),
        (4, 5),
        (2, 2),
        "The classes are in train/ (for training) and test/ (for validation).",
    ),
    (
        "Kaggle training_set/test_set, each repeated inside itself",
        {"training_set/training_set": CLASSES, "test_set/test_set": {"cats": 1, "dogs": 2}},
        ("training_set/training_set", "test_set/test_set"),
        (4, 5),
        (1, 2),
        "The classes are in training_set/training_set/ (for training) and test_set/test_set/ (for validation).",
    ),
    (
        "Training/Testing",
        {"Testing": {"cats": 2, "dogs": 2}, "Training": CLASSES},
        ("Training", "Testing"),
        (4, 5),
        (2, 2),
        "The classes are in Training/ (for training) and Testing/ (for validation).",
    ),
    (
        "Intel seg_train/seg_test with an unlabelled seg_pred",
        {"seg_train/seg_train": CLASSES, "seg_test/seg_test": {"cats": 2, "dogs": 1}},
        ("seg_train/seg_train", "seg_test/seg_test"),
        (4, 5),
        (2, 1),
        "The classes are in seg_train/seg_train/ (for training) and seg_test/seg_test/ (for validation).",
    ),
    (
        "train/valid/test: both others validate",
        {"train": CLASSES, "valid": {"cats": 1, "dogs": 1}, "test": {"cats": 2, "dogs": 2}},
        ("train", "test", "valid"),
        (4, 5),
        (3, 3),
        "The classes are in train/ (for training) and test/ and valid/ (for validation).",
    ),
    (
        "unnamed parts: the largest trains",
        {"part_a": {"cats": 2, "dogs": 2}, "part_b": CLASSES},
        ("part_b", "part_a"),
        (4, 5),
        (2, 2),
        "The classes are in part_b/ (for training) and part_a/ (for validation).",
    ),
    (
        "a split inside an unpacked archive",
        {"archive/dataset/train": CLASSES, "archive/dataset/val": {"cats": 2, "dogs": 2}},
        ("archive/dataset/train", "archive/dataset/val"),
        (4, 5),
        (2, 2),
        "The classes are in archive/dataset/train/ (for training) and archive/dataset/val/ (for validation).",
    ),
]


@pytest.mark.parametrize(
    ("parts", "split_dirs", "train", "val", "note"), [c[1:] for c in SPLITS], ids=[c[0] for c in SPLITS]
)
def test_split_folders_are_recognised_by_what_they_hold(tmp_path, parts, split_dirs, train, val, note):
    root = make(tmp_path / "ds", parts)
    if "seg_train/seg_train" in parts:
        for i in range(3):  # unlabelled photos to predict on: not a class, not a split part
            write_photo(root / "seg_pred" / "seg_pred" / f"{i}.jpg", seed=900 + i)
    report = scan(root)
    assert report.ok, report.errors
    assert report.classes == ("cats", "dogs")  # never the split folders as classes
    assert report.split_dirs == split_dirs
    assert report.counts == {"train": train, "val": val}
    assert all(s.path.startswith(split_dirs[0] + "/") for s in report.train)
    assert all(s.path.startswith(split_dirs[1:]) for s in report.val)
    assert report.layout_note == note
    assert split(report).source == "disk"
    if "seg_train/seg_train" in parts:
        assert [(s.path, s.reason) for s in report.skipped] == [("seg_pred", "unused_folder")]


def test_a_folder_holding_one_folder_is_opened_at_the_classes(tmp_path):
    root = make(tmp_path / "ds", {"data": CLASSES})
    report = scan(root)
    assert report.classes == ("cats", "dogs") and report.split_dirs is None
    assert report.layout_note == "The classes are in data/."
    assert {s.path.split("/")[0] for s in report.train} == {
        "data"
    }  # paths stay relative to the folder chosen
    assert report.path_of(report.train[0]).is_file()
    assert report.to_dict()["layout_note"] == "The classes are in data/."


def test_several_single_folders_and_a_readme_are_looked_through(tmp_path):
    root = make(tmp_path / "ds", {"archive/photos": CLASSES})
    (root / "archive" / "README.txt").write_text("from the web\n")
    report = scan(root)
    assert report.classes == ("cats", "dogs") and report.ok
    assert report.layout_note == "The classes are in archive/photos/."
    assert [(s.path, s.reason) for s in report.skipped] == [("archive/README.txt", "outside_class")]


def test_train_folder_next_to_unlabelled_test_photos_holds_the_classes(tmp_path):
    root = make(tmp_path / "ds", {"train": CLASSES})
    for i in range(3):
        write_photo(root / "test" / f"{i}.jpg", seed=800 + i)
    report = scan(root)
    assert report.classes == ("cats", "dogs") and report.split_dirs is None
    assert report.layout_note == "The classes are in train/ (test/ holds no class folders and is not used)."
    assert [(s.path, s.reason) for s in report.skipped] == [("test", "unused_folder")]


def test_class_folders_one_level_too_deep_are_reported_not_silently_merged(tmp_path):
    root = make(tmp_path / "ds", {"animals": {"cats": 3, "dogs": 3}, "plants": {"roses": 3}})
    report = scan(root)
    assert report.classes == ("animals", "plants")  # what the folders say ...
    assert report.nested_classes == {"animals": ("cats", "dogs"), "plants": ("roses",)}  # ... and what is odd
    text = "\n".join(report.warnings)
    assert "sub-folders" in text and "'animals' (cats/, dogs/)" in text and "move them up one level" in text


def test_albums_with_one_shared_name_are_classes_not_a_split(tmp_path):
    # cats/2023 and dogs/2023: two classes with an album folder each, not parts of a split.
    root = tmp_path / "ds"
    for k, cls in enumerate(("cats", "dogs")):
        for i in range(3):
            write_photo(root / cls / "2023" / f"{i}.png", seed=10 * k + i)
    report = scan(root)
    assert report.classes == ("cats", "dogs") and report.split_dirs is None
    assert report.nested_classes == {"cats": ("2023",), "dogs": ("2023",)}


def test_old_layouts_are_unchanged(tmp_path):
    plain = scan(make(tmp_path / "plain", {"": CLASSES}))
    assert plain.classes == ("cats", "dogs") and plain.layout_note == "" and plain.nested_classes == {}
    assert plain.classes_without_validation == ()


# ------------------------------------------------------------------------------ classes without validation


def test_held_out_share_stays_near_the_fraction_with_many_small_classes(tmp_path):
    # 15 classes of 3 photos: one photo per class would hold out 15 of 45 (33%); 0.2 asks for 9.
    root = make_class_folder(tmp_path / "ds", {f"c{i:02d}": 3 for i in range(15)})
    report = scan(root)
    s = split(report, val_fraction=0.2, seed=0)
    assert len(s.val) == 9 and len(s.train) == 36
    assert len(s.classes_without_validation) == 6
    held = {report.classes[x.label] for x in s.val}
    assert set(s.classes_without_validation) == set(report.classes) - held
    assert max(Counter(x.label for x in s.val).values()) == 1  # spread: no class gives two while others none


def test_large_classes_keep_their_own_share(tmp_path):
    report = scan(make_class_folder(tmp_path / "ds", {"big": 40, "mid": 12, "tiny": 3}))
    s = split(report, val_fraction=0.2, seed=1)
    counts = Counter(report.classes[x.label] for x in s.val)
    assert counts == {"big": 8, "mid": 2, "tiny": 1}  # 11 of 55 = 20%, every class measured
    assert s.classes_without_validation == ()


def test_a_class_of_one_photo_or_of_copies_is_named_in_the_report(tmp_path):
    root = make_class_folder(tmp_path / "ds", {"a": 6, "b": 6, "lonely": 1, "copies": 1})
    for i in range(2):
        (root / "copies" / f"again_{i}.png").write_bytes((root / "copies" / "copies_000.png").read_bytes())
    report = scan(root)
    assert report.classes_without_validation == ("copies", "lonely")
    text = "\n".join(report.warnings)
    assert "'copies' and 'lonely' have a single photo (or copies of one)" in text
    assert "accuracy cannot be measured" in text
    s = split(report, val_fraction=0.2, seed=0)
    assert set(s.classes_without_validation) >= {"copies", "lonely"}


def test_on_disk_split_names_classes_missing_from_validation(tmp_path):
    root = make(tmp_path / "ds", {"train": {"a": 3, "b": 3, "c": 3}, "val": {"a": 1, "b": 1}})
    report = scan(root)
    assert report.classes_without_validation == ("c",)
    assert any("No validation photos for 'c' in val/" in w for w in report.warnings)
