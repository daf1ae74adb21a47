"""Exporting a trained model to ONNX, verified against PyTorch before it lands where it was asked.

    export_onnx(model, labels, input_size, normalization, out_path, *, ...) -> ExportResult

The file's layout (pre-processing inside the graph, outputs, metadata) and the rules for where it may be
written are `bit_engine.onnx_format`; the int8 copy is `bit_engine.quantize`; exporting a run folder is
`bit_engine.run_export`. What this module adds to the graph it exports:

* **Weight Standardization folded away.** Standardized weights are constants at inference, so every
  `StdConv2d` is replaced by a plain convolution holding ``standardized_weight()`` (on a copy: the caller's
  model is untouched). EfficientNet's BatchNorm (eval mode) is exported as is; onnxruntime fuses it into the
  convolutions when it loads the graph.

Every export is verified before it lands at ``out_path``: ``onnx.checker`` on the file, then onnxruntime
against PyTorch eager (the caller's model, weights standardized on every forward as in training) on the same
uint8 images: max |probability difference| <= 1e-4 and the same top-1 for every image. A failed check raises
`ExportVerificationError` and leaves ``out_path`` as it was: the file is written in a temporary folder next to
it and moved into place only after it passed.

Opset 17: every operator these graphs need exists there in its final form, and onnxruntime >= 1.13 as
well as current TensorRT and OpenVINO releases read it. Opset 18's GroupNormalization was specified with per-group
affine parameters and redefined in opset 21; the opset-17 decomposition (InstanceNormalization plus a
per-channel affine) avoids that ambiguity altogether.

The exporter is the TorchScript one (``torch.onnx.export(..., dynamo=False)``): for these conv nets it is the
most predictable (no network access, dynamic batch through ``dynamic_axes``). PyTorch deprecates it; if a
future release removes it, ``_torch_export`` is the one place to switch to ``dynamo=True``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bit_engine.frozen import _unwrap, cpu_float_copy, fold_weight_standardization
from bit_engine.models import DEPTHS, Normalization, ResNetV2
from bit_engine.onnx_format import (
    EXTERNAL_DATA_THRESHOLD,
    INPUT_NAME,
    LOGITS_NAME,
    PROBABILITIES_NAME,
    ExportError,
    as_uint8_nhwc,
    build_metadata,
    check_destination,
    chunks,
    publish,
    save_with_metadata,
)

DEFAULT_OPSET = 17

#: Verification tolerances: onnxruntime vs PyTorch eager.
PROB_TOLERANCE = 1e-4

#: Random images used for verification when the caller passes none (few: R152x4 at 480 px is slow on a CPU).
DEFAULT_VERIFY_IMAGES = 4


class ExportVerificationError(ExportError):
    """The exported file does not predict like the PyTorch model; nothing was written at the destination.

    Attributes:
        figures: the parity figures that failed (same keys as `ExportResult.to_dict`).
    """

    def __init__(self, message: str, figures: dict[str, Any]):
        super().__init__(message)
        self.figures = figures


@dataclass(frozen=True)
class ExportResult:
    """What was written and how well it matched PyTorch.

    Attributes:
        path: the .onnx file.
        data_path: the external weights file next to it, or None when the weights are inside the .onnx.
        file_bytes: size on disk, external data included.
        opset: ONNX opset of the graph.
        n_images: images compared between onnxruntime and PyTorch.
        max_abs_prob_diff: largest |probability difference| over all images and classes.
        max_abs_logit_diff: largest |logit difference|.
        top1_agree: images whose top-1 class is the same in both.
        prob_tolerance: the bound `max_abs_prob_diff` had to meet.
        verify_images_source: "caller" or "random" (deterministic noise when the caller passed none).
        seconds: wall time of export plus verification.
        metadata: the metadata_props written into the file.
    """

    path: str
    data_path: str | None
    file_bytes: int
    opset: int
    n_images: int
    max_abs_prob_diff: float
    max_abs_logit_diff: float
    top1_agree: int
    prob_tolerance: float
    verify_images_source: str
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def external_data(self) -> bool:
        return self.data_path is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for the run folder and the GUI)."""
        return {**asdict(self), "external_data": self.external_data}


# ------------------------------------------------------------------------------------------------------------
# The graph


