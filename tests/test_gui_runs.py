"""The Runs step: the past runs as the engine lists them, a picked run's curves, plan and status, and its actions.

Run folders are written here as the engine writes them (its own writers where it has them), so the tests
need no training: a finished run, a cancelled one, and one whose training process died while status.json
still said "running" (the engine reads that as interrupted).
"""

from __future__ import annotations

import json

import pytest
from gui_runs import RUN_MODEL as MODEL
from gui_runs import make_run


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
