"""Prediction speed of the exported ONNX model under onnxruntime against the same model in PyTorch eager.

Three contestants compute the same thing (uint8 NHWC images in, logits and probabilities out, the
pre-processing included) on the same images, thread count and machine, in one run:

- ``onnxruntime``: the file `bit_engine.export.export_onnx` writes (Weight Standardization folded);
- ``torch eager (WS each forward)``: the model as training runs it, weights standardized on every call;
- ``torch eager (WS folded)``: the same folded weights as the ONNX file, to separate the gain of folding
  from the gain of onnxruntime.

Calls alternate between the contestants, so that noise from other processes on the machine hits all of
them alike; the median call time is reported. Prints images/s and per-image latency at batch 1 and batch 32,
and each contestant's speed relative to eager with WS.

    python bench/inference.py --model BiT-M-R50x1 --size 128 --threads 2 --iters 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from bit_engine.export import ExportGraph, export_onnx, random_images
from bit_engine.frozen import cpu_float_copy, fold_weight_standardization
from bit_engine.models import create_model, get_spec


def ort_runner(path: Path, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(None, {"images": batch})


def torch_runner(graph: torch.nn.Module):
    graph.eval()

    def run(batch: np.ndarray):
        with torch.inference_mode():
            return graph(torch.from_numpy(batch))

    return run


def measure(runners: dict, batch: np.ndarray, iters: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each runner, calls interleaved."""
    for run in runners.values():
        for _ in range(warmup):
            run(batch)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(iters):
        for name, run in runners.items():
            started = time.perf_counter()
            run(batch)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="BiT-M-R50x1", help="a table name or a BiT architecture (R50x1)")
    ap.add_argument("--size", type=int, default=128, help="input side in pixels")
    ap.add_argument("--classes", type=int, default=10, help="head size (a fine-tuned task)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--iters", type=int, default=10, help="timed calls per contestant at batch 1")
    ap.add_argument("--batch-iters", type=int, default=None, help="timed calls at batch 32 (default iters/3)")
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch_iters = args.batch_iters or max(2, args.iters // 3)

    torch.manual_seed(0)
    model = create_model(args.model, args.classes, zero_head=False).eval()
    try:
        normalization = get_spec(args.model).normalization
    except Exception:  # a bare architecture name: BiT's normalization
        from bit_engine.models import BIT_NORMALIZATION as normalization

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = export_onnx(
            model,
            [f"class {i}" for i in range(args.classes)],
            args.size,
            normalization,
            Path(tmp) / "model.onnx",
            verify_images=random_images(2, args.size),
        )
        print(
            f"export: {time.perf_counter() - started:.1f} s, {result.file_bytes / 1e6:.1f} MB, opset "
            f"{result.opset}, max |prob diff| {result.max_abs_prob_diff:.2e}, "
            f"top-1 agreement {result.top1_agree}/{result.n_images}"
        )
        runners = {
            "onnxruntime": ort_runner(Path(result.path), args.threads),
            "torch eager (WS each forward)": torch_runner(ExportGraph(model, normalization)),
            "torch eager (WS folded)": torch_runner(
                ExportGraph(fold_weight_standardization(cpu_float_copy(model)), normalization)
            ),
        }
        print(
            f"model {args.model}, {args.size} px, {args.classes} classes, {args.threads} threads, "
            f"onnxruntime {ort.__version__}, torch {torch.__version__}"
        )
        for batch_size, iters in ((1, args.iters), (32, batch_iters)):
            batch = random_images(batch_size, args.size, seed=1)
            seconds = measure(runners, batch, iters, args.warmup)
            reference = seconds["torch eager (WS each forward)"]
            print(f"\nbatch {batch_size} (median of {iters} calls each)")
            print(f"  {'':32s} {'images/s':>10s} {'ms/image':>10s} {'vs eager WS':>12s}")
            for name, s in seconds.items():
                per_image_ms = 1000 * s / batch_size
                print(f"  {name:32s} {batch_size / s:10.2f} {per_image_ms:10.2f} {reference / s:11.2f}x")


if __name__ == "__main__":
    main()
