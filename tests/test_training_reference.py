"""The training loop against references written out by hand, so that a one-line slip cannot pass unseen.

Every earlier mixup test compared two runs of the same code with each other; here the model's input and the
loss are compared with BiT's formula itself: with lambda fixed at 0.9, the input is ``0.9*x + 0.1*x[perm]``
and the loss ``0.9*CE(y) + 0.1*CE(y[perm])``, for the full and the head trainer. Also: each epoch is shuffled
differently, and a validation fraction other than the default is honoured.
"""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from bit_engine.config import TrainConfig
from bit_engine.models import ResNetV2
from bit_engine.sampling import SampleStream, mixup_permutation
from bit_engine.trainers import DistContext, FullTrainer, HeadTrainer

LAM = 0.9
N, CLASSES, SEED, STEP = 8, 3, 5, 3


def _model() -> ResNetV2:
    torch.manual_seed(0)
    return ResNetV2((1, 1, 1, 1), 1, num_classes=CLASSES, zero_head=False)


def _batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 3, 16, 16, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    perm = mixup_permutation(SEED, STEP, 0, N)
    assert not torch.equal(perm, torch.arange(N)) and not torch.equal(y[perm], y)  # the mix is visible
    return x, y, perm


def test_full_trainer_mixes_inputs_and_losses_as_bit_does():
    model = _model()
    config = TrainConfig(data_dir="/data", seed=SEED, micro_batch=N, precision="fp32", device="cpu")
    plan = type("Plan", (), {"batch": N})()
    trainer = FullTrainer(
        model, None, torch.device("cpu"), torch.contiguous_format, config, plan, 0, DistContext()
    )
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    x, y, perm = _batch()

    loss = trainer.step([(x, y, torch.arange(N))], STEP, LAM, N, threading.Event())

    expected_input = LAM * x + (1 - LAM) * x[perm]
    assert len(seen) == 1 and torch.allclose(seen[0], expected_input, atol=1e-6)
    with torch.no_grad():
        logits = model(expected_input)
    expected_loss = LAM * F.cross_entropy(logits, y) + (1 - LAM) * F.cross_entropy(logits, y[perm])
    assert loss == pytest.approx(expected_loss.item(), rel=1e-5)
    # And not the mirror image, which a swapped weight would give.
    swapped = (1 - LAM) * F.cross_entropy(logits, y) + LAM * F.cross_entropy(logits, y[perm])
    assert abs(loss - swapped.item()) > 1e-3


def test_head_trainer_mixes_features_and_losses_as_bit_does():
    model = _model()
    trainer = HeadTrainer(
        model, None, None, torch.device("cpu"), torch.contiguous_format, 0, None, threading.Event(), SEED
    )
    g = torch.Generator().manual_seed(2)
    trainer.features = torch.randn(20, model.head.conv.in_channels, generator=g)
    trainer.labels = torch.arange(20) % CLASSES
    index = torch.tensor([3, 7, 1, 12, 19, 0, 5, 8])
    perm = mixup_permutation(SEED, STEP, 0, N)
    seen = []
    classify = model.classify
    model.classify = lambda f: seen.append(f.detach().clone()) or classify(f)

    loss = trainer.step(index, STEP, LAM, N, threading.Event())

    f, y = trainer.features[index], trainer.labels[index]
    expected_input = LAM * f + (1 - LAM) * f[perm]
    assert len(seen) == 1 and torch.allclose(seen[0], expected_input, atol=1e-6)
    with torch.no_grad():
        logits = classify(expected_input)
    expected_loss = LAM * F.cross_entropy(logits, y) + (1 - LAM) * F.cross_entropy(logits, y[perm])
    assert loss == pytest.approx(expected_loss.item(), rel=1e-5)


def test_each_epoch_is_shuffled_differently_and_covers_every_sample_once():
    n = 12
    stream = SampleStream(n, batch=n, seed=SEED)
    orders = [[i for i, _ in stream.keys(step)] for step in range(4)]
    for step, order in enumerate(orders):
        assert sorted(order) == list(range(n))  # one epoch per step here: every sample exactly once
        assert {epoch for _, epoch in stream.keys(step)} == {step}
    assert len({tuple(order) for order in orders}) == 4  # a permutation that ignored the epoch repeats
    other_seed = [i for i, _ in SampleStream(n, batch=n, seed=SEED + 1).keys(0)]
    assert other_seed != orders[0]


def test_a_batch_running_over_an_epoch_end_continues_in_the_next_shuffle():
    stream = SampleStream(5, batch=3, seed=SEED)
    keys = [k for step in range(5) for k in stream.keys(step)]  # 15 = three epochs of five
    for epoch in range(3):
        assert sorted(i for i, e in keys if e == epoch) == list(range(5))
    assert [i for i, e in keys if e == 0] != [i for i, e in keys if e == 1]


@pytest.mark.parametrize(("counts", "fraction"), [((10, 6), 0.5), ((10, 10, 10), 0.3)])
def test_the_validation_fraction_is_honoured(tmp_path, counts, fraction):
    from conftest import make_color_folder

    from bit_engine import data, holdout

    for name, n in zip(("red", "green", "blue"), counts, strict=False):
        make_color_folder(tmp_path / "ds", classes=(name,), per_class=n)
    report = data.scan(tmp_path / "ds")
    split = holdout.split(report, fraction, seed=SEED)
    val_per_class = {c: sum(1 for s in split.val if split.classes[s.label] == c) for c in split.classes}
    expected = {name: round(n * fraction) for name, n in zip(("red", "green", "blue"), counts, strict=False)}
    assert val_per_class == expected
    assert len(split.train) + len(split.val) == sum(counts)
    assert not {s.path for s in split.train} & {s.path for s in split.val}