def uint8_nhwc_to_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``N x H x W x 3`` -> normalized float ``N x 3 x H x W``, as the exported graph computes it.

    The operations are the ones evaluation uses (divide by 255, then ``(x - mean) / std``), in the same
    order, so the float inputs match to the last bit rather than to a rounding error.

    Args:
        images: uint8 tensor, channels last.
        mean: per-channel mean, shape (3,), on [0, 1] RGB.
        std: per-channel std, shape (3,).
    """
    x = images.to(torch.float32) / 255.0
    x = (x - mean) / std
    return x.permute(0, 3, 1, 2)


class ExportGraph(nn.Module):
    """The exported computation: uint8 NHWC images -> (logits, probabilities).

    Args:
        net: the classifier (float NCHW in, logits out).
        normalization: the mean/std the classifier was trained with.
    """

    def __init__(self, net: nn.Module, normalization: Normalization):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(normalization.mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(normalization.std, dtype=torch.float32), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(uint8_nhwc_to_input(images, self.mean, self.std))
        return logits, F.softmax(logits, dim=1)


def describe_backbone(model: nn.Module) -> str:
    """A short architecture name: "R50x1" for a standard BiT ResNet-v2, else the class name."""
    model = _unwrap(model)
    if isinstance(model, ResNetV2):
        depths = tuple(len(block) for block in model.body)
        width = model.root.conv.out_channels // 64
        for depth, units in DEPTHS.items():
            if units == depths:
                return f"R{depth}x{width}"
        return f"ResNetV2{list(depths)}x{width}"
    return type(model).__name__


def _as_normalization(normalization: Normalization | Mapping | Sequence) -> Normalization:
    if isinstance(normalization, Normalization):
        return normalization
    if isinstance(normalization, Mapping):
        mean, std = normalization["mean"], normalization["std"]
    else:
        mean, std = normalization
    return Normalization(mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """A deterministic batch of uint8 noise images, N x size x size x 3."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers: what decides whether the weights need external data."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


# ------------------------------------------------------------------------------------------------------------
# Export and verification


def _torch_export(graph: ExportGraph, example: torch.Tensor, path: Path, opset: int) -> None:
    """Write the raw ONNX graph (no metadata yet) at `path` with the TorchScript exporter."""
    with warnings.catch_warnings():
        # The exporter warns about its own deprecation and about tracing details that do not apply to these
        # graphs (no data-dependent control flow); the verification below is what tells whether it worked.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            str(path),  # a path, not a buffer: over 2 GB the exporter must write external data next to it
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[LOGITS_NAME, PROBABILITIES_NAME],
            dynamic_axes={
                INPUT_NAME: {0: "batch"},
                LOGITS_NAME: {0: "batch"},
                PROBABILITIES_NAME: {0: "batch"},
            },
            do_constant_folding=True,
        )


def _run_onnxruntime(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities) of the ONNX file at `path` on the CPU, in chunks."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # its graph-cleaning notes are for graph authors, not the app's users
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = [session.run([LOGITS_NAME, PROBABILITIES_NAME], {INPUT_NAME: b}) for b in chunks(images)]
    return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])


