"""The run folder: everything one training run writes, in one place, each file written atomically.

config.json    the TrainConfig (what the user asked for)
plan.json      the HyperRule plan with its reasons, the pre-processing and the class names
dataset.json   the dataset report (counts, skipped files, warnings)
split.json     the train/validation split, so a resume and an evaluation use the same one
corrections.json  the label corrections the run trained with, and those it could not apply (only when the
               config named corrections; see corrections.py)
status.json    running / cancelled / failed / done, with the step, a message, and who writes it (pid, host,
               heartbeat): a "running" run whose process is gone reads as `interrupted`
metrics.jsonl  one JSON line per log and per evaluation
checkpoint.pt  model, optimizer and step: what `resume` continues from (all randomness derives
               from the seed and the step, so no RNG state is kept)
model.pt       the final weights with what is needed to use them (model name, classes, pre-processing)
report.json    accuracy, per-class precision/recall/F1, confusion matrix, every misclassified file

A window lists and reopens runs through the typed readers here (`list_runs`, `read_status`, `read_config`,
`read_plan`, `read_metrics`, `read_report`), never by parsing these files itself. This module imports torch only to read
or write checkpoints and models, so listing runs stays fast.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bit_engine import locations
from bit_engine.config import ConfigError, TrainConfig
from bit_engine.errors import BitStudioError
from bit_engine.fileio import (
    UnsafeFileError,
    append_text,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    load_torch_weights,
)
from bit_engine.report import EvaluationReport

RunState = Literal["running", "cancelled", "failed", "done", "interrupted"]

#: How often a training process refreshes the heartbeat in status.json while it runs.
HEARTBEAT_S = 30.0

#: A "running" status whose heartbeat is older than this reads as interrupted (the process cannot be
#: asked directly when it ran on another machine, e.g. under torchrun with a shared run folder).
HEARTBEAT_STALE_S = 10 * HEARTBEAT_S

# status.json is written by the training loop and by its heartbeat thread: one writer at a time, so the
# heartbeat never puts back a "running" that the loop has just replaced.
_status_lock = threading.Lock()


class RunError(BitStudioError):
    """A run folder that is missing, incomplete or damaged.

    Attributes:
        run_dir: the folder concerned.
    """

    def __init__(self, message: str, run_dir: str | Path | None = None):
        super().__init__(message)
        self.run_dir = Path(run_dir) if run_dir is not None else None

    def __reduce__(self):
        return (type(self), (str(self), self.run_dir))


class RunNotFinishedError(RunError):
    """The run has no trained model yet: finish or resume it first (a front end offers "Resume")."""

    remedy = "resume"


def _slug(text: str) -> str:
    # Folder names from user data become part of a path: keep them to a safe alphabet.
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return slug[:40] or "data"


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    if sys.platform == "win32":
        # os.kill(pid, 0) would terminate the process on Windows: ask for a handle instead.
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ok = ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    except OSError:
        return False
    return True


class RunDir:
    """Paths and atomic readers/writers for one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def create(cls, data_dir: str | Path, model: str, base: str | Path | None = None) -> RunDir:
        """A new, uniquely named run folder under `base` (default: the user's runs folder)."""
        base = Path(base) if base is not None else locations.runs_dir()
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{_slug(Path(data_dir).name)}-{_slug(model)}"
        for i in range(1000):
            path = base / (name if i == 0 else f"{name}-{i}")
            try:
                path.mkdir(parents=True, exist_ok=False)
                return cls(path)
            except FileExistsError:
                continue
        raise RunError(f"Could not create a new run folder under {base}.", base)

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    # JSON ------------------------------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.file(name), obj)

    def read_json(self, name: str) -> Any:
        path = self.file(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise RunError(
                f"{self.path} is not a complete run folder: {name} is missing.", self.path
            ) from exc
        except (OSError, ValueError) as exc:
            raise RunError(f"{path} is damaged ({exc}).", self.path) from exc

    def exists(self, name: str) -> bool:
        return self.file(name).exists()

    def set_status(self, state: str, step: int, total: int, message: str = "", error: str = "") -> None:
        """Write status.json, signed by this process (pid, host, heartbeat) so a reader can tell a dead run.

        Args:
            state: running, cancelled, failed or done.
            error: for `failed`, what went wrong in words (also shown as the message when that is empty).
        """
        now = time.time()
        with _status_lock:
            self.write_json(
                "status.json",
                {
                    "state": state,
                    "step": step,
                    "total_steps": total,
                    "message": message or error,
                    "error": error,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "heartbeat": now,
                    "updated": now,
                },
            )

    def beat(self) -> None:
        """Refresh the heartbeat of a running status written by this process (nothing else changes)."""
        with _status_lock:
            try:
                status = json.loads(self.file("status.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return
            if status.get("state") != "running" or status.get("pid") != os.getpid():
                return
            status["heartbeat"] = time.time()
            self.write_json("status.json", status)

    # Metrics ---------------------------------------------------------------------------------------------
    def append_metric(self, record: dict) -> None:
        # Appending one line is all-or-nothing for a crash in practice; `truncate_metrics` tidies up on resume.
        append_text(self.file("metrics.jsonl"), json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        path = self.file("metrics.jsonl")
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash
        return records

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines past `step` (written after the checkpoint a resume continues from)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.file("metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in kept))

    # Checkpoints and final weights -----------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        atomic_torch_save(self.file("checkpoint.pt"), state)

    def load_checkpoint(self, map_location="cpu") -> dict:
        path = self.file("checkpoint.pt")
        if not path.exists():
            raise RunError(f"{self.path} has no checkpoint to resume from.", self.path)
        try:
            return load_torch_weights(path, map_location)
        except UnsafeFileError:
            raise
        except Exception as exc:
            raise RunError(f"The checkpoint {path} is damaged ({exc}).", self.path) from exc

    def save_model(self, model, meta: dict) -> None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_torch_save(self.file("model.pt"), {"model": state, "meta": meta})

    def load_model(self, map_location="cpu"):
        """The trained model (eval mode) and its meta: model name, classes, preprocessing, run id.

        Raises:
            RunNotFinishedError: the run has no model.pt yet (finish or resume it first).
            RunError: not a run folder, or a damaged model file.
        """
        from bit_engine.models import create_model

        path = self.file("model.pt")
        if not self.exists("config.json") and not path.exists():
            raise RunError(f"{self.path} is not a run folder (it has no config.json or model.pt).", self.path)
        if not path.exists():
            raise RunNotFinishedError(
                f"{self.path} has no trained model yet (model.pt). Finish or resume the run first.", self.path
            )
        try:
            payload = load_torch_weights(path, map_location)
            meta = payload["meta"]
            model = create_model(meta["model"], num_classes=len(meta["classes"]))
            model.load_state_dict(payload["model"])
        except (RunError, UnsafeFileError):
            raise
        except Exception as exc:
            raise RunError(f"The model file {path} is damaged ({exc}).", self.path) from exc
        return model.eval(), meta

    def preprocessing(self):
        """The run's `transforms.Preprocessing` (from plan.json)."""
        from bit_engine.transforms import Preprocessing

        return Preprocessing.from_dict(self.read_json("plan.json")["preprocessing"])


# --------------------------------------------------------------------------------------------------------------
# Typed readers, for a window that lists and reopens runs


@dataclass(frozen=True)
class RunStatus:
    """How a run stands.

    Attributes:
        state: running, cancelled, failed, done, or interrupted (status.json says running but the process
            that wrote it is gone, or has not refreshed its heartbeat for `HEARTBEAT_STALE_S`).
        step: the last step recorded (a checkpoint, or the end).
        total_steps: the run's length.
        message: a sentence for the user.
        error: what went wrong, for `failed`.
        pid: the training process that wrote it (0: unknown).
        host: the machine it ran on.
        heartbeat: when that process last said it was alive (seconds since the epoch; 0: unknown).
    """

    state: RunState
    step: int = 0
    total_steps: int = 0
    message: str = ""
    error: str = ""
    pid: int = 0
    host: str = ""
    heartbeat: float = 0.0

    @property
    def resumable(self) -> bool:
        return self.state in ("cancelled", "failed", "interrupted")


def read_status(run_dir: str | Path, *, now: float | None = None) -> RunStatus:
    """The run's status, with a dead "running" run recognised as `interrupted`.

    Raises:
        RunError: no status.json (not a run folder, or a run that never started), or a damaged one.
    """
    raw = RunDir(run_dir).read_json("status.json")
    status = RunStatus(
        state=raw.get("state", "failed"),
        step=int(raw.get("step", 0)),
        total_steps=int(raw.get("total_steps", 0)),
        message=raw.get("message", ""),
        error=raw.get("error", ""),
        pid=int(raw.get("pid", 0) or 0),
        host=raw.get("host", ""),
        heartbeat=float(raw.get("heartbeat", 0.0) or 0.0),
    )
    if status.state != "running":
        return status
    now = time.time() if now is None else now
    here = status.host == socket.gethostname()
    gone = here and status.pid > 0 and not _pid_alive(status.pid)
    stale = status.heartbeat > 0 and now - status.heartbeat > HEARTBEAT_STALE_S
    unsigned = status.pid == 0 and status.heartbeat == 0  # written by an older version: nobody to ask
    if gone or stale or unsigned:
        return RunStatus(
            "interrupted",
            status.step,
            status.total_steps,
            f"Interrupted at step {status.step} of {status.total_steps}: the training process ended without "
            "saying why. The run can be resumed from its last checkpoint.",
            status.error,
            status.pid,
            status.host,
            status.heartbeat,
        )
    return status


def read_config(run_dir: str | Path) -> TrainConfig:
    """The run's settings (config.json), as the `TrainConfig` it was started with.

    Raises:
        RunError: missing or damaged (including settings out of range).
    """
    raw = RunDir(run_dir).read_json("config.json")
    try:
        return TrainConfig.from_dict(raw)
    except (ConfigError, TypeError) as exc:
        raise RunError(f"{Path(run_dir) / 'config.json'} is damaged ({exc}).", run_dir) from exc


@dataclass(frozen=True)
class RunPlan:
    """What plan.json holds: the HyperRule's choices with their reasons, the pre-processing, the classes."""

    model: str
    num_images: int
    median_size: tuple[int, int]
    resize: int
    crop: int
    warmup_steps: int
    lr_boundaries: tuple[int, ...]
    total_steps: int
    base_lr: float
    batch: int
    mixup_alpha: float
    flip: bool
    random_crop: bool
    momentum: float
    reasons: dict[str, str]
    overrides: tuple[dict, ...]
    classes: tuple[str, ...]
    preprocessing: dict = field(repr=False)
    # Label corrections the run trained with: applied, relabelled, left_out, not_applied ({} without).
    corrections: dict = field(default_factory=dict)


def read_plan(run_dir: str | Path) -> RunPlan:
    """The run's plan (plan.json), typed.

    Raises:
        RunError: missing or damaged.
    """
    raw = RunDir(run_dir).read_json("plan.json")
    try:
        return RunPlan(
            model=raw["model"],
            num_images=int(raw["num_images"]),
            median_size=tuple(raw["median_size"]),
            resize=int(raw["resize"]),
            crop=int(raw["crop"]),
            warmup_steps=int(raw["warmup_steps"]),
            lr_boundaries=tuple(raw["lr_boundaries"]),
            total_steps=int(raw["total_steps"]),
            base_lr=float(raw["base_lr"]),
            batch=int(raw["batch"]),
            mixup_alpha=float(raw["mixup_alpha"]),
            flip=bool(raw["flip"]),
            random_crop=bool(raw["random_crop"]),
            momentum=float(raw["momentum"]),
            reasons=dict(raw.get("reasons", {})),
            overrides=tuple(raw.get("overrides", ())),
            classes=tuple(raw["classes"]),
            preprocessing=dict(raw["preprocessing"]),
            corrections={k: int(v) for k, v in dict(raw.get("corrections") or {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{Path(run_dir) / 'plan.json'} is damaged ({exc!r}).", run_dir) from exc


@dataclass(frozen=True)
class MetricRecord:
    """One line of metrics.jsonl: a training step, with the validation figures when it was evaluated."""

    step: int
    epoch: float
    train_loss: float
    lr: float
    elapsed: float = 0.0
    val_loss: float | None = None
    val_top1: float | None = None


def read_metrics(run_dir: str | Path) -> list[MetricRecord]:
    """The run's metrics history, in step order (empty before the first step)."""
    out = []
    for r in RunDir(run_dir).read_metrics():
        try:
            out.append(
                MetricRecord(
                    step=int(r["step"]),
                    epoch=float(r.get("epoch", 0.0)),
                    train_loss=float(r["train_loss"]),
                    lr=float(r["lr"]),
                    elapsed=float(r.get("elapsed", 0.0)),
                    val_loss=r.get("val_loss"),
                    val_top1=r.get("val_top1"),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # a damaged line: the rest of the history is still worth showing
    return out


def read_report(run_dir: str | Path) -> EvaluationReport:
    """The run's evaluation report (report.json), typed.

    Raises:
        RunError: no report yet (the run has not finished), or a damaged one.
    """
    raw = RunDir(run_dir).read_json("report.json")
    try:
        return EvaluationReport.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{Path(run_dir) / 'report.json'} is damaged ({exc!r}).", run_dir) from exc


@dataclass(frozen=True)
class RunSummary:
    """One line of a run list.

    Attributes:
        name: the folder's name (the run id).
        path: the run folder.
        data_dir: the labelled folder it trained on.
        model, strategy: from its config.
        status: see `RunStatus.state`; message: its sentence.
        step, total_steps: progress.
        accuracy: validation accuracy of the finished run (None before, or without validation images).
        created: when the run started.
    """

    name: str
    path: Path
    data_dir: str
    model: str
    strategy: str
    status: RunState
    step: int
    total_steps: int
    accuracy: float | None
    created: _dt.datetime
    message: str = ""


def summarize_run(run_dir: str | Path) -> RunSummary:
    """One run's `RunSummary`.

    Raises:
        RunError: not a run folder (no config.json) or a damaged one.
    """
    run = RunDir(run_dir)
    config = run.read_json("config.json")
    try:
        status = read_status(run.path)
    except RunError:
        # config.json is written before status.json: a process that died in between left a run that never
        # started training.
        status = RunStatus("interrupted", message="The run stopped before training began.")
    accuracy = None
    if status.state == "done" and run.exists("report.json"):
        try:
            accuracy = run.read_json("report.json").get("accuracy")
        except RunError:
            accuracy = None
    created = _dt.datetime.fromtimestamp(run.file("config.json").stat().st_mtime)
    return RunSummary(
        name=run.run_id,
        path=run.path,
        data_dir=str(config.get("data_dir", "")),
        model=str(config.get("model", "")),
        strategy=str(config.get("strategy", "")),
        status=status.state,
        step=status.step,
        total_steps=status.total_steps,
        accuracy=accuracy,
        created=created,
        message=status.message,
    )


def list_runs(base: str | Path | None = None) -> list[RunSummary]:
    """The runs under `base` (default: the user's runs folder), newest first.

    Folders that are not runs (no config.json) are left out, and so are damaged ones: one bad folder must
    not hide the others.
    """
    base = Path(base) if base is not None else locations.runs_dir()
    if not base.is_dir():
        return []
    runs = []
    for child in base.iterdir():
        if not (child / "config.json").is_file():
            continue
        try:
            runs.append(summarize_run(child))
        except (RunError, OSError):
            continue
    runs.sort(key=lambda r: (r.created, r.name), reverse=True)
    return runs
