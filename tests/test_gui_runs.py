"""The Runs step: the past runs as the engine lists them, a picked run's curves, plan and status, and its actions.

Run folders are written here as the engine writes them (its own writers where it has them), so the tests
need no training: a finished run, a cancelled one, and one whose training process died while status.json
still said "running" (the engine reads that as interrupted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bit_engine import locations
from bit_engine.config import TrainConfig
from bit_engine.models import get_spec
from bit_engine.runs import RunDir
from bit_engine.train import make_plan
from bit_engine.transforms import Preprocessing

MODEL = "BiT-M-R50x1"


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def make_run(name: str, data_dir: Path, state: str, step: int, total: int = 20, accuracy=None, age_s=0.0):
    """A run folder under the user's runs folder, as training leaves it in `state` at `step`."""
    run = RunDir(locations.runs_dir() / name)
    run.path.mkdir(parents=True)
    config = TrainConfig(data_dir=str(data_dir), model=MODEL, strategy="full", steps=total)
    plan = make_plan(config, 24, (40, 30))
    pre = Preprocessing.from_plan(plan, get_spec(MODEL).normalization)
    run.write_json("config.json", config.to_dict())
    run.write_json(
        "plan.json", {**plan.to_dict(), "preprocessing": pre.to_dict(), "classes": ["a", "b", "c"]}
    )
    for s in range(1, step + 1):
        record = {"step": s, "epoch": s / 3, "train_loss": 2.0 / s, "lr": 0.003, "elapsed": s * 0.1}
        if s % 5 == 0:
            record.update(val_loss=1.0 / s, val_top1=min(1.0, s / total))
        run.append_metric(record)
    if state == "interrupted":  # what a killed process leaves: "running", signed by a process that is gone
        status = {"state": "running", "step": step, "total_steps": total, "message": "", "error": ""}
        status.update(pid=_dead_pid(), host=__import__("socket").gethostname(), heartbeat=time.time())
        run.write_json("status.json", status)
    else:
        run.set_status(state, step, total, f"{state} at step {step}")
    if accuracy is not None:
        run.write_json("report.json", {"accuracy": accuracy})
        run.file("model.pt").write_bytes(b"weights")
    when = time.time() - age_s
    os.utime(run.file("config.json"), (when, when))
    return run.path


@pytest.fixture
def three_runs(tmp_path):
    data = tmp_path / "My Photos"
    return {
        "done": make_run("run-done", data, "done", 20, accuracy=0.875, age_s=300),
        "cancelled": make_run("run-cancelled", data, "cancelled", 10, age_s=200),
        "interrupted": make_run("run-interrupted", data, "interrupted", 15, age_s=100),
    }


def _open_runs(window, qtbot):
    page = window.pages["runs"]
    with qtbot.waitSignal(page.runsLoaded, timeout=10_000):
        window.go_to("runs")
    return page


def _row(page, row: int) -> list[str]:
    proxy = page.table.model()
    return [proxy.index(row, c).data() for c in range(proxy.columnCount())]


def _pick(page, qtbot, row: int) -> str:
    with qtbot.waitSignal(page.runOpened, timeout=10_000) as blocker:
        page.table.selectRow(row)
    return blocker.args[0]


def test_the_list_shows_every_run_newest_first_and_an_interrupted_one_as_resumable(window, qtbot, three_runs):
    page = _open_runs(window, qtbot)
    assert page.table.objectName() == "runList" and page.table.isVisible()
    rows = [_row(page, r) for r in range(3)]
    assert [r[0] for r in rows] == ["run-interrupted", "run-cancelled", "run-done"]
    assert rows[0][4] == "Interrupted · resumable · step 15/20"
    assert rows[1][4] == "Cancelled · resumable · step 10/20"
    assert rows[2][1:6] == ["My Photos", MODEL, "Fine-tune", "Done", "87.5%"]
    assert rows[0][5] == ""  # no accuracy before the run is done
    assert rows[2][6].count("-") == 2 and ":" in rows[2][6]  # a date and a time


def test_a_picked_run_shows_its_curves_plan_and_status_with_what_applies(window, qtbot, three_runs):
    page = _open_runs(window, qtbot)
    assert _pick(page, qtbot, 0) == str(three_runs["interrupted"])
    assert "Interrupted" in page.status_label.text() and "resumed" in page.status_label.text()
    assert "20 steps" in page.plan_label.text() and "3 classes" in page.plan_label.text()
    loss = page.charts.loss_chart.listDataItems()[0].getData()[0]
    accuracy = page.charts.accuracy_chart.listDataItems()[0].getData()
    assert list(loss) == list(range(1, 16))
    assert list(accuracy[0]) == [5, 10, 15] and list(accuracy[1]) == [25.0, 50.0, 75.0]
    assert page.resume_button.isVisible() and page.resume_button.isEnabled()
    assert not page.evaluate_button.isVisible() and not page.export_button.isVisible()

    _pick(page, qtbot, 2)
    assert not page.resume_button.isVisible()
    assert page.evaluate_button.isVisible() and page.export_button.isVisible()
    page.evaluate_button.click()
    assert window.state.run_dir == str(three_runs["done"])
    assert window.current_step() == "evaluate"


def test_resume_from_the_list_continues_the_run_in_the_train_step(window, qtbot, three_runs, monkeypatch):
    page = _open_runs(window, qtbot)
    resumed = []
    monkeypatch.setattr(window.pages["train"], "resume", resumed.append)
    _pick(page, qtbot, 1)
    page.resume_button.click()
    assert resumed == [str(three_runs["cancelled"])]
    assert window.current_step() == "train" and window.step_reason("train") is None


def test_no_runs_says_where_they_come_from(window, qtbot):
    page = _open_runs(window, qtbot)
    assert page.empty_label.isVisible() and "Train step" in page.empty_label.text()
    assert not page.table.isVisible()


def test_a_run_that_finishes_elsewhere_appears_when_the_list_is_shown(window, qtbot, tmp_path, three_runs):
    page = _open_runs(window, qtbot)
    new = make_run("run-new", tmp_path / "other", "done", 20, accuracy=0.5)
    with qtbot.waitSignal(page.runsLoaded, timeout=10_000):
        window.state.set_run(str(new))
    assert _row(page, 0)[0] == "run-new"
    qtbot.waitUntil(lambda: page.run_title.text() == "<b>run-new</b>", timeout=10_000)
    assert json.loads((new / "status.json").read_text())["state"] == "done"
