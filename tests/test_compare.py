"""Comparing runs: the figures and curves read from run folders, the from-scratch baseline's settings, and the
three benefits of transfer (start, slope, asymptote) said only as strongly as the numbers allow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gui_runs import make_run

from bit_engine import compare, runs
from bit_engine.compare import ComparedRun, TransferBenefits, comparison_problem, explain, load_run
from bit_engine.config import TrainConfig
from bit_engine.train import make_plan


def _run(strategy, curve, final=None, *, model="BiT-M-R50x1", state="done", val_images=0, name=None):
    final = curve[-1][1] if final is None and state == "done" and curve else final
    scores = [a for _, a in curve] + ([final] if final is not None else [])
    return ComparedRun(
        path=Path(name or strategy),
        name=name or strategy,
        data_dir="/photos/flowers",
        model=model,
        strategy=strategy,
        state=state,
        step=len(curve) * 10,
        total_steps=40,
        batch=10,
        crop=128,
        seconds=60.0,
        final_accuracy=final,
        best_accuracy=max(scores) if scores else None,
        curve=tuple(curve),
        val_images=val_images,
    )


TRANSFER = [(100, 0.82), (200, 0.90), (300, 0.93), (400, 0.95)]
SCRATCH = [(100, 0.31), (200, 0.45), (300, 0.52), (400, 0.58)]


def test_a_pre_trained_run_that_starts_and_ends_higher_says_so_and_who_climbed_faster():
    benefits = TransferBenefits.measure(_run("full", TRANSFER), _run("scratch", SCRATCH))
    assert benefits.start == (0.82, 0.31) and benefits.start_images == 100
    assert benefits.early == (100, 200)
    assert benefits.gain == pytest.approx((0.08, 0.14))
    assert benefits.verdicts() == {"start": 1, "slope": -1, "end": 1}
    texts = [f.text for f in benefits.findings()]
    assert texts == [
        "Higher start: starting from pre-trained weights, the model was at 82% at the first evaluation "
        "(after 100 images), where training from scratch was at 31%.",
        # The pre-trained model had less left to gain: the numbers do not show a higher slope, so no claim.
        "Slope: training from scratch climbed faster from 100 images to 200 images (gained 14 points, "
        "pre-trained gained 8 points), but from a lower start.",
        "Higher asymptote: the pre-trained model ended at 95% (best 95%), training from scratch at 58% "
        "(best 58%). It reached the from-scratch run's final accuracy after 100 images, 25% of the way "
        "through training.",
    ]


def test_a_higher_slope_is_claimed_only_when_the_pre_trained_run_gained_more():
    slow_start = [(100, 0.40), (200, 0.80), (300, 0.85), (400, 0.86)]
    found = TransferBenefits.measure(_run("head", slow_start), _run("scratch", SCRATCH)).findings()
    assert found[1].verdict == 1
    assert found[1].text == (
        "Higher slope: the pre-trained model also learned faster early on: from 100 images to 200 images "
        "it gained 40 points, training from scratch gained 14 points."
    )


def test_when_scratch_wins_or_ties_the_words_say_so_and_claim_no_benefit():
    worse = [(100, 0.20), (200, 0.30), (300, 0.40), (400, 0.50)]
    found = TransferBenefits.measure(_run("full", worse), _run("scratch", SCRATCH)).findings()
    assert [f.verdict for f in found[:3]] == [-1, -1, -1]
    assert not any(f.text.startswith("Higher") for f in found)
    assert found[0].text == (
        "Start: training from scratch began higher, 31% against 20% pre-trained at the first evaluation "
        "(after 100 images)."
    )
    assert found[1].text == (
        "Slope: training from scratch climbed faster from 100 images to 200 images (gained 14 points, "
        "pre-trained gained 10 points)."
    )
    assert found[2].text == "End: training from scratch ended higher, at 58% against 50% pre-trained."

    # Ten validation photos: one photo is 10 points, so 80% against 75% is level, and the words say why.
    level = TransferBenefits.measure(
        _run("full", [(100, 0.80), (400, 0.90)], val_images=10),
        _run("scratch", [(100, 0.75), (400, 0.90)], val_images=10),
    )
    assert level.tolerance == pytest.approx(0.1)
    texts = [f.text for f in level.findings()]
    assert (
        texts[0].startswith("Start: no head start here;")
        and "(80% pre-trained, 75% from scratch)" in texts[0]
    )
    assert texts[2] == "End: both ended level: 90% pre-trained, 90% from scratch."
    assert texts[-1] == "With 10 validation photos, one photo is 10%: differences that small count as level."


def test_unfinished_runs_single_evaluations_and_other_models_come_with_their_caveats():
    benefits = TransferBenefits.measure(
        _run("full", [(400, 0.9)]),
        _run("scratch", [(100, 0.3)], state="cancelled", model="EfficientNet-Lite0"),
    )
    texts = [f.text for f in benefits.findings()]
    assert texts[1] == "Slope: one evaluation is not enough to tell how fast each run learned."
    assert texts[2].startswith("Higher asymptote: the pre-trained model is so far at 90%")
    assert "EfficientNet-Lite0 · From scratch has not finished (step 10 of 40)" in texts[3]
    assert "different models (BiT-M-R50x1, EfficientNet-Lite0)" in texts[4]


def test_explain_pairs_each_pre_trained_run_with_its_baseline_and_says_what_is_missing():
    assert explain([]) == []
    alone = explain([_run("full", TRANSFER)])
    assert len(alone) == 1 and "None of these runs was trained from scratch" in alone[0].lines[0]
    waiting = explain([_run("full", TRANSFER), _run("scratch", [], state="running")])
    assert waiting[0].lines == (
        "The run from scratch has no validation accuracy yet: the comparison appears once it has been evaluated.",
    )
    only_scratch = explain([_run("scratch", SCRATCH)])
    assert "Every run here was trained from scratch" in only_scratch[0].lines[0]

    paragraphs = explain(
        [
            _run("full", TRANSFER),
            _run("head", TRANSFER, model="EfficientNet-Lite0"),
            _run("scratch", SCRATCH, model="EfficientNet-Lite0", name="lite-scratch"),
            _run("scratch", SCRATCH, name="bit-scratch"),
            _run("full", [], state="failed", name="failed"),
        ]
    )
    assert [p.title for p in paragraphs] == [
        "BiT-M-R50x1 · Fine-tune against BiT-M-R50x1 · From scratch",
        "EfficientNet-Lite0 · Head only against EfficientNet-Lite0 · From scratch",
        "Without a curve",
    ]
    assert paragraphs[2].lines == (
        "BiT-M-R50x1 · Fine-tune: no validation accuracy recorded, so not on the chart.",
    )


def test_a_caveat_shared_by_several_pairs_is_said_once():
    paragraphs = explain(
        [
            _run("full", TRANSFER, val_images=50),
            _run("head", TRANSFER, val_images=50),
            _run("scratch", SCRATCH, val_images=50),
        ]
    )
    notes = [line for p in paragraphs for line in p.lines if line.startswith("With 50 validation photos")]
    assert len(paragraphs) == 2 and len(notes) == 1


def test_only_runs_of_one_folder_can_be_compared():
    assert comparison_problem(["/photos/flowers", "/photos/flowers/", "/photos/./flowers"]) is None
    assert comparison_problem([]) is None
    problem = comparison_problem(["/photos/flowers", "/photos/birds"])
    assert problem.startswith("These runs trained on different folders (flowers, birds)")
    assert "only runs of the same folder can be compared" in problem
    # Two folders with one name: the paths tell them apart.
    assert "(/a/photos, /b/photos)" in comparison_problem(["/a/photos", "/b/photos"])


def test_a_run_folder_reads_as_its_figures_and_a_curve_against_images_seen(tmp_path):
    data = tmp_path / "flowers"
    path = make_run(
        "transfer",
        data,
        "done",
        20,
        accuracy=0.9,
        batch=16,
        top1=lambda s: s / 25,
        seconds_per_step=0.5,
        val_images=30,
    )
    run = load_run(path)
    assert (run.name, run.model, run.strategy, run.state) == ("transfer", "BiT-M-R50x1", "full", "done")
    assert (run.step, run.total_steps, run.batch, run.crop) == (20, 20, 16, 128)
    assert run.curve == ((80, 0.2), (160, 0.4), (240, 0.6), (320, 0.8))
    assert run.final_accuracy == 0.9 and run.best_accuracy == 0.9 and run.val_images == 30
    assert run.seconds == pytest.approx(10.0)
    assert run.config.batch == 16 and run.plan.total_steps == 20

    # A resumed run counts each session's time; a run that never started has no curve, and says so.
    metrics = [
        runs.MetricRecord(s, 0, 1.0, 0.1, elapsed=e) for s, e in ((1, 2.0), (2, 4.0), (3, 1.0), (4, 3.0))
    ]
    assert compare.training_seconds(metrics) == 7.0
    stopped = make_run("stopped", data, "cancelled", 3, every=5)
    assert load_run(stopped).curve == () and load_run(stopped).final_accuracy is None
    # A running run's status moves at checkpoints only: its metrics say where it is.
    running = make_run("running", data, "running", 7)
    runs.RunDir(running).set_status("running", 5, 20)
    assert load_run(running).step == 7 and load_run(running).state == "running"


@pytest.mark.parametrize(("strategy", "resolution"), [("head", None), ("full", 64)])
def test_the_scratch_baseline_has_the_schedule_of_the_run_it_is_compared_with(tmp_path, strategy, resolution):
    config = TrainConfig(
        data_dir=str(tmp_path), model="BiT-M-R50x1", strategy=strategy, resolution=resolution, seed=3
    )
    plan = make_plan(config, 600, (500, 375))
    path = make_run("t", tmp_path, "done", 4, accuracy=0.5, strategy=strategy, resolution=resolution)
    runs.RunDir(path).write_json("config.json", config.to_dict())
    runs.RunDir(path).write_json("plan.json", {**runs.RunDir(path).read_json("plan.json"), **plan.to_dict()})
    baseline = compare.scratch_config(runs.read_config(path), runs.read_plan(path))
    assert baseline.strategy == "scratch" and baseline.seed == 3 and baseline.data_dir == str(tmp_path)
    again = make_plan(baseline, 600, (500, 375))
    for name in (
        "model",
        "resize",
        "crop",
        "schedule",
        "base_lr",
        "batch",
        "mixup_alpha",
        "flip",
        "random_crop",
    ):
        assert getattr(again, name) == getattr(plan, name), name


def test_comparing_runs_does_not_import_torch():
    code = (
        "import sys, bit_engine.compare, bit_engine.runs; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
