"""Scanning photo folders and decoding photos: what a person pointing the app at a folder would notice."""

from __future__ import annotations

import errno
import json
import os
import threading
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from corpus import (
    BLUE,
    EMPTY_CLASS,
    RED,
    UNICODE_CLASS,
    WHITE,
    make_bad_corpus,
    make_class_folder,
    make_split_folder,
    noise_photo,
    tree_snapshot,
    write_photo,
)
from PIL import Image

from bit_engine import images
from bit_engine.data import scan
from bit_engine.dataset import DatasetReport, Sample, ScanCancelled, ScanProgress
from bit_engine.errors import BitStudioError
from bit_engine.holdout import Split, split


@pytest.fixture
def corpus(tmp_path):
    return make_bad_corpus(tmp_path / "photos")


def close(pixel, expected, tol=3):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected, strict=True))


# ------------------------------------------------------------------------------------------ open_rgb


def test_exif_orientation_6_is_applied_size_swapped_and_content_rotated(corpus):
    path = corpus["root"] / corpus["files"]["exif_rotated"]
    with Image.open(path) as raw:
        assert raw.size == (40, 20)  # stored landscape: left red, right blue
    im = images.open_rgb(path)
    assert im.mode == "RGB"
    assert im.size == (20, 40)
    # Rotated 90 degrees clockwise for viewing: the stored left half (red) is now on top.
    assert close(im.getpixel((10, 5)), RED, tol=10)
    assert close(im.getpixel((10, 35)), BLUE, tol=10)
    info = images.probe(path)
    assert (info.width, info.height, info.orientation) == (20, 40, 6)


def test_cmyk_jpeg_decodes_to_rgb_red(corpus):
    im = images.open_rgb(corpus["root"] / corpus["files"]["cmyk_jpeg"])
    assert im.mode == "RGB"
    assert close(im.getpixel((8, 8)), RED, tol=6)


def test_16_bit_png_mid_gray_is_scaled_not_clipped(corpus):
    path = corpus["root"] / corpus["files"]["png16"]
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
        assert raw.convert("L").getpixel((0, 0)) == 255  # what naive conversion does: clipped to white
    im = images.open_rgb(path)
    assert im.mode == "RGB"
    assert im.getpixel((3, 3)) == (128, 128, 128)


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (257, 1), (65535, 255), (1000, 4)])
def test_16_bit_values_map_to_the_full_8_bit_range(tmp_path, value, expected):
    path = tmp_path / "g.png"
    Image.fromarray(np.full((8, 8), value, np.uint16)).save(path)
    assert images.open_rgb(path).getpixel((0, 0)) == (expected,) * 3


def test_palette_png_transparent_colour_becomes_white(corpus):
    im = images.open_rgb(corpus["root"] / corpus["files"]["palette_transparent_png"])
    assert im.mode == "RGB"
    assert im.getpixel((2, 8)) == RED
    assert im.getpixel((12, 8)) == WHITE  # transparent green: composited on white, not green, not black


def test_rgba_is_composited_on_white(corpus):
    im = images.open_rgb(corpus["root"] / corpus["files"]["rgba_png"])
    assert im.getpixel((2, 2)) == RED
    assert im.getpixel((12, 2)) == WHITE
    assert close(im.getpixel((12, 12)), (255, 127, 127), tol=1)  # half-transparent red over white


def test_gray_with_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "la.png"
    Image.new("LA", (8, 8), (0, 0)).save(path)  # black, fully transparent
    assert images.open_rgb(path).getpixel((4, 4)) == WHITE


def test_animated_gif_gives_its_first_frame(corpus):
    im = images.open_rgb(corpus["root"] / corpus["files"]["animated_gif"])
    assert im.mode == "RGB"
    assert im.getpixel((8, 8)) == RED


