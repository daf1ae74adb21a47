"""Training speed of one process against data-parallel processes on this machine's CPU (gloo).

The same run (R50x1 from scratch: nothing to download) is trained as one process using every core, one
process with one thread, and N processes with cores / N threads each (`launcher.launch`, as
`--devices cpu:N` does), alternating so that machine noise hits all alike. Images/s is timed from rank 0's
progress between the end of step `--skip` and the last step (start-up, caching and evaluations excluded).

What it says: the cost of the data-parallel machinery (process start, the per-step gradient all-reduce
over gloo, the cancel and loss collectives) against threads sharing the same cores. What it does not say:
anything about GPUs. N CPU processes split the same cores that one process would use, so the best they can
do is match it; on GPUs each rank brings a device of its own, the exchange runs over NVLink/PCIe with NCCL,
and the speed-up comes from there.

    python bench/data_parallel.py --processes 2 --steps 8 --batch 16 --resolution 64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bit_engine.config import TrainConfig
from bit_engine.launcher import launch
from bit_engine.train import fit


def make_folder(root: Path, classes: int = 4, per_class: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i:03d}.png")
    return root


def timed(run, skip: int, batch: int) -> float:
    """Images/s between the end of step `skip` and the last step, from the progress the caller receives."""
    marks: dict[int, float] = {}

    def on_progress(p) -> None:
        if p.phase == "training":
            marks[p.step] = time.perf_counter()

    run(on_progress)
    last = max(marks)
    return (last - skip) * batch / (marks[last] - marks[skip])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="BiT-M-R50x1")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip", type=int, default=2, help="steps left out of the timing (warm-up)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-dp-"))
    os.environ.setdefault("BIT_STUDIO_DATA_DIR", str(work / "data"))
    folder = make_folder(work / "photos")
    config = TrainConfig(
        data_dir=str(folder),
        model=args.model,
        strategy="scratch",
        device="cpu",
        steps=args.steps,
        batch=args.batch,
        resolution=args.resolution,
        mixup=0.0,
        workers=0,
        evaluations=1,
    )
    n = args.processes
    runs = {
        f"1 process x {cores} threads": (cores, lambda cb, out: fit(config, cb, out=out)),
        "1 process x 1 thread": (1, lambda cb, out: fit(config, cb, out=out)),
        f"{n} processes x {max(1, cores // n)} threads": (
            cores,
            lambda cb, out: launch(config, f"cpu:{n}", cb, out=out),
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        for name, (threads, run) in runs.items():
            torch.set_num_threads(threads)
            out = work / f"run-{r}-{len(results[name])}-{name.split()[0]}-{threads}"
            results[name].append(timed(lambda cb, run=run, out=out: run(cb, out), args.skip, args.batch))
    print(
        f"{args.model} from scratch, batch {args.batch}, {args.resolution}x{args.resolution}, "
        f"{args.steps} steps (first {args.skip} not timed), {cores} cores, torch {torch.__version__}; "
        f"best of {args.rounds}"
    )
    reference = max(results[next(iter(runs))])
    for name, values in results.items():
        best = max(values)
        print(
            f"  {name:<26} {best:7.1f} img/s   x{best / reference:.2f}   (runs: {', '.join(f'{v:.1f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
