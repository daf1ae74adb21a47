"""Why BiT works, shown on a folder's own photos: the numbers behind the window's "How it works" view.

Four demonstrations, each a plain function returning a frozen dataclass of numbers and arrays:

- `normalization_demo`: one photo's feature map (from the first convolution of a pre-trained model) through
  Batch Normalization and Group Normalization, in batches of 1, 8 and 32 whose other members are other
  photos of the folder. BatchNorm's output for the photo changes with its batch-mates; GroupNorm's does not.
- `standardization_demo`: a convolution kernel's weights before and after Weight Standardization, computed
  by the model's own `models.StdConv2d`.
- `mixup_demo`: two photos of different classes blended with a lambda from Beta(alpha, alpha), drawn by
  the training loop's own `sampling.mixup_lambda`, with the blended label.
- `hyperrule_story`: the HyperRule plan's choices for the folder, each with why, in plain words.

`explain` runs them all with progress and cancellation, for a front end's worker thread. Which pre-trained
weights are used is decided by `load_kernels`: the cached BiT weights of the planned model (or of any BiT
model in the cache), else EfficientNet-Lite0's shipped ImageNet weights (a Batch Norm network without WS:
its kernel only illustrates what WS does), else a fixed random convolution. `Kernels.source` says which.
Photos are picked deterministically, so the view shows the same pictures every time it is opened.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bit_engine import holdout, hyperrule, images, models, preparation, sampling, weights
from bit_engine.config import DEFAULT_MODEL, TrainConfig
from bit_engine.dataset import DatasetReport, Sample
from bit_engine.efficientnet import SamePadConv2d, lite0_weights_path
from bit_engine.errors import BitStudioError
from bit_engine.progress import CancelFlag, OperationCancelled, Progress

#: Batch sizes the normalization demonstration compares (the first must be 1: the others are measured
#: against the photo on its own).
BATCH_SIZES = (1, 8, 32)

#: Side of the square the demonstrations resize photos to: large enough to see the photo, small enough
#: for a 32-photo batch to take well under a second on a CPU.
DEMO_SIDE = 128

#: Side of the mixup pictures.
MIXUP_SIDE = 160

#: Group Norm's groups in BiT (fewer when a layer has fewer channels than this).
GN_GROUPS = 32

#: Epsilon of BiT's Group Norm layers, used for Batch Norm here too so only the statistics differ.
NORM_EPS = 1e-5

#: The alpha mixup is shown with when the plan turns it off: BiT's value for tasks of 20,000 photos or more.
ILLUSTRATION_ALPHA = 0.1

#: Histogram bins for the weight distributions.
HISTOGRAM_BINS = 60

_BIT_STEM = "resnet/root_block/standardized_conv2d/kernel"
_BIT_KERNEL = "resnet/block1/unit01/b/standardized_conv2d/kernel"
_LITE0_STEM = "_conv_stem.weight"
_LITE0_KERNEL = "_conv_head.weight"


# ----------------------------------------------------------------------------------------------- weights


@dataclass(frozen=True, eq=False)
class Kernels:
    """Convolution weights the demonstrations use, and where they come from.

    Attributes:
        model: the model they belong to ("BiT-M-R50x1", "EfficientNet-Lite0"), or "" for random weights.
        pretrained: they are the model's pre-trained weights (not random ones).
        uses_ws: the model standardizes its weights (BiT does, EfficientNet does not).
        stem: the first convolution's weights (out, in, kh, kw): it makes the feature map that is normalized.
        stem_stride: the first convolution's stride.
        stem_text: the first convolution in words.
        kernel: the weights shown before and after Weight Standardization (out, in, kh, kw).
        kernel_text: that convolution in words.
        source: a sentence saying which weights these are and why.
    """

    model: str
    pretrained: bool
    uses_ws: bool
    stem: np.ndarray
    stem_stride: int
    stem_text: str
    kernel: np.ndarray
    kernel_text: str
    source: str

    def stem_conv(self) -> torch.nn.Module:
        """The first convolution as the model runs it (BiT's standardizes its weights; Lite0's pads "SAME")."""
        out, cin, k, _ = self.stem.shape
        if self.uses_ws:
            conv = models.StdConv2d(cin, out, k, stride=self.stem_stride, padding=k // 2, bias=False)
        else:
            conv = SamePadConv2d(cin, out, k, self.stem_stride)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(self.stem))
        return conv.eval()


def _bit_candidates(model: str) -> list[str]:
    names = [model] + [n for n, s in models.KNOWN_MODELS.items() if s.family == "bit" and n != model]
    out = []
    for name in names:
        try:
            if models.get_spec(name).family == "bit":
                out.append(name)
        except models.UnknownModelError:
            continue
    return out


def _bit_kernels(model: str) -> Kernels | None:
    names = _bit_candidates(model)
    for name in names:
        path = weights.cached_path(name)
        if path is None:
            continue
        try:
            with np.load(path, allow_pickle=False) as archive:
                # Kernels are stored HWIO (TensorFlow); PyTorch wants OIHW.
                stem = archive[_BIT_STEM].transpose(3, 2, 0, 1).astype(np.float32)
                kernel = archive[_BIT_KERNEL].transpose(3, 2, 0, 1).astype(np.float32)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            continue  # a damaged cache file: the Plan step says so; here the next source will do
        if stem.ndim != 4 or kernel.ndim != 4 or stem.shape[1] != 3:
            continue
        if name == model:
            planned = ""
        elif model in names:
            planned = f" (the planned {model}'s weights are not downloaded)"
        else:
            planned = f" (the planned {model} is not a BiT model)"
        return Kernels(
            model=name,
            pretrained=True,
            uses_ws=True,
            stem=np.ascontiguousarray(stem),
            stem_stride=2,
            stem_text=f"the first convolution of {name} ({stem.shape[2]}x{stem.shape[3]}, "
            f"{stem.shape[0]} filters, pre-trained weights)",
            kernel=np.ascontiguousarray(kernel),
            kernel_text=f"the first 3x3 convolution of {name}'s first block ({kernel.shape[1]} channels in, "
            f"{kernel.shape[0]} filters out)",
            source=f"Pre-trained weights of {name}, from the weights cache{planned}.",
        )
    return None


def _lite0_kernels() -> Kernels | None:
    try:
        path = lite0_weights_path()
        # weights_only: the file is a plain state dict, so nothing in it may run code while loading.
        state = torch.load(path, map_location="cpu", weights_only=True)
        stem = state[_LITE0_STEM].float().numpy()
        kernel = state[_LITE0_KERNEL].float().numpy()
    except (BitStudioError, OSError, RuntimeError, KeyError, AttributeError, TypeError):
        return None
    return Kernels(
        model="EfficientNet-Lite0",
        pretrained=True,
        uses_ws=False,
        stem=np.ascontiguousarray(stem),
        stem_stride=2,
        stem_text=f"the first convolution of EfficientNet-Lite0 ({stem.shape[2]}x{stem.shape[3]}, "
        f"{stem.shape[0]} filters, ImageNet weights)",
        kernel=np.ascontiguousarray(kernel),
        kernel_text=f"the last 1x1 convolution of EfficientNet-Lite0 ({kernel.shape[1]} channels in, "
        f"{kernel.shape[0]} filters out)",
        source="No BiT weights are downloaded yet, so these are EfficientNet-Lite0's ImageNet weights, "
        "which come with BiT Studio.",
    )


def _random_kernels() -> Kernels:
    g = torch.Generator().manual_seed(0)
    stem = torch.randn(64, 3, 7, 7, generator=g) * math.sqrt(2 / (3 * 49))
    kernel = torch.randn(64, 64, 3, 3, generator=g) * math.sqrt(2 / (64 * 9)) + 0.01
    return Kernels(
        model="",
        pretrained=False,
        uses_ws=True,
        stem=stem.numpy(),
        stem_stride=2,
        stem_text="a 7x7 convolution with 64 fixed random filters (BiT's first layer has this shape)",
        kernel=kernel.numpy(),
        kernel_text="a 3x3 convolution with 64 fixed random filters",
        source="No pre-trained weights are available, so these are fixed random weights.",
    )


def load_kernels(model: str = DEFAULT_MODEL) -> Kernels:
    """The weights the demonstrations use: BiT's when cached, else EfficientNet-Lite0's, else random ones.

    Args:
        model: the planned model; its own cached BiT weights are preferred over another BiT model's.
    """
    return _bit_kernels(model) or _lite0_kernels() or _random_kernels()


# ------------------------------------------------------------------------------------------------ photos


def _check(cancel: CancelFlag | None) -> None:
    if cancel is not None and cancel.is_set():
        raise OperationCancelled("The demonstration was cancelled.")


def _load(report: DatasetReport, sample: Sample, side: int) -> np.ndarray:
    """The photo resized to a `side` square as BiT resizes it (whole photo, aspect ratio not kept)."""
    path = report.path_of(sample)
    try:
        image = images.open_rgb(path, draft_size=(side, side))
    except images.ImageError as exc:
        raise BitStudioError(
            f"{sample.path} could not be read ({exc}). It may have changed since the folder was scanned: "
            "scan the folder again in the Data step."
        ) from exc
    return images.to_model_input(image, side)


def pick_batch(report: DatasetReport, mates: int) -> tuple[Sample, tuple[Sample, ...]]:
    """The demonstration's photo and `mates` batch-mates, the same every time for the same folder.

    The photo is the folder's first training photo; batch-mates are the other training photos in a fixed
    shuffled order (so they come from every class, as in training), repeated when there are too few.

    Raises:
        BitStudioError: the folder has no training photo.
    """
    if not report.train:
        raise BitStudioError("The folder has no photos to show: open a folder of labelled photos first.")
    photo, others = report.train[0], report.train[1:]
    if not others:
        return photo, (photo,) * mates
    order = np.random.default_rng(0).permutation(len(others))
    return photo, tuple(others[int(order[i % len(others)])] for i in range(mates))


def _to_input(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) scaled to [-1, 1], BiT's input normalization."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


# --------------------------------------------------------------------------------------- normalization


@dataclass(frozen=True, eq=False)
class NormalizationDemo:
    """One photo through Batch Norm and Group Norm in batches of several sizes.

    Attributes:
        photo: the photo's path in the folder ('/'-separated).
        label: its class.
        image: the photo as the layers saw it (uint8, side x side x 3).
        layer: the convolution that made the feature map, in words.
        channels: channels of the feature map.
        groups: Group Norm's groups.
        batch_sizes: photos per batch, the first being 1.
        distinct_mates: different batch-mates available (fewer than the largest batch: some repeat).
        channel: the channel `batch_norm_maps` and `group_norm_maps` show (where Batch Norm changes most).
        batch_norm_maps: that channel of the photo's Batch Norm output, one (H, W) array per batch size.
        group_norm_maps: the same for Group Norm.
        batch_norm_change: mean absolute difference of the photo's whole Batch Norm output against the
            batch of 1, per batch size (0 for the batch of 1 itself).
        group_norm_change: the same for Group Norm.
        points: (row, column) of the sample values.
        batch_norm_values: the photo's Batch Norm output at `points` in `channel`, per batch size.
        group_norm_values: the same for Group Norm.
    """

    photo: str
    label: str
    image: np.ndarray
    layer: str
    channels: int
    groups: int
    batch_sizes: tuple[int, ...]
    distinct_mates: int
    channel: int
    batch_norm_maps: tuple[np.ndarray, ...]
    group_norm_maps: tuple[np.ndarray, ...]
    batch_norm_change: tuple[float, ...]
    group_norm_change: tuple[float, ...]
    points: tuple[tuple[int, int], ...]
    batch_norm_values: tuple[tuple[float, ...], ...]
    group_norm_values: tuple[tuple[float, ...], ...]

    @property
    def display_range(self) -> tuple[float, float]:
        """One grey scale for every map, so a change of the numbers is a change of the picture."""
        stacked = np.concatenate([m.ravel() for m in (*self.batch_norm_maps, *self.group_norm_maps)])
        lo, hi = np.percentile(stacked, [1, 99])
        return float(lo), float(max(hi, lo + 1e-6))


def normalize_in_batches(
    features: torch.Tensor, batch_sizes: tuple[int, ...] = BATCH_SIZES, groups: int = GN_GROUPS
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The first sample's Batch Norm and Group Norm output when normalized with the first `b` samples.

    Batch Norm as it runs while training (statistics of the batch in hand, per channel over every photo
    and position); Group Norm per photo over groups of channels. Neither has its learned scale and shift,
    which would change both the same way.

    Args:
        features: feature maps (N, C, H, W), N at least max(batch_sizes).
        batch_sizes: batch sizes to compare.
        groups: Group Norm's groups (reduced to a divisor of C).

    Returns:
        (Batch Norm outputs, Group Norm outputs): the first sample's (C, H, W) output for each batch size.
    """
    groups = math.gcd(groups, features.shape[1])
    bn, gn = [], []
    for b in batch_sizes:
        batch = features[:b]
        bn.append(F.batch_norm(batch, None, None, training=True, eps=NORM_EPS)[0])
        gn.append(F.group_norm(batch, groups, eps=NORM_EPS)[0])
    return bn, gn


