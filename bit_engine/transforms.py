"""BiT pre-processing (torchvision v2 transforms for training), and the datasets that feed the training loop.

Train: resize the whole image to a square (aspect ratio not kept), random crop, random horizontal flip.
Eval: resize to the crop size only, no centre crop. Both resize PIL images with PIL's bilinear filter, the
same call the ONNX predictor makes (`images.to_model_input`), so the exported model sees exactly what
evaluation saw.

Randomness is a pure function of (seed, epoch, sample index): every run, resume and data-parallel rank
draws the same crop and flip for the same sample, whatever process or worker loads it.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from bit_engine.errors import BitStudioError
from bit_engine.images import ImageError, open_rgb, to_model_input
from bit_engine.machine import available_memory
from bit_engine.models import Normalization

if TYPE_CHECKING:
    from torchvision.transforms import v2

#: Decoded, resized images are kept in memory when they fit in this many bytes (see `should_cache`).
CACHE_BUDGET_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Preprocessing:
    """Everything that turns a photo into a model input; saved with every run and exported model.

    Attributes:
        resize: side of the square the training image is resized to before the random crop.
        crop: input side (the random crop while training, the whole resize at evaluation).
        mean: per-channel mean on [0, 1] RGB.
        std: per-channel std on [0, 1] RGB.
        flip: random horizontal flip while training.
        random_crop: random crop while training (off: resize straight to `crop`).
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool = True
    random_crop: bool = True

    @classmethod
    def from_plan(cls, plan, normalization: Normalization) -> Preprocessing:
        return cls(
            resize=plan.resize if plan.random_crop else plan.crop,
            crop=plan.crop,
            mean=tuple(normalization.mean),
            std=tuple(normalization.std),
            flip=plan.flip,
            random_crop=plan.random_crop,
        )

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})

    def to_dict(self) -> dict:
        return {
            "resize": self.resize,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "flip": self.flip,
            "random_crop": self.random_crop,
        }

    def load_size(self, train: bool) -> int:
        """Side of the square a decoded image is resized to (what the in-memory cache stores)."""
        return self.resize if train else self.crop

    def tensor_transform(self, train: bool) -> v2.Transform | EvalInput:
        """From a resized uint8 image (a CHW tensor; PIL too while training) to the normalized float input.

        Evaluation has no random step, and its three steps are `EvalInput`: feature passes, evaluation and
        the label check do not import torchvision (over a second of imports, holding the window's GIL in
        bursts when they run on a worker thread)."""
        if not train:
            return EvalInput(self.mean, self.std)
        from torchvision.transforms import v2

        steps: list[v2.Transform] = [v2.ToImage()]
        if self.random_crop and self.resize != self.crop:
            steps.append(v2.RandomCrop(self.crop))
        if self.flip:
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(self.mean), list(self.std))]
        return v2.Compose(steps)


