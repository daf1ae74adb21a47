"""Fine-tuning: from a labelled folder to a trained, evaluated model. `fit`, `resume`, `estimate`.

The loop follows google-research/big_transfer `train.py`: SGD with momentum 0.9 and no weight decay, the
HyperRule's schedule counted in optimizer steps, a global batch reached by micro-batches with gradient
accumulation, mixup drawn once per step, a zero-initialised head.

What makes it safe to use from a GUI:
- progress arrives as `Progress` objects through a plain callback, and `cancel` (anything with `is_set()`,
  e.g. a `threading.Event`) is checked between micro-batches;
- every input the run sees is a pure function of (seed, step): sample order from per-epoch permutations,
  crop/flip from (seed, epoch, sample), mixup from (seed, step). A resume from a checkpoint therefore
  continues exactly where the run stopped, and data-parallel ranks can split a step without changing it;
- checkpoints, metrics and the final model are written atomically into the run folder (see runs.py).

Strategies: `full` fine-tunes everything (BiT's default); `head` freezes the pre-trained backbone, computes
its features once and trains only the new head on them (seconds where full fine-tuning on a CPU takes
hours); `scratch` starts from random weights with the same schedule: the baseline that shows what transfer buys.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bit_engine import data, hyperrule
from bit_engine.config import TrainConfig
from bit_engine.devices import autocast_dtype, prepare_for_device, resolve_device
from bit_engine.errors import BitStudioError
from bit_engine.evaluate import build_report, loss_and_top1, predict_dataset
from bit_engine.fileio import OutputPlaceError, check_new_run_folder, remove_stale_temporaries
from bit_engine.models import create_model, get_spec
from bit_engine.progress import Progress, ProgressCallback
from bit_engine.runs import RunDir
from bit_engine.transforms import ImageDataset, Preprocessing, build_cache, should_cache
from bit_engine.units import describe_duration

CHECKPOINT_VERSION = 1


class TrainingError(BitStudioError):
    """Training cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True)
class RunResult:
    """How `fit`/`resume` ended: status is "done" or "cancelled" (resumable)."""

    run_dir: Path
    status: str
    step: int
    total_steps: int
    val_top1: float | None = None
    report: dict | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel group (a single process by default).

    The distributed module builds one per rank; the loop only needs these few facts and hooks. The hooks
    that are collectives (`all_sum`, `share`) must be called by every rank at the same point.
    """

    rank: int = 0
    world_size: int = 1
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None  # e.g. DistributedDataParallel
    barrier: Callable[[], None] | None = None
    device: torch.device | None = None  # this rank's device; None: the config's
    local_world_size: int = 1  # ranks on this machine, which share its RAM and CPU cores
    all_sum: Callable[[list[float]], list[float]] | None = None  # element-wise sums over ranks (a collective)
    share: Callable[[object], object] | None = None  # rank 0's value, on every rank (a collective)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class _Never:
    def is_set(self) -> bool:
        return False


class _AgreedCancel:
    """The cancel flag as every rank sees it: agreed once per optimizer step, constant in between.

    Ranks notice a local flag at different moments; one leaving a step that another finishes would leave
    the other waiting in a gradient all-reduce. So the flag only changes at `agree()`, a collective every
    rank calls at the top of the same step, and all of them stop together (a step later at most).
    """

    def __init__(self, flag, all_sum: Callable[[list[float]], list[float]]):
        self.flag, self.all_sum, self.value = flag, all_sum, False

    def agree(self) -> bool:
        self.value = self.all_sum([1.0 if self.flag.is_set() else 0.0])[0] > 0
        return self.value

    def is_set(self) -> bool:
        return self.value


# --------------------------------------------------------------------------------------------------------------
# The sample stream: what every optimizer step sees, as a function of (seed, step)


class SampleStream:
    """Consecutive per-epoch permutations of the training set; step `s` takes the next `batch` of them.

    A global batch may run over the end of an epoch into the next one: every sample counts once per epoch
    and no sample is dropped, however the batch divides the dataset.
    """

    def __init__(self, num_samples: int, batch: int, seed: int):
        self.n, self.batch, self.seed = num_samples, batch, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def keys(self, step: int) -> list[tuple[int, int]]:
        """(sample index, epoch) for every image of optimizer step `step`."""
        start = step * self.batch
        out = []
        for pos in range(start, start + self.batch):
            epoch, i = divmod(pos, self.n)
            out.append((int(self._perm(epoch)[i]), epoch))
        return out

    def epoch_at(self, step: int) -> float:
        return step * self.batch / self.n


def rank_share(keys: list, rank: int, world_size: int) -> list:
    """The contiguous slice of a global batch that `rank` computes."""
    n = len(keys)
    return keys[rank * n // world_size : (rank + 1) * n // world_size]


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class _StepBatches:
    """Batch sampler for the DataLoader: the loader micro-batches of steps `start` .. `stop - 1`."""

    def __init__(self, stream: SampleStream, start: int, stop: int, load_batch: int, dist: DistContext):
        self.stream, self.start, self.stop, self.load_batch, self.dist = stream, start, stop, load_batch, dist

    def per_step(self, step: int) -> list[list[tuple[int, int]]]:
        share = rank_share(self.stream.keys(step), self.dist.rank, self.dist.world_size)
        return chunks(share, self.load_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield from self.per_step(step)


def mixup_lambda(seed: int, step: int, alpha: float) -> float:
    """Mixup's Beta(alpha, alpha) draw for optimizer step `step` (1.0 means no mixing)."""
    if alpha <= 0:
        return 1.0
    return float(np.random.default_rng([seed, step, 7]).beta(alpha, alpha))


