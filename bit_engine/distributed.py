"""The rank side of data-parallel training: what one process of a group does, however it was started.

This module owns the placement a launcher gives a process (RANK / WORLD_SIZE / LOCAL_RANK, as torchrun sets
them), joining and leaving the process group, the `DistContext` hooks the training loop uses, the job every
rank runs (`TrainJob`) and `run_rank`, the one code path of a rank. Starting and watching processes is
`launcher.py`'s; the torchrun command-line entry is `bit_engine.cli.torchrun`.

Why BiT makes data parallelism simple: Group Norm normalizes each image on its own and Weight
Standardization the weights, so no statistic crosses samples. Processes ("ranks") exchange gradients and
nothing else (no SyncBatchNorm), and with the same global batch k ranks compute the update one process
computes, up to float rounding. tests/test_distributed.py checks it on the CPU: 1 vs 2 processes, weights
equal to 1e-5. EfficientNet-Lite0 keeps its BatchNorm frozen (running statistics, never updated), so it needs
no sync either; DDP therefore runs with `broadcast_buffers=False` (the buffers are broadcast once, at wrapping).

How a step is shared (the training loop does it, given the `DistContext` built here):
- Global batch = world size x micro-batch x accumulation steps. The HyperRule fixes the global batch; each
  rank computes a contiguous share of it in micro-batches, and DDP all-reduces the gradient once per step,
  on the last micro-batch (`no_sync` before it). Losses are summed and scaled by world size / global batch,
  so DDP's averaging gives the mean over the whole batch even when the shares differ by an image.
- The sampler is `sampling.SampleStream`, deliberately not torch's DistributedSampler. Step s takes the next
  `batch` samples of per-epoch permutations that are a pure function of (seed, epoch) (what set_epoch
  gives DistributedSampler) and each rank takes its slice. Unlike DistributedSampler, the images of step s
  are the same whatever the number of ranks (DistributedSampler deals indices rank::world, so a batch
  depends on it), and the uneven tail is neither padded with repeated samples (drop_last=False) nor
  dropped (drop_last=True): a batch runs over the end of an epoch into the next. Every sample counts once
  per epoch, every rank takes part in every step (no rank waits for one that ran out of data), and a run
  resumes exactly, even on another number of devices.
- No randomness depends on the rank: crop and flip are seeded from (seed, epoch, sample), mixup's lambda
  from (seed, step), its partners from (seed, step, position in the global batch).
- Rank 0 alone writes the run folder, checkpoints (the unwrapped model), metrics and the report, evaluates,
  and reports progress. While it evaluates, the others wait in the next step's first collective: the
  collective timeout (`DEFAULT_TIMEOUT_S`) is long enough for an evaluation.
- Cancel is agreed: the ranks sum their cancel flags once per step, so all stop at the same step and rank 0
  writes a checkpoint to resume from. A rank that left on its own would leave the others in an all-reduce.

Two ways to start the ranks, one code path (`run_rank`):
- `launcher.start_training` (the GUI, `bit-studio train --devices ...`): one spawned process per local
  device, owned by a `launcher.TrainingProcess`.
- torchrun, for several machines: on every node, `torchrun --nnodes N --nproc-per-node G --rdzv-backend c10d
  --rdzv-endpoint HOST:PORT -m bit_engine.cli.torchrun train DATA --out RUN ...`. Rendezvous, restarts and
  the teardown of a failed group are torchrun's; this module only reads the environment it sets.
"""

from __future__ import annotations

import datetime
import inspect
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bit_engine.config import TrainConfig
from bit_engine.devices import DeviceError, gpu_unavailable_reason
from bit_engine.errors import BitStudioError
from bit_engine.preparation import Prepared
from bit_engine.progress import CancelFlag, Progress, ProgressCallback
from bit_engine.train import DistContext, RunResult, fit, resume

#: How long a collective waits for the slowest rank before failing. Rank 0 evaluates while the others wait
#: in the next step's first collective, so this must outlast an evaluation of the validation set.
DEFAULT_TIMEOUT_S = 30 * 60.0


