"""Forward passes over a frozen model, on the fastest path that gives the same numbers as float32 eager.

The head strategy's feature pass, every evaluation, evaluation on another folder and the time estimate run a
model without changing it. `freeze` prepares that model once for its device and returns a `FrozenModel`
with `features(x)` and `logits(x)` for normalized float NCHW batches (what `ImageDataset` yields):

- **CPU: onnxruntime** on an ONNX export of the backbone (input to pooled features) with Weight
  Standardization folded into plain convolutions; onnxruntime also fuses EfficientNet's BatchNorm into its
  convolutions. The head (one linear layer) stays in PyTorch, so a head trained a second ago needs no new
  export. The file is built once per (architecture, backbone weights, input size) in the user's cache folder
  and reused by every later run, evaluation and estimate with the same backbone: the head strategy never
  changes the backbone, so its features, its evaluations and those of its final model all hit one file.
- **CUDA: eager PyTorch** with WS folded once, channels_last, float32. Autocast is left off: bf16 moves
  features by about 1e-2, and the reports must describe what the float32 exported model does.
- **Fallback: eager with WS folded** when onnxruntime is missing, the export fails or its check fails
  (`FrozenModel.reason` says which).

Why onnxruntime on the CPU: features per second, medians of interleaved calls in one run, 2 CPU cores shared
with other jobs (so only the ratios mean something):

    model, input, batch                 eager, WS each call   eager, WS folded   onnxruntime
    EfficientNet-Lite0, 224 px, 32              6.2                 6.8             43.3  (6.4x folded)
    EfficientNet-Lite0, 224 px, 8               8.5                 5.6             39.2
    BiT-M-R50x1 (random), 128 px, 32           32.0                25.6             49.7  (1.9x)
    BiT-M-R50x1 (random), 128 px, 8            41.0                38.8             49.8  (1.3x)

Eager PyTorch runs EfficientNet's depthwise convolutions and BiT's GroupNorm far below onnxruntime's fused
kernels; folding WS alone saves a recomputation per call, not that gap. Both paths agree with float32 eager
within 3e-5 on these models. One trap measured on the way: an onnxruntime session's idle threads spin after
each call by default and slowed the PyTorch work beside them (the head's steps, the data loading) about 4x;
sessions here are made with spinning off. bench/head_only.py measures the whole head strategy.

The cache can never serve stale or damaged weights: its key is a digest of every backbone tensor (names,
shapes, dtypes, bytes), the architecture, the input size, the ONNX opset and the onnxruntime version, so a
fine-tuned backbone or another model gets its own file. Each file is written to a temporary name, checked
against float32 eager (features within `TOLERANCE`) and only then moved into place with a record of its own
digest; a file whose digest no longer matches its record, or that fails the quick check on loading, is
rebuilt.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bit_engine import locations
from bit_engine.fileio import atomic_write_json
from bit_engine.models import StdConv2d

#: Features and logits of every path agree with float32 eager within this (max absolute difference).
TOLERANCE = 1e-4

#: ONNX opset of the cached backbone graphs (the one the exporter uses; see export.py).
OPSET = 17

#: Bump when the cached graph's layout changes: old files are then ignored.
CACHE_FORMAT = 1

INPUT_NAME = "inputs"
FEATURES_NAME = "features"

#: Images per forward pass. onnxruntime's CPU kernels gain little above 32 and memory grows with it;
#: a GPU wants wide batches.
CPU_BATCH = 32
CUDA_BATCH = 128

BACKENDS = ("auto", "onnxruntime", "eager")

#: The cache keeps at most this many bytes of graphs; the least recently used go first.
CACHE_BUDGET_BYTES = 2 * 1024**3


def cache_dir() -> Path:
    """Where the cached backbone graphs live (safe to delete: they are rebuilt when needed)."""
    return locations.cache_dir() / "frozen"


def _backbone_state(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    head = {id(p) for p in model.head_parameters()}
    named = [*model.named_parameters(), *model.named_buffers()]
    return sorted(((n, t) for n, t in named if id(t) not in head), key=lambda item: item[0])


def backbone_digest(model: nn.Module) -> str:
    """A digest of everything the features depend on: architecture and every backbone tensor.

    Two models whose backbones differ in a single weight get different digests; the head is left out, so
    a model whose head was trained on frozen features keeps the digest of its pre-trained backbone.
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(type(model).__name__.encode())
    h.update(repr([(type(m).__name__, getattr(m, "stride", None)) for m in model.modules()]).encode())
    for name, tensor in _backbone_state(model):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _FeatureGraph(nn.Module):
    """Normalized float NCHW -> pooled features: the part that is exported."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


def _unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel keeps the model in `.module`, torch.compile in `._orig_mod`.
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def cpu_float_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` on the CPU in float32, in eval mode, without gradients.

    The parameters are copied straight to the CPU (via deepcopy's memo) so that a big model trained on a GPU
    is never duplicated in GPU memory.
    """
    model = _unwrap(model)
    memo: dict[int, Any] = {}
    for p in model.parameters():
        value = p.detach().to("cpu", torch.float32 if p.is_floating_point() else p.dtype, copy=True)
        memo[id(p)] = nn.Parameter(value, requires_grad=False)
    for b in model.buffers():
        memo[id(b)] = b.detach().to("cpu", torch.float32 if b.is_floating_point() else b.dtype, copy=True)
    clone = copy.deepcopy(model, memo)
    return clone.eval()


