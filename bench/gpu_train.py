"""Full fine-tuning speed on a GPU: step images/s, torch.compile, the HyperRule schedule's wall time, 1 vs 2 GPUs.

Three parts, each printed with its figures:

1. **Step speed.** Training images/s of one full fine-tuning step (forward, cross-entropy, backward, SGD with
   momentum 0.9) of the model at `--size`, with the engine's precision choice (bf16 autocast on a GPU that
   has it) and channels_last, the way `train._FullTrainer` runs it: eager, and with `torch.compile` (its
   compile time, the first step, is printed apart). Eager and compiled steps alternate, medians reported.
2. **The schedule.** Wall time of `train.fit` with the HyperRule's own plan (500 steps of 512 images for a
   small task) on a generated folder of `--images` photos of 500x375, evaluations included: what a user
   waits for. `--fit-steps`/`--fit-batch`/`--fit-size` shorten it (e.g. on a CPU, to check the script).
3. **Data parallel.** With two or more GPUs, the same `fit` through `launcher.launch` on 2 devices
   against 1, and the ratio.

Goal on an H100-class GPU: 1,000 training images/s or more at 384 px for BiT-M-R50x1, so the small-data
schedule (500 x 512 = 256,000 images) takes under 5 minutes. Weights are random (speed does not depend on
them; nothing is downloaded: BiT runs as the `scratch` strategy, which trains exactly like `full`), except
for EfficientNet-Lite0, whose weights ship in a package.

    python bench/gpu_train.py                                    # on a GPU machine, the full run
    python bench/gpu_train.py --device cpu --steps 2 --size 64 --micro-batch 4 --images 24 \\
        --fit-steps 2 --fit-batch 8 --fit-size 64                # a check that the script runs (CPU)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bit_engine import launcher, models, train
from bit_engine.config import TrainConfig
from bit_engine.devices import autocast_dtype, prepare_for_device, resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from head_only import make_photos  # a sibling bench script: the same generated photos


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_speed(args, device: torch.device) -> None:
    model = models.create_model(args.model, num_classes=10, zero_head=False)
    model, memory_format = prepare_for_device(model, device)
    model.train()
    dtype = autocast_dtype(device, args.precision)
    x = torch.randn(args.micro_batch, 3, args.size, args.size, device=device).contiguous(
        memory_format=memory_format
    )
    y = torch.randint(0, 10, (args.micro_batch,), device=device)

    def make_step(net):
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step() -> float:
            started = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = net(x)
            F.cross_entropy(logits.float(), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            return time.perf_counter() - started

        return step

    contestants = {"eager": make_step(model)}
    compile_s = None
    if not args.no_compile:
        compiled = make_step(torch.compile(model))
        try:
            compile_s = compiled()  # the first call compiles
            contestants["torch.compile"] = compiled
        except Exception as exc:  # no compiler toolchain on this machine: say so, keep the eager figures
            print(f"  torch.compile failed ({type(exc).__name__}: {exc}); eager only")
    for step in contestants.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(args.steps):
        for name, step in contestants.items():
            times[name].append(step())
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    print(
        f"1. step speed: {args.model}, {args.size} px, micro-batch {args.micro_batch}, "
        f"{precision + ' autocast' if dtype is not None else 'fp32 (no autocast)'}, "
        f"{'channels_last' if memory_format == torch.channels_last else 'default layout'}, {device}"
    )
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"  {name:14s} {args.micro_batch / med:9.1f} images/s   {med * 1000:8.1f} ms/step (median of {len(ts)})"
        )
    if compile_s is not None:
        print(f"  torch.compile: first step (compilation) {compile_s:.1f} s")
    if "torch.compile" in times:
        ratio = statistics.median(times["eager"]) / statistics.median(times["torch.compile"])
        print(f"  compiled / eager: {ratio:.2f}x")
    images_per_s = args.micro_batch / min(statistics.median(ts) for ts in times.values())
    print(
        f"  the HyperRule's 500 x 512 images at this speed: {500 * 512 / images_per_s / 60:.1f} min of steps"
    )


def timed_fit(config: TrainConfig, out: Path, devices: list[str] | None) -> tuple[float, train.RunResult]:
    started = time.perf_counter()
    result = train.fit(config, out=out) if devices is None else launcher.launch(config, devices, out=out)
    return time.perf_counter() - started, result


def schedule_time(args, device: torch.device, folder: Path, tmp: Path) -> None:
    config = TrainConfig(
        data_dir=str(folder),
        model=args.model,
        # BiT weights cannot be downloaded everywhere; random ones (scratch) train at the very same speed.
        strategy="full" if models.get_spec(args.model).family == "efficientnet" else "scratch",
        steps=args.fit_steps,
        batch=args.fit_batch,
        resolution=args.fit_size,
        device=str(device),
        precision=args.precision,
        micro_batch=args.fit_micro_batch,
    )
    plan = train.make_plan(config, int(args.images * (1 - config.val_fraction)), (500, 375))
    print(
        f"\n2. the schedule: train.fit, {args.images} photos 500x375, {plan.total_steps} steps x {plan.batch} "
        f"images at {plan.crop} px ({plan.total_steps * plan.batch:,} training images), evaluations included"
    )
    seconds, result = timed_fit(config, tmp / "run-1", None)
    print(
        f"  1 process on {device}: {seconds:.1f} s wall ({result.status}, validation top-1 {result.val_top1 or 0:.3f})"
    )
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus < 2:
        print("\n3. data parallel: skipped (fewer than 2 GPUs on this machine)")
        return
    seconds2, result2 = timed_fit(config, tmp / "run-2", ["cuda:0", "cuda:1"])
    print(f"\n3. data parallel: 2 processes on cuda:0, cuda:1: {seconds2:.1f} s wall ({result2.status})")
    print(f"  1 process / 2 processes: {seconds / seconds2:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="BiT-M-R50x1")
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: a GPU when usable)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    ap.add_argument("--size", type=int, default=384, help="input side for the step speed")
    ap.add_argument("--micro-batch", type=int, default=128, help="images per timed step")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per contestant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile contestant")
    ap.add_argument("--images", type=int, default=1000, help="photos in the generated folder for part 2")
    ap.add_argument("--fit-steps", type=int, default=None, help="part 2's steps (default: the HyperRule's)")
    ap.add_argument("--fit-batch", type=int, default=None, help="part 2's batch (default: the HyperRule's)")
    ap.add_argument(
        "--fit-size", type=int, default=None, help="part 2's resolution (default: the HyperRule's)"
    )
    ap.add_argument("--fit-micro-batch", type=int, default=None, help="part 2's micro-batch (default: auto)")
    ap.add_argument("--skip-fit", action="store_true", help="only part 1")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        print(
            f"{name}, {torch.cuda.device_count()} GPU(s), torch {torch.__version__}, CUDA {torch.version.cuda}"
        )
    else:
        print(
            f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}: a check run, not GPU figures"
        )
    step_speed(args, device)
    if args.skip_fit:
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_photos(tmp / "photos", args.images)
        schedule_time(args, device, folder, tmp)


if __name__ == "__main__":
    main()