def normalization_demo(
    report: DatasetReport,
    kernels: Kernels,
    *,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    side: int = DEMO_SIDE,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelFlag | None = None,
) -> NormalizationDemo:
    """The folder's first photo through Batch Norm and Group Norm in batches of `batch_sizes`.

    Raises:
        BitStudioError: a photo cannot be read any more.
        OperationCancelled: `cancel` was set.
    """
    if batch_sizes[0] != 1:
        raise ValueError("The first batch size must be 1: the others are compared with it.")
    photo, mates = pick_batch(report, max(batch_sizes) - 1)
    batch = (photo, *mates)
    pixels = []
    for i, sample in enumerate(batch):
        _check(cancel)
        if on_progress is not None:
            on_progress(
                Progress(
                    "explaining", i, len(batch), message=f"Reading your photos ({i + 1} of {len(batch)})"
                )
            )
        pixels.append(_load(report, sample, side))
    _check(cancel)
    stacked = np.stack(pixels)
    with torch.no_grad():
        # Normalized in double precision: GroupNorm's output is then the same to the last printed digit
        # whatever the batch (in float32 batched kernels differ by rounding, about 1e-6).
        features = kernels.stem_conv()(_to_input(stacked)).double()
        bn, gn = normalize_in_batches(features, batch_sizes)
    base_bn, base_gn = bn[0], gn[0]
    bn_change = [float((out - base_bn).abs().mean()) for out in bn]
    gn_change = [float((out - base_gn).abs().mean()) for out in gn]
    per_channel = (bn[-1] - base_bn).abs().mean(dim=(1, 2))
    channel = int(per_channel.argmax())
    h, w = base_bn.shape[1:]
    points = ((h // 2, w // 2), (h // 4, w // 4), (3 * h // 4, 3 * w // 4))

    def values(out: torch.Tensor) -> tuple[float, ...]:
        return tuple(float(out[channel, r, c]) for r, c in points)

    return NormalizationDemo(
        photo=photo.path,
        label=report.classes[photo.label],
        image=stacked[0],
        layer=kernels.stem_text,
        channels=int(features.shape[1]),
        groups=math.gcd(GN_GROUPS, int(features.shape[1])),
        batch_sizes=tuple(batch_sizes),
        distinct_mates=len({s.path for s in mates} - {photo.path}),
        channel=channel,
        batch_norm_maps=tuple(out[channel].numpy().copy() for out in bn),
        group_norm_maps=tuple(out[channel].numpy().copy() for out in gn),
        batch_norm_change=tuple(bn_change),
        group_norm_change=tuple(gn_change),
        points=points,
        batch_norm_values=tuple(values(out) for out in bn),
        group_norm_values=tuple(values(out) for out in gn),
    )


# ------------------------------------------------------------------------------- weight standardization


@dataclass(frozen=True, eq=False)
class WeightHistogram:
    """A weight distribution: histogram and summary figures.

    Attributes:
        edges: bin edges (bins + 1).
        counts: weights per bin.
        mean: mean of all the weights.
        std: standard deviation of all the weights.
        channel_means: mean of each output channel's weights (each filter).
        channel_stds: standard deviation of each filter's weights.
    """

    edges: np.ndarray
    counts: np.ndarray
    mean: float
    std: float
    channel_means: np.ndarray
    channel_stds: np.ndarray


def _histogram(w: np.ndarray, bins: int) -> WeightHistogram:
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    counts, edges = np.histogram(flat, bins=bins)
    return WeightHistogram(
        edges=edges,
        counts=counts,
        mean=float(flat.mean()),
        std=float(flat.std()),
        channel_means=flat.mean(axis=1),
        channel_stds=flat.std(axis=1),
    )


@dataclass(frozen=True, eq=False)
class StandardizationDemo:
    """A convolution kernel's weights before and after Weight Standardization.

    Attributes:
        model: the model the kernel comes from ("" for random weights).
        pretrained: the kernel holds pre-trained weights.
        uses_ws: the model standardizes its weights itself (BiT); False: the kernel is only an illustration.
        layer: the convolution, in words.
        source: which weights these are and why, in a sentence.
        shape: the kernel's shape (out, in, kh, kw).
        before: the weights as stored.
        after: the weights as the convolution uses them after standardization.
    """

    model: str
    pretrained: bool
    uses_ws: bool
    layer: str
    source: str
    shape: tuple[int, ...]
    before: WeightHistogram
    after: WeightHistogram


def standardize(kernel: np.ndarray) -> np.ndarray:
    """`kernel` (out, in, kh, kw) standardized by the model's own `StdConv2d`: what a BiT convolution uses."""
    out, cin, kh, kw = kernel.shape
    conv = models.StdConv2d(cin, out, (kh, kw), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32)))
        return conv.standardized_weight().numpy().copy()


