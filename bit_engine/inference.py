"""Predict with an exported model: the same image preparation as evaluation, with onnxruntime.

`prepare` (`images.to_model_input`) is the single definition of how an image becomes model input at test time
(the BiT test transform: resize the WHOLE image to the square input size with bilinear filtering; no crop,
aspect ratio not kept). The training loop evaluates with it too, so the accuracy it reports is the accuracy the exported file gets.
PIL's BILINEAR filter is antialiased when shrinking, which is also what torchvision's v2 ``Resize`` does on
PIL images; everything after the resize (scale, normalization, channel order) happens inside the exported
graph (see `bit_engine.export`).

`Predictor` opens any model written by `bit_engine.export` (labels, input size from its metadata). It also
opens foreign ONNX classifiers *if* they take the same input (uint8 RGB ``N x H x W x 3`` with a fixed H and
W): their classes are named "class 0", "class 1", ... and their scores are the ``probabilities`` output when
there is one, else the softmax of the first output. A model with any other input (float NCHW, say) is refused
with `NotABitStudioModelError`: running it would need a guess at its resize and normalization, and a wrong
guess gives confident wrong answers without any error -- the very failure this module exists to prevent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from bit_engine.errors import BitStudioError
from bit_engine.images import ImageError, open_rgb, to_model_input
from bit_engine.onnx_format import META_INPUT_SIZE, META_LABELS, PROBABILITIES_NAME
from bit_engine.progress import CancelFlag, OperationCancelled, Progress, ProgressCallback

#: Sides an input image may have, in pixels. BiT's largest resolution is 480; a file claiming 100,000 would
#: make every prediction allocate gigabytes before onnxruntime could object.
MIN_INPUT_SIDE, MAX_INPUT_SIDE = 8, 4096

#: Most classes a model may name: far above any folder of labelled photos, far below a memory problem.
MAX_CLASSES = 100_000


class ModelFileError(BitStudioError):
    """The model file is missing, damaged, or incomplete (e.g. its ``.onnx.data`` weights are missing)."""


class NotABitStudioModelError(ModelFileError):
    """An ONNX model whose input is not uint8 RGB images (N x H x W x 3): it cannot be fed safely."""


class ModelMetadataError(ModelFileError):
    """A model whose BiT Studio metadata (labels, input size) is malformed or contradicts its graph."""


def parse_input_size(value: str, name: str) -> int:
    """The ``bit_studio.input_size`` metadata entry as a side in pixels, checked against sane bounds.

    Raises:
        ModelMetadataError: not a whole number within [MIN_INPUT_SIDE, MAX_INPUT_SIDE].
    """
    try:
        side = int(value.strip()) if value.strip().isdigit() else None
    except ValueError:  # digits beyond int's string limit
        side = None
    if side is None or not MIN_INPUT_SIDE <= side <= MAX_INPUT_SIDE:
        raise ModelMetadataError(
            f"{name} has a damaged input size in its metadata ({value[:40]!r}; expected a whole number of "
            f"pixels from {MIN_INPUT_SIDE} to {MAX_INPUT_SIDE}). Export the model again."
        )
    return side


def parse_labels(value: str, name: str) -> list[str]:
    """The ``bit_studio.labels`` metadata entry: a non-empty JSON list of strings.

    Raises:
        ModelMetadataError: anything else (invalid JSON, not a list, a non-string entry, too many).
    """
    try:
        labels = json.loads(value)
    except (ValueError, RecursionError):
        labels = None
    ok = (
        isinstance(labels, list)
        and 0 < len(labels) <= MAX_CLASSES
        and all(isinstance(label, str) for label in labels)
    )
    if not ok:
        raise ModelMetadataError(
            f"{name} has damaged class names in its metadata (expected a JSON list of text, one per class). "
            "Export the model again."
        )
    return labels


class Prediction(NamedTuple):
    """One class and its probability."""

    label: str
    probability: float


def _open_rgb(path: str | os.PathLike) -> Image.Image:
    # No `draft_size`: a JPEG then decodes at full size, as a third party following the metadata recipe
    # (PIL open, convert, resize) and the training loop's evaluation do, so all three see the same pixels.
    return open_rgb(path)


prepare = (
    to_model_input  # the test-time transform, defined once in images.py (training evaluates with it too)
)


def _default_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _missing_external_data(path: Path) -> list[str]:
    """Names of the external weight files `path` refers to that are not beside it."""
    try:
        import onnx
        from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # the file is unreadable anyway; the caller reports that
        return []
    locations = {ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)}
    return sorted(name for name in locations if not (path.parent / name).is_file())


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Predictor:
    """Top-k predictions from an exported ONNX model.

    Args:
        path: the .onnx file (with its ``.onnx.data`` beside it for models over 2 GB).
        providers: onnxruntime execution providers; None picks CUDA when this onnxruntime has it, else CPU.
        threads: intra-op threads for the CPU provider; None lets onnxruntime decide.

    Attributes:
        labels: class names in output order.
        input_size: (height, width) of the model input.
        metadata: the file's metadata_props ({} for a foreign model).
        providers: the providers the session actually uses.

    Raises:
        ModelFileError: the file is missing, damaged or incomplete.
        NotABitStudioModelError: the model does not take uint8 RGB N x H x W x 3 images.
    """

    def __init__(
        self, path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None
    ):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"Model file not found: {self.path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # onnxruntime's own warnings would reach the user's console
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers or _default_providers()
            )
        except Exception as exc:  # onnxruntime raises its own exception types for every kind of bad file
            missing = _missing_external_data(self.path)
            if missing:
                raise ModelFileError(
                    f"{self.path.name} keeps its weights in a separate file that is missing: "
                    f"{', '.join(missing)}. Keep it in the same folder as the .onnx file."
                ) from exc
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(
                f"{self.path.name} is not a readable ONNX model; the file may be damaged or incomplete "
                f"(onnxruntime: {first_line})."
            ) from exc
        self.providers = self._session.get_providers()
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        self._input = self._session.get_inputs()[0]
        self.input_size, self._fixed_batch = self._read_input()
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = PROBABILITIES_NAME if PROBABILITIES_NAME in outputs else outputs[0]
        self._apply_softmax = self._output != PROBABILITIES_NAME
        self.labels = self._read_labels()

    @property
    def is_bit_studio_model(self) -> bool:
        return META_LABELS in self.metadata

    def _read_input(self) -> tuple[tuple[int, int], int | None]:
        shape = list(self._input.shape)
        ok = self._input.type == "tensor(uint8)" and len(shape) == 4 and shape[3] == 3
        if not ok:
            raise NotABitStudioModelError(
                f"{self.path.name} is not a BiT Studio model: its input {self._input.name!r} is "
                f"{self._input.type} with shape {shape}, but BiT Studio models take uint8 RGB images shaped "
                f"N x height x width x 3. Export the model from BiT Studio to use it here."
            )
        fixed = (shape[1], shape[2]) if isinstance(shape[1], int) and isinstance(shape[2], int) else None
        if fixed is not None and not all(MIN_INPUT_SIDE <= side <= MAX_INPUT_SIDE for side in fixed):
            raise NotABitStudioModelError(
                f"{self.path.name} takes images of {fixed[0]} x {fixed[1]} pixels; sides from "
                f"{MIN_INPUT_SIDE} to {MAX_INPUT_SIDE} pixels can be used."
            )
        if META_INPUT_SIZE in self.metadata:
            side = parse_input_size(self.metadata[META_INPUT_SIZE], self.path.name)
            size = (side, side)
            if fixed is not None and fixed != size:
                raise ModelMetadataError(
                    f"{self.path.name} contradicts itself: its metadata says {side} x {side} pixels, its "
                    f"graph takes {fixed[0]} x {fixed[1]}. Export the model again."
                )
        elif fixed is not None:
            size = fixed
        else:
            raise NotABitStudioModelError(
                f"{self.path.name} does not say its input size (no metadata, and its input shape {shape} "
                f"has no fixed height and width)."
            )
        batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        return size, batch

    def _read_labels(self) -> list[str]:
        count = self._session.get_outputs()[0].shape[-1]
        if not isinstance(count, int) or count <= 0:
            # A symbolic class dimension: one blank image tells how many classes there are.
            try:
                scores = self._run(np.zeros((1, *self.input_size, 3), np.uint8), normalize=False)
            except Exception as exc:  # onnxruntime's own types, for a graph that cannot run
                raise ModelFileError(f"{self.path.name} cannot be run by onnxruntime ({exc}).") from exc
            count = scores.shape[-1] if scores.ndim == 2 else -1
        if META_LABELS not in self.metadata:
            if count <= 0:
                raise NotABitStudioModelError(
                    f"{self.path.name} is not a classifier BiT Studio can use: its output is not one row of "
                    "class scores per image."
                )
            return [f"class {i}" for i in range(count)]
        labels = parse_labels(self.metadata[META_LABELS], self.path.name)
        if len(labels) != count:
            raise ModelMetadataError(
                f"{self.path.name} contradicts itself: its metadata names {len(labels)} classes, its graph "
                f"outputs {count} scores. Export the model again."
            )
        return labels

    def _run(self, batch: np.ndarray, normalize: bool = True) -> np.ndarray:
        """Probabilities for a uint8 N x H x W x 3 batch (the raw output scores when not `normalize`)."""
        if self._fixed_batch is not None and len(batch) != self._fixed_batch:
            # A foreign model with a fixed batch size: run it in chunks of that size, zero-padding the last.
            b = self._fixed_batch
            chunks = []
            for i in range(0, len(batch), b):
                chunk = batch[i : i + b]
                padded = np.concatenate([chunk, np.zeros((b - len(chunk), *chunk.shape[1:]), np.uint8)])
                chunks.append(self._session.run([self._output], {self._input.name: padded})[0][: len(chunk)])
            scores = np.concatenate(chunks)
        else:
            scores = self._session.run([self._output], {self._input.name: batch})[0]
        if not normalize:
            return scores
        return _softmax(scores.astype(np.float32)) if self._apply_softmax else scores

    def _top_k(self, probabilities: np.ndarray, top_k: int) -> list[Prediction]:
        order = np.argsort(-probabilities, kind="stable")[: max(1, top_k)]
        return [Prediction(self.labels[i], float(probabilities[i])) for i in order]

    def prepare(self, image: str | os.PathLike | Image.Image) -> np.ndarray:
        """A path or PIL image -> uint8 H x W x 3 at this model's input size (see module-level `prepare`)."""
        if not isinstance(image, Image.Image):
            image = _open_rgb(image)
        return prepare(image, self.input_size)

    def probabilities(self, images: Iterable[str | os.PathLike | Image.Image]) -> np.ndarray:
        """Class probabilities (N x classes) for images given as paths or PIL images, in one batch."""
        return self._run(np.stack([self.prepare(image) for image in images]))

    def predict(self, image: str | os.PathLike | Image.Image, top_k: int = 5) -> list[Prediction]:
        """The `top_k` most probable classes of one image, most probable first.

        Raises:
            ImageError: the file is not a readable image (from `bit_engine.images.open_rgb`).
        """
        return self._top_k(self.probabilities([image])[0], top_k)

    def predict_many(
        self, images: Iterable[str | os.PathLike | Image.Image], batch_size: int = 16, top_k: int = 5
    ) -> list[list[Prediction]]:
        """`predict` for many images, run `batch_size` at a time; raises on the first unreadable image."""
        images = list(images)
        results = []
        for start in range(0, len(images), batch_size):
            probs = self.probabilities(images[start : start + batch_size])
            results.extend(self._top_k(p, top_k) for p in probs)
        return results

    def predict_folder(
        self,
        folder: str | os.PathLike,
        batch_size: int = 16,
        top_k: int = 5,
        recursive: bool = True,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: CancelFlag | None = None,
    ) -> Iterator[tuple[Path, list[Prediction] | ImageError]]:
        """Predict every file of a folder, streamed in batches, in sorted path order.

        Hidden files (names starting with ".") are ignored. A file that is not a readable image is not fatal:
        it comes out as ``(path, error)`` with the reason, in its place in the order.

        Args:
            on_progress: receives "predicting" `Progress`, counting the folder's files as they are read.
            cancel: checked between files; a cancel raises `OperationCancelled` (what was yielded stays).

        Yields:
            ``(path, predictions)`` or ``(path, error)``.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise BitStudioError(f"Not a folder: {folder}")
        pending: list[tuple[Path, Any]] = []  # (path, uint8 array or the error), in order

        def flush() -> Iterator[tuple[Path, list[Prediction] | ImageError]]:
            arrays = [item for _, item in pending if isinstance(item, np.ndarray)]
            probs = iter(self._run(np.stack(arrays))) if arrays else iter(())
            for path, item in pending:
                yield path, (item if isinstance(item, ImageError) else self._top_k(next(probs), top_k))
            pending.clear()

        candidates = _image_candidates(folder, recursive)
        for done, path in enumerate(candidates):
            if cancel is not None and cancel.is_set():
                raise OperationCancelled("Prediction cancelled.")
            if on_progress is not None:
                on_progress(Progress("predicting", done, len(candidates)))
            try:
                pending.append((path, self.prepare(path)))
            except ImageError as error:
                pending.append((path, error))
            if sum(isinstance(item, np.ndarray) for _, item in pending) >= batch_size:
                yield from flush()
        yield from flush()
        if on_progress is not None:
            on_progress(Progress("predicting", len(candidates), len(candidates)))


def _image_candidates(folder: Path, recursive: bool) -> list[Path]:
    paths = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in paths
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


# ------------------------------------------------------------------------------------------------------------
# Predictions as a spreadsheet

#: First characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """`text` made inert for a spreadsheet cell: OWASP's escape for CSV injection.

    A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return would be run as a formula by
    Excel, LibreOffice or Google Sheets (``=HYPERLINK(...)`` in a file name, say); a leading single quote
    makes it text. The quote shows in the cell: honest, and the original is easy to recover.
    """
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def predictions_csv(rows: Iterable[tuple[str, list[Prediction] | BitStudioError]], top_k: int) -> str:
    """Predictions as CSV text, one row per file, safe to open in a spreadsheet.

    Columns: file, label, probability, label_2, probability_2, ... up to `top_k`, then error (the reason a
    file was skipped). Text cells (file names, class names, errors) are quoted and escaped with
    `spreadsheet_safe`; probabilities are plain numbers.

    Args:
        rows: ``(file, predictions or the error that skipped it)``, as `Predictor.predict_folder` yields.
        top_k: how many classes each row has room for.
    """
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC)
    header = ["file", "label", "probability"]
    for i in range(2, top_k + 1):
        header += [f"label_{i}", f"probability_{i}"]
    writer.writerow([*header, "error"])
    for file, result in rows:
        cells: list[str | float] = [spreadsheet_safe(str(file))]
        if isinstance(result, BaseException):
            writer.writerow([*cells, *[""] * (len(header) - 1), spreadsheet_safe(str(result))])
            continue
        for prediction in result[:top_k]:
            cells += [spreadsheet_safe(prediction.label), round(float(prediction.probability), 6)]
        cells += [""] * (len(header) - len(cells))
        writer.writerow([*cells, ""])
    return buf.getvalue()
