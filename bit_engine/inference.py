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
from bit_engine.progress import CancelFlag, OperationCancelled, Progress, ProgressCallback

# The metadata keys are defined once, in export.py; importing it would pull in torch, which prediction
# does not need, so they are repeated here and a test checks that both agree.
META_LABELS = "bit_studio.labels"
META_INPUT_SIZE = "bit_studio.input_size"
META_BACKBONE = "bit_studio.backbone"
PROBABILITIES_NAME = "probabilities"


class ModelFileError(BitStudioError):
    """The model file is missing, damaged, or incomplete (e.g. its ``.onnx.data`` weights are missing)."""


class NotABitStudioModelError(ModelFileError):
    """An ONNX model whose input is not uint8 RGB images (N x H x W x 3): it cannot be fed safely."""


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
        if META_INPUT_SIZE in self.metadata:
            side = int(self.metadata[META_INPUT_SIZE])
            size = (side, side)
        elif isinstance(shape[1], int) and isinstance(shape[2], int):
            size = (shape[1], shape[2])
        else:
            raise NotABitStudioModelError(
                f"{self.path.name} does not say its input size (no metadata, and its input shape {shape} "
                f"has no fixed height and width)."
            )
        return size, shape[0] if isinstance(shape[0], int) else None

    def _read_labels(self) -> list[str]:
        if META_LABELS in self.metadata:
            return [str(label) for label in json.loads(self.metadata[META_LABELS])]
        count = self._session.get_outputs()[0].shape[-1]
        if not isinstance(count, int):
            # A symbolic class dimension: one blank image tells how many classes there are.
            count = self._run(np.zeros((1, *self.input_size, 3), np.uint8)).shape[1]
        return [f"class {i}" for i in range(count)]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a uint8 N x H x W x 3 batch."""
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
