"""EfficientNet-Lite0: architecture, released weights, parity with timm, frozen BatchNorm statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bit_engine.efficientnet import (
    EfficientNetLite,
    Lite0WeightsMissingError,
    lite0_weights_path,
    load_pretrained_lite0,
)
from bit_engine.errors import BitStudioError
from bit_engine.models import KNOWN_MODELS, WeightsMismatchError, create_model

SPEC = KNOWN_MODELS["EfficientNet-Lite0"]
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def package_state():
    return torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def imagenet_model():
    return load_pretrained_lite0(EfficientNetLite(num_classes=1000)).eval()


def _timm_state(timm_model, package: dict) -> dict:
    """The package's weights under timm's names, mapped independently of bit_engine's key map."""
    top_level = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1"}
    top_level["classifier"] = "_fc"
    inverted = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1"}
    inverted |= {"conv_pwl": "_project_conv", "bn3": "_bn2"}
    separable = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    flat_index = {}
    for s, stage in enumerate(timm_model.blocks):
        for b, block in enumerate(stage):
            flat_index[(s, b)] = (len(flat_index), hasattr(block, "conv_pwl"))
    state = {}
    for key in timm_model.state_dict():
        parts = key.split(".")
        if parts[0] == "blocks":
            n, is_inverted = flat_index[(int(parts[1]), int(parts[2]))]
            names = inverted if is_inverted else separable
            state[key] = package[f"_blocks.{n}.{names[parts[3]]}.{'.'.join(parts[4:])}"]
        else:
            state[key] = package[f"{top_level[parts[0]]}.{'.'.join(parts[1:])}"]
    assert len(state) == len(package), "the mapping must use every tensor of the package"
    return state


@pytest.mark.parametrize("size", [224, 97])  # even and odd sizes take different TF "SAME" paddings
def test_logits_match_timm_reference(package_state, imagenet_model, size):
    timm = pytest.importorskip("timm")
    # timm's efficientnet_lite0 with TF padding and TF BatchNorm epsilon: the architecture of its
    # tf_efficientnet_lite0, the other conversion of the same TensorFlow checkpoint.
    reference = timm.create_model("efficientnet_lite0", pretrained=False, pad_type="same", bn_eps=1e-3)
    reference.load_state_dict(_timm_state(reference, package_state))
    reference.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected_features = reference.forward_head(reference.forward_features(x), pre_logits=True)
        expected = reference(x)
        features = imagenet_model.features(x)
        logits = imagenet_model(x)
    assert features.shape == (2, 1280)
    assert (features - expected_features).abs().max().item() <= 1e-4
    assert (logits - expected).abs().max().item() <= 1e-4


def _sample_photos(normalization) -> torch.Tensor:
    """sklearn's two real photos, ImageNet evaluation style: shorter side 256, centre crop 224."""
    from sklearn.datasets import load_sample_images

    mean = torch.tensor(normalization[0])[:, None, None]
    std = torch.tensor(normalization[1])[:, None, None]
    batch = []
    for array in load_sample_images().images:  # china.jpg, flower.jpg
        image = Image.fromarray(array)
        scale = 256 / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        left, top = (image.width - 224) // 2, (image.height - 224) // 2
        image = image.crop((left, top, left + 224, top + 224))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        batch.append((x - mean) / std)
    return torch.stack(batch)


def test_real_photos_get_sensible_imagenet_classes_with_the_table_normalization(imagenet_model):
    norm = SPEC.normalization
    with torch.no_grad():
        probs = imagenet_model(_sample_photos((norm.mean, norm.std))).softmax(-1)
        probs_imagenet_norm = imagenet_model(_sample_photos(IMAGENET_MEAN_STD)).softmax(-1)
    china, flower = probs.argmax(-1).tolist()
    # palace, bell cote, church, monastery, dome, castle: a Chinese palace with a pagoda-like roof.
    assert china in {698, 442, 497, 663, 538, 483}
    assert flower == 985  # daisy
    # The weights were trained on [-1, 1] inputs; ImageNet mean/std makes this photo a lampshade.
    assert probs[1, 985] > 2 * probs_imagenet_norm[1, 985]


def test_parameter_count_matches_the_table_and_create_model_gives_a_zero_head():
    assert (
        sum(p.numel() for p in EfficientNetLite(num_classes=SPEC.upstream_classes).parameters())
        == SPEC.params
    )
    model = create_model("EfficientNet-Lite0", num_classes=5)
    assert isinstance(model, EfficientNetLite)
    assert model.num_features == 1280
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    with torch.no_grad():
        assert torch.equal(model.eval()(torch.randn(1, 3, 64, 64)), torch.zeros(1, 5))
    backbone, head = model.backbone_parameters(), model.head_parameters()
    assert len(backbone) + len(head) == len(list(model.parameters()))
    assert sum(p.numel() for p in head) == 1280 * 5 + 5


