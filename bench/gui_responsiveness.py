"""Does the window stay responsive while a model trains? A 10 ms timer measures its own lateness.

The Train step runs a real training run on generated photos, once with training in a child process (how the
app trains) and once, for comparison, with the same run in a worker thread of the window's process. A
`LatencyProbe` (a precise 10 ms QTimer on the GUI thread) records how late each of its ticks comes: a late
tick is a moment the window could not repaint or react to a click. Printed per run: the longest stall, the
99th percentile, and the count of stalls over 50 ms (the goal: none, longest <= 50 ms after start-up).

"After start-up" begins at the first progress report the window shows, once the training process (or
thread) is up; the figures from the Start click on are printed too. By default torch is imported before the
measurement, as it is in the window once the Plan step has estimated the run's time; `--cold` leaves that
import in the measured period (it happens on the training thread, and holds the GIL while it runs).

    python bench/gui_responsiveness.py                          # head and full, child process vs thread
    python bench/gui_responsiveness.py --strategies head --steps 40 --images 24 --repeat 2

The model is EfficientNet-Lite0, whose weights ship in a Python package (no download). On a shared machine
other processes steal time from the GUI thread too: compare the two modes of one invocation, not figures
taken at different times.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QObject, Qt, QTimer

#: A stall longer than this is one a user notices (a frame and a half at 30 fps; the goal's bound).
STALL_MS = 50.0


@dataclass(frozen=True)
class Stalls:
    """The lateness of a probe's ticks over a period (milliseconds)."""

    ticks: int
    longest: float
    p99: float
    over: int  # ticks later than STALL_MS

    def __str__(self) -> str:
        return (
            f"longest {self.longest:6.1f} ms   p99 {self.p99:5.1f} ms   "
            f"stalls > {STALL_MS:.0f} ms: {self.over:3d}   ({self.ticks} ticks)"
        )


def summarize(lateness_ms: list[float], threshold_ms: float = STALL_MS) -> Stalls:
    """Longest, 99th percentile and count over `threshold_ms` of a list of tick latenesses."""
    if not lateness_ms:
        return Stalls(0, 0.0, 0.0, 0)
    ordered = sorted(lateness_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Stalls(len(ordered), ordered[-1], p99, sum(1 for x in ordered if x > threshold_ms))


class LatencyProbe(QObject):
    """A precise timer on the GUI thread that records how late each tick arrives.

    Lateness is the time between two ticks minus the interval: 0 when the event loop was free, the length of
    the stall when something held the GUI thread.

    Args:
        interval_ms: the timer's interval.
    """

    def __init__(self, interval_ms: int = 10, parent: QObject | None = None):
        super().__init__(parent)
        self.interval_s = interval_ms / 1000
        self.samples: list[tuple[float, float]] = []  # (time of the tick, lateness in ms)
        self._last: float | None = None
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._on_tick)

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _on_tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.samples.append((now, max(0.0, (now - self._last - self.interval_s) * 1000)))
        self._last = now

    def stalls(self, since: float = 0.0, until: float = float("inf")) -> Stalls:
        """The figures for ticks between `since` and `until` (time.perf_counter() values)."""
        return summarize([late for t, late in self.samples if since <= t <= until])


# ----------------------------------------------------------------------------------------------------------
# One run through the Train step


