"""The one contract for long work, where it ends: export (with its verification) and folder prediction report
`Progress` and end a cancel with `OperationCancelled`, as training, evaluation, scan and download do."""

from __future__ import annotations

import threading

import pytest

from bit_engine.config import TrainConfig
from bit_engine.inference import Predictor
from bit_engine.progress import OperationCancelled
from bit_engine.run_export import export_run
from bit_engine.train import fit

pytestmark = pytest.mark.slow


@pytest.fixture
def finished_run(color_folder, tiny_bit, tmp_path):
    config = TrainConfig(
        data_dir=str(color_folder),
        model=tiny_bit,
        strategy="head",
        steps=2,
        batch=8,
        resolution=32,
        device="cpu",
        workers=0,
        evaluations=1,
    )
    return fit(config, out=tmp_path / "run").run_dir


def test_export_reports_its_stages_and_honours_cancel(finished_run):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(OperationCancelled, match="Export cancelled"):
        export_run(finished_run, cancel=cancel)
    assert not (finished_run / "export.json").exists()

    seen = []
    record = export_run(finished_run, on_progress=seen.append)
    assert [(p.phase, p.done, p.total) for p in seen] == [("exporting", 0, 1), ("done", 1, 1)]
    assert (finished_run / "export.json").exists() and record.export.n_images == 6


def test_folder_prediction_counts_files_and_honours_cancel(finished_run, color_folder):
    path = export_run(finished_run).export.path
    predictor = Predictor(path)
    seen = []
    answers = list(predictor.predict_folder(color_folder / "red", on_progress=seen.append))
    assert len(answers) == 10
    assert [(p.done, p.total) for p in seen] == [(i, 10) for i in range(11)]
    assert {p.phase for p in seen} == {"predicting"}

    cancel = threading.Event()

    def stop_after_three(p) -> None:
        if p.done == 3:
            cancel.set()

    with pytest.raises(OperationCancelled, match="Prediction cancelled"):
        list(predictor.predict_folder(color_folder / "red", on_progress=stop_after_three, cancel=cancel))