def test_imagenet_head_is_loaded_only_for_1000_classes(package_state, imagenet_model):
    assert torch.equal(imagenet_model.head.weight, package_state["_fc.weight"])
    small = load_pretrained_lite0(EfficientNetLite(num_classes=5))
    assert torch.count_nonzero(small.head.weight) == 0
    assert torch.equal(small.stem.conv.weight, package_state["_conv_stem.weight"])
    assert torch.equal(small.blocks[15].project_bn.running_var, package_state["_blocks.15._bn2.running_var"])
    assert torch.equal(small.top.conv.weight, package_state["_conv_head.weight"])
    torch.manual_seed(0)
    random_head = EfficientNetLite(num_classes=5, zero_head=False)
    kept = random_head.head.weight.clone()
    assert torch.equal(load_pretrained_lite0(random_head).head.weight, kept)


def test_train_mode_keeps_batchnorm_statistics_frozen():
    model = load_pretrained_lite0(EfficientNetLite(num_classes=3, zero_head=False))
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 3 + 1
    with torch.no_grad():
        eval_logits = model.eval()(x)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    model.train()
    assert model.training
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    train_logits = model(x)
    train_logits.sum().backward()  # a training step's forward and backward
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # Running statistics in train mode: the same predictions as in eval mode, whatever the batch.
    assert torch.allclose(train_logits.detach(), eval_logits, atol=1e-5)


def test_mismatched_checkpoint_names_the_first_problem(package_state, tmp_path):
    missing = dict(package_state)
    del missing["_blocks.3._bn1.running_var"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsMismatchError, match=r"_blocks\.3\._bn1\.running_var.*missing"):
        load_pretrained_lite0(EfficientNetLite(num_classes=5), tmp_path / "missing.pth")

    reshaped = dict(package_state)
    reshaped["_conv_head.weight"] = torch.zeros(1280, 192, 1, 1)
    torch.save(reshaped, tmp_path / "reshaped.pth")
    with pytest.raises(WeightsMismatchError, match=r"_conv_head\.weight.*\(1280, 192, 1, 1\)"):
        load_pretrained_lite0(EfficientNetLite(num_classes=5), tmp_path / "reshaped.pth")

    with_se = dict(package_state)  # EfficientNet-B0 has squeeze-excite convs that Lite0 has not
    with_se["_blocks.0._se_reduce.weight"] = torch.zeros(8, 32, 1, 1)
    torch.save(with_se, tmp_path / "b0.pth")
    with pytest.raises(WeightsMismatchError, match=r"_se_reduce\.weight"):
        load_pretrained_lite0(EfficientNetLite(num_classes=5), tmp_path / "b0.pth")


def test_missing_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(Lite0WeightsMissingError, match="does not exist") as info:
        load_pretrained_lite0(EfficientNetLite(num_classes=5), tmp_path / "nowhere.pth")
    assert isinstance(info.value, BitStudioError)


def test_random_init_keeps_the_signal_alive_for_training_from_scratch():
    """`scratch` has no released BN statistics to lean on (frozen BNs are identities): the init alone must
    keep activations at a trainable scale. Under PyTorch's default init the features were ~1e-9 and a
    scratch run stayed at chance."""
    torch.manual_seed(0)
    features = EfficientNetLite(num_classes=3).train().features(torch.randn(8, 3, 64, 64))
    assert 0.1 < features.std().item() < 10
    assert features.std(dim=0).mean().item() > 0.05  # different images give different features


def test_a_gradient_does_not_depend_on_how_the_batch_is_cut():
    # What lets a CPU train with small micro-batches (the faster ones, see trainers.cpu_micro_batch): with
    # the released BatchNorm statistics, no layer mixes the images of a batch.
    model = load_pretrained_lite0(EfficientNetLite(num_classes=3, zero_head=False)).train()
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])

    def gradient(parts: int) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        for xs, ys in zip(x.chunk(parts), y.chunk(parts), strict=True):
            torch.nn.functional.cross_entropy(model(xs), ys, reduction="sum").backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    whole, in_fours = gradient(1), gradient(4)
    assert whole.abs().max() > 0
    assert torch.allclose(whole, in_fours, atol=1e-4, rtol=1e-4)
