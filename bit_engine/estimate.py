"""How long a run would take on this device: a few timed micro-steps, extrapolated to the whole schedule."""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bit_engine.config import TrainConfig
from bit_engine.devices import autocast_dtype, prepare_for_device, resolve_device
from bit_engine.models import create_model
from bit_engine.preparation import Prepared, make_plan, prepare
from bit_engine.progress import CancelFlag, OperationCancelled, Progress, ProgressCallback
from bit_engine.trainers import auto_micro_batch, one_cpu_thread
from bit_engine.units import describe_duration


@dataclass(frozen=True)
class Estimate:
    """How long a run would take on this device, from a few timed micro-steps.

    Attributes:
        strategy: full, head or scratch.
        seconds: the whole run, evaluations included.
        seconds_per_image: one training image (forward and backward; forward only for `head`).
        micro_batch: images per forward pass used for the timing.
        device: where it was timed.
        text: the estimate in words.
    """

    strategy: str
    seconds: float
    seconds_per_image: float
    micro_batch: int
    device: str
    text: str

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("strategy", "seconds", "seconds_per_image", "micro_batch", "device", "text")
        }


def estimate(
    config: TrainConfig | Prepared,
    num_train: int | None = None,
    num_val: int | None = None,
    median_size: tuple[int, int] | None = None,
    timed_steps: int = 2,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelFlag | None = None,
) -> Estimate:
    """Time a few micro-steps of `config` on its device and extrapolate to the whole schedule.

    Args:
        config: the run, or a `Prepared` one (its scan and plan are used: nothing is scanned again).
        num_train, num_val, median_size: the dataset's sizes, for a plain config (else it is scanned).
        timed_steps: micro-steps timed after one warm-up.
        on_progress: receives "estimating" `Progress`, counting micro-steps.
        cancel: checked between micro-steps.

    Weights are random for the timing of full fine-tuning: speed does not depend on them, and nothing is
    downloaded. The head strategy uses the pre-trained weights when they are on disk (see `_estimate_head`).

    Raises:
        OperationCancelled: `cancel` was set.
        DeviceError: the config's device cannot be used.
    """
    if isinstance(config, Prepared):
        prepared, config = config, config.config
        num_train, num_val, plan = prepared.num_train, prepared.num_val, prepared.plan
    else:
        if num_train is None or median_size is None:
            prepared = prepare(config, cancel=cancel)
            num_train, num_val, median_size = (
                prepared.num_train,
                prepared.num_val,
                prepared.report.median_size,
            )
        plan = make_plan(config, num_train, median_size)
    num_val = num_val or 0
    device = resolve_device(config.device)
    if config.strategy != "head":
        # Time the run's own micro-batch (a CPU's speed per image depends on it), over at least 8 images.
        mb = config.micro_batch or auto_micro_batch(config.model, plan.crop, plan.batch, device)
        timed_steps = max(timed_steps, math.ceil(8 / mb))
    total = timed_steps + 1

    def tick(done: int) -> None:
        if cancel is not None and cancel.is_set():
            raise OperationCancelled("Estimate cancelled.")
        if on_progress is not None:
            on_progress(Progress("estimating", done, total, message=config.strategy))

    if config.strategy == "head":
        return _estimate_head(config, plan, device, num_train, num_val, tick, total)
    model = create_model(config.model, num_classes=2, zero_head=False)
    model, memory_format = prepare_for_device(model, device)
    dtype = autocast_dtype(device, config.precision)

    def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 3, plan.crop, plan.crop, device=device).contiguous(memory_format=memory_format)
        return x, torch.zeros(n, dtype=torch.long, device=device)

    def micro_step() -> float:
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            model.train()
            F.cross_entropy(model(x).float(), y).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    tick(0)
    x, y = inputs(mb)
    warm_up = micro_step()  # warm-up: allocator, kernel selection
    tick(1)
    elapsed = 0.0
    for i in range(timed_steps):
        elapsed += micro_step()
        if i < timed_steps - 1:
            tick(2 + i)
    tick(total)
    per_image = elapsed / (timed_steps * mb)
    # Evaluation is forward-only (about a third of a training step per image), ~evaluations+1 times; a
    # checkpoint (weights and momentum: twice the model) at each evaluation, and the final model.
    seconds = per_image * (plan.total_steps * plan.batch + (config.evaluations + 1) * num_val / 3)
    seconds += (config.evaluations + 2) * 2 * _save_seconds(model)
    # The run pays the first pass's set-up (kernel selection, allocator) once for training, once for eval.
    seconds += 2 * max(0.0, warm_up - elapsed / timed_steps)
    seconds += _decode_seconds(config.data_dir, plan.resize) * _images_decoded(
        plan, num_train, num_val, config
    )
    how = f"{plan.total_steps:,} steps of {plan.batch} images at {plan.crop}x{plan.crop}"
    text = f"About {describe_duration(seconds)} on {device.type.upper()} ({how})."
    return Estimate(config.strategy, seconds, per_image, mb, str(device), text)


