"""Data-parallel training, one process per device: the same run as on one device, only faster.

Why BiT makes this simple: Group Norm normalizes each image on its own and Weight Standardization the
weights, so no statistic crosses samples. Processes ("ranks") exchange gradients and nothing else (no
SyncBatchNorm), and with the same global batch k ranks compute the update one process computes, up to float
rounding. tests/test_distributed.py checks it on the CPU: 1 vs 2 processes, weights equal to 1e-5.
EfficientNet-Lite0 keeps its BatchNorm frozen (running statistics, never updated), so it needs no sync
either; DDP therefore runs with `broadcast_buffers=False` (the buffers are broadcast once, at wrapping).

How a step is shared (train.py does it, given the `DistContext` built here):
- Global batch = world size x micro-batch x accumulation steps. The HyperRule fixes the global batch; each
  rank computes a contiguous share of it in micro-batches, and DDP all-reduces the gradient once per step,
  on the last micro-batch (`no_sync` before it). Losses are summed and scaled by world size / global batch,
  so DDP's averaging gives the mean over the whole batch even when the shares differ by an image.
- The sampler is `train.SampleStream`, deliberately not torch's DistributedSampler. Step s takes the next
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
- `launch` / `launch_resume` (the GUI, `bit-studio train --devices ...`): one process per local device,
  started with multiprocessing's *spawn* and owned by a `DataParallelRun`. Spawn rather than torchrun
  because the caller needs the processes as objects: rank 0's progress comes back as the same
  `train.Progress` objects over a queue, cancel goes out as an event, a dead rank shows at once in its exit
  code, and no `torchrun` executable or `python -m` is needed (a frozen app has neither). Spawn rather
  than fork: CUDA cannot be used in a forked child, and forking a threaded GUI process is unsafe.
- torchrun, for several machines: on every node, `torchrun --nnodes N --nproc-per-node G --rdzv-backend c10d
  --rdzv-endpoint HOST:PORT -m bit_engine.distributed train DATA --out RUN ...`. Rendezvous, restarts and
  the teardown of a failed group are torchrun's; this module only reads the environment it sets.

Failures: a rank that raises reports the exception and exits; one that dies (killed, out of memory) shows
in its exit code. Either way `DataParallelRun` stops the others (SIGTERM, then SIGKILL) and raises one clear
`BitStudioError`. Collective timeouts are the last guard, against a rank that hangs without dying.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import json
import multiprocessing
import os
import pickle
import queue as queue_module
import signal
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from bit_engine.config import TrainConfig
from bit_engine.devices import DeviceError, gpu_unavailable_reason
from bit_engine.errors import BitStudioError
from bit_engine.train import DistContext, Progress, ProgressCallback, RunResult, fit, resume

#: How long a collective waits for the slowest rank before failing. Rank 0 evaluates while the others wait
#: in the next step's first collective, so this must outlast an evaluation of the validation set.
DEFAULT_TIMEOUT_S = 30 * 60.0

#: After SIGTERM, how long a rank process gets before SIGKILL.
STOP_GRACE_S = 5.0

#: After the first failure, how long to wait for the other ranks' reports before choosing what to say.
FAILURE_GRACE_S = 2.0


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
# Devices and the environment torchrun sets


def parse_devices(spec: str) -> list[torch.device]:
    """The devices of `--devices`, one process each.

    Args:
        spec: `all` (every usable GPU), GPU numbers such as `0,1,3` (or `cuda:0,cuda:1`), or `cpu:N`
            (N processes on the CPU: for trying data parallelism out, not for speed).

    Raises:
        DeviceError: no GPU can be used (with the reason), a GPU is out of range or listed twice, or the
            text is not one of the forms above.
    """
    text = spec.strip().lower()
    if text == "cpu" or text.startswith("cpu:"):
        count = text[4:] or "1"
        if not count.isdigit() or int(count) < 1:
            raise DeviceError(f"Unknown devices {spec!r}: cpu:N needs a number of processes, e.g. cpu:2.")
        return [torch.device("cpu")] * int(count)
    reason = gpu_unavailable_reason()
    if reason is not None:
        raise DeviceError(f"Cannot train on GPUs ({spec}): {reason}")
    available = torch.cuda.device_count()
    if text == "all":
        return [torch.device("cuda", i) for i in range(available)]
    indices: list[int] = []
    for item in text.split(","):
        item = item.strip().removeprefix("cuda:")
        if not item.isdigit():
            raise DeviceError(
                f"Unknown devices {spec!r}: use all, GPU numbers such as 0,1,3, or cpu:N for CPU processes."
            )
        index = int(item)
        if index >= available:
            raise DeviceError(
                f"There is no GPU {index}: this machine has {available} (0 to {available - 1})."
            )
        if index in indices:
            raise DeviceError(
                f"GPU {index} is listed twice in {spec!r}: each process needs a GPU of its own."
            )
        indices.append(index)
    return [torch.device("cuda", i) for i in indices]


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
            "RANK and WORLD_SIZE are not set: start data-parallel training with torchrun or `--devices`."
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

    def barrier() -> None:
        dist.barrier(device_ids=[device.index]) if cuda else dist.barrier()

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
        barrier=barrier,
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
    """

    config: TrainConfig | None = None
    out: str | None = None
    run_dir: str | None = None

    def load_config(self) -> TrainConfig:
        if self.config is not None:
            return self.config
        from bit_engine.runs import RunDir

        return TrainConfig.from_dict(RunDir(self.run_dir).read_json("config.json"))

    @property
    def folder(self) -> str | None:
        return self.run_dir if self.run_dir is not None else self.out

    def run(self, on_progress, cancel, dist_context: DistContext) -> RunResult:
        if self.run_dir is not None:
            return resume(self.run_dir, on_progress, cancel, dist=dist_context)
        return fit(self.config, on_progress, cancel, out=self.out, dist=dist_context)


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