def mixup_permutation(seed: int, step: int, part: int, n: int) -> torch.Tensor:
    """Mixup partners within a micro-batch of `n` images of step `step`.

    `part` says which micro-batch: the position of its first image in the global batch. Keyed by that and not
    by rank, one process and several pair the same images whenever their micro-batches start at the same
    places (a micro-batch size that divides each rank's share), and the runs stay equal with mixup on.
    """
    g = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, step, part, 11]).generate_state(1)[0])
    )
    return torch.randperm(n, generator=g)


# --------------------------------------------------------------------------------------------------------------
# Memory and device


def _available_ram() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def bytes_per_training_image(model_name: str, crop: int) -> float:
    """A generous estimate of activation memory for one image in a training step (fp32)."""
    spec = get_spec(model_name)
    scale = (crop / 224) ** 2
    if spec.family == "efficientnet":
        return 60e6 * scale
    return 110e6 * scale * spec.width_factor * (spec.depth / 50) ** 0.6


def auto_micro_batch(model_name: str, crop: int, global_batch: int, device: torch.device) -> int:
    """Images per forward pass that fit the device's free memory (halved again on CUDA out-of-memory).

    On the CPU an out-of-memory cannot be caught (the system kills the process), so the size is chosen from
    the free RAM with a wide margin, and capped at 32: beyond it a CPU gains no speed, and a smaller
    micro-batch keeps cancel responsive.
    """
    per_image = bytes_per_training_image(model_name, crop)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        fit = int(free * 0.7 / per_image)
        cap = 256
    else:
        fit = int(_available_ram() * 0.4 / per_image)
        cap = 32
    return max(1, min(global_batch, cap, fit))


def _is_oom(exc: BaseException) -> bool:
    # CUDA raises OutOfMemoryError; the CPU allocator a RuntimeError, when the system lets it fail at all.
    text = str(exc).lower()
    return (
        isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text
    )


# --------------------------------------------------------------------------------------------------------------
# Setting a run up


def _emit(on_progress: ProgressCallback | None, progress: Progress) -> None:
    if on_progress is not None:
        on_progress(progress)


def _scan(config: TrainConfig, on_progress, cancel) -> data.DatasetReport:
    def relay(p: data.ScanProgress) -> None:
        _emit(
            on_progress,
            Progress("scanning", p.files_done, p.files_total or 0, message=p.stage),
        )

    return data.scan(config.data_dir, on_progress=relay, cancel=cancel)


