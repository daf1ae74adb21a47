"""Does the window stay responsive while the How it works step computes its demonstrations?

The step runs `bit_engine.explain.explain` in a worker thread of the window's process (reading 34 photos, one
convolution over a batch of 32, a histogram of a 409,600-weight kernel). A 10 ms `LatencyProbe` on the GUI
thread (see gui_responsiveness.py) records how late its ticks come while it runs; printed beside it, the same
probe over the same time with nothing running, the reference for what the machine itself costs.

By default torch is imported before the measurement, as it is in the window once a scan has let the Plan step
load the engine; `--cold` leaves that import in the measured period (on the worker thread, holding the GIL).

    python bench/gui_how_it_works.py [--cold] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gui_responsiveness import LatencyProbe


def _wait(app, condition, timeout_s: float = 300.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the step did not finish in time")
        app.processEvents()
        time.sleep(0.002)


def _idle(app, seconds: float):
    probe = LatencyProbe()
    probe.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.002)
    probe.stop()
    return probe.stalls()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="leave torch's import in the measured period")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for key in ("CACHE", "DATA", "CONFIG", "LOG"):
            os.environ[f"BIT_STUDIO_{key}_DIR"] = str(Path(tmp, key.lower()))
        from PySide6.QtWidgets import QApplication

        from app.pages.how_it_works_page import HowItWorksPage
        from app.state import AppState
        from bit_engine import data
        from bit_engine.demo import make_demo_dataset

        app = QApplication.instance() or QApplication([])
        report = data.scan(make_demo_dataset(Path(tmp, "shapes"), per_class=60))
        if not args.cold:
            import torch  # noqa: F401

        for run in range(args.repeat):
            state = AppState()
            page = HowItWorksPage(state)
            page.resize(1190, 860)
            state.report = report  # set quietly: the page computes when shown, under the probe
            probe = LatencyProbe()
            probe.start()
            started = time.monotonic()
            page.show()
            _wait(app, lambda page=page: page.explanation is not None and not page.is_busy())
            seconds = time.monotonic() - started
            probe.stop()
            stalls = probe.stalls()
            page.shutdown()
            page.deleteLater()
            label = "cold (torch imported in the worker)" if args.cold and run == 0 else "warm"
            print(f"run {run + 1} {label:36s} {seconds:5.2f} s   {stalls}")
        print(f"{'idle, same length':43s}          {_idle(app, seconds)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
