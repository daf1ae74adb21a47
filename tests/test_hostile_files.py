"""Hostile and careless inputs at the file boundary: the user's files are never replaced or deleted, what is
read from a file is data within limits, and every refusal is one clear message (exit 2), never a traceback.

The window inherits every one of these: it calls the same engine functions.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from bit_engine import fileio
from bit_engine.cli import main
from bit_engine.export import export_onnx
from bit_engine.inference import ModelMetadataError, Predictor, spreadsheet_safe
from bit_engine.models import BIT_NORMALIZATION, ResNetV2
from bit_engine.onnx_format import ExportError, is_bit_studio_export

SIZE = 32
LABELS = ["cat", "dog", "fox"]


def _tiny_model() -> ResNetV2:
    torch.manual_seed(0)
    model = ResNetV2((1, 1, 1, 1), 1, num_classes=len(LABELS), zero_head=False)
    torch.nn.init.normal_(model.head.conv.weight, std=0.3)
    return model.eval()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    """One small BiT Studio export the tests copy and tamper with."""
    path = tmp_path_factory.mktemp("hostile") / "model.onnx"
    export_onnx(_tiny_model(), LABELS, SIZE, BIT_NORMALIZATION, path)
    return path


def _with_metadata(source: Path, dest: Path, **changes: str | None) -> Path:
    """A copy of `source` with metadata entries replaced (None removes one); keys as "labels", "input_size"."""
    model = onnx.load(str(source))
    entries = {p.key: p.value for p in model.metadata_props}
    for short, value in changes.items():
        key = f"bit_studio.{short}"
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = value
    del model.metadata_props[:]
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(model, str(dest))
    return dest


def _photo(path: Path, colour=(200, 30, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)
    return path


# ------------------------------------------------------------------------------------------------------------
# Export never replaces or deletes the user's files


def test_export_refuses_to_replace_a_file_that_is_not_an_export(tmp_path):
    target = tmp_path / "thesis.onnx"
    target.write_bytes(b"three years of work")
    with pytest.raises(
        ExportError, match=r"not a model exported by BiT Studio.*replace it on purpose"
    ) as info:
        export_onnx(_tiny_model(), LABELS, SIZE, BIT_NORMALIZATION, target)
    assert (info.value.remedy, info.value.path) == ("replace", target)
    assert target.read_bytes() == b"three years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.onnx"]  # no temporary left behind

    export_onnx(_tiny_model(), LABELS, SIZE, BIT_NORMALIZATION, target, force=True)
    assert is_bit_studio_export(target)


def test_export_replaces_its_own_export_without_asking(onnx_file, tmp_path):
    target = shutil.copy(onnx_file, tmp_path / "model.onnx")
    export_onnx(_tiny_model(), ["a", "b", "c"], SIZE, BIT_NORMALIZATION, target)
    assert Predictor(target).labels == ["a", "b", "c"]


def test_export_never_deletes_a_neighbouring_data_file_it_did_not_write(onnx_file, tmp_path):
    target = Path(shutil.copy(onnx_file, tmp_path / "model.onnx"))
    users = tmp_path / "model.onnx.data"
    users.write_bytes(b"the user's own data")
    export_onnx(_tiny_model(), LABELS, SIZE, BIT_NORMALIZATION, target)
    assert users.read_bytes() == b"the user's own data"


def test_reexport_removes_only_the_weights_file_its_previous_export_used(tmp_path):
    target = tmp_path / "model.onnx"
    first = export_onnx(_tiny_model(), LABELS, SIZE, BIT_NORMALIZATION, target, external_data=True)
    assert Path(first.data_path).is_file()
    export_onnx(_tiny_model(), LABELS, SIZE, BIT_NORMALIZATION, target, external_data=False)
    assert not Path(first.data_path).exists()  # its own orphan: removed
    assert Predictor(target).labels == LABELS


# ------------------------------------------------------------------------------------------------------------
# ONNX metadata is data within limits


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_size": "100000"}, "damaged input size"),
        ({"input_size": "-3"}, "damaged input size"),
        ({"input_size": "9" * 5000}, "damaged input size"),
        ({"input_size": "64"}, "metadata says 64 x 64 pixels, its graph takes 32 x 32"),
        ({"labels": "not json"}, "damaged class names"),
        ({"labels": '{"a": 1}'}, "damaged class names"),
        ({"labels": '["cat", 3, "fox"]'}, "damaged class names"),
        ({"labels": "[]"}, "damaged class names"),
        ({"labels": "[" * 100_000}, "damaged class names"),
        ({"labels": '["cat"]'}, "names 1 classes, its graph outputs 3 scores"),
        ({"labels": json.dumps(["c"] * 50)}, "names 50 classes, its graph outputs 3 scores"),
    ],
)
def test_damaged_metadata_is_one_clear_error(onnx_file, tmp_path, changes, message):
    bad = _with_metadata(onnx_file, tmp_path / "bad.onnx", **changes)
    with pytest.raises(ModelMetadataError, match=message):
        Predictor(bad)


def test_cli_predict_with_damaged_metadata_exits_2_without_a_traceback(onnx_file, tmp_path, capsys):
    bad = _with_metadata(onnx_file, tmp_path / "bad.onnx", input_size="2000000000")
    photo = _photo(tmp_path / "photos" / "a.png")
    assert main(["predict", str(bad), str(photo)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad.onnx has a damaged input size") and "Traceback" not in err


# ------------------------------------------------------------------------------------------------------------
# CSV injection and terminal escapes


@pytest.mark.parametrize("text", ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://x")'])
def test_formula_starts_are_escaped(text):
    assert spreadsheet_safe(text) == "'" + text


@pytest.mark.parametrize("text", ["cat", "élan", "1.5", " =x", "a=b", ""])
def test_plain_text_is_left_alone(text):
    assert spreadsheet_safe(text) == text


def test_predictions_csv_is_safe_in_a_spreadsheet(onnx_file, tmp_path, capsys, monkeypatch):
    model = _with_metadata(
        onnx_file, tmp_path / "m.onnx", labels=json.dumps(["=cmd|' /C calc'!A0", "@x", "+y"])
    )
    photos = tmp_path / "photos"
    _photo(photos / "=HYPERLINK(1).png")
    (photos / "-broken.jpg").write_text("not an image")
    out = tmp_path / "out.csv"
    monkeypatch.chdir(photos)  # relative names: the file cells start with the hostile characters
    args = [
        "predict",
        str(model),
        "--top-k",
        "3",
        "--csv",
        str(out),
        "--",
        "=HYPERLINK(1).png",
        "-broken.jpg",
    ]
    assert main(args) == 0
    rows = list(csv.reader(out.open(encoding="utf-8")))
    cells = [cell for row in rows[1:] for cell in row if cell]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))], cells
    ok, broken = rows[1], rows[2]
    assert ok[0] == "'=HYPERLINK(1).png" and broken[0] == "'-broken.jpg"
    assert {ok[1], ok[3], ok[5]} == {"'=cmd|' /C calc'!A0", "'@x", "'+y"}
    assert 0.0 <= float(ok[2]) <= 1.0 and broken[-1].startswith("'-broken.jpg: ")


def test_control_characters_in_labels_and_file_names_are_escaped_when_printed(onnx_file, tmp_path, capsys):
    evil = ["\x1b]0;pwned\x07", "two\nlines", "\u202etxt.exe"]
    model = _with_metadata(onnx_file, tmp_path / "m.onnx", labels=json.dumps(evil))
    photo = _photo(tmp_path / "photos" / "x\x1b[2J.png")
    assert main(["predict", str(model), str(photo), "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
    assert out.count("\n") == 1  # one line per image, whatever the names hold
    assert "\\x1b]0;pwned\\x07" in out and "two\\nlines" in out and "\\u202etxt.exe" in out


def test_csv_is_never_written_into_a_photo_folder(onnx_file, tmp_path, capsys):
    photos = tmp_path / "photos"
    _photo(photos / "a.png")
    assert main(["predict", str(onnx_file), str(photos), "--csv", str(photos / "out.csv")]) == 2
    assert "never writes into photo folders" in capsys.readouterr().err
    assert sorted(p.name for p in photos.iterdir()) == ["a.png"]


# ------------------------------------------------------------------------------------------------------------
# Disk full


def _fill_disk(monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)


def test_disk_full_while_writing_predictions_is_the_engines_message(onnx_file, tmp_path, capsys, monkeypatch):
    photo = _photo(tmp_path / "photos" / "a.png")
    _fill_disk(monkeypatch)
    out = tmp_path / "out.csv"
    assert main(["predict", str(onnx_file), str(photo), "--csv", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: The disk is full: out.csv could not be written" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out.csv.*"))


def test_atomic_write_keeps_the_old_file_when_the_disk_fills(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    target.write_text("old")
    _fill_disk(monkeypatch)
    with pytest.raises(fileio.DiskFullError, match=r"status\.json could not be written"):
        fileio.atomic_write_json(target, {"new": 1})
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["status.json"]


def test_append_on_a_full_disk_is_the_engines_message(tmp_path, monkeypatch):
    real_open = open

    class Full:
        def __init__(self, *a, **k):
            self.f = real_open(*a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("builtins.open", Full)
    with pytest.raises(fileio.DiskFullError, match=r"metrics\.jsonl could not be written"):
        fileio.append_text(tmp_path / "metrics.jsonl", "{}\n")


# ------------------------------------------------------------------------------------------------------------
# Pickles and temporaries


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_pickled_checkpoint_is_refused_with_the_engines_message(tmp_path):
    from bit_engine.runs import RunDir

    run = RunDir(tmp_path)
    torch.save({"model": {}, "meta": _Payload()}, run.file("model.pt"))
    torch.save({"step": 1, "trick": _Payload()}, run.file("checkpoint.pt"))
    for load in (run.load_model, run.load_checkpoint):
        with pytest.raises(
            fileio.UnsafeFileError, match="holds Python objects, which are never loaded"
        ) as info:
            load()
        assert "weights_only" not in str(info.value)


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    stale = tmp_path / ".checkpoint.pt.k2j3h4g5.tmp"
    stale.write_bytes(b"half a checkpoint")
    keep = [tmp_path / "checkpoint.pt", tmp_path / ".hidden", tmp_path / "notes.tmp"]
    for path in keep:
        path.write_text("keep")
    assert fileio.remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)


# ------------------------------------------------------------------------------------------------------------
# Where a run may be written


def test_new_run_folder_checks(tmp_path):
    photos = tmp_path / "photos"
    _photo(photos / "red" / "a.png")
    fileio.check_new_run_folder(tmp_path / "new")  # does not exist: fine
    (tmp_path / "empty").mkdir()
    fileio.check_new_run_folder(tmp_path / "empty")
    with pytest.raises(fileio.OutputPlaceError, match="inside the photo folder"):
        fileio.check_new_run_folder(photos / "run", photos)
    with pytest.raises(fileio.OutputPlaceError, match="inside the photo folder"):
        fileio.check_new_run_folder(photos, photos)
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("report.json", "model.pt", "metrics.jsonl"):
        (mine / name).write_text("the user's")
    with pytest.raises(fileio.OutputPlaceError, match=r"already holds other files \(metrics.jsonl, model.pt"):
        fileio.check_new_run_folder(mine, photos)
    (tmp_path / "file").write_text("x")
    with pytest.raises(fileio.OutputPlaceError, match="is a file"):
        fileio.check_new_run_folder(tmp_path / "file")


def test_linked_path_into_the_photo_folder_is_still_inside(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (tmp_path / "link").symlink_to(photos)
    assert fileio.is_within(tmp_path / "link" / "run", photos)
    assert not fileio.is_within(tmp_path / "photos-runs", photos)


# ------------------------------------------------------------------------------------------------------------
# A photo that breaks after the scan


def test_photo_broken_after_the_scan_is_skipped_with_its_reason(color_folder, capfd):
    from bit_engine.models import BIT_NORMALIZATION as NORM
    from bit_engine.transforms import ImageDataset, Preprocessing

    paths = sorted(str(p) for p in color_folder.rglob("*.png"))
    labels = [0 if "/blue/" in p else 1 if "/green/" in p else 2 for p in paths]
    pre = Preprocessing(resize=16, crop=16, flip=False, random_crop=False, mean=NORM.mean, std=NORM.std)
    dataset = ImageDataset(paths, labels, pre, train=False)
    expected_stand_in = dataset[paths.index(paths[-1]) - 9][0]  # the first photo of the same class
    Path(paths[-1]).write_bytes(b"garbage, not a PNG any more")
    image, label, _ = dataset[len(paths) - 1]
    assert label == labels[-1] and torch.equal(image, expected_stand_in)
    assert f"skipped {paths[-1]!r}: the file is not a photo" in capfd.readouterr().err


def test_training_goes_on_when_a_photo_breaks_after_the_scan(color_folder, tiny_bit, tmp_path, capfd):
    from bit_engine.config import TrainConfig
    from bit_engine.train import fit

    broken = color_folder / "red" / "red_09.png"

    def break_a_photo(progress):
        if progress.phase != "scanning" and broken.read_bytes()[:4] == b"\x89PNG":
            broken.write_bytes(b"replaced by garbage")

    config = TrainConfig(
        data_dir=str(color_folder),
        model=tiny_bit,
        strategy="full",
        steps=4,
        batch=30,
        resolution=16,
        device="cpu",
        workers=0,
        evaluations=1,
    )
    result = fit(config, on_progress=break_a_photo, out=tmp_path / "run")
    assert result.status == "done"
    assert f"skipped {str(broken)!r}" in capfd.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# What a run folder says is checked before use


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "red/../../secret.png", "/etc/passwd", "C:/x.png", "a//b.png"]
)
def test_split_paths_may_not_leave_the_data_folder(path):
    from bit_engine.errors import BitStudioError
    from bit_engine.holdout import Split

    good = {
        "format": 1,
        "root": "/data",
        "classes": ["a", "b"],
        "source": "random",
        "train": [["a/1.png", 0]],
    }
    assert Split.from_dict({**good, "val": [["b/2.png", 1]]}).val[0].path == "b/2.png"
    with pytest.raises(BitStudioError, match="leads outside the data folder"):
        Split.from_dict({**good, "val": [[path, 1]]})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("steps", "100"),
        ("steps", True),
        ("workers", 10**6),
        ("workers", -1),
        ("evaluations", 10**9),
        ("val_fraction", 1.5),
        ("val_fraction", "x"),
        ("strategy", "rm -rf"),
        ("resolution", 100_000),
        ("mixup", float("inf")),
        ("precision", "fp8"),
    ],
)
def test_damaged_config_json_is_one_clear_error(field, value):
    from bit_engine.config import ConfigError, TrainConfig

    d = TrainConfig(data_dir="/data").to_dict()
    words = {"val_fraction": "validation fraction", "mixup": "mixup"}.get(field, field)
    with pytest.raises(ConfigError, match=f"(?i){words}"):
        TrainConfig.from_dict({**d, field: value})


def test_cli_resume_of_a_run_with_a_damaged_config_exits_2(tmp_path, capsys):
    from bit_engine.config import TrainConfig
    from bit_engine.runs import RunDir

    run = RunDir(tmp_path / "run")
    run.write_json("config.json", {**TrainConfig(data_dir=str(tmp_path)).to_dict(), "workers": 10**6})
    assert main(["resume", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "workers" in err.lower() and "Traceback" not in err


def test_resume_removes_what_a_killed_atomic_write_left(tmp_path, capsys):
    from bit_engine.config import TrainConfig
    from bit_engine.runs import RunDir

    run = RunDir(tmp_path / "run")
    run.write_json("config.json", TrainConfig(data_dir=str(tmp_path / "gone")).to_dict())
    stale = run.file(".checkpoint.pt.x7f3k2aa.tmp")
    stale.write_bytes(b"half a checkpoint, written when the process was killed")
    main(["resume", str(run.path)])  # fails later (no photos, no checkpoint); the leftover is gone first
    assert not stale.exists()
    assert run.exists("config.json")


def test_cli_train_refuses_an_out_folder_in_the_photos_or_full_of_other_files(
    color_folder, tiny_bit, tmp_path, capsys
):
    before = sorted(str(p) for p in color_folder.rglob("*"))
    args = ["train", str(color_folder), "--model", tiny_bit, "--steps", "1", "--device", "cpu"]
    assert main([*args, "--out", str(color_folder / "run")]) == 2
    assert "never writes into photo folders" in capsys.readouterr().err
    assert sorted(str(p) for p in color_folder.rglob("*")) == before

    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("report.json", "model.pt", "metrics.jsonl"):
        (mine / name).write_text("the user's own")
    assert main([*args, "--out", str(mine)]) == 2
    assert "already holds other files" in capsys.readouterr().err
    assert all(
        (mine / n).read_text() == "the user's own" for n in ("report.json", "model.pt", "metrics.jsonl")
    )


def test_the_windows_csv_is_escaped_too():
    from app.pages.predict_page import predictions_csv
    from app.widgets.prediction_list import PredictionRow

    rows = [
        PredictionRow(path="=cmd|x.png", predictions=[("@label", 0.9), ("+b", 0.1)], error=None),
        PredictionRow(path="-bad.jpg", predictions=[], error="-bad.jpg: not a photo"),
    ]
    parsed = list(csv.reader(predictions_csv(rows, 2).splitlines()))
    assert parsed[1][:4] == ["'=cmd|x.png", "'@label", "0.900000", "'+b"]
    assert parsed[2][0] == "'-bad.jpg" and parsed[2][-1] == "'-bad.jpg: not a photo"


def test_folder_names_with_control_characters_are_escaped_in_the_plan(tmp_path, tiny_bit, capsys):
    from conftest import make_color_folder

    root = tmp_path / "ds"
    make_color_folder(root, classes=("red", "green"), per_class=4)
    (root / "red").rename(root / "red\x1b]0;pwned\x07")
    (root / "green").rename(root / "gre\nen")
    (root / "gre\nen" / "bad\x1b[2J.png").write_text("not an image")
    assert main(["plan", str(root), "--model", tiny_bit, "--no-estimate"]) in (0, 2)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "red\\x1b]0;pwned\\x07" in out and "gre\\nen" in out


def test_disk_full_during_training_is_the_engines_message(
    color_folder, tiny_bit, tmp_path, capsys, monkeypatch
):
    _fill_disk(monkeypatch)
    args = ["train", str(color_folder), "--model", tiny_bit, "--steps", "1", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "error: The disk is full:" in err and "could not be written" in err and "Traceback" not in err
