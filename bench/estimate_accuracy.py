"""Do the time estimates hold? `train.estimate`, then the real `train.fit`, for each strategy and model family.

For each case the estimate is taken first (as the plan page does), then the run it describes is timed from
the end of its scan to its end (the scan is not part of the estimate: the plan page has scanned already).
Prints estimate, actual and estimate / actual; the goal is within +-20% on a quiet machine.

Cases (on a generated folder of 500x375 photos):

- head strategy, EfficientNet-Lite0 and BiT-M-R50x1, the plan's own resolution and schedule;
- a short full fine-tuning, `--steps` steps of `--batch` images at `--size` px, both families.

BiT weights cannot be downloaded here: a random BiT-M-R50x1 is written into a temporary weights cache, so
every path (loading, frozen graph, training) runs as with the real file; speed does not depend on the values.
EfficientNet-Lite0 uses its real weights (they ship in a package).

    python bench/estimate_accuracy.py --images 200 --steps 20 --batch 32 --size 128
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from head_only import make_photos  # a sibling bench script: the same generated photos

MODELS = ("EfficientNet-Lite0", "BiT-M-R50x1")


def _random_bit_weights(name: str) -> None:
    from bit_engine import models, weights_cache

    path = weights_cache.cache_file(name)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = models.get_spec(name)
    torch.manual_seed(0)
    models.save_bit_npz(models.create_model(spec.arch, spec.upstream_classes, zero_head=False), path)


def run_case(config, folder_stats, tmp: Path, label: str) -> tuple[float, float]:
    from bit_engine import train

    num_train, num_val, median = folder_stats
    est = train.estimate(config, num_train, num_val, median)
    marks: dict[str, float] = {}

    def on_progress(p) -> None:
        if p.phase != "scanning":
            marks.setdefault("after_scan", time.perf_counter())

    started = time.perf_counter()
    train.fit(config, on_progress, out=tmp / f"run-{label}")
    actual = time.perf_counter() - marks.get("after_scan", started)
    return est.seconds, actual


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200, help="photos in the generated folder")
    ap.add_argument("--steps", type=int, default=20, help="steps of the short full fine-tuning")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--strategies", nargs="+", default=["head", "full"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["BIT_STUDIO_CACHE_DIR"] = str(tmp / "cache")
        os.environ["BIT_STUDIO_DATA_DIR"] = str(tmp / "data")
        from bit_engine import data, holdout
        from bit_engine.config import TrainConfig

        folder = make_photos(tmp / "photos", args.images)
        report = data.scan(folder)
        split = holdout.split(report, 0.2, 0)
        stats = (len(split.train), len(split.val), report.median_size)
        print(
            f"{args.images} photos 500x375 ({stats[0]} train / {stats[1]} val), {args.threads} threads, "
            f"torch {torch.__version__}; times from the end of the scan"
        )
        print(f"  {'case':52s} {'estimate s':>10s} {'actual s':>9s} {'est/actual':>10s}")
        for model in args.models:
            if model.startswith("BiT"):
                _random_bit_weights(model)
            for strategy in args.strategies:
                if strategy == "head":
                    config = TrainConfig(data_dir=str(folder), model=model, strategy="head", device="cpu")
                    what = f"{model}, head, the plan's schedule"
                else:
                    config = TrainConfig(
                        data_dir=str(folder),
                        model=model,
                        strategy=strategy,
                        steps=args.steps,
                        batch=args.batch,
                        resolution=args.size,
                        device="cpu",
                    )
                    what = f"{model}, {strategy}, {args.steps} x {args.batch} at {args.size} px"
                est, actual = run_case(config, stats, tmp, f"{model}-{strategy}")
                print(f"  {what:52s} {est:10.1f} {actual:9.1f} {est / actual:10.2f}", flush=True)


if __name__ == "__main__":
    main()