def standardization_demo(kernels: Kernels, bins: int = HISTOGRAM_BINS) -> StandardizationDemo:
    """The weight distribution of `kernels.kernel` before and after Weight Standardization."""
    after = standardize(kernels.kernel)
    return StandardizationDemo(
        model=kernels.model,
        pretrained=kernels.pretrained,
        uses_ws=kernels.uses_ws,
        layer=kernels.kernel_text,
        source=kernels.source,
        shape=tuple(kernels.kernel.shape),
        before=_histogram(kernels.kernel, bins),
        after=_histogram(after, bins),
    )


# ------------------------------------------------------------------------------------------------- mixup


@dataclass(frozen=True, eq=False)
class MixupPair:
    """Two photos of different classes, as float RGB in [0, 1] (side x side x 3).

    Attributes:
        first: the first photo.
        second: the second photo.
        labels: their classes.
        paths: their paths in the folder.
    """

    first: np.ndarray
    second: np.ndarray
    labels: tuple[str, str]
    paths: tuple[str, str]


def mixup_pair(report: DatasetReport, side: int = MIXUP_SIDE) -> MixupPair:
    """The first training photo of the folder's first two classes (that have photos).

    Raises:
        BitStudioError: the folder has photos of fewer than two classes, or a photo cannot be read.
    """
    firsts: dict[int, Sample] = {}
    for sample in report.train:
        firsts.setdefault(sample.label, sample)
        if len(firsts) == 2:
            break
    if len(firsts) < 2:
        raise BitStudioError("Mixup blends photos of two classes: the folder needs photos of at least two.")
    a, b = firsts.values()
    return MixupPair(
        first=_load(report, a, side).astype(np.float32) / 255.0,
        second=_load(report, b, side).astype(np.float32) / 255.0,
        labels=(report.classes[a.label], report.classes[b.label]),
        paths=(a.path, b.path),
    )


