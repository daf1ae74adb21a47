"""Backbone features of photos, computed once per (backbone, pre-processing, file) and kept on disk.

The head strategy (trainers.HeadTrainer) and the search for label issues (label_issues.py) both need the
frozen backbone's pooled features of every photo, without augmentation. `FeatureExtractor` computes them
through the fastest frozen path (`frozen.freeze`: onnxruntime on the CPU, eager on a GPU) and keeps them in
the user's cache folder, so that finding label issues after a head run, a second head run on the same folder,
or a second search costs no backbone pass at all.

The cache can never serve features of another photo or another model. A bank file holds the features of
one (backbone digest, input size, normalization) and each row is keyed by the file's resolved path, size
and modification time (nanoseconds): a photo replaced or edited gets a new key and is computed again. Banks
are written atomically (temporary file, then `os.replace`) and read with ``np.load(allow_pickle=False)``;
a damaged bank is ignored and rebuilt. The cache is safe to delete; it is kept under `CACHE_BUDGET_BYTES`,
the least recently used banks going first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bit_engine import locations
from bit_engine.errors import BitStudioError
from bit_engine.fileio import atomic_open
from bit_engine.frozen import FrozenModel, backbone_digest, freeze
from bit_engine.progress import CancelFlag, Progress, ProgressCallback
from bit_engine.transforms import ImageDataset, Preprocessing

#: Bump when a bank's layout changes: old banks are then ignored.
CACHE_FORMAT = 1

#: The feature cache keeps at most this many bytes; the least recently used banks go first.
CACHE_BUDGET_BYTES = 2 * 1024**3


def cache_dir() -> Path:
    """Where the cached features live (safe to delete: they are computed again when needed)."""
    return locations.cache_dir() / "features"


def file_key(path: str | os.PathLike) -> str | None:
    """The cache key of one photo: resolved path, size and modification time; None when it cannot be read."""
    try:
        resolved = os.path.realpath(path)
        st = os.stat(resolved)
    except OSError:
        return None
    return f"{resolved}\0{st.st_size}\0{st.st_mtime_ns}"


def _bank_key(digest: str, pre: Preprocessing) -> str:
    # Evaluation inputs depend on the crop (the resize side) and the normalization only: resize, flip and
    # random crop are training augmentations, so head runs with other schedules share a bank.
    parts = [CACHE_FORMAT, digest, int(pre.crop), list(pre.mean), list(pre.std)]
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=20).hexdigest()


def _read_bank(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(keys, features) of a bank; empty arrays when it is missing or damaged (never trusted, rebuilt)."""
    empty = (np.zeros(0, dtype=np.str_), np.zeros((0, 0), dtype=np.float32))
    if not path.is_file():
        return empty
    try:
        with np.load(path, allow_pickle=False) as bank:
            keys, feats = bank["keys"], bank["features"]
        if keys.ndim != 1 or feats.ndim != 2 or len(keys) != len(feats) or feats.dtype != np.float32:
            return empty
        if keys.dtype.kind != "U":
            return empty
        return keys, feats
    except Exception:  # a damaged zip, a truncated file, a crafted one: computed again
        return empty


