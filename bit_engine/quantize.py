"""An int8 copy of an exported model, measured against the float file on the same images.

    quantize_int8(onnx_path, out_path, verify_images, labels_true=None, *, method="static", ...) -> QuantizeResult

The copy is a BiT Studio export like the original (same metadata, plus ``bit_studio.quantization``), written
and published through `bit_engine.onnx_format`; the figures say what it costs and gains on this CPU (size,
speed, agreement, accuracy change) with plain-words notes when it does not pay off. The softmax stays in float
after the last quantized node, so the probabilities still sum to 1, and onnxruntime's notes for graph authors
are kept off the user's terminal. Uses onnxruntime and onnx only: no torch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bit_engine.inference import parse_input_size, parse_labels
from bit_engine.onnx_format import (
    EXTERNAL_DATA_THRESHOLD,
    INPUT_NAME,
    META_FORMAT_VERSION,
    META_INPUT_SIZE,
    META_LABELS,
    META_QUANTIZATION,
    PROBABILITIES_NAME,
    ExportError,
    as_uint8_nhwc,
    check_destination,
    chunks,
    publish,
    read_metadata,
    save_with_metadata,
)

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
    verify_images: Any,
    labels_true: Sequence[int | str] | None = None,
    *,
    method: str = "static",
    calibration_images: Any = None,
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
    images = as_uint8_nhwc(verify_images, size)
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
                    calibration, calib = "caller", as_uint8_nhwc(calibration_images, size)
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
        staged_data = save_with_metadata(
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
        p32 = np.concatenate([fp32.run([PROBABILITIES_NAME], {INPUT_NAME: b})[0] for b in chunks(images)])
        p8 = np.concatenate([int8.run([PROBABILITIES_NAME], {INPUT_NAME: b})[0] for b in chunks(images)])
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

        data_path = publish(staged, staged_data, out_path)
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