def make_plan(config: TrainConfig, num_train: int, median_size) -> hyperrule.HyperRulePlan:
    """The HyperRule plan with the config's overrides.

    Raises:
        TrainingError: an override is out of range (steps or batch below 1, resolution below 8, ...).
    """
    try:
        return hyperrule.plan(
            num_train,
            tuple(median_size),
            config.model,
            batch=config.batch,
            steps=config.steps,
            crop=config.resolution,
            mixup=config.mixup,
            flip=config.flip,
            random_crop=config.random_crop,
        )
    except ValueError as exc:  # the rule's range checks speak to the user, but as ValueErrors
        raise TrainingError(str(exc)) from exc


def build_model(config: TrainConfig, num_classes: int, on_progress=None, cancel=None) -> torch.nn.Module:
    """The model with its pre-trained weights (downloaded when missing), or random ones for `scratch`."""
    model = create_model(config.model, num_classes=num_classes, zero_head=True)
    if config.strategy == "scratch":
        return model
    from bit_engine import weights

    def relay(p) -> None:
        _emit(on_progress, Progress("downloading", p.done, p.total or 0, message=f"weights {config.model}"))

    weights.load_pretrained(model, config.model, download_if_missing=True, on_progress=relay, cancel=cancel)
    return model


def _meta(config: TrainConfig, classes, pre: Preprocessing, run: RunDir) -> dict:
    from bit_engine import __version__

    return {
        "model": config.model,
        "classes": list(classes),
        "preprocessing": pre.to_dict(),
        "strategy": config.strategy,
        "run_id": run.run_id,
        "app_version": __version__,
    }


def fit(
    config: TrainConfig,
    on_progress: ProgressCallback | None = None,
    cancel=None,
    *,
    out: str | Path | None = None,
    dist: DistContext | None = None,
) -> RunResult:
    """Scan the folder, plan with the HyperRule, train, evaluate; everything lands in a new run folder.

    Args:
        config: the run.
        on_progress: called with `Progress` objects (from this thread).
        cancel: `is_set()` is checked between micro-batches; a cancelled run stays resumable.
        out: the run folder (created); default: a new folder under the user's runs folder.
        dist: data-parallel placement (see distributed.py); None for one process.

    Raises:
        BitStudioError: the data cannot be trained on, the device cannot be used, the weights are missing.
    """
    dist = dist or DistContext()
    cancel = _rank_cancel(cancel, dist)
    device = dist.device or resolve_device(config.device)  # fail before the (possibly long) scan
    report = _scan(config, on_progress, cancel)
    if not report.ok:
        raise TrainingError("This folder cannot be trained on yet: " + " ".join(report.errors))
    split = data.split(report, val_fraction=config.val_fraction, seed=config.seed)
    plan = make_plan(config, len(split.train), report.median_size)
    pre = Preprocessing.from_plan(plan, get_spec(config.model).normalization)

    # Rank 0 alone checks and creates the folder (another rank would find rank 0's config.json, or create a
    # folder of its own), then tells the others where it is.
    run = _new_run_dir(config, out) if dist.is_main else None
    if dist.share is not None:
        run = RunDir(dist.share(str(run.path) if run is not None else None))
    elif run is None:
        if out is None:
            raise TrainingError("A data-parallel rank without `share` needs the run folder (`out`).")
        run = RunDir(out)
    if dist.is_main:
        run.write_json("config.json", config.to_dict())
        run.write_json(
            "plan.json", {**plan.to_dict(), "preprocessing": pre.to_dict(), "classes": list(split.classes)}
        )
        run.write_json("dataset.json", report.to_dict(include_samples=False))
        run.write_json("split.json", split.to_dict())
        run.set_status("running", 0, plan.total_steps)
    try:
        return _run(config, run, split, plan, pre, device, on_progress, cancel, dist, checkpoint=None)
    except BaseException as exc:
        if dist.is_main:
            _failed_start(run, exc, remove_folder=out is None)
        raise


