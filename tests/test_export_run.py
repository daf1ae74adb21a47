"""From a trained run to an ONNX file and back: the exported model predicts what the app evaluated."""

from __future__ import annotations

import csv
import json

import pytest
from gui_runs import train_colour_run

from bit_engine.cli import main
from bit_engine.evaluate import evaluate_run
from bit_engine.inference import Predictor
from bit_engine.run_export import export_run
from bit_engine.runs import RunDir


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder of its own (these tests export into it): EfficientNet-Lite0's head, seconds, offline."""
    return train_colour_run(tmp_path_factory.mktemp("export"))


def test_exported_model_predicts_what_the_app_evaluated(trained_run):
    record = export_run(trained_run)
    e = record.export
    assert e.path.endswith("model.onnx") and e.verify_images_source == "caller"
    n_val = len(json.loads((trained_run / "split.json").read_text())["val"])
    assert n_val >= 5  # every validation photo is compared, not a sample
    assert e.top1_agree == e.n_images == n_val and e.max_abs_prob_diff <= 1e-4
    saved = RunDir(trained_run).read_json("export.json")
    assert saved["export"]["n_images"] == n_val

    report = evaluate_run(trained_run)
    wrong = {m.file: m.predicted for m in report.misclassified}
    split = json.loads((trained_run / "split.json").read_text())
    predictor = Predictor(e.path)
    assert predictor.labels == ["blue", "green", "red"] and predictor.input_size == (32, 32)
    for rel, label in split["val"]:
        top = predictor.predict(trained_run.parent / "colours" / rel, top_k=1)[0]
        expected = wrong.get(rel, split["classes"][label])
        assert top.label == expected, rel


def test_cli_export_then_predict_to_csv(trained_run, tmp_path, capsys):
    out = tmp_path / "exported" / "colours.onnx"
    assert main(["export", str(trained_run), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    n_val = len(json.loads((trained_run / "split.json").read_text())["val"])
    assert f"Exported {out}" in text and f"same top-1 for {n_val}/{n_val}" in text

    folder = trained_run.parent / "colours"
    (tmp_path / "notes.jpg").write_text("not an image")
    csv_path = tmp_path / "predictions.csv"
    code = main(
        [
            "predict",
            str(out),
            str(folder / "red"),
            str(tmp_path / "notes.jpg"),
            "--top-k",
            "2",
            "--csv",
            str(csv_path),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "notes.jpg: skipped:" in captured.err
    rows = list(csv.DictReader(csv_path.open()))
    labels = [r["label"] for r in rows if not r["error"]]
    assert len(labels) == len(list((folder / "red").iterdir()))  # one row per photo
    assert labels.count("red") >= 0.8 * len(labels)  # a 30-step head on 32 px colours: nearly all right
    assert rows[-1]["file"].endswith("notes.jpg") and rows[-1]["error"]
    assert set(rows[0]) >= {"file", "label", "probability", "label_2", "probability_2"}
    assert not any(p.suffix == ".csv" for p in folder.rglob("*")), "nothing written into the photo folder"


def test_cli_int8_export_shows_its_figures(trained_run, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(trained_run), "--out", str(out), "--quantize", "int8"]) == 0
    text = capsys.readouterr().out
    assert "Int8 copy" in text and "validation accuracy" in text and "images/s" in text
    assert (tmp_path / "m.int8.onnx").exists()


def test_predict_with_a_broken_model_file_says_so(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    assert main(["predict", str(bad), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_export_of_an_unfinished_run_says_what_to_do(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    run.write_json("config.json", {"data_dir": str(tmp_path)})  # started, never finished: no model.pt
    assert main(["export", str(run.path)]) == 2
    assert f"bit-studio resume {run.path}" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "empty")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_cli_export_keeps_a_foreign_file_unless_forced(trained_run, tmp_path, capsys):
    out = tmp_path / "report.onnx"
    out.write_text("the user's own file")
    assert main(["export", str(trained_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a model exported by BiT Studio" in err and "--force" in err and "Traceback" not in err
    assert out.read_text() == "the user's own file"
    assert main(["export", str(trained_run), "--out", str(out), "--force"]) == 0
    assert Predictor(out).labels == ["blue", "green", "red"]


def test_cli_export_never_writes_into_the_photo_folder(trained_run, capsys):
    photos = trained_run.parent / "colours"
    before = sorted(p.name for p in photos.rglob("*"))
    assert main(["export", str(trained_run), "--out", str(photos / "red" / "m.onnx")]) == 2
    assert "never writes into photo folders" in capsys.readouterr().err
    assert sorted(p.name for p in photos.rglob("*")) == before


@pytest.mark.parametrize(
    "damage",
    [
        {"preprocessing": {"crop": 10**6, "mean": [0.5] * 3, "std": [0.5] * 3}},
        {"preprocessing": {"crop": 32, "mean": [0.5] * 3, "std": [0.0] * 3}},
        {"preprocessing": {"crop": "32"}},
        {"classes": ["blue", 7, "red"]},
    ],
)
def test_export_of_a_run_with_a_damaged_model_file_says_so(trained_run, tmp_path, capsys, damage):
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("*.onnx*"))
    payload = torch.load(run / "model.pt", weights_only=True)
    payload["meta"].update(damage)
    torch.save(payload, run / "model.pt")
    assert main(["export", str(run)]) == 2
    err = capsys.readouterr().err
    assert "model.pt is damaged" in err and "Traceback" not in err
    assert not (run / "model.onnx").exists()


def test_export_of_a_run_whose_split_leaves_the_data_folder_says_so(trained_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("*.onnx*"))
    split = json.loads((run / "split.json").read_text())
    split["val"][0][0] = "../../../etc/hostname"
    (run / "split.json").write_text(json.dumps(split))
    assert main(["export", str(run)]) == 2
    assert "leads outside the data folder" in capsys.readouterr().err
