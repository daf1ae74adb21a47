"""The one way a front end starts training: `start_training(job, devices)` and the `TrainingProcess` it returns.

The engine, not the front end, chooses how a run is carried out:
- several devices: one spawned process per device, a data-parallel group (see distributed.py);
- one device, `isolate=True` (the desktop app): one spawned child process, so an out-of-memory kill, a crash in
  a native library or a hung GPU call cannot take the caller down, and a stop can always be enforced;
- one device, `isolate=False` (the command line, tests): this process, in the thread that calls `run`.

Whatever the choice, the caller sees one object. `TrainingProcess.run(on_progress, cancel)` blocks (a GUI
calls it from a worker thread), passes rank 0's `Progress` objects to `on_progress` from that thread, and
returns the `RunResult` or raises. `stop()` may be called from any thread: it asks politely first (the run
stops at the next micro-batch with a checkpoint), then sends SIGTERM, then SIGKILL, each after a grace.

How a run ends, the same in every mode:
- done: `run` returns the `RunResult`; status.json says `done`;
- cancelled (`cancel` set, or `stop()`): `run` raises `progress.OperationCancelled` with `.run_dir` (None when
  the run was stopped before its folder held anything), status.json says `cancelled`;
- the child died (killed, out of memory, a native crash) or a rank failed: `run` raises
  `TrainingProcessError` saying what happened in words and whether the run can be resumed; status.json says
  `failed` with that sentence, never "running";
- a `BitStudioError` raised in the child (bad data, missing weights, no GPU) is re-raised as it was.

Spawn rather than fork: CUDA cannot be used in a forked child, and forking a threaded GUI process is unsafe.
Spawn rather than torchrun: the caller needs the processes as objects (progress over a queue, cancel as an
event, a dead child seen at once in its exit code), and a frozen app has no `torchrun` or `python -m`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue as queue_module
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from bit_engine.config import TrainConfig
from bit_engine.devices import parse_devices
from bit_engine.distributed import DEFAULT_TIMEOUT_S, DistributedError, TrainJob, ensure_weights, run_rank
from bit_engine.errors import BitStudioError
from bit_engine.machine import fork_worker_processes, lead_process_group, stop_with_workers
from bit_engine.progress import CancelFlag, OperationCancelled, Progress, ProgressCallback
from bit_engine.runs import RunDir, RunError
from bit_engine.train import DistContext, RunResult, TrainingError, new_run_dir

__all__ = [
    "CANCEL_GRACE_S",
    "STOP_GRACE_S",
    "TrainJob",
    "TrainingProcess",
    "TrainingProcessError",
    "launch",
    "launch_resume",
    "start_training",
]

#: After a polite stop, how long the run gets to reach the end of its micro-batch and write its checkpoint
#: before SIGTERM. A micro-batch of a large model on a CPU takes seconds; a checkpoint write, a few more.
CANCEL_GRACE_S = 60.0

#: After SIGTERM, how long a process gets before SIGKILL.
STOP_GRACE_S = 5.0

#: After the first failure, how long to wait for the other ranks' reports before choosing what to say.
FAILURE_GRACE_S = 2.0


class TrainingProcessError(DistributedError):
    """A training process died or failed; the others (if any) were stopped.

    Attributes:
        rank: the process that failed first.
        details: its traceback, when it had one (for a log, not for the user).
        run_dir: the run folder (None when none was made).
        resumable: whether `resume` can continue the run (its folder holds a run).
    """

    def __init__(
        self,
        message: str,
        rank: int | None = None,
        details: str = "",
        run_dir: str | Path | None = None,
        resumable: bool = False,
    ):
        super().__init__(message, rank, details)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resumable = resumable
        if resumable:
            self.remedy = "resume"

    def __reduce__(self):
        return (type(self), (str(self), self.rank, self.details, self.run_dir, self.resumable))


# --------------------------------------------------------------------------------------------------------------
# Inside a child process


class _CancelOrOrphaned:
    """The child's cancel flag: set by the parent's cancel event, or when the parent process is gone.

    A child whose parent died (the GUI crashed) then stops at the next step with a checkpoint, instead of
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


