"""The exported model file: what it holds, its metadata, and where it may be written.

A BiT Studio export is one self-describing ONNX file that predicts exactly as the app does:

* **Pre-processing inside the graph.** The input ``images`` is ``uint8`` RGB, shape ``N x H x W x 3``
  (channels last, the layout PIL and numpy give), at the model's input resolution. The graph casts to
  float, scales to [0, 1], normalizes with the model family's mean/std and permutes to NCHW itself, so a
  caller cannot get the channel order, the scale or the normalization wrong. Only the resize stays outside
  (it needs the original image): resize the WHOLE image to ``input_size x input_size`` with bilinear
  filtering (PIL ``Image.resize((s, s), Image.BILINEAR)``, antialiased when shrinking), no crop, aspect
  ratio not kept -- the BiT test transform. `bit_engine.inference.prepare` is that function.
* **Outputs** ``logits`` (``N x C`` float32) and ``probabilities`` (softmax of the logits), in label order.
* **A dynamic batch dimension** (``batch``); height and width are fixed.
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

Writing one (`export.export_onnx`, `quantize.quantize_int8`) goes through this module: the metadata is added
by `save_with_metadata`; `check_destination` refuses, before any work, to write over a file that is not a BiT
Studio export (its `remedy` is "replace"); `publish` moves a verified file into place and removes only the
weights files the replaced export owned. Nothing here needs torch: prediction and quantization use it without.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bit_engine import __version__
from bit_engine.errors import BitStudioError

if TYPE_CHECKING:  # models imports torch, which reading and writing the file's metadata does not need
    from bit_engine.models import Normalization

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

#: Images per forward pass when a model is run on many images (bounds memory on the big models).
CHUNK = 8

# A protobuf message cannot exceed 2 GiB. Graph structure and metadata are tiny next to the weights, but keep
# a margin so that a model just under the limit does not fail at serialization time.
_PROTOBUF_LIMIT = 2**31
EXTERNAL_DATA_THRESHOLD = _PROTOBUF_LIMIT - 128 * 2**20


class ExportError(BitStudioError):
    """The model could not be exported (the message says why)."""


def as_uint8_nhwc(images: Any, input_size: int) -> np.ndarray:
    """`images` (numpy or torch) as a contiguous uint8 N x S x S x 3 array; ValueError for any other shape."""
    # A torch tensor, without importing torch: prediction and quantization do not need it.
    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (input_size, input_size, 3):
        raise ValueError(
            f"verify_images must be uint8 N x {input_size} x {input_size} x 3, "
            f"got {array.dtype} {tuple(array.shape)}."
        )
    if len(array) == 0:
        raise ValueError("verify_images is empty.")
    return np.ascontiguousarray(array)


def chunks(images: np.ndarray) -> list[np.ndarray]:
    """`images` in slices of `CHUNK` (bounds the memory of one forward pass on the big models)."""
    return [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]


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


def save_with_metadata(
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
            "Choose another name, remove that file first, or replace it on purpose.",
            remedy="replace",
            path=out_path,
        )
    data = out_path.parent / (out_path.name + ".data")
    if external_data and data.exists() and data not in _own_weight_files(out_path):
        raise ExportError(
            f"{data} already exists and does not belong to a BiT Studio export of that name, so it was left as "
            "it is. Choose another name, remove that file first, or replace it on purpose.",
            remedy="replace",
            path=data,
        )


def publish(staged: Path, staged_data: Path | None, out_path: Path) -> Path | None:
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


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata_props of an ONNX file (weights are not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
