"""Benchmark: what the in-memory image cache buys the training loop.

Without the cache every training sample is decoded from disk and resized (`ImageDataset` with
`cache=None`); with it (`transforms.build_cache`, used when `should_cache` says the images fit) a sample is
only cropped, flipped and normalized from a resized uint8 copy kept in memory. Both use the training
transform of the HyperRule at 448->384 (images of 96x96 or more) and 160->128 (smaller ones), on generated
500x375 JPEGs (a phone photo scaled down, the size of many public datasets), read through
`ImageDataset.__getitem__` exactly as the training loop's DataLoader does, in one process and thread
setting. Rounds alternate between the two ways so that machine noise hits both alike; the median round
counts. Also printed: the one-off cost of building the cache and its memory.

    nice .venv/bin/python bench/data_loading.py
    nice .venv/bin/python bench/data_loading.py --n 400 --rounds 5 --size 640x480
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bit_engine.transforms import ImageDataset, Preprocessing, build_cache

SETTINGS = ((448, 384), (160, 128))  # the HyperRule's resize -> crop, large and small images


def write_photos(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """`n` distinct JPEGs (quality 90) that compress like photos: smooth shapes, gradients, sensor noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i in range(n):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(h / 8, h / 2)
        disc = ((x - cx) ** 2 + (y - cy) ** 2 < r * r)[..., None]
        colour = rng.uniform(0, 255, 3)
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1) * rng.uniform(0.5, 1, 3)
        pixels = np.where(disc, colour, base) + rng.normal(0, 6, (h, w, 3))
        path = root / f"photo_{i:04d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def images_per_second(dataset: ImageDataset, epoch: int) -> float:
    t = time.perf_counter()
    for i in range(len(dataset)):
        dataset[(i, epoch)]
    return len(dataset) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="photos")
    parser.add_argument("--size", default="500x375", help="photo size WxH")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the photos, each way")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="bit-loading-") as tmp:
        paths = write_photos(Path(tmp), args.n, size)
        kb = sum(p.stat().st_size for p in paths) / len(paths) / 1e3
        print(
            f"{args.n} JPEGs of {size[0]}x{size[1]} (~{kb:.0f} KB each), page cache warm; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
        )
        print(
            f"{'resize->crop':<13} {'disk img/s':>10} {'cache img/s':>11} {'ratio':>7} {'build s':>8} {'cache MB':>9}"
        )
        for resize, crop in SETTINGS:
            pre = Preprocessing(resize, crop, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), flip=True, random_crop=True)
            labels = [0] * len(paths)
            t = time.perf_counter()
            cache = build_cache(paths, pre.load_size(train=True))
            build = time.perf_counter() - t
            from_disk = ImageDataset(paths, labels, pre, train=True, seed=0, cache=None)
            from_cache = ImageDataset(paths, labels, pre, train=True, seed=0, cache=cache)
            disk, cached = [], []
            for epoch in range(args.rounds):
                disk.append(images_per_second(from_disk, epoch))
                cached.append(images_per_second(from_cache, epoch))
            d, c = statistics.median(disk), statistics.median(cached)
            memory = sum(t.numel() for t in cache) / 1e6
            print(
                f"{f'{resize}->{crop}':<13} {d:>10.0f} {c:>11.0f} {c / d:>6.1f}x {build:>8.1f} {memory:>9.0f}"
            )
        print(
            "\nratio = cached / from disk. The cache costs one decode per image (build s), paid back from the "
            "second epoch on."
        )


if __name__ == "__main__":
    main()