def _child_process(rank, devices, port, job, events, cancel_event, setup, timeout_s) -> None:
    """Body of one spawned training process: this process's run, its progress and its end, over `events`."""
    # Ctrl-C in a terminal reaches every process of the group; the parent turns it into a polite stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lead_process_group()  # a forced stop reaches this process's data workers too
    fork_worker_processes()
    world = len(devices)
    cancel = _CancelOrOrphaned(cancel_event)
    if world > 1:  # the environment torchrun would set, before `setup`, which may read it
        os.environ.update(
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    try:
        if setup is not None:
            setup()
        relay = (lambda p: events.put(("progress", rank, p))) if rank == 0 else None
        device = torch.device(devices[rank])
        if world == 1:
            result = job.run(relay, cancel, DistContext(device=device))
        else:
            result = run_rank(job, device, relay, cancel, timeout_s=timeout_s)
        events.put(("result", rank, result))
    except OperationCancelled as exc:
        events.put(("cancelled", rank, _picklable(exc) or OperationCancelled(str(exc))))
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


class _EitherFlag:
    """Set when either flag is."""

    def __init__(self, a: CancelFlag, b: CancelFlag | None):
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or (self.b is not None and self.b.is_set())


# --------------------------------------------------------------------------------------------------------------
# The owner


class TrainingProcess:
    """One training run on one or several devices, in this process or in spawned children (see the module).

    Made by `start_training`; call `run` once.

    Attributes:
        job: what runs (its `folder` is the run folder).
        devices: one per process.
        isolate: whether training runs in child processes (always, with several devices).
        processes: the children, once started (empty in this process's mode).
    """

    def __init__(
        self,
        job: TrainJob,
        devices: Sequence[torch.device | str],
        *,
        isolate: bool = True,
        setup: Callable[[], None] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        made_folder: bool = False,
    ):
        self.job = job
        self.devices = [str(torch.device(d)) for d in devices]
        if not self.devices:
            raise TrainingError("No device to train on.")
        self.isolate = isolate or len(self.devices) > 1
        self.setup = setup
        self.timeout_s = timeout_s
        self._made_folder = made_folder
        self._ctx = multiprocessing.get_context("spawn")
        self._events = self._ctx.Queue() if self.isolate else None
        self._cancel = self._ctx.Event() if self.isolate else threading.Event()
        self._stop_requested = threading.Event()
        self._escalation: threading.Timer | None = None
        self._stop_deadline = float("inf")
        self._lock = threading.Lock()
        self._running_here = False
        self.processes: list = []

    # What a caller may ask at any time ------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return len(self.devices)

    @property
    def run_dir(self) -> Path | None:
        """The run folder: known before `run` for every new run made by `start_training`."""
        folder = self.job.folder
        return Path(folder) if folder else None

    @property
    def pids(self) -> list[int]:
        """The training processes' ids (this process's own while it trains here)."""
        if not self.isolate:
            return [os.getpid()] if self._running_here else []
        return [p.pid for p in self.processes if p.pid is not None]

    def is_alive(self) -> bool:
        """Whether training is going on (a child alive, or `run` training in this process)."""
        if not self.isolate:
            return self._running_here
        return any(p.exitcode is None for p in self.processes)

    # Running --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the child processes (`run` does it when needed; nothing to start in this process's mode)."""
        if not self.isolate or self.processes:
            return
        port = _free_port() if self.world_size > 1 else 0
        for rank in range(self.world_size):
            process = self._ctx.Process(
                target=_child_process,
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
                name=f"bit-studio-train-{rank}",
                daemon=False,  # children start DataLoader workers of their own, which daemons may not
            )
            process.start()
            self.processes.append(process)

    def run(self, on_progress: ProgressCallback | None = None, cancel: CancelFlag | None = None) -> RunResult:
        """Train until the run ends; progress goes to `on_progress` from this thread.

        Args:
            on_progress: receives rank 0's `Progress` objects.
            cancel: a polite stop, as `stop()` (checked here; the children get it at once).

        Returns:
            The finished run.

        Raises:
            OperationCancelled: cancelled (see the module for `.run_dir`).
            TrainingProcessError: a training process died or failed; the run's status.json says `failed`.
            BitStudioError: what the training raised for the user (bad data, no weights, ...), as raised.
        """
        try:
            if not self.isolate:
                return self._run_here(on_progress, cancel)
            if self.world_size > 1 and not self.processes:
                # One download for all ranks, before any collective: a download can outlast a collective's wait.
                ensure_weights(self.job.load_config(), on_progress, _EitherFlag(self._stop_requested, cancel))
            if not self.processes:
                if on_progress is not None:
                    n = self.world_size
                    on_progress(Progress("starting", 0, n, message=f"{n} process{'es' if n > 1 else ''}"))
                self.start()
            return self._watch(on_progress, cancel)
        except BaseException:
            self._remove_unused_folder()
            raise
        finally:
            if self._escalation is not None:
                self._escalation.cancel()
            self._terminate()

    def stop(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Stop the run from any thread, without waiting: politely, then by force after `grace_s`.

        The run stops at the next micro-batch and keeps a checkpoint; `run` then raises `OperationCancelled`.
        A child that has not stopped after `grace_s` gets SIGTERM, and SIGKILL `STOP_GRACE_S` later (its
        run stays resumable from its last checkpoint).
        """
        with self._lock:
            deadline = time.monotonic() + grace_s
            if self._stop_requested.is_set():
                # A second, more urgent stop (a window closing after its Cancel) brings the forced stop forward.
                if self._escalation is None or deadline >= self._stop_deadline:
                    return
                self._escalation.cancel()
            self._stop_requested.set()
            self._cancel.set()
            if self.isolate:
                self._stop_deadline = deadline
                self._escalation = threading.Timer(grace_s, self._terminate)
                self._escalation.daemon = True
                self._escalation.start()

    def _run_here(self, on_progress, cancel) -> RunResult:
        self._running_here = True
        try:
            return self.job.run(
                on_progress,
                _EitherFlag(self._cancel, cancel),
                DistContext(device=torch.device(self.devices[0])),
            )
        finally:
            self._running_here = False

    def _terminate(self) -> None:
        """SIGTERM every child still alive, SIGKILL after `STOP_GRACE_S`; wait for them all."""
        alive = [p for p in self.processes if p.exitcode is None]
        for p in alive:
            with contextlib.suppress(OSError):
                stop_with_workers(p.pid)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in alive:
            if p.exitcode is None:
                with contextlib.suppress(OSError):
                    stop_with_workers(p.pid, force=True)
                p.join()

    def _watch(self, on_progress, cancel) -> RunResult:
        results: dict[int, RunResult] = {}
        cancelled: dict[int, OperationCancelled] = {}
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
            elif kind == "cancelled":
                cancelled[rank] = payload
            elif kind == "error":
                errors[rank] = payload
                first_failure = first_failure or time.monotonic()
            if cancel is not None and cancel.is_set():
                self.stop()
            codes = [p.exitcode for p in self.processes]
            if any(c not in (None, 0) for c in codes):
                first_failure = first_failure or time.monotonic()
            if first_failure is not None:
                # Wait a moment for the others: a rank killed by a signal says nothing, while the survivors
                # report secondary errors (a closed connection) that must not hide it.
                if all(c is not None for c in codes) or time.monotonic() - first_failure > FAILURE_GRACE_S:
                    self._drain(errors, results, cancelled)
                    raise self._failure(errors, codes)
            elif all(c == 0 for c in codes):
                self._drain(errors, results, cancelled)
                if 0 in results:
                    return results[0]
                if cancelled:
                    raise cancelled.get(0) or next(iter(cancelled.values()))
                raise self._failure({}, [1, *codes[1:]], what="ended without a result")

    def _drain(self, errors: dict, results: dict, cancelled: dict) -> None:
        while True:
            try:
                kind, rank, payload = self._events.get(timeout=0.05)
            except queue_module.Empty:
                return
            if kind == "error":
                errors[rank] = payload
            elif kind == "result":
                results[rank] = payload
            elif kind == "cancelled":
                cancelled[rank] = payload

    def _failure(self, errors: dict, codes: list[int | None], what: str = "") -> BaseException:
        dead = {r: c for r, c in enumerate(codes) if c not in (None, 0) and r not in errors}
        self._terminate()
        if self._stop_requested.is_set() and not errors:
            return self._forced_stop()
        if dead or what:
            rank = min(dead) if dead else 0
            what = what or _describe_exit(dead[rank])
            return self._fail(rank, what)
        # A user-facing error first (bad data, missing weights): it is the cause, the others' are echoes.
        ranked = sorted(errors, key=lambda r: (not isinstance(errors[r][0], BitStudioError), r))
        rank = ranked[0]
        exc, summary, details = errors[rank]
        if isinstance(exc, BitStudioError):
            return exc  # the child recorded it in status.json already, where the run folder held a run
        what = f"failed: {summary}"
        if "timed out" in summary.lower() or "timeout" in summary.lower():
            what += f" (another process did not answer within {self.timeout_s:.0f} s)"
        return self._fail(rank, what, details)

    def _process_name(self, rank: int) -> str:
        if self.world_size == 1:
            return f"The training process ({self.devices[0]})"
        return f"Training process {rank} of {self.world_size} ({self.devices[rank]})"

    def _fail(self, rank: int, what: str, details: str = "") -> TrainingProcessError:
        """The error for a dead or failed process; status.json says `failed` with the same words."""
        text = f"{self._process_name(rank)} {what}."
        if self.world_size > 1:
            text += " The other processes were stopped."
        run = RunDir(self.run_dir) if self.run_dir is not None else None
        resumable = run is not None and run.exists("config.json")
        if resumable:
            step = self._checkpoint_step(run)
            text += (
                f" The run can be resumed from its last checkpoint (step {step})."
                if step
                else " The run can be resumed; it starts again from its first step."
            )
            with contextlib.suppress(OSError, BitStudioError):
                total = self._recorded(run).get("total_steps", 0)
                run.set_status("failed", step, total, text, error=text)
        return TrainingProcessError(text, rank, details, run_dir=self.run_dir, resumable=resumable)

    def _forced_stop(self) -> OperationCancelled:
        """A stop that needed SIGTERM or SIGKILL: the run is as resumable as its last checkpoint."""
        run = RunDir(self.run_dir) if self.run_dir is not None else None
        if run is None or not run.exists("config.json"):
            return OperationCancelled("Cancelled before training began.")
        step = self._checkpoint_step(run)
        total = self._recorded(run).get("total_steps", 0)
        message = f"Stopped by force; the run is saved at step {step} of {total} and can be resumed."
        with contextlib.suppress(OSError, BitStudioError):
            run.set_status("cancelled", step, total, message)
        return OperationCancelled(message, run.path, step, total)

    @staticmethod
    def _recorded(run: RunDir) -> dict:
        try:
            return run.read_json("status.json")
        except RunError:
            return {}

    @staticmethod
    def _checkpoint_step(run: RunDir) -> int:
        # status.json's step is written with every checkpoint (and at the end): the step a resume starts at.
        if not run.exists("checkpoint.pt"):
            return 0
        return int(TrainingProcess._recorded(run).get("step", 0))

    def _remove_unused_folder(self) -> None:
        # The folder `start_training` made for a run that ended before writing anything: leave nothing behind.
        if not self._made_folder or self.run_dir is None:
            return
        with contextlib.suppress(OSError):
            if self.run_dir.is_dir() and not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()


# --------------------------------------------------------------------------------------------------------------
# The entry


def start_training(
    job: TrainJob,
    devices: str | Sequence[torch.device | str] | None = None,
    *,
    isolate: bool = True,
    setup: Callable[[], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> TrainingProcess:
    """Prepare `job` on `devices`: the run folder exists when this returns; `run()` then trains.

    Args:
        job: a new run (`TrainJob(config=..., out=...)`, out None: a new folder under the user's runs) or a
            resume (`TrainJob(run_dir=...)`).
        devices: None (the config's device, else a GPU when usable, else the CPU), `cpu`, `cuda`, `cuda:N`,
            `all`, GPU numbers `0,1,3`, `cpu:N`, or a list of devices. Several devices train data-parallel,
            one process each; the head strategy uses the first only (it has nothing worth sharing out).
        isolate: with one device, train in a child process (True) or in the thread that calls `run`.
        setup: a picklable callable run first in every child process (e.g. registering a model).
        timeout_s: how long a collective may wait for the slowest rank.

    Raises:
        DeviceError: the devices cannot be used.
        TrainingError: `out` already holds a run or cannot be made; `run_dir` is not a run folder.
    """
    if job.run_dir is not None:
        run = RunDir(job.run_dir)
        if not run.exists("config.json"):
            raise TrainingError(f"{run.path} is not a run folder (it has no config.json).")
    config = job.load_config()
    if devices is None:
        devices = config.device
    chosen = parse_devices(devices) if devices is None or isinstance(devices, str) else list(devices)
    chosen = [torch.device(d) for d in chosen]
    if config.strategy == "head":
        chosen = chosen[:1]
    made = False
    if job.run_dir is None:
        existed = job.out is not None and Path(job.out).exists()
        run = new_run_dir(config, job.out)
        made = not existed
        device = chosen[0].type if len(chosen) > 1 else str(chosen[0])
        job = TrainJob(config=config.replace(device=device), out=str(run.path), prepared=job.prepared)
    return TrainingProcess(job, chosen, isolate=isolate, setup=setup, timeout_s=timeout_s, made_folder=made)


def launch(
    config: TrainConfig,
    devices: str | Sequence[torch.device | str],
    on_progress: ProgressCallback | None = None,
    cancel: CancelFlag | None = None,
    *,
    out: str | Path | None = None,
    setup: Callable[[], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RunResult:
    """`train.fit` on `devices` (one in this process, several data-parallel): `start_training(...).run(...)`."""
    job = TrainJob(config=config, out=str(out) if out is not None else None)
    process = start_training(job, devices, isolate=False, setup=setup, timeout_s=timeout_s)
    return process.run(on_progress, cancel)


def launch_resume(
    run_dir: str | Path,
    devices: str | Sequence[torch.device | str],
    on_progress: ProgressCallback | None = None,
    cancel: CancelFlag | None = None,
    *,
    setup: Callable[[], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RunResult:
    """`train.resume` on `devices`: any number of them, whatever the run started on."""
    process = start_training(
        TrainJob(run_dir=str(run_dir)), devices, isolate=False, setup=setup, timeout_s=timeout_s
    )
    return process.run(on_progress, cancel)
