"""Which device to train on, how to lay a model out for it, and which GPUs this machine has.

Never falls back from a GPU to the CPU silently: asking for CUDA where none works is an error that says why.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from dataclasses import dataclass

import torch

from bit_engine.config import PRECISIONS
from bit_engine.errors import BitStudioError


class DeviceError(BitStudioError):
    """The requested device cannot be used; the message says why and what to do.

    Attributes:
        device: the device (or device list) asked for, as given (None when not known).
    """

    def __init__(self, message: str, device: str | None = None):
        super().__init__(message)
        self.device = device

    def __reduce__(self):
        return (type(self), (str(self), self.device))


@dataclass(frozen=True)
class GpuInfo:
    """One local GPU, as the GUI lists it."""

    index: int
    name: str
    total_memory: int
    free_memory: int | None


def _driver_installed() -> bool | None:
    """Whether the NVIDIA driver's library is installed; None where that cannot be told."""
    name = {"linux": "cuda", "win32": "nvcuda"}.get(sys.platform)
    if name is None:
        return None
    return ctypes.util.find_library(name) is not None


def gpu_unavailable_reason() -> str | None:
    """Why no CUDA GPU can be used, in words a user understands; None when one can."""
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:  # ROCm uses torch.cuda too
        return (
            "This PyTorch is a CPU-only build, so it cannot use a GPU. Install a CUDA build of PyTorch "
            "(see pytorch.org) to train on an NVIDIA GPU."
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES is empty, which hides every GPU from this program. Unset it to use them."
    try:
        count = torch.cuda.device_count()
    except Exception as exc:  # driver errors surface as assorted RuntimeErrors
        return f"The NVIDIA driver could not be used ({exc}). Install or update the driver."
    if count == 0:
        if _driver_installed() is False:
            return (
                "No NVIDIA driver is installed, so no GPU can be used. If this machine has an NVIDIA GPU, "
                "install its driver (nvidia-smi should then list the GPU)."
            )
        return (
            "The NVIDIA driver reports no GPU: this machine may have none, or nvidia-smi shows a problem "
            "with it."
        )
    if not torch.cuda.is_available():
        # The device count comes from NVML, which may see GPUs that CUDA cannot use (e.g. a driver older
        # than this PyTorch's CUDA): initialising CUDA gives the reason.
        try:
            torch.cuda.init()
        except Exception as exc:
            return f"The NVIDIA driver could not be used ({exc}). Install or update the driver."
        return "CUDA cannot be used on this machine, although the driver lists a GPU. Check nvidia-smi."
    return None


def _used_memory_from_nvml(index: int) -> int | None:
    """Memory in use on GPU `index` as nvidia-smi reports it, when NVML is installed (nvidia-ml-py)."""
    try:
        return torch.cuda.device_memory_used(index)
    except Exception:  # no nvidia-ml-py, an older torch, or NVML unusable
        return None


def list_gpus() -> list[GpuInfo]:
    """Local CUDA GPUs with name, total and free memory; empty when none is usable (see the reason).

    Free memory comes from NVML when it is installed. Otherwise it comes from CUDA, which creates a context
    on each GPU: a few hundred MB that this process then holds, so a GUI should list GPUs sparingly.
    """
    if gpu_unavailable_reason() is not None:
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        used = _used_memory_from_nvml(i)
        if used is not None:
            free = props.total_memory - used
        else:
            try:
                free, _ = torch.cuda.mem_get_info(i)
            except Exception:
                free = None
        gpus.append(GpuInfo(i, props.name, props.total_memory, free))
    return gpus


def resolve_device(spec: str | None) -> torch.device:
    """`cpu`, `cuda` or `cuda:N` as a torch.device; None means CUDA when usable, else the CPU.

    Raises:
        DeviceError: CUDA was asked for and cannot be used (with the reason), or N is out of range.
    """
    if spec is None or spec == "auto":
        return torch.device("cuda" if gpu_unavailable_reason() is None else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceError(f"Unknown device {spec!r}: use cpu, cuda or cuda:N.", device=spec) from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"Unsupported device {spec!r}: use cpu, cuda or cuda:N.", device=spec)
    reason = gpu_unavailable_reason()
    if reason is not None:
        raise DeviceError(f"Cannot train on {spec}: {reason}", device=spec)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(
            f"There is no GPU {device.index}: this machine has {count} (0 to {count - 1}).", device=spec
        )
    return device


def parse_devices(spec: str | None) -> list[torch.device]:
    """The devices a training runs on, one process each.

    Args:
        spec: None or `auto` (a GPU when one is usable, else the CPU), `cpu`, `cuda`, `all` (every usable
            GPU), GPU numbers such as `0,1,3` (or `cuda:0,cuda:1`), or `cpu:N` (N processes on the CPU: for
            trying data parallelism out, not for speed).

    Raises:
        DeviceError: no GPU can be used (with the reason), a GPU is out of range or listed twice, or the
            text is not one of the forms above.
    """
    text = (spec or "auto").strip().lower()
    if text in ("auto", "cuda"):
        return [resolve_device(text)]
    if text == "cpu" or text.startswith("cpu:"):
        count = text[4:] or "1"
        if not count.isdigit() or int(count) < 1:
            raise DeviceError(
                f"Unknown devices {spec!r}: cpu:N needs a number of processes, e.g. cpu:2.", device=spec
            )
        return [torch.device("cpu")] * int(count)
    reason = gpu_unavailable_reason()
    if reason is not None:
        raise DeviceError(f"Cannot train on GPUs ({spec}): {reason}", device=spec)
    available = torch.cuda.device_count()
    if text == "all":
        return [torch.device("cuda", i) for i in range(available)]
    indices: list[int] = []
    for item in text.split(","):
        item = item.strip().removeprefix("cuda:")
        if not item.isdigit():
            raise DeviceError(
                f"Unknown devices {spec!r}: use all, GPU numbers such as 0,1,3, or cpu:N for CPU processes.",
                device=spec,
            )
        index = int(item)
        if index >= available:
            raise DeviceError(
                f"There is no GPU {index}: this machine has {available} (0 to {available - 1}).",
                device=spec,
            )
        if index in indices:
            raise DeviceError(
                f"GPU {index} is listed twice in {spec!r}: each process needs a GPU of its own.",
                device=spec,
            )
        indices.append(index)
    return [torch.device("cuda", i) for i in indices]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (Intel AMX or AVX512-BF16)."""
    try:
        if torch._C._cpu._init_amx():
            return True
    except (AttributeError, RuntimeError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None means plain float32.

    "auto" takes bfloat16 where the device computes it natively: GPUs that support it (fp16 with loss
    scaling on older ones), and CPUs with AMX or AVX512-BF16, where it makes a training step about 1.6x
    faster (bench/train_step.py). Weights, gradients, the loss and the optimizer stay in float32.

    Raises:
        DeviceError: a precision this device cannot run.
    """
    if precision not in PRECISIONS:
        raise DeviceError(f"Unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}.")
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise DeviceError("fp16 needs a GPU; on the CPU use bf16 or fp32.")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None


def prepare_for_device(model: torch.nn.Module, device: torch.device):
    """Move `model` to `device` in the memory format its convolutions run fastest in there.

    On CUDA channels_last lets cuDNN use tensor cores. On the CPU oneDNN gains nothing from it for these
    models (bench/train_step.py, R50x1 at 128 px, one thread: 2% faster in float32, 5% slower in bf16), so
    the default layout stays.

    Returns:
        (model, memory_format): inputs should be made `.contiguous(memory_format=memory_format)`.
    """
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    return model.to(device=device, memory_format=memory_format), memory_format