def ensure_weights(config: TrainConfig, on_progress: ProgressCallback | None = None, cancel=None) -> None:
    """Download the run's pre-trained weights now, so that ranks do not race for the same cache file."""
    from bit_engine import weights

    name = _needs_download(config)
    if name is None:
        return

    def relay(p) -> None:
        if on_progress is not None:
            on_progress(Progress("downloading", p.done, p.total or 0, message=f"weights {name}"))

    weights.download(name, on_progress=relay, cancel=cancel)


def run_rank(
    job: TrainJob,
    device: torch.device,
    on_progress: ProgressCallback | None = None,
    cancel=None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RunResult:
    """One rank's whole run: join the group, train (rank 0 reports and writes), leave the group.

    Both launchers end here: `launch` in each spawned process, torchrun through `run_under_torchrun`.
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


# --------------------------------------------------------------------------------------------------------------
# Several local processes, owned by one object


class _CancelOrOrphaned:
    """The rank's cancel flag: set by the parent's cancel event, or when the parent process is gone.

    A rank whose parent died (the GUI crashed) then stops at the next step with a checkpoint, instead of
    training on for nobody.
    """

    def __init__(self, event):
        self.event = event
        self.orphaned = threading.Event()
        parent = multiprocessing.parent_process()
        if parent is not None:
            threading.Thread(target=self._watch, args=(parent,), daemon=True).start()

    def _watch(self, parent) -> None:
        parent.join()
        self.orphaned.set()

    def is_set(self) -> bool:
        return self.event.is_set() or self.orphaned.is_set()


def _picklable(exc: BaseException) -> BaseException | None:
    try:
        return pickle.loads(pickle.dumps(exc))
    except Exception:
        return None


def _rank_process(rank, devices, port, job, events, cancel_event, setup, timeout_s) -> None:
    """Body of one spawned rank: the environment torchrun would set, then `run_rank`."""
    # Ctrl-C in a terminal reaches every process of the group; the parent turns it into an agreed cancel.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    world = len(devices)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    cancel = _CancelOrOrphaned(cancel_event)
    try:
        if setup is not None:
            setup()
        relay = (lambda p: events.put(("progress", rank, p))) if rank == 0 else None
        result = run_rank(job, torch.device(devices[rank]), relay, cancel, timeout_s=timeout_s)
        events.put(("result", rank, result))
    except BaseException as exc:
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        events.put(("error", rank, (_picklable(exc), f"{type(exc).__name__}: {exc}", details)))
        raise SystemExit(1) from None


def _free_port() -> int:
    # The port is free now; a process could take it before rank 0 binds it, but on one machine that is rare
    # and shows as a clear "address in use" error from rank 0.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if name == "SIGKILL":
            return "was killed (SIGKILL): the system may have run out of memory, or someone ended it"
        if name in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE"):
            return f"crashed ({name})"
        return f"was stopped by {name}"
    return f"exited with code {code} without saying why"


class DataParallelRun:
    """Starts, watches and stops the processes of one data-parallel run on this machine.

    Rank 0's progress arrives as `train.Progress` objects, passed to `on_progress` from the thread that calls
    `run`, so a caller handles one device and several alike. `cancel` is forwarded to every rank. When a rank
    fails or dies, the others are stopped (SIGTERM, then SIGKILL) and `run` raises one clear error.

    Args:
        job: what every rank runs.
        devices: one per rank (e.g. from `parse_devices`).
        setup: a picklable callable run first in every rank process (e.g. registering a model).
        timeout_s: how long a collective may wait (see `DEFAULT_TIMEOUT_S`).
    """

    def __init__(
        self,
        job: TrainJob,
        devices: Sequence[torch.device | str],
        *,
        setup: Callable[[], None] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ):
        self.job = job
        self.devices = [str(torch.device(d)) for d in devices]
        self.setup = setup
        self.timeout_s = timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._events = self._ctx.Queue()
        self._cancel = self._ctx.Event()
        self.processes: list = []
        self._stopping = False

    @property
    def world_size(self) -> int:
        return len(self.devices)

    @property
    def pids(self) -> list[int | None]:
        return [p.pid for p in self.processes]

    def start(self) -> None:
        port = _free_port()
        for rank in range(self.world_size):
            process = self._ctx.Process(
                target=_rank_process,
                args=(
                    rank,
                    self.devices,
                    port,
                    self.job,
                    self._events,
                    self._cancel,
                    self.setup,
                    self.timeout_s,
                ),
                name=f"bit-studio-rank-{rank}",
                daemon=False,  # ranks start DataLoader workers of their own, which daemons may not
            )
            process.start()
            self.processes.append(process)

    def run(self, on_progress: ProgressCallback | None = None, cancel=None) -> RunResult:
        """Start the ranks (unless started), relay progress until they end; rank 0's result.

        Raises:
            BitStudioError: what a rank raised for the user (bad data, no weights, ...), as it raised it.
            DistributedError: a rank failed otherwise or died; the message says which and why.
        """
        if not self.processes:
            if on_progress is not None:
                on_progress(Progress("starting", 0, self.world_size, message=f"{self.world_size} processes"))
            self.start()
        try:
            return self._watch(on_progress, cancel)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop every rank that still runs: SIGTERM first, SIGKILL after `STOP_GRACE_S`."""
        self._stopping = True
        alive = [p for p in self.processes if p.exitcode is None]
        for p in alive:
            p.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in alive:
            if p.exitcode is None:
                p.kill()
                p.join()

    def _watch(self, on_progress, cancel) -> RunResult:
        results: dict[int, RunResult] = {}
        errors: dict[int, tuple] = {}  # rank -> (exception or None, summary, traceback)
        first_failure: float | None = None
        while True:
            try:
                kind, rank, payload = self._events.get(timeout=0.1)
            except queue_module.Empty:
                kind = None
            if kind == "progress" and on_progress is not None:
                on_progress(payload)
            elif kind == "result":
                results[rank] = payload
            elif kind == "error":
                errors[rank] = payload
                first_failure = first_failure or time.monotonic()
            if cancel is not None and cancel.is_set() and not self._cancel.is_set():
                self._cancel.set()
            codes = [p.exitcode for p in self.processes]
            if any(c not in (None, 0) for c in codes):
                first_failure = first_failure or time.monotonic()
            if first_failure is not None:
                # Wait a moment for the others: a rank killed by a signal says nothing, while the survivors
                # report secondary errors (a closed connection) that must not hide it.
                if all(c is not None for c in codes) or time.monotonic() - first_failure > FAILURE_GRACE_S:
                    self._drain(errors, results)
                    raise self._failure(errors, codes)
            elif all(c == 0 for c in codes):
                self._drain(errors, results)
                if 0 not in results:
                    raise DistributedError("Training process 0 ended without a result.", 0)
                return results[0]

    def _drain(self, errors: dict, results: dict) -> None:
        while True:
            try:
                kind, rank, payload = self._events.get(timeout=0.05)
            except queue_module.Empty:
                return
            if kind == "error":
                errors[rank] = payload
            elif kind == "result":
                results[rank] = payload

    def _failure(self, errors: dict, codes: list[int | None]) -> BaseException:
        dead = {r: c for r, c in enumerate(codes) if c not in (None, 0) and r not in errors}
        self.stop()
        self._mark_failed()
        if dead:
            rank = min(dead)
            what = _describe_exit(dead[rank])
            return DistributedError(self._sentence(rank, what), rank)
        # A user-facing error first (bad data, missing weights): it is the cause, the others' are echoes.
        ranked = sorted(errors, key=lambda r: (not isinstance(errors[r][0], BitStudioError), r))
        rank = ranked[0]
        exc, summary, details = errors[rank]
        if isinstance(exc, BitStudioError):
            return exc
        what = f"failed: {summary}"
        if "timed out" in summary.lower() or "timeout" in summary.lower():
            what += f" (another process did not answer within {self.timeout_s:.0f} s)"
        return DistributedError(self._sentence(rank, what), rank, details)

    def _sentence(self, rank: int, what: str) -> str:
        text = (
            f"Training process {rank} of {self.world_size} ({self.devices[rank]}) {what}. "
            "The other processes were stopped."
        )
        folder = self.job.folder
        if folder and (Path(folder) / "config.json").exists():
            text += f" The run can continue from its last checkpoint: bit-studio resume {folder}"
        return text

    def _mark_failed(self) -> None:
        folder = self.job.folder
        if not folder:
            return
        path = Path(folder)
        status = path / "status.json"
        if status.exists():
            from bit_engine.runs import RunDir

            with contextlib.suppress(OSError, ValueError):
                old = json.loads(status.read_text(encoding="utf-8"))
                RunDir(path).set_status("failed", old.get("step", 0), old.get("total_steps", 0), "")
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # made for this run, which never started: leave no empty folder behind


# --------------------------------------------------------------------------------------------------------------
# The entry points


def launch(
    config: TrainConfig,
    devices: str | Sequence[torch.device | str],
    on_progress: ProgressCallback | None = None,
    cancel=None,
    *,
    out: str | Path | None = None,
    setup: Callable[[], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RunResult:
    """`train.fit` on several devices of this machine, one process each; otherwise the same call.

    One device runs in this process. The head strategy, which trains a linear head on features computed
    once, runs on the first device: it has nothing worth sharing out.

    Args:
        config: the run; its `device` is recorded as the devices' type.
        devices: a `--devices` text (`all`, `0,1,3`, `cpu:N`) or a list of devices.
        on_progress: receives rank 0's `train.Progress`, from this thread.
        cancel: anything with `is_set()`; every rank stops at the same step, with a checkpoint.
        out: the run folder to create (default: a new folder under the user's runs).
        setup: a picklable callable run first in every new process.
        timeout_s: how long a collective may wait for the slowest rank.

    Raises:
        BitStudioError: as `fit` raises; DistributedError when a process fails or dies.
    """
    from bit_engine.runs import RunDir

    devices = parse_devices(devices) if isinstance(devices, str) else [torch.device(d) for d in devices]
    if len(devices) == 1 or config.strategy == "head":
        return fit(config.replace(device=str(devices[0])), on_progress, cancel, out=out)
    ensure_weights(config, on_progress, cancel)
    if out is None:
        # Made here, so that the error of a failed run can name it.
        out = RunDir.create(config.data_dir, config.model).path
    job = TrainJob(config=config.replace(device=devices[0].type), out=str(out))
    return DataParallelRun(job, devices, setup=setup, timeout_s=timeout_s).run(on_progress, cancel)


def launch_resume(
    run_dir: str | Path,
    devices: str | Sequence[torch.device | str],
    on_progress: ProgressCallback | None = None,
    cancel=None,
    *,
    setup: Callable[[], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RunResult:
    """`train.resume` on several devices: any number of them, whatever the run started on."""
    devices = parse_devices(devices) if isinstance(devices, str) else [torch.device(d) for d in devices]
    job = TrainJob(run_dir=str(run_dir))
    config = job.load_config()
    if len(devices) == 1 or config.strategy == "head":
        return resume(run_dir, on_progress, cancel, dist=DistContext(device=devices[0]))
    ensure_weights(config, on_progress, cancel)
    return DataParallelRun(job, devices, setup=setup, timeout_s=timeout_s).run(on_progress, cancel)


def main(argv: list[str] | None = None) -> int:
    """`torchrun ... -m bit_engine.distributed train|resume ...`: the `bit-studio` command line, as one rank."""
    import sys

    if placement_from_env() is None:
        print(
            "error: this is the entry point for torchrun, e.g.\n"
            "  torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\\n"
            "      -m bit_engine.distributed train PHOTOS/ --out RUN_DIR\n"
            "On one machine, use `bit-studio train PHOTOS/ --devices all` instead.",
            file=sys.stderr,
        )
        return 2
    from bit_engine.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
