"""The "How it works" demonstrations: the claims the view makes, checked on real numbers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from bit_engine import data, explain, hyperrule, models
from bit_engine.config import TrainConfig
from bit_engine.errors import BitStudioError
from bit_engine.progress import OperationCancelled


@pytest.fixture
def report(color_folder):
    return data.scan(color_folder)


def test_batch_norm_output_changes_with_batch_mates_and_group_norm_output_does_not(report):
    demo = explain.normalization_demo(report, explain.load_kernels())
    assert demo.batch_sizes == (1, 8, 32)
    assert demo.photo == report.train[0].path and demo.label == report.classes[report.train[0].label]
    # The photo's own output, compared with the batch of 1: BatchNorm's moves by a good part of its unit
    # scale once other colours share the batch; GroupNorm's does not move at all.
    assert demo.batch_norm_change[0] == 0.0 and demo.group_norm_change[0] == 0.0
    assert min(demo.batch_norm_change[1:]) > 0.1
    assert max(demo.group_norm_change) < 1e-9
    assert demo.batch_norm_values[0] != pytest.approx(demo.batch_norm_values[2], abs=0.05)
    assert demo.group_norm_values[0] == pytest.approx(demo.group_norm_values[2], abs=1e-9)
    assert np.allclose(demo.group_norm_maps[0], demo.group_norm_maps[2])
    assert not np.allclose(demo.batch_norm_maps[0], demo.batch_norm_maps[2], atol=0.05)
    assert demo.image.shape == (explain.DEMO_SIDE, explain.DEMO_SIDE, 3) and demo.image.dtype == np.uint8
    lo, hi = demo.display_range
    assert lo < 0 < hi
    # 30 photos: 29 different batch-mates for a batch of 32, so some repeat (and the view says so).
    assert demo.distinct_mates == 29


def test_normalize_in_batches_is_batch_norm_and_group_norm_as_torch_computes_them():
    features = torch.randn(32, 64, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    features[8:] += 3.0  # batch-mates with other statistics
    bn, gn = explain.normalize_in_batches(features)
    reference_bn = torch.nn.BatchNorm2d(64, affine=False, eps=explain.NORM_EPS, dtype=torch.float64).train()
    assert torch.allclose(bn[2], reference_bn(features)[0])
    reference_gn = torch.nn.GroupNorm(32, 64, affine=False, eps=explain.NORM_EPS, dtype=torch.float64)
    assert torch.allclose(gn[0], reference_gn(features[:1])[0])
    assert torch.allclose(gn[0], gn[2], atol=1e-12)
    assert not torch.allclose(bn[1], bn[2], atol=0.1)


def test_the_demonstration_uses_cached_bit_weights_with_weight_standardization(report, tiny_bit):
    kernels = explain.load_kernels(tiny_bit)
    assert kernels.model == tiny_bit and kernels.uses_ws and kernels.pretrained
    assert kernels.stem.shape == (64, 3, 7, 7)
    # The BiT stem is the model's own standardized convolution.
    conv = kernels.stem_conv()
    assert isinstance(conv, models.StdConv2d)
    assert "(the planned" not in kernels.source
    # Another BiT model in the cache stands in for a planned model without weights, and says so.
    assert "BiT-M-R50x1's weights are not downloaded" in explain.load_kernels("BiT-M-R50x1").source
    assert "EfficientNet-Lite0 is not a BiT model" in explain.load_kernels("EfficientNet-Lite0").source
    demo = explain.normalization_demo(report, kernels)
    assert demo.channels == 64 and demo.groups == 32 and tiny_bit in demo.layer
    assert max(demo.group_norm_change) < 1e-9 < 0.1 < demo.batch_norm_change[-1]


def test_without_bit_weights_efficientnet_is_shown_and_said_not_to_use_ws():
    kernels = explain.load_kernels()
    if kernels.model != "EfficientNet-Lite0":
        pytest.skip("the EfficientNet-Lite0 weights package is not installed")
    demo = explain.standardization_demo(kernels)
    assert not demo.uses_ws and demo.pretrained
    assert "EfficientNet-Lite0" in demo.source and "No BiT weights" in demo.source


def test_weight_standardization_gives_each_filter_mean_0_and_std_1(tiny_bit):
    kernels = explain.load_kernels(tiny_bit)
    demo = explain.standardization_demo(kernels)
    out = demo.shape[0]
    assert len(demo.after.channel_means) == out
    assert np.allclose(demo.after.channel_means, 0, atol=1e-6)
    assert np.allclose(demo.after.channel_stds, 1, atol=1e-4)
    assert demo.before.std < 0.5  # stored weights are small numbers: standardization changes them
    assert demo.after.mean == pytest.approx(0, abs=1e-6) and demo.after.std == pytest.approx(1, abs=1e-4)
    assert demo.before.counts.sum() == demo.after.counts.sum() == kernels.kernel.size
    # `standardize` is the model's own StdConv2d: a convolution with its output equals the model layer's.
    layer = models.StdConv2d(kernels.kernel.shape[1], out, 3, padding=1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(kernels.kernel))
    x = torch.randn(1, kernels.kernel.shape[1], 8, 8)
    by_hand = torch.nn.functional.conv2d(x, torch.from_numpy(explain.standardize(kernels.kernel)), padding=1)
    assert torch.allclose(layer(x), by_hand, atol=1e-4)


def test_weight_standardization_of_a_random_kernel_when_no_weights_exist(monkeypatch):
    monkeypatch.setattr(explain, "_lite0_kernels", lambda: None)
    kernels = explain.load_kernels()
    assert kernels.model == "" and not kernels.pretrained and "random" in kernels.source
    demo = explain.standardization_demo(kernels)
    assert abs(demo.before.mean) > 0.005  # the random kernel is off-centre on purpose
    assert np.allclose(demo.after.channel_means, 0, atol=1e-6)


def test_mixup_blends_two_classes_and_the_label_weights_sum_to_1(report):
    pair = explain.mixup_pair(report)
    assert pair.labels[0] != pair.labels[1]
    demo = explain.mixup_demo(pair, rule_alpha=0.0, draw=1)
    # The plan has no mixup for 30 photos: the demonstration draws with BiT's 0.1 and says the plan's 0.
    assert demo.rule_alpha == 0.0 and demo.alpha == explain.ILLUSTRATION_ALPHA
    assert 0.0 <= demo.lam <= 1.0
    assert np.allclose(demo.mixed, demo.lam * pair.first + (1 - demo.lam) * pair.second, atol=1e-6)
    (a, wa), (b, wb) = demo.label_weights
    assert (a, b) == pair.labels and wa + wb == pytest.approx(1.0) and wa == demo.lam
    assert pair.labels[0] in demo.caption and pair.labels[1] in demo.caption and "%" in demo.caption
    again = explain.mixup_demo(pair, 0.0, draw=1)
    assert again.lam == demo.lam  # the same draw gives the same lambda
    lams = {explain.mixup_demo(pair, 0.1, draw=d).lam for d in range(1, 6)}
    assert len(lams) > 1


def test_mixup_caption_never_rounds_a_blend_to_a_pure_photo():
    pair = explain.MixupPair(np.zeros((2, 2, 3)), np.ones((2, 2, 3)), ("cat", "dog"), ("a", "b"))
    demo = explain.MixupDemo(explain.mix(pair.first, pair.second, 0.63), 0.63, 0.1, 0.1, 1, pair.labels)
    assert demo.caption == "63% cat, 37% dog"
    assert np.allclose(demo.mixed, 0.37)
    nearly = explain.MixupDemo(pair.first, 0.9996, 0.1, 0.1, 1, pair.labels)
    assert nearly.caption == "over 99.9% cat, under 0.1% dog"


def test_mixup_needs_two_classes(tmp_path):
    from tests.conftest import make_color_folder

    report = data.scan(make_color_folder(tmp_path / "one", classes=("red",), per_class=3))
    with pytest.raises(BitStudioError, match="two"):
        explain.mixup_pair(report)


def test_the_hyperrule_story_is_the_plan_in_words(report):
    plan = explain.plan_for(report)
    story = {item.key: item for item in explain.hyperrule_story(plan)}
    assert list(story) == ["size", "steps", "resolution", "mixup"]
    for key in ("steps", "resolution", "mixup"):
        assert story[key].decision == plan.reasons[key]
    assert f"{plan.num_images} photos" in story["size"].decision and "small task" in story["size"].decision
    assert f"{plan.total_steps:,} steps" in story["steps"].why
    assert f"first {plan.warmup_steps} steps" in story["steps"].why
    assert "200, 300, 400" in story["steps"].why
    seen = round(plan.total_steps * plan.batch / plan.num_images)
    assert f"about {seen:,} times" in story["steps"].why
    assert "160x160" in story["resolution"].why and "128x128" in story["resolution"].why  # 40x30 photos
    assert "no mixup" in story["mixup"].decision and "did not help" in story["mixup"].why


def test_the_hyperrule_story_follows_a_large_task_and_the_users_changes():
    plan = hyperrule.plan(25_000, (500, 375), "BiT-M-R50x1")
    story = {item.key: item for item in explain.hyperrule_story(plan)}
    assert "medium task" in story["size"].decision
    assert "10,000 steps" in story["steps"].decision and "3,000, 6,000, 9,000" in story["steps"].why
    assert "448x448" in story["resolution"].why and "384x384" in story["resolution"].why
    assert "Beta(0.1, 0.1)" in story["mixup"].why
    changed = hyperrule.plan(25_000, (500, 375), "BiT-M-R50x1", steps=2000)
    story = {item.key: item for item in explain.hyperrule_story(changed)}
    assert "2,000 steps instead of the rule's 10,000" in story["changes"].decision


def test_the_plan_is_the_configs_when_there_is_one(report):
    config = TrainConfig(data_dir=report.root, strategy="head", steps=50)
    plan = explain.plan_for(report, config)
    assert plan.total_steps == 50 and plan.crop == hyperrule.PRETRAINING_CROP
    story = {item.key: item for item in explain.hyperrule_story(plan)}
    assert "changes" in story and "frozen" in story["resolution"].decision
    assert "whole network" in story["resolution"].why and "160x160" in story["resolution"].why


def test_explain_reports_progress_and_stops_when_cancelled(report):
    seen = []
    result = explain.explain(report, on_progress=seen.append)
    assert not result.planned and result.plan.num_images == 24  # 30 photos, 6 held out
    assert seen[-1].total == 32 and any("Reading your photos" in p.message for p in seen)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(OperationCancelled):
        explain.explain(report, cancel=cancel)


def test_a_photo_removed_since_the_scan_gets_a_clear_message(report):
    report.path_of(report.train[0]).unlink()
    with pytest.raises(BitStudioError, match="scan the folder again"):
        explain.explain(report)


def test_batch_mates_are_picked_the_same_way_every_time(report):
    photo, mates = explain.pick_batch(report, 31)
    assert photo == report.train[0] and len(mates) == 31
    assert explain.pick_batch(report, 31) == (photo, mates)
    assert photo not in mates and len({m.path for m in mates}) == len(report.train) - 1
