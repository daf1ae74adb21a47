"""`bit-studio --self-test`: passes from the installed command, names the stage that failed otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _installed_command() -> list[str]:
    """The `bit-studio` console script this environment installed (pip install -e . or pip install .)."""
    script = Path(sys.executable).parent / ("bit-studio.exe" if os.name == "nt" else "bit-studio")
    if not script.is_file():
        pytest.fail(
            f"No installed bit-studio command next to {sys.executable}: run `pip install -e .` first."
        )
    return [str(script)]


@pytest.mark.slow
def test_self_test_passes_from_the_installed_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}  # it must choose offscreen itself
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    done = subprocess.run(
        [*_installed_command(), "--self-test"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("BiT Studio self-test passed in "), done.stdout
    for stage in ("window", "data", "plan", "train", "export", "predict"):
        assert f"{stage} " in lines[0]
    assert lines[0].endswith("as the engine predicts)")
    assert list(tmp_path.iterdir()) == []  # nothing written where it was started


def _run_in_process(stage: str, failure) -> tuple[int, list[str]]:
    from app.self_test import SelfTest

    said: list[str] = []
    test = SelfTest(Path("unused"))
    setattr(test, f"{stage}_stage", failure)
    return test.run(said.append), said


def test_self_test_says_which_step_is_missing_from_the_build(qapp, monkeypatch):
    from app import main_window

    missing = main_window.Step("predict", "Predict", "app.pages.no_such_page", "PredictPage", "")
    steps = tuple(missing if s.key == "predict" else s for s in main_window.STEPS)
    monkeypatch.setattr(main_window, "STEPS", steps)
    from app.self_test import SelfTest

    said: list[str] = []
    test = SelfTest(Path("unused"))
    test.data_stage = test.plan_stage = test.train_stage = test.export_stage = lambda: None
    assert test.run(said.append) == 1
    assert "FAILED at the predict stage" in said[0]
    assert said[0].endswith("the Predict step is not part of this build of BiT Studio")


def test_self_test_names_the_stage_that_failed(qapp):
    from app.self_test import StageFailed

    def data_stage():
        raise StageFailed("the scan found nothing")

    code, said = _run_in_process("data", data_stage)
    assert code == 1
    assert said[0].startswith("BiT Studio self-test FAILED at the data stage after ")
    assert said[0].endswith("the scan found nothing")


def test_self_test_fails_on_an_error_the_window_shows(qapp):
    from PySide6.QtWidgets import QMessageBox

    original = QMessageBox.critical

    def data_stage():
        QMessageBox.critical(None, "BiT Studio", "The folder cannot be read.")

    code, said = _run_in_process("data", data_stage)
    assert code == 1
    assert "FAILED at the data stage" in said[0]
    assert said[0].endswith("the window showed an error: BiT Studio: The folder cannot be read.")
    assert QMessageBox.critical is original  # the stand-ins are gone afterwards
