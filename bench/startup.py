"""Benchmark: time from process start to the first painted BiT Studio window, and what it had imported.

Each run starts a fresh Python process (`python bench/startup.py --child`) that builds the window exactly as
`bit-studio` does (`app.main.create_application`, `MainWindow`, `show`) and reports the moment the window's
first paint event arrives. The time counts from just before the parent starts the child, so interpreter
start-up and every import are in it. It also reports whether torch had been imported by then: it must not
be, since importing it alone takes longer than the whole goal (under 1.5 s on a 2-core machine).

    .venv/bin/python bench/startup.py              # 5 runs, offscreen
    .venv/bin/python bench/startup.py --runs 10
    QT_QPA_PLATFORM=xcb .venv/bin/python bench/startup.py   # on a real display
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(started: float) -> None:
    """Open the window, wait for its first paint, print the figures as JSON, quit."""
    from PySide6.QtCore import QEvent, QObject, QTimer

    from app.main import create_application

    app = create_application()
    from app.main_window import MainWindow

    window = MainWindow()
    figures = {}

    class FirstPaint(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint and "paint" not in figures:
                figures["paint"] = time.time() - started
                figures["torch_imported"] = "torch" in sys.modules
                # The paint is delivered; quit once this event loop turn is over.
                QTimer.singleShot(0, app.quit)
            return False

    spy = FirstPaint()
    window.installEventFilter(spy)
    window.show()
    figures["shown"] = time.time() - started
    QTimer.singleShot(10_000, app.quit)  # never hang a benchmark
    app.exec()
    window.shutdown()
    print(json.dumps(figures))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return 0

    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    # The first run also fills the bytecode caches; it is reported apart, as a first start after install.
    results = []
    for i in range(args.runs + 1):
        started = time.time()
        out = subprocess.run(
            [sys.executable, __file__, "--child", repr(started)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            print(out.stdout + out.stderr, file=sys.stderr)
            return 1
        line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
        figures = json.loads(line)
        label = "warm-up" if i == 0 else f"run {i}"
        print(
            f"{label:>8}: first paint {figures['paint']:.2f} s (show() returned at {figures['shown']:.2f} s), "
            f"torch imported: {'yes' if figures['torch_imported'] else 'no'}"
        )
        if i:
            results.append(figures)
    paints = [r["paint"] for r in results]
    print(
        f"first paint over {len(paints)} runs: median {statistics.median(paints):.2f} s, "
        f"min {min(paints):.2f} s, max {max(paints):.2f} s (goal: under 1.5 s); "
        f"platform {env['QT_QPA_PLATFORM']}, {os.cpu_count()} CPUs"
    )
    return 0 if not any(r["torch_imported"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
