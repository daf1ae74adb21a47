"""Label issues: confident learning on out-of-fold predictions over cached backbone features."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import make_color_folder

from bit_engine import features
from bit_engine.cli import main
from bit_engine.config import TrainConfig
from bit_engine.corrections import read_csv
from bit_engine.errors import BitStudioError
from bit_engine.label_issues import (
    class_thresholds,
    confident_issues,
    find_label_issues,
    out_of_fold_probabilities,
    stratified_folds,
)
from bit_engine.progress import OperationCancelled
from bit_engine.train import fit

CLASSES = ("red", "green", "blue", "yellow")


def noisy_colour_folder(root: Path, per_class: int = 25, seed: int = 0) -> set[str]:
    """Four colour classes with 10% of the photos moved into another colour's folder; the moved paths."""
    make_color_folder(root, classes=CLASSES, per_class=per_class, seed=seed)
    rng = random.Random(seed)
    photos = sorted(root.glob("*/*.png"))
    moved = set()
    for photo in rng.sample(photos, len(photos) // 10):
        wrong = rng.choice([c for c in CLASSES if c != photo.parent.name])
        photo.rename(root / wrong / photo.name)
        moved.add(f"{wrong}/{photo.name}")
    return moved


# ----------------------------------------------------------------------------------------------------------
# The rule and the folds, on numbers


def test_the_rule_flags_the_confident_off_diagonal_photos_with_per_class_thresholds():
    labels = np.array([0, 0, 0, 1, 1, 1])
    p = np.array(
        [
            [0.9, 0.1],  # sure and right
            [0.8, 0.2],
            [0.1, 0.9],  # labelled 0, confidently 1: an issue
            [0.3, 0.7],
            [0.4, 0.6],
            [0.45, 0.55],  # labelled 1; p_0 = 0.45 is below t_0 = 0.6: unsure, not an issue
        ]
    )
    assert class_thresholds(p, labels) == pytest.approx([0.6, (0.7 + 0.6 + 0.55) / 3])
    found, suggested = confident_issues(p, labels)
    assert found.tolist() == [2] and suggested.tolist() == [1]
    assert confident_issues(p, labels, "margin")[0].tolist() == [2]


def test_issues_rank_by_self_confidence_or_by_margin():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    p = np.array(
        [[.6, .2, .2], [.6, .2, .2], [.1, .5, .4],  # photo 2: labelled 0 at 0.1, class 1 at 0.5
         [.2, .6, .2], [.2, .6, .2], [.2, .15, .65],  # photo 5: labelled 1 at 0.15, class 2 at 0.65
         [.2, .2, .6], [.2, .2, .6], [.2, .2, .6]]
    )  # fmt: skip
    found, suggested = confident_issues(p, labels)
    assert (found.tolist(), suggested.tolist()) == ([2, 5], [1, 2])  # the least likely given label first
    found, suggested = confident_issues(p, labels, "margin")
    assert (found.tolist(), suggested.tolist()) == ([5, 2], [2, 1])  # the widest lead first: 0.5 > 0.4
    with pytest.raises(ValueError, match="rank_by"):
        confident_issues(p, labels, "loss")


def test_folds_are_stratified_balanced_and_seeded():
    labels = [0] * 23 + [1] * 7 + [2] * 2
    folds = stratified_folds(labels, 5, seed=1)
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for c in (0, 1):
        per_fold = np.bincount(folds[np.array(labels) == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    assert (stratified_folds(labels, 5, seed=1) == folds).all()
    assert not (stratified_folds(labels, 5, seed=2) == folds).all()


def test_out_of_fold_probabilities_find_flipped_labels_among_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 16))
    truth = np.repeat(np.arange(4), 50)
    x = centres[truth] + rng.normal(0, 1, (200, 16))
    labels = truth.copy()
    flipped = rng.choice(200, 20, replace=False)
    labels[flipped] = (truth[flipped] + rng.integers(1, 4, 20)) % 4
    done = []
    probs = out_of_fold_probabilities(x, labels, 4, folds=5, seed=0, on_fold=done.append)
    assert done == [1, 2, 3, 4, 5]
    assert probs.shape == (200, 4) and np.allclose(probs.sum(1), 1)
    found, suggested = confident_issues(probs, labels)
    hits = set(found.tolist()) & set(flipped.tolist())
    assert len(hits) >= 18 and len(hits) / len(found) >= 0.85
    assert all(s == truth[i] for i, s in zip(found.tolist(), suggested.tolist(), strict=True) if i in hits)
    stop = threading.Event()
    stop.set()
    with pytest.raises(OperationCancelled):
        out_of_fold_probabilities(x, labels, 4, cancel=stop)


# ----------------------------------------------------------------------------------------------------------
# The search on photos


def test_finds_most_photos_in_the_wrong_folder_and_a_second_search_runs_no_backbone_pass(tmp_path, tiny_bit):
    folder = tmp_path / "colours"
    moved = noisy_colour_folder(folder)
    config = TrainConfig(str(folder), model=tiny_bit, resolution=32, device="cpu", workers=0)
    seen = []
    report = find_label_issues(config, on_progress=seen.append)
    found = {i.path for i in report.issues}
    hits = found & moved
    recall, precision = len(hits) / len(moved), len(hits) / max(1, len(found))
    assert recall >= 0.8, (recall, precision)
    assert precision >= 0.8, (recall, precision)
    by_path = {i.path: i for i in report.issues}
    for path in hits:  # the suggestion is the photo's real colour, its name says which
        assert by_path[path].suggested == Path(path).name.split("_")[0]
    assert all(i.confidence > i.given_probability for i in report.issues)
    assert [i.given_probability for i in report.issues] == sorted(i.given_probability for i in report.issues)
    assert report.num_photos == 100 and report.computed == 100 and set(report.thresholds) == set(CLASSES)
    phases = [p.phase for p in seen]
    assert phases.index("scanning") < phases.index("features") < phases.index("folds") < phases.index("done")

    again = find_label_issues(config)
    assert again.computed == 0  # every feature from the cache
    assert again.issues == report.issues


def test_a_head_run_caches_the_features_the_search_needs(tmp_path, tiny_bit):
    folder = tmp_path / "colours"
    noisy_colour_folder(folder, per_class=8)
    config = TrainConfig(
        str(folder), model=tiny_bit, strategy="head", resolution=32, steps=3, batch=8, device="cpu", workers=0
    )
    fit(config, out=tmp_path / "run")
    assert list(features.cache_dir().glob("*.npz"))
    report = find_label_issues(config.replace(strategy="full"), folds=3)
    assert report.computed == 0
    # A photo edited since is computed again, never served from the cache.
    photo = folder / "red" / "red_00.png"
    photo.write_bytes(photo.read_bytes())
    assert find_label_issues(config, folds=3).computed == 1


def test_corrections_are_applied_before_judging(tmp_path, tiny_bit):
    folder = tmp_path / "colours"
    moved = noisy_colour_folder(folder)
    config = TrainConfig(str(folder), model=tiny_bit, resolution=32, device="cpu", workers=0)
    first = find_label_issues(config)
    fixes = first.as_corrections()
    second = find_label_issues(config.replace(corrections=tuple(c.as_tuple() for c in fixes)))
    assert second.corrections == len(fixes)
    assert len(second.issues) < len(first.issues)
    assert not {i.path for i in second.issues} & {c.path for c in fixes if c.path in moved}


def test_cancel_and_bad_input_end_in_words(tmp_path, tiny_bit):
    folder = make_color_folder(tmp_path / "small", per_class=3)
    config = TrainConfig(str(folder), model=tiny_bit, resolution=32, device="cpu", workers=0)
    with pytest.raises(BitStudioError, match="needs at least 10 training photos; this folder has 9"):
        find_label_issues(config)
    with pytest.raises(BitStudioError, match="at least 2 folds"):
        find_label_issues(config, folds=1)
    stop = threading.Event()
    stop.set()
    with pytest.raises(OperationCancelled):
        find_label_issues(config, folds=2, cancel=stop)


# ----------------------------------------------------------------------------------------------------------
# Command line


def test_label_issues_command_lists_them_as_json_and_as_a_corrections_file(tmp_path, tiny_bit, capsys):
    folder = tmp_path / "colours"
    moved = noisy_colour_folder(folder)
    args = ["label-issues", str(folder), "--model", tiny_bit, "--resolution", "32", "--device", "cpu"]
    code = main([*args, "--json", "--csv", str(tmp_path / "fixes.csv")])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in out + err
    listed = json.loads(out)
    assert listed["num_photos"] == 100 and listed["folds"] == 5
    paths = [i["path"] for i in listed["issues"]]
    assert len(set(paths) & moved) >= 8
    assert [c.path for c in read_csv(tmp_path / "fixes.csv")] == paths
    assert "bit-studio train" in err and "--corrections" in err

    code = main([*args, "--limit", "2"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "every feature from the cache" in out
    assert f"{len(paths)} photos are probably in the wrong folder" in out
    assert f"{paths[0]}" in out and f"... and {len(paths) - 2} more" in out

    code = main([*args, "--csv", str(folder / "red" / "fixes.csv")])
    _, err = capsys.readouterr()
    assert code == 2 and "never writes into photo folders" in err
    code = main(["label-issues", str(tmp_path / "nowhere"), "--model", tiny_bit])
    _, err = capsys.readouterr()
    assert code == 2 and "error:" in err and "Traceback" not in err


def test_a_run_with_the_found_corrections_scores_higher_than_the_run_without(tmp_path, tiny_bit):
    # 10% of the photos in the wrong folder, in the training and the validation photos alike (the folder has
    # no split of its own): the run on the folder as it is learns from wrong labels and is scored against
    # them; the run with the search's corrections applied learns from and is scored against fixed labels.
    folder = tmp_path / "colours"
    moved = noisy_colour_folder(folder)
    config = TrainConfig(
        str(folder),
        model=tiny_bit,
        strategy="head",
        resolution=32,
        steps=40,
        batch=16,
        device="cpu",
        workers=0,
    )
    fixes = find_label_issues(config).as_corrections()
    assert len({c.path for c in fixes} & moved) >= 0.8 * len(moved)
    as_is = fit(config, out=tmp_path / "as-is")
    corrected = fit(
        config.replace(corrections=tuple(c.as_tuple() for c in fixes)), out=tmp_path / "corrected"
    )
    split = json.loads((as_is.run_dir / "split.json").read_text())
    held_out_moved = moved & {path for path, _label in split["val"]}
    assert held_out_moved, "the as-is run must hold out some of the moved photos for this comparison"
    assert corrected.val_top1 > as_is.val_top1, (corrected.val_top1, as_is.val_top1)
