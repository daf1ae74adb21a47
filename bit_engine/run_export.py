"""Exporting a finished run: its model as a verified ONNX file, and on request an int8 copy, with the figures.

    export_run(run_dir, out_path=None, *, quantize=None, verify_limit=64, quantize_limit=256, force=False,
               on_progress=None, cancel=None) -> RunExport

The export is verified on the run's own validation photos (`export.export_onnx`), the int8 copy measured on
them and calibrated on training photos (`quantize.quantize_int8`), so its figures are not flattered. Both
files are refused inside the photo folder, and a file that is not a BiT Studio export is refused before
minutes of work rather than after. The figures are written to the run's ``export.json``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bit_engine.export import ExportResult, export_onnx
from bit_engine.onnx_format import ExportError, check_destination
from bit_engine.progress import CancelFlag, OperationCancelled, Progress, ProgressCallback
from bit_engine.quantize import QuantizeResult, quantize_int8


@dataclass(frozen=True)
class RunExport:
    """What `export_run` wrote: the verified model and, when asked for, its int8 copy with figures."""

    export: ExportResult
    quantized: QuantizeResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "export": self.export.to_dict(),
            "quantized": self.quantized.to_dict() if self.quantized is not None else None,
        }


def _run_images(paths: Sequence[str], size: int, limit: int) -> tuple[np.ndarray | None, list[int]]:
    """The eval-time uint8 NHWC input of up to `limit` images, and which of `paths` they are (files that no
    longer decode are passed over)."""
    from bit_engine.images import ImageError
    from bit_engine.transforms import decode_resized

    out, kept = [], []
    for i, path in enumerate(paths):
        if len(out) >= limit:
            break
        try:
            out.append(decode_resized(path, size).permute(1, 2, 0).numpy())
            kept.append(i)
        except ImageError:
            continue
    return (np.stack(out) if out else None), kept


def _checked_preprocessing(meta: Mapping, path: Path) -> dict[str, Any]:
    """The model file's pre-processing and class names, checked before they size arrays or become metadata.

    Raises:
        ExportError: a value of the wrong type or out of range (the file was edited or damaged).
    """
    from bit_engine.inference import MAX_INPUT_SIDE, MIN_INPUT_SIDE

    pre = meta.get("preprocessing") if isinstance(meta, Mapping) else None
    classes = meta.get("classes") if isinstance(meta, Mapping) else None

    def triple(value) -> bool:
        return (
            isinstance(value, list)
            and len(value) == 3
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
            )
        )

    crop = pre.get("crop") if isinstance(pre, Mapping) else None
    ok = (
        isinstance(crop, int)
        and not isinstance(crop, bool)
        and MIN_INPUT_SIDE <= crop <= MAX_INPUT_SIDE
        and triple(pre.get("mean"))
        and triple(pre.get("std"))
        and all(v > 0 for v in pre["std"])
        and isinstance(classes, list)
        and all(isinstance(c, str) for c in classes)
    )
    if not ok:
        raise ExportError(
            f"{path} is damaged: its input size, normalization or class names are missing or out of range. "
            "Train the run again, or export another one."
        )
    return {"crop": crop, "mean": list(pre["mean"]), "std": list(pre["std"])}


def export_run(
    run_dir: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    quantize: str | None = None,
    verify_limit: int = 64,
    quantize_limit: int = 256,
    force: bool = False,
    on_progress: ProgressCallback | None = None,
    cancel: CancelFlag | None = None,
) -> RunExport:
    """Export a finished run's model, verified on its own validation images, and record the figures.

    Args:
        run_dir: a run folder with a trained model (model.pt).
        out_path: the .onnx file; default ``<run_dir>/model.onnx``.
        quantize: "int8" to also write ``<name>.int8.onnx``, measured on the validation split (accuracy
            change, size, speed) with calibration on training images, so the figures are not flattered.
        verify_limit: validation images to compare onnxruntime with PyTorch on.
        quantize_limit: validation images to measure the int8 copy on.
        force: replace `out_path` (and the int8 copy) even when they are not BiT Studio exports.
        on_progress: receives `Progress` per stage: "exporting" (with its verification), then
            "quantizing" (with its measurement); `done`/`total` count the stages.
        cancel: checked between stages; a cancel raises `OperationCancelled` and writes no export.json
            (a finished .onnx stays: it is complete and verified).

    Returns:
        The `RunExport`; the same figures are written to ``<run_dir>/export.json``.

    Raises:
        ExportError: the destination is another program's file, or inside the run's photo folder.
        RunError: the run folder is incomplete or damaged.
    """
    stages = 2 if quantize == "int8" else 1

    def stage(phase: str, done: int, message: str = "") -> None:
        if cancel is not None and cancel.is_set():
            raise OperationCancelled("Export cancelled.")
        if on_progress is not None:
            on_progress(Progress(phase, done, stages, message=message))

    from bit_engine.fileio import refuse_inside_photos
    from bit_engine.holdout import Split
    from bit_engine.runs import RunDir

    if quantize not in (None, "int8"):
        raise ExportError(f"Unknown quantization {quantize!r}: the choice is int8.")
    run = RunDir(run_dir)
    model, meta = run.load_model()
    pre = _checked_preprocessing(meta, run.file("model.pt"))
    size = pre["crop"]
    split = Split.from_dict(run.read_json("split.json"))
    out_path = Path(out_path) if out_path is not None else run.file("model.onnx")
    int8_path = out_path.with_name(out_path.stem + ".int8.onnx")
    # Refused before minutes of exporting, not after.
    refuse_inside_photos(out_path, [split.root], "exported model")
    check_destination(out_path, force, external_data=False)
    if quantize == "int8":
        check_destination(int8_path, force, external_data=False)
    val_paths = [str(split.path_of(s)) for s in split.val]
    stage("exporting", 0, "writing and verifying the ONNX file")
    result = export_onnx(
        model,
        meta["classes"],
        size,
        {"mean": pre["mean"], "std": pre["std"]},
        out_path,
        verify_images=_run_images(val_paths, size, verify_limit)[0],
        backbone=meta["model"],
        run_id=meta.get("run_id", run.run_id),
        metadata={"bit_studio.strategy": meta.get("strategy", "")},
        force=force,
    )
    quantized = None
    if quantize == "int8":
        stage("quantizing", 1, "writing and measuring the int8 copy")
        images, kept = _run_images(val_paths, size, quantize_limit)
        if images is None:
            raise ExportError("This run has no validation images to measure an int8 copy on.")
        calibration, _ = _run_images([str(split.path_of(s)) for s in split.train], size, 64)
        quantized = quantize_int8(
            out_path,
            int8_path,
            images,
            labels_true=[split.val[i].label for i in kept],
            calibration_images=calibration,
            force=force,
        )
    record = RunExport(result, quantized)
    run.write_json("export.json", record.to_dict())
    if on_progress is not None:
        on_progress(Progress("done", stages, stages))
    return record
