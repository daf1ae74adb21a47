"""The BiT architecture against timm's independent implementation, through the official npz layout."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from bit_engine import models
from bit_engine.models import (
    KNOWN_MODELS,
    NotAnNpzError,
    UnknownModelError,
    WeightsMismatchError,
    create_model,
    load_bit_npz,
    save_bit_npz,
)


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every GroupNorm and the head non-trivial values, so a swapped key cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # GroupNorm gamma/beta and the head bias
                p.copy_(
                    1.0 + 0.2 * torch.randn(p.shape, generator=g)
                    if "weight" in name
                    else 0.1 * torch.randn(p.shape, generator=g)
                )
        head = model.head.conv.weight
        head.copy_(torch.randn(head.shape, generator=g) / head.shape[1] ** 0.5)
    return model


def _timm_logits(variant: str, npz_path, x, num_classes):
    ref = timm.create_model(variant, pretrained=False, num_classes=num_classes)
    ref.load_pretrained(str(npz_path))
    return ref.eval()(x)


@pytest.mark.parametrize(
    ("arch", "variant"), [("R50x1", "resnetv2_50x1_bit"), ("R101x1", "resnetv2_101x1_bit")]
)
def test_logits_match_timm_on_the_same_npz(tmp_path, arch, variant):
    torch.manual_seed(0)
    # timm's BiT port standardizes with eps 1e-8; compare at equal eps.
    ours = _randomize(create_model(arch, num_classes=7, zero_head=False, ws_eps=1e-8)).eval()
    path = tmp_path / f"{arch}.npz"
    save_bit_npz(ours, path)

    reloaded = load_bit_npz(create_model(arch, num_classes=7, zero_head=False, ws_eps=1e-8), path).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mine = reloaded(x)
        theirs = _timm_logits(variant, path, x, 7)
    assert mine.abs().max() > 0.5, "logits should be of order 1 for the comparison to mean something"
    assert (mine - theirs).abs().max().item() <= 1e-4


def test_default_eps_is_the_reference_one():
    model = create_model("BiT-S-R50x1", num_classes=3)
    eps = {m.eps for m in model.modules() if isinstance(m, models.StdConv2d)}
    assert eps == {1e-10}


def test_stem_pads_with_zero_then_pools_without_padding():
    # A negative input: zero padding shows up at the border, -inf padding (MaxPool2d(padding=1)) would not.
    model = create_model("R50x1", num_classes=2)
    x = -torch.ones(1, 64, 8, 8)
    out = model.root.pool(model.root.pad(x))
    assert out.shape[-2:] == (4, 4)
    assert out[0, 0, 0, 0].item() == 0.0 and out[0, 0, 1, 1].item() == -1.0


def test_zero_head_and_head_kept_when_classes_differ(tmp_path):
    src = _randomize(create_model("R50x1", num_classes=21843 // 1000, zero_head=False))
    path = tmp_path / "m.npz"
    save_bit_npz(src, path)
    model = load_bit_npz(create_model("R50x1", num_classes=5), path)
    assert model.head.conv.weight.abs().sum().item() == 0.0
    assert model.head.conv.bias.abs().sum().item() == 0.0
    assert torch.equal(model.head.gn.weight, src.head.gn.weight)  # everything else loaded
    same = load_bit_npz(create_model("R50x1", num_classes=21), path)
    assert torch.equal(same.head.conv.weight, src.head.conv.weight)


def test_npz_of_another_architecture_names_the_first_mismatch(tmp_path):
    path = tmp_path / "r50.npz"
    save_bit_npz(create_model("R50x1", num_classes=2), path)
    with pytest.raises(WeightsMismatchError, match=r"block3/unit07.*missing"):
        load_bit_npz(create_model("R101x1", num_classes=2), path)
    with pytest.raises(WeightsMismatchError, match=r"root_block.*shape"):
        load_bit_npz(create_model("R50x3", num_classes=2), path)


def test_not_an_npz_is_refused(tmp_path):
    path = tmp_path / "photo.npz"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a zip")
    with pytest.raises(NotAnNpzError, match=r"not a readable \.npz"):
        load_bit_npz(create_model("R50x1", num_classes=2), path)


class _Payload:
    """Unpickling it runs `Path.touch` on the marker: proof that the file's objects were loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path: str) -> None:
    open(path, "w").close()


def test_pickled_npz_is_refused(tmp_path):
    path, marker = tmp_path / "evil.npz", tmp_path / "payload-ran"
    kernel = np.empty(1, dtype=object)
    kernel[0] = _Payload(marker)
    np.savez(path, **{"resnet/root_block/standardized_conv2d/kernel": kernel})
    with pytest.raises(ValueError, match="allow_pickle=False"):  # numpy's own refusal, nothing else
        load_bit_npz(create_model("R50x1", num_classes=2), path)
    assert not marker.exists(), "the pickled object was loaded"


@pytest.mark.parametrize("name", [n for n, s in KNOWN_MODELS.items() if s.family == "bit"])
def test_table_parameter_counts_are_exact(name):
    spec = KNOWN_MODELS[name]
    with torch.device("meta"):
        model = create_model(name, num_classes=spec.upstream_classes)
    assert sum(p.numel() for p in model.parameters()) == spec.params


def test_table_has_all_official_models():
    for tier in "SM":
        for arch in ("R50x1", "R50x3", "R101x1", "R101x3", "R152x2", "R152x4"):
            spec = KNOWN_MODELS[f"BiT-{tier}-{arch}"]
            assert spec.url == f"https://storage.googleapis.com/bit_models/BiT-{tier}-{arch}.npz"
            assert spec.upstream_classes == (1000 if tier == "S" else 21843)
    assert KNOWN_MODELS["BiT-M-R50x1-ILSVRC2012"].upstream_classes == 1000


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match=r"BiT-M-R50x1.*EfficientNet-Lite0"):
        create_model("ResNet-9000", num_classes=2)


def test_features_and_classify_compose_to_forward():
    model = _randomize(create_model("R50x1", num_classes=4, zero_head=False)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.classify(model.features(x)), model(x), atol=1e-6)
    assert model.features(x).shape == (1, 2048)
