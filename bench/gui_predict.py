"""The Predict step under a drop of many photos: time to the last row shown, and how long the window froze.

One run, same photos, same exported model, same machine:

- ``window``: BiT Studio's main window (offscreen), Predict step; the photos are dropped on its drop area
  (synthesised drag-enter + drop events, as a file manager sends them). Timed from the drop to the moment the
  last row is in the list, while a 10 ms QTimer on the GUI thread records its longest wait between two ticks
  (the longest time the window could not answer).
- ``engine``: `bit_engine.inference.Predictor` alone on the same files (decode, resize, onnxruntime; batches
  of the same size as the page's), no Qt: the floor the window is compared against.

The photos are camera-sized JPEGs (640x480) of the demo shapes; the model is EfficientNet-Lite0's head
trained on the demo dataset unless ``--model`` names an exported .onnx file.

    QT_QPA_PLATFORM=offscreen python bench/gui_predict.py --photos 100
    QT_QPA_PLATFORM=offscreen python bench/gui_predict.py --model run/model.onnx --photos 100 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_photos(folder: Path, n: int) -> list[Path]:
    from bit_engine.demo import DEMO_CLASSES, draw_sample

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    paths = []
    for i in range(n):
        path = folder / f"photo_{i:03d}.jpg"
        draw_sample(DEMO_CLASSES[i % len(DEMO_CLASSES)], rng, 480).resize((640, 480)).save(path, quality=90)
        paths.append(path)
    return paths


def train_demo_model(root: Path) -> Path:
    from bit_engine.config import TrainConfig
    from bit_engine.demo import make_demo_dataset
    from bit_engine.run_export import export_run
    from bit_engine.train import fit

    folder = make_demo_dataset(root / "shapes", per_class=30)
    config = TrainConfig(
        data_dir=str(folder), model="EfficientNet-Lite0", strategy="head", steps=100, batch=64, device="cpu"
    )
    run = fit(config, out=root / "run").run_dir
    return Path(export_run(run).export.path)


def time_window(model: Path, photos: list[Path]) -> tuple[float, float, float]:
    """(seconds to the first row, seconds to the last row, longest GUI-thread stall in seconds)."""
    from PySide6.QtCore import QEventLoop, QMimeData, QPointF, Qt, QTimer, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    from app import MainWindow

    app = QApplication.instance() or QApplication([])
    window = MainWindow()
    window.resize(1200, 800)
    window.show()
    page = window.pages["predict"]
    try:
        loop = QEventLoop()
        page.modelOpened.connect(loop.quit)
        page.open_model(str(model))
        loop.exec()
        window.go_to("predict")
        app.processEvents()

        rows: list[float] = []
        page.list.model().rowsInserted.connect(lambda *_: rows.append(time.perf_counter()))
        longest, last = [0.0], [0.0]

        def tick() -> None:
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last[0])
            last[0] = now

        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(tick)
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(p)) for p in photos])
        centre = QPointF(page.drop_area.rect().center())
        buttons, modifiers = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
        enter = QDragEnterEvent(centre.toPoint(), Qt.DropAction.CopyAction, mime, buttons, modifiers)
        QApplication.sendEvent(page.drop_area, enter)
        drop = QDropEvent(centre, Qt.DropAction.CopyAction, mime, buttons, modifiers)
        finished = QEventLoop()
        page.predictionsFinished.connect(finished.quit)
        last[0] = started = time.perf_counter()
        timer.start()
        QApplication.sendEvent(page.drop_area, drop)
        finished.exec()
        timer.stop()
        if page.list.model().rowCount() != len(photos):
            raise SystemExit(f"{page.list.model().rowCount()} rows for {len(photos)} photos")
        return rows[0] - started, rows[-1] - started, longest[0]
    finally:
        window.shutdown()
        window.close()
        window.deleteLater()


def time_engine(model: Path, photos: list[Path], batch: int) -> float:
    from bit_engine.inference import Predictor

    predictor = Predictor(model, threads=max(1, (os.cpu_count() or 2) - 1))
    started = time.perf_counter()
    predictor.predict_many(photos, batch_size=batch, top_k=3)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an exported .onnx file (default: train the demo head)")
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="alternate window and engine this many times")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    import app  # noqa: F401  (the binding work-arounds, before any Qt call)
    from app.pages.predict_page import BATCH

    with tempfile.TemporaryDirectory(prefix="bit-studio-bench-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("BIT_STUDIO_CONFIG_DIR", str(root / "config"))
        os.environ.setdefault("BIT_STUDIO_LOG_DIR", str(root / "log"))
        model = args.model or train_demo_model(root)
        photos = make_photos(root / "photos", args.photos)
        window, engine = [], []
        for _ in range(args.repeat):
            window.append(time_window(model, photos))
            engine.append(time_engine(model, photos, BATCH))
        first = statistics.median(w[0] for w in window)
        last = statistics.median(w[1] for w in window)
        stall = max(w[2] for w in window)
        floor = statistics.median(engine)
        print(
            f"{args.photos} photos (640x480 JPEG), model {model.name}, {os.cpu_count()} CPUs, {args.repeat} run(s)"
        )
        print(f"  window: first row {first:.2f} s, last row {last:.2f} s after the drop")
        print(f"  engine alone (Predictor.predict_many, batch {BATCH}): {floor:.2f} s")
        print(f"  window / engine: {last / floor:.2f}x")
        print(f"  longest GUI-thread stall (10 ms timer): {stall * 1000:.0f} ms")


if __name__ == "__main__":
    main()
