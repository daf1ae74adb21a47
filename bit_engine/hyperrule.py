"""BiT-HyperRule: the fine-tuning settings BiT picks from the size of a task alone.

Pure functions of (number of training images, median image size, model), following the BiT paper
(Kolesnikov et al., "Big Transfer (BiT): General Visual Representation Learning", ECCV 2020) and
google-research/big_transfer `bit_hyperrule.py`: the schedule (500 steps below 20k images, 10k below 500k,
20k above, each with a linear warm-up and the learning rate divided by 10 three times), the resolution
(resize to 160 and crop 128 for images whose area is below 96x96 pixels, else resize to 448 and crop 384),
mixup (alpha 0.1 from 20k images) and SGD with momentum 0.9 at lr 0.003 for a batch of 512, scaled linearly.
`plan()` gathers them into a `HyperRulePlan` with a reason in plain words for every choice, and records every
user override with a warning when it leaves the paper's rule.

The head strategy's resolution. The rule's resolution (384 px for most photos, 128 for tiny images, 480 for
R152x4) is made for full fine-tuning, where the network adapts to the new scale of objects. The head strategy
trains a linear head on frozen features, and a frozen backbone cannot adapt: it sees objects best at the
scale it was pre-trained at, 224 px for every model here. So `plan(..., strategy="head")` takes 224 and keeps
the rule's own value in `HyperRulePlan.rule_crop`, which a GUI offers one click away. The figures behind it,
5-fold logistic regression on frozen EfficientNet-Lite0 features at 128 / 224 / 384 px, with the feature
pass's time at each (bench/head_resolution.py, 2 shared CPU cores, so only the ratios of times count):

    data                                            128     224     384    time 128 / 224 / 384
    400 handwritten digits (scikit-learn), 32x32   0.912   0.910   0.915   21 / 68 / 202 s
    120 generated shapes, 500x375 photos           0.992   0.967   0.983   10 / 34 / 82 s
    120 generated shapes, 64x64                    0.992   1.000   0.992    7 / 25 / 85 s
    240 photos of ants and bees                      -     0.954   0.958
    400 low-resolution flower photos, 5 classes    0.653   0.705   0.665

(the last two were measured the same way on photos, before this project's benches). 224 is within 2 points
of 384 on every set and 4 points better on the flowers, at a third to two fifths of its time; against 128 it
is level on the generated sets and 5 points better on the flowers. The generated sets are easy (near 1.0)
and small (one image is 0.8 points), so they mainly show that 224 loses nothing. Only EfficientNet-Lite0's
weights are available offline: a BiT model with random weights says nothing about accuracy, so the BiT family
has not been measured; its pre-training resolution is 224 too, and the same reasoning applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SMALL_TASK = 20_000
LARGE_TASK = 500_000
BASE_LR = 0.003
BASE_BATCH = 512
MOMENTUM = 0.9
SMALL_IMAGE_AREA = 96 * 96

#: The input side every known backbone was pre-trained at (BiT's upstream training and EfficientNet-Lite0's
#: ImageNet training). The head strategy keeps it; see `strategy_resolution`.
PRETRAINING_CROP = 224


@dataclass(frozen=True)
class Schedule:
    """Optimizer-step schedule: linear warm-up, then lr / 10 after each boundary, ending at `total`."""

    warmup: int
    boundaries: tuple[int, ...]
    total: int

    @property
    def supports(self) -> tuple[int, ...]:
        return (self.warmup, *self.boundaries, self.total)


def schedule(num_images: int) -> Schedule:
    """The HyperRule schedule for a training set of `num_images`."""
    if num_images < SMALL_TASK:
        return Schedule(100, (200, 300, 400), 500)
    if num_images < LARGE_TASK:
        return Schedule(500, (3000, 6000, 9000), 10_000)
    return Schedule(500, (6000, 12_000, 18_000), 20_000)


def mixup_alpha(num_images: int) -> float:
    """Mixup is off for small tasks (it does not help few-shot), 0.1 from 20,000 images on."""
    return 0.0 if num_images < SMALL_TASK else 0.1


def resolution(median_size: tuple[int, int], model: str = "") -> tuple[int, int]:
    """(resize, crop) for a task whose median image is `median_size` (width, height).

    The paper's rule: small images (area below 96x96) go to 160 then crop 128; others to 448 then crop 384,
    and 512/480 for R152x4. (The reference code returns 512/480 for every model; the paper wins.)
    """
    w, h = median_size
    if w * h < SMALL_IMAGE_AREA:
        return 160, 128
    if model.upper().endswith("R152X4"):
        return 512, 480
    return 448, 384


def strategy_resolution(
    median_size: tuple[int, int], model: str = "", strategy: str = "full"
) -> tuple[int, int]:
    """(resize, crop) for a strategy: the HyperRule's for `full` and `scratch`, 224 for `head`.

    The HyperRule raises the resolution because full fine-tuning lets the network adapt to the new scale of
    the objects. A frozen backbone cannot adapt: its features are best at the scale it was pre-trained at.
    The module docstring has the measurements behind this. The resize keeps the rule's ratio to the crop.
    """
    resize, crop = resolution(median_size, model)
    if strategy != "head":
        return resize, crop
    return round(PRETRAINING_CROP * resize / crop), PRETRAINING_CROP


def lr(step: int, sched: Schedule, base_lr: float = BASE_LR) -> float | None:
    """Learning rate at optimizer `step`, or None once training is over (the reference's convention).

    Linear warm-up from 0 at step 0 to `base_lr` at the end of warm-up, then divided by 10 once for each
    boundary strictly below `step`.
    """
    if step < sched.warmup:
        return base_lr * step / sched.warmup
    if step >= sched.total:
        return None
    return base_lr / 10 ** sum(1 for b in sched.boundaries if b < step)


@dataclass(frozen=True)
class Override:
    """A setting the user changed. `warning` is empty when the change keeps to the paper's rule."""

    setting: str
    rule_value: object
    value: object
    warning: str


@dataclass(frozen=True)
class HyperRulePlan:
    """Everything the HyperRule decided for one task, with the reasons.

    Attributes:
        model: model name the plan is for.
        num_images: training images.
        median_size: median (width, height) of the original images.
        resize: side of the square every training image is resized to before the random crop.
        crop: side of the random crop, which is also the input size at evaluation and export.
        schedule: warm-up, lr boundaries and total, in optimizer steps.
        base_lr: peak learning rate, already scaled to `batch`.
        batch: global batch (images per optimizer step).
        mixup_alpha: Beta(alpha, alpha) mixup; 0 is off.
        flip: random horizontal flip during training.
        random_crop: random crop during training (off: resize straight to `crop`).
        momentum: SGD momentum (no weight decay).
        strategy: full, head or scratch (the head strategy keeps the pre-training resolution).
        rule_crop: the crop the paper's HyperRule alone would pick; differs from `crop` for the head
            strategy (or an override): the value a GUI offers to switch back to.
        reasons: one sentence per choice, in words a non-expert understands.
        overrides: settings the user changed, with warnings where they leave the rule.
    """

    model: str
    num_images: int
    median_size: tuple[int, int]
    resize: int
    crop: int
    schedule: Schedule
    base_lr: float
    batch: int
    mixup_alpha: float
    flip: bool = True
    random_crop: bool = True
    momentum: float = MOMENTUM
    strategy: str = "full"
    rule_crop: int = 0
    reasons: dict[str, str] = field(default_factory=dict)
    overrides: tuple[Override, ...] = ()

    @property
    def total_steps(self) -> int:
        return self.schedule.total

    @property
    def warmup_steps(self) -> int:
        return self.schedule.warmup

    @property
    def lr_boundaries(self) -> tuple[int, ...]:
        return self.schedule.boundaries

    @property
    def warnings(self) -> list[str]:
        return [o.warning for o in self.overrides if o.warning]

    def lr(self, step: int) -> float | None:
        return lr(step, self.schedule, self.base_lr)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "num_images": self.num_images,
            "median_size": list(self.median_size),
            "resize": self.resize,
            "crop": self.crop,
            "warmup_steps": self.warmup_steps,
            "lr_boundaries": list(self.lr_boundaries),
            "total_steps": self.total_steps,
            "base_lr": self.base_lr,
            "batch": self.batch,
            "mixup_alpha": self.mixup_alpha,
            "flip": self.flip,
            "random_crop": self.random_crop,
            "momentum": self.momentum,
            "strategy": self.strategy,
            "rule_crop": self.rule_crop or self.crop,
            "reasons": dict(self.reasons),
            "overrides": [
                {"setting": o.setting, "rule_value": o.rule_value, "value": o.value, "warning": o.warning}
                for o in self.overrides
            ],
        }


