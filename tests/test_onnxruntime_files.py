"""onnxruntime writes no telemetry database or device id into the user's cache (see bit_engine/__init__.py).

A fresh process, a fresh home folder: the first onnxruntime session is what creates
``~/.cache/Microsoft/DeveloperTools/.onnxruntime/{onnxruntime.db,deviceid}`` when telemetry is on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A tiny uint8 NHWC classifier built with onnx.helper (no torch: the test stays fast), run by the Predictor.
_SCRIPT = """
import numpy as np, onnx
from onnx import TensorProto, helper
from PIL import Image
from bit_engine.inference import Predictor
graph = helper.make_graph(
    [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
     helper.make_node("ReduceMean", ["f"], ["probabilities"], axes=[1, 2], keepdims=0)],
    "g",
    [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 8, 8, 3])],
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, "m.onnx")
print(Predictor("m.onnx").predict(Image.new("RGB", (8, 8), (1, 2, 3)), top_k=1))
"""


def test_prediction_writes_nothing_under_the_users_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, cwd=tmp_path, timeout=300, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "class 2" in done.stdout  # it really ran a session
    written = [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()]
    assert written == [], f"written under the home folder: {written}"
