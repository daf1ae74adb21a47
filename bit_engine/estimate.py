"""How long a run would take on this device: a few timed micro-steps, extrapolated to the whole schedule."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bit_engine.config import TrainConfig
from bit_engine.devices import autocast_dtype, prepare_for_device, resolve_device
from bit_engine.models import create_model
from bit_engine.preparation import Prepared, make_plan, prepare
from bit_engine.progress import CancelFlag, OperationCancelled, Progress, ProgressCallback
from bit_engine.trainers import auto_micro_batch
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

    Weights are random for the timing: speed does not depend on them, and nothing is downloaded.

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
    model = create_model(config.model, num_classes=2, zero_head=False)
    model, memory_format = prepare_for_device(model, device)
    head = config.strategy == "head"
    mb = config.micro_batch or auto_micro_batch(config.model, plan.crop, plan.batch, device)
    mb = min(mb, 8 if device.type == "cpu" else mb)  # a timing, not a run: keep it short on a CPU
    x = torch.randn(mb, 3, plan.crop, plan.crop, device=device).contiguous(memory_format=memory_format)
    y = torch.zeros(mb, dtype=torch.long, device=device)
    # Head features and evaluation run in float32 (see evaluate.predict_dataset); training steps may not.
    dtype = None if head else autocast_dtype(device, config.precision)

    def micro_step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if head:
                with torch.no_grad():
                    model.eval()
                    model(x)
            else:
                model.train()
                F.cross_entropy(model(x).float(), y).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    total = timed_steps + 1

    def tick(done: int) -> None:
        if cancel is not None and cancel.is_set():
            raise OperationCancelled("Estimate cancelled.")
        if on_progress is not None:
            on_progress(Progress("estimating", done, total, message=config.strategy))

    tick(0)
    micro_step()  # warm-up: allocator, kernel selection
    tick(1)
    t = time.perf_counter()
    for i in range(timed_steps):
        micro_step()
        if i < timed_steps - 1:
            tick(2 + i)
    elapsed = time.perf_counter() - t
    tick(total)
    per_image = elapsed / (timed_steps * mb)
    if head:
        seconds = per_image * (num_train + num_val) + plan.total_steps * 0.002
        how = f"computing features of {num_train + num_val:,} images once, then {plan.total_steps} quick head steps"
    else:
        # Evaluation is forward-only (about a third of a training step per image), ~evaluations+1 times.
        seconds = per_image * (plan.total_steps * plan.batch + (config.evaluations + 1) * num_val / 3)
        how = f"{plan.total_steps:,} steps of {plan.batch} images at {plan.crop}x{plan.crop}"
    text = f"About {describe_duration(seconds)} on {device.type.upper()} ({how})."
    return Estimate(config.strategy, seconds, per_image, mb, str(device), text)
