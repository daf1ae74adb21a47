"""Test-wide fixtures: no test touches the real home folder, the network or a real screen."""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _isolated_folders(tmp_path, monkeypatch):
    """Point the weights cache and the runs folder at a fresh tmp folder for every test."""
    from bit_engine import locations

    monkeypatch.setenv(locations.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(locations.DATA_ENV, str(tmp_path / "data"))
    # Weights are never fetched from the real host in tests: an unroutable base URL unless a test serves one.
    monkeypatch.setenv("BIT_STUDIO_WEIGHTS_URL", "http://127.0.0.1:9/bit_models")
    # The GUI's settings and log file (app/settings.py reads these; plain env vars keep Qt out of engine tests).
    monkeypatch.setenv("BIT_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("BIT_STUDIO_LOG_DIR", str(tmp_path / "log"))


@pytest.fixture(autouse=True)
def _fail_on_uncaught_exception(monkeypatch):
    """An exception escaping a Qt slot only reaches sys.excepthook (pytest-qt cannot see it with PySide6
    6.5.2 and later): collect them and fail the test."""
    caught = []

    def hook(exc_type, exc, tb):
        caught.append(exc)
        sys.__excepthook__(exc_type, exc, tb)

    monkeypatch.setattr(sys, "excepthook", hook)
    yield
    if caught:
        pytest.fail(f"Uncaught exception in a Qt slot: {caught[0]!r}", pytrace=False)


@pytest.fixture(autouse=True)
def _no_worker_left_running():
    """A test that leaves a worker thread running fails (and the thread is stopped, not left to crash)."""
    yield
    workers = sys.modules.get("app.workers")
    if workers is None or not workers._RUNNING:
        return
    if all(w.wait(0) for w in workers._RUNNING):
        # Every thread has ended; only their final signals wait for the event loop: deliver them.
        from PySide6.QtCore import QCoreApplication, QDeadlineTimer

        deadline = QDeadlineTimer(5000)
        while workers._RUNNING and not deadline.hasExpired():
            QCoreApplication.processEvents()
        if not workers._RUNNING:
            return
    left = sorted(w.name for w in workers._RUNNING)
    for w in list(workers._RUNNING):
        w.cancel()
        w.wait(30_000)
    pytest.fail(f"Worker threads still running at the end of the test: {', '.join(left)}", pytrace=False)


def shown(qtbot, widget, size: tuple[int, int] | None = None):
    """`widget` handed to qtbot (closed after the test), resized to `size` if given, shown and exposed."""
    qtbot.addWidget(widget)
    if size is not None:
        widget.resize(*size)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


@pytest.fixture
def window(qtbot):
    """BiT Studio's main window, shown offscreen; its workers are shut down when the test ends."""
    from app import MainWindow

    w = shown(qtbot, MainWindow())
    yield w
    w.shutdown()


@pytest.fixture
def evaluate_page(qtbot):
    """The Evaluate step on its own, shown offscreen at 1200x800 (shut down after the test, as the window
    would)."""
    from app.pages.evaluate_page import EvaluatePage
    from app.state import AppState

    page = shown(qtbot, EvaluatePage(AppState()), (1200, 800))
    yield page
    page.shutdown()


def make_color_folder(root, classes=("red", "green", "blue"), per_class=10, size=(40, 30), seed=0):
    """A separable labelled folder: each class is a colour, with noise so that no two images are equal."""
    import numpy as np
    from PIL import Image

    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 20)}
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.array(colours[name], dtype=np.int16)
            pixels = base + rng.integers(-40, 40, (size[1], size[0], 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{name}_{i:02d}.png")
    return root


@pytest.fixture
def color_folder(tmp_path):
    return make_color_folder(tmp_path / "colours")


@pytest.fixture
def tiny_bit(monkeypatch):
    """A tiny BiT model ("BiT-T-R14x1": one unit per stage) whose 'pre-trained' npz sits in the cache."""
    import torch

    from bit_engine import models, weights_cache

    spec = models.ModelSpec(
        name="BiT-T-R14x1",
        family="bit",
        arch="R14x1",
        upstream="random weights (tests)",
        upstream_classes=10,
        params=0,
        url="http://127.0.0.1:9/BiT-T-R14x1.npz",
        license="test",
    )
    monkeypatch.setitem(models.KNOWN_MODELS, spec.name, spec)
    torch.manual_seed(1234)
    model = models.create_model("R14x1", num_classes=10, zero_head=False)
    path = weights_cache.cache_file(spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    models.save_bit_npz(model, path)
    return spec.name