def test_float_image_in_0_1_scales_to_0_255(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(path)
    assert images.open_rgb(path).getpixel((0, 0)) == (128, 128, 128)


def test_every_valid_corpus_photo_decodes_to_rgb(corpus):
    for rel in corpus["valid"]:
        im = images.open_rgb(corpus["root"] / rel)
        assert im.mode == "RGB", rel
        assert min(im.size) >= 8, rel


@pytest.mark.parametrize(
    ("role", "reason"),
    [
        ("truncated_jpeg", "truncated"),
        ("zero_byte", "empty"),
        ("text_as_jpg", "not_an_image"),
        ("huge_header_png", "too_large"),
        ("heic", "unsupported_format"),
    ],
)
def test_bad_files_raise_image_error_with_reason_and_path(corpus, role, reason):
    path = corpus["root"] / corpus["files"][role]
    with pytest.raises(images.ImageError) as err:
        images.open_rgb(path)
    assert err.value.reason == reason
    assert isinstance(err.value, BitStudioError)
    assert str(path) in str(err.value)
    with pytest.raises(images.ImageError) as err2:
        images.probe(path)
    assert err2.value.reason == reason


def test_huge_header_is_refused_before_decoding_with_its_size(corpus):
    path = corpus["root"] / corpus["files"]["huge_header_png"]
    assert path.stat().st_size < 100  # nothing to decode: the refusal comes from the header alone
    with pytest.raises(images.ImageError) as err:
        images.open_rgb(path)
    assert "900 million pixels" in str(err.value)


def test_pixel_cap_is_a_parameter(tmp_path):
    path = write_photo(tmp_path / "a.png", size=(40, 30))
    assert images.probe(path, max_pixels=1200).size == (40, 30)
    with pytest.raises(images.ImageError) as err:
        images.open_rgb(path, max_pixels=1199)
    assert err.value.reason == "too_large"
    assert "40 x 30" in str(err.value)


def test_truncated_png_is_caught_by_probe(tmp_path):
    path = tmp_path / "t.png"
    noise_photo(1, (64, 64)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(images.ImageError) as err:
        images.probe(path)
    assert err.value.reason == "truncated"


def test_jpeg_with_data_after_its_end_is_still_a_photo(tmp_path):
    # Phones append a video or metadata after the JPEG's end marker ("motion photos"): probe must not
    # mistake that for damage.
    path = tmp_path / "motion.jpg"
    noise_photo(2, (32, 32)).save(path, quality=90)
    path.write_bytes(path.read_bytes() + b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    assert images.probe(path).size == (32, 32)
    assert images.open_rgb(path).size == (32, 32)


def test_draft_size_decodes_large_jpegs_smaller_but_not_below_the_request(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (800, 600), (10, 200, 30)).save(path, quality=90)
    full = images.open_rgb(path)
    small = images.open_rgb(path, draft_size=(128, 128))
    assert full.size == (800, 600)
    assert 128 <= min(small.size) < 600
    assert close(small.getpixel((10, 10)), (10, 200, 30), tol=4)


# ---------------------------------------------------------------------------------------------- scan


def test_corpus_scan_keeps_every_valid_photo_with_its_class(corpus):
    report = scan(corpus["root"])
    assert report.ok, report.errors
    assert list(report.classes) == corpus["classes"]
    got = {s.path: report.classes[s.label] for s in report.train}
    assert got == corpus["valid"]
    assert report.val == ()
    assert report.split_dirs is None
    expected_counts = Counter(corpus["valid"].values())
    assert report.counts == {"train": tuple(expected_counts[c] for c in report.classes)}
    # The photo two folders down belongs to its top folder's class.
    assert got[corpus["files"]["nested"]] == "dogs"
    assert corpus["files"]["unicode"] in got


def test_corpus_scan_skips_each_bad_file_with_its_reason(corpus):
    report = scan(corpus["root"])
    skipped = {s.path: s.reason for s in report.skipped}
    assert skipped == corpus["skipped"]
    for s in report.skipped:
        assert s.message  # every skip says why, in words


def test_corpus_scan_warnings_name_what_a_person_must_fix(corpus):
    report = scan(corpus["root"])
    text = "\n".join(report.warnings)
    assert EMPTY_CLASS in text and "no usable photo" in text
    assert EMPTY_CLASS not in report.classes
    assert f"{UNICODE_CLASS!r} (2)" in text  # fewer than 5 photos
    assert "skipped" in text and "damaged (cut off)" in text and "too large" in text
    assert "hidden" not in text  # .DS_Store and friends are housekeeping, not news
    json.dumps(report.to_dict())  # everything in it can be saved as JSON


def test_scan_never_writes_into_the_folder(corpus):
    before = tree_snapshot(corpus["root"])
    report = scan(corpus["root"])
    split(report, 0.3, seed=1)
    assert tree_snapshot(corpus["root"]) == before


def test_unreadable_file_is_skipped(corpus, monkeypatch):
    locked = corpus["files"]["locked"]
    if not corpus["permissions"]:
        # Root (CI containers) and Windows read the chmod-000 file anyway: refuse it the way the kernel
        # refuses a user without the right, so the test runs everywhere instead of being always skipped.
        from PIL import Image

        real_open = Image.open

        def refuse(fp, *args, **kwargs):
            if Path(os.fspath(fp)).as_posix().endswith(locked):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(fp))
            return real_open(fp, *args, **kwargs)

        monkeypatch.setattr(Image, "open", refuse)
    skipped = {s.path: s.reason for s in scan(corpus["root"]).skipped}
    assert skipped[locked] == "unreadable"


def test_symlinked_class_is_followed_once_and_loops_are_reported(tmp_path):
    outside = make_class_folder(tmp_path / "elsewhere", {"birds": 3})
    root = make_class_folder(tmp_path / "ds", {"cats": 3})
    try:
        os.symlink(outside / "birds", root / "birds", target_is_directory=True)
        os.symlink(outside / "birds", root / "cats" / "more_birds", target_is_directory=True)
        os.symlink("..", root / "cats" / "up", target_is_directory=True)
    except OSError:
        pytest.skip("links cannot be made here")
    report = scan(root)
    assert report.classes == ("birds", "cats")
    assert report.counts["train"] == (3, 3)
    skipped = {s.path: s.reason for s in report.skipped}
    assert skipped == {"cats/more_birds": "duplicate_link", "cats/up": "symlink_loop"}


def test_median_size_and_imbalance(tmp_path):
    root = tmp_path / "ds"
    sizes = [(30, 10), (40, 20), (50, 30), (60, 40), (70, 50)]
    for i, size in enumerate(sizes):
        write_photo(root / "a" / f"{i}.png", seed=i, size=size)
    write_photo(root / "b" / "0.png", seed=9, size=(8, 8))
    report = scan(root)
    # Widths 8,30,40,50,60,70 and heights 8,10,20,30,40,50: the lower middle value of each.
    assert report.median_size == (40, 20)
    assert report.imbalance == 5.0


def test_imbalance_over_10_to_1_is_a_warning(tmp_path):
    report = scan(make_class_folder(tmp_path / "ds", {"many": 22, "few": 2}))
    assert report.imbalance == 11.0
    text = "\n".join(report.warnings)
    assert "unbalanced" in text and "'many' has 22" in text and "'few' only 2" in text


def test_exact_duplicates_are_found_and_reported(tmp_path):
    root = make_class_folder(tmp_path / "ds", {"a": 5, "b": 5})
    (root / "a" / "copy.png").write_bytes((root / "a" / "a_000.png").read_bytes())
    (root / "b" / "from_a.png").write_bytes((root / "a" / "a_001.png").read_bytes())
    report = scan(root)
    groups = {g.paths: g for g in report.duplicates}
    assert set(groups) == {("a/a_000.png", "a/copy.png"), ("a/a_001.png", "b/from_a.png")}
    assert groups[("a/a_001.png", "b/from_a.png")].crosses_classes
    assert not report.leaks
    text = "\n".join(report.warnings)
    assert "more than one class" in text and "b/from_a.png" in text
    assert "exact copy of other photos" in text


def test_single_class_is_an_error(tmp_path):
    report = scan(make_class_folder(tmp_path / "ds", {"cats": 4}))
    assert not report.ok
    assert "Only one class" in report.errors[0] and "'cats'" in report.errors[0]
    with pytest.raises(BitStudioError, match="Only one class"):
        split(report)


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / ".DS_Store").write_bytes(b"x")  # litter does not count
    report = scan(tmp_path / "ds")
    assert report.errors and "empty" in report.errors[0]
    assert report.classes == () and report.median_size is None and report.imbalance is None


def test_photos_without_class_folders_is_an_error(tmp_path):
    for i in range(3):
        write_photo(tmp_path / "ds" / f"{i}.jpg", seed=i)
    report = scan(tmp_path / "ds")
    assert "no class sub-folders" in report.errors[0]
    assert "3 files" in report.errors[0]


def test_class_folders_with_nothing_usable_is_an_error_that_says_why(tmp_path):
    (tmp_path / "ds" / "a").mkdir(parents=True)
    (tmp_path / "ds" / "a" / "x.jpg").write_text("not a photo")
    (tmp_path / "ds" / "b").mkdir()
    report = scan(tmp_path / "ds")
    assert "No usable photos" in report.errors[0] and "not a photo: 1" in report.errors[0]


def test_a_file_or_a_missing_path_raises_a_clear_error(tmp_path):
    photo = write_photo(tmp_path / "one.jpg")
    with pytest.raises(BitStudioError, match="is a file, not a folder"):
        scan(photo)
    with pytest.raises(BitStudioError, match="does not exist"):
        scan(tmp_path / "nope")


def test_unicode_class_names_from_mac_and_windows_are_one_class(tmp_path):
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    write_photo(tmp_path / "ds" / nfc / "1.png", seed=1)
    write_photo(tmp_path / "ds" / nfd / "2.png", seed=2)
    write_photo(tmp_path / "ds" / "tea" / "3.png", seed=3)
    if len(os.listdir(tmp_path / "ds")) != 3:
        pytest.skip("this file system normalises names itself")
    report = scan(tmp_path / "ds")
    assert report.classes == (nfc, "tea")
    assert report.counts["train"] == (2, 1)


def test_progress_is_reported_and_ends_complete(corpus):
    seen: list[ScanProgress] = []
    report = scan(corpus["root"], on_progress=seen.append)
    stages = [p.stage for p in seen]
    assert stages[0] == "listing" and "reading" in stages
    last_reading = [p for p in seen if p.stage == "reading"][-1]
    assert last_reading.files_done == last_reading.files_total > 0
    assert all(p.files_total is None for p in seen if p.stage == "listing")
    assert report.files_seen >= last_reading.files_total


def test_cancel_stops_the_scan(corpus):
    flag = threading.Event()
    flag.set()
    with pytest.raises(ScanCancelled):
        scan(corpus["root"], cancel=flag)

    # Cancelled while running (from the progress callback, as a GUI's button would between files).
    flag = threading.Event()
    with pytest.raises(ScanCancelled):
        scan(corpus["root"], cancel=flag, on_progress=lambda p: flag.set())


# ------------------------------------------------------------------------------------- on-disk split


@pytest.mark.parametrize("val_name", ["val", "Validation", "test"])
def test_split_on_disk_is_detected_and_used_as_is(tmp_path, val_name):
    root = make_split_folder(tmp_path / "ds", val_name=val_name, leak=False)["root"]
    report = scan(root)
    assert report.ok
    assert report.split_dirs == ("train", val_name)
    assert report.classes == ("a", "b")
    assert report.counts == {"train": (6, 6), "val": (2, 2)}
    assert all(s.path.startswith("train/") for s in report.train)
    assert all(s.path.startswith(f"{val_name}/") for s in report.val)
    s = split(report, val_fraction=0.5, seed=3)  # arguments are ignored: the folder decides
    assert s.source == "disk"
    assert (s.train, s.val, s.classes) == (report.train, report.val, report.classes)


def test_leak_from_train_into_val_is_a_warning_naming_both_files(tmp_path):
    made = make_split_folder(tmp_path / "ds", leak=True)
    report = scan(made["root"])
    assert len(report.leaks) == 1
    assert report.leaks[0].paths == tuple(sorted(made["leak"]))
    assert report.leaks[0].splits == ("train", "val")
    text = report.warnings[0]  # the most important warning comes first
    assert "validation photo is an exact copy of training photos" in text
    assert made["leak"][0] in text and made["leak"][1] in text


def test_val_class_without_train_folder_is_left_out_with_a_warning(tmp_path):
    root = make_split_folder(tmp_path / "ds", leak=False)["root"]
    make_class_folder(root / "val", {"zebra": 2}, seed=5)
    report = scan(root)
    assert report.classes == ("a", "b")
    assert {s.reason for s in report.skipped} == {"no_train_class"}
    assert any("'zebra'" in w and "left out" in w for w in report.warnings)


def test_folders_named_train_and_test_without_common_classes_are_plain_classes(tmp_path):
    # Photos of trains and of tests, not a split.
    root = make_class_folder(tmp_path / "ds", {"train": 3, "test": 3})
    report = scan(root)
    assert report.split_dirs is None
    assert report.classes == ("test", "train")


# --------------------------------------------------------------------------------------------- split


def test_split_is_seeded_stratified_and_complete(tmp_path):
    root = make_class_folder(tmp_path / "ds", {"a": 10, "b": 2, "c": 1, "d": 7})
    report = scan(root)
    one = split(report, val_fraction=0.2, seed=0)
    assert one == split(report, val_fraction=0.2, seed=0)
    assert one != split(report, val_fraction=0.2, seed=1)
    val_counts = Counter(report.classes[s.label] for s in one.val)
    # round(n * 0.2), at least 1 for classes of 2 or more, never the whole class.
    assert val_counts == {"a": 2, "b": 1, "d": 1}
    assert set(one.train) | set(one.val) == set(report.train)
    assert not set(one.train) & set(one.val)
    assert one.source == "random" and one.seed == 0
    assert split(report, val_fraction=0.0).val == ()


def test_split_is_the_same_whatever_the_listing_order(tmp_path):
    # Determinism comes from sorted paths + random.Random(seed), not from the order files were found.
    root = make_class_folder(tmp_path / "ds", {"a": 9, "b": 9})
    report = scan(root)
    shuffled = DatasetReport(**{**report.__dict__, "train": tuple(reversed(report.train))})
    assert split(shuffled, seed=4) == split(report, seed=4)


def test_split_keeps_duplicates_on_one_side(tmp_path):
    root = make_class_folder(tmp_path / "ds", {"a": 4, "b": 4})
    for i in range(6):
        (root / "a" / f"dup_{i}.png").write_bytes((root / "a" / "a_000.png").read_bytes())
    report = scan(root)
    for seed in range(10):
        s = split(report, val_fraction=0.3, seed=seed)
        in_val = {x.path for x in s.val}
        group = set(report.duplicates[0].paths)
        assert group <= in_val or not group & in_val


def test_split_json_round_trip_and_damage(tmp_path):
    report = scan(make_class_folder(tmp_path / "ds", {"a": 5, "b": 5}))
    s = split(report, seed=7)
    again = Split.from_json(s.to_json())
    assert again == s
    assert isinstance(again.train[0], Sample)
    assert again.missing() == []
    os.remove(s.path_of(s.val[0]))
    assert again.missing() == [s.val[0].path]
    with pytest.raises(BitStudioError, match="damaged"):
        Split.from_json("{not json")
    with pytest.raises(BitStudioError, match="damaged"):
        Split.from_json(json.dumps({**s.to_dict(), "train": [["x.png", 9]]}))


def test_split_rejects_an_impossible_fraction(tmp_path):
    report = scan(make_class_folder(tmp_path / "ds", {"a": 3, "b": 3}))
    with pytest.raises(BitStudioError, match="below 1"):
        split(report, val_fraction=1.0)


def test_truncated_bmp_without_end_marker_is_caught_by_decoding(tmp_path):
    path = tmp_path / "t.bmp"
    noise_photo(3, (32, 32)).save(path)
    path.write_bytes(path.read_bytes()[:-700])
    with pytest.raises(images.ImageError) as err:
        images.probe(path)
    assert err.value.reason == "truncated"


def test_permission_denied_is_reported_as_unreadable(tmp_path, monkeypatch):
    # Root can read any file, so the refusal is simulated where Pillow opens the file.
    root = make_class_folder(tmp_path / "ds", {"a": 2, "b": 2})
    locked = str(root / "a" / "a_001.png")
    real_open = Image.open

    def refusing_open(fp, *args, **kwargs):
        if os.fspath(fp) == locked:
            raise PermissionError(13, "Permission denied", fp)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(images.Image, "open", refusing_open)
    report = scan(root)
    assert {s.path: s.reason for s in report.skipped} == {"a/a_001.png": "unreadable"}
    assert report.counts["train"] == (1, 2)
    assert any("no permission to read: 1" in w for w in report.warnings)


def test_open_rgb_on_a_folder_says_it_is_not_a_file(tmp_path):
    with pytest.raises(images.ImageError) as err:
        images.open_rgb(tmp_path)
    assert err.value.reason == "not_an_image" and "not a file" in str(err.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "AVIF"])
