"""Whether a `.npz` file holds the pre-trained weights of a model, checked before it is ever loaded.

`verify_npz` reads the array headers only (no array is loaded) and compares every key and shape with what the
architecture expects, then streams each member once through its zip checksum. Object arrays are refused (they
would unpickle code). A downloaded or imported file is moved into the cache only after it passed.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bit_engine.errors import BitStudioError
from bit_engine.models import ModelSpec, WeightsMismatchError, create_model, get_spec, npz_key_map
from bit_engine.weights_cache import CorruptWeightsError

#: Extra architectures by `ModelSpec.arch`, for models outside the BiT table (tests, private mirrors):
#: a function from the head size to a ResNetV2. BiT architectures ("R50x1", ...) need no entry.
ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {}


def expected_npz_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """The npz keys the model's released weights must hold, with their shapes (kernels HWIO, as stored).

    The model is built on the meta device, which allocates nothing: BiT-M-R152x4 with its 21k-class head is
    close to a billion parameters, which would cost ~4 GB just to learn the shapes.
    """
    build = ARCHITECTURES.get(spec.arch)
    with torch.device("meta"):
        if build is not None:
            model = build(spec.upstream_classes)
        else:
            model = create_model(spec.arch, num_classes=spec.upstream_classes)
    state = model.state_dict()
    shapes = {}
    for ours, theirs in npz_key_map(model).items():
        shape = tuple(state[ours].shape)
        # PyTorch OIHW -> the file's HWIO.
        shapes[theirs] = (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else shape
    return shapes


def verify_npz(path: str | Path, spec: ModelSpec | str, check_crc: bool = True) -> None:
    """Check that `path` is an intact npz holding the weights of `spec`'s architecture, head included.

    Only the array headers are parsed (no array is loaded), then, with `check_crc`, every member is streamed
    once through its zip checksum: that is what catches a flipped byte inside the data.

    Args:
        path: the npz file; it is only read.
        spec: the model (a spec or a table name).
        check_crc: also verify every member's CRC-32 (reads the whole file once, in chunks).

    Raises:
        WeightsMismatchError: an expected key is missing, or its shape or dtype differs (names the first).
        CorruptWeightsError: the file is truncated, not a zip archive, or fails a checksum.
    """
    path = Path(path)
    spec = get_spec(spec) if isinstance(spec, str) else spec
    expected = expected_npz_shapes(spec)
    what = f"{spec.name} ({spec.arch}, {spec.upstream_classes} classes)"
    try:
        with zipfile.ZipFile(path) as archive:
            members = {
                i.filename[: -len(".npy")]: i for i in archive.infolist() if i.filename.endswith(".npy")
            }
            for key, shape in expected.items():
                info = members.get(key)
                if info is None:
                    hint = (
                        "" if any(k.startswith("resnet/") for k in members) else " (it holds no BiT arrays)"
                    )
                    raise WeightsMismatchError(
                        f"{path.name} does not hold {what} weights: key {key!r} is missing{hint}."
                    )
                found, dtype = _read_array_header(archive, info)
                if found != shape:
                    raise WeightsMismatchError(
                        f"{path.name} does not hold {what} weights: {key!r} has shape {found}, "
                        f"{spec.arch} expects {shape}."
                    )
                if dtype.kind != "f":
                    raise WeightsMismatchError(
                        f"{path.name} does not hold {what} weights: {key!r} is {dtype}, not floating point."
                    )
            if check_crc:
                bad = archive.testzip()
                if bad is not None:
                    raise CorruptWeightsError(f"{path.name} is corrupted: {bad!r} fails its checksum.")
    except BitStudioError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
        raise CorruptWeightsError(f"{path.name} is truncated or not a valid .npz file ({exc}).") from exc


def _read_array_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one `.npy` member, from its header alone (what np.load would check)."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        reader = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _fortran_order, dtype = reader(f)
        header_bytes = f.tell()
    if dtype.hasobject:
        # allow_pickle=False would refuse to load it: object arrays unpickle arbitrary code.
        raise CorruptWeightsError(f"{info.filename!r} holds Python objects, which are never loaded.")
    data_bytes = math.prod(shape) * dtype.itemsize
    if info.file_size - header_bytes != data_bytes:
        raise CorruptWeightsError(
            f"{info.filename!r} is truncated: its header promises {data_bytes} bytes of data, "
            f"the archive holds {info.file_size - header_bytes}."
        )
    return tuple(int(s) for s in shape), dtype
