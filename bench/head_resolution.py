"""Which input resolution suits a frozen backbone: 5-fold logistic regression on its features at 128/224/384.

The HyperRule raises the resolution (384 for most photos) because full fine-tuning lets the network adapt to
the new scale of objects; a frozen backbone keeps the scale it was pre-trained at (224). This measures it on
data made here (nothing downloaded):

- ``digits``: scikit-learn's bundled 8x8 handwritten digits, upscaled to 32x32 RGB (10 classes);
- ``shapes 64px``: the demo's generated shapes (bit_engine.demo) at 64x64 (4 classes);
- ``shapes 500x375``: the same drawing at photo size, objects small against a noisy background.

Every image is resized to each resolution exactly as evaluation does (whole image, bilinear), features
come from `frozen.freeze` (the same numbers as float32 eager), and the accuracy is the mean over 5
stratified folds of a standardized logistic regression. Feature time per resolution is printed too.

Only EfficientNet-Lite0 has real pre-trained weights on an offline machine; a BiT model with random weights
would say nothing about accuracy, so BiT is measured only where its weights are in the cache (--model).

    python bench/head_resolution.py --per-class 50 --model EfficientNet-Lite0
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
from PIL import Image

from bit_engine import frozen, weights
from bit_engine.demo import DEMO_CLASSES, draw_sample
from bit_engine.images import to_model_input
from bit_engine.models import create_model, get_spec


def digits(per_class: int) -> tuple[list[Image.Image], np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images, labels = [], []
    for k in range(10):
        for i in np.flatnonzero(d.target == k)[:per_class]:
            grey = (d.images[i] * (255 / 16)).astype(np.uint8)
            images.append(Image.fromarray(grey).convert("RGB").resize((32, 32), Image.BILINEAR))
            labels.append(k)
    return images, np.array(labels)


def shapes(per_class: int, size: tuple[int, int], seed: int) -> tuple[list[Image.Image], np.ndarray]:
    rng = random.Random(seed)
    images, labels = [], []
    for k, kind in enumerate(DEMO_CLASSES):
        for _ in range(per_class):
            side = min(size)
            canvas = draw_sample(kind, rng, side)
            if size != (side, side):
                # The shape in a corner of a larger noisy photo: small objects, as in real photos.
                photo = draw_sample("stripes", rng, max(size)).resize(size).convert("L").convert("RGB")
                photo.paste(canvas.resize((side // 3, side // 3)), (rng.randrange(0, size[0] - side // 3), 0))
                canvas = photo
            images.append(canvas)
            labels.append(k)
    return images, np.array(labels)


def features(runner, images: list[Image.Image], size: int, mean, std) -> np.ndarray:
    out = []
    for i in range(0, len(images), 32):
        batch = np.stack([to_model_input(im, size) for im in images[i : i + 32]]).astype(np.float32) / 255.0
        x = torch.from_numpy((batch - np.array(mean, np.float32)) / np.array(std, np.float32)).permute(
            0, 3, 1, 2
        )
        out.append(runner.features(x.contiguous()).numpy())
    return np.concatenate(out)


def cv_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(clf, x, y, cv=folds).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="EfficientNet-Lite0")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224, 384])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--sets", nargs="+", default=["digits", "shapes 64px", "shapes 500x375"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = get_spec(args.model)
    model = create_model(args.model, num_classes=2, zero_head=False)
    weights.load_pretrained(model, args.model, download_if_missing=False)
    model.eval()
    makers = {
        "digits": lambda: digits(args.per_class),
        "shapes 64px": lambda: shapes(args.per_class, (64, 64), seed=1),
        "shapes 500x375": lambda: shapes(args.per_class, (500, 375), seed=2),
    }
    sets = {name: makers[name]() for name in args.sets}
    print(f"{args.model}, frozen features, 5-fold logistic regression, {args.threads} threads")
    print(
        f"  {'data':16s} {'images':>6s} "
        + " ".join(f"{s:>8d}px" for s in args.sizes)
        + "   feature s/resolution"
    )
    for name, (images, labels) in sets.items():
        accs, secs = [], []
        for size in args.sizes:
            runner = frozen.freeze(model, "cpu", size)
            t = time.perf_counter()
            feats = features(runner, images, size, spec.normalization.mean, spec.normalization.std)
            secs.append(time.perf_counter() - t)
            accs.append(cv_accuracy(feats, labels))
        row = " ".join(f"{a:10.3f}" for a in accs)
        print(f"  {name:16s} {len(labels):6d} {row}   " + " / ".join(f"{s:.1f}" for s in secs), flush=True)


if __name__ == "__main__":
    main()
