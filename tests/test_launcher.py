"""One engine entry for training: a single device in a child process, as the desktop app runs it; what the
caller sees when that child finishes, is cancelled, is stopped, or is killed; and that nothing is left behind.

The child is spawned from a fresh interpreter: the `tiny_bit` fixture's table entry reaches it through
`setup`, which registers the same entry there (and pins the child to one thread: the machine is shared).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import torch

from bit_engine import locations, models
from bit_engine.config import TrainConfig
from bit_engine.distributed import TrainJob
from bit_engine.launcher import TrainingProcess, TrainingProcessError, start_training
from bit_engine.progress import OperationCancelled, Progress
from bit_engine.runs import RunDir, read_status
from bit_engine.train import TrainingError, resume

FAST = {"steps": 8, "batch": 8, "resolution": 32, "workers": 0, "evaluations": 2, "precision": "fp32"}

pytestmark = pytest.mark.slow


def _register(spec: models.ModelSpec) -> None:
    torch.set_num_threads(1)
    models.KNOWN_MODELS[spec.name] = spec


@pytest.fixture
def setup(tiny_bit):
    return functools.partial(_register, models.get_spec(tiny_bit))


def _config(folder, model, **kw) -> TrainConfig:
    return TrainConfig(data_dir=str(folder), model=model, device="cpu", **{**FAST, **kw})


def _assert_nothing_left(process: TrainingProcess) -> None:
    assert process.processes, "the run was expected in a child process"
    assert not process.is_alive()
    assert all(p.exitcode is not None for p in process.processes)


def test_one_device_trains_in_a_child_and_progress_arrives_here(color_folder, tiny_bit, setup, tmp_path):
    process = start_training(
        TrainJob(config=_config(color_folder, tiny_bit), out=str(tmp_path / "run")), "cpu", setup=setup
    )
    assert process.run_dir == tmp_path / "run" and process.run_dir.is_dir()  # known before it starts
    seen: list[Progress] = []
    result = process.run(seen.append)

    assert result.status == "done" and result.step == 8 and result.run_dir == tmp_path / "run"
    assert result.report is not None and result.report.num_images == 6
    _assert_nothing_left(process)
    assert process.processes[0].pid != os.getpid()
    phases = [p.phase for p in seen]
    assert phases[0] == "starting" and phases[-1] == "done"
    assert [p.step for p in seen if p.phase == "training"] == list(range(1, 9))
    # Evaluation counts images: the last report of each evaluation says all 6 were seen.
    evaluating = [p for p in seen if p.phase == "evaluating"]
    assert {p.total for p in evaluating} == {6} and [p.done for p in evaluating].count(6) == 3
    assert read_status(result.run_dir).state == "done"


def test_a_killed_child_leaves_a_failed_resumable_run(color_folder, tiny_bit, setup, tmp_path):
    process = start_training(
        TrainJob(config=_config(color_folder, tiny_bit, steps=40), out=str(tmp_path / "run")),
        "cpu",
        setup=setup,
    )
    killed: list[int] = []

    def kill_at_step_21(p: Progress) -> None:
        # Step 20 wrote a checkpoint (evaluations=2 of 40 steps): the kill loses the steps after it.
        if p.phase == "training" and p.step == 21 and not killed:
            killed.append(process.pids[0])
            os.kill(process.pids[0], signal.SIGKILL)  # what the system's out-of-memory killer does

    with pytest.raises(TrainingProcessError) as info:
        process.run(kill_at_step_21)
    message = str(info.value)
    assert "The training process (cpu) was killed (SIGKILL)" in message
    assert "can be resumed from its last checkpoint (step 20)" in message
    assert info.value.resumable and info.value.run_dir == tmp_path / "run" and info.value.remedy == "resume"
    _assert_nothing_left(process)
    status = read_status(tmp_path / "run")
    assert status.state == "failed" and status.step == 20 and "was killed" in status.error

    resumed = resume(tmp_path / "run")
    assert resumed.status == "done" and resumed.step == 40
    assert [m["step"] for m in RunDir(tmp_path / "run").read_metrics()] == list(range(1, 41))


def test_cancel_and_stop_end_the_documented_way(color_folder, tiny_bit, setup, tmp_path):
    # cancel= flag: the child stops at the next micro-batch with a checkpoint, the caller gets
    # OperationCancelled naming the run.
    cancel = threading.Event()
    process = start_training(
        TrainJob(config=_config(color_folder, tiny_bit, steps=40), out=str(tmp_path / "a")),
        "cpu",
        setup=setup,
    )
    with pytest.raises(OperationCancelled) as info:
        process.run(lambda p: p.phase == "training" and p.step == 2 and cancel.set(), cancel)
    assert info.value.run_dir == tmp_path / "a" and 2 <= info.value.step < 40
    assert read_status(tmp_path / "a").state == "cancelled"
    _assert_nothing_left(process)

    # stop() from another thread, with a grace too short for a polite stop: SIGTERM ends the child, and the
    # run is still reported (and recorded) as cancelled, resumable from its last checkpoint.
    process = start_training(
        TrainJob(config=_config(color_folder, tiny_bit, steps=400), out=str(tmp_path / "b")),
        "cpu",
        setup=setup,
    )

    def stop_soon(p: Progress) -> None:
        if p.phase == "training" and p.step == 1:
            threading.Thread(target=process.stop, kwargs={"grace_s": 0.0}).start()

    with pytest.raises(OperationCancelled) as info:
        process.run(stop_soon)
    assert info.value.run_dir == tmp_path / "b"
    assert read_status(tmp_path / "b").state == "cancelled"
    _assert_nothing_left(process)
    assert RunDir(tmp_path / "b").exists("config.json")  # what `resume` needs


def test_errors_from_the_child_reach_the_caller_as_raised(tmp_path, tiny_bit, setup):
    empty = tmp_path / "photos"
    empty.mkdir()
    process = start_training(
        TrainJob(config=_config(empty, tiny_bit), out=str(tmp_path / "run")), "cpu", setup=setup
    )
    with pytest.raises(TrainingError, match="cannot be trained on"):
        process.run()
    assert not (tmp_path / "run").exists()  # made for the run, which never started: removed
    _assert_nothing_left(process)


def test_start_training_refuses_early(color_folder, tiny_bit, tmp_path):
    with pytest.raises(TrainingError, match="not a run folder"):
        start_training(TrainJob(run_dir=str(tmp_path / "nowhere")))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(TrainingError, match="already holds a run"):
        start_training(TrainJob(config=_config(color_folder, tiny_bit), out=str(run)))


def test_in_this_process_when_asked(color_folder, tiny_bit, tmp_path):
    process = start_training(
        TrainJob(config=_config(color_folder, tiny_bit, strategy="head")), "cpu", isolate=False
    )
    assert process.run_dir.is_dir() and process.run_dir.parent == locations.runs_dir()
    seen = []
    result = process.run(lambda p: seen.append(process.pids))
    assert result.status == "done" and process.processes == [] and seen[-1] == [os.getpid()]
    assert process.pids == [] and not process.is_alive()


def _register_and_record_start_method(spec: models.ModelSpec, path: str) -> None:
    _register(spec)
    Path(path).write_text(multiprocessing.get_start_method())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is Linux's default")
def test_the_child_starts_its_data_workers_by_fork(color_folder, tiny_bit, tmp_path):
    # A spawned child defaults to spawn: each DataLoader worker would be a new interpreter importing torch,
    # seconds per pass over the photos (the head strategy's feature pass took 13.6 s instead of 3.7).
    record = tmp_path / "start-method.txt"
    setup = functools.partial(_register_and_record_start_method, models.get_spec(tiny_bit), str(record))
    config = _config(color_folder, tiny_bit, strategy="head", workers=1)
    process = start_training(TrainJob(config=config, out=str(tmp_path / "run")), "cpu", setup=setup)
    result = process.run()
    assert result.status == "done" and result.report.num_images == 6
    assert record.read_text() == "fork"
    _assert_nothing_left(process)


def _sleep_forever() -> None:
    import time

    time.sleep(600)


def _lead_a_group_and_fork_a_worker(connection) -> None:
    from bit_engine.machine import lead_process_group

    lead_process_group()
    worker = multiprocessing.get_context("fork").Process(target=_sleep_forever, daemon=True)
    worker.start()
    connection.send(worker.pid)
    _sleep_forever()


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_a_stopped_child_takes_its_forked_workers_with_it_at_once():
    # A DataLoader worker forked by the window's timing or training child outlived a SIGTERM of the child by
    # up to 5 s, and held the pipe by which `join` sees the child end: closing the window while the Plan step
    # was timing waited that long (and a run in the Train step finished meanwhile instead of stopping).
    import time

    from bit_engine.machine import stop_with_workers

    receiving, sending = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(
        target=_lead_a_group_and_fork_a_worker, args=(sending,)
    )
    child.start()
    try:
        assert receiving.poll(60), "the child did not start its worker"
        worker_pid = receiving.recv()
        started = time.monotonic()
        stop_with_workers(child.pid)
        child.join(10)
        seconds = time.monotonic() - started
        assert child.exitcode == -signal.SIGTERM and seconds < 2
        with pytest.raises(ProcessLookupError):
            for _ in range(100):  # the worker, reaped by init once its parent is gone
                os.kill(worker_pid, 0)
                time.sleep(0.02)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
