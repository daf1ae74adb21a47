"""Data-parallel training on the CPU with gloo: two processes end where one ends; cancel, dead and hung ranks;
device discovery.

Spawned ranks start from a fresh interpreter: the `tiny_bit` fixture's table entry does not reach them, so
each launch passes `setup`, a picklable callable that registers the same entry in every rank. The weights
cache travels through the environment (BIT_STUDIO_CACHE_DIR), which spawned processes inherit.

Threads are pinned to one in this process, as `run_rank` pins each of two CPU ranks to half the cores: on a
two-core machine shared with other work, a second thread per process only waits.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time

import pytest
import torch

from bit_engine import devices, distributed, models, train, weights_cache
from bit_engine.config import TrainConfig
from bit_engine.devices import parse_devices
from bit_engine.distributed import DistributedError, TrainJob
from bit_engine.launcher import TrainingProcess, launch
from bit_engine.progress import OperationCancelled, Progress
from bit_engine.runs import RunDir
from bit_engine.train import fit, resume

#: At least 10 optimizer steps; micro-batches of 4 divide each rank's share of 8 (see the mixup test).
FAST = {
    "steps": 10,
    "batch": 16,
    "resolution": 32,
    "workers": 0,
    "evaluations": 2,
    "micro_batch": 4,
    "precision": "fp32",
}

#: Largest weight difference allowed between one process and two.
TOLERANCE = 1e-5

pytestmark = pytest.mark.slow


def _register(spec: models.ModelSpec) -> None:
    models.KNOWN_MODELS[spec.name] = spec


def _register_and_stall(spec: models.ModelSpec, rank: int, step: int) -> None:
    """In rank `rank`: hang (alive, silent) when step `step` begins: a deadlock, a stuck driver."""
    _register(spec)
    if int(os.environ["RANK"]) != rank:
        return
    original = train.mixup_lambda

    def stall(seed, at, alpha):
        if at == step:
            time.sleep(3600)
        return original(seed, at, alpha)

    train.mixup_lambda = stall


@pytest.fixture
def setup(tiny_bit):
    return functools.partial(_register, models.get_spec(tiny_bit))


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(folder, model, **kw):
    return TrainConfig(data_dir=str(folder), model=model, device="cpu", **{**FAST, **kw})


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(RunDir(run_dir).file("model.pt"), weights_only=True)["model"]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _losses(run_dir) -> list[float]:
    return [m["train_loss"] for m in RunDir(run_dir).read_metrics()]


def _initial_weights(model_name: str, num_classes: int) -> dict[str, torch.Tensor]:
    model = models.create_model(model_name, num_classes=num_classes)  # zero head, as fine-tuning starts
    models.load_bit_npz(model, weights_cache.cache_file(model_name))
    return model.state_dict()


# --------------------------------------------------------------------------------------------------------------
# Equivalence


def test_two_processes_end_with_the_weights_of_one(color_folder, tiny_bit, setup, tmp_path):
    config = _config(color_folder, tiny_bit, mixup=0.0)
    one = fit(config, out=tmp_path / "one")
    seen: list = []
    two = launch(config, "cpu:2", seen.append, out=tmp_path / "two", setup=setup)

    assert (one.status, two.status) == ("done", "done") and two.step == 10
    a, b = _weights(one.run_dir), _weights(two.run_dir)
    assert _max_diff(a, b) <= TOLERANCE
    # Not vacuous: the weights moved far more than the tolerance. A rank's gradient lost or counted twice
    # would change every update by about half, a difference of the order of this movement.
    assert _max_diff(a, _initial_weights(tiny_bit, 3)) >= 50 * TOLERANCE
    # The global batch's loss, not rank 0's half of it.
    assert _losses(two.run_dir) == pytest.approx(_losses(one.run_dir), abs=TOLERANCE)

    # The caller gets what one process gives it: the same Progress objects, in the same phase order.
    assert all(isinstance(p, Progress) for p in seen)
    assert [p.step for p in seen if p.phase == "training"] == list(range(1, 11))
    phases = [p.phase for p in seen]
    assert phases[0] == "starting" and phases[-1] == "done"
    assert phases.index("scanning") < phases.index("training")
    assert two.val_top1 == pytest.approx(one.val_top1)
    assert json.loads((two.run_dir / "config.json").read_text())["device"] == "cpu"


def test_with_mixup_the_loss_curves_agree(color_folder, tiny_bit, setup, tmp_path):
    """Tolerance: equal up to float rounding, because the runs mix the same images.

    Mixup's lambda comes from (seed, step) and the partners from (seed, step, position of the micro-batch in
    the global batch). With micro-batches of 4, one process cuts the batch of 16 at 0, 4, 8, 12, and two
    processes cut their shares of 8 at the same places: same pairs, same lambda, same inputs. What remains
    is the order of float additions (two partial gradients all-reduced instead of one sum), about 1e-7
    relative per step; TOLERANCE (1e-5 absolute on a loss near 1) leaves a wide margin for it. It is tight
    enough to see a different pairing: the same run cut into micro-batches of 8 pairs other images, and its
    curve leaves the tolerance (checked below). Runs whose micro-batches do not line up (e.g. the automatic
    size, 16 on one process and 8 on two) pair different images and agree only in distribution.
    """
    config = _config(color_folder, tiny_bit, mixup=0.2)
    one = fit(config, out=tmp_path / "one")
    two = launch(config, "cpu:2", out=tmp_path / "two", setup=setup)
    other_pairs = fit(config.replace(micro_batch=8), out=tmp_path / "pairs")

    curve_one, curve_two = _losses(one.run_dir), _losses(two.run_dir)
    assert len(curve_one) == len(curve_two) == 10
    assert max(abs(x - y) for x, y in zip(curve_one, curve_two, strict=True)) <= TOLERANCE
    assert _max_diff(_weights(one.run_dir), _weights(two.run_dir)) <= TOLERANCE
    assert (
        max(abs(x - y) for x, y in zip(curve_one, _losses(other_pairs.run_dir), strict=True)) > 10 * TOLERANCE
    )


# --------------------------------------------------------------------------------------------------------------
# Stopping


def test_cancel_stops_every_rank_at_one_step_and_the_run_resumes(color_folder, tiny_bit, setup, tmp_path):
    cancel = threading.Event()

    def stop_at_step_3(p):
        if p.phase == "training" and p.step == 3:
            cancel.set()

    with pytest.raises(OperationCancelled) as info:
        launch(
            _config(color_folder, tiny_bit),
            "cpu:2",
            stop_at_step_3,
            cancel,
            out=tmp_path / "run",
            setup=setup,
        )
    part = info.value
    # The ranks agree once per step, so the stop lands on the next step boundary or the one after.
    assert part.run_dir == tmp_path / "run" and 3 <= part.step <= 5
    run = RunDir(part.run_dir)
    assert run.load_checkpoint()["step"] == part.step
    assert run.read_json("status.json")["state"] == "cancelled"
    assert not run.exists("model.pt")
    assert [m["step"] for m in run.read_metrics()] == list(range(1, part.step + 1))

    resumed = resume(part.run_dir)  # on one process: the sample stream does not depend on the world size
    assert resumed.status == "done" and resumed.step == 10
    assert [m["step"] for m in run.read_metrics()] == list(range(1, 11))


def test_a_killed_rank_stops_the_others_with_a_clear_error(color_folder, tiny_bit, setup, tmp_path):
    # A checkpoint after every step: the run has one when the kill comes, so it stays, resumable. (A run
    # that fails before its first checkpoint leaves nothing: see test_first_use.py.)
    config = _config(color_folder, tiny_bit, steps=40, checkpoint_minutes=1e-6)
    job = TrainJob(config=config, out=str(tmp_path / "run"))
    ranks = TrainingProcess(job, ["cpu", "cpu"], setup=setup)
    killed_at: list[float] = []

    def kill_rank_1(p):
        if p.phase == "training" and p.step == 2 and not killed_at:
            os.kill(ranks.pids[1], signal.SIGKILL)  # what the system's out-of-memory killer does
            killed_at.append(time.monotonic())

    with pytest.raises(DistributedError, match=r"process 1 of 2 \(cpu\) was killed") as info:
        ranks.run(kill_rank_1)
    assert time.monotonic() - killed_at[0] < 30  # the watcher noticed; nothing waited for a timeout
    assert all(p.exitcode is not None for p in ranks.processes)  # no rank left behind
    assert "can be resumed" in str(info.value) and info.value.run_dir == tmp_path / "run"
    assert info.value.remedy == "resume"
    assert RunDir(tmp_path / "run").read_json("status.json")["state"] == "failed"


def test_a_hung_rank_is_ended_by_the_collective_timeout(color_folder, tiny_bit, tmp_path):
    # Rank 1 stays alive but silent from step 2: no exit code to see, only rank 0's collective that times out.
    stall = functools.partial(_register_and_stall, models.get_spec(tiny_bit), rank=1, step=2)
    job = TrainJob(config=_config(color_folder, tiny_bit), out=str(tmp_path / "run"))
    ranks = TrainingProcess(job, ["cpu", "cpu"], setup=stall, timeout_s=6)
    t0 = time.monotonic()
    with pytest.raises(DistributedError, match=r"process 0 of 2 \(cpu\) failed: .*did not answer within 6 s"):
        ranks.run()
    assert time.monotonic() - t0 < 60
    assert all(p.exitcode is not None for p in ranks.processes)


# --------------------------------------------------------------------------------------------------------------
# Devices


def test_cpu_devices_and_refusals():
    assert parse_devices("cpu:3") == [torch.device("cpu")] * 3
    assert parse_devices("cpu") == [torch.device("cpu")]
    for bad in ("cpu:0", "cpu:x"):
        with pytest.raises(devices.DeviceError, match="cpu:N"):
            parse_devices(bad)


@pytest.fixture
def two_gpus(monkeypatch):
    """A CUDA build seeing two GPUs, without touching a real driver."""

    class Props:
        def __init__(self, name, total):
            self.name, self.total_memory = name, total

    props = [Props("NVIDIA H100", 80 * 2**30), Props("NVIDIA A10", 24 * 2**30)]
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr(
        torch.cuda, "mem_get_info", lambda i: (props[i].total_memory // 2, props[i].total_memory)
    )
    monkeypatch.setattr(devices, "_used_memory_from_nvml", lambda i: None)


def test_gpus_are_listed_with_name_and_memory(two_gpus):
    assert devices.gpu_unavailable_reason() is None
    gpus = devices.list_gpus()
    assert [(g.index, g.name) for g in gpus] == [(0, "NVIDIA H100"), (1, "NVIDIA A10")]
    assert gpus[1].total_memory == 24 * 2**30 and gpus[1].free_memory == 12 * 2**30
    assert parse_devices("all") == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert parse_devices("1,cuda:0") == [torch.device("cuda", 1), torch.device("cuda", 0)]
    with pytest.raises(devices.DeviceError, match="no GPU 3: this machine has 2"):
        parse_devices("0,3")
    with pytest.raises(devices.DeviceError, match="listed twice"):
        parse_devices("1,1")


@pytest.mark.parametrize(
    "situation, expected",
    [
        ("cpu_build", "CPU-only build"),
        ("hidden", "CUDA_VISIBLE_DEVICES is empty"),
        ("no_driver", "No NVIDIA driver is installed"),
        ("no_gpu", "reports no GPU"),
        ("broken_driver", "driver could not be used"),
    ],
)
def test_why_no_gpu_is_said_in_words(two_gpus, monkeypatch, situation, expected):
    if situation == "cpu_build":
        monkeypatch.setattr(torch.version, "cuda", None)
        monkeypatch.setattr(torch.version, "hip", None)
    elif situation == "hidden":
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    elif situation in ("no_driver", "no_gpu"):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(devices, "_driver_installed", lambda: situation == "no_gpu")
    else:

        def fail():
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.cuda, "init", fail)
    reason = devices.gpu_unavailable_reason()
    assert expected in reason
    assert devices.list_gpus() == []
    with pytest.raises(devices.DeviceError, match=expected):
        parse_devices("all")
    assert distributed.is_main_process()  # outside a group, this process is the main one