def _images_decoded(plan, num_train: int, num_val: int, config: TrainConfig) -> int:
    """How many photos a full or scratch run decodes: each once when the in-memory cache holds them (see
    `train._datasets`), else one per training sample and per evaluation."""
    from bit_engine.transforms import should_cache

    if should_cache(num_train, plan.resize):
        return num_train + num_val
    return plan.total_steps * plan.batch + (config.evaluations + 1) * num_val


def _save_seconds(model: torch.nn.Module) -> float:
    """Time to save the model's weights once as a run does (what a checkpoint or model.pt costs).

    Serialized, written, synced and renamed by `fileio.atomic_torch_save` (into a temporary folder beside
    the cache), as the run's saves are: not only serialized in memory.
    """
    from bit_engine import locations
    from bit_engine.fileio import atomic_torch_save

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    try:
        base = locations.cache_dir()
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=base) as folder:
            t = time.perf_counter()
            atomic_torch_save(Path(folder) / "timing.pt", state)
            return time.perf_counter() - t
    except OSError:  # no room to write: time the serialization alone
        t = time.perf_counter()
        torch.save(state, io.BytesIO())
        return time.perf_counter() - t


def _decode_seconds(folder: str, size: int, limit: int = 6) -> float:
    """Seconds to decode and resize one of the folder's own photos to `size` (the first few found, timed).

    For small inputs decoding costs as much as the forward pass, so both strategies count it.
    """
    from bit_engine.transforms import decode_resized

    paths = _sample_images(folder, limit)
    if not paths:
        return 0.0
    t = time.perf_counter()
    for path in paths:
        with contextlib.suppress(Exception):
            decode_resized(path, size)
    return (time.perf_counter() - t) / len(paths)