def _percent(weight: float) -> str:
    pct = 100 * weight
    if pct < 0.1:
        return "under 0.1%" if pct > 0 else "0%"
    if pct > 99.9:
        return "over 99.9%" if pct < 100 else "100%"
    return f"{pct:.0f}%" if 1 <= pct <= 99 else f"{pct:.1f}%"


@dataclass(frozen=True, eq=False)
class MixupDemo:
    """Two photos blended as mixup blends them while training.

    Attributes:
        mixed: lam * first + (1 - lam) * second, float RGB in [0, 1].
        lam: the weight of the first photo, drawn from Beta(alpha, alpha).
        alpha: the alpha it was drawn with.
        rule_alpha: the plan's alpha (0: the plan trains without mixup, and `alpha` is BiT's 0.1 instead).
        draw: which draw this is (the same draw gives the same lambda).
        labels: the two photos' classes.
    """

    mixed: np.ndarray
    lam: float
    alpha: float
    rule_alpha: float
    draw: int
    labels: tuple[str, str]

    @property
    def label_weights(self) -> tuple[tuple[str, float], tuple[str, float]]:
        """The blended label: each class with its weight (they sum to 1), as the loss counts them."""
        return (self.labels[0], self.lam), (self.labels[1], 1.0 - self.lam)

    @property
    def caption(self) -> str:
        """The blended label in words, e.g. "63% cat, 37% dog"."""
        return ", ".join(f"{_percent(w)} {name}" for name, w in self.label_weights)


