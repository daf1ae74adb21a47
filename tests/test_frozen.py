"""Frozen forward passes: the fast paths compute what float32 eager computes, and the cache never lies."""

from __future__ import annotations

import pytest
import torch

from bit_engine import frozen
from bit_engine.models import create_model

SIZE = 64


def _bit_model(tiny_bit):
    from bit_engine import weights

    torch.manual_seed(0)
    model = create_model(tiny_bit, num_classes=3, zero_head=False)
    weights.load_pretrained(model, tiny_bit, download_if_missing=False)
    torch.nn.init.normal_(model.head.conv.weight, std=0.1)  # a trained-looking head, not zeros
    return model.eval()


def _lite0_model():
    from bit_engine.efficientnet import load_pretrained_lite0

    torch.manual_seed(0)
    model = create_model("EfficientNet-Lite0", num_classes=3, zero_head=False)
    return load_pretrained_lite0(model).eval()


def _inputs(n=5, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, SIZE, SIZE, generator=g).clamp(-2.5, 2.5)


@pytest.fixture(params=["bit", "lite0"])
def model(request, tiny_bit):
    return _bit_model(tiny_bit) if request.param == "bit" else _lite0_model()


@pytest.mark.parametrize("backend", ["onnxruntime", "eager"])
def test_features_and_logits_equal_float32_eager(model, backend):
    runner = frozen.freeze(model, "cpu", SIZE, backend=backend)
    assert runner.path == backend
    x = _inputs()
    with torch.no_grad():
        ref_features, ref_logits = model.features(x), model(x)
    features, logits = runner.features(x), runner.logits(x)
    assert features.dtype == logits.dtype == torch.float32
    assert features.shape == ref_features.shape and logits.shape == ref_logits.shape
    assert (features - ref_features).abs().max().item() <= frozen.TOLERANCE
    assert (logits - ref_logits).abs().max().item() <= frozen.TOLERANCE
    # The caller's model is untouched: WS is folded on a copy.
    is_bit = type(model).__name__ == "ResNetV2"
    assert any(type(m).__name__ == "StdConv2d" for m in model.modules()) == is_bit


def test_auto_on_cpu_takes_onnxruntime_and_caches_once(tiny_bit):
    model = _bit_model(tiny_bit)
    first = frozen.freeze(model, "cpu", SIZE)
    assert first.path == "onnxruntime" and "built now" in first.reason
    assert len(list(frozen.cache_dir().glob("*.onnx"))) == 1
    second = frozen.freeze(model, "cpu", SIZE)
    assert "cached" in second.reason and "built now" not in second.reason
    assert len(list(frozen.cache_dir().glob("*.onnx"))) == 1
    # Another input size is another graph.
    frozen.freeze(model, "cpu", SIZE + 32)
    assert len(list(frozen.cache_dir().glob("*.onnx"))) == 2
    # No temporary file is left behind.
    assert not [p for p in frozen.cache_dir().iterdir() if p.name.startswith(".")]


def test_a_new_head_reuses_the_backbone_graph_and_uses_the_new_head(tiny_bit):
    model = _bit_model(tiny_bit)
    frozen.freeze(model, "cpu", SIZE)
    with torch.no_grad():
        model.head.conv.weight.add_(torch.randn_like(model.head.conv.weight) * 0.05)  # head training
    runner = frozen.freeze(model, "cpu", SIZE)
    assert "cached" in runner.reason
    x = _inputs(2)
    with torch.no_grad():
        assert (runner.logits(x) - model(x)).abs().max().item() <= frozen.TOLERANCE


def test_changed_backbone_weights_never_reuse_the_old_graph(tiny_bit):
    model = _bit_model(tiny_bit)
    before = frozen.freeze(model, "cpu", SIZE)
    x = _inputs(2)
    old = before.features(x)
    with torch.no_grad():
        model.body[0][0].conv2.weight.mul_(-1.0)  # a fine-tuned backbone: one layer changed
    after = frozen.freeze(model, "cpu", SIZE)
    assert "built now" in after.reason
    assert len(list(frozen.cache_dir().glob("*.onnx"))) == 2
    with torch.no_grad():
        ref = model.features(x)
    assert (after.features(x) - ref).abs().max().item() <= frozen.TOLERANCE
    assert (old - ref).abs().max().item() > 1e-3  # the old graph would have been wrong


def test_digest_sees_every_backbone_tensor_but_not_the_head(tiny_bit):
    model = _bit_model(tiny_bit)
    d0 = frozen.backbone_digest(model)
    with torch.no_grad():
        model.head.conv.bias.add_(1.0)
    assert frozen.backbone_digest(model) == d0
    with torch.no_grad():
        model.root.conv.weight[0, 0, 0, 0] += 1e-6
    assert frozen.backbone_digest(model) != d0


def test_damaged_cache_file_is_rebuilt_not_trusted(tiny_bit):
    model = _bit_model(tiny_bit)
    frozen.freeze(model, "cpu", SIZE)
    (path,) = frozen.cache_dir().glob("*.onnx")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    path.write_bytes(bytes(data))
    runner = frozen.freeze(model, "cpu", SIZE)
    assert "built now" in runner.reason
    x = _inputs(2)
    with torch.no_grad():
        assert (runner.features(x) - model.features(x)).abs().max().item() <= frozen.TOLERANCE
    # Truncated to nothing, and a missing record: rebuilt as well.
    path.write_bytes(b"")
    assert "built now" in frozen.freeze(model, "cpu", SIZE).reason
    for record in frozen.cache_dir().glob("*.json"):
        record.unlink()
    assert "built now" in frozen.freeze(model, "cpu", SIZE).reason


def test_a_failing_export_falls_back_to_eager(tiny_bit, monkeypatch):
    model = _bit_model(tiny_bit)

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(frozen, "_export", broken)
    runner = frozen.freeze(model, "cpu", SIZE)
    assert runner.path == "eager" and "exporter exploded" in runner.reason
    x = _inputs(2)
    with torch.no_grad():
        assert (runner.logits(x) - model(x)).abs().max().item() <= frozen.TOLERANCE
    with pytest.raises(RuntimeError, match="exploded"):
        frozen.freeze(model, "cpu", SIZE, backend="onnxruntime")
    assert not list(frozen.cache_dir().glob("*.onnx"))


def test_unknown_backend_is_refused(tiny_bit):
    with pytest.raises(ValueError, match="backend"):
        frozen.freeze(_bit_model(tiny_bit), "cpu", SIZE, backend="tensorrt")
