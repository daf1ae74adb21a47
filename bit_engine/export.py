"""Export a trained model to one self-describing ONNX file that predicts exactly as the app does.

What the file contains:

* **Pre-processing inside the graph.** The input ``images`` is ``uint8`` RGB, shape ``N x H x W x 3``
  (channels last, the layout PIL and numpy give), at the model's input resolution. The graph casts to
  float, scales to [0, 1], normalizes with the model family's mean/std and permutes to NCHW itself, so a
  caller cannot get the channel order, the scale or the normalization wrong. Only the resize stays outside
  (it needs the original image): resize the WHOLE image to ``input_size x input_size`` with bilinear
  filtering (PIL ``Image.resize((s, s), Image.BILINEAR)``, antialiased when shrinking), no crop, aspect
  ratio not kept -- the BiT test transform. `bit_engine.inference.prepare` is that function.
* **Outputs** ``logits`` (``N x C`` float32) and ``probabilities`` (softmax of the logits), in label order.
* **A dynamic batch dimension** (``batch``); height and width are fixed.
* **Weight Standardization folded away.** Standardized weights are constants at inference, so every
  `StdConv2d` is replaced by a plain convolution holding ``standardized_weight()`` (on a copy: the caller's
  model is untouched). EfficientNet's BatchNorm (eval mode) is exported as is; onnxruntime fuses it into the
  convolutions when it loads the graph.
* **Metadata** (ONNX ``metadata_props``, string to string), enough to use the file without this app:

  =================================  =======================================================================
  key                                value
  =================================  =======================================================================
  ``bit_studio.format_version``      ``"1"``: the layout described here
  ``bit_studio.labels``              JSON list of class names, in output order
  ``bit_studio.input_size``          side of the square input in pixels, e.g. ``"128"``
  ``bit_studio.input_format``        ``"uint8 RGB NHWC"`` (0-255, channels last)
  ``bit_studio.resize``              how to get there: ``"whole image to input_size x input_size, bilinear
                                     (PIL Image.BILINEAR, antialiased), no crop, aspect ratio not kept"``
  ``bit_studio.normalization``       JSON ``{"mean": [r, g, b], "std": [r, g, b]}`` on [0, 1] RGB; already
                                     applied inside the graph, recorded for reference only
  ``bit_studio.backbone``            e.g. ``"BiT-M-R50x1"``
  ``bit_studio.run_id``              the training run the weights come from (may be empty)
  ``bit_studio.app_version``         ``bit_engine.__version__`` of the exporting app
  ``bit_studio.export_date``         ISO 8601, UTC
  ``bit_studio.quantization``        only on quantized copies, e.g. ``"int8 dynamic (ConvInteger)"``
  =================================  =======================================================================

  Caller-supplied ``metadata`` entries are added under their own keys (non-string values as JSON).

Using an exported file with plain onnxruntime::

    import json, numpy as np, onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession("model.onnx")
    meta = session.get_modelmeta().custom_metadata_map
    labels, size = json.loads(meta["bit_studio.labels"]), int(meta["bit_studio.input_size"])
    image = Image.open("photo.jpg").convert("RGB").resize((size, size), Image.BILINEAR)
    batch = np.asarray(image, dtype=np.uint8)[None]             # 1 x H x W x 3
    probabilities = session.run(["probabilities"], {"images": batch})[0][0]
    print(labels[int(probabilities.argmax())])

(The app also applies the EXIF orientation before resizing; `PIL.ImageOps.exif_transpose` does that.)

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

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bit_engine import __version__
from bit_engine.errors import BitStudioError
from bit_engine.frozen import _unwrap, cpu_float_copy, fold_weight_standardization
from bit_engine.inference import parse_input_size, parse_labels
from bit_engine.models import DEPTHS, Normalization, ResNetV2
from bit_engine.progress import CancelFlag, OperationCancelled, Progress, ProgressCallback

# Metadata keys (see the module docstring for their values).
META_FORMAT_VERSION = "bit_studio.format_version"
META_LABELS = "bit_studio.labels"
META_INPUT_SIZE = "bit_studio.input_size"
META_INPUT_FORMAT = "bit_studio.input_format"
META_RESIZE = "bit_studio.resize"
META_NORMALIZATION = "bit_studio.normalization"
META_BACKBONE = "bit_studio.backbone"
META_RUN_ID = "bit_studio.run_id"
META_APP_VERSION = "bit_studio.app_version"
META_EXPORT_DATE = "bit_studio.export_date"
META_QUANTIZATION = "bit_studio.quantization"

FORMAT_VERSION = "1"
INPUT_FORMAT = "uint8 RGB NHWC"
RESIZE_DESCRIPTION = (
    "whole image to input_size x input_size, bilinear (PIL Image.BILINEAR, antialiased), "
    "no crop, aspect ratio not kept"
)

#: Graph input and output names.
INPUT_NAME = "images"
LOGITS_NAME = "logits"
PROBABILITIES_NAME = "probabilities"

DEFAULT_OPSET = 17

#: Verification tolerances: onnxruntime vs PyTorch eager.
PROB_TOLERANCE = 1e-4

#: Random images used for verification when the caller passes none (few: R152x4 at 480 px is slow on a CPU).
DEFAULT_VERIFY_IMAGES = 4

#: Images per forward pass during verification (bounds memory on the big models).
_VERIFY_CHUNK = 8

# A protobuf message cannot exceed 2 GiB. Graph structure and metadata are tiny next to the weights, but keep
# a margin so that a model just under the limit does not fail at serialization time.
_PROTOBUF_LIMIT = 2**31
EXTERNAL_DATA_THRESHOLD = _PROTOBUF_LIMIT - 128 * 2**20


class ExportError(BitStudioError):
    """The model could not be exported (the message says why)."""


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


def _as_uint8_nhwc(images: Any, input_size: int) -> np.ndarray:
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (input_size, input_size, 3):
        raise ValueError(
            f"verify_images must be uint8 N x {input_size} x {input_size} x 3, "
            f"got {array.dtype} {tuple(array.shape)}."
        )
    if len(array) == 0:
        raise ValueError("verify_images is empty.")
    return np.ascontiguousarray(array)


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
    outputs = [session.run([LOGITS_NAME, PROBABILITIES_NAME], {INPUT_NAME: b}) for b in _chunks(images)]
    return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])


@torch.no_grad()
def _run_torch(graph: ExportGraph, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    outputs = [graph(torch.from_numpy(b)) for b in _chunks(images)]
    return (torch.cat([o[0] for o in outputs]).numpy(), torch.cat([o[1] for o in outputs]).numpy())


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def build_metadata(
    labels: Sequence[str],
    input_size: int,
    normalization: Normalization,
    backbone: str,
    run_id: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The metadata_props of an exported model (keys are the META_* constants plus `extra`'s)."""
    meta = {
        META_FORMAT_VERSION: FORMAT_VERSION,
        META_LABELS: json.dumps(list(labels), ensure_ascii=False),
        META_INPUT_SIZE: str(int(input_size)),
        META_INPUT_FORMAT: INPUT_FORMAT,
        META_RESIZE: RESIZE_DESCRIPTION,
        META_NORMALIZATION: json.dumps({"mean": list(normalization.mean), "std": list(normalization.std)}),
        META_BACKBONE: backbone,
        META_RUN_ID: run_id,
        META_APP_VERSION: __version__,
        META_EXPORT_DATE: datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for key, value in (extra or {}).items():
        if key in meta:
            raise ValueError(f"metadata key {key!r} is set by the exporter; pass it as an argument instead.")
        meta[str(key)] = _json(value)
    return meta


def _save_with_metadata(
    raw: Path, dest: Path, metadata: Mapping[str, str], external_data: bool
) -> Path | None:
    """Load the raw export, add metadata, save at `dest` (weights beside it when `external_data`).

    Returns:
        The external data file, or None.
    """
    import onnx

    model = onnx.load(str(raw))  # also loads the per-tensor files the exporter writes for > 2 GB models
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "BiT Studio"
    model.producer_version = __version__
    model.doc_string = (
        "Input 'images': uint8 RGB N x H x W x 3 (channels last); resize the whole image to the square "
        "input size, bilinear, no crop. Outputs 'logits' and 'probabilities' in the order of the "
        f"'{META_LABELS}' metadata entry (JSON list)."
    )
    if not external_data:
        onnx.save_model(model, str(dest))
        return None
    data_name = dest.name + ".data"
    # The location is relative to the .onnx file: the pair can be moved together anywhere.
    onnx.save_model(
        model, str(dest), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name
    )
    # onnx creates the data file owner-only; the pair is one model, so give it the .onnx file's permissions.
    os.chmod(dest.parent / data_name, dest.stat().st_mode & 0o777)
    return dest.parent / data_name


def _own_weight_files(path: Path) -> set[Path]:
    """The external weight files a BiT Studio export at `path` refers to (empty for anything else)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not an ONNX file at all: it owns nothing
        return set()
    if not any(p.key == META_FORMAT_VERSION for p in model.metadata_props):
        return set()
    names = {ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)}
    # Only plain names beside the file: a location like "../x" never makes the exporter delete "x".
    return {path.parent / name for name in names if name and Path(name).name == name}


def is_bit_studio_export(path: str | os.PathLike) -> bool:
    """Whether `path` is an ONNX file written by this exporter (it carries the format-version metadata)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not parseable as ONNX
        return False
    return any(p.key == META_FORMAT_VERSION for p in model.metadata_props)


def check_destination(out_path: str | os.PathLike, force: bool = False, external_data: bool = True) -> None:
    """Refuse, before any work, to write an export where it would destroy a file that is not one.

    An existing BiT Studio export at `out_path` is replaced (re-exporting a run is normal); any other file is
    kept unless `force`. The weights file ``<out_path>.data`` that a large model needs is written only where
    no file of that name exists or where it belongs to the export being replaced.

    Raises:
        ExportError: with what to do instead.
    """
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ExportError(
            f"{out_path} is a folder; give the .onnx file to write, e.g. {out_path / 'model.onnx'}."
        )
    if force:
        return
    if out_path.exists() and not is_bit_studio_export(out_path):
        raise ExportError(
            f"{out_path} already exists and is not a model exported by BiT Studio, so it was left as it is. "
            "Choose another name, or remove that file first (on the command line, export --force replaces it)."
        )
    data = out_path.parent / (out_path.name + ".data")
    if external_data and data.exists() and data not in _own_weight_files(out_path):
        raise ExportError(
            f"{data} already exists and does not belong to a BiT Studio export of that name, so it was left as "
            "it is. Choose another name, or remove that file first (on the command line, export --force replaces "
            "it)."
        )


def _publish(staged: Path, staged_data: Path | None, out_path: Path) -> Path | None:
    """Move a verified, staged model (and its external weights) into place; return the weights file.

    The weights files the replaced export referred to and the new one does not are removed (they would be
    orphans); no other file is ever deleted.
    """
    previous = _own_weight_files(out_path) if out_path.is_file() else set()
    data_path = None
    if staged_data is not None:
        data_path = out_path.parent / staged_data.name
        os.replace(staged_data, data_path)
    os.replace(staged, out_path)
    for orphan in previous - {data_path}:
        with contextlib.suppress(FileNotFoundError):
            orphan.unlink()
    return data_path


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
        images, source = _as_uint8_nhwc(verify_images, input_size), "caller"

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
        staged_data = _save_with_metadata(raw_dir / "raw.onnx", staged, meta, external_data)
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

        data_path = _publish(staged, staged_data, out_path)
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


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata_props of an ONNX file (weights are not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


# ------------------------------------------------------------------------------------------------------------
# int8 quantization

QUANTIZATION_METHODS = ("static", "dynamic")


@dataclass(frozen=True)
class QuantizeResult:
    """An int8 copy of an exported model, measured against the fp32 file on the same images.

    Attributes:
        path: the int8 .onnx file.
        data_path: its external weights file, or None.
        method: "static" (QDQ: int8 per-channel weights, uint8 activations calibrated on images) or "dynamic"
            (weights only; Conv becomes ConvInteger, activations quantized on the fly).
        fp32_bytes, int8_bytes: sizes on disk (external data included); size_ratio = int8 / fp32.
        fp32_images_per_s, int8_images_per_s: CPU throughput at batch 1; speedup = int8 / fp32.
        n_images: images compared.
        top1_agree: images with the same top-1 class in both.
        max_abs_prob_diff: largest |probability difference|.
        fp32_accuracy, int8_accuracy, accuracy_change: top-1 accuracy on the images when true labels were
            given (None otherwise); accuracy_change = int8 - fp32.
        calibration: where the calibration images came from ("caller", "verify_images", or "none" for
            dynamic quantization).
        quantized_ops: counts of the int8 operators in the graph (what actually got quantized).
        notes: plain-language caveats about the figures (slower, barely smaller, optimistic agreement...).
    """

    path: str
    data_path: str | None
    method: str
    fp32_bytes: int
    int8_bytes: int
    size_ratio: float
    fp32_images_per_s: float
    int8_images_per_s: float
    speedup: float
    n_images: int
    top1_agree: int
    max_abs_prob_diff: float
    fp32_accuracy: float | None
    int8_accuracy: float | None
    accuracy_change: float | None
    calibration: str
    quantized_ops: dict[str, int]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


class _ImageReader:
    """onnxruntime's CalibrationDataReader protocol: one image per call, then None."""

    def __init__(self, images: np.ndarray):
        self._batches = iter([{INPUT_NAME: images[i : i + 1]} for i in range(len(images))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@contextlib.contextmanager
def _quiet_quantizer():
    # onnxruntime.quantization reports through the root logger ("consider pre-processing", one warning per
    # GroupNorm constant), and the sessions it opens to calibrate log through onnxruntime's own C++ logger
    # ("Removing initializer ... not used by any node", dozens on EfficientNet); those are notes for graph
    # authors, not for the app's users. onnxruntime has no getter for its default severity: it is left at
    # errors only, which is what every session of the app asks for anyway.
    import logging

    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _softmax_nodes(path: Path) -> list[str]:
    """Names of the Softmax nodes of a model (the probabilities), which quantization must leave in float."""
    import onnx

    return [
        n.name for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type == "Softmax"
    ]


def _file_bytes(path: Path) -> int:
    data = path.parent / (path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _has_external_data(path: Path) -> bool:
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return any(uses_external_data(t) for t in _get_all_tensors(model))


def _images_per_second(session, images: np.ndarray) -> float:
    session.run([PROBABILITIES_NAME], {INPUT_NAME: images[:1]})  # warm-up: first run allocates and plans
    started = time.perf_counter()
    for i in range(len(images)):
        session.run([PROBABILITIES_NAME], {INPUT_NAME: images[i : i + 1]})
    return len(images) / (time.perf_counter() - started)


def quantize_int8(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    verify_images: torch.Tensor | np.ndarray,
    labels_true: Sequence[int | str] | None = None,
    *,
    method: str = "static",
    calibration_images: torch.Tensor | np.ndarray | None = None,
    timing_images: int = 8,
    threads: int | None = None,
    force: bool = False,
) -> QuantizeResult:
    """Write an int8 copy of an exported model and measure what it costs and gains.

    Which method: on these conv nets dynamic quantization turns every Conv into ConvInteger, which makes the
    file about 4x smaller but, with onnxruntime's CPU kernels, several times *slower* than fp32 (measured
    on BiT-R50x1 at 128 px, 2 CPU threads: about 0.3x). Static QDQ quantization (int8 per-channel weights,
    uint8 activations whose ranges come from a few calibration images) is the default: as small, and faster
    than fp32 (same model: about 1.5-1.9x). GroupNorm stays in float in both. The figures in the result are measured, not
    assumed, so whichever method is used the user sees what it did.

    Args:
        onnx_path: an fp32 model written by `export_onnx`.
        out_path: the int8 .onnx file (written atomically).
        verify_images: uint8 N x S x S x 3 images on which fp32 and int8 are compared (and timed).
        labels_true: the true class of each image (index or label) to report the accuracy change.
        method: "static" or "dynamic".
        calibration_images: images for static calibration; when None, `verify_images` are used (the result
            then notes that the agreement figures are optimistic).
        timing_images: how many images to time at batch 1.
        threads: intra-op threads for the timing sessions (None: onnxruntime's default).
        force: replace `out_path` even when it is not a BiT Studio export (see `check_destination`).

    Returns:
        The `QuantizeResult` with its figures.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if method not in QUANTIZATION_METHODS:
        raise ValueError(f"method must be one of {QUANTIZATION_METHODS}, got {method!r}.")
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    metadata = read_metadata(onnx_path)
    if META_FORMAT_VERSION not in metadata:
        raise ExportError(
            f"{onnx_path.name} was not exported by BiT Studio: only its exports can be quantized."
        )
    size = parse_input_size(metadata.get(META_INPUT_SIZE, ""), onnx_path.name)
    labels = parse_labels(metadata.get(META_LABELS, ""), onnx_path.name)
    images = _as_uint8_nhwc(verify_images, size)
    external = _has_external_data(onnx_path)
    check_destination(out_path, force, external_data=external)
    notes: list[str] = []

    out_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".quant", dir=out_path.parent))
    try:
        raw = work / "raw.onnx"
        # The softmax stays in float after the last quantized node: a quantized softmax output has steps
        # of 1/255, and its probabilities would no longer sum to 1.
        keep_float = _softmax_nodes(onnx_path)
        with _quiet_quantizer():
            if method == "dynamic":
                calibration = "none"
                quantize_dynamic(
                    onnx_path,
                    raw,
                    weight_type=QuantType.QInt8,
                    use_external_data_format=external,
                    nodes_to_exclude=keep_float,
                )
            else:
                if calibration_images is None:
                    calibration, calib = "verify_images", images
                    notes.append(
                        "Calibrated on the same images it was compared on: the agreement figures are "
                        "optimistic; pass separate calibration images for an unbiased measure."
                    )
                else:
                    calibration, calib = "caller", _as_uint8_nhwc(calibration_images, size)
                quantize_static(
                    onnx_path,
                    raw,
                    _ImageReader(calib),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    use_external_data_format=external,
                    nodes_to_exclude=keep_float,
                )
        kind = "int8 static QDQ (per-channel weights)" if method == "static" else "int8 dynamic (ConvInteger)"
        staged = work / out_path.name
        # Everything the quantizer wrote is weights plus a small graph: enough to decide on external data.
        int8_bytes = sum(f.stat().st_size for f in work.iterdir() if f.is_file())
        staged_data = _save_with_metadata(
            raw, staged, {**metadata, META_QUANTIZATION: kind}, int8_bytes > EXTERNAL_DATA_THRESHOLD
        )
        quantized_ops = _count_int8_ops(staged)

        options = ort.SessionOptions()
        options.log_severity_level = 3  # see _quiet_quantizer
        if threads:
            options.intra_op_num_threads = threads
        cpu = ["CPUExecutionProvider"]
        fp32 = ort.InferenceSession(str(onnx_path), options, providers=cpu)
        int8 = ort.InferenceSession(str(staged), options, providers=cpu)
        p32 = np.concatenate([fp32.run([PROBABILITIES_NAME], {INPUT_NAME: b})[0] for b in _chunks(images)])
        p8 = np.concatenate([int8.run([PROBABILITIES_NAME], {INPUT_NAME: b})[0] for b in _chunks(images)])
        timed = images[: max(1, timing_images)]
        fp32_ips, int8_ips = _images_per_second(fp32, timed), _images_per_second(int8, timed)
        del fp32, int8  # release the file handles before moving the files

        accuracy = (None, None, None)
        if labels_true is not None:
            truth = np.array([labels.index(t) if isinstance(t, str) else int(t) for t in labels_true])
            if len(truth) != len(images):
                raise ValueError(f"{len(truth)} true labels for {len(images)} images.")
            acc32, acc8 = float(np.mean(p32.argmax(1) == truth)), float(np.mean(p8.argmax(1) == truth))
            accuracy = (acc32, acc8, acc8 - acc32)

        data_path = _publish(staged, staged_data, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    fp32_bytes, int8_bytes = _file_bytes(onnx_path), _file_bytes(out_path)
    size_ratio = int8_bytes / fp32_bytes
    speedup = int8_ips / fp32_ips
    if size_ratio > 0.8:
        notes.append(
            f"The int8 file is barely smaller ({size_ratio:.0%} of fp32): few weights were quantized."
        )
    if speedup < 1.0:
        notes.append(
            f"The int8 model is slower than fp32 on this CPU ({speedup:.2f}x): onnxruntime's int8 kernels "
            "for these operators do not pay off here."
        )
    if not any(key.endswith("int8") for key in quantized_ops):
        notes.append("No Conv, Gemm or MatMul was quantized.")
    return QuantizeResult(
        path=str(out_path),
        data_path=str(data_path) if data_path else None,
        method=method,
        fp32_bytes=fp32_bytes,
        int8_bytes=int8_bytes,
        size_ratio=round(size_ratio, 4),
        fp32_images_per_s=round(fp32_ips, 3),
        int8_images_per_s=round(int8_ips, 3),
        speedup=round(speedup, 3),
        n_images=len(images),
        top1_agree=int(np.sum(p32.argmax(1) == p8.argmax(1))),
        max_abs_prob_diff=float(np.max(np.abs(p32 - p8))),
        fp32_accuracy=accuracy[0],
        int8_accuracy=accuracy[1],
        accuracy_change=accuracy[2],
        calibration=calibration,
        quantized_ops=quantized_ops,
        notes=notes,
    )


def _chunks(images: np.ndarray) -> list[np.ndarray]:
    return [images[i : i + _VERIFY_CHUNK] for i in range(0, len(images), _VERIFY_CHUNK)]


def _count_int8_ops(path: Path) -> dict[str, int]:
    """How many Conv/Gemm/MatMul nodes run in int8 and how many stay in float, e.g. {"Conv int8": 54}."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in ("ConvInteger", "MatMulInteger"):
            key = f"{node.op_type.removesuffix('Integer')} int8"
        elif node.op_type in ("Conv", "Gemm", "MatMul"):
            # QDQ graphs keep Conv nodes whose weight comes through a DequantizeLinear; onnxruntime fuses the
            # pattern into an int8 kernel when it loads the file.
            quantized = len(node.input) > 1 and node.input[1] in dequantized
            key = f"{node.op_type} {'int8' if quantized else 'float'}"
        else:
            continue
        counts[key] = counts.get(key, 0) + 1
    return counts


# ------------------------------------------------------------------------------------------------------------
# From a run folder


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