def mix(first: np.ndarray, second: np.ndarray, lam: float) -> np.ndarray:
    """Mixup's blend of two images: lam * first + (1 - lam) * second (the training loop's formula)."""
    return (lam * first + (1.0 - lam) * second).astype(np.float32)


def mixup_demo(pair: MixupPair, rule_alpha: float, draw: int = 1, seed: int = 0) -> MixupDemo:
    """Blend `pair` with a lambda from Beta(alpha, alpha), alpha the plan's (or 0.1 where the plan has none).

    Args:
        pair: the two photos.
        rule_alpha: the plan's mixup alpha (0: off).
        draw: which draw; the lambda is the one training draws for that step (`sampling.mixup_lambda`).
        seed: the run's seed.
    """
    alpha = rule_alpha if rule_alpha > 0 else ILLUSTRATION_ALPHA
    lam = sampling.mixup_lambda(seed, draw, alpha)
    return MixupDemo(
        mixed=mix(pair.first, pair.second, lam),
        lam=lam,
        alpha=alpha,
        rule_alpha=rule_alpha,
        draw=draw,
        labels=pair.labels,
    )


# -------------------------------------------------------------------------------------------- HyperRule


@dataclass(frozen=True)
class RuleExplanation:
    """One choice of the HyperRule for this folder.

    Attributes:
        key: which choice ("size", "steps", "resolution", "mixup", "changes").
        title: a few words.
        decision: what the plan decided (the plan's own reason sentence where it has one).
        why: why, in plain words.
    """

    key: str
    title: str
    decision: str
    why: str