@torch.no_grad()
def fold_weight_standardization(model: nn.Module) -> nn.Module:
    """Replace every `StdConv2d` in `model` (in place) by an `nn.Conv2d` holding its standardized weight.

    Call it on a copy (`cpu_float_copy`). The result computes the same function without re-standardizing the
    weights on every forward, and exports as plain Conv nodes.

    Returns:
        `model`, for chaining.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, StdConv2d):
                continue
            # Built on the meta device: random initialisation of the big models' weights would be wasted time.
            conv = nn.Conv2d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                stride=child.stride,
                padding=child.padding,
                dilation=child.dilation,
                groups=child.groups,
                bias=child.bias is not None,
                padding_mode=child.padding_mode,
                device="meta",
            )
            conv.weight = nn.Parameter(child.standardized_weight().detach().clone(), requires_grad=False)
            if child.bias is not None:
                conv.bias = nn.Parameter(child.bias.detach().clone(), requires_grad=False)
            conv.train(child.training)
            setattr(parent, name, conv)
    return model


def folded_copy(model: nn.Module) -> nn.Module:
    """A CPU float32 eval-mode copy of `model` with Weight Standardization folded into plain convolutions."""
    return fold_weight_standardization(cpu_float_copy(model))


def _check_inputs(input_size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    # Normalized-scale noise: what the model sees from real photos, roughly in [-2, 2].
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, input_size, input_size, generator=g).clamp_(-2.5, 2.5)


@dataclass
class _OrtBackbone:
    session: object

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run([FEATURES_NAME], {INPUT_NAME: array})[0])


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle onnxruntime threads spin for a while after each call by default, taking the cores away from
    # the PyTorch work in between (head steps, data loading): eager ran 4x slower beside a spinning session.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # no warnings on stderr about unused initializers of folded graphs
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class FrozenModel:
    """The forward passes of a frozen model: `features` and `logits` for normalized float NCHW batches.

    Results are float32 on the CPU, whatever the device. Build one with `freeze`.

    Attributes:
        path: "onnxruntime" or "eager" (with WS folded).
        device: where the backbone runs.
        batch_size: images per forward pass this path runs best at.
        reason: why this path was taken, in words (shown by benches and logs).
        seconds_to_prepare: time spent by `freeze` (digest, export and check, or the cache hit).
    """

    def __init__(self, model, backbone, path, device, memory_format, batch_size, reason, seconds_to_prepare):
        self._model = model  # the original: its head computes the logits
        self._backbone = backbone
        self.path, self.device, self.memory_format = path, device, memory_format
        self.batch_size, self.reason, self.seconds_to_prepare = batch_size, reason, seconds_to_prepare

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (N x num_features), float32 on the CPU."""
        if self.path == "onnxruntime":
            return self._backbone(x)
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return self._backbone.features(x).float().cpu()

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from features, with the model's current head (float32, CPU)."""
        head_device = next(iter(self._model.head_parameters())).device
        was_training = self._model.training
        self._model.eval()
        try:
            return self._model.classify(features.to(head_device, torch.float32)).float().cpu()
        finally:
            self._model.train(was_training)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N x classes), float32 on the CPU."""
        return self.classify(self.features(x))


def _gpu_has_room_for(model: nn.Module, device: torch.device) -> bool:
    weights = sum(t.numel() * 4 for t in [*model.parameters(), *model.buffers()])
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # no way to tell: the copy is small next to activations for these models
        return True
    return free > 3 * weights


def _eager(model, device, reason, started) -> FrozenModel:
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    if device.type == "cuda" and not _gpu_has_room_for(model, device):
        # Mid-training on a full GPU (R152x4's weights are 3.7 GB): the model itself, WS recomputed per call,
        # rather than a second copy of the weights that could run the GPU out of memory.
        model.to(memory_format=memory_format)
        reason = "eager PyTorch, WS recomputed per call (no GPU memory to spare for a folded copy)"
        elapsed = time.perf_counter() - started
        return FrozenModel(model, model, "eager", device, memory_format, CUDA_BATCH, reason, elapsed)
    folded = folded_copy(model)
    folded = folded.to(device=device, memory_format=memory_format).eval()
    batch = CUDA_BATCH if device.type == "cuda" else CPU_BATCH
    elapsed = time.perf_counter() - started
    return FrozenModel(model, folded, "eager", device, memory_format, batch, reason, elapsed)


def _key(model: nn.Module, input_size: int) -> str:
    import onnxruntime as ort

    h = hashlib.blake2b(digest_size=20)
    parts = (CACHE_FORMAT, OPSET, ort.__version__, int(input_size), backbone_digest(model))
    h.update(json.dumps(parts).encode())
    return h.hexdigest()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    d = (a.float() - b.float()).abs().max().item()
    return d if d == d else float("inf")  # NaN: as bad as it gets


@torch.no_grad()
def _reference_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Float32 eager features on the CPU, WS recomputed as in training: what every path must match."""
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float32) for t in tensors):
        return cpu_float_copy(model).features(x)
    was_training = model.training
    model.eval()
    try:
        return model.features(x)
    finally:
        model.train(was_training)


