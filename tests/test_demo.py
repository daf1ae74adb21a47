"""`bit-studio demo`: the README's main job, on a machine that cannot reach the BiT weights."""

from __future__ import annotations

import json
import re
import tempfile
import time

import pytest

from bit_engine import model_choice
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
    choose, took = model_choice.choose_default_model, []

    def timed_choice(**kwargs):
        started = time.monotonic()
        try:
            return choose(**kwargs)
        finally:
            took.append(time.monotonic() - started)

    monkeypatch.setattr(model_choice, "choose_default_model", timed_choice)
    assert main(["demo", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert took and took[0] < 15  # an unreachable weights host must not hang the demo
    assert "trying to download them" in out and "could not be downloaded" in out
    assert "Using EfficientNet-Lite0 instead" in out
    assert "BiT-HyperRule plan for EfficientNet-Lite0" in out and "Time estimates" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["accuracy"] >= 0.9 and report["model"] == "EfficientNet-Lite0"
    assert f"The run is in {tmp_path / 'run'}" in out
    # The time it took, next to the plan's estimate.
    estimated = re.search(r"^  head +About (\d+) (second|minute)s? on CPU", out, re.M)
    finished = re.search(r"^Finished in (\w+) \(the plan estimated: (\w+)\)\.$", out, re.M)
    assert estimated and finished, out
    said = int(estimated[1]) * (60 if estimated[2] == "minute" else 1)
    assert abs(seconds_of(finished[2]) - said) <= (30 if estimated[2] == "minute" else 1)  # the same figure
    # The sample folder it made is named at the end, where the user looks.
    [made] = tmp_path.glob("bit-studio-demo-*")
    assert f"The sample photos stay in {made} " in out and "delete that folder" in out


def test_demo_offline_says_why_without_trying_the_network(tmp_path, monkeypatch, capsys):
    from bit_engine.cli import cmd_train

    def no_training(fn, config, printer, cancel, **kwargs):
        raise SystemExit(f"would train {config.model}")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(cmd_train, "_with_sigint", no_training)
    monkeypatch.setattr(cmd_train, "_show_plan", lambda *a, **k: 0)
    with pytest.raises(SystemExit, match="would train EfficientNet-Lite0"):
        main(["demo", "--offline"])
    out = capsys.readouterr().out
    assert "trying to download" not in out
    assert "BiT-M-R50x1's weights (" in out and "are not on this machine: using EfficientNet-Lite0" in out


def seconds_of(duration: str) -> int:
    """Seconds in a `format_duration` text: "42s", "3m05s", "2h10m"."""
    h, m, sec = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration).groups(default="0")
    return int(h) * 3600 + int(m) * 60 + int(sec)