@torch.no_grad()
def _run_torch(graph: ExportGraph, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    outputs = [graph(torch.from_numpy(b)) for b in chunks(images)]
    return (torch.cat([o[0] for o in outputs]).numpy(), torch.cat([o[1] for o in outputs]).numpy())


def export_onnx(
    model: nn.Module,
    labels: Sequence[str],
    input_size: int,
    normalization: Normalization | Mapping | Sequence,
    out_path: str | os.PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    verify_images: torch.Tensor | np.ndarray | None = None,
    opset: int = DEFAULT_OPSET,
    backbone: str | None = None,
    run_id: str = "",
    external_data: bool | None = None,
    force: bool = False,
) -> ExportResult:
    """Export `model` to a verified, self-describing ONNX file (see the module docstring for the format).

    Args:
        model: a BiT `ResNetV2` or an `EfficientNetLite` (anything mapping float NCHW to logits); it may live
            on a GPU and be wrapped by DDP or torch.compile. It is not modified.
        labels: class names in output order; their count must match the model's outputs.
        input_size: side of the square input in pixels (the evaluation resolution).
        normalization: the family's mean/std (`ModelSpec.normalization`, or {"mean": ..., "std": ...}).
        out_path: the .onnx file to write (replaced atomically; external weights go to ``<out_path>.data``).
        metadata: extra metadata_props (non-string values are stored as JSON).
        verify_images: uint8 ``N x input_size x input_size x 3`` images (torch or numpy) to compare
            onnxruntime with PyTorch on; when None, `DEFAULT_VERIFY_IMAGES` deterministic random images.
        opset: ONNX opset (17 by default; see the module docstring).
        backbone: name recorded in the metadata; defaults to `describe_backbone(model)`.
        run_id: the training run the weights come from, recorded in the metadata.
        external_data: store the weights in ``<out_path>.data``; None decides by size (needed over 2 GB).
        force: replace `out_path` (and ``<out_path>.data``) even when it is not a BiT Studio export; without
            it such a file is refused before any work (see `check_destination`).

    Returns:
        The `ExportResult` with the parity figures.

    Raises:
        ExportVerificationError: onnxruntime and PyTorch disagree (out_path is left as it was).
        ExportError: the exporter or the ONNX checker failed, or `out_path` is another program's file.
        ValueError: inconsistent arguments (label count, image shape).
    """
    import onnx

    started = time.perf_counter()
    out_path = Path(out_path)
    check_destination(out_path, force, external_data=bool(external_data))
    normalization = _as_normalization(normalization)
    if verify_images is None:
        images, source = random_images(DEFAULT_VERIFY_IMAGES, input_size), "random"
    else:
        images, source = as_uint8_nhwc(verify_images, input_size), "caller"

    net = cpu_float_copy(model)
    backbone = backbone or describe_backbone(net)
    # The reference is the model as the app runs it: weights standardized on every forward.
    ref_logits, ref_probs = _run_torch(ExportGraph(net, normalization), images)
    if ref_logits.ndim != 2 or ref_logits.shape[1] != len(labels):
        raise ValueError(f"The model has {ref_logits.shape[-1]} outputs but {len(labels)} labels were given.")

    graph = ExportGraph(fold_weight_standardization(net), normalization).eval()
    if external_data is None:
        external_data = parameter_bytes(graph) > EXTERNAL_DATA_THRESHOLD
        if external_data:
            check_destination(out_path, force, external_data=True)  # now known to need <out_path>.data
    meta = build_metadata(labels, input_size, normalization, backbone, run_id, metadata)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".export", dir=out_path.parent))
    try:
        raw_dir = work / "raw"
        raw_dir.mkdir()
        try:
            _torch_export(graph, torch.from_numpy(images[:1]), raw_dir / "raw.onnx", opset)
        except Exception as exc:  # the exporter raises many kinds; the user needs the reason, not the type
            raise ExportError(f"Could not export {backbone} to ONNX: {exc}") from exc
        del graph, net  # the big models: free the weights before onnx.load holds a second copy

        staged = work / out_path.name
        staged_data = save_with_metadata(raw_dir / "raw.onnx", staged, meta, external_data)
        shutil.rmtree(raw_dir)
        try:
            onnx.checker.check_model(str(staged))  # the path form: works over 2 GB and with external data
        except Exception as exc:
            raise ExportError(f"The exported model failed the ONNX checker: {exc}") from exc

        try:
            logits, probs = _run_onnxruntime(staged, images)
        except Exception as exc:  # onnxruntime raises its own types; the user needs the reason
            raise ExportError(f"onnxruntime could not run the exported model: {exc}") from exc
        figures = {
            "n_images": len(images),
            "max_abs_prob_diff": float(np.max(np.abs(probs - ref_probs))),
            "max_abs_logit_diff": float(np.max(np.abs(logits - ref_logits))),
            "top1_agree": int(np.sum(probs.argmax(1) == ref_probs.argmax(1))),
            "prob_tolerance": PROB_TOLERANCE,
        }
        prob_ok = figures["max_abs_prob_diff"] <= PROB_TOLERANCE  # NaN compares False: fails, as it must
        if not (prob_ok and figures["top1_agree"] == len(images)):
            raise ExportVerificationError(
                f"The exported model does not predict like the trained one, so it was not saved: "
                f"largest probability difference {figures['max_abs_prob_diff']:.3g} "
                f"(allowed {PROB_TOLERANCE:g}), same top-1 class on {figures['top1_agree']} of "
                f"{len(images)} images. Please report this as a bug.",
                figures,
            )

        data_path = publish(staged, staged_data, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    file_bytes = out_path.stat().st_size + (data_path.stat().st_size if data_path else 0)
    return ExportResult(
        path=str(out_path),
        data_path=str(data_path) if data_path else None,
        file_bytes=file_bytes,
        opset=opset,
        verify_images_source=source,
        seconds=round(time.perf_counter() - started, 3),
        metadata=meta,
        **figures,
    )
