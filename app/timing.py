"""Training-time estimates timed in a child process, so that they can be stopped at once.

`bit_engine.train.estimate` times a few real training steps: seconds for a small model on a GPU, minutes for
a large one on a busy CPU, with no way to interrupt it half-way. Run in a thread of the window's process it
would hold the window open on close until it finished, and its first steps stall the GUI thread (see the
training note in the README). In a spawned child process it competes for the cores only, and a change of
settings or a closing window simply terminates it.

The child is a plain process, not a pool's worker: a pool's workers are daemonic and may not start processes,
and the head strategy's estimate times the feature pass with the decoding workers the run will have.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
from collections.abc import Callable

from bit_engine.machine import stop_with_workers
from bit_engine.progress import OperationCancelled


def estimate_in_child(spec, config, num_train: int, num_val: int, median_size):
    """`train.estimate` in a fresh process; `spec` registers models known to the parent only (tests)."""
    from bit_engine import models, train

    models.KNOWN_MODELS.setdefault(spec.name, spec)
    return train.estimate(config, num_train, num_val, median_size)


def _time_each(connection, spec, configs, num_train: int, num_val: int, median_size) -> None:
    """The child: time each config in order, sending (strategy, Estimate or exception) after each."""
    from bit_engine.machine import fork_worker_processes, lead_process_group

    lead_process_group()  # a cancel stops this process and its decoding workers together
    fork_worker_processes()  # the run's decoding workers start as the run's will
    for config in configs:
        try:
            result = estimate_in_child(spec, config, num_train, num_val, median_size)
        except Exception as exc:
            try:
                pickle.loads(pickle.dumps(exc))
                result = exc
            except Exception:  # an exception that cannot cross: its words do
                result = RuntimeError(f"{type(exc).__name__}: {exc}")
        connection.send((config.strategy, result))
    connection.close()


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
    receiving, sending = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_time_each,
        args=(sending, spec, configs, num_train, num_val, median_size),
        name="bit-studio-timing",
    )
    child.start()
    sending.close()  # the child holds its end: when it ends, receiving sees the end of the pipe
    try:
        for i in range(len(configs)):
            while not receiving.poll(0.1):
                if cancel.is_set():
                    raise OperationCancelled("The time estimate was stopped.")
            try:
                strategy, result = receiving.recv()
            except EOFError:  # the child ended without a word (killed, out of memory)
                for config in configs[i:]:
                    on_result(config.strategy, "Could not time it: the timing process ended unexpectedly.")
                return
            if isinstance(result, BaseException):  # a failed timing must not hide the plan: say why instead
                result = f"Could not time it: {user_message(result)}"
            on_result(strategy, result)
    finally:
        if child.is_alive():
            with contextlib.suppress(ProcessLookupError):
                stop_with_workers(child.pid)
        child.join(10)
        receiving.close()