#: What `fit` writes before the first step: all of a run that never got as far as a checkpoint.
_START_FILES = ("config.json", "plan.json", "dataset.json", "split.json", "status.json", "metrics.jsonl")


def _failed_start(run: RunDir, exc: BaseException, remove_folder: bool) -> None:
    """Never leave a run saying "running" after it failed (weights that could not be fetched, ...).

    Without a checkpoint there is nothing to resume: the files `fit` wrote are removed (and the folder it
    made under the runs folder, when empty), so that the same `--out` can be used again at once. With one,
    the run is marked failed, with the reason, and can be resumed.
    """
    if run.exists("checkpoint.pt"):
        status = run.read_json("status.json") if run.exists("status.json") else {}
        run.set_status(
            "failed", status.get("step", 0), status.get("total_steps", 0), str(exc) or type(exc).__name__
        )
        return
    for name in _START_FILES:
        run.file(name).unlink(missing_ok=True)
    if remove_folder:
        with contextlib.suppress(OSError):  # not empty: something else is in it, so it stays
            run.path.rmdir()


def _new_run_dir(config: TrainConfig, out: str | Path | None) -> RunDir:
    if out is None:
        return RunDir.create(config.data_dir, config.model)
    run = RunDir(out)
    try:
        check_new_run_folder(run.path, config.data_dir)
    except OutputPlaceError as exc:
        raise TrainingError(str(exc)) from None
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, a read-only disk, no permission
        raise TrainingError(
            f"Cannot make the run folder {run.path} ({exc.strerror or exc}). Choose another folder."
        ) from exc
    return run


def _rank_cancel(cancel, dist: DistContext):
    """The cancel flag the run checks: the caller's, or on several ranks the one they agree on."""
    cancel = cancel or _Never()
    return _AgreedCancel(cancel, dist.all_sum) if dist.all_sum is not None else cancel


def resume(
    run_dir: str | Path,
    on_progress: ProgressCallback | None = None,
    cancel=None,
    *,
    dist: DistContext | None = None,
) -> RunResult:
    """Continue a cancelled or interrupted run from its checkpoint, with the same split and schedule."""
    dist = dist or DistContext()
    cancel = _rank_cancel(cancel, dist)
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise TrainingError(f"{run.path} is not a run folder.")
    if dist.is_main:
        remove_stale_temporaries(run.path)
    config = TrainConfig.from_dict(run.read_json("config.json"))
    if run.exists("status.json") and run.exists("report.json") and run.exists("model.pt"):
        status = run.read_json("status.json")
        if status.get("state") == "done":
            # Nothing left to do: say so instead of training or evaluating again.
            report = run.read_json("report.json")
            return RunResult(
                run.path, "done", status["step"], status["total_steps"], report.get("accuracy"), report
            )
    split = data.Split.from_dict(run.read_json("split.json"))
    missing = split.missing()
    if missing:
        raise TrainingError(
            f"{len(missing)} training images of this run are no longer in {split.root} (first: {missing[0]}). "
            "Put them back to resume, or start a new run."
        )
    saved_plan = run.read_json("plan.json")
    plan = make_plan(config, len(split.train), saved_plan["median_size"])
    pre = Preprocessing.from_dict(saved_plan["preprocessing"])
    device = dist.device or resolve_device(config.device)
    checkpoint = run.load_checkpoint() if run.exists("checkpoint.pt") else None
    if checkpoint is not None and checkpoint.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"The checkpoint in {run.path} was written by another version of BiT Studio.")
    if dist.is_main:
        run.truncate_metrics(checkpoint["step"] if checkpoint else 0)
    return _run(config, run, split, plan, pre, device, on_progress, cancel, dist, checkpoint=checkpoint)


# --------------------------------------------------------------------------------------------------------------
# The loop


