"""The run folder: everything one training run writes, in one place, each file written atomically.

config.json    the TrainConfig (what the user asked for)
plan.json      the HyperRule plan with its reasons, the pre-processing and the class names
dataset.json   the dataset report (counts, skipped files, warnings)
split.json     the train/validation split, so a resume and an evaluation use the same one
status.json    running / cancelled / failed / done, with the step and a message
metrics.jsonl  one JSON line per log and per evaluation
checkpoint.pt  model, optimizer and step: what `resume` continues from (all randomness derives
               from the seed and the step, so no RNG state is kept)
model.pt       the final weights with what is needed to use them (model name, classes, pre-processing)
report.json    accuracy, per-class precision/recall/F1, confusion matrix, every misclassified file
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Any

import torch

from bit_engine import locations
from bit_engine.errors import BitStudioError
from bit_engine.fileio import (
    UnsafeFileError,
    append_text,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    load_torch_weights,
)
from bit_engine.transforms import Preprocessing


class RunError(BitStudioError):
    """A run folder that is missing, incomplete or damaged."""


def _slug(text: str) -> str:
    # Folder names from user data become part of a path: keep them to a safe alphabet.
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return slug[:40] or "data"


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
        raise RunError(f"Could not create a new run folder under {base}.")

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
            raise RunError(f"{self.path} is not a complete run folder: {name} is missing.") from exc
        except (OSError, ValueError) as exc:
            raise RunError(f"{path} is damaged ({exc}).") from exc

    def exists(self, name: str) -> bool:
        return self.file(name).exists()

    def set_status(self, state: str, step: int, total: int, message: str = "") -> None:
        self.write_json(
            "status.json", {"state": state, "step": step, "total_steps": total, "message": message}
        )

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
            raise RunError(f"{self.path} has no checkpoint to resume from.")
        try:
            return load_torch_weights(path, map_location)
        except UnsafeFileError:
            raise
        except Exception as exc:
            raise RunError(f"The checkpoint {path} is damaged ({exc}).") from exc

    def save_model(self, model: torch.nn.Module, meta: dict) -> None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_torch_save(self.file("model.pt"), {"model": state, "meta": meta})

    def load_model(self, map_location="cpu") -> tuple[torch.nn.Module, dict]:
        """The trained model (eval mode) and its meta: model name, classes, preprocessing, run id."""
        from bit_engine.models import create_model

        path = self.file("model.pt")
        if not self.exists("config.json") and not path.exists():
            raise RunError(f"{self.path} is not a run folder (it has no config.json or model.pt).")
        if not path.exists():
            raise RunError(
                f"{self.path} has no trained model yet (model.pt). Finish or resume the run first: "
                f"bit-studio resume {self.path}"
            )
        try:
            payload = load_torch_weights(path, map_location)
            meta = payload["meta"]
            model = create_model(meta["model"], num_classes=len(meta["classes"]))
            model.load_state_dict(payload["model"])
        except (RunError, UnsafeFileError):
            raise
        except Exception as exc:
            raise RunError(f"The model file {path} is damaged ({exc}).") from exc
        return model.eval(), meta

    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.read_json("plan.json")["preprocessing"])
