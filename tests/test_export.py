"""ONNX export and prediction: the exported file must predict what the app predicts.

Tiny models only (a one-unit-per-stage ResNetV2 at 32 px), exported once per module where possible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from bit_engine import __version__, export, onnx_format
from bit_engine.export import ExportVerificationError, export_onnx, random_images
from bit_engine.images import ImageError, open_rgb
from bit_engine.inference import ModelFileError, NotABitStudioModelError, Predictor, prepare
from bit_engine.models import BIT_NORMALIZATION, ResNetV2, StdConv2d
from bit_engine.onnx_format import read_metadata
from bit_engine.quantize import quantize_int8

SIZE = 32
LABELS = ["cat", "dog", "élan"]  # a non-ASCII label must survive the JSON round trip


def _tiny_model(seed: int = 0) -> ResNetV2:
    torch.manual_seed(seed)
    model = ResNetV2((1, 1, 1, 1), 1, num_classes=len(LABELS), zero_head=False)
    # A head with real spread, so that probabilities differ clearly between classes and images.
    torch.nn.init.normal_(model.head.conv.weight, std=0.3)
    torch.nn.init.normal_(model.head.conv.bias, std=0.3)
    return model.eval()


def _write_photos(folder, n: int = 6) -> list:
    """Smooth random pictures of various non-square sizes, so the resize really does something."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = 40 + 13 * i, 30 + 7 * i
        coarse = rng.integers(0, 256, size=(h // 5 + 1, w // 5 + 1, 3), dtype=np.uint8)
        path = folder / f"photo_{i}.png"
        Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    return paths


def _eager_probabilities(model: ResNetV2, batch: np.ndarray) -> np.ndarray:
    """PyTorch eager as training evaluates: NCHW float in [0, 1], (x - 0.5) / 0.5, WS at every forward."""
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        return torch.softmax(model(x), dim=1).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One exported tiny model shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("export")
    model = _tiny_model()
    photos = _write_photos(folder / "photos")
    verify = np.stack([prepare(open_rgb(p), SIZE) for p in photos])
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    result = export_onnx(
        model,
        LABELS,
        SIZE,
        BIT_NORMALIZATION,
        folder / "model.onnx",
        metadata={"dataset": "pets", "val_accuracy": 0.9},
        verify_images=torch.from_numpy(verify),
        backbone="BiT-M-R50x1",
        run_id="run-0001",
    )
    return {"model": model, "result": result, "photos": photos, "verify": verify, "state": state_before}


def test_export_leaves_the_model_untouched(exported):
    model = exported["model"]
    assert isinstance(model.root.conv, StdConv2d)
    assert sum(isinstance(m, StdConv2d) for m in model.modules()) == 17  # 1 stem + 4 x 3 + 4 projections
    for name, value in model.state_dict().items():
        assert torch.equal(value, exported["state"][name]), name


def test_predictor_matches_pytorch_eager(exported):
    predictor = Predictor(exported["result"].path)
    photos = exported["photos"]
    expected = _eager_probabilities(exported["model"], np.stack([prepare(open_rgb(p), SIZE) for p in photos]))
    got = predictor.probabilities(photos)
    assert np.max(np.abs(got - expected)) <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert len(set(expected.argmax(1).tolist())) > 1, "degenerate test: every image has the same top-1"

    top = predictor.predict(photos[0], top_k=2)
    assert [p.label for p in top] == [LABELS[i] for i in np.argsort(-expected[0])[:2]]
    assert top[0].probability == pytest.approx(float(expected[0].max()), abs=1e-4)
    # A PIL image gives the same answer as its file.
    assert predictor.predict(open_rgb(photos[0]), top_k=1)[0].label == top[0].label
    many = predictor.predict_many(photos, batch_size=4, top_k=1)
    assert [r[0].label for r in many] == [LABELS[i] for i in expected.argmax(1)]


def test_export_result_records_parity_figures(exported):
    result = exported["result"]
    figures = json.loads(json.dumps(result.to_dict()))  # JSON-able
    assert figures["n_images"] == len(exported["photos"])
    assert figures["top1_agree"] == figures["n_images"]
    assert 0.0 <= figures["max_abs_prob_diff"] <= 1e-4
    assert 0.0 <= figures["max_abs_logit_diff"] <= 1e-3
    assert figures["opset"] == export.DEFAULT_OPSET
    assert figures["file_bytes"] == os.path.getsize(result.path)
    assert figures["verify_images_source"] == "caller"
    assert figures["external_data"] is False and figures["data_path"] is None


def test_metadata_is_complete(exported):
    meta = read_metadata(exported["result"].path)
    assert json.loads(meta[onnx_format.META_LABELS]) == LABELS
    assert int(meta[onnx_format.META_INPUT_SIZE]) == SIZE
    assert meta[onnx_format.META_BACKBONE] == "BiT-M-R50x1"
    assert json.loads(meta[onnx_format.META_NORMALIZATION]) == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert meta[onnx_format.META_RUN_ID] == "run-0001"
    assert meta[onnx_format.META_APP_VERSION] == __version__
    assert datetime.fromisoformat(meta[onnx_format.META_EXPORT_DATE]).tzinfo is not None
    assert meta[onnx_format.META_INPUT_FORMAT] == "uint8 RGB NHWC"
    assert meta["dataset"] == "pets" and json.loads(meta["val_accuracy"]) == 0.9
    graph = onnx.load(exported["result"].path, load_external_data=False).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["logits", "probabilities"]
    # Weight Standardization is folded: the graph has no per-forward weight statistics left.
    assert not any(n.op_type == "BatchNormalization" for n in graph.node)


_PLAIN_ORT = """
import json, sys
import numpy as np, onnxruntime as ort
from PIL import Image
model, paths = sys.argv[1], sys.argv[2:]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
labels, size = json.loads(meta["bit_studio.labels"]), int(meta["bit_studio.input_size"])
images = [Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR) for p in paths]
batch = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
probs = session.run(["probabilities"], {"images": batch})[0]
print(json.dumps({"top1": [labels[i] for i in probs.argmax(1)], "probs": probs.tolist(),
                  "engine_loaded": any(m.startswith("bit_engine") for m in sys.modules)}))
"""


def test_plain_onnxruntime_and_metadata_alone_agree_with_predictor(exported):
    photos = [str(p) for p in exported["photos"]]
    out = subprocess.run(
        [sys.executable, "-I", "-c", _PLAIN_ORT, exported["result"].path, *photos],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    plain = json.loads(out.stdout)
    assert plain["engine_loaded"] is False
    predictor = Predictor(exported["result"].path)
    assert plain["top1"] == [r[0].label for r in predictor.predict_many(photos, top_k=1)]
    assert np.max(np.abs(np.array(plain["probs"]) - predictor.probabilities(photos))) <= 1e-6


def test_dynamic_batch(exported):
    session = ort.InferenceSession(exported["result"].path, providers=["CPUExecutionProvider"])
    batch = exported["verify"][:5]
    five = session.run(["probabilities"], {"images": batch})[0]
    ones = np.concatenate([session.run(["probabilities"], {"images": batch[i : i + 1]})[0] for i in range(5)])
    assert five.shape == (5, len(LABELS))
    assert np.max(np.abs(five - ones)) <= 1e-5


def test_external_data_pair_loads_and_predicts_the_same(exported, tmp_path):
    result = export_onnx(
        exported["model"], LABELS, SIZE, BIT_NORMALIZATION, tmp_path / "big.onnx", external_data=True
    )
    assert result.external_data and result.data_path == str(tmp_path / "big.onnx.data")
    onnx_size, data_size = os.path.getsize(result.path), os.path.getsize(result.data_path)
    assert data_size > 20 * onnx_size  # the weights really are outside
    assert result.file_bytes == onnx_size + data_size
    # The pair is self-contained: moved elsewhere together, it still loads.
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    os.replace(result.path, moved / "big.onnx")
    os.replace(result.data_path, moved / "big.onnx.data")
    photos = exported["photos"]
    single, pair = Predictor(exported["result"].path), Predictor(moved / "big.onnx")
    assert np.max(np.abs(single.probabilities(photos) - pair.probabilities(photos))) <= 1e-6

    (moved / "big.onnx.data").unlink()
    with pytest.raises(ModelFileError, match=r"big\.onnx\.data"):
        Predictor(moved / "big.onnx")


def test_failed_verification_raises_and_writes_nothing(exported, tmp_path, monkeypatch):
    real = export._run_onnxruntime

    def drifting(path, images):  # what a wrong resize or channel order would look like downstream
        logits, probs = real(path, images)
        return logits, probs[:, ::-1].copy()

    monkeypatch.setattr(export, "_run_onnxruntime", drifting)
    target = tmp_path / "model.onnx"
    previous = Path(exported["result"].path).read_bytes()
    target.write_bytes(previous)
    with pytest.raises(ExportVerificationError, match="does not predict like") as info:
        export_onnx(exported["model"], LABELS, SIZE, BIT_NORMALIZATION, target)
    assert info.value.figures["max_abs_prob_diff"] > 1e-4
    assert info.value.figures["n_images"] == export.DEFAULT_VERIFY_IMAGES
    assert target.read_bytes() == previous  # the old export is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary left behind


def test_corrupt_or_missing_model_file(exported, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00this is not a protobuf" * 10)
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        Predictor(garbage)
    truncated = tmp_path / "truncated.onnx"
    data = Path(exported["result"].path).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="damaged or incomplete"):
        Predictor(truncated)
    with pytest.raises(ModelFileError, match="not found"):
        Predictor(tmp_path / "nowhere.onnx")


class _ForeignUint8Net(torch.nn.Module):
    """Someone else's classifier that happens to take uint8 NHWC images (no metadata)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, images):
        return self.fc(images.float().mean(dim=(1, 2)) / 255.0)


def _torch_onnx(module, example, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module, (example,), str(path), dynamo=False, input_names=["input"], opset_version=17
        )


def test_foreign_model_without_labels(exported, tmp_path):
    path = tmp_path / "foreign.onnx"
    _torch_onnx(_ForeignUint8Net().eval(), torch.zeros(1, 24, 20, 3, dtype=torch.uint8), path)
    predictor = Predictor(path)
    assert not predictor.is_bit_studio_model
    assert predictor.labels == ["class 0", "class 1", "class 2", "class 3"]
    assert predictor.input_size == (24, 20)
    # Its graph has a fixed batch of 1: several images still work, one at a time.
    results = predictor.predict_many(exported["photos"][:3], top_k=4)
    assert len(results) == 3
    for result in results:
        assert sum(p.probability for p in result) == pytest.approx(1.0, abs=1e-5)  # softmax of its output

    float_path = tmp_path / "float_nchw.onnx"
    _torch_onnx(torch.nn.Conv2d(3, 2, 3).eval(), torch.zeros(1, 3, 16, 16), float_path)
    with pytest.raises(NotABitStudioModelError, match="not a BiT Studio model"):
        Predictor(float_path)


def test_non_image_files(exported, tmp_path):
    folder = tmp_path / "mixed"
    photos = _write_photos(folder, n=3)
    (folder / "notes.txt").write_text("not a photo")
    (folder / ".hidden.png").write_bytes(b"ignored")
    (folder / "sub").mkdir()
    photos[2].rename(folder / "sub" / "photo_2.png")
    predictor = Predictor(exported["result"].path)

    with pytest.raises(ImageError, match=r"notes\.txt"):
        predictor.predict(folder / "notes.txt")

    rows = list(predictor.predict_folder(folder, batch_size=2, top_k=1))
    assert [p.relative_to(folder).as_posix() for p, _ in rows] == [
        "notes.txt",
        "photo_0.png",
        "photo_1.png",
        "sub/photo_2.png",
    ]
    error = rows[0][1]
    assert isinstance(error, ImageError) and error.reason == "not_an_image"
    expected = predictor.predict_many([folder / "photo_0.png", folder / "photo_1.png"], top_k=1)
    assert [r for _, r in rows[1:3]] == expected


def test_prepare_is_the_torchvision_eval_resize():
    """The training loop resizes with torchvision v2 on PIL images; `prepare` must give the same pixels."""
    from torchvision.transforms import v2

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8))
    resize = v2.Resize((SIZE, SIZE), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    expected = np.asarray(resize(image))
    got = prepare(image, SIZE)
    assert got.dtype == np.uint8 and got.shape == (SIZE, SIZE, 3) and got.flags.c_contiguous
    assert np.array_equal(got, expected)
    assert prepare(image.convert("L"), (16, 24)).shape == (16, 24, 3)


def test_int8_copy_with_measured_figures(exported, tmp_path):
    truth = [0, 1, 2, 0, 1, 2]
    result = quantize_int8(
        exported["result"].path,
        tmp_path / "model.int8.onnx",
        exported["verify"],
        labels_true=truth,
        calibration_images=random_images(4, SIZE, seed=7),
        timing_images=3,
    )
    figures = json.loads(json.dumps(result.to_dict()))
    assert figures["method"] == "static" and figures["calibration"] == "caller"
    assert figures["int8_bytes"] < 0.35 * figures["fp32_bytes"]
    # 17 convolutions plus the 1x1 head.
    assert figures["quantized_ops"].get("Conv int8") == 18 and "Conv float" not in figures["quantized_ops"]
    assert figures["n_images"] == 6 and 0 <= figures["top1_agree"] <= 6
    assert figures["fp32_images_per_s"] > 0 and figures["int8_images_per_s"] > 0
    p32 = Predictor(exported["result"].path).probabilities(exported["photos"])
    assert figures["fp32_accuracy"] == pytest.approx(float(np.mean(p32.argmax(1) == truth)))
    assert figures["accuracy_change"] == pytest.approx(figures["int8_accuracy"] - figures["fp32_accuracy"])

    int8 = Predictor(result.path)
    assert int8.labels == LABELS and "static" in int8.metadata[onnx_format.META_QUANTIZATION]
    assert [p.name for p in tmp_path.iterdir()] == ["model.int8.onnx"]


def test_efficientnet_exports_as_is(tmp_path):
    from bit_engine.efficientnet import EfficientNetLite
    from bit_engine.models import get_spec

    torch.manual_seed(0)
    model = EfficientNetLite(num_classes=2, zero_head=False)
    result = export_onnx(
        model, ["a", "b"], SIZE, get_spec("EfficientNet-Lite0").normalization, tmp_path / "lite.onnx"
    )
    assert result.top1_agree == result.n_images and result.max_abs_prob_diff <= 1e-4
    assert read_metadata(result.path)[onnx_format.META_BACKBONE] == "EfficientNetLite"


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_int8_probabilities_sum_to_one(exported, tmp_path, method):
    # The softmax is computed in float after the last quantized node; a quantized softmax output moves in
    # steps of 1/255 and its rows summed to 0.996.
    result = quantize_int8(
        exported["result"].path, tmp_path / "m.int8.onnx", exported["verify"], method=method, timing_images=1
    )
    probabilities = Predictor(result.path).probabilities(exported["photos"])
    assert np.abs(probabilities.sum(axis=1) - 1.0).max() < 1e-5
    nodes = onnx.load(result.path).graph.node
    assert nodes[-1].op_type == "Softmax" and nodes[-1].output[0] == onnx_format.PROBABILITIES_NAME


def test_int8_export_prints_none_of_onnxruntimes_warnings(tmp_path, capfd):
    # EfficientNet's graph made onnxruntime print dozens of "Removing initializer ..." lines while calibrating.
    from bit_engine.efficientnet import EfficientNetLite
    from bit_engine.models import get_spec

    torch.manual_seed(0)
    model = EfficientNetLite(num_classes=2, zero_head=False)
    fp32 = export_onnx(
        model, ["a", "b"], SIZE, get_spec("EfficientNet-Lite0").normalization, tmp_path / "e.onnx"
    )
    capfd.readouterr()
    quantize_int8(fp32.path, tmp_path / "e.int8.onnx", random_images(2, SIZE), timing_images=1)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_normalization_other_than_half_matches_an_independent_reference(exported, tmp_path):
    # With mean = std = 0.5 everywhere, swapping them (or the channel order of either) changes nothing;
    # ImageNet's statistics differ per channel and between mean and std, so any such mix-up shows.
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    model = exported["model"]
    result = export_onnx(
        model,
        LABELS,
        SIZE,
        {"mean": mean, "std": std},
        tmp_path / "imagenet.onnx",
        verify_images=exported["verify"],
    )
    assert json.loads(read_metadata(result.path)[onnx_format.META_NORMALIZATION]) == {
        "mean": list(mean),
        "std": list(std),
    }
    batch = exported["verify"]
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).double() / 255.0
    x = (x - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        reference = torch.softmax(model(x.float()), dim=1).numpy()
    got = Predictor(result.path).probabilities([Image.fromarray(image) for image in batch])
    assert np.abs(got - reference).max() < 1e-4
    assert not np.allclose(reference, _eager_probabilities(model, batch), atol=1e-3)  # the statistics matter


def test_predicting_and_quantizing_do_not_import_torch():
    # The file format lives apart from the exporter so that prediction (and the int8 copy) need no torch.
    code = "import sys, bit_engine.inference, bit_engine.quantize; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
