"""Set-up callables for training children started by GUI tests (picklable, no Qt: the child imports this).

A spawned child starts from a fresh interpreter: the `tiny_bit` fixture's entry in the model table does not
reach it, so the Train step passes one of these as the engine's `setup`, run first in the child.
"""

from __future__ import annotations

import time


def register_model(spec) -> None:
    """The test's tiny model, in the child's model table."""
    import torch

    from bit_engine import models

    models.KNOWN_MODELS[spec.name] = spec
    # The test machine is shared: one thread does a tiny model's work with no time lost waiting for a core.
    torch.set_num_threads(1)


def register_model_slowly(spec, seconds_per_step: float) -> None:
    """As `register_model`, and every optimizer step takes `seconds_per_step` longer, so that a test can act
    (cancel, kill, close the window) while the run is in the middle of training."""
    from bit_engine import train

    register_model(spec)
    original = train.mixup_lambda

    def slow(seed, step, alpha):
        time.sleep(seconds_per_step)
        return original(seed, step, alpha)

    train.mixup_lambda = slow


def register_model_and_hang(spec, step: int) -> None:
    """As `register_model`, and optimizer step `step` never ends (a stuck driver, a deadlock): the process lives
    on but never reaches the next point where it would notice a polite stop."""
    from bit_engine import train

    register_model(spec)
    original = train.mixup_lambda

    def hang(seed, at, alpha):
        if at == step:
            time.sleep(3600)
        return original(seed, at, alpha)

    train.mixup_lambda = hang
