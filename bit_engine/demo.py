"""The embedded demo: a small labelled photo folder made on the spot, so the product can be tried with no data.

Four visually distinct classes (circles, squares, triangles, stripes) drawn in random colours, sizes and
positions on noisy backgrounds: easy for a pre-trained network, not trivial for one trained from scratch.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

DEMO_CLASSES = ("circles", "squares", "stripes", "triangles")


def _background(rng: random.Random, size: int) -> Image.Image:
    base = tuple(rng.randint(150, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), base)
    noise = Image.effect_noise((size, size), rng.uniform(10, 40)).convert("RGB")
    return Image.blend(image, noise, 0.25)


def draw_sample(kind: str, rng: random.Random, size: int = 64) -> Image.Image:
    """One image of class `kind`."""
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    colour = tuple(rng.randint(0, 140) for _ in range(3))
    s = rng.uniform(0.35, 0.7) * size
    cx, cy = rng.uniform(s / 2, size - s / 2), rng.uniform(s / 2, size - s / 2)
    box = (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)
    if kind == "circles":
        draw.ellipse(box, fill=colour)
    elif kind == "squares":
        draw.rectangle(box, fill=colour)
    elif kind == "triangles":
        draw.polygon([(cx, cy - s / 2), (cx - s / 2, cy + s / 2), (cx + s / 2, cy + s / 2)], fill=colour)
    elif kind == "stripes":
        width = rng.randint(3, 6)
        for x in range(-size, 2 * size, 2 * width):
            draw.line([(x, 0), (x + size * rng.uniform(-0.3, 0.3), size)], fill=colour, width=width)
    else:
        raise ValueError(f"Unknown demo class {kind!r}")
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def make_demo_dataset(root: str | Path, per_class: int = 60, size: int = 64, seed: int = 0) -> Path:
    """Write `per_class` JPEG images for each demo class into `root/<class>/` and return `root`."""
    root = Path(root)
    rng = random.Random(seed)
    for kind in DEMO_CLASSES:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_sample(kind, rng, size).save(folder / f"{kind}_{i:03d}.jpg", quality=90)
    return root