def test_every_format_reads_whole_and_is_refused_when_cut_off(tmp_path, fmt):
    if fmt not in images.FORMATS:
        pytest.skip(f"this Pillow cannot read {fmt}")
    path = tmp_path / f"x.{fmt.lower()}"
    noise_photo(4, (48, 40)).save(path, fmt)
    assert images.probe(path).size == (48, 40)
    assert images.open_rgb(path).size == (48, 40)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    for read in (images.probe, images.open_rgb):
        with pytest.raises(images.ImageError):
            read(path)


def test_probe_and_open_rgb_agree_on_every_corpus_file(corpus):
    # Scanning must not let through a file the training loader would then fail on.
    for path in corpus["root"].rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            images.probe(path)
            probed = "ok"
        except images.ImageError as e:
            probed = e.reason
        try:
            images.open_rgb(path)
            opened = "ok"
        except images.ImageError as e:
            opened = e.reason
        assert probed == opened, path


def test_content_decides_not_the_name_and_hidden_folders_are_one_entry(tmp_path):
    root = make_class_folder(tmp_path / "ds", {"a": 5, "b": 5})
    write_photo(tmp_path / "x.png", seed=50).rename(root / "a" / "no_ending")
    make_class_folder(root / "a" / ".thumbnails", {"t": 3}, seed=9)
    report = scan(root)
    assert "a/no_ending" in {s.path for s in report.train}
    assert [(s.path, s.reason) for s in report.skipped] == [("a/.thumbnails", "hidden")]
    assert report.warnings == ()


def test_many_classes_scan_quickly_and_count_right(tmp_path):
    root = make_class_folder(tmp_path / "ds", {f"c{i:03d}": 1 + i % 3 for i in range(120)})
    report = scan(root)
    assert len(report.classes) == 120
    assert report.counts["train"][:4] == (1, 2, 3, 1)