class DistributedError(BitStudioError):
    """A training process failed or died and the others were stopped.

    Attributes:
        rank: the process that failed first.
        details: its traceback, when it had one (for a log, not for the user).
    """

    def __init__(self, message: str, rank: int | None = None, details: str = ""):
        super().__init__(message)
        self.rank = rank
        self.details = details


# --------------------------------------------------------------------------------------------------------------
# The environment torchrun sets


@dataclass(frozen=True)
class Placement:
    """Where the launcher put this process, as torchrun describes it in the environment."""

    rank: int  # RANK: 0 .. world_size - 1 over all machines
    world_size: int  # WORLD_SIZE: processes in all
    local_rank: int  # LOCAL_RANK: the index on this machine (which GPU)
    local_world_size: int  # LOCAL_WORLD_SIZE: processes on this machine


def placement_from_env(environ=None) -> Placement | None:
    """This process's place from RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE; None when not set.

    MASTER_ADDR and MASTER_PORT, the rendezvous, are read by `torch.distributed` itself (env://).
    """
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    return Placement(
        rank=rank,
        world_size=world,
        local_rank=int(env.get("LOCAL_RANK", rank)),
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
    )


def is_main_process() -> bool:
    """True in rank 0, and in a process that is not part of a data-parallel group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    place = placement_from_env()
    return place is None or place.rank == 0


# --------------------------------------------------------------------------------------------------------------
# One rank


def init_process_group(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the group the environment describes (NCCL for CUDA, gloo for the CPU); the loop's `DistContext`.

    Raises:
        DistributedError: the environment does not describe a group (not started by torchrun or `launch`).
    """
    place = placement_from_env()
    if place is None:
        raise DistributedError(
            "RANK and WORLD_SIZE are not set: data-parallel ranks are started by the launcher or torchrun."
        )
    if device.type == "cuda":
        # NCCL binds each process to the current device: set it before the group exists.
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method="env://",
        rank=place.rank,
        world_size=place.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return rank_context(device, place)


def rank_context(device: torch.device, place: Placement) -> DistContext:
    """The hooks the training loop needs, over the current process group."""
    from torch.nn.parallel import DistributedDataParallel

    cuda = device.type == "cuda"
    # GN has no running statistics and EfficientNet's BN ones are frozen: buffers are synced once, when the
    # model is wrapped, never again before a forward pass. (The option was renamed in torch 2.14.)
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        buffers = {"forward_sync_buffers": False}
    else:
        buffers = {"broadcast_buffers": False}
    # channels_last 1x1 kernels get gradients whose strides differ from the bucket's only in size-1 axes
    # (the same bytes); DDP warns about a slower copy that is in fact a plain one.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        return DistributedDataParallel(model, device_ids=[device.index] if cuda else None, **buffers)

    def all_sum(values: list[float]) -> list[float]:
        # float64: a loss summed over ranks should not lose digits to the exchange.
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def share(obj: object) -> object:
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=device if cuda else None)
        return box[0]

    return DistContext(
        rank=place.rank,
        world_size=place.world_size,
        wrap=wrap,
        device=device,
        local_world_size=place.local_world_size,
        all_sum=all_sum,
        share=share,
    )


@dataclass(frozen=True)
class TrainJob:
    """What every rank runs: a new run of `config` into `out`, or the resume of `run_dir`. Picklable.

    Attributes:
        config: the run (a new run only).
        out: the run folder to create (a new run only; None: a new folder under the user's runs).
        run_dir: the run folder to resume (a resume only).
        prepared: the run's scan, split and plan, when the caller has them (`preparation.prepare`): the
            folder is then not scanned again. Its config is the run's (`config` may be left out).
    """

    config: TrainConfig | None = None
    out: str | None = None
    run_dir: str | None = None
    prepared: Prepared | None = None

    def load_config(self) -> TrainConfig:
        if self.config is not None:
            return self.config
        if self.prepared is not None:
            return self.prepared.config
        from bit_engine.runs import RunDir

        return TrainConfig.from_dict(RunDir(self.run_dir).read_json("config.json"))

    @property
    def folder(self) -> str | None:
        return self.run_dir if self.run_dir is not None else self.out

    def run(
        self, on_progress: ProgressCallback | None, cancel: CancelFlag | None, dist_context: DistContext
    ) -> RunResult:
        """Train or resume in this process, placed by `dist_context`."""
        if self.run_dir is not None:
            return resume(self.run_dir, on_progress, cancel, dist=dist_context)
        what = self.prepared if self.prepared is not None else self.config
        if self.prepared is not None and self.config is not None and self.config != self.prepared.config:
            what = self.prepared.with_config(self.config)  # e.g. the device the launcher chose
        return fit(what, on_progress, cancel, out=self.out, dist=dist_context)


