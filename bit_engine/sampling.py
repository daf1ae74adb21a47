"""What every optimizer step sees, as a pure function of (seed, step): the sample order and mixup.

Every input a run sees derives from the seed and the step: sample order from per-epoch permutations, mixup's
lambda from (seed, step) and its partners from (seed, step, position in the global batch). A resume from a
checkpoint therefore continues exactly where the run stopped, and data-parallel ranks split a step without
changing it (see distributed.py for why this is not torch's DistributedSampler).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class SampleStream:
    """Consecutive per-epoch permutations of the training set; step `s` takes the next `batch` of them.

    A global batch may run over the end of an epoch into the next one: every sample counts once per epoch
    and no sample is dropped, however the batch divides the dataset.
    """

    def __init__(self, num_samples: int, batch: int, seed: int):
        self.n, self.batch, self.seed = num_samples, batch, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def keys(self, step: int) -> list[tuple[int, int]]:
        """(sample index, epoch) for every image of optimizer step `step`."""
        index, epochs = self.indices(step)
        return list(zip(index.tolist(), epochs.tolist(), strict=True))

    def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """`keys(step)` as two arrays, sample indices and epochs (what a step over cached features needs)."""
        pos = np.arange(step * self.batch, (step + 1) * self.batch)
        epochs, within = np.divmod(pos, self.n)
        index = np.empty_like(pos)
        for epoch in np.unique(epochs).tolist():  # a batch spans a few epochs at most: one lookup each
            at = epochs == epoch
            index[at] = self._perm(epoch)[within[at]]
        return index, epochs

    def epoch_at(self, step: int) -> float:
        return step * self.batch / self.n


def rank_share(keys: list, rank: int, world_size: int) -> list:
    """The contiguous slice of a global batch that `rank` computes."""
    n = len(keys)
    return keys[rank * n // world_size : (rank + 1) * n // world_size]


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class StepBatches:
    """Batch sampler for the DataLoader: this rank's micro-batches of steps `start` .. `stop - 1`."""

    def __init__(
        self, stream: SampleStream, start: int, stop: int, load_batch: int, rank: int = 0, world_size: int = 1
    ):
        self.stream, self.start, self.stop, self.load_batch = stream, start, stop, load_batch
        self.rank, self.world_size = rank, world_size

    def per_step(self, step: int) -> list[list[tuple[int, int]]]:
        share = rank_share(self.stream.keys(step), self.rank, self.world_size)
        return chunks(share, self.load_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield from self.per_step(step)


def mixup_lambda(seed: int, step: int, alpha: float) -> float:
    """Mixup's Beta(alpha, alpha) draw for optimizer step `step` (1.0 means no mixing)."""
    if alpha <= 0:
        return 1.0
    return float(np.random.default_rng([seed, step, 7]).beta(alpha, alpha))


def mixup_permutation(seed: int, step: int, part: int, n: int) -> torch.Tensor:
    """Mixup partners within a micro-batch of `n` images of step `step`.

    `part` says which micro-batch: the position of its first image in the global batch. Keyed by that and not
    by rank, one process and several pair the same images whenever their micro-batches start at the same
    places (a micro-batch size that divides each rank's share), and the runs stay equal with mixup on.
    """
    g = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, step, part, 11]).generate_state(1)[0])
    )
    return torch.randperm(n, generator=g)