class EvalInput:
    """A uint8 CHW image to the normalized float input: torchvision v2's ToImage, ToDtype(float32, scale=True)
    and Normalize, as the same tensor operations in the same order (equal bit for bit, which a test checks).

    Args:
        mean: per-channel mean on [0, 1] RGB.
        std: per-channel std on [0, 1] RGB.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.to(torch.float32).mul_(1.0 / 255).sub_(self.mean).div_(self.std)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (run seed, epoch, sample index), independent of process and worker."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def decode_resized(path: str | Path, size: int) -> torch.Tensor:
    """Decode an image (EXIF orientation, RGB) and resize it to `size` x `size`: uint8 CHW tensor.

    The resize is `images.to_model_input`, the very function the ONNX predictor calls, so evaluation here
    and prediction from the exported file see the same pixels.
    """
    return torch.from_numpy(to_model_input(open_rgb(path), size).copy()).permute(2, 0, 1)


_reported: set[str] = set()


def report_broken_photo(error: ImageError) -> None:
    """Say once per process, on stderr, that a photo that passed the scan can no longer be read."""
    if error.path in _reported:
        return
    _reported.add(error.path)
    print(
        f"skipped {error.path!r}: {error.detail} (it changed after the scan); another photo of its class "
        "takes its place.",
        file=sys.stderr,
        flush=True,
    )


def should_cache(num_images: int, size: int, budget: int = CACHE_BUDGET_BYTES) -> bool:
    """Whether decoded images fit in the in-memory cache.

    Decoding and resizing a photo costs about 3 to 5 times the whole crop-flip-normalize chain: a training
    sample of a 500x375 JPEG loads 4x faster from the cache at 448->384 and 6x faster at 160->128
    (bench/data_loading.py, 2 CPU cores). Over a 500-step schedule a small dataset is read dozens of times,
    and building the cache costs one decode per image, paid back from the second epoch.
    """
    need = num_images * 3 * size * size
    return need <= min(budget, available_memory(default=budget * 2) // 4)


def loader_workers(cached: bool, copies: int = 1) -> int:
    """DataLoader worker processes for a pass over photos: none when they are decoded already (the in-memory
    cache) or when this process may not start any (a pool's daemonic worker), else one per core but one, at
    most 4, shared by `copies` training processes on the machine."""
    if cached or multiprocessing.current_process().daemon:
        return 0
    cores = (os.cpu_count() or 1) // copies
    return max(0, min(4, cores - 1))


class ImageDataset(Dataset):
    """Samples addressed by `(index, epoch)` keys, so the sampler decides what each step sees.

    Args:
        paths: image files.
        labels: class index per file.
        preprocessing: the run's `Preprocessing`.
        train: training (random crop/flip) or evaluation transform.
        seed: run seed for the per-sample randomness.
        cache: decoded images resized to `load_size`, one uint8 CHW tensor per sample, or None.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int],
        preprocessing: Preprocessing,
        train: bool,
        seed: int = 0,
        cache: list[torch.Tensor] | None = None,
    ):
        self.paths = [str(p) for p in paths]
        self.labels = list(labels)
        self.pre = preprocessing
        self.train = train
        self.seed = seed
        self.cache = cache
        self.size = preprocessing.load_size(train)
        self.to_input = preprocessing.tensor_transform(train)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        if self.cache is not None and self.cache[index] is not None:
            return self.cache[index]
        return decode_resized(self.paths[index], self.size)

    def _load_or_stand_in(self, index: int) -> torch.Tensor:
        """The image at `index`, or, when its file broke after the scan, the next readable one of its class.

        A photo replaced or damaged while a run goes on must not end the run with a loader traceback: it is
        reported (once) and skipped, and a photo of the same class takes its place, so the batch keeps its
        size and every process its schedule.
        """
        try:
            return self.load(index)
        except ImageError as error:
            report_broken_photo(error)
        label, n = self.labels[index], len(self.paths)
        for other in ((index + k) % n for k in range(1, n)):
            if self.labels[other] != label:
                continue
            try:
                return self.load(other)
            except ImageError as error:
                report_broken_photo(error)
        raise BitStudioError(
            f"No photo of class {label} can be read any more: they changed after the scan. Scan the folder "
            "again (start a new run)."
        )

    def __getitem__(self, key) -> tuple[torch.Tensor, int, int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image = self._load_or_stand_in(index)
        if self.train:
            # v2's random transforms draw from torch's global generator: seed it per sample, privately.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, index))
                x = self.to_input(image)
        else:
            x = self.to_input(image)
        return x, self.labels[index], index


def build_cache(
    paths: Sequence[str | Path],
    size: int,
    on_image: Callable[[int], None] | None = None,
    cancel=None,
) -> list[torch.Tensor] | None:
    """Decode and resize every image once; None when cancelled."""
    cache: list[torch.Tensor | None] = []
    for i, path in enumerate(paths):
        if cancel is not None and cancel.is_set():
            return None
        try:
            cache.append(decode_resized(path, size))
        except ImageError as error:  # broke after the scan: `ImageDataset` stands another photo in
            report_broken_photo(error)
            cache.append(None)
        if on_image is not None:
            on_image(i + 1)
    return cache
