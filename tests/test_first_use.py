"""The command line as a new user meets it, on a machine that cannot reach the weights host (tests/conftest.py
points the host at an unroutable address and the cache at an empty folder): what `train` does without
--model, what `plan` says about missing weights, that nothing is announced before it is checked, that a
failed start leaves nothing that says "running", and how progress and timings read."""

from __future__ import annotations

import io
import itertools
import json
import re

import pytest
from test_cli import FAST, run_cli

from bit_engine import model_choice, train, weights, weights_cache
from bit_engine.cli.progress import TextProgress
from bit_engine.config import TrainConfig
from bit_engine.models import DEFAULT_MODEL
from bit_engine.runs import RunDir
from bit_engine.units import describe_duration

# ------------------------------------------------------------------------------------------ no --model


def test_train_without_model_offline_says_so_and_trains_the_offline_model(color_folder, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, _ = run_cli(
        capsys, "train", color_folder, "--strategy", "head", "--steps", "10", *FAST, "--out", run
    )
    assert code == 0
    tried = out.index(f"{DEFAULT_MODEL}'s weights are not on this machine; trying to download them")
    fell_back = out.index("could not be downloaded (Could not reach 127.0.0.1:9")
    assert tried < fell_back
    assert "Using EfficientNet-Lite0 instead: its weights ship with BiT Studio." in out
    assert f"Then import that file: bit-studio weights import PATH/TO/{DEFAULT_MODEL}.npz" in out
    assert out.index("Training EfficientNet-Lite0 (head) on") > fell_back
    assert RunDir(run).read_json("config.json")["model"] == "EfficientNet-Lite0"


def test_train_of_a_chosen_model_whose_weights_cannot_be_had_refuses_before_creating_anything(
    color_folder, tmp_path, capsys
):
    run = tmp_path / "run"
    runs = tmp_path / "data"  # the default runs folder's parent (BIT_STUDIO_DATA_DIR in conftest)
    code, out, err = run_cli(capsys, "train", color_folder, "--model", DEFAULT_MODEL, *FAST, "--out", run)
    assert code == 2
    assert "Could not reach 127.0.0.1:9" in err
    assert err.rstrip().endswith("--model EfficientNet-Lite0")  # the exact alternative, last
    assert "Training" not in out
    assert not run.exists() and not (runs / "runs").exists()


def test_plan_says_when_the_models_weights_are_not_on_this_machine(color_folder, tiny_bit, capsys):
    code, out, _ = run_cli(capsys, "plan", color_folder, "--no-estimate")
    assert code == 0
    assert (
        f"  weights      {DEFAULT_MODEL} is not on this machine: `train` downloads it first (" in out
        and "when it cannot reach the weights host, trains EfficientNet-Lite0 instead" in out
    )
    code, out, _ = run_cli(capsys, "plan", color_folder, "--model", DEFAULT_MODEL, "--no-estimate")
    assert "or use --model EfficientNet-Lite0, whose weights ship with BiT Studio" in out
    code, out, _ = run_cli(capsys, "plan", color_folder, "--model", DEFAULT_MODEL, "--no-estimate", "--json")
    assert json.loads(out)["weights_on_this_machine"] is False
    # Weights on this machine (the tiny test model's are cached): nothing to say.
    code, out, _ = run_cli(capsys, "plan", color_folder, "--model", tiny_bit, "--no-estimate")
    assert "weights  " not in out
    code, out, _ = run_cli(capsys, "plan", color_folder, "--model", "EfficientNet-Lite0", "--no-estimate")
    assert "weights  " not in out


def test_choose_default_model_for_the_desktop_window(monkeypatch):
    quick = model_choice.choose_default_model(download=False)
    assert quick.name == "EfficientNet-Lite0" and quick.fell_back
    assert quick.message.startswith(f"{DEFAULT_MODEL}'s weights (")
    offline = model_choice.choose_default_model()
    assert offline.name == "EfficientNet-Lite0" and "could not be downloaded" in offline.message
    monkeypatch.setattr(weights, "is_available", lambda name: name == DEFAULT_MODEL)
    cached = model_choice.choose_default_model()
    assert (cached.name, cached.fell_back, cached.message) == (DEFAULT_MODEL, False, "")


# ------------------------------------------------------------------------------ checked, then announced


@pytest.mark.parametrize("model", [None, "EfficientNet-Lite0"])
def test_nothing_is_announced_before_the_folder_is_checked(tmp_path, capsys, model):
    extra = ["--model", model] if model else []
    code, out, err = run_cli(capsys, "train", tmp_path / "nonexistent", *extra, "--out", tmp_path / "run")
    assert code == 2
    assert out == ""  # neither "Training ..." nor a download attempt
    assert err.startswith("error: The folder") and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(capsys, "train", tmp_path / "empty", "--model", "EfficientNet-Lite0", *FAST)
    assert code == 2 and "Training" not in out and "The folder is empty" in err


def test_train_announces_after_the_scan_and_prints_its_time_next_to_the_estimate(
    color_folder, tiny_bit, tmp_path, capsys
):
    code, out, _ = run_cli(
        capsys, "train", color_folder, "--model", tiny_bit, "--strategy", "head", "--steps", "40", *FAST,
        "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 0
    assert out.startswith(f"Training {tiny_bit} (head) on {color_folder}. Ctrl-C stops and keeps the run.\n")
    finished = re.search(r"^Finished in (\w+) \(estimated after 2 steps: (\w+)\)\.$", out, re.M)
    assert finished, out
    assert out.index("Finished in") < out.index("Done: validation accuracy")


# ---------------------------------------------------------------------------------- a failed start


def test_a_failed_start_leaves_no_run_that_says_running_and_out_can_be_used_again(
    color_folder, tiny_bit, tmp_path
):
    cached = weights_cache.cache_file(tiny_bit)
    kept = cached.read_bytes()
    cached.unlink()  # the weights are gone and the host cannot be reached: the model cannot be built
    config = TrainConfig(
        data_dir=str(color_folder), model=tiny_bit, strategy="head", steps=4, batch=8, resolution=32,
        device="cpu", workers=0,
    )  # fmt: skip
    out = tmp_path / "run"
    with pytest.raises(weights_cache.HostUnreachableError):
        train.fit(config, out=out)
    assert list(out.iterdir()) == []  # no config.json, no status "running"
    with pytest.raises(weights_cache.HostUnreachableError):
        train.fit(config)  # in the default runs folder: the folder made for it is gone too
    assert not any((tmp_path / "data" / "runs").iterdir())

    cached.write_bytes(kept)
    assert train.fit(config, out=out).status == "done"  # the same --out, at once


def test_a_run_that_fails_after_a_checkpoint_says_failed_and_why(
    color_folder, tiny_bit, tmp_path, monkeypatch
):
    def broken_report(*args, **kwargs):
        raise OSError("the disk went away")

    monkeypatch.setattr(train, "build_report", broken_report)
    config = TrainConfig(
        data_dir=str(color_folder), model=tiny_bit, strategy="head", steps=4, batch=8, resolution=32,
        device="cpu", workers=0,
    )  # fmt: skip
    with pytest.raises(OSError):
        train.fit(config, out=tmp_path / "run")
    run = RunDir(tmp_path / "run")
    status = run.read_json("status.json")
    assert status["state"] == "failed" and "the disk went away" in status["message"]
    assert run.exists("checkpoint.pt")  # resumable


# ----------------------------------------------------------------------------------- words and lines


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0.3, "1 second"), (1.2, "1 second"), (2, "2 seconds"), (40, "40 seconds"), (150, "2 minutes"),
     (3600, "60 minutes"), (4 * 3600, "4.0 hours")],
)  # fmt: skip
def test_durations_read_as_words(seconds, words):
    assert describe_duration(seconds) == words


def test_progress_in_a_log_is_a_line_every_few_seconds(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("bit_engine.cli.progress.time.monotonic", lambda: now[0])
    log = io.StringIO()  # not a terminal
    bar = TextProgress(stream=log)
    for step in range(1, 41):  # 20 seconds of updates, two a second
        now[0] = step * 0.5
        bar.update(step / 40, f"step {step}/40")
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    steps = [int(re.search(r"step (\d+)/40", line)[1]) for line in lines]
    assert steps[0] == 1 and steps[-1] == 40  # the first and the last
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    assert max(gaps) <= 6  # at least every 3 seconds
    assert len(lines) <= 9  # and not a line per update
