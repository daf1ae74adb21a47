"""`bit-studio demo` where there is a screen: the window plays Data -> Plan -> Train -> Evaluate -> Export ->
Predict on the sample data, through the same buttons and methods a person uses."""

from __future__ import annotations

import functools
from pathlib import Path

import gui_train_setup
import pytest

from app import main as app_main
from app import settings
from app.guided_demo import GuidedDemo


@pytest.mark.slow
def test_the_demo_plays_the_whole_path_in_the_window(window, qtbot, tiny_bit, monkeypatch):
    from bit_engine import demo, models

    # Fewer sample photos than a person gets, so the test stays quick; the steps are the same.
    monkeypatch.setattr(demo, "make_demo_dataset", functools.partial(demo.make_demo_dataset, per_class=6))
    window.pages["train"].setup = functools.partial(gui_train_setup.register_model, models.get_spec(tiny_bit))
    seen = []
    window.state.runChanged.connect(lambda run: seen.append(("run", run)))
    tour = GuidedDemo(window, pause_s=0.05, model=tiny_bit)
    with qtbot.waitSignal(tour.finished, timeout=240_000) as ended:
        tour.start()
    ok, text = ended.args
    assert ok, text
    assert text.startswith("Demo finished: trained, evaluated, exported and predicted 8 photos")
    assert window.statusBar().currentMessage() == text
    assert window.current_step() == "predict"
    onnx = Path(window.state.onnx_path)
    assert onnx.is_file() and onnx.suffix == ".onnx"
    rows = window.findChild(object, "predictionList").model().rowCount()
    assert rows == 8
    # The sample photos were made in the app's own data folder, never next to anything of the user's.
    assert Path(window.state.data_dir) == settings.sample_data_dir()
    assert seen and Path(seen[-1][1], "model.pt").is_file()


def test_the_demo_plays_in_the_window_only_where_there_is_a_screen(monkeypatch):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(app_main.sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    assert app_main._window_demo(["demo"]) == (True, None)
    assert app_main._window_demo(["demo", "--offline"]) == (True, "EfficientNet-Lite0")
    assert app_main._window_demo(["demo", "--no-window"]) == (False, None)
    assert app_main._window_demo(["demo", "--out", "x"]) == (False, None)
    assert app_main._window_demo(["train", "x"]) == (False, None)
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # tests and the self-test: no one would see it
    assert app_main._window_demo(["demo"]) == (False, None)
    monkeypatch.delenv("QT_QPA_PLATFORM")
    monkeypatch.delenv("DISPLAY")
    assert app_main._window_demo(["demo"]) == (False, None)  # a terminal without a display: the CLI demo