def plan_for(report: DatasetReport, config: TrainConfig | None = None) -> hyperrule.HyperRulePlan:
    """The HyperRule plan for the folder: the config's (the Plan step's), or the default model's rule.

    Raises:
        BitStudioError: the folder cannot be trained on (its report's errors), or an override is out of range.
    """
    config = config or TrainConfig(data_dir=report.root)
    if report.median_size is None:
        raise BitStudioError("The folder has no photos to plan for.")
    split = holdout.split(report, config.val_fraction, config.seed)
    return preparation.make_plan(config, len(split.train), report.median_size)


def _size_tier(n: int) -> str:
    if n < hyperrule.SMALL_TASK:
        return f"fewer than {hyperrule.SMALL_TASK:,}: a small task"
    if n < hyperrule.LARGE_TASK:
        return f"from {hyperrule.SMALL_TASK:,} to {hyperrule.LARGE_TASK:,}: a medium task"
    return f"{hyperrule.LARGE_TASK:,} or more: a large task"


def hyperrule_story(plan: hyperrule.HyperRulePlan) -> tuple[RuleExplanation, ...]:
    """Why the HyperRule chose this schedule, resolution and mixup for the folder, in plain words."""
    n = plan.num_images
    w, h = plan.median_size
    story = [
        RuleExplanation(
            "size",
            "How many photos",
            f"{n:,} photos to train on, {_size_tier(n)}.",
            f"Tasks come in three sizes (under {hyperrule.SMALL_TASK:,} photos, under "
            f"{hyperrule.LARGE_TASK:,}, more), which set the schedule and mixup; validation photos do not count.",
        )
    ]
    seen = plan.total_steps * plan.batch / n
    boundaries = ", ".join(f"{b:,}" for b in plan.lr_boundaries)
    story.append(
        RuleExplanation(
            "steps",
            "How long it trains",
            plan.reasons["steps"],
            f"Each step shows the model {plan.batch:,} photos and adjusts its weights a little: in "
            f"{plan.total_steps:,} steps each of your photos is seen about {seen:,.0f} times. The adjustments "
            f"grow over the first {plan.warmup_steps:,} steps, so the start does not wreck what pre-training "
            f"learned, and shrink tenfold after steps {boundaries}, to end with fine corrections.",
        )
    )
    small = w * h < hyperrule.SMALL_IMAGE_AREA
    chosen = any(o.setting == "resolution" for o in plan.overrides)
    resize, crop = hyperrule.resolution(plan.median_size, plan.model)
    if small:
        why = (
            f"Your photos are small (under 96x96 pixels): enlarged to {resize}x{resize}, with a random "
            f"{crop}x{crop} part cut out each time. A larger input would add no detail, only time."
        )
    else:
        why = (
            f"Your photos are 96x96 pixels or larger: resized to {resize}x{resize}, with a random {crop}x{crop} "
            f"part cut out each time, more than the {hyperrule.PRETRAINING_CROP} pixels of pre-training: "
            "fine-tuning at a higher resolution lets the network use finer detail."
        )
    if chosen:
        why = "You chose the size yourself. The rule's reasoning: " + why
    elif plan.strategy == "head" and plan.crop != crop:
        why = "For fine-tuning the whole network the rule goes by photo size. " + why
    story.append(
        RuleExplanation(
            "resolution",
            "Picture size",
            plan.reasons["resolution"],
            why + " Photos are squeezed to a square, whatever their shape.",
        )
    )
    if plan.mixup_alpha > 0:
        why = (
            f"Mixup blends pairs of photos and their labels at every step, with a weight drawn from "
            f"Beta({plan.mixup_alpha:g}, {plan.mixup_alpha:g}). With thousands of photos it makes the "
            "model less sure of itself between classes, which helps it generalize."
        )
    else:
        why = (
            f"Blending photos did not help tasks under {hyperrule.SMALL_TASK:,} photos. The Mixup section shows "
            "what it does, with the 0.1 of larger tasks."
        )
    story.append(RuleExplanation("mixup", "Mixup", plan.reasons["mixup"], why))
    if plan.overrides:
        changes = " ".join(
            o.warning or f"{o.setting.replace('_', ' ').capitalize()}: {o.value} (the rule: {o.rule_value})."
            for o in plan.overrides
        )
        story.append(
            RuleExplanation(
                "changes",
                "Your changes",
                changes,
                "The Plan step keeps the HyperRule's values unless you change them; "
                "its Reset button brings them back.",
            )
        )
    return tuple(story)


