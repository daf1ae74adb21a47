"""Training for real on tiny models and tiny data: learning, run folder, cancel, resume, estimate."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
import torch

from bit_engine import train, trainers
from bit_engine.config import TrainConfig
from bit_engine.estimate import estimate
from bit_engine.progress import OperationCancelled
from bit_engine.runs import RunDir
from bit_engine.sampling import SampleStream
from bit_engine.train import fit, resume
from bit_engine.trainers import auto_micro_batch

# float32: several tests compare weights to 1e-6; bf16 autocast gets its own test.
FAST = {"steps": 12, "batch": 16, "resolution": 32, "workers": 0, "evaluations": 3, "precision": "fp32"}


def _config(folder, model, **kw):
    return TrainConfig(data_dir=str(folder), model=model, device="cpu", **{**FAST, **kw})


def _weights(run_dir):
    return torch.load(RunDir(run_dir).file("model.pt"), weights_only=True)["model"]


def test_head_strategy_learns_a_separable_set_and_writes_the_run(color_folder, tiny_bit, tmp_path):
    seen = []
    result = fit(
        _config(color_folder, tiny_bit, strategy="head", steps=60),
        on_progress=seen.append,
        out=tmp_path / "run",
    )
    assert result.status == "done" and result.step == 60
    assert result.val_top1 >= 0.8  # chance is 1/3
    run = RunDir(result.run_dir)
    for name in (
        "config.json",
        "plan.json",
        "dataset.json",
        "split.json",
        "metrics.jsonl",
        "checkpoint.pt",
        "model.pt",
        "report.json",
        "status.json",
    ):
        assert run.exists(name), name
    report = run.read_json("report.json")
    assert set(report["per_class"]) == {"blue", "green", "red"}
    assert sum(map(sum, report["confusion"])) == report["num_images"] == 6
    assert run.read_json("status.json")["state"] == "done"
    assert run.read_json("plan.json")["overrides"][0]["setting"] == "batch"
    phases = [p.phase for p in seen]
    assert phases.index("features") < phases.index("training") < phases.index("done")
    evaluations = [m for m in run.read_metrics() if "val_top1" in m]
    assert [m["step"] for m in evaluations] == [20, 40, 60]


def test_full_fine_tuning_learns(color_folder, tiny_bit, tmp_path):
    result = fit(_config(color_folder, tiny_bit, steps=15), out=tmp_path / "run")
    assert result.status == "done"
    assert result.val_top1 >= 0.8
    losses = [m["train_loss"] for m in RunDir(result.run_dir).read_metrics()]
    assert losses[-1] < 0.95 * losses[0]  # lr is 0.003 * 16 / 512 here: small steps, but downhill


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(color_folder, tiny_bit, tmp_path):
    # 16 px: what is compared is the weights, bit for bit; a smaller input computes the same way, sooner.
    config = _config(color_folder, tiny_bit, steps=8, micro_batch=6, mixup=0.2, resolution=16)
    whole = fit(config, out=tmp_path / "whole")

    cancel = threading.Event()

    def stop_at_step_3(p):
        if p.phase == "training" and p.step == 3:
            cancel.set()

    with pytest.raises(OperationCancelled) as info:
        fit(config, on_progress=stop_at_step_3, cancel=cancel, out=tmp_path / "part")
    part = info.value
    assert part.run_dir == tmp_path / "part" and (part.step, part.total_steps) == (3, 8)
    assert RunDir(part.run_dir).read_json("status.json")["state"] == "cancelled"
    assert not RunDir(part.run_dir).exists("model.pt")
    resumed = resume(part.run_dir)
    assert resumed.status == "done" and resumed.step == 8
    a, b = _weights(whole.run_dir), _weights(resumed.run_dir)
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) <= 1e-6
    steps = [m["step"] for m in RunDir(resumed.run_dir).read_metrics()]
    assert steps == sorted(set(steps)), "metrics after the checkpoint are not duplicated by the resume"


def test_cancel_is_honoured_within_a_micro_batch(color_folder, tiny_bit, tmp_path):
    cancel = threading.Event()
    calls = {"n": 0}
    trainer_step = trainers.FullTrainer._accumulate

    def counting(self, prepared, lam, global_batch, flag):
        calls["n"] += 1
        if calls["n"] == 2:
            cancel.set()  # set while a step is in flight
        return trainer_step(self, prepared, lam, global_batch, flag)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainers.FullTrainer, "_accumulate", counting)
        with pytest.raises(OperationCancelled) as info:
            fit(_config(color_folder, tiny_bit, micro_batch=4), cancel=cancel, out=tmp_path / "run")
    result = info.value
    assert result.step == 1  # step 2 was dropped mid-way, not finished
    ckpt = RunDir(result.run_dir).load_checkpoint()
    assert ckpt["step"] == 1


def test_scratch_uses_no_pretrained_weights(color_folder, tmp_path):
    result = fit(
        _config(color_folder, "EfficientNet-Lite0", strategy="scratch", steps=3), out=tmp_path / "run"
    )
    assert result.status == "done"
    lite = torch.load(RunDir(result.run_dir).file("model.pt"), weights_only=True)
    assert lite["meta"]["strategy"] == "scratch"


def test_sample_stream_counts_every_sample_once_per_epoch():
    stream = SampleStream(num_samples=10, batch=4, seed=3)
    keys = [k for step in range(5) for k in stream.keys(step)]  # 20 samples: exactly two epochs
    for epoch in (0, 1):
        assert sorted(i for i, e in keys if e == epoch) == list(range(10))
    assert stream.keys(2) == SampleStream(10, 4, 3).keys(2)  # a pure function of (seed, step)


def test_a_batch_larger_than_the_dataset_runs_through_several_epochs_in_order():
    # The head strategy's batch of 512 over a few dozen photos: one step spans many epochs.
    stream = SampleStream(num_samples=7, batch=40, seed=1)
    for step in (0, 3):
        expected = []
        for pos in range(step * 40, step * 40 + 40):
            epoch, i = divmod(pos, 7)
            expected.append((int(np.random.default_rng([1, epoch]).permutation(7)[i]), epoch))
        assert stream.keys(step) == expected
        index, epochs = stream.indices(step)
        assert list(zip(index.tolist(), epochs.tolist(), strict=True)) == expected


def test_a_cpu_trains_with_the_micro_batch_measured_fastest_for_the_resolution(monkeypatch):
    monkeypatch.setattr(trainers, "_available_ram", lambda: 64 * 1024**3)  # the rule, not this machine's RAM
    cpu = torch.device("cpu")
    assert auto_micro_batch("EfficientNet-Lite0", 128, 512, cpu) == 16
    assert auto_micro_batch("BiT-M-R50x1", 224, 512, cpu) == 8
    assert auto_micro_batch("BiT-M-R50x1", 384, 512, cpu) == 2
    assert auto_micro_batch("EfficientNet-Lite0", 64, 512, cpu) == 32  # small inputs: the old cap
    assert auto_micro_batch("EfficientNet-Lite0", 64, 6, cpu) == 6  # never more than the batch
    monkeypatch.setattr(trainers, "_available_ram", lambda: 2 * 1024**3)  # and never more than fits
    assert auto_micro_batch("BiT-M-R50x1", 224, 512, cpu) == 7


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="Linux's MemAvailable")
def test_available_memory_counts_the_cache_the_kernel_gives_back():
    from bit_engine.machine import available_memory

    with open("/proc/meminfo") as f:
        info = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)}
    assert abs(available_memory(default=0) - info["MemAvailable"]) < 0.1 * info["MemTotal"]


def test_micro_batches_do_not_change_the_update(color_folder, tiny_bit, tmp_path):
    a = fit(_config(color_folder, tiny_bit, steps=3, micro_batch=16, resolution=16), out=tmp_path / "a")
    b = fit(_config(color_folder, tiny_bit, steps=3, micro_batch=5, resolution=16), out=tmp_path / "b")
    wa, wb = _weights(a.run_dir), _weights(b.run_dir)
    assert max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa) <= 1e-5


def test_estimate_is_available_without_training(color_folder, tiny_bit):
    full = estimate(_config(color_folder, tiny_bit, steps=None, batch=None))
    head = estimate(_config(color_folder, tiny_bit, strategy="head", steps=None, batch=None))
    assert full.seconds > head.seconds > 0
    assert full.text.startswith("About ") and "500 steps of 512 images" in full.text


def test_an_existing_run_folder_is_not_overwritten(color_folder, tiny_bit, tmp_path):
    fit(_config(color_folder, tiny_bit, strategy="head", steps=2), out=tmp_path / "run")
    with pytest.raises(train.TrainingError, match="already holds a run"):
        fit(_config(color_folder, tiny_bit, strategy="head", steps=2), out=tmp_path / "run")


def test_a_folder_with_one_class_is_refused(tmp_path, tiny_bit):
    from conftest import make_color_folder

    make_color_folder(tmp_path / "one", classes=("red",))
    with pytest.raises(train.TrainingError, match="cannot be trained on"):
        fit(_config(tmp_path / "one", tiny_bit))


def test_config_round_trips_through_the_run(color_folder, tiny_bit, tmp_path):
    config = _config(color_folder, tiny_bit, strategy="head", steps=2)
    result = fit(config, out=tmp_path / "run")
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert TrainConfig.from_dict(saved) == config


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_result(
    color_folder, tiny_bit, tmp_path, monkeypatch
):
    small = {"steps": 3, "resolution": 16, "evaluations": 1}
    reference = fit(_config(color_folder, tiny_bit, micro_batch=3, **small), out=tmp_path / "reference")

    build = train.build_model
    seen = []

    def build_with_small_memory(*args, **kwargs):
        model = build(*args, **kwargs)
        forward = model.forward

        def forward_or_oom(x):
            seen.append(len(x))
            if len(x) > 3:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return forward(x)

        model.forward = forward_or_oom
        return model

    monkeypatch.setattr(train, "build_model", build_with_small_memory)
    result = fit(_config(color_folder, tiny_bit, micro_batch=12, **small), out=tmp_path / "oom")
    assert result.status == "done"
    assert seen[0] == 12 and 3 in seen and max(seen[seen.index(3) :]) == 3  # 12 -> 6 -> 3, then stays at 3
    a, b = _weights(reference.run_dir), _weights(result.run_dir)
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) <= 1e-5


def test_precision_auto_takes_bf16_only_where_the_cpu_has_it(monkeypatch):
    from bit_engine import devices

    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.autocast_dtype(cpu, "auto") == torch.bfloat16
    assert devices.autocast_dtype(cpu, "fp32") is None
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.autocast_dtype(cpu, "auto") is None
    with pytest.raises(devices.DeviceError, match="fp16 needs a GPU"):
        devices.autocast_dtype(cpu, "fp16")


def test_bf16_training_learns_and_reports_in_float32(color_folder, tiny_bit, tmp_path):
    # bf16 autocast is emulated on CPUs without AVX512-BF16 (about 4x fp32's time here): 3 steps at 16 px.
    config = _config(color_folder, tiny_bit, steps=3, resolution=16, evaluations=1, precision="bf16")
    result = fit(config, out=tmp_path / "run")
    assert result.val_top1 >= 0.8
    losses = [m["train_loss"] for m in RunDir(result.run_dir).read_metrics()]
    assert losses[-1] < losses[0]
    # The report is computed in float32, so it is what the exported model will do.
    from bit_engine.evaluate import evaluate_run

    again = evaluate_run(result.run_dir)
    assert again.loss == pytest.approx(result.report.loss, abs=1e-6)


def test_resuming_a_finished_run_changes_nothing(color_folder, tiny_bit, tmp_path):
    done = fit(_config(color_folder, tiny_bit, strategy="head", steps=4), out=tmp_path / "run")
    before = (done.run_dir / "model.pt").stat().st_mtime_ns
    again = resume(done.run_dir)
    assert (again.status, again.step, again.val_top1) == ("done", 4, done.val_top1)
    assert (done.run_dir / "model.pt").stat().st_mtime_ns == before


# --------------------------------------------------------------------------------------------------------------
# Cancel in every phase of `fit` ends one way: OperationCancelled, with a resumable run once it has a folder


def _cancel_on(phase: str, cancel: threading.Event):
    def on_progress(p) -> None:
        if p.phase == phase:
            cancel.set()

    return on_progress


@pytest.mark.parametrize("phase", ["scanning", "downloading", "features", "training", "evaluating"])
def test_a_cancel_in_each_phase_ends_one_way(color_folder, tiny_bit, tmp_path, monkeypatch, phase):
    from bit_engine import weights, weights_cache, weights_download
    from bit_engine.progress import Progress
    from bit_engine.runs import read_status

    if phase == "downloading":
        real = weights.load_pretrained

        def downloading(model, name, download_if_missing=False, on_progress=None, cancel=None):
            # The weights are "missing": one progress report from the download, then its cancel check.
            on_progress(weights_download.DownloadProgress(done=1, total=100, speed=0.0, eta=None))
            if cancel.is_set():
                raise weights_cache.DownloadCancelledError(f"Download of {name} cancelled.")
            return real(model, name, download_if_missing, on_progress, cancel)

        monkeypatch.setattr(weights, "load_pretrained", downloading)
    cancel = threading.Event()
    seen: list[Progress] = []

    def on_progress(p: Progress) -> None:
        seen.append(p)
        _cancel_on(phase, cancel)(p)

    config = _config(color_folder, tiny_bit, strategy="head", steps=6, evaluations=2)
    out = tmp_path / "run"
    with pytest.raises(OperationCancelled) as info:
        fit(config, on_progress=on_progress, cancel=cancel, out=out)
    assert phase in {p.phase for p in seen}
    if phase == "scanning":
        # Nothing was decided yet: no run folder.
        assert info.value.run_dir is None and not out.exists()
        return
    if phase in ("downloading", "features"):
        # Training had not started: nothing to resume, nothing kept, and the same folder can be used again.
        assert info.value.run_dir is None and list(out.iterdir()) == []
        if phase == "downloading":
            monkeypatch.setattr(weights, "load_pretrained", real)
        assert fit(config, out=out).status == "done"
        return
    assert info.value.run_dir == out
    status = read_status(out)
    assert status.state == "cancelled" and status.step == info.value.step and status.resumable
    assert info.value.step == {"training": 1, "evaluating": 3}[phase]
    resumed = resume(out)
    assert resumed.status == "done" and resumed.step == 6 and read_status(out).state == "done"


def test_a_failure_after_a_checkpoint_says_failed_and_resume_finishes(
    color_folder, tiny_bit, tmp_path, monkeypatch
):
    from bit_engine.runs import read_status

    real = train.loss_and_top1

    def broken(*args, **kwargs):
        raise RuntimeError("a native library crashed")

    monkeypatch.setattr(train, "loss_and_top1", broken)  # the first evaluation, after step 3's checkpoint
    with pytest.raises(RuntimeError):
        # A checkpoint after every step (any time is past a millionth of a minute).
        config = _config(
            color_folder, tiny_bit, strategy="head", steps=6, evaluations=2, checkpoint_minutes=1e-6
        )
        fit(config, out=tmp_path / "run")
    status = read_status(tmp_path / "run")
    assert status.state == "failed" and "RuntimeError: a native library crashed" in status.error
    assert status.resumable
    monkeypatch.setattr(train, "loss_and_top1", real)
    assert resume(tmp_path / "run").status == "done" and read_status(tmp_path / "run").state == "done"


# --------------------------------------------------------------------------------------------------------------
# Defects


@pytest.mark.parametrize("layout", ["one_photo_per_class", "empty_val_folders"])
def test_a_run_without_validation_images_ends_done(tmp_path, tiny_bit, layout):
    from conftest import make_color_folder

    from bit_engine.runs import read_report, read_status

    if layout == "one_photo_per_class":
        folder = make_color_folder(tmp_path / "photos", per_class=1)
    else:
        folder = tmp_path / "photos"
        make_color_folder(folder / "train", per_class=3)
        for name in ("red", "green", "blue"):
            (folder / "val" / name).mkdir(parents=True)
    seen = []
    for strategy in ("head", "full"):
        out = tmp_path / f"run-{strategy}"
        result = fit(_config(folder, tiny_bit, strategy=strategy, steps=3), on_progress=seen.append, out=out)
        assert result.status == "done" and result.val_top1 is None
        assert result.report.num_images == 0 and result.report.accuracy is None
        status = read_status(out)
        assert status.state == "done" and "No validation images" in status.message
        assert read_report(out).describe_accuracy().startswith("No validation images")
        assert "No validation images" in seen[-1].message


def test_evaluation_reports_images_and_honours_cancel(color_folder, tiny_bit, tmp_path):
    from bit_engine.evaluate import evaluate_run

    done = fit(_config(color_folder, tiny_bit, strategy="head", steps=2), out=tmp_path / "run")
    seen = []
    report = evaluate_run(done.run_dir, on_progress=seen.append)
    assert [(p.phase, p.done, p.total) for p in seen][-1] == ("evaluating", 6, 6)
    assert report.num_images == 6
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(OperationCancelled, match="Evaluation cancelled"):
        evaluate_run(done.run_dir, cancel=cancel)


# --------------------------------------------------------------------------------------------------------------
# One preparation step, accepted by estimate and fit


def test_prepared_once_then_estimated_and_trained_without_a_second_scan(
    color_folder, tiny_bit, tmp_path, monkeypatch
):
    from bit_engine import data
    from bit_engine.preparation import prepare

    config = _config(color_folder, tiny_bit, strategy="head", steps=4)
    seen = []
    prepared = prepare(config, on_progress=seen.append)
    assert seen and {p.phase for p in seen} == {"scanning"}
    assert (prepared.num_train, prepared.num_val, prepared.plan.total_steps) == (24, 6, 4)

    def no_scan(*args, **kwargs):
        raise AssertionError("the folder was scanned again")

    monkeypatch.setattr(data, "scan", no_scan)
    ticks = []
    timed = estimate(prepared, on_progress=ticks.append)
    assert timed.strategy == "head" and timed.seconds > 0
    assert [(p.phase, p.done, p.total) for p in ticks][-1] == ("estimating", 3, 3)
    full = prepared.with_config(config.replace(strategy="full", steps=6))
    assert full.plan.total_steps == 6 and full.split is prepared.split
    result = fit(prepared, out=tmp_path / "run")
    assert result.status == "done" and result.step == 4
    assert json.loads((tmp_path / "run" / "split.json").read_text()) == prepared.split.to_dict()

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(OperationCancelled):
        estimate(prepared, cancel=cancel)


def test_the_window_times_both_strategies_in_its_child_process(color_folder, tiny_bit):
    # The window times in a plain child process (a pool worker may not start processes of its own): the head
    # strategy's feature pass must be timed there too (it failed with "daemonic processes are not allowed
    # to have children" when it started decoding workers).
    from app import timing
    from bit_engine import models

    results = {}
    configs = [
        _config(color_folder, tiny_bit, strategy="head", steps=None, batch=None, workers=None),
        _config(color_folder, tiny_bit, steps=4, batch=8, resolution=16, workers=None),
    ]
    timing.time_strategies(
        models.get_spec(tiny_bit), configs, 24, 6, (40, 30), results.__setitem__, threading.Event()
    )
    assert set(results) == {"head", "full"}
    for strategy, result in results.items():
        assert isinstance(result, train.Estimate), f"{strategy}: {result}"
        assert result.text.startswith("About ") and result.seconds > 0


@pytest.mark.parametrize(
    "mean, std",
    [((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
    ids=["bit", "imagenet"],
)
def test_the_evaluation_input_equals_torchvisions_bit_for_bit(mean, std):
    from torchvision.transforms import v2

    from bit_engine.transforms import Preprocessing

    pre = Preprocessing(resize=40, crop=32, mean=mean, std=std)
    reference = v2.Compose(
        [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    )
    ours = pre.tensor_transform(train=False)
    images = torch.randint(
        0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    images[0] = 0
    images[1] = 255
    before = images.clone()
    for image in images:
        expected = reference(image.clone())
        got = ours(image)
        assert got.dtype == torch.float32 and got.shape == (3, 32, 32)
        assert torch.equal(got, expected.as_subclass(torch.Tensor))
    assert torch.equal(images, before)  # the photo's tensor (the cache's) is not changed in place


def test_evaluation_and_the_label_check_do_not_import_torchvision(color_folder):
    import subprocess
    import sys

    # A fresh interpreter: this one has imported torchvision for other tests.
    code = (
        "import sys\n"
        "from bit_engine import evaluate, explain, features, label_issues\n"
        "from bit_engine.transforms import ImageDataset, Preprocessing\n"
        "pre = Preprocessing(resize=40, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3)\n"
        f"ds = ImageDataset([{str(next(color_folder.glob('red/*')))!r}], [0], pre, train=False)\n"
        "x, label, index = ds[0]\n"
        "assert x.shape == (3, 32, 32), x.shape\n"
        "print('torchvision' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
