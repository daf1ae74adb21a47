"""Which micro-batch trains fastest on the CPU: seconds per image of a training step by micro-batch size.

A step of a fixed batch (say 32 images) can be computed as one forward/backward of 32 or as 4 of 8 with
the gradients summed: the result is the same for both model families (BiT normalizes with GroupNorm, and
EfficientNet-Lite0's BatchNorms keep their released statistics, so no layer mixes the images of a batch). Only
the speed differs: a smaller micro-batch keeps the activations in the processor's caches. The engine's
CPU micro-batch (`trainers.cpu_micro_batch`) is chosen from this script's output.

Each size runs the same work (`--batch` images per step, forward, cross-entropy, backward, SGD step),
the sizes alternating round by round so that machine noise hits each alike; medians are printed, with the
ratio to the largest size.

    python bench/micro_batch.py --batch 32 --rounds 5 --sizes 128 224
    python bench/micro_batch.py --batch 16 --micro 2 4 8 16 --rounds 2 --sizes 384
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bit_engine.devices import prepare_for_device
from bit_engine.models import create_model

MODELS = ("EfficientNet-Lite0", "BiT-M-R50x1")


def step_seconds(model, optimizer, batch: int, micro: int, size: int) -> float:
    x = torch.randn(batch, 3, size, size).clamp_(-2.5, 2.5)
    y = torch.zeros(batch, dtype=torch.long)
    t = time.perf_counter()
    for i in range(0, batch, micro):
        F.cross_entropy(model(x[i : i + micro]), y[i : i + micro], reduction="sum").backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32, help="images per optimizer step")
    ap.add_argument("--micro", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224, 384], help="crop sizes in px")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"batch {args.batch}, {args.threads} threads, torch {torch.__version__}; ms per image, median of "
        f"{args.rounds} steps (after one warm-up step each)"
    )
    print(
        f"  {'model':20s} {'px':>4s} "
        + " ".join(f"{'mb ' + str(m):>8s}" for m in args.micro)
        + f"  {'best':>8s}"
    )
    for name, size in [(m, s) for m in args.models for s in args.sizes]:
        torch.manual_seed(0)
        model, _ = prepare_for_device(
            create_model(name, num_classes=10, zero_head=False), torch.device("cpu")
        )
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        times: dict[int, list[float]] = {m: [] for m in args.micro}
        for m in args.micro:
            step_seconds(model, optimizer, args.batch, m, size)  # warm-up: allocator, kernel choice
        for _ in range(args.rounds):
            for m in args.micro:
                times[m].append(step_seconds(model, optimizer, args.batch, m, size) / args.batch)
        med = {m: statistics.median(t) * 1000 for m, t in times.items()}
        best = min(med, key=med.get)
        largest = max(args.micro)
        cells = " ".join(f"{med[m]:8.1f}" for m in args.micro)
        print(
            f"  {name:20s} {size:4d} {cells}  mb {best:<3d} ({med[largest] / med[best]:.2f}x faster than "
            f"mb {largest})",
            flush=True,
        )


if __name__ == "__main__":
    main()