def _export(folded: nn.Module, input_size: int, path: Path) -> None:
    with warnings.catch_warnings():
        # The TorchScript exporter warns about its own deprecation; the check after it is what counts.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _FeatureGraph(folded).eval(),
            (torch.zeros(1, 3, input_size, input_size),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[FEATURES_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, FEATURES_NAME: {0: "batch"}},
            do_constant_folding=True,
        )


def _prune(keep: Path, budget: int = CACHE_BUDGET_BYTES) -> None:
    """Delete the least recently used graphs beyond `budget` bytes (never `keep`, the one in use)."""
    graphs = sorted(keep.parent.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for graph in graphs:
        total += graph.stat().st_size
        if total > budget and graph != keep:
            for stale in (graph, graph.with_suffix(".json")):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()


def _load_cached(path: Path, record: Path, threads: int, model, input_size) -> _OrtBackbone | None:
    """The cached graph when it is intact and still computes the model's features; else None."""
    if not (path.is_file() and record.is_file()):
        return None
    try:
        os.utime(path)  # recently used: the last to be pruned
        expected = json.loads(record.read_text(encoding="utf-8"))["file_digest"]
        if _file_digest(path) != expected:
            return None
        backbone = _OrtBackbone(_ort_session(path, threads))
        x = _check_inputs(input_size, n=1, seed=1)
        if _max_diff(backbone(x), _reference_features(model, x)) > TOLERANCE:
            return None
        return backbone
    except Exception:  # a damaged record or graph: rebuilt by the caller, never trusted
        return None


def _build(model, input_size: int, path: Path, record: Path, threads: int) -> tuple[_OrtBackbone, float]:
    """Export, check against float32 eager, then move into place. Returns the backbone and the check's diff."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _export(folded_copy(model), input_size, tmp)
        backbone = _OrtBackbone(_ort_session(tmp, threads))
        x = _check_inputs(input_size)
        diff = _max_diff(backbone(x), _reference_features(model, x))
        if diff > TOLERANCE:
            raise ValueError(f"onnxruntime features differ from PyTorch's by {diff:.3g}")
        digest = _file_digest(tmp)
        os.replace(tmp, path)
        atomic_write_json(
            record,
            {
                "file_digest": digest,
                "input_size": int(input_size),
                "model": type(model).__name__,
                "diff": diff,
            },
        )
        _prune(path)
        return backbone, diff
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def freeze(
    model: nn.Module,
    device: torch.device | str,
    input_size: int,
    *,
    backend: str = "auto",
    cache: bool = True,
) -> FrozenModel:
    """Prepare `model` (left unchanged) for forward-only passes on `device` at `input_size` pixels.

    Args:
        model: a BiT `ResNetV2` or an `EfficientNetLite` (anything with features/classify/head_parameters).
        device: where to run; onnxruntime is used on the CPU only.
        input_size: side of the square inputs (the graph's height and width are fixed).
        backend: "auto" (the fastest measured path for the device), "onnxruntime" or "eager".
        cache: keep the exported graph in the user's cache folder for later runs (False: a temporary file).

    Returns:
        The `FrozenModel`; its `path` and `reason` say what was chosen.
    """
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}: use one of {', '.join(BACKENDS)}.")
    started = time.perf_counter()
    device = torch.device(device)
    if device.type != "cpu" or backend == "eager":
        why = (
            "eager PyTorch, WS folded once, channels_last, float32 (on a GPU)"
            if device.type == "cuda"
            else "eager PyTorch with WS folded (asked for)"
        )
        return _eager(model, device, why, started)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return _eager(model, device, "eager PyTorch with WS folded (onnxruntime is not installed)", started)

    threads = torch.get_num_threads()
    try:
        if cache:
            key = _key(model, input_size)
            path = cache_dir() / f"{key}.onnx"
            record = cache_dir() / f"{key}.json"
            backbone = _load_cached(path, record, threads, model, input_size)
            how = "cached"
            if backbone is None:
                backbone, _ = _build(model, input_size, path, record, threads)
                how = "built now, cached"
        else:
            with tempfile.TemporaryDirectory() as tmp:
                backbone, _ = _build(model, input_size, Path(tmp) / "g.onnx", Path(tmp) / "g.json", threads)
            how = "built now, not cached"
    except Exception as exc:  # an exporter or runtime failure costs speed, never the result
        if backend == "onnxruntime":
            raise
        return _eager(model, device, f"eager PyTorch with WS folded (the ONNX path failed: {exc})", started)
    reason = f"onnxruntime on the WS-folded backbone ({how})"
    elapsed = time.perf_counter() - started
    return FrozenModel(
        model, backbone, "onnxruntime", device, torch.contiguous_format, CPU_BATCH, reason, elapsed
    )
