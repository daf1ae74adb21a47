"""The head strategy end to end on generated 500x375 photos: yesterday's forward path against frozen.py's.

Both contestants run `bit_engine.train.fit` with strategy "head" on the same folder, model, plan and thread
count (the folder is scanned by each run too, but the scan's time is left out of the figures: it is the same
for both and not what this measures). What differs is the forward pass over the frozen backbone:

- ``before``: the head strategy as it was: the HyperRule's resolution (384 px for these photos), PyTorch
  eager with Weight Standardization recomputed on every call, batches of 16, head steps on every thread;
- ``now``: the plan's resolution for the head strategy (224 px, see hyperrule.py), the forward path
  `frozen.freeze` picks (on a CPU: onnxruntime on the cached WS-folded backbone graph), head steps on one
  thread.

`--same-resolution` runs both at the plan's resolution, to separate the forward path's gain from the
resolution's.

The first frozen.py run builds the cached graph and is reported apart ("cold"), then a second run on the same
photos, which finds their features in the feature cache (features.py). After them the contestants, each with
an empty feature cache so that every feature is computed, alternate, so that load from other processes hits
both alike, and the medians are compared.

    python bench/head_only.py --images 400 --model EfficientNet-Lite0 --repeats 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bit_engine import features, frozen, train, trainers
from bit_engine.config import TrainConfig
from bit_engine.demo import DEMO_CLASSES, draw_sample


def make_photos(root: Path, images: int, size=(500, 375), seed: int = 0) -> Path:
    """`images` JPEG photos of the demo's four classes, at `size` (width, height)."""
    rng = random.Random(seed)
    for i in range(images):
        kind = DEMO_CLASSES[i % len(DEMO_CLASSES)]
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        image = draw_sample(kind, rng, max(size)).resize(size)
        image.save(folder / f"{kind}_{i:04d}.jpg", quality=90)
    return root


def legacy_freeze(model, device, input_size, **_):
    """The forward pass as it was: eager, WS recomputed on every call, batches of 16."""
    return frozen.FrozenModel(
        model,
        model,
        "eager",
        torch.device(device),
        torch.contiguous_format,
        16,
        "eager, WS each forward",
        0.0,
    )


def timed_fit(config: TrainConfig, out: Path, legacy: bool, feature_cache: Path) -> dict[str, float]:
    """Wall time of one run without its scan, and the feature pass's share of it.

    `feature_cache`: where the run keeps its photos' features (features.py); a fresh folder makes the run
    compute every feature, the folder of an earlier run on the same photos lets it reuse them.
    """
    marks: dict[str, float] = {}

    def on_progress(p) -> None:
        now = time.perf_counter()
        if p.phase != "scanning":
            marks.setdefault("after_scan", now)
        if p.phase == "features":
            marks["features_end"] = now
        marks.setdefault(f"first_{p.phase}", now)

    original = features.freeze, trainers.one_cpu_thread, features.cache_dir
    features.cache_dir = lambda: feature_cache
    if legacy:
        features.freeze, trainers.one_cpu_thread = legacy_freeze, lambda device: contextlib.nullcontext()
    try:
        started = time.perf_counter()
        result = train.fit(config, on_progress, out=out)
        ended = time.perf_counter()
    finally:
        features.freeze, trainers.one_cpu_thread, features.cache_dir = original
    after_scan = marks.get("after_scan", started)
    return {
        "total": ended - after_scan,
        "features": marks.get("features_end", after_scan) - after_scan,
        "accuracy": result.val_top1 or 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--model", default="EfficientNet-Lite0")
    ap.add_argument("--resolution", type=int, default=None, help="input side; default: the plan's")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per contestant, interleaved")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--folder", type=Path, default=None, help="a labelled folder instead of generated photos")
    ap.add_argument("--same-resolution", action="store_true", help="run before at the plan's resolution too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # A fresh cache: the cold run really builds the graph (the weights cache stays where it is).
        os.environ.setdefault("BIT_STUDIO_DATA_DIR", str(tmp / "data"))
        frozen_cache = tmp / "frozen-cache"
        frozen.cache_dir = lambda: frozen_cache
        folder = args.folder or make_photos(tmp / "photos", args.images)
        config = TrainConfig(
            data_dir=str(folder), model=args.model, strategy="head", resolution=args.resolution, device="cpu"
        )
        plan = train.make_plan(config, args.images, (500, 375))
        before = config if args.same_resolution else config.replace(resolution=plan.rule_crop)
        configs = {"before": before, "now": config}
        print(
            f"{args.model}, head strategy, {args.images} photos 500x375 (scan excluded), "
            f"before at {before.resolution or plan.crop} px, now at {plan.crop} px, {args.threads} threads, "
            f"torch {torch.__version__}"
        )
        cold = timed_fit(config, tmp / "run-cold", legacy=False, feature_cache=tmp / "features-cold")
        print(
            f"now, cold (graph built in this run): {cold['total']:.1f} s, to features end {cold['features']:.1f} s"
        )
        again = timed_fit(config, tmp / "run-again", legacy=False, feature_cache=tmp / "features-cold")
        print(
            f"now, a second run on the same photos (features from the cache): {again['total']:.1f} s, "
            f"to features end {again['features']:.1f} s"
        )
        results: dict[str, list[dict]] = {"before": [], "now": []}
        for r in range(args.repeats):
            for name in results:
                # Each timed run computes every feature (a fresh feature cache), as a first run does.
                fresh = tmp / f"features-{r}-{name}"
                results[name].append(
                    timed_fit(configs[name], tmp / f"run-{r}-{name}", name == "before", fresh)
                )
        print(f"\nmedian of {args.repeats} runs each (interleaved)")
        print(f"  {'':8s} {'total s':>8s} {'to features end s':>18s} {'accuracy':>9s}")
        medians = {}
        for name, runs in results.items():
            medians[name] = statistics.median(r["total"] for r in runs)
            features = statistics.median(r["features"] for r in runs)
            print(f"  {name:8s} {medians[name]:8.1f} {features:18.1f} {runs[-1]['accuracy']:9.3f}")
        print(f"  speed-up now / before: {medians['before'] / medians['now']:.2f}x")


if __name__ == "__main__":
    main()