def _run_once(data_dir: Path, strategy: str, steps: int, isolate: bool, timeout_s: float) -> dict:
    """Train once through the Train step while the probe runs; the stalls from Start and after start-up."""
    from PySide6.QtWidgets import QApplication

    from app.pages.train_page import TrainPage
    from app.state import AppState
    from bit_engine.config import TrainConfig

    app = QApplication.instance()
    state = AppState()
    page = TrainPage(state, isolate=isolate)
    page.resize(1100, 720)
    page.show()
    state.set_config(
        TrainConfig(
            data_dir=str(data_dir),
            model="EfficientNet-Lite0",
            strategy=strategy,
            steps=steps,
            batch=16,
            resolution=96,
            device="cpu",
            evaluations=4,
            workers=0,
        )
    )
    probe = LatencyProbe()
    first_progress: list[float] = []
    phases: list[tuple[float, str]] = []  # when the window first showed each phase

    def on_progress(p) -> None:
        now = time.perf_counter()
        if p.phase != "starting" and not first_progress:
            first_progress.append(now)
        if not phases or phases[-1][1] != p.phase:
            phases.append((now, p.phase))

    page.progressShown.connect(on_progress)
    for _ in range(20):  # let the window settle (first paint, fonts) before measuring
        app.processEvents()
        time.sleep(0.01)
    probe.start()
    started = time.perf_counter()
    page.start_button.click()
    deadline = started + timeout_s
    while page.is_training() and time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.001)
    ended = time.perf_counter()
    probe.stop()
    finished = not page.is_training()
    page.shutdown()
    page.close()
    page.deleteLater()
    app.processEvents()
    return {
        "finished": finished,
        "seconds": ended - started,
        "from_start": probe.stalls(started, ended),
        "after_startup": probe.stalls(first_progress[0], ended) if first_progress else None,
        "startup_s": (first_progress[0] - started) if first_progress else None,
        "worst": _worst(probe, phases, started),
    }


def _worst(probe: LatencyProbe, phases: list[tuple[float, str]], started: float, n: int = 3) -> str:
    """The `n` longest stalls, each with its time after Start and the phase the window showed then."""
    worst = sorted(probe.samples, key=lambda s: s[1], reverse=True)[:n]
    parts = []
    for t, late in sorted(worst):
        phase = next((name for when, name in reversed(phases) if when <= t), "start")
        parts.append(f"{late:.0f} ms at {t - started:.1f} s ({phase})")
    return ", ".join(parts)


def _idle(seconds: float) -> Stalls:
    """The same probe with the window idle: what the machine itself costs (other processes, the scheduler)."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    probe = LatencyProbe()
    probe.start()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)
    probe.stop()
    return probe.stalls()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", default="head,full", help="comma-separated: head, full")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--images", type=int, default=40, help="generated photos per class (4 classes)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run at most")
    parser.add_argument("--repeat", type=int, default=1, help="runs per strategy and mode, interleaved")
    parser.add_argument("--cold", action="store_true", help="do not import torch before measuring")
    parser.add_argument(
        "--idle", type=float, default=20.0, help="seconds of an idle baseline first (0: none)"
    )
    args = parser.parse_args(argv)

    from app.main import create_application
    from bit_engine.demo import make_demo_dataset

    create_application([sys.argv[0]])
    if not args.cold:
        import bit_engine.launcher  # noqa: F401  (torch, as the Plan step has loaded it by the time of Start)
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; Qt platform {os.environ['QT_QPA_PLATFORM']}"
    )
    with tempfile.TemporaryDirectory(prefix="bit-studio-bench-") as tmp:
        os.environ["BIT_STUDIO_DATA_DIR"] = str(Path(tmp) / "data")  # runs land here, not in the user's runs
        data_dir = make_demo_dataset(Path(tmp) / "photos", per_class=args.images, size=96)
        if args.idle > 0:
            load = "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
            print(f"\nidle window, {args.idle:.0f} s (load average {load})")
            print(f"  no training:               {_idle(args.idle)}")
        for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
            for _ in range(args.repeat):
                for isolate in (True, False):
                    _report(
                        strategy, isolate, _run_once(data_dir, strategy, args.steps, isolate, args.timeout)
                    )
    return 0


def _report(strategy: str, isolate: bool, result: dict) -> None:
    where = "child process" if isolate else "worker thread"
    status = "" if result["finished"] else "  (did not finish: timed out)"
    load = "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"\n{strategy} in a {where}: {result['seconds']:.1f} s{status}   (load average {load})")
    print(f"  from Start:                {result['from_start']}")
    if result["after_startup"] is not None:
        print(f"  after start-up ({result['startup_s']:4.1f} s):  {result['after_startup']}")
    print(f"  longest stalls: {result['worst']}")


if __name__ == "__main__":
    sys.exit(main())
