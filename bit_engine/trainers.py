"""The two ways a model learns: `FullTrainer` (every layer, BiT's way, or from scratch) and `HeadTrainer`
(a new head on frozen features computed once), with the memory sizing they share.

A trainer turns a step's samples into a gradient and an optimizer step; the loop in train.py owns the
schedule, checkpoints, evaluations and progress. Both offer the same calls: `ready()` (what must happen
before the first step; False when cancelled), `parameters()`, `steps(stream, start, stop)` (each step's
data), `step(...)` (the loss, None when cancelled), `optimizer_step(optimizer)` and `evaluate(...)`.
`DistContext` says where this process sits in a data-parallel group (one process by default).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bit_engine.config import TrainConfig
from bit_engine.devices import autocast_dtype
from bit_engine.evaluate import predict_dataset
from bit_engine.features import FeatureExtractor
from bit_engine.machine import available_memory
from bit_engine.models import get_spec
from bit_engine.preparation import TrainingError
from bit_engine.sampling import SampleStream, StepBatches, mixup_permutation


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel group (a single process by default).

    The distributed module builds one per rank; the loop only needs these few facts and hooks. The hooks
    that are collectives (`all_sum`, `share`) must be called by every rank at the same point.
    """

    rank: int = 0
    world_size: int = 1
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None  # e.g. DistributedDataParallel
    device: torch.device | None = None  # this rank's device; None: the config's
    local_world_size: int = 1  # ranks on this machine, which share its RAM and CPU cores
    all_sum: Callable[[list[float]], list[float]] | None = None  # element-wise sums over ranks (a collective)
    share: Callable[[object], object] | None = None  # rank 0's value, on every rank (a collective)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# --------------------------------------------------------------------------------------------------------------
# Memory


def _available_ram() -> int:
    return available_memory(default=4 * 1024**3)


def bytes_per_training_image(model_name: str, crop: int) -> float:
    """A generous estimate of activation memory for one image in a training step (fp32)."""
    spec = get_spec(model_name)
    scale = (crop / 224) ** 2
    if spec.family == "efficientnet":
        return 60e6 * scale
    return 110e6 * scale * spec.width_factor * (spec.depth / 50) ** 0.6


#: Pixels per forward pass at which a CPU trains fastest. A smaller micro-batch keeps a training step's
#: activations in the processor's caches; the step's result is the same (no layer of either model family
#: mixes the images of a batch). Measured with `bench/micro_batch.py` on a 2-core AVX2 machine, ms per image
#: of a whole training step, best micro-batch against the largest:
#: EfficientNet-Lite0: 128 px mb 16 (1.25x faster than mb 32), 224 px mb 8 (2.19x), 384 px mb 2 (2.61x
#: faster than mb 16); BiT-M-R50x1: 128 px mb 16 (1.07x), 224 px mb 8 (1.43x), 384 px mb 4 (1.69x).
CPU_PIXELS_PER_MICRO_BATCH = 300_000


def cpu_micro_batch(crop: int) -> int:
    """The micro-batch a CPU trains fastest with at `crop` px: `CPU_PIXELS_PER_MICRO_BATCH` pixels, rounded
    to a power of two (16 at 128 px, 8 at 224, 2 at 384), at most 32."""
    images = CPU_PIXELS_PER_MICRO_BATCH / (crop * crop)
    return int(min(32, max(1, 2 ** round(math.log2(max(images, 1.0))))))


def auto_micro_batch(model_name: str, crop: int, global_batch: int, device: torch.device) -> int:
    """Images per forward pass: what fits the device's free memory, and on a CPU what trains fastest.

    On CUDA the size fills 70% of the free memory (and is halved again on out-of-memory). On the CPU an
    out-of-memory cannot be caught (the system kills the process), so what fits is chosen from the free RAM
    with a wide margin; and the size is at most `cpu_micro_batch(crop)`: beyond it a step gets slower per
    image, and a smaller micro-batch keeps cancel responsive.
    """
    per_image = bytes_per_training_image(model_name, crop)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        fit = int(free * 0.7 / per_image)
        cap = 256
    else:
        fit = int(_available_ram() * 0.4 / per_image)
        cap = cpu_micro_batch(crop)
    return max(1, min(global_batch, cap, fit))


def _is_oom(exc: BaseException) -> bool:
    # CUDA raises OutOfMemoryError; the CPU allocator a RuntimeError, when the system lets it fail at all.
    text = str(exc).lower()
    return (
        isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text
    )


# --------------------------------------------------------------------------------------------------------------
# The trainers