def _datasets(
    split: data.Split,
    pre: Preprocessing,
    seed: int,
    on_progress,
    cancel,
    workers_cfg,
    head: bool,
    dist: DistContext | None = None,
):
    """Training and validation datasets, with the in-memory cache where it fits.

    The head strategy reads every image once (for its features), so caching would only cost memory.
    Data-parallel ranks on one machine each hold a cache: it must fit that many times. Only rank 0
    evaluates, so only it caches the validation images.
    """
    dist = dist or DistContext()
    copies = dist.local_world_size
    train_paths = [str(split.path_of(s)) for s in split.train]
    val_paths = [str(split.path_of(s)) for s in split.val]
    cache_train = not head and should_cache(len(train_paths) * copies, pre.load_size(True))
    cache_val = not head and dist.is_main and should_cache(len(val_paths) * copies, pre.load_size(False))
    total = len(train_paths) * cache_train + len(val_paths) * cache_val
    caches: dict[str, list | None] = {"train": None, "val": None}
    done = 0
    for name, paths, wanted, train in (
        ("train", train_paths, cache_train, True),
        ("val", val_paths, cache_val, False),
    ):
        if not wanted:
            continue
        base = done

        def relay(i: int, base=base) -> None:
            _emit(on_progress, Progress("caching", base + i, total, message="decoding images"))

        caches[name] = build_cache(paths, pre.load_size(train), on_image=relay, cancel=cancel)
        if caches[name] is None:
            return None
        done += len(paths)
    train_set = ImageDataset(
        train_paths, [s.label for s in split.train], pre, train=True, seed=seed, cache=caches["train"]
    )
    val_set = ImageDataset(val_paths, [s.label for s in split.val], pre, train=False, cache=caches["val"])
    if workers_cfg is not None:
        workers = workers_cfg
    else:
        # Decoding is the slow part: workers pay off only when the images are not cached already.
        cores = (os.cpu_count() or 1) // copies
        workers = 0 if caches["train"] is not None else max(0, min(4, cores - 1))
    return train_set, val_set, workers


def _evaluation_steps(total: int, evaluations: int) -> set[int]:
    return {max(1, round(total * k / evaluations)) for k in range(1, evaluations + 1)} | {total}