def _sample_images(folder: str, limit: int) -> list[str]:
    """Up to `limit` image files under `folder` (the first found: no scan, no sort of a large folder)."""
    from bit_engine.images import IMAGE_SUFFIXES

    found: list[str] = []
    for root, _, names in os.walk(folder):
        photos = [n for n in names if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
        found += [os.path.join(root, n) for n in photos][: limit - len(found)]
        if len(found) >= limit:
            break
    return found


def _estimate_head(config, plan, device: torch.device, num_train: int, num_val: int, tick, total) -> Estimate:
    """The head strategy's time: preparing the frozen backbone, one feature pass, the head steps, the saves.

    With the pre-trained weights already on disk, the backbone is prepared exactly as the run will (on the
    CPU that builds the cached onnxruntime graph now, and the run then finds it); otherwise random weights of
    the same shape are timed and the graph's build time is counted in. The feature pass is timed as the run
    makes it, on two batches of the folder's own photos: decoding workers, pre-processing and backbone (see
    `_time_feature_pass`).
    """
    from bit_engine import frozen, weights
    from bit_engine.models import get_spec
    from bit_engine.sampling import SampleStream
    from bit_engine.transforms import Preprocessing, loader_workers

    tick(0)
    model = create_model(config.model, num_classes=2, zero_head=False)
    prepared_now = False
    t = time.perf_counter()
    with contextlib.suppress(Exception):  # missing weights: time random ones of the same shape
        weights.load_pretrained(model, config.model, download_if_missing=False)
        prepared_now = True
    load = time.perf_counter() - t if prepared_now else 0.0
    runner = frozen.freeze(model, device, plan.crop, cache=prepared_now)
    tick(1)
    # The run pays the cache lookup when the graph was built here, the build itself otherwise.
    if prepared_now:
        prepare_s = frozen.freeze(model, device, plan.crop).seconds_to_prepare
    else:
        prepare_s = runner.seconds_to_prepare
    images = num_train + num_val
    pre = Preprocessing.from_plan(plan, get_spec(config.model).normalization)
    workers = config.workers if config.workers is not None else loader_workers(cached=False)
    sample = _sample_images(config.data_dir, min(2 * runner.batch_size, max(1, images)))
    feats, per_image, loader_start = _time_feature_pass(model, runner, pre, workers, sample)
    if workers:
        # The second batch was decoded while the first was computed: its rate is the backbone's alone. Once
        # under way, decoding shares the cores with the backbone, which uses them all: the two times add up.
        decode = _decode_seconds(config.data_dir, plan.crop)
        per_image += decode
        loader_start = max(0.0, loader_start - runner.batch_size * decode)
    # The run starts a pass for its training photos and another for its validation photos.
    passes = 2 if num_val else 1
    # Head steps as the run makes them: the step's sample indices, the real computation on features of the
    # real width, on one thread.
    opt = torch.optim.SGD(model.head_parameters(), lr=0.0, momentum=0.9)
    stream = SampleStream(len(feats), plan.batch, config.seed)
    y = torch.zeros(plan.batch, dtype=torch.long)
    with one_cpu_thread(device):
        for step in range(6):
            if step == 1:  # after a warm-up step: first calls, allocations
                t = time.perf_counter()
            f = feats[torch.from_numpy(stream.indices(step)[0])]
            F.cross_entropy(model.classify(f), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    head_step = (time.perf_counter() - t) / 5
    # A checkpoint (the whole model) at each evaluation and at the end, and the final model.
    save = _save_seconds(model)
    tick(total)
    seconds = (
        load
        + prepare_s
        + passes * loader_start
        + images * per_image
        + plan.total_steps * head_step
        + (config.evaluations + 2) * save
    )
    how = f"computing features of {images:,} images once, then {plan.total_steps} quick head steps"
    text = f"About {describe_duration(seconds)} on {device.type.upper()} ({how})."
    return Estimate(config.strategy, seconds, per_image, runner.batch_size, str(device), text)


def _time_feature_pass(
    model, runner, pre, workers: int, paths: list[str]
) -> tuple[torch.Tensor, float, float]:
    """Features of `paths` computed as the run computes them; with the seconds per image of the second batch,
    and the seconds a pass pays once before its first batch (worker start, the session's first call).

    Both come from the times the batches end: the second batch gives the rate (with `workers`, the
    backbone's alone: they decoded it while the first was computed); the first batch, what came on top.
    """
    from bit_engine.features import FeatureExtractor

    ends: list[tuple[float, int]] = []

    def on_progress(p: Progress) -> None:
        if p.done:
            ends.append((time.perf_counter(), p.done))

    extractor = FeatureExtractor(
        model, runner.device, pre, workers=workers, cache=False, on_progress=on_progress
    )
    extractor.frozen = runner  # prepared and timed already
    t = time.perf_counter()
    feats = extractor.extract(paths) if paths else None
    if feats is None or not len(feats):  # no photo could be read: time random inputs
        x = torch.randn(runner.batch_size, 3, pre.crop, pre.crop).clamp_(-2.5, 2.5)
        runner.features(x)
        t = time.perf_counter()
        feats = runner.features(x)
        return feats, (time.perf_counter() - t) / len(x), 0.0
    if len(ends) < 2:  # one batch: no way to tell the start from the rate; all of it counts per image
        return feats, (time.perf_counter() - t) / len(feats), 0.0
    (t1, n1), (t2, n2) = ends[0], ends[1]
    per_image = (t2 - t1) / (n2 - n1)
    return feats, per_image, max(0.0, t1 - t - n1 * per_image)
