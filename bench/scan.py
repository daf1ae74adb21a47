"""Benchmark: how fast `bit_engine.data.scan` reads a large photo folder, against decoding every photo.

Writes N small photos (JPEG and PNG, default 100,000) into a temporary folder, times `scan()` on it (with
its time per stage), then times the naive way, `Image.open(p).convert("RGB")` on a random sample of the
same files, extrapolated to N, and prints the ratio. Both run in this one process, on a warm page cache
(the files were just written): the figures measure the CPU work, not a cold disk.

Making 100,000 encoded images would take minutes, so a few hundred templates are encoded once and every
file is a template plus a unique comment (a JPEG COM segment, a PNG tEXt chunk): the bytes differ, the
pixels do not. Small files make many sizes collide, so the duplicate finder hashes most files: the worst
case for it. 1% of the files are exact copies, to be found.

    .venv/bin/python bench/scan.py                # 100,000 files
    .venv/bin/python bench/scan.py --n 20000 --side 256
"""

from __future__ import annotations

import argparse
import io
import itertools
import random
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bit_engine.data import scan
from bit_engine.dataset import ScanProgress


def encode_templates(count: int, side: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """`count` distinct encoded photos of about `side` pixels, half JPEG and half PNG."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(count):
        w, h = int(side * rng.uniform(0.75, 1.5)), int(side * rng.uniform(0.75, 1.5))
        # Smooth gradients plus noise: compresses like a photo, not like static.
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack(
            [(x * 255 // max(w, 1)), (y * 255 // max(h, 1)), ((x + y) * 127 // max(w + h, 1))], -1
        )
        pixels = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        if t % 2 == 0:
            Image.fromarray(pixels).save(buf, "JPEG", quality=85)
            out.append((".jpg", buf.getvalue()))
        else:
            Image.fromarray(pixels).save(buf, "PNG", compress_level=1)
            out.append((".png", buf.getvalue()))
    return out


def with_unique_note(suffix: str, data: bytes, note: bytes) -> bytes:
    """The same picture, different bytes: a comment segment (JPEG) or a text chunk (PNG) after the header."""
    if suffix == ".jpg":
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(note) + 2) + note + data[2:]
    chunk_data = b"Comment\x00" + note
    chunk = struct.pack(">I", len(chunk_data)) + b"tEXt" + chunk_data
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + chunk_data))
    return data[:33] + chunk + data[33:]  # after the 8-byte signature and the 25-byte IHDR chunk


def generate(root: Path, n: int, classes: int, templates: int, side: int) -> list[Path]:
    encoded = encode_templates(templates, side)
    rng = random.Random(0)
    paths = []
    for c in range(classes):
        (root / f"class_{c:02d}").mkdir(parents=True)
    previous: tuple[str, bytes] | None = None
    for i in range(n):
        suffix, data = encoded[i % len(encoded)]
        path = root / f"class_{i % classes:02d}" / f"img_{i:07d}{suffix}"
        if previous is not None and rng.random() < 0.01:
            path = path.with_suffix(previous[0])
            blob = previous[1]  # an exact copy of the file before
        else:
            # Variable-length notes spread the file sizes a little, as real photos' sizes are spread.
            blob = with_unique_note(suffix, data, f"id={i};".encode() + b"x" * (i * 7919 % 512))
            previous = (suffix, blob)
        path.write_bytes(blob)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of photos (default 100000)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--templates", type=int, default=300, help="distinct encoded pictures")
    ap.add_argument("--side", type=int, default=48, help="about how many pixels per side (default 48)")
    ap.add_argument("--sample", type=int, default=2000, help="photos decoded for the naive reference")
    ap.add_argument("--dir", help="where to write (default: a new temporary folder, removed after)")
    args = ap.parse_args(argv)

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bitstudio-scan-bench-"))
    try:
        t0 = time.perf_counter()
        paths = generate(root / "photos", args.n, args.classes, args.templates, args.side)
        size = sum(p.stat().st_size for p in paths)
        print(
            f"generated {len(paths):,} files ({size / 1e6:.0f} MB, ~{args.side}px) "
            f"in {time.perf_counter() - t0:.1f} s under {root}"
        )

        stage_start: dict[str, float] = {}

        def on_progress(p: ScanProgress) -> None:
            stage_start.setdefault(p.stage, time.perf_counter())

        t0 = time.perf_counter()
        report = scan(root / "photos", on_progress=on_progress)
        scan_s = time.perf_counter() - t0
        assert report.ok and report.num_images == args.n, (report.errors, report.num_images)
        marks = [*sorted(stage_start.items(), key=lambda kv: kv[1]), ("end", t0 + scan_s)]
        stages = ", ".join(f"{a} {b1 - a1:.2f} s" for (a, a1), (_, b1) in itertools.pairwise(marks))
        copies = sum(len(g.paths) - 1 for g in report.duplicates)
        print(f"scan(): {args.n:,} files in {scan_s:.2f} s = {args.n / scan_s:,.0f} files/s  ({stages})")
        print(f"        found {copies:,} exact copies; median size {report.median_size}")

        sample = random.Random(1).sample(paths, min(args.sample, len(paths)))
        t0 = time.perf_counter()
        for p in sample:
            with Image.open(p) as im:
                im.convert("RGB")
        per_file = (time.perf_counter() - t0) / len(sample)
        naive_s = per_file * args.n
        print(
            f"naive full decode (Image.open().convert('RGB'), {len(sample):,} sampled): "
            f"{1 / per_file:,.0f} files/s, {naive_s:.2f} s extrapolated to {args.n:,}"
        )
        print(f"ratio: scan() is {naive_s / scan_s:.1f}x faster than decoding every photo")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
