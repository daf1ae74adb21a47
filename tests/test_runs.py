"""The run lifecycle a window lists and reopens: statuses (a dead "running" run reads as interrupted), the run
list newest first, and the typed readers of a real run's plan, metrics and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from bit_engine import runs
from bit_engine.report import EvaluationReport
from bit_engine.runs import (
    HEARTBEAT_STALE_S,
    RunDir,
    RunError,
    list_runs,
    read_metrics,
    read_plan,
    read_report,
    read_status,
)


def _fake_run(base, name, *, state="done", accuracy=None, model="BiT-M-R50x1", mtime=None) -> RunDir:
    run = RunDir(base / name)
    run.path.mkdir(parents=True)
    run.write_json("config.json", {"data_dir": f"/photos/{name}", "model": model, "strategy": "head"})
    run.set_status(state, 10 if state == "done" else 4, 10)
    if accuracy is not None:
        run.write_json("report.json", {"accuracy": accuracy})
    if mtime is not None:
        os.utime(run.file("config.json"), (mtime, mtime))
    return run


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # reaped: no process has this id now (ids are not reused this fast)


def test_a_running_status_whose_process_is_gone_reads_as_interrupted(tmp_path):
    run = _fake_run(tmp_path, "r", state="running")
    assert read_status(run.path).state == "running"  # this process wrote it and is alive

    status = run.read_json("status.json")
    run.write_json("status.json", {**status, "pid": _dead_pid()})
    interrupted = read_status(run.path)
    assert interrupted.state == "interrupted" and interrupted.resumable
    assert "can be resumed" in interrupted.message and interrupted.step == 4

    # Another machine's run: its process cannot be asked, its heartbeat can.
    remote = {**status, "host": "elsewhere", "pid": 1}
    run.write_json("status.json", remote)
    assert read_status(run.path).state == "running"
    assert read_status(run.path, now=status["heartbeat"] + HEARTBEAT_STALE_S + 1).state == "interrupted"

    # Written by a version that did not sign it: nobody can say it is alive.
    run.write_json("status.json", {"state": "running", "step": 2, "total_steps": 10, "message": ""})
    assert read_status(run.path).state == "interrupted"


def test_the_heartbeat_only_touches_this_processes_running_status(tmp_path):
    run = _fake_run(tmp_path, "r", state="running")
    before = run.read_json("status.json")["heartbeat"]
    time.sleep(0.01)
    run.beat()
    assert run.read_json("status.json")["heartbeat"] > before
    run.set_status("done", 10, 10, "Validation accuracy 90.0%.")
    done = run.read_json("status.json")
    run.beat()
    assert run.read_json("status.json") == done


def test_runs_are_listed_newest_first_with_what_a_window_shows(tmp_path):
    now = time.time()
    _fake_run(tmp_path, "old", accuracy=0.5, mtime=now - 3600)
    _fake_run(tmp_path, "new", state="cancelled", mtime=now)
    _fake_run(tmp_path, "middle", accuracy=0.75, model="BiT-S-R50x1", mtime=now - 60)
    (tmp_path / "not-a-run").mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")

    listed = list_runs(tmp_path)
    assert [r.name for r in listed] == ["new", "middle", "old"]
    middle = listed[1]
    assert (middle.model, middle.strategy, middle.data_dir) == ("BiT-S-R50x1", "head", "/photos/middle")
    assert (middle.status, middle.step, middle.total_steps, middle.accuracy) == ("done", 10, 10, 0.75)
    assert listed[0].status == "cancelled" and listed[0].accuracy is None and listed[0].step == 4
    assert middle.path == tmp_path / "middle" and middle.created.timestamp() == pytest.approx(now - 60)
    assert list_runs(tmp_path / "nowhere") == []


def test_listing_runs_does_not_import_torch():
    code = "import sys, bit_engine.runs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_typed_readers_of_a_real_run(color_folder, tiny_bit, tmp_path):
    from bit_engine.config import TrainConfig
    from bit_engine.train import fit

    config = TrainConfig(
        data_dir=str(color_folder),
        model=tiny_bit,
        strategy="head",
        steps=4,
        batch=8,
        resolution=32,
        device="cpu",
        workers=0,
        evaluations=2,
    )
    result = fit(config, out=tmp_path / "runs" / "one")
    plan = read_plan(result.run_dir)
    assert plan.model == tiny_bit and plan.total_steps == 4 and plan.crop == 32
    assert plan.classes == ("blue", "green", "red") and "steps" in plan.reasons
    metrics = read_metrics(result.run_dir)
    assert [m.step for m in metrics] == [1, 2, 3, 4]
    assert [m.step for m in metrics if m.val_top1 is not None] == [2, 4]
    report = read_report(result.run_dir)
    assert isinstance(report, EvaluationReport) and report == result.report
    assert report.classes == plan.classes and sum(map(sum, report.confusion)) == report.num_images == 6
    assert set(report.per_class) == set(plan.classes)
    assert json.loads((result.run_dir / "report.json").read_text()) == report.to_dict()
    (summary,) = list_runs(tmp_path / "runs")
    assert (summary.status, summary.accuracy, summary.step) == ("done", report.accuracy, 4)

    with pytest.raises(RunError, match=r"report\.json is missing"):
        read_report(tmp_path)
    assert runs.read_status(result.run_dir).state == "done"
