"""Training-step speed of this engine's BiT model against timm's implementation of the same architecture.

Both run the same step (forward, cross-entropy, backward, SGD momentum 0.9) on the same batch, resolution
and thread count, alternating so that machine noise hits both alike. Prints images/s of each and the ratio.

    python bench/train_step.py --arch R50x1 --batch 16 --size 128 --iters 10 --threads 1

On a machine where other work runs, use --threads 1: OpenMP threads that wait for a busy core make
multi-threaded timings swing by 5x.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
from timm.layers import StdConv2d

from bit_engine.devices import PRECISIONS, autocast_dtype, prepare_for_device
from bit_engine.models import create_model

TIMM_VARIANTS = {
    "R50x1": "resnetv2_50x1_bit",
    "R50x3": "resnetv2_50x3_bit",
    "R101x1": "resnetv2_101x1_bit",
    "R101x3": "resnetv2_101x3_bit",
    "R152x2": "resnetv2_152x2_bit",
    "R152x4": "resnetv2_152x4_bit",
}


def step_fn(model, x, y, device, dtype):
    """One training step as bit_engine's loop runs it (autocast with `dtype`, None for float32)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def timed(step, iters: int) -> list[float]:
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="R50x1", choices=sorted(TIMM_VARIANTS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS, help="bit_engine's training precision")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    classes = 10

    ours = create_model(args.arch, num_classes=classes, zero_head=False)
    ours, memory_format = prepare_for_device(ours, device)
    # timm as its users run it (default memory format), at the same WS eps so the maths is identical.
    theirs = timm.create_model(TIMM_VARIANTS[args.arch], num_classes=classes).to(device)
    for module in theirs.modules():
        if isinstance(module, StdConv2d):
            module.eps = 1e-10
    theirs.train()

    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, classes, (args.batch,), device=device)
    dtype = autocast_dtype(device, args.precision)
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    # The engine as it trains by default, timm as its users run it by default (float32, unless on CUDA,
    # where its train script uses AMP), and timm with the engine's autocast: the last ratio isolates the
    # implementation from the precision choice.
    timm_default = dtype if device.type == "cuda" else None
    runs = {
        f"bit_engine ({precision})": step_fn(
            ours, x.contiguous(memory_format=memory_format), y, device, dtype
        ),
        f"timm ({ {None: 'fp32'}.get(timm_default, precision) })": step_fn(
            theirs, x, y, device, timm_default
        ),
    }
    if timm_default != dtype:
        runs[f"timm ({precision})"] = step_fn(theirs, x, y, device, dtype)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for step in runs.values():
        timed(step, args.warmup)
    for _ in range(args.iters):  # interleave so drifting machine load hits both alike
        for name, step in runs.items():
            times[name] += timed(step, 1)

    print(
        f"{args.arch}, batch {args.batch}, {args.size}x{args.size}, device {device}, "
        f"threads {args.threads}, {args.iters} timed steps each (median)"
    )
    ips = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        ips[name] = args.batch / med
        print(f"  {name:<18} {ips[name]:8.2f} images/s   {med * 1000:8.1f} ms/step")
    ours_name, *others = list(ips)
    for other in others:
        print(f"  ratio {ours_name} / {other}: {ips[ours_name] / ips[other]:.2f}x")


if __name__ == "__main__":
    main()
