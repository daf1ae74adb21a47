"""A trained run for the GUI tests of the Evaluate and Predict steps: seconds, offline, deterministic."""

from __future__ import annotations

from pathlib import Path


def train_colour_run(root: Path) -> Path:
    """Train EfficientNet-Lite0's head (its weights ship offline) on a generated colour folder; the run folder.

    Ten images per class at 32 px, 30 steps: the model separates the colours, and the validation split has
    two images per class.
    """
    from conftest import make_color_folder

    from bit_engine.config import TrainConfig
    from bit_engine.train import fit

    folder = make_color_folder(root / "colours", per_class=10)
    config = TrainConfig(
        data_dir=str(folder),
        model="EfficientNet-Lite0",
        strategy="head",
        steps=30,
        batch=16,
        resolution=32,
        device="cpu",
        workers=0,
        evaluations=1,
    )
    return Path(fit(config, out=root / "run").run_dir)


def make_confusing_folder(root: Path) -> Path:
    """A labelled test folder whose "red" class holds green photos: every one of them is a sure mistake."""
    from conftest import make_color_folder

    make_color_folder(root, classes=("green", "blue"), per_class=4, seed=7)
    make_color_folder(root / "tmp", classes=("green",), per_class=3, seed=8)
    (root / "red").mkdir()
    for i, photo in enumerate(sorted((root / "tmp" / "green").iterdir())):
        photo.rename(root / "red" / f"mislabelled_{i}.png")
    (root / "tmp" / "green").rmdir()
    (root / "tmp").rmdir()
    return root


_SHARED: dict[str, tuple[Path, Path]] = {}


def shared_exported_run(tmp_path_factory) -> tuple[Path, Path]:
    """One trained and exported run for the whole session: (run folder, its model.onnx).

    Trained once even when several test modules ask (a module-level cache rather than a session fixture in
    conftest, so the GUI tests keep their helpers to themselves). Tests must not change it.
    """
    if "run" not in _SHARED:
        from bit_engine.export import export_run

        run = train_colour_run(tmp_path_factory.mktemp("gui_run"))
        _SHARED["run"] = (run, Path(export_run(run).export.path))
    return _SHARED["run"]


def drop(widget, paths) -> bool:
    """Drag `paths` onto `widget` and drop them there (synthesised events: tests cannot start a real drag)."""
    from app.self_test import file_mime, send_drop

    _, event = send_drop(widget, file_mime(paths))
    return event is not None and event.isAccepted()


def cli_rows(onnx_model, paths, out: Path) -> list[dict]:
    import csv

    from bit_engine.cli import main

    assert main(["predict", str(onnx_model), *map(str, paths), "--csv", str(out)]) in (0, 2)
    with open(out, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
