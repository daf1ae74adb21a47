"""`bit-studio demo`: the README's main job, on a machine that cannot reach the BiT weights."""

from __future__ import annotations

import json
import tempfile
import time

from bit_engine.cli import main
from bit_engine.data import scan
from bit_engine.demo import DEMO_CLASSES, make_demo_dataset


def test_demo_dataset_has_four_distinct_classes(tmp_path):
    make_demo_dataset(tmp_path / "d", per_class=5)
    report = scan(tmp_path / "d")
    assert report.classes == DEMO_CLASSES
    assert report.counts["train"] == (5, 5, 5, 5) and not report.duplicates and report.ok


def test_demo_falls_back_to_the_offline_model_and_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the generated photos land in tmp_path
    started = time.monotonic()
    assert main(["demo", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert time.monotonic() - started < 120  # an unreachable weights host must not hang the demo
    assert "Could not download it" in out and "Using EfficientNet-Lite0 instead" in out
    assert "BiT-HyperRule plan for EfficientNet-Lite0" in out and "Time estimates" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["accuracy"] >= 0.9 and report["model"] == "EfficientNet-Lite0"
    assert f"The run is in {tmp_path / 'run'}" in out
