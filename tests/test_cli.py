"""The command line end to end, as a user meets it: what `plan`, `train`, `resume` and `evaluate` print,
what they write, how they exit, and that no traceback ever reaches the user, bad input included.

Most tests call `bit_engine.cli.main` in-process with a tiny BiT model (an exception escaping `main` fails
the test, just as it would print a traceback); two run the real `bit-studio` console script in a
subprocess with EfficientNet-Lite0, whose weights ship with the app.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import make_color_folder
from corpus import EMPTY_CLASS, UNICODE_CLASS, make_bad_corpus

from bit_engine.cli import main
from bit_engine.config import TrainConfig
from bit_engine.progress import OperationCancelled
from bit_engine.runs import RunDir

FAST = ["--batch", "16", "--resolution", "32", "--device", "cpu"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one in-process `bit-studio` call."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def console_script() -> list[str]:
    """The installed `bit-studio` command, or the module it runs when the venv has no script."""
    script = Path(sys.executable).with_name("bit-studio")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.main"]


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    """The bad-input corpus, written once: tests only read it (scans never write into a dataset)."""
    return make_bad_corpus(tmp_path_factory.mktemp("bad") / "photos")


def visible_skips(corpus: dict) -> dict[str, str]:
    return {p: r for p, r in corpus["skipped"].items() if r != "hidden"}


# --------------------------------------------------------------------------------------------------------------
# plan


def test_plan_shows_counts_skipped_files_with_reasons_and_the_rule(bad_corpus, tiny_bit, capsys):
    code, out, _ = run_cli(capsys, "plan", bad_corpus["root"], "--model", tiny_bit, "--no-estimate")
    assert code == 0
    counts = Counter(bad_corpus["valid"].values())
    for name, n in counts.items():
        assert re.search(rf"^\s+{re.escape(name)}\s+train\s+{n}$", out, re.M), name
    assert f"{sum(counts.values())} usable images; median size 24x24" in out
    assert not re.search(rf"^\s+{re.escape(EMPTY_CLASS)}\s+train", out, re.M)  # not counted as a class

    # Every visible skipped file is listed with the same message the JSON report gives for it.
    _, json_out, _ = run_cli(
        capsys, "plan", bad_corpus["root"], "--model", tiny_bit, "--no-estimate", "--json"
    )
    messages = {s["path"]: s["message"] for s in json.loads(json_out)["dataset"]["skipped"]}
    for path in visible_skips(bad_corpus):
        assert f"    {path}: {messages[path]}\n" in out
    # One count everywhere: the list's header and the summary warning agree, hidden litter is counted apart.
    visible = len(visible_skips(bad_corpus))
    hidden = len(bad_corpus["skipped"]) - visible
    assert f"  {visible} items were skipped:\n" in out
    assert f"warning: {visible} items were skipped (" in out
    assert f"  {hidden} hidden or system files (.DS_Store, Thumbs.db, ...) left out\n" in out
    assert f"The folder {EMPTY_CLASS!r} has no usable photo, so that class is left out." in out

    # The rule's decisions, each with its reason (15 training images, median 24x24).
    assert "fewer than 20,000: 500 steps, warm-up 100" in out
    assert "smaller than 96x96: resize to 160x160, random crop 128x128" in out
    assert "512 images per step at learning rate 0.003" in out
    assert "no mixup" in out


def test_plan_of_a_kaggle_split_says_where_the_classes_are_and_never_trains_on_the_split_names(
    tiny_bit, tmp_path, capsys
):
    root = tmp_path / "cat-and-dog"
    make_color_folder(root / "training_set" / "training_set", ("red", "blue"), per_class=8)
    make_color_folder(root / "test_set" / "test_set", ("red", "blue"), per_class=2, seed=1)
    code, out, _ = run_cli(capsys, "plan", root, "--model", tiny_bit, "--no-estimate")
    assert code == 0
    assert (
        "  The classes are in training_set/training_set/ (for training) and test_set/test_set/ "
        "(for validation).\n" in out
    )
    assert re.search(r"^\s+blue\s+train\s+8\s+val\s+2$", out, re.M)
    assert "training_set  " not in out  # not a class
    assert "16 training / 4 validation images (from the folder)" in out


def test_plan_names_the_classes_too_small_for_a_validation_photo(tiny_bit, tmp_path, capsys):
    root = tmp_path / "small"
    for i, colour in enumerate(("red", "green", "blue", "yellow")):
        make_color_folder(root, (colour,), per_class=3, seed=i)
    code, out, _ = run_cli(capsys, "plan", root, "--model", tiny_bit, "--no-estimate")
    assert code == 0
    # 12 photos at 0.2: 2 held out (not one per class, 4 of 12), the two classes without one are named.
    assert "10 training / 2 validation images (held out at random, seeded)" in out
    line = next(x for x in out.splitlines() if "no validation photo for" in x)
    assert len(re.findall(r"'(?:blue|green|red|yellow)'", line)) == 2 and "20% share" in line


def test_plan_json_is_machine_readable_and_matches_the_scan(bad_corpus, tiny_bit, capsys):
    code, out, _ = run_cli(
        capsys,
        "plan",
        bad_corpus["root"],
        "--model",
        tiny_bit,
        "--json",
        "--strategy",
        "head",
        "--steps",
        "40",
    )
    assert code == 0
    doc = json.loads(out)  # nothing but JSON on stdout
    dataset, plan = doc["dataset"], doc["plan"]
    assert dataset["classes"] == bad_corpus["classes"]
    assert {s["path"]: s["reason"] for s in dataset["skipped"]} == bad_corpus["skipped"]
    assert doc["split"]["train"] + doc["split"]["val"] == len(bad_corpus["valid"])
    assert plan["total_steps"] == 40 and plan["batch"] == 512
    # The head strategy keeps the backbone's pre-training resolution; the HyperRule's own value stays at hand.
    assert plan["crop"] == 224 and plan["rule_crop"] == 128 and "Head only" in plan["reasons"]["resolution"]
    assert [o["setting"] for o in plan["overrides"]] == ["steps"]
    [estimate] = doc["estimates"]
    assert estimate["strategy"] == "head" and estimate["seconds"] > 0
    assert estimate["text"].startswith("About ")


# --------------------------------------------------------------------------------------------------------------
# train, evaluate, resume


def test_train_then_evaluate_on_its_split_and_on_another_folder(color_folder, tiny_bit, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, _ = run_cli(
        capsys, "train", color_folder, "--model", tiny_bit, "--strategy", "head", "--steps", "60", *FAST,
        "--out", run,
    )  # fmt: skip
    assert code == 0
    trained = float(re.search(r"Done: validation accuracy ([\d.]+)% after 60 steps\.", out)[1])
    assert trained >= 80  # three colours: chance is 33%
    assert f"Run folder: {run}" in out
    assert RunDir(run).read_json("status.json")["state"] == "done"

    code, out, _ = run_cli(capsys, "evaluate", run)
    assert code == 0
    # The same model on the same split: the same figure as at the end of training.
    assert f"Accuracy {trained:.1f}% on 6 images (validation)." in out

    other = make_color_folder(tmp_path / "other", classes=("red", "green", "yellow"), per_class=4, seed=7)
    code, out, _ = run_cli(capsys, "evaluate", run, other)
    assert code == 0
    assert re.search(rf"Accuracy [\d.]+% on 8 images \({re.escape(str(other))}\)\.", out)
    assert "left out, classes the model does not know: yellow (4)" in out
    code, out, _ = run_cli(capsys, "evaluate", run, other, "--json")
    report = json.loads(out)
    assert report["unknown_classes"] == {"yellow": 4} and report["num_images"] == 8
    assert report["per_class"]["blue"]["support"] == 0
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "evaluate", run, tmp_path / "empty")
    assert code == 2 and "error: The folder is empty." in err


def test_resume_finishes_a_cancelled_run(color_folder, tiny_bit, tmp_path, capsys):
    from bit_engine.train import fit

    cancel = threading.Event()

    def stop_after_step_2(p):
        if p.phase == "training" and p.step == 2:
            cancel.set()

    config = TrainConfig(
        data_dir=str(color_folder),
        model=tiny_bit,
        steps=6,
        batch=8,
        resolution=32,
        device="cpu",
        workers=0,
        evaluations=2,
    )
    with pytest.raises(OperationCancelled) as info:
        fit(config, on_progress=stop_after_step_2, cancel=cancel, out=tmp_path / "run")
    cancelled = info.value
    assert cancelled.step == 2

    code, _, err = run_cli(capsys, "evaluate", cancelled.run_dir)
    assert code == 2
    assert (
        f"no trained model yet (model.pt). Finish or resume the run first: bit-studio resume {cancelled.run_dir}"
        in err
    )

    code, out, _ = run_cli(capsys, "resume", cancelled.run_dir)
    assert code == 0
    assert re.search(r"Done: validation accuracy [\d.]+% after 6 steps\.", out)
    run = RunDir(cancelled.run_dir)
    assert run.read_json("status.json")["state"] == "done" and run.exists("model.pt")
    assert [m["step"] for m in run.read_metrics()] == [1, 2, 3, 4, 5, 6]


# --------------------------------------------------------------------------------------------------------------
# Refusals: device, model, overrides


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a usable GPU")
def test_cuda_on_a_machine_without_one_is_an_error_not_a_cpu_run(color_folder, tiny_bit, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(
        capsys, "train", color_folder, "--model", tiny_bit, "--device", "cuda", "--out", run
    )
    assert code == 2
    assert "error: Cannot train on cuda: " in err
    assert not run.exists()  # nothing trained, on the CPU or anywhere
    code, out, err = run_cli(capsys, "plan", color_folder, "--model", tiny_bit, "--device", "cuda")
    assert code == 2 and "error: Cannot train on cuda: " in err
    assert "HyperRule plan" not in out  # refused up front, not after a plan that looks fine


@pytest.mark.parametrize("command", ["plan", "train"])
def test_an_unknown_model_lists_the_known_ones(color_folder, command, capsys):
    code, _, err = run_cli(capsys, command, color_folder, "--model", "BiT-Q-R9x9")
    assert code == 2
    assert "Unknown model 'BiT-Q-R9x9'. Known models: " in err
    for name in ("BiT-M-R50x1", "BiT-S-R101x3", "BiT-M-R152x4", "EfficientNet-Lite0"):
        assert name in err


@pytest.mark.parametrize(
    "flag, value",
    [("--steps", "0"), ("--batch", "-4"), ("--resolution", "4"), ("--mixup", "-1"), ("--batch", "x")],
)
def test_out_of_range_overrides_are_refused_before_the_scan(tmp_path, flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path / "not scanned"), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and "Traceback" not in err


def test_out_of_range_overrides_from_other_callers_are_config_errors():
    from bit_engine.config import ConfigError
    from bit_engine.errors import BitStudioError

    with pytest.raises(ConfigError, match="Steps must be a whole number of at least 1") as info:
        TrainConfig(data_dir="x", steps=0)
    assert isinstance(info.value, BitStudioError) and set(info.value.problems) == {"steps"}


# --------------------------------------------------------------------------------------------------------------
# Folders that cannot be trained on


def _one_class(root: Path) -> Path:
    return make_color_folder(root, classes=("red",))


def _only_bad_files_besides_one_class(root: Path) -> Path:
    make_color_folder(root, classes=("red",))
    (root / "broken").mkdir()
    (root / "broken" / "empty.jpg").write_bytes(b"")
    (root / "broken" / "note.jpg").write_text("not a photo", encoding="utf-8")
    return root


def _empty(root: Path) -> Path:
    root.mkdir()
    return root


def _a_file(root: Path) -> Path:
    root.write_bytes(b"\xff\xd8\xff")
    return root


def _missing(root: Path) -> Path:
    return root


FOLDER_ERRORS = {
    "single class": (_one_class, "Only one class has usable photos ('red')"),
    "no valid image in a class": (
        _only_bad_files_besides_one_class,
        "Only one class has usable photos ('red')",
    ),
    "empty folder": (_empty, "The folder is empty."),
    "file instead of folder": (_a_file, "is a file, not a folder."),
    "missing path": (_missing, "does not exist."),
}


@pytest.mark.parametrize("command", ["plan", "train"])
@pytest.mark.parametrize("case", FOLDER_ERRORS)
def test_a_folder_that_cannot_be_trained_on_exits_2_naming_the_problem(
    case, command, tiny_bit, tmp_path, capsys
):
    make, problem = FOLDER_ERRORS[case]
    folder = make(tmp_path / "photos")
    run = tmp_path / "run"
    extra = ["--no-estimate"] if command == "plan" else ["--device", "cpu", "--out", run]
    code, out, err = run_cli(capsys, command, folder, "--model", tiny_bit, *extra)
    assert code == 2
    assert problem in out + err
    assert not run.exists()
    assert "Training" not in out  # nothing announced before it is checked
    if case == "no valid image in a class" and command == "plan":
        # The user sees why the second class does not count.
        assert "broken/empty.jpg: the file is empty" in out and "broken/note.jpg: " in out


# --------------------------------------------------------------------------------------------------------------
# The real console script


def test_console_script_trains_on_the_bad_corpus_using_every_valid_image(bad_corpus, tmp_path):
    run = tmp_path / "run"
    command = [*console_script(), "train", str(bad_corpus["root"]), "--model", "EfficientNet-Lite0"]
    command += ["--strategy", "head", "--steps", "2", *FAST, "--out", str(run)]
    done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "Done: validation accuracy" in done.stdout
    split = RunDir(run).read_json("split.json")
    used = {path: split["classes"][label] for path, label in split["train"] + split["val"]}
    assert used == bad_corpus["valid"]  # every valid photo, with its class; no skipped file
    assert {p for p, c in used.items() if c == UNICODE_CLASS} == {
        f"{UNICODE_CLASS}/фото 1.jpg",
        f"{UNICODE_CLASS}/写真.png",
    }
    skipped = {s["path"]: s["reason"] for s in RunDir(run).read_json("dataset.json")["skipped"]}
    assert skipped == bad_corpus["skipped"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT cannot be sent to a console process this way")
def test_ctrl_c_stops_training_cleanly_and_says_how_to_resume(color_folder, tmp_path):
    run = tmp_path / "run"
    command = [*console_script(), "train", str(color_folder), "--model", "EfficientNet-Lite0"]
    command += ["--strategy", "full", "--steps", "5000", *FAST, "--out", str(run)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8"
    )
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        seen = []
        for line in proc.stderr:  # the progress lines; the first training one means steps are running
            seen.append(line)
            if "step " in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    err = "".join(seen) + err
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    assert f"The run is saved; continue it with:\n  bit-studio resume {run}" in err
    status = RunDir(run).read_json("status.json")
    assert status["state"] == "cancelled" and 0 < status["step"] < 5000
    assert RunDir(run).exists("checkpoint.pt")


def test_evaluate_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", tmp_path)
    assert code == 2 and f"{tmp_path} is not a run folder" in err
    code, _, err = run_cli(capsys, "resume", tmp_path / "nowhere")
    assert code == 2 and "is not a run folder" in err