def _scaled_schedule(sched: Schedule, total: int) -> Schedule:
    # Keep the shape of the rule (warm-up and boundaries at the same fractions of the run).
    def at(step: int) -> int:
        return max(1, round(step * total / sched.total))

    return Schedule(at(sched.warmup), tuple(at(b) for b in sched.boundaries), total)


def plan(
    num_images: int,
    median_size: tuple[int, int],
    model: str,
    *,
    batch: int | None = None,
    steps: int | None = None,
    crop: int | None = None,
    mixup: float | None = None,
    flip: bool | None = None,
    random_crop: bool | None = None,
    strategy: str = "full",
) -> HyperRulePlan:
    """Apply the HyperRule to a task, then the user's overrides (None keeps the rule's choice).

    Args:
        num_images: training images.
        median_size: median (width, height) of the original images.
        model: model name (R152x4 gets a larger resolution).
        batch: global batch; the learning rate scales linearly with it (0.003 at 512).
        steps: total optimizer steps; warm-up and boundaries keep their fractions of the run.
        crop: input side; the pre-crop resize keeps the rule's ratio to it (448/384, 160/128).
        mixup: mixup alpha (0 turns it off).
        flip: random horizontal flip on/off (off where mirroring changes the label, e.g. text, arrows).
        random_crop: random crop on/off (off where positions matter).
        strategy: full, head or scratch; `head` keeps the backbone's pre-training resolution (see
            `strategy_resolution`), with the HyperRule's own value in `rule_crop`.
    """
    if num_images < 1:
        raise ValueError("The training set is empty: the HyperRule needs at least one image.")
    sched = schedule(num_images)
    alpha = mixup_alpha(num_images)
    rule_resize, rule_crop = resolution(median_size, model)
    resize, crop_rule = strategy_resolution(median_size, model, strategy)
    n, (w, h) = f"{num_images:,} images", median_size
    tier = (
        f"fewer than {SMALL_TASK:,}"
        if num_images < SMALL_TASK
        else f"fewer than {LARGE_TASK:,}"
        if num_images < LARGE_TASK
        else f"{LARGE_TASK:,} or more"
    )
    reasons = {
        "steps": f"{n}, {tier}: {sched.total:,} steps, warm-up {sched.warmup}, learning rate / 10 after "
        f"steps {', '.join(f'{b:,}' for b in sched.boundaries)}.",
        "mixup": f"{n}: " + ("no mixup (it does not help small tasks)." if alpha == 0 else f"mixup {alpha}."),
        "resolution": (
            f"Median image {w}x{h}, "
            + ("smaller than 96x96" if w * h < SMALL_IMAGE_AREA else "96x96 or larger")
            + f": resize to {resize}x{resize}, random crop {crop_rule}x{crop_rule}."
        ),
    }
    if crop_rule != rule_crop:
        measured = (
            f"about as accurate as {rule_crop} (within 2 points, sometimes better) in about a third of the time"
            if rule_crop > crop_rule
            else f"as accurate as {rule_crop} or better"
        )
        reasons["resolution"] = (
            f"Head only: {crop_rule}x{crop_rule}, the size the backbone was pre-trained at. A frozen backbone "
            f"cannot adapt to a new scale, and on frozen features {crop_rule} was {measured}. The HyperRule's "
            f"{rule_crop}x{rule_crop} is meant for fine-tuning the whole network."
        )
    reasons |= {
        "batch": f"{BASE_BATCH} images per step at learning rate {BASE_LR}, as in the paper.",
        "augmentation": "Random crop and horizontal flip while training; none when evaluating.",
        "optimizer": "SGD with momentum 0.9, no weight decay, head started at zero.",
    }
    overrides: list[Override] = []

    def record(setting, rule_value, value, warning=""):
        overrides.append(Override(setting, rule_value, value, warning))

    global_batch, base_lr = BASE_BATCH, BASE_LR
    if batch is not None and batch != BASE_BATCH:
        if batch < 1:
            raise ValueError(f"Batch must be at least 1, got {batch}.")
        global_batch, base_lr = batch, BASE_LR * batch / BASE_BATCH
        record(
            "batch",
            BASE_BATCH,
            batch,
            f"Batch {batch} instead of {BASE_BATCH}: learning rate scaled linearly to {base_lr:.6g}. "
            "The paper's authors report batch 128 as nearly identical; much smaller batches can cost accuracy.",
        )
        reasons["batch"] = f"{batch} images per step (you chose it): learning rate {base_lr:.6g}."
    if steps is not None and steps != sched.total:
        if steps < 1:
            raise ValueError(f"Steps must be at least 1, got {steps}.")
        rule_total = sched.total
        sched = _scaled_schedule(sched, steps)
        record(
            "steps",
            rule_total,
            steps,
            f"{steps:,} steps instead of the rule's {rule_total:,}: "
            + ("shorter runs usually end less accurate." if steps < rule_total else "longer than the paper."),
        )
        reasons["steps"] = (
            f"{steps:,} steps (you chose it), warm-up {sched.warmup}, learning rate / 10 after steps "
            f"{', '.join(f'{b:,}' for b in sched.boundaries)}."
        )
    crop_final = crop_rule
    if crop is not None and crop != crop_rule:
        if crop < 8:
            raise ValueError(f"Resolution must be at least 8 pixels, got {crop}.")
        crop_final, resize = crop, round(crop * rule_resize / rule_crop)
        if strategy == "head" and crop == rule_crop:
            why = "the HyperRule's value for fine-tuning the whole network; a frozen backbone gains little from it."
        else:
            why = "faster, usually less accurate." if crop < crop_rule else "slower, more memory."
        record("resolution", crop_rule, crop, f"Resolution {crop} instead of {crop_rule}: {why}")
        reasons["resolution"] = f"Resolution {crop} (you chose it): resize to {resize}x{resize}, crop {crop}."
    if mixup is not None and mixup != alpha:
        if mixup < 0:
            raise ValueError(f"Mixup alpha cannot be negative, got {mixup}.")
        record(
            "mixup",
            alpha,
            mixup,
            f"Mixup {mixup} instead of the rule's {alpha:g}: the paper uses "
            + ("none below 20,000 images." if alpha == 0 else f"{alpha:g} from 20,000 images on."),
        )
        reasons["mixup"] = "No mixup (you chose it)." if mixup == 0 else f"Mixup {mixup} (you chose it)."
        alpha = mixup
    use_flip = True if flip is None else flip
    use_crop = True if random_crop is None else random_crop
    if not use_flip:
        record("flip", True, False, "")
    if not use_crop:
        record("random_crop", True, False, "")
    if not (use_flip and use_crop):
        kept = [x for x, on in (("random crop", use_crop), ("horizontal flip", use_flip)) if on]
        reasons["augmentation"] = (
            f"Only {kept[0]} while training (you turned the other off: right when it would change the label)."
            if kept
            else "No augmentation (you turned crop and flip off: right when they would change the label)."
        )
    return HyperRulePlan(
        model=model,
        num_images=num_images,
        median_size=(int(w), int(h)),
        resize=resize if use_crop else crop_final,
        crop=crop_final,
        schedule=sched,
        base_lr=base_lr,
        batch=global_batch,
        mixup_alpha=alpha,
        flip=use_flip,
        random_crop=use_crop,
        strategy=strategy,
        rule_crop=rule_crop,
        reasons=reasons,
        overrides=tuple(overrides),
    )
