"""Does the window stay responsive while the Data step looks for photos in the wrong folder?

The Data step runs `bit_engine.label_issues.find_label_issues` in a worker thread of the window's process:
EfficientNet-Lite0's features of every photo (onnxruntime), then five folds of a linear head (L-BFGS in
torch). A 10 ms `LatencyProbe` on the GUI thread (see gui_responsiveness.py) records how late its ticks come
while it runs, for the first search (every feature computed) and a second one (every feature from the cache,
as after a head run); printed beside them, the same probe over the same time with nothing running, the
reference for what the machine itself costs.

The folder is the sample data's shapes (`--per-class` photos of each of four classes) with 5% of the photos
moved into another class's folder; the found/planted counts are printed too.

    python bench/gui_label_issues.py [--per-class 60]

Measured on the shared 2-core test machine (busy with other work), 240 photos, 12 planted, until every row
is listed: first search 29.9 s, longest stall 486 ms, 9 stalls over 50 ms in 2,494 ticks; second search 2.0 s,
longest stall 23 ms, none over 50 ms (idle over the same time: longest 11 ms). Both found 12 photos, 11 of
them planted. Later, on the same machine when quiet (2026-11-24, four runs, after the faster feature pass):
first search 5.7-7.5 s, longest stall 137-219 ms, 4-5 stalls over 50 ms; second search 0.6-1.2 s, longest
stall under 21 ms. A probe of when the first search's stalls come (progress phases beside the stalls) put them
before the scan starts (the search's modules, onnxruntime among them, imported on the worker thread), early
in the features phase (the backbone exported to ONNX), and one as the list appears; the cached search has
none of these. Building every row in one go froze the window for about 15 ms a row, so rows are built a few
per turn of the event loop.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gui_how_it_works import _idle, _wait
from bench.gui_responsiveness import LatencyProbe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for key in ("CACHE", "DATA", "CONFIG", "LOG"):
            os.environ[f"BIT_STUDIO_{key}_DIR"] = str(Path(tmp, key.lower()))
        from PySide6.QtWidgets import QApplication

        from app.pages.label_issues_panel import LabelIssuesPanel
        from app.state import AppState
        from bit_engine import data
        from bit_engine.demo import DEMO_CLASSES, make_demo_dataset

        app = QApplication.instance() or QApplication([])
        folder = make_demo_dataset(Path(tmp, "shapes"), per_class=args.per_class)
        rng = random.Random(0)
        planted = set()
        photos = sorted(folder.glob("*/*.jpg"))
        for photo in rng.sample(photos, len(photos) // 20):
            wrong = rng.choice([c for c in DEMO_CLASSES if c != photo.parent.name])
            photo.rename(folder / wrong / photo.name)
            planted.add(f"{wrong}/{photo.name}")
        report = data.scan(folder)
        import torch  # noqa: F401  (as in the window once the Plan step has loaded the engine)

        state = AppState()
        panel = LabelIssuesPanel(state)
        panel.resize(1000, 500)
        panel.show()
        panel.set_report(report)
        seconds = 0.0
        for label in ("first search (features computed)", "second search (features cached)"):
            probe = LatencyProbe()
            probe.start()
            started = time.monotonic()
            panel.find_issues()
            # Until every row is listed: the rows are built on the GUI thread, a few per turn of the loop.
            _wait(
                app,
                lambda: (
                    not panel.is_searching() and len(panel.issue_rows()) == len(panel.issue_report.issues)
                ),
            )
            seconds = time.monotonic() - started
            probe.stop()
            found = {i.path for i in panel.issue_report.issues}
            print(
                f"{label:36s} {seconds:5.2f} s   {probe.stalls()}   "
                f"found {len(found)}, {len(found & planted)} of the {len(planted)} planted"
            )
        panel.shutdown()
        print(f"{'idle, same length':36s}          {_idle(app, seconds)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