def _run(config, run, split, plan, pre, device, on_progress, cancel, dist, checkpoint) -> RunResult:
    t0 = time.monotonic()
    torch.manual_seed(config.seed)
    classes = list(split.classes)
    model = build_model(config, len(classes), on_progress, cancel)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    model, memory_format = prepare_for_device(model, device)
    loaded = _datasets(
        split, pre, config.seed, on_progress, cancel, config.workers, config.strategy == "head", dist
    )
    if loaded is None:
        return _cancelled(run, checkpoint, plan, dist)
    train_set, val_set, workers = loaded

    if config.strategy == "head":
        trainer = _HeadTrainer(
            model, train_set, val_set, device, memory_format, workers, on_progress, cancel, config.seed
        )
    else:
        trainer = _FullTrainer(model, train_set, device, memory_format, config, plan, workers, dist)
    if not trainer.ready(run):
        return _cancelled(run, checkpoint, plan, dist)
    params = trainer.parameters()
    optimizer = torch.optim.SGD(params, lr=0.0, momentum=plan.momentum, weight_decay=0.0)
    start = 0
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        start = int(checkpoint["step"])
    stream = SampleStream(len(train_set), plan.batch, config.seed)
    eval_at = _evaluation_steps(plan.total_steps, config.evaluations)
    last_ckpt = time.monotonic()
    window: list[tuple[float, int]] = []
    val_loss = val_top1 = None

    def save_checkpoint(step: int) -> None:
        if not dist.is_main:
            return
        run.save_checkpoint(
            {
                "version": CHECKPOINT_VERSION,
                "model": {k: v.detach().cpu() for k, v in trainer.unwrapped.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "step": step,
                "config": config.to_dict(),
                "split": split.to_dict(),
            }
        )

    step = start
    for step_data in trainer.steps(stream, start, plan.total_steps):
        if isinstance(cancel, _AgreedCancel):
            cancel.agree()
        lr = plan.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t_step = time.monotonic()
        lam = mixup_lambda(config.seed, step, plan.mixup_alpha)
        loss = trainer.step(step_data, step, lam, plan.batch, cancel)
        if (
            loss is None
        ):  # cancelled mid-step: the partial gradients are dropped, the step is redone on resume
            optimizer.zero_grad(set_to_none=True)
            save_checkpoint(step)
            return _cancelled(run, {"step": step}, plan, dist)
        trainer.optimizer_step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        if dist.all_sum is not None:  # each rank saw its share: report the whole batch's loss
            n = _images_in(step_data)
            loss_sum, count = dist.all_sum([loss * n, float(n)])
            loss = loss_sum / count
        step += 1
        window.append((time.monotonic() - t_step, plan.batch))
        window = window[-20:]
        secs = sum(t for t, _ in window)
        ips = sum(n for _, n in window) / secs if secs > 0 else None
        elapsed = time.monotonic() - t0
        remaining = (plan.total_steps - step) * secs / len(window)
        record = {"step": step, "epoch": round(stream.epoch_at(step), 4), "train_loss": loss, "lr": lr}
        evaluated = step in eval_at
        if evaluated and dist.is_main:
            _emit(
                on_progress, Progress("evaluating", 0, len(val_set), step=step, total_steps=plan.total_steps)
            )
            result = trainer.evaluate(val_set, cancel)
            if result is None:
                save_checkpoint(step)
                return _cancelled(run, {"step": step}, plan, dist)
            val_loss, val_top1 = loss_and_top1(*result)
            record.update(val_loss=val_loss, val_top1=val_top1)
        if dist.is_main:
            run.append_metric({**record, "elapsed": round(elapsed, 3)})
            if evaluated or time.monotonic() - last_ckpt > config.checkpoint_minutes * 60:
                save_checkpoint(step)
                run.set_status("running", step, plan.total_steps)
                last_ckpt = time.monotonic()
        _emit(
            on_progress,
            Progress(
                "training",
                step,
                plan.total_steps,
                step=step,
                total_steps=plan.total_steps,
                epoch=stream.epoch_at(step),
                train_loss=loss,
                lr=lr,
                # The head strategy's steps run on cached features: an images/s figure would mean nothing.
                images_per_s=None if config.strategy == "head" else ips,
                elapsed=elapsed,
                eta=remaining,
                val_loss=val_loss,
                val_top1=val_top1,
            ),
        )
        if cancel.is_set() and step < plan.total_steps:
            save_checkpoint(step)
            return _cancelled(run, {"step": step}, plan, dist)

    report = None
    if dist.is_main:
        meta = _meta(config, classes, pre, run)
        run.save_model(trainer.unwrapped, meta)
        save_checkpoint(step)
        _emit(on_progress, Progress("evaluating", 0, len(val_set), step=step, total_steps=plan.total_steps))
        result = trainer.evaluate(val_set, None)
        files = [s.path for s in split.val]
        report = build_report(*result, classes, files)
        report.update(run_id=run.run_id, model=config.model, strategy=config.strategy, split="validation")
        run.write_json("report.json", report)
        run.set_status("done", step, plan.total_steps, f"Validation accuracy {report['accuracy']:.1%}")
        _emit(
            on_progress,
            Progress(
                "done",
                step,
                plan.total_steps,
                step=step,
                total_steps=plan.total_steps,
                elapsed=time.monotonic() - t0,
                val_loss=report["loss"],
                val_top1=report["accuracy"],
            ),
        )
    return RunResult(run.path, "done", step, plan.total_steps, report["accuracy"] if report else None, report)


def _images_in(step_data) -> int:
    """Images in one step's data: micro-batches of (x, y, index), or one index tensor (head strategy)."""
    if isinstance(step_data, torch.Tensor):
        return len(step_data)
    return sum(len(y) for _, y, _ in step_data)


def _cancelled(run: RunDir, checkpoint, plan, dist: DistContext) -> RunResult:
    step = int(checkpoint["step"]) if checkpoint else 0
    if dist.is_main:
        run.set_status("cancelled", step, plan.total_steps, f"Cancelled at step {step}: resume to continue.")
    return RunResult(run.path, "cancelled", step, plan.total_steps)


class _FullTrainer:
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

    def ready(self, run) -> bool:
        return True

    def parameters(self):
        return [p for p in self.unwrapped.parameters() if p.requires_grad]

    def steps(self, stream: SampleStream, start: int, stop: int):
        sampler = _StepBatches(stream, start, stop, self.load_batch, self.dist)
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
                        f"(micro-batch {self.compute_batch}). Train again with a smaller --micro-batch."
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

    def evaluate(self, val_set, cancel):
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
                    cancel=cancel,
                )
            except RuntimeError as exc:
                if not (_is_oom(exc) and self.compute_batch > 1):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.compute_batch //= 2


