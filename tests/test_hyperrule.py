"""BiT-HyperRule at its boundaries, the lr schedule, and overrides."""

from __future__ import annotations

import pytest

from bit_engine import hyperrule
from bit_engine.hyperrule import Schedule, plan


@pytest.mark.parametrize(
    ("n", "warmup", "boundaries", "total", "mixup"),
    [
        (1, 100, (200, 300, 400), 500, 0.0),
        (19_999, 100, (200, 300, 400), 500, 0.0),
        (20_000, 500, (3000, 6000, 9000), 10_000, 0.1),
        (499_999, 500, (3000, 6000, 9000), 10_000, 0.1),
        (500_000, 500, (6000, 12_000, 18_000), 20_000, 0.1),
        (1_281_167, 500, (6000, 12_000, 18_000), 20_000, 0.1),
    ],
)
def test_schedule_and_mixup_by_dataset_size(n, warmup, boundaries, total, mixup):
    p = plan(n, (500, 375), "BiT-M-R50x1")
    assert (p.warmup_steps, p.lr_boundaries, p.total_steps, p.mixup_alpha) == (
        warmup,
        boundaries,
        total,
        mixup,
    )
    assert (p.base_lr, p.batch, p.momentum) == (0.003, 512, 0.9)


@pytest.mark.parametrize(
    ("size", "model", "resize", "crop"),
    [
        ((95, 95), "BiT-M-R50x1", 160, 128),
        ((96, 96), "BiT-M-R50x1", 448, 384),
        ((32, 32), "BiT-M-R152x4", 160, 128),
        ((96, 96), "BiT-M-R152x4", 512, 480),
        ((96, 96), "BiT-S-R152x2", 448, 384),
        ((192, 48), "BiT-M-R50x1", 448, 384),  # area, not side: 192*48 == 96*96
    ],
)
def test_resolution_by_median_image_area(size, model, resize, crop):
    p = plan(100, size, model)
    assert (p.resize, p.crop) == (resize, crop)


def test_lr_follows_the_reference_semantics():
    s = Schedule(100, (200, 300, 400), 500)
    assert hyperrule.lr(0, s) == 0.0
    assert hyperrule.lr(50, s) == pytest.approx(0.0015)
    assert hyperrule.lr(100, s) == pytest.approx(0.003)
    assert hyperrule.lr(200, s) == pytest.approx(0.003)  # boundary not strictly below yet
    assert hyperrule.lr(201, s) == pytest.approx(0.0003)
    assert hyperrule.lr(301, s) == pytest.approx(0.00003)
    assert hyperrule.lr(499, s) == pytest.approx(0.000003)
    assert hyperrule.lr(500, s) is None


def test_reasons_are_plain_sentences_with_the_numbers():
    p = plan(4120, (640, 480), "BiT-M-R50x1")
    assert p.reasons["steps"].startswith("4,120 images, fewer than 20,000: 500 steps")
    assert "no mixup" in p.reasons["mixup"]
    assert "640x480" in p.reasons["resolution"] and "384" in p.reasons["resolution"]
    assert p.overrides == () and p.warnings == []


def test_batch_override_scales_lr_linearly_and_warns():
    p = plan(1000, (200, 200), "BiT-M-R50x1", batch=128)
    assert p.batch == 128 and p.base_lr == pytest.approx(0.00075)
    assert [o.setting for o in p.overrides] == ["batch"]
    assert "scaled linearly" in p.warnings[0]


def test_steps_override_keeps_the_schedule_shape():
    p = plan(1000, (200, 200), "BiT-M-R50x1", steps=50)
    assert p.schedule == Schedule(10, (20, 30, 40), 50)
    assert "50 steps instead of the rule's 500" in p.warnings[0]


def test_resolution_override_keeps_the_resize_ratio():
    p = plan(1000, (200, 200), "BiT-M-R50x1", crop=96)
    assert (p.resize, p.crop) == (112, 96)
    small = plan(1000, (32, 32), "BiT-M-R50x1", crop=64)
    assert (small.resize, small.crop) == (80, 64)


def test_mixup_flip_and_crop_overrides_are_recorded():
    p = plan(1000, (200, 200), "BiT-M-R50x1", mixup=0.2, flip=False, random_crop=False)
    assert p.mixup_alpha == 0.2 and not p.flip and not p.random_crop
    assert p.resize == p.crop == 384  # no random crop: straight to the input size
    assert {o.setting for o in p.overrides} == {"mixup", "flip", "random_crop"}
    assert p.warnings == ["Mixup 0.2 instead of the rule's 0: the paper uses none below 20,000 images."]
    assert "No augmentation" in p.reasons["augmentation"]


def test_same_value_as_rule_is_not_an_override():
    p = plan(1000, (200, 200), "BiT-M-R50x1", batch=512, steps=500, crop=384, mixup=0.0, flip=True)
    assert p.overrides == ()


@pytest.mark.parametrize("kwargs", [{"batch": 0}, {"steps": 0}, {"crop": 4}, {"mixup": -1.0}])
def test_invalid_overrides_are_refused(kwargs):
    with pytest.raises(ValueError):
        plan(1000, (200, 200), "BiT-M-R50x1", **kwargs)


def test_plan_is_json_ready():
    import json

    d = plan(25_000, (300, 300), "BiT-M-R50x1", batch=256).to_dict()
    assert json.loads(json.dumps(d))["lr_boundaries"] == [3000, 6000, 9000]


@pytest.mark.parametrize(
    ("size", "model", "rule_crop"),
    [
        ((500, 375), "BiT-M-R50x1", 384),
        ((32, 32), "EfficientNet-Lite0", 128),
        ((640, 480), "BiT-M-R152x4", 480),
    ],
)
def test_head_strategy_keeps_the_pretraining_resolution_with_the_rule_one_click_away(size, model, rule_crop):
    head = plan(400, size, model, strategy="head")
    full = plan(400, size, model, strategy="full")
    assert full.crop == full.rule_crop == rule_crop and full.strategy == "full"
    assert head.crop == 224 and head.rule_crop == rule_crop and head.strategy == "head"
    assert head.to_dict()["rule_crop"] == rule_crop and head.to_dict()["crop"] == 224
    # The resize keeps the rule's ratio to the crop (448/384, 160/128, 512/480).
    assert head.resize == round(224 * full.resize / full.crop)
    reason = head.reasons["resolution"]
    assert "224" in reason and str(rule_crop) in reason and "frozen" in reason
    assert not head.overrides  # the strategy's own choice, not a user override
    # Choosing the HyperRule's value is an ordinary override, recorded against the strategy's choice.
    back = plan(400, size, model, strategy="head", crop=rule_crop)
    assert back.crop == rule_crop and back.resize == full.resize
    assert [o.setting for o in back.overrides] == ["resolution"] and back.overrides[0].rule_value == 224


def test_full_and_scratch_keep_the_hyperrule_resolution():
    for strategy in ("full", "scratch"):
        p = plan(400, (500, 375), "BiT-M-R50x1", strategy=strategy)
        assert (p.resize, p.crop, p.rule_crop) == (448, 384, 384)
        assert "Head only" not in p.reasons["resolution"]
