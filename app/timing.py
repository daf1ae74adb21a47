"""Training-time estimates timed in a child process, so that they can be stopped at once.

`bit_engine.train.estimate` times a few real training steps: seconds for a small model on a GPU, minutes for
a large one on a busy CPU, with no way to interrupt it half-way. Run in a thread of the window's process it
would hold the window open on close until it finished, and its first steps stall the GUI thread (see the
training note in the README). In a spawned child process it competes for the cores only, and a change of
settings or a closing window simply terminates it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable

from bit_engine.progress import OperationCancelled


def estimate_in_child(spec, config, num_train: int, num_val: int, median_size):
    """`train.estimate` in a fresh process; `spec` registers models known to the parent only (tests)."""
    from bit_engine import models, train

    models.KNOWN_MODELS.setdefault(spec.name, spec)
    return train.estimate(config, num_train, num_val, median_size)


def time_strategies(
    spec,
    configs: list,
    num_train: int,
    num_val: int,
    median_size,
    on_result: Callable[[str, object], None],
    cancel,
) -> None:
    """Time each config (one per strategy) in one child process, in order; `on_result(strategy, Estimate or
    message)` after each. Raises OperationCancelled when `cancel` is set (the child is terminated)."""
    from app.workers import user_message

    ctx = multiprocessing.get_context("spawn")  # fork would copy a Qt process with its threads
    with ctx.Pool(1) as pool:  # leaving the block terminates the child, finished or not
        for config in configs:
            pending = pool.apply_async(estimate_in_child, (spec, config, num_train, num_val, median_size))
            while not pending.ready():
                if cancel.is_set():
                    raise OperationCancelled("The time estimate was stopped.")
                pending.wait(0.1)
            try:
                on_result(config.strategy, pending.get())
            except Exception as exc:  # a failed timing must not hide the plan: say why in its place
                on_result(config.strategy, f"Could not time it: {user_message(exc)}")
