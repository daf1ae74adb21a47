"""A trained run for the GUI tests of the Evaluate and Predict steps: seconds, offline, deterministic."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: The model of the run folders `make_run` writes unless a test names another.
RUN_MODEL = "BiT-M-R50x1"


def train_colour_run(root: Path) -> Path:
    """Train EfficientNet-Lite0's head (its weights ship offline) on a generated colour folder; the run folder.

    Ten images per class at 32 px, 30 steps: the model separates the colours, and the validation split has
    two images per class.
    """
    from conftest import make_color_folder

    from bit_engine.config import TrainConfig
    from bit_engine.train import fit

    folder = make_color_folder(root / "colours", per_class=10)
    config = TrainConfig(
        data_dir=str(folder),
        model="EfficientNet-Lite0",
        strategy="head",
        steps=30,
        batch=16,
        resolution=32,
        device="cpu",
        workers=0,
        evaluations=1,
    )
    return Path(fit(config, out=root / "run").run_dir)


def make_confusing_folder(root: Path) -> Path:
    """A labelled test folder whose "red" class holds green photos: every one of them is a sure mistake."""
    from conftest import make_color_folder

    make_color_folder(root, classes=("green", "blue"), per_class=4, seed=7)
    make_color_folder(root / "tmp", classes=("green",), per_class=3, seed=8)
    (root / "red").mkdir()
    for i, photo in enumerate(sorted((root / "tmp" / "green").iterdir())):
        photo.rename(root / "red" / f"mislabelled_{i}.png")
    (root / "tmp" / "green").rmdir()
    (root / "tmp").rmdir()
    return root


_SHARED: dict[str, tuple[Path, Path]] = {}


def shared_exported_run(tmp_path_factory) -> tuple[Path, Path]:
    """One trained and exported run for the whole session: (run folder, its model.onnx).

    Trained once even when several test modules ask (a module-level cache rather than a session fixture in
    conftest, so the GUI tests keep their helpers to themselves). Tests must not change it.
    """
    if "run" not in _SHARED:
        from bit_engine.run_export import export_run

        run = train_colour_run(tmp_path_factory.mktemp("gui_run"))
        _SHARED["run"] = (run, Path(export_run(run).export.path))
    return _SHARED["run"]


def drop(widget, paths) -> bool:
    """Drag `paths` onto `widget` and drop them there (synthesised events: tests cannot start a real drag)."""
    from app.self_test import file_mime, send_drop

    _, event = send_drop(widget, file_mime(paths))
    return event is not None and event.isAccepted()


def cli_rows(onnx_model, paths, out: Path) -> list[dict]:
    import csv

    from bit_engine.cli import main

    assert main(["predict", str(onnx_model), *map(str, paths), "--csv", str(out)]) in (0, 2)
    with open(out, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def make_run(
    name: str,
    data_dir: Path,
    state: str,
    step: int,
    total: int = 20,
    accuracy: float | None = None,
    age_s: float = 0.0,
    *,
    model: str = RUN_MODEL,
    strategy: str = "full",
    batch: int | None = None,
    resolution: int | None = None,
    top1: Callable[[int], float] | None = None,
    every: int = 5,
    seconds_per_step: float = 0.1,
    val_images: int = 0,
    settings: dict | None = None,
) -> Path:
    """A run folder under the user's runs folder, as training leaves it in `state` at `step`, written with the
    engine's own writers (no training).

    Args:
        state: done, cancelled, failed, running or interrupted (a "running" status signed by a dead process).
        accuracy: the finished run's validation accuracy (report.json; a model.pt stands beside it).
        age_s: how long ago the run started (its config.json's time).
        top1: validation accuracy after `step` (default: step / total); evaluated every `every` steps.
        val_images: when not 0, report.json is complete (with this many validation images).
        settings: more `TrainConfig` fields (device, workers, seed...).
    """
    from bit_engine import locations
    from bit_engine.config import TrainConfig
    from bit_engine.models import get_spec
    from bit_engine.runs import RunDir
    from bit_engine.train import make_plan
    from bit_engine.transforms import Preprocessing

    run = RunDir(locations.runs_dir() / name)
    run.path.mkdir(parents=True)
    config = TrainConfig(
        data_dir=str(data_dir),
        model=model,
        strategy=strategy,
        steps=total,
        batch=batch,
        resolution=resolution,
        **(settings or {}),
    )
    plan = make_plan(config, 24, (40, 30))
    pre = Preprocessing.from_plan(plan, get_spec(model).normalization)
    run.write_json("config.json", config.to_dict())
    run.write_json(
        "plan.json", {**plan.to_dict(), "preprocessing": pre.to_dict(), "classes": ["a", "b", "c"]}
    )
    top1 = top1 or (lambda s: min(1.0, s / total))
    for s in range(1, step + 1):
        record = {
            "step": s,
            "epoch": s / 3,
            "train_loss": 2.0 / s,
            "lr": 0.003,
            "elapsed": s * seconds_per_step,
        }
        if s % every == 0 or s == total:
            record.update(val_loss=1.0 / s, val_top1=top1(s))
        run.append_metric(record)
    if state == "interrupted":  # what a killed process leaves: "running", signed by a process that is gone
        status = {"state": "running", "step": step, "total_steps": total, "message": "", "error": ""}
        status.update(pid=_dead_pid(), host=socket.gethostname(), heartbeat=time.time())
        run.write_json("status.json", status)
    else:
        run.set_status(state, step, total, f"{state} at step {step}")
    if accuracy is not None:
        report = {"accuracy": accuracy}
        if val_images:
            report.update(
                loss=0.5,
                num_images=val_images,
                classes=["a", "b", "c"],
                per_class={},
                confusion=[],
                misclassified=[],
            )
        run.write_json("report.json", report)
        run.file("model.pt").write_bytes(b"weights")
    when = time.time() - age_s
    os.utime(run.file("config.json"), (when, when))
    return run.path
