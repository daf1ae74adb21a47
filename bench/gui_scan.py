"""Benchmark: does the window stay responsive while it scans a large folder, and what does the GUI cost?

Writes N small JPEG files (default 100,000, in 10 class folders; a few dozen templates, each file made unique
by trailing bytes, which JPEG readers ignore) into a temporary folder. Then, in this one process:

1. the reference: `bit_engine.data.scan` alone, timed;
2. the same folder opened in BiT Studio's window (offscreen), with a 10 ms QTimer recording how late each of
   its ticks comes: a late tick is a moment the window could not repaint or react to a click.

Prints both scan times, their ratio, and the timer's lateness (median, 99th percentile, longest). The scan
itself runs in a worker thread; what can still delay the GUI thread is Python's GIL, held by the scanning
thread between its switches (every 5 ms by default), and the report's display at the end.

    .venv/bin/python bench/gui_scan.py               # 100,000 files
    .venv/bin/python bench/gui_scan.py --n 20000
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_folder(root: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    templates = []
    for _ in range(50):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=70)
        templates.append(buf.getvalue())
    for i in range(n):
        folder = root / f"class_{i % 10}"
        folder.mkdir(exist_ok=True)
        (folder / f"img_{i:06d}.jpg").write_bytes(templates[i % len(templates)] + str(i).encode())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory(prefix="bit-gui-scan-") as tmp:
        tmp = Path(tmp)
        # The app's own folders (settings, recent folders, sample data) go to the temporary folder too.
        os.environ["BIT_STUDIO_CONFIG_DIR"] = str(tmp / "config")
        os.environ["BIT_STUDIO_DATA_DIR"] = str(tmp / "data")
        os.environ["BIT_STUDIO_CACHE_DIR"] = str(tmp / "cache")
        photos = tmp / "photos"
        photos.mkdir()
        print(f"writing {args.n:,} files…", flush=True)
        make_folder(photos, args.n)

        from bit_engine import data

        started = time.perf_counter()
        report = data.scan(photos)
        bare = time.perf_counter() - started
        print(f"reference, data.scan alone: {bare:.1f} s for {report.num_images:,} photos", flush=True)

        from PySide6.QtCore import QTimer

        from app.main import create_application

        app = create_application()
        from app.main_window import MainWindow

        window = MainWindow()
        window.show()
        page = window.pages["data"]
        late: list[float] = []
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            late.append(now - last[0] - 0.010)
            last[0] = now

        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(tick)
        timer.start()
        started = time.perf_counter()
        window.open_folder(str(photos))
        while page.is_scanning():
            app.processEvents()
            time.sleep(0.001)
        in_window = time.perf_counter() - started
        for _ in range(50):  # the report's display, thumbnails requested by the first paint
            app.processEvents()
            time.sleep(0.01)
        timer.stop()
        window.shutdown()
        late.sort()
        ms = [x * 1000 for x in late]
        print(
            f"in the window: {in_window:.1f} s ({in_window / bare:.2f}x the reference); a 10 ms timer was late by "
            f"median {statistics.median(ms):.0f} ms, 99th percentile {ms[int(len(ms) * 0.99)]:.0f} ms, "
            f"longest {ms[-1]:.0f} ms over {len(ms):,} ticks; {os.cpu_count()} CPUs"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