class FullTrainer:
    """Fine-tunes every parameter (or trains from scratch): the BiT way."""

    def __init__(self, model, train_set, device, memory_format, config: TrainConfig, plan, workers, dist):
        self.unwrapped = model
        self.model = dist.wrap(model) if dist.wrap is not None else model
        self.train_set, self.device, self.memory_format = train_set, device, memory_format
        self.config, self.plan, self.workers, self.dist = config, plan, workers, dist
        if plan.batch < dist.world_size:
            raise TrainingError(
                f"A batch of {plan.batch} images cannot be shared by {dist.world_size} processes: "
                f"use a batch of at least {dist.world_size}, or fewer devices."
            )
        per_rank = math.ceil(plan.batch / dist.world_size)
        self.load_batch = config.micro_batch or auto_micro_batch(config.model, plan.crop, per_rank, device)
        self.compute_batch = self.load_batch
        self._exchanging = False  # inside the backward pass that all-reduces (see `step`)
        self.amp_dtype = autocast_dtype(device, config.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # Called with (k, parts) as the k-th forward/backward of a step of several begins: one step of a
        # large batch on a CPU takes minutes, and the loop reports that it is under way (see train.py).
        self.on_micro_batch: Callable[[int, int], None] | None = None

    def ready(self) -> bool:
        return True

    def parameters(self):
        return [p for p in self.unwrapped.parameters() if p.requires_grad]

    def steps(self, stream: SampleStream, start: int, stop: int):
        sampler = StepBatches(stream, start, stop, self.load_batch, self.dist.rank, self.dist.world_size)
        loader = DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        it = iter(loader)
        for step in range(start, stop):
            yield [next(it) for _ in range(len(sampler.per_step(step)))]

    def step(self, micro_batches, step: int, lam: float, global_batch: int, cancel) -> float | None:
        """Accumulate the gradient of one optimizer step; the mean loss, or None when cancelled."""
        self.model.train()
        prepared = []
        offset = self.dist.rank * global_batch // self.dist.world_size  # where this rank's share starts
        for part, (x, y, _) in enumerate(micro_batches):
            if lam < 1.0:
                first = offset + part * self.load_batch
                perm = mixup_permutation(self.config.seed, step, first, len(y))
                x = lam * x + (1 - lam) * x[perm]
                y2 = y[perm]
            else:
                y2 = y
            prepared.append((x, y, y2))
        while True:
            try:
                return self._accumulate(prepared, lam, global_batch, cancel)
            except RuntimeError as exc:
                if not (_is_oom(exc) and self.compute_batch > 1):
                    raise
                if self._exchanging:
                    # DDP had started the all-reduce of this step's gradients: redoing the step would
                    # all-reduce twice here and once on the other ranks.
                    raise TrainingError(
                        f"Out of memory on {self.device} while the processes exchanged gradients "
                        f"(micro-batch {self.compute_batch}). Train again with a smaller micro-batch."
                    ) from exc
                # Out of memory: halve the compute chunk and redo the step. The global batch, and so the
                # result, stay the same.
                self.unwrapped.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.compute_batch //= 2

    def _accumulate(self, prepared, lam, global_batch, cancel) -> float | None:
        pieces = []
        for x, y, y2 in prepared:
            for i in range(0, len(y), self.compute_batch):
                pieces.append(
                    (
                        x[i : i + self.compute_batch],
                        y[i : i + self.compute_batch],
                        y2[i : i + self.compute_batch],
                    )
                )
        total_loss = 0.0
        self._exchanging = False
        for k, (x, y, y2) in enumerate(pieces):
            if cancel.is_set():
                return None
            if self.on_micro_batch is not None and len(pieces) > 1:
                self.on_micro_batch(k + 1, len(pieces))
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            y, y2 = y.to(self.device, non_blocking=True), y2.to(self.device, non_blocking=True)
            last = k == len(pieces) - 1
            sync = (
                self.model.no_sync()
                if (not last and hasattr(self.model, "no_sync"))
                else contextlib.nullcontext()
            )
            with sync:
                with torch.autocast(
                    self.device.type,
                    dtype=self.amp_dtype or torch.float32,
                    enabled=self.amp_dtype is not None,
                ):
                    logits = self.model(x)
                logits = logits.float()
                loss_sum = lam * F.cross_entropy(logits, y, reduction="sum")
                if lam < 1.0:
                    loss_sum = loss_sum + (1 - lam) * F.cross_entropy(logits, y2, reduction="sum")
                # Sum over the global batch, not a mean per micro-batch: the gradient is then the same
                # however the batch is cut, on one device or many (DDP averages over ranks, hence the factor).
                self._exchanging = last and self.dist.world_size > 1
                self.scaler.scale(loss_sum * self.dist.world_size / global_batch).backward()
            total_loss += loss_sum.item()
        return total_loss / sum(len(p[1]) for p in pieces)

    def optimizer_step(self, optimizer) -> None:
        if self.scaler.is_enabled():  # fp16 autocast: the step goes through the loss scaler
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def evaluate(self, val_set, cancel, on_batch=None):
        # Evaluation batches follow the training micro-batch, halved here too on out-of-memory (the
        # result does not depend on it: no layer mixes samples at evaluation).
        while True:
            try:
                return predict_dataset(
                    self.unwrapped,
                    val_set,
                    self.device,
                    self.memory_format,
                    batch_size=self.compute_batch,
                    on_batch=on_batch,
                    cancel=cancel,
                )
            except RuntimeError as exc:
                if not (_is_oom(exc) and self.compute_batch > 1):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.compute_batch //= 2


@contextlib.contextmanager
def one_cpu_thread(device: torch.device):
    """Run a head step's few small matrix products on one CPU thread.

    Handing such small work to OpenMP threads costs more than it saves, and on a busy machine every parallel
    region waits for a free core: a head step on 320 Lite0 features took 285-441 ms on 2 threads and 21-30 ms
    on one, with the 2 cores shared by other jobs.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class HeadTrainer:
    """Trains only a new head on frozen backbone features, computed once (the "head" strategy)."""

    def __init__(self, model, train_set, val_set, device, memory_format, workers, on_progress, cancel, seed):
        self.unwrapped = self.model = model
        self.seed = seed
        self.train_set, self.val_set = train_set, val_set
        self.device, self.memory_format, self.workers = device, memory_format, workers
        self.on_progress, self.cancel = on_progress, cancel
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.head_parameters():
            p.requires_grad_(True)
        self.features: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        # (features, labels) of the validation images; None when there are none.
        self.val_features: tuple[torch.Tensor, torch.Tensor] | None = None
        self.extractor: FeatureExtractor | None = None

    def _extract(self, dataset, offset: int, total: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        # Features without augmentation: the frozen backbone is run once per image, not once per step, and
        # not at all for photos whose features are cached from an earlier run or label-issue search.
        if self.extractor is None:
            self.extractor = FeatureExtractor(
                self.model, self.device, dataset.pre, workers=self.workers, on_progress=self.on_progress
            )
        feats = self.extractor.extract(dataset.paths, self.cancel, offset, total)
        if feats is None:
            return None
        return feats, torch.tensor(dataset.labels, dtype=torch.long)

    def ready(self) -> bool:
        total = len(self.train_set) + len(self.val_set)
        train = self._extract(self.train_set, 0, total)
        if train is None:
            return False
        val = self._extract(self.val_set, len(self.train_set), total) if len(self.val_set) else None
        if len(self.val_set) and val is None:
            return False
        self.features, self.labels = train
        self.val_features = val
        return True

    def parameters(self):
        return self.model.head_parameters()

    def optimizer_step(self, optimizer) -> None:
        optimizer.step()

    def steps(self, stream: SampleStream, start: int, stop: int):
        for step in range(start, stop):
            yield torch.from_numpy(stream.indices(step)[0])

    def step(self, index, step: int, lam: float, global_batch: int, cancel) -> float | None:
        if cancel.is_set():
            return None
        with one_cpu_thread(self.device):
            return self._step(index, step, lam)

    def _step(self, index, step: int, lam: float) -> float:
        f, y = self.features[index].to(self.device), self.labels[index].to(self.device)
        if lam < 1.0:
            # Mixup on features: the head is linear, so this mixes its inputs as image mixup would mix
            # the backbone's outputs to first order.
            perm = mixup_permutation(self.seed, step, 0, len(y)).to(self.device)
            f = lam * f + (1 - lam) * f[perm]
        logits = self.model.classify(f)
        loss = lam * F.cross_entropy(logits, y)
        if lam < 1.0:
            loss = loss + (1 - lam) * F.cross_entropy(logits, y[perm])
        loss.backward()
        return loss.item()

    @torch.no_grad()
    def evaluate(self, val_set, cancel, on_batch=None):
        if self.val_features is None:
            return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        if cancel is not None and cancel.is_set():
            return None
        logits = self.model.classify(self.val_features[0].to(self.device)).float().cpu()
        if on_batch is not None:
            on_batch(len(logits))
        return logits, self.val_features[1]
