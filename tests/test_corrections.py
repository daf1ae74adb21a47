"""Label corrections: kept per data folder outside it, undoable, CSV in and out, applied by the next run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import make_color_folder

from bit_engine import data
from bit_engine.cli import main
from bit_engine.config import TrainConfig
from bit_engine.corrections import (
    AppliedCorrections,
    Correction,
    CorrectionsError,
    CorrectionStore,
    apply_corrections,
    corrections_csv,
    read_csv,
    run_corrections,
    write_csv,
)
from bit_engine.fileio import OutputPlaceError
from bit_engine.preparation import prepare
from bit_engine.runs import read_plan


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `folder` with its size and modification time: a snapshot to compare."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


RED_AS_BLUE = Correction("red/red_00.png", "red", "blue")
LEAVE_GREEN = Correction("green/green_01.png", "green", None)


# ----------------------------------------------------------------------------------------------------------
# The store


def test_the_store_lives_under_the_user_data_folder_and_never_writes_in_the_photo_folder(
    color_folder, tmp_path
):
    before = tree(color_folder)
    store = CorrectionStore(color_folder)
    store.add(RED_AS_BLUE)
    store.add(LEAVE_GREEN)
    store.undo()
    store.remove("red/red_00.png")
    store.add(RED_AS_BLUE)
    with pytest.raises(OutputPlaceError, match="never writes into photo folders"):
        store.export_csv(color_folder / "red" / "fixes.csv")
    assert store.export_csv(tmp_path / "fixes.csv") == 1
    store.import_csv(tmp_path / "fixes.csv")
    assert tree(color_folder) == before

    assert store.file.is_relative_to(tmp_path / "data")  # BIT_STUDIO_DATA_DIR, redirected by conftest
    kept = json.loads(store.file.read_text(encoding="utf-8"))
    assert kept["folder"] == str(color_folder.resolve())
    # The same folder under another spelling, or through a link, shares its corrections; another does not.
    link = tmp_path / "link"
    link.symlink_to(color_folder)
    assert CorrectionStore(link).corrections() == (RED_AS_BLUE,)
    assert CorrectionStore(str(color_folder) + "/red/..").corrections() == (RED_AS_BLUE,)
    assert CorrectionStore(tmp_path).corrections() == ()


def test_undo_takes_back_the_last_change_and_remove_any_one(color_folder):
    store = CorrectionStore(color_folder)
    assert store.undo() is None and store.corrections() == ()
    store.add(RED_AS_BLUE)
    store.add(LEAVE_GREEN)
    again = Correction("red/red_00.png", "red", None)  # the same photo, decided differently
    store.add(again)
    assert store.corrections() == (LEAVE_GREEN, again)
    assert store.get("red/red_00.png") == again
    assert store.undo() == again
    assert store.corrections() == (RED_AS_BLUE, LEAVE_GREEN)  # the earlier decision is back
    assert store.remove("red/red_00.png") == RED_AS_BLUE
    assert store.corrections() == (LEAVE_GREEN,)
    assert store.remove("red/red_00.png") is None
    assert len(store) == 1 and store.as_config() == (("green/green_01.png", "green", None),)
    store.clear()
    assert store.corrections() == ()


def test_a_damaged_store_is_a_message_not_a_traceback(color_folder):
    store = CorrectionStore(color_folder)
    store.add(RED_AS_BLUE)
    store.file.write_text("{not json", encoding="utf-8")
    with pytest.raises(CorrectionsError, match=r"damaged.*Delete that file"):
        store.corrections()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("/etc/passwd", "red", "blue"), "relative to the data folder"),
        (("red/../../x.png", "red", "blue"), "relative to the data folder"),
        (("red/a.png", "red", "red"), "nothing to correct"),
        (("red/a.png", "", "blue"), "needs the photo's path"),
        (("red/a.png", "red", ""), "must be a class name"),
    ],
)
def test_a_malformed_correction_is_refused_in_words(args, message):
    with pytest.raises(CorrectionsError, match=message):
        Correction(*args)


# ----------------------------------------------------------------------------------------------------------
# CSV


def test_csv_round_trip_is_exact_and_formulas_are_inert(tmp_path):
    tricky = (
        Correction('=HYPERLINK("x")/a.png', "-1", "+2"),
        Correction("@cmd/b.png", "'quoted", "=1+1"),
        Correction('chats, "drôles"/c\nd.png', "chat", None),
        Correction("plain/e.png", "leave out", "a"),  # a class named like the action is still a class
    )
    text = corrections_csv(tricky)
    lines = text.splitlines()
    assert lines[0] == '"path","given_label","corrected_label","action"'
    # Every cell that a spreadsheet would run as a formula starts with a quote.
    assert '"\'=HYPERLINK(""x"")/a.png","\'-1","\'+2","relabel"' in lines
    assert '"\'@cmd/b.png","\'\'quoted","\'=1+1","relabel"' in lines
    write_csv(tmp_path / "c.csv", tricky)
    assert read_csv(tmp_path / "c.csv") == tricky


def test_a_three_column_csv_from_a_spreadsheet_reads_too(tmp_path):
    path = tmp_path / "hand.csv"
    path.write_text(
        "\ufeffPath,Given label,Corrected label,notes\r\nred/red_00.png,red,blue,looks blue\r\n\r\n"
        "green/green_01.png,green,,\r\nred/red_00.png,red,green,changed my mind\r\n",
        encoding="utf-8",
    )
    assert read_csv(path) == (
        Correction("green/green_01.png", "green", None),
        Correction("red/red_00.png", "red", "green"),
    )
    # Turning a row into a leave-out while editing: the action decides, whatever the label cell still says.
    path.write_text(
        "path,given_label,corrected_label,action\nred/a.png,red,blue,Leave out\n", encoding="utf-8"
    )
    assert read_csv(path) == (Correction("red/a.png", "red", None),)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        (
            "file,label\na.png,red\n",
            r"not a corrections file: its first line must name the columns path, given_label",
        ),
        ("path,given_label,corrected_label\n../x.png,red,blue\n", "line 2: The photo path"),
        (
            "path,given_label,corrected_label,action\nred/a.png,red,,relabel\n",
            "line 2: the corrected_label is empty",
        ),
        (
            "path,given_label,corrected_label,action\nred/a.png,red,blue,delete\n",
            "line 2: the action must be",
        ),
    ],
)
def test_a_bad_corrections_file_says_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "c.csv"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CorrectionsError, match=message):
        read_csv(path)
    (tmp_path / "latin1.csv").write_bytes(
        "path,given_label,corrected_label\nr\xe9d/a.png,r,b\n".encode("latin-1")
    )
    with pytest.raises(CorrectionsError, match="not a text file in UTF-8"):
        read_csv(tmp_path / "latin1.csv")


# ----------------------------------------------------------------------------------------------------------
# Applying


def test_apply_relabels_leaves_out_and_reports_what_it_cannot_apply(color_folder):
    report = data.scan(color_folder)
    before = tree(color_folder)
    fixes = [
        RED_AS_BLUE,
        LEAVE_GREEN,
        Correction("blue/blue_02.png", "blue", "purple"),  # no such class
        Correction("blue/gone.png", "blue", "red"),  # no such photo
        Correction("blue/blue_03.png", "red", "green"),  # made when the photo was in red/
    ]
    corrected, applied = apply_corrections(report, fixes)
    assert applied.applied == (RED_AS_BLUE, LEAVE_GREEN)
    assert [why for _, why in applied.not_applied] == [
        "there is no class 'purple' in this folder",
        "the photo is no longer in the folder",
        "its folder labels it 'blue' now, not 'red' (moved since?)",
    ]
    assert (applied.relabelled, applied.left_out) == (1, 1)
    assert applied.summary() == "2 corrections applied (1 relabelled, 1 left out); 3 not applied."
    label = {s.path: corrected.classes[s.label] for s in corrected.train}
    assert label["red/red_00.png"] == "blue"
    assert "green/green_01.png" not in label
    assert len(corrected.train) == len(report.train) - 1
    assert dict(zip(corrected.classes, corrected.counts["train"], strict=True)) == {
        "blue": 11,
        "green": 9,
        "red": 9,
    }
    assert report.train != corrected.train  # the scan itself is left as it was
    assert AppliedCorrections.from_dict(json.loads(json.dumps(applied.to_dict()))) == applied
    assert tree(color_folder) == before


def test_config_carries_corrections_through_json_and_refuses_bad_ones():
    config = TrainConfig("x", corrections=[["red/a.png", "red", "blue"], ("green/b.png", "green", None)])
    assert config.corrections == (("red/a.png", "red", "blue"), ("green/b.png", "green", None))
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    problems = TrainConfig.check(data_dir="x", corrections=[("../a.png", "red", "blue")])
    assert "relative to the data folder" in problems["corrections"]
    assert "corrections" in TrainConfig.check(data_dir="x", corrections="red/a.png")
    assert (
        "must change the label"
        in TrainConfig.check(data_dir="x", corrections=[("a.png", "red", "red")])["corrections"]
    )


def test_prepare_applies_the_configs_corrections_and_with_config_reapplies_without_a_rescan(
    color_folder, monkeypatch
):
    config = TrainConfig(str(color_folder), model="EfficientNet-Lite0", seed=3)
    plain = prepare(config)
    fixed = plain.with_config(config.replace(corrections=(RED_AS_BLUE.as_tuple(), LEAVE_GREEN.as_tuple())))
    assert fixed.corrections.applied == (RED_AS_BLUE, LEAVE_GREEN)
    assert fixed.num_train + fixed.num_val == plain.num_train + plain.num_val - 1
    labels = {s.path: fixed.classes[s.label] for s in (*fixed.split.train, *fixed.split.val)}
    assert labels["red/red_00.png"] == "blue" and "green/green_01.png" not in labels
    assert fixed.scanned is plain.scanned  # the folder was not scanned again
    monkeypatch.setattr(data, "scan", lambda *a, **k: pytest.fail("scanned again"))
    assert plain.with_config(config).corrections.applied == ()


# ----------------------------------------------------------------------------------------------------------
# A run with corrections, from the engine and from the command line


def test_a_run_records_the_corrections_it_trained_with(tmp_path, tiny_bit, capsys):
    folder = make_color_folder(tmp_path / "photos", per_class=8)
    before = tree(folder)
    fixes = tmp_path / "fixes.csv"
    write_csv(fixes, [RED_AS_BLUE, LEAVE_GREEN, Correction("red/red_01.png", "red", "purple")])
    code = main(
        ["train", str(folder), "--model", tiny_bit, "--strategy", "head", "--steps", "5", "--batch", "8",
         "--resolution", "32", "--device", "cpu", "--corrections", str(fixes), "--out", str(tmp_path / "run")]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Label corrections: 2 corrections applied (1 relabelled, 1 left out); 1 not applied." in out
    assert "not applied: red/red_01.png: red -> purple (there is no class 'purple' in this folder)" in out
    used = run_corrections(tmp_path / "run")
    assert used.applied == (RED_AS_BLUE, LEAVE_GREEN) and len(used.not_applied) == 1
    assert read_plan(tmp_path / "run").corrections == {
        "applied": 2,
        "relabelled": 1,
        "left_out": 1,
        "not_applied": 1,
    }
    split = json.loads((tmp_path / "run" / "split.json").read_text(encoding="utf-8"))
    rows = {p: split["classes"][label] for p, label in split["train"] + split["val"]}
    assert rows["red/red_00.png"] == "blue" and "green/green_01.png" not in rows
    config = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert config["corrections"][0] == ["red/red_00.png", "red", "blue"]
    assert tree(folder) == before

    # A run without corrections has no record of any.
    code = main(
        ["train", str(folder), "--model", tiny_bit, "--strategy", "head", "--steps", "2", "--batch", "8",
         "--resolution", "32", "--device", "cpu", "--out", str(tmp_path / "plain"), "--json"]
    )  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0 and "corrections" not in json.loads(out.splitlines()[-1])
    assert run_corrections(tmp_path / "plain") is None and read_plan(tmp_path / "plain").corrections == {}


def test_train_with_a_bad_corrections_file_exits_2_before_training(color_folder, tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    for path, message in (
        (tmp_path / "missing.csv", "error: The corrections file .*missing.csv does not exist."),
        (tmp_path / "bad.csv", "error: .*bad.csv is not a corrections file"),
    ):
        code = main(["train", str(color_folder), "--corrections", str(path), "--out", str(tmp_path / "run")])
        out, err = capsys.readouterr()
        assert code == 2 and "Traceback" not in out + err
        assert __import__("re").search(message, err)
        assert not (tmp_path / "run").exists()
