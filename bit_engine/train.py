"""Fine-tuning: from a labelled folder to a trained, evaluated model. `fit` and `resume`, and the loop they share.

The loop follows google-research/big_transfer's training script: SGD with momentum 0.9 and no weight decay,
the HyperRule's schedule counted in optimizer steps, a global batch reached by micro-batches with gradient
accumulation, mixup drawn once per step, a zero-initialised head.

This module owns the run from its folder's point of view: what is written when (config, plan, split,
checkpoints, metrics, report, status), the schedule, evaluations, cancel and progress. The rest lives apart:
`preparation.py` (scan, split, plan, pre-processing), `sampling.py` (sample order and mixup as functions of
(seed, step)), `trainers.py` (how the full and the head strategies compute a step), `estimate.py` (timing).

What makes it safe to use from a GUI:
- progress arrives as `Progress` objects through a plain callback, and `cancel` (anything with `is_set()`,
  e.g. a `threading.Event`) is checked between micro-batches; a cancel ends the one way progress.py states;
- every input the run sees is a pure function of (seed, step), so a resume from a checkpoint continues
  exactly where the run stopped, and data-parallel ranks can split a step without changing it;
- checkpoints, metrics and the final model are written atomically into the run folder (see runs.py), and
  status.json says how the run ended, whatever ended it.

Strategies: `full` fine-tunes everything (BiT's default); `head` freezes the pre-trained backbone, computes
its features once and trains only the new head on them (seconds where full fine-tuning on a CPU takes
hours); `scratch` starts from random weights with the same schedule: the baseline that shows what transfer buys.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bit_engine.config import TrainConfig
from bit_engine.devices import prepare_for_device, resolve_device
from bit_engine.errors import BitStudioError
from bit_engine.estimate import Estimate, estimate
from bit_engine.evaluate import build_report, loss_and_top1
from bit_engine.fileio import OutputPlaceError, check_new_run_folder, remove_stale_temporaries
from bit_engine.holdout import Split
from bit_engine.models import create_model
from bit_engine.preparation import Prepared, TrainingError, make_plan, prepare
from bit_engine.progress import CancelFlag, OperationCancelled, Progress, ProgressCallback
from bit_engine.report import EvaluationReport
from bit_engine.runs import HEARTBEAT_S, RunDir, read_status
from bit_engine.sampling import SampleStream, mixup_lambda
from bit_engine.trainers import DistContext, FullTrainer, HeadTrainer
from bit_engine.transforms import ImageDataset, Preprocessing, build_cache, loader_workers, should_cache

# `estimate`, `Estimate`, `make_plan` and `TrainingError` live in estimate.py and preparation.py; they are
# named here too because front ends reach them through this module (`train.estimate(...)`).
__all__ = [
    "CHECKPOINT_VERSION",
    "DistContext",
    "Estimate",
    "RunResult",
    "TrainingError",
    "estimate",
    "fit",
    "make_plan",
    "new_run_dir",
    "resume",
]

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class RunResult:
    """A finished run (a cancelled one raises `OperationCancelled` instead, see progress.py).

    Attributes:
        run_dir: the run folder.
        status: always "done" (kept so a result reads like the run's status.json).
        step, total_steps: where it ended (equal).
        val_top1: validation accuracy; None without validation images (and on ranks other than 0).
        report: the evaluation report (rank 0 only).
    """

    run_dir: Path
    status: str
    step: int
    total_steps: int
    val_top1: float | None = None
    report: EvaluationReport | None = field(default=None, repr=False)


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
# Setting a run up


def _emit(on_progress: ProgressCallback | None, progress: Progress) -> None:
    if on_progress is not None:
        on_progress(progress)


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
    config: TrainConfig | Prepared,
    on_progress: ProgressCallback | None = None,
    cancel: CancelFlag | None = None,
    *,
    out: str | Path | None = None,
    dist: DistContext | None = None,
) -> RunResult:
    """Scan the folder, plan with the HyperRule, train, evaluate; everything lands in a new run folder.

    Args:
        config: the run, or a `Prepared` one (from `preparation.prepare`: the folder is not scanned again).
        on_progress: called with `Progress` objects (from this thread).
        cancel: `is_set()` is checked between micro-batches (and images, files, bytes in the other phases).
        out: the run folder (created, or an empty one); default: a new folder under the user's runs folder.
        dist: data-parallel placement (see distributed.py); None for one process.

    Returns:
        The finished run. status.json then says `done`.

    Raises:
        OperationCancelled: `cancel` was set. Before the first step (scan, download, caching, features)
            nothing is kept (`run_dir` None); from the first step on the run is saved with status
            `cancelled` and `run_dir` says where to resume.
        BitStudioError: the data cannot be trained on, the device cannot be used, the weights are missing.
            Before the first checkpoint nothing is kept; after it, status.json says `failed` with the error,
            for every exception.
    """
    dist = dist or DistContext()
    cancel = _rank_cancel(cancel, dist)
    prepared = config if isinstance(config, Prepared) else None
    config = prepared.config if prepared is not None else config
    device = dist.device or resolve_device(config.device)  # fail before the (possibly long) scan
    if prepared is None:
        prepared = prepare(config, on_progress, cancel)
    report, split, plan, pre = prepared.report, prepared.split, prepared.plan, prepared.preprocessing

    # Rank 0 alone checks and creates the folder (another rank would find rank 0's config.json, or create a
    # folder of its own), then tells the others where it is.
    run = new_run_dir(config, out) if dist.is_main else None
    if dist.share is not None:
        run = RunDir(dist.share(str(run.path) if run is not None else None))
    elif run is None:
        if out is None:
            raise TrainingError("A data-parallel rank without `share` needs the run folder (`out`).")
        run = RunDir(out)
    if dist.is_main:
        run.write_json("config.json", config.to_dict())
        applied = prepared.corrections
        recorded = {"corrections": applied.counts()} if applied else {}
        run.write_json(
            "plan.json",
            {**plan.to_dict(), "preprocessing": pre.to_dict(), "classes": list(split.classes), **recorded},
        )
        run.write_json("dataset.json", report.to_dict(include_samples=False))
        run.write_json("split.json", split.to_dict())
        if applied:
            # Which label corrections this run trained with (and which it could not apply, and why).
            run.write_json("corrections.json", applied.to_dict())
        run.set_status("running", 0, plan.total_steps)
    return _run(
        config, run, split, plan, pre, device, on_progress, cancel, dist, None, made_folder=out is None
    )


#: What `fit` writes before the first step: all of a run that never got as far as a checkpoint.
_START_FILES = (
    "config.json",
    "plan.json",
    "dataset.json",
    "split.json",
    "corrections.json",
    "status.json",
    "metrics.jsonl",
)


def _discard_start(run: RunDir, remove_folder: bool) -> None:
    """Remove what `fit` wrote for a run that ended before its first checkpoint: there is nothing to resume.

    The same `out` can then be used again at once; the folder `fit` made under the runs folder goes too
    (when empty: anything else in it stays).
    """
    for name in _START_FILES:
        run.file(name).unlink(missing_ok=True)
    if remove_folder:
        with contextlib.suppress(OSError):
            run.path.rmdir()


def new_run_dir(config: TrainConfig, out: str | Path | None) -> RunDir:
    """The folder a new run of `config` writes into: `out` (made if missing), or a new one under the runs.

    Raises:
        TrainingError: `out` holds a run already, or cannot be made.
    """
    if out is None:
        return RunDir.create(config.data_dir, config.model)
    run = RunDir(out)
    try:
        check_new_run_folder(run.path, config.data_dir)
    except OutputPlaceError as exc:
        raise TrainingError(str(exc), run_dir=exc.run_dir, remedy=exc.remedy) from None
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
    cancel: CancelFlag | None = None,
    *,
    dist: DistContext | None = None,
) -> RunResult:
    """Continue a cancelled, failed or interrupted run from its checkpoint, with the same split and schedule.

    Returns, raises and writes status.json as `fit` does. A run that is done already returns at once.

    Raises:
        TrainingError: not a run folder, a run that another process is training now, images missing.
    """
    dist = dist or DistContext()
    cancel = _rank_cancel(cancel, dist)
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise TrainingError(f"{run.path} is not a run folder.", run_dir=run.path)
    config = TrainConfig.from_dict(run.read_json("config.json"))
    if run.exists("status.json"):
        status = read_status(run.path)
        if status.state == "running" and status.pid != os.getpid():
            raise TrainingError(
                f"{run.path} is being trained now (process {status.pid} on {status.host}). "
                "Wait for it to end, or stop it first.",
                run_dir=run.path,
            )
        if status.state == "done" and run.exists("report.json") and run.exists("model.pt"):
            # Nothing left to do: say so instead of training or evaluating again.
            report = EvaluationReport.from_dict(run.read_json("report.json"))
            return RunResult(run.path, "done", status.step, status.total_steps, report.accuracy, report)
    if dist.is_main:
        # Left by a kill during an atomic write; no other process trains this run (checked just above).
        remove_stale_temporaries(run.path)
    split = Split.from_dict(run.read_json("split.json"))
    missing = split.missing()
    if missing:
        raise TrainingError(
            f"{len(missing)} training images of this run are no longer in {split.root} (first: {missing[0]}). "
            "Put them back to resume, or start a new run.",
            run_dir=run.path,
        )
    saved_plan = run.read_json("plan.json")
    plan = make_plan(config, len(split.train), saved_plan["median_size"])
    pre = Preprocessing.from_dict(saved_plan["preprocessing"])
    device = dist.device or resolve_device(config.device)
    checkpoint = run.load_checkpoint() if run.exists("checkpoint.pt") else None
    if checkpoint is not None and checkpoint.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(
            f"The checkpoint in {run.path} was written by another version of BiT Studio.", run_dir=run.path
        )
    if dist.is_main:
        run.truncate_metrics(checkpoint["step"] if checkpoint else 0)
    return _run(config, run, split, plan, pre, device, on_progress, cancel, dist, checkpoint)


# --------------------------------------------------------------------------------------------------------------
# The loop


def _datasets(
    split: Split,
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
    # Decoding is the slow part: workers pay off only when the images are not cached already.
    cached = caches["train"] is not None
    workers = workers_cfg if workers_cfg is not None else loader_workers(cached, copies)
    return train_set, val_set, workers


def _evaluation_steps(total: int, evaluations: int) -> set[int]:
    return {max(1, round(total * k / evaluations)) for k in range(1, evaluations + 1)} | {total}


class _Heartbeat:
    """Refreshes status.json's heartbeat while the run trains, so a reader can tell a run that died."""

    def __init__(self, run: RunDir):
        self.run, self.stopped = run, threading.Event()
        self.thread = threading.Thread(target=self._beat, name="bit-studio-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                self.run.beat()

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()


def _recorded_step(run: RunDir) -> int:
    try:
        return int(run.read_json("status.json").get("step", 0))
    except (BitStudioError, ValueError, TypeError):
        return 0


def _run(
    config, run, split, plan, pre, device, on_progress, cancel, dist, checkpoint, *, made_folder=None
) -> RunResult:
    """Train and evaluate; rank 0 leaves the run folder saying how the run ended, whatever ended it.

    A new run (`made_folder` not None: `fit`) that ends before its first checkpoint (weights that cannot
    be fetched, a cancel while caching or computing features) leaves no run: `_discard_start`, and a cancel
    raises `OperationCancelled` without a `run_dir`. Otherwise status.json says `cancelled` (resumable),
    `failed` (with the error) or, at the end, `done`.
    """
    total = plan.total_steps
    beating = _Heartbeat(run) if dist.is_main else contextlib.nullcontext()
    try:
        with beating:
            return _train_and_evaluate(
                config, run, split, plan, pre, device, on_progress, cancel, dist, checkpoint
            )
    except BaseException as exc:
        if not dist.is_main:
            raise
        if made_folder is not None and not run.exists("checkpoint.pt"):
            _discard_start(run, made_folder)
            if isinstance(exc, OperationCancelled):
                raise OperationCancelled("Cancelled before training began; nothing was saved.") from exc
            raise
        if isinstance(exc, OperationCancelled):
            if exc.run_dir is not None:
                raise  # the loop saved the run and said so
            # A cancel in the download, the cache or the features: nothing trained since the last checkpoint.
            raise _cancelled(run, int(checkpoint["step"]) if checkpoint else 0, plan, dist) from exc
        step = _recorded_step(run)
        if isinstance(exc, KeyboardInterrupt):
            # A second Ctrl-C: no checkpoint was written now, but the last one is intact.
            run.set_status("cancelled", step, total, f"Stopped at once; resuming continues from step {step}.")
        else:
            error = str(exc) if isinstance(exc, BitStudioError) else f"{type(exc).__name__}: {exc}"
            run.set_status("failed", step, total, f"Training failed: {error}", error=error)
        raise


def _train_and_evaluate(
    config, run, split, plan, pre, device, on_progress, cancel, dist, checkpoint
) -> RunResult:
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
        raise _cancelled(run, int(checkpoint["step"]) if checkpoint else 0, plan, dist)
    train_set, val_set, workers = loaded

    if config.strategy == "head":
        trainer = HeadTrainer(
            model, train_set, val_set, device, memory_format, workers, on_progress, cancel, config.seed
        )
    else:
        trainer = FullTrainer(model, train_set, device, memory_format, config, plan, workers, dist)
    if not trainer.ready():
        raise _cancelled(run, int(checkpoint["step"]) if checkpoint else 0, plan, dist)
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
    ips = remaining = None
    lr = plan.lr(start)
    step_ended = time.monotonic()

    def report_training(**figures) -> None:
        """A "training" report at the current step, with the latest validation figures."""
        _emit(
            on_progress,
            Progress(
                "training",
                step,
                plan.total_steps,
                step=step,
                total_steps=plan.total_steps,
                epoch=stream.epoch_at(step),
                lr=lr,
                val_loss=val_loss,
                val_top1=val_top1,
                **figures,
            ),
        )

    def within_step(k: int, parts: int) -> None:
        # One step of a large batch on a CPU takes minutes: say that it is under way, micro-batch by
        # micro-batch, in a "training" report without a loss (the step's own report follows it).
        now = time.monotonic()
        left = None if remaining is None else remaining - (now - step_ended)
        report_training(
            images_per_s=ips,
            elapsed=now - t0,
            eta=left if left is not None and left > 0 else None,  # run out: no figure, not "0s"
            message=f"micro-batch {k} of {parts} of step {step + 1}",
        )

    if isinstance(trainer, FullTrainer):
        trainer.on_micro_batch = within_step

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
            raise _cancelled(run, step, plan, dist)
        trainer.optimizer_step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        if dist.all_sum is not None:  # each rank saw its share: report the whole batch's loss
            n = _images_in(step_data)
            loss_sum, count = dist.all_sum([loss * n, float(n)])
            loss = loss_sum / count
        step += 1
        step_ended = time.monotonic()
        window.append((step_ended - t_step, plan.batch))
        window = window[-20:]
        secs = sum(t for t, _ in window)
        ips = sum(n for _, n in window) / secs if secs > 0 else None
        elapsed = step_ended - t0
        remaining = (plan.total_steps - step) * secs / len(window)
        record = {"step": step, "epoch": round(stream.epoch_at(step), 4), "train_loss": loss, "lr": lr}
        evaluated = step in eval_at
        if evaluated and dist.is_main:
            result = trainer.evaluate(val_set, cancel, _counting(on_progress, len(val_set), step, plan))
            if result is None:
                save_checkpoint(step)
                raise _cancelled(run, step, plan, dist)
            val_loss, val_top1 = loss_and_top1(*result)
            record.update(val_loss=val_loss, val_top1=val_top1)
        if dist.is_main:
            run.append_metric({**record, "elapsed": round(elapsed, 3)})
            if evaluated or time.monotonic() - last_ckpt > config.checkpoint_minutes * 60:
                save_checkpoint(step)
                run.set_status("running", step, plan.total_steps)
                last_ckpt = time.monotonic()
        report_training(
            train_loss=loss,
            # The head strategy's steps run on cached features: an images/s figure would mean nothing.
            images_per_s=None if config.strategy == "head" else ips,
            elapsed=elapsed,
            eta=remaining,
        )
        if cancel.is_set() and step < plan.total_steps:
            save_checkpoint(step)
            raise _cancelled(run, step, plan, dist)

    report = None
    if dist.is_main:
        meta = _meta(config, classes, pre, run)
        run.save_model(trainer.unwrapped, meta)
        save_checkpoint(step)
        # The final evaluation honours cancel too: the checkpoint is at the last step, so a resume only
        # evaluates.
        result = trainer.evaluate(val_set, cancel, _counting(on_progress, len(val_set), step, plan))
        if result is None:
            raise _cancelled(run, step, plan, dist)
        files = [s.path for s in split.val]
        report = build_report(
            *result,
            classes,
            files,
            run_id=run.run_id,
            model=config.model,
            strategy=config.strategy,
            split="validation",
        )
        run.write_json("report.json", report.to_dict())
        run.set_status("done", step, plan.total_steps, report.describe_accuracy() + ".")
        _emit(
            on_progress,
            Progress(
                "done",
                step,
                plan.total_steps,
                step=step,
                total_steps=plan.total_steps,
                elapsed=time.monotonic() - t0,
                val_loss=report.loss,
                val_top1=report.accuracy,
                message=report.describe_accuracy(),
            ),
        )
    return RunResult(run.path, "done", step, plan.total_steps, report.accuracy if report else None, report)


def _counting(on_progress, total: int, step: int, plan) -> Callable[[int], None]:
    """An `on_batch` for `predict_dataset` that reports the evaluation phase in images."""

    def relay(done: int) -> None:
        _emit(on_progress, Progress("evaluating", done, total, step=step, total_steps=plan.total_steps))

    relay(0)
    return relay


def _images_in(step_data) -> int:
    """Images in one step's data: micro-batches of (x, y, index), or one index tensor (head strategy)."""
    if isinstance(step_data, torch.Tensor):
        return len(step_data)
    return sum(len(y) for _, y, _ in step_data)


def _cancelled(run: RunDir, step: int, plan, dist: DistContext) -> OperationCancelled:
    """Record the cancel (rank 0) and return the exception that says where the run can be resumed."""
    message = f"Cancelled at step {step} of {plan.total_steps}. The run is saved and can be resumed."
    if dist.is_main:
        run.set_status("cancelled", step, plan.total_steps, message)
    return OperationCancelled(message, run.path, step, plan.total_steps)