def _needs_download(config: TrainConfig) -> str | None:
    """The model whose weights a run needs and the cache lacks, else None."""
    from bit_engine import weights
    from bit_engine.models import get_spec

    if config.strategy == "scratch":
        return None
    spec = get_spec(config.model)
    if spec.family != "bit" or weights.is_available(spec.name):
        return None
    return spec.name


def ensure_weights(
    config: TrainConfig, on_progress: ProgressCallback | None = None, cancel: CancelFlag | None = None
) -> None:
    """Download the run's pre-trained weights now, so that ranks do not race for the same cache file."""
    from bit_engine import weights_download

    name = _needs_download(config)
    if name is None:
        return

    def relay(p) -> None:
        if on_progress is not None:
            on_progress(Progress("downloading", p.done, p.total or 0, message=f"weights {name}"))

    weights_download.download(name, on_progress=relay, cancel=cancel)


def run_rank(
    job: TrainJob,
    device: torch.device,
    on_progress: ProgressCallback | None = None,
    cancel=None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RunResult:
    """One rank's whole run: join the group, train (rank 0 reports and writes), leave the group.

    Both launchers end here: `launcher.TrainingProcess` in each spawned rank, torchrun through
    `run_under_torchrun`.
    """
    place = placement_from_env()
    if place is None:
        raise DistributedError("run_rank needs RANK and WORLD_SIZE in the environment (torchrun sets them).")
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Ranks on one CPU share its cores: more threads than cores only makes them wait on each other.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // place.local_world_size))
    # One process per machine downloads; the others wait for the file, before any collective (a download can
    # take longer than a collective may wait). A download that fails ends that rank, and the launcher the rest.
    config = job.load_config()
    if place.local_rank == 0:
        ensure_weights(config, on_progress if place.rank == 0 else None, cancel)
    else:
        while _needs_download(config) is not None:
            time.sleep(1.0)
    context = init_process_group(device, timeout_s)
    try:
        return job.run(on_progress if context.is_main else None, cancel, context)
    finally:
        dist.destroy_process_group()


def run_under_torchrun(
    job: TrainJob,
    on_progress: ProgressCallback | None = None,
    cancel=None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RunResult:
    """The rank torchrun started: GPU number LOCAL_RANK, or the CPU when the config says `cpu`.

    SIGINT and SIGTERM set `cancel`: the ranks then agree to stop at the next step, and rank 0 writes a
    checkpoint to resume from. A second signal does not abort (the terminal's Ctrl-C reaches the workers,
    then torchrun forwards its own copy); torchrun itself sends SIGKILL 30 s after it began stopping.

    Raises:
        DeviceError: the config asks for CUDA and none can be used.
    """
    place = placement_from_env()
    if place is None:
        raise DistributedError("Not started by torchrun: RANK and WORLD_SIZE are not set.")
    config = job.load_config()
    wanted = (config.device or "auto").split(":")[0]
    reason = gpu_unavailable_reason()
    if wanted == "cpu" or (wanted == "auto" and reason is not None):
        device = torch.device("cpu")
    elif reason is not None:
        raise DeviceError(f"Cannot train on {config.device}: {reason}")
    else:
        device = torch.device("cuda", place.local_rank)
    if cancel is not None and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: cancel.set())
    return run_rank(job, device, on_progress if place.rank == 0 else None, cancel, timeout_s=timeout_s)