class _HeadTrainer:
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
        self.val_features: torch.Tensor | None = None

    @torch.no_grad()
    def _extract(self, dataset, offset: int, total: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        # Features without augmentation: the frozen backbone is run once per image, not once per step.
        eval_view = ImageDataset(dataset.paths, dataset.labels, dataset.pre, train=False, cache=None)
        if dataset.cache is not None and dataset.size == dataset.pre.crop:
            eval_view.cache = dataset.cache
        loader = DataLoader(eval_view, batch_size=16, num_workers=self.workers)
        self.model.eval()
        feats, labels, done = [], [], 0
        for x, y, _ in loader:
            if self.cancel.is_set():
                return None
            x = x.to(self.device).contiguous(memory_format=self.memory_format)
            feats.append(self.model.features(x).float().cpu())
            labels.append(y)
            done += len(y)
            _emit(self.on_progress, Progress("features", offset + done, total))
        return torch.cat(feats), torch.cat(labels)

    def ready(self, run: RunDir) -> bool:
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
            yield torch.tensor([i for i, _ in stream.keys(step)])

    def step(self, index, step: int, lam: float, global_batch: int, cancel) -> float | None:
        if cancel.is_set():
            return None
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
    def evaluate(self, val_set, cancel):
        if self.val_features is None:
            return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        logits = self.model.classify(self.val_features[0].to(self.device)).float().cpu()
        return logits, self.val_features[1]


# --------------------------------------------------------------------------------------------------------------
# Time estimate


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
    config: TrainConfig,
    num_train: int | None = None,
    num_val: int | None = None,
    median_size: tuple[int, int] | None = None,
    timed_steps: int = 2,
) -> Estimate:
    """Time a few micro-steps of `config` on its device and extrapolate to the whole schedule.

    The dataset sizes come from the arguments when given (the CLI has scanned already), else from a scan.
    Weights are random for the timing: speed does not depend on them, and nothing is downloaded.
    """
    if num_train is None or median_size is None:
        report = data.scan(config.data_dir)
        split = data.split(report, config.val_fraction, config.seed)
        num_train, num_val, median_size = len(split.train), len(split.val), report.median_size
    num_val = num_val or 0
    device = resolve_device(config.device)
    plan = make_plan(config, num_train, median_size)
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

    micro_step()  # warm-up: allocator, kernel selection
    t = time.perf_counter()
    for _ in range(timed_steps):
        micro_step()
    per_image = (time.perf_counter() - t) / (timed_steps * mb)
    if head:
        seconds = per_image * (num_train + num_val) + plan.total_steps * 0.002
        how = f"computing features of {num_train + num_val:,} images once, then {plan.total_steps} quick head steps"
    else:
        # Evaluation is forward-only (about a third of a training step per image), ~evaluations+1 times.
        seconds = per_image * (plan.total_steps * plan.batch + (config.evaluations + 1) * num_val / 3)
        how = f"{plan.total_steps:,} steps of {plan.batch} images at {plan.crop}x{plan.crop}"
    text = f"About {describe_duration(seconds)} on {device.type.upper()} ({how})."
    return Estimate(config.strategy, seconds, per_image, mb, str(device), text)
