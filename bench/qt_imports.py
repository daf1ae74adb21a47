"""Benchmark: what PySide6's import hook costs the engine's imports in the window's process, with and without
`app.pyside_imports.install()`.

Each measurement is a fresh Python process (`--child MODE`) that imports what the window's steps load after
Qt is up (torch, torchvision, onnx, onnxruntime and the engine's feature, label-check and explanation
modules) and prints the seconds it took. Modes, alternated within each round so that a busy machine
weighs on all alike:

- `no-qt`: PySide6 not imported, the reference (a command-line run);
- `qt`: PySide6.QtWidgets imported first, as in the window, with PySide6's own hook;
- `qt+install`: the same with `app.pyside_imports.install()` in place, as the window does.

    .venv/bin/python bench/qt_imports.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("no-qt", "qt", "qt+install")


def child(mode: str) -> None:
    if mode != "no-qt":
        import PySide6.QtWidgets  # noqa: F401

        if mode == "qt+install":
            from app import pyside_imports

            assert pyside_imports.install(), "this PySide6 has no import hook to replace"
    started = time.perf_counter()
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    from bit_engine import explain, features, label_issues  # noqa: F401

    print(f"{time.perf_counter() - started:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(ROOT))
        child(args.child)
        return 0
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            times[mode].append(float(out.stdout.strip().splitlines()[-1]))
    reference = statistics.median(times["no-qt"])
    print(f"imports of torch, torchvision, onnx, onnxruntime and the engine's modules ({args.rounds} rounds)")
    for mode in MODES:
        median = statistics.median(times[mode])
        print(
            f"  {mode:11s} median {median:5.2f} s   x{median / reference:4.2f} of no-qt   runs {times[mode]}"
        )
    gain = statistics.median(times["qt"]) / statistics.median(times["qt+install"])
    print(f"install() makes them {gain:.2f}x faster in the window's process")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
