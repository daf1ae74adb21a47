"""Which device to train on, how to lay a model out for it, and which GPUs this machine has.

Never falls back from a GPU to the CPU silently: asking for CUDA where none works is an error that says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from bit_engine.errors import BitStudioError


class DeviceError(BitStudioError):
    """The requested device cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class GpuInfo:
    """One local GPU, as the GUI lists it."""

    index: int
    name: str
    total_memory: int
    free_memory: int | None


def gpu_unavailable_reason() -> str | None:
    """Why no CUDA GPU can be used, in words a user understands; None when one can."""
    if torch.version.cuda is None:
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
        return (
            "No NVIDIA GPU was found: either this machine has none, or its driver is not installed "
            "(nvidia-smi should list the GPU)."
        )
    return None


def list_gpus() -> list[GpuInfo]:
    """Local CUDA GPUs with name, total and free memory; empty when none is usable."""
    if gpu_unavailable_reason() is not None:
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
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
        raise DeviceError(f"Unknown device {spec!r}: use cpu, cuda or cuda:N.") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"Unsupported device {spec!r}: use cpu, cuda or cuda:N.")
    reason = gpu_unavailable_reason()
    if reason is not None:
        raise DeviceError(f"Cannot train on {spec}: {reason}")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"There is no GPU {device.index}: this machine has {count} (0 to {count - 1}).")
    return device


def prepare_for_device(model: torch.nn.Module, device: torch.device):
    """Move `model` to `device` in the memory format its convolutions run fastest in there.

    channels_last lets cuDNN use tensor cores and saves oneDNN a layout reorder per convolution on the CPU.

    Returns:
        (model, memory_format): inputs should be made `.contiguous(memory_format=memory_format)`.
    """
    memory_format = torch.channels_last
    return model.to(device=device, memory_format=memory_format), memory_format