# ---------------------------------------------------------------------------------------------- all four


@dataclass(frozen=True, eq=False)
class Explanation:
    """The four demonstrations for one folder and plan.

    Attributes:
        normalization: Batch Norm vs Group Norm on the folder's photo.
        standardization: a kernel before and after Weight Standardization.
        pair: the two photos mixup blends (kept for drawing again).
        mixup: the blend with the first draw.
        plan: the HyperRule plan the story explains.
        planned: the plan is the Plan step's (False: no plan yet, the default model's rule).
        story: the HyperRule's choices, in words.
    """

    normalization: NormalizationDemo
    standardization: StandardizationDemo
    pair: MixupPair
    mixup: MixupDemo
    plan: hyperrule.HyperRulePlan
    planned: bool
    story: tuple[RuleExplanation, ...]


def explain(
    report: DatasetReport,
    config: TrainConfig | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelFlag | None = None,
) -> Explanation:
    """Every demonstration for `report`'s folder and `config`'s plan (None: the default model's rule).

    Raises:
        BitStudioError: the folder cannot be planned for or a photo cannot be read; the message says why.
        OperationCancelled: `cancel` was set.
    """
    plan = plan_for(report, config)
    model = config.model if config is not None else DEFAULT_MODEL
    _check(cancel)
    if on_progress is not None:
        on_progress(Progress("explaining", 0, 1, message="Loading the model's weights"))
    kernels = load_kernels(model)
    normalization = normalization_demo(report, kernels, on_progress=on_progress, cancel=cancel)
    _check(cancel)
    pair = mixup_pair(report)
    seed = config.seed if config is not None else 0
    return Explanation(
        normalization=normalization,
        standardization=standardization_demo(kernels),
        pair=pair,
        mixup=mixup_demo(pair, plan.mixup_alpha, seed=seed),
        plan=plan,
        planned=config is not None,
        story=hyperrule_story(plan),
    )