def _prune(keep: Path, budget: int = CACHE_BUDGET_BYTES) -> None:
    """Delete the least recently used banks beyond `budget` bytes (never `keep`, the one just written)."""
    banks = sorted(keep.parent.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for bank in banks:
        total += bank.stat().st_size
        if total > budget and bank != keep:
            with contextlib.suppress(FileNotFoundError):
                bank.unlink()


class FeatureExtractor:
    """Pooled backbone features of image files for one frozen model and one pre-processing, cached on disk.

    Args:
        model: the model whose backbone runs (left unchanged); its head is not used.
        device: where the backbone runs.
        preprocessing: the run's; features are of the evaluation view (resized to `crop`, no augmentation).
        workers: DataLoader worker processes for decoding.
        cache: read and write the on-disk cache (False: compute every time).
        on_progress: receives "features" `Progress` (images done, cached ones included).

    Attributes:
        computed: images whose features needed a backbone pass so far (the others came from the cache).
        frozen: the prepared backbone, once a pass was needed (None while everything came from the cache).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        preprocessing: Preprocessing,
        *,
        workers: int = 0,
        cache: bool = True,
        on_progress: ProgressCallback | None = None,
    ):
        self.model, self.device, self.pre = model, torch.device(device), preprocessing
        self.workers, self.cache, self.on_progress = workers, cache, on_progress
        self.computed = 0
        self.frozen: FrozenModel | None = None
        self._bank: Path | None = None

    def _bank_path(self) -> Path:
        if self._bank is None:
            self._bank = cache_dir() / f"{_bank_key(backbone_digest(self.model), self.pre)}.npz"
        return self._bank

    def _emit(self, done: int, total: int, message: str = "") -> None:
        if self.on_progress is not None:
            self.on_progress(Progress("features", done, total, message=message))

    @torch.no_grad()
    def extract(
        self,
        paths: Sequence[str | os.PathLike],
        cancel: CancelFlag | None = None,
        offset: int = 0,
        total: int | None = None,
    ) -> torch.Tensor | None:
        """Features of `paths` (N x num_features, float32 on the CPU), in their order; None when cancelled.

        Args:
            paths: image files (absolute, or relative to the working folder).
            cancel: checked between batches.
            offset: images already done by the caller, for the progress count (several sets in one phase).
            total: the phase's total for the progress count (default: offset + len(paths)).
        """
        total = offset + len(paths) if total is None else total
        keys = [file_key(p) for p in paths] if self.cache else [None] * len(paths)
        known: dict[str, np.ndarray] = {}
        if self.cache:
            bank_keys, bank_feats = _read_bank(self._bank_path())
            wanted = {k for k in keys if k is not None}
            known = {k: bank_feats[i] for i, k in enumerate(bank_keys.tolist()) if k in wanted}
        missing = [i for i, k in enumerate(keys) if k is None or k not in known]
        rows: dict[int, torch.Tensor] = {}
        done = len(paths) - len(missing)
        self._emit(offset + done, total)
        if cancel is not None and cancel.is_set():  # also when everything came from the cache
            return None
        if missing:
            computed = self._compute([paths[i] for i in missing], cancel, offset + done, total)
            if computed is None:
                return None
            rows = dict(zip(missing, computed, strict=True))
            self.computed += len(missing)
            if self.cache:
                self._store({keys[i]: rows[i].numpy() for i in missing if keys[i] is not None})
        out = [
            rows[i] if i in rows else torch.from_numpy(np.array(known[keys[i]])) for i in range(len(paths))
        ]
        if not out:
            return torch.zeros(0, 0)
        return torch.stack(out)

    def _compute(self, paths, cancel, done: int, total: int) -> list[torch.Tensor] | None:
        if self.frozen is None:
            # The fastest path that computes float32 eager's features (onnxruntime on the CPU, see frozen.py);
            # the first time for a backbone that builds its graph, a few seconds.
            self._emit(done, total, "preparing the backbone")
            self.frozen = freeze(self.model, self.device, self.pre.crop)
        view = ImageDataset(paths, [0] * len(paths), self.pre, train=False, cache=None)
        loader = DataLoader(view, batch_size=self.frozen.batch_size, num_workers=self.workers)
        was_training = self.model.training
        self.model.eval()
        feats: list[torch.Tensor] = []
        try:
            for x, _, _ in loader:
                if cancel is not None and cancel.is_set():
                    return None
                feats.extend(self.frozen.features(x))
                done += len(x)
                self._emit(done, total)
        finally:
            self.model.train(was_training)
        return feats

    def _store(self, new: dict[str, np.ndarray]) -> None:
        """Add `new` rows to the bank (read again now: another process may have added rows meanwhile)."""
        if not new:
            return
        path = self._bank_path()
        old_keys, old_feats = _read_bank(path)
        width = next(iter(new.values())).shape[0]
        kept = [
            (k, old_feats[i])
            for i, k in enumerate(old_keys.tolist())
            if k not in new and old_feats.shape[1] == width and _still_current(k)
        ]
        keys = np.array([k for k, _ in kept] + list(new), dtype=np.str_)
        feats = np.stack([f for _, f in kept] + list(new.values())).astype(np.float32, copy=False)
        try:
            with atomic_open(path, "wb") as f:
                np.savez(f, keys=keys, features=feats)
            _prune(path)
        except (
            OSError,
            BitStudioError,
        ):  # a full disk or a read-only cache costs the next run a backbone pass, nothing else
            pass


def _still_current(key: str) -> bool:
    """Whether the photo a row was computed from is still the same file (else the row is dropped)."""
    path = key.split("\0", 1)[0]
    return file_key(path) == key
