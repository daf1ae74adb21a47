"""Label issues in the window: find photos in the wrong folder, record corrections, undo, CSV, and the next run.

The folder is generated: colour classes with a few photos deliberately in another colour's folder. The run
is EfficientNet-Lite0's head at 32 px (its weights ship offline), trained once for the module; its head run
cached the features, so the search after it takes seconds. The photo folder is snapshotted before and
compared after: nothing in it may change.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from conftest import make_color_folder
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.pages.label_issues_panel import LabelIssuesPanel

#: (photo made as, folder it is put in): three photos in the wrong folder.
PLANTED = (("red/red_00.png", "blue"), ("green/green_01.png", "red"), ("blue/blue_02.png", "green"))


def noisy_folder(root: Path) -> tuple[Path, set[str]]:
    """Three colour classes of 12 photos with three photos moved into a wrong folder; the moved paths."""
    folder = make_color_folder(root, per_class=12)
    moved = set()
    for made, wrong in PLANTED:
        photo = folder / made
        photo.rename(folder / wrong / photo.name)
        moved.add(f"{wrong}/{photo.name}")
    return folder, moved


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of the folder (and sub-folders) with a digest of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def head_run(folder: Path, out: Path, corrections=()) -> Path:
    """EfficientNet-Lite0's head on `folder` at 32 px: a few seconds, offline; the run folder."""
    from bit_engine.config import TrainConfig
    from bit_engine.train import fit

    config = TrainConfig(
        data_dir=str(folder),
        model="EfficientNet-Lite0",
        strategy="head",
        steps=20,
        batch=16,
        resolution=32,
        device="cpu",
        workers=0,
        evaluations=1,
        corrections=corrections,
    )
    return Path(fit(config, out=out).run_dir)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A noisy folder and a head run on it, shared by the module (tests must not change either)."""
    root = tmp_path_factory.mktemp("label_issues")
    folder, moved = noisy_folder(root / "colours")
    return folder, moved, head_run(folder, root / "run")


@pytest.fixture
def data_window(window, qtbot, trained, monkeypatch):
    """The window with the noisy folder scanned and its run as the current run."""
    folder, _moved, run = trained
    window.state.set_run(str(run))
    window.open_folder(str(folder))
    data = window.pages["data"]
    qtbot.waitUntil(lambda: window.state.report is not None and not data.is_scanning(), timeout=30_000)
    return window


def _panel(window) -> LabelIssuesPanel:
    return window.pages["data"].label_issues


def _find(qtbot, panel: LabelIssuesPanel):
    with qtbot.waitSignals([panel.searchEnded, panel.issuesShown], timeout=120_000):
        panel.find_button.click()
    assert panel.issue_report is not None, panel.summary.text()
    assert len(panel.issue_rows()) == len(panel.issue_report.issues)  # every row built
    return panel.issue_report


def test_the_planted_mistakes_are_listed_and_a_move_records_a_correction_only(qtbot, data_window, trained):
    folder, moved, _run = trained
    before = snapshot(folder)
    panel = _panel(data_window)
    assert panel.find_button.objectName() == "findLabelIssuesButton" and panel.find_button.isEnabled()
    assert "nothing in your folder is moved or changed" in panel.help.text()

    report = _find(qtbot, panel)
    rows = panel.issue_rows()
    listed = {row.issue.path for row in rows}
    assert moved <= listed, (moved, listed)
    assert f"{len(rows)} of 36 photos may be in the wrong folder" in panel.summary.text()
    assert "kept from the run" in panel.summary.text()  # the run's cached features were used
    row = next(r for r in rows if r.issue.path == "blue/red_00.png")
    assert row.issue.given == "blue" and row.issue.suggested == "red"
    assert row.move_button.text() == "Move to red"
    assert "looks like red" in row.detail.text() and "%" in row.detail.text()
    qtbot.waitUntil(lambda: row.thumb.pixmap() is not None and not row.thumb.pixmap().isNull())

    row.move_button.click()
    from bit_engine.corrections import Correction, CorrectionStore

    assert CorrectionStore(folder).corrections() == (Correction("blue/red_00.png", "blue", "red"),)
    assert row.outcome.isVisible() and "Moved to red" in row.outcome.text()
    assert not row.move_button.isVisible()
    assert panel.count_label.text() == "1 correction will be used by the next run"
    assert panel.corrections_list.count() == 1
    assert "blue → red" in panel.corrections_list.item(0).text()

    # "Leave it out" on another one, then undo it from the row.
    other = next(r for r in rows if r.issue.path == "red/green_01.png")
    other.leave_button.click()
    assert CorrectionStore(folder).get("red/green_01.png") == Correction("red/green_01.png", "red", None)
    assert panel.count_label.text() == "2 corrections will be used by the next run"
    other.undo_button.click()
    assert CorrectionStore(folder).get("red/green_01.png") is None
    assert other.move_button.isVisible()
    assert report.data_dir == str(folder.resolve())
    assert snapshot(folder) == before


def test_corrections_are_undone_one_by_one_and_exported_as_csv_never_into_the_photo_folder(
    qtbot, data_window, trained, tmp_path, monkeypatch
):
    from app import label_corrections
    from bit_engine.corrections import CorrectionStore

    folder, _moved, _run = trained
    before = snapshot(folder)
    panel = _panel(data_window)
    for path, given, target in (
        ("blue/red_00.png", "blue", "red"),
        ("red/green_01.png", "red", None),
        ("green/blue_02.png", "green", "blue"),
    ):
        label_corrections.correct(str(folder), path, given, target)
    data_window.state.corrections_changed(str(folder))
    assert panel.count_label.text() == "3 corrections will be used by the next run"
    assert [panel.corrections_list.item(i).text().split("\n") for i in range(3)] == [
        ["blue/red_00.png", "blue → red"],
        ["red/green_01.png", "left out"],
        ["green/blue_02.png", "green → blue"],
    ]

    # Undo takes back the selected one only.
    assert not panel.undo_button.isEnabled()
    panel.corrections_list.item(1).setSelected(True)
    assert panel.undo_button.objectName() == "undoCorrectionButton" and panel.undo_button.isEnabled()
    panel.undo_button.click()
    assert [c.path for c in CorrectionStore(folder).corrections()] == ["blue/red_00.png", "green/blue_02.png"]
    assert panel.count_label.text() == "2 corrections will be used by the next run"

    # Export: the file has the columns and a row per correction.
    target = tmp_path / "out" / "fixes.csv"
    target.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "CSV (*.csv)"))
    panel.export_button.click()
    with open(target, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["path"], r["given_label"], r["corrected_label"], r["action"]) for r in rows] == [
        ("blue/red_00.png", "blue", "red", "relabel"),
        ("green/blue_02.png", "green", "blue", "relabel"),
    ]
    assert f"Exported 2 corrections to {target}" in panel.file_status.text()

    # A destination inside the photo folder is refused, in words; nothing is written there.
    warnings = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a: warnings.append(text))
    inside = folder / "red" / "fixes.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(inside), "CSV (*.csv)"))
    panel.export_button.click()
    assert len(warnings) == 1 and "inside the photo folder" in warnings[0] and "never writes" in warnings[0]
    assert not inside.exists()

    # Import: the exported file brings back what was undone elsewhere.
    CorrectionStore(folder).clear()
    data_window.state.corrections_changed(str(folder))
    assert panel.corrections_list.count() == 0
    assert panel.count_label.text().startswith("No corrections")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(target), "CSV (*.csv)"))
    panel.import_button.click()
    assert panel.corrections_list.count() == 2
    assert "Imported 2 corrections" in panel.file_status.text()
    assert snapshot(folder) == before


def test_a_search_can_be_cancelled_and_leaves_no_thread(qtbot, window, tmp_path):
    folder, _moved = noisy_folder(tmp_path / "colours")
    window.open_folder(str(folder))
    data = window.pages["data"]
    qtbot.waitUntil(lambda: window.state.report is not None and not data.is_scanning(), timeout=30_000)
    panel = _panel(window)
    with qtbot.waitSignal(panel.searchEnded, timeout=120_000):
        panel.find_button.click()
        assert panel.busy.isVisible() and not panel.find_button.isEnabled()
        panel.cancel_button.click()
    assert panel.summary.text() == "The check was cancelled. Nothing was changed."
    assert panel.find_button.isEnabled() and not panel.busy.isVisible()
    assert panel.issue_report is None


def test_the_evaluate_gallery_records_a_correction_and_marks_the_photo(qtbot, evaluate_page, trained):
    from app.widgets.mistake_gallery import MARK_ROLE
    from bit_engine.corrections import Correction, CorrectionStore

    folder, _moved, run = trained
    before = snapshot(folder)
    page, state = evaluate_page, evaluate_page.state
    with qtbot.waitSignal(page.evaluationShown, timeout=30_000):
        page.load_run(str(run))
    classes = page.evaluation.classes
    confusion = page.evaluation.report["confusion"]
    cell = next((t, p) for t, row in enumerate(confusion) for p, n in enumerate(row) if n)
    page.show_cell(*cell)
    model = page.gallery.gallery_model
    assert model.rowCount()
    item = model.item(0)
    relative = Path(item.path).relative_to(folder.resolve()).as_posix()
    changed = []
    state.correctionsChanged.connect(changed.append)
    page.gallery.itemChosen.emit(item)
    detail = page.detail
    assert detail.corrections.isVisible()
    menu = detail.belongs_button.menu()
    offered = [a.text() for a in menu.actions()]
    assert offered == [c for c in classes if c != item.true]  # every class but its folder's

    menu.actions()[0].trigger()
    target = offered[0]
    assert CorrectionStore(folder).corrections() == (Correction(relative, item.true, target),)
    assert changed == [str(folder.resolve())]
    assert model.index(0).data(MARK_ROLE) == f"→ {target}"
    assert f"corrected: → {target}" in model.index(0).data(Qt.ItemDataRole.ToolTipRole)
    assert detail.correction_label.text() == f"✓ Corrected: moved to {target}. The next run uses it."
    assert detail.undo_button.isVisible()

    detail.leave_button.click()  # changes its mind: leave it out instead
    assert CorrectionStore(folder).corrections() == (Correction(relative, item.true, None),)
    assert model.index(0).data(MARK_ROLE) == "left out"

    detail.undo_button.click()
    assert CorrectionStore(folder).corrections() == ()
    assert model.index(0).data(MARK_ROLE) is None and not detail.undo_button.isVisible()
    assert snapshot(folder) == before


def test_the_plan_counts_the_corrections_and_the_next_run_trains_with_them(
    qtbot, data_window, trained, monkeypatch
):
    from app import settings
    from app import timing as app_timing
    from bit_engine import runs
    from bit_engine.corrections import run_corrections
    from bit_engine.train import Estimate

    def instant(spec, configs, num_train, num_val, median_size, on_result, cancel):
        for config in configs:  # estimates are not what this test is about: no timed steps
            on_result(config.strategy, Estimate(config.strategy, 60.0, 0.01, 8, "cpu", "About a minute."))

    monkeypatch.setattr(app_timing, "time_strategies", instant)
    folder, _moved, first_run = trained
    before = snapshot(folder)
    window = data_window
    panel = _panel(window)
    _find(qtbot, panel)
    rows = {row.issue.path: row for row in panel.issue_rows()}
    rows["blue/red_00.png"].move_button.click()
    rows["red/green_01.png"].leave_button.click()

    settings.update(default_device="cpu")
    window.go_to("plan")
    plan = window.pages["plan"]
    qtbot.waitUntil(lambda: window.state.config is not None, timeout=60_000)
    plan.model_picker.setCurrentIndex(plan.model_picker.findData("EfficientNet-Lite0"))  # offline weights
    assert window.state.config.model == "EfficientNet-Lite0"
    assert plan.corrections_label.isVisible()
    assert plan.corrections_label.text().startswith(
        "2 label corrections will be applied (1 moved to another class, 1 left out)."
    )
    assert set(window.state.config.corrections) == {
        ("blue/red_00.png", "blue", "red"),
        ("red/green_01.png", "red", None),
    }
    # Undone in the Data step: the plan follows at once.
    rows["red/green_01.png"].undo_button.click()
    assert plan.corrections_label.text().startswith("1 label correction will be applied")
    assert window.state.config.corrections == (("blue/red_00.png", "blue", "red"),)

    # A tiny run of this plan, in the Train step's child process, records the correction it used.
    window.state.set_config(
        window.state.config.replace(steps=3, batch=8, resolution=32, workers=0, evaluations=1)
    )
    window.go_to("train")
    train = window.pages["train"]
    train.start()
    qtbot.waitUntil(lambda: train.session is None, timeout=180_000)
    run_dir = window.state.run_dir
    assert run_dir and Path(run_dir) != first_run, train.bar_text()
    assert runs.read_status(run_dir).state == "done", train.bar_text()
    applied = run_corrections(run_dir)
    assert [c.as_tuple() for c in applied.applied] == [("blue/red_00.png", "blue", "red")]
    assert runs.read_plan(run_dir).corrections["relabelled"] == 1
    assert snapshot(folder) == before


def test_the_search_uses_the_folders_run_else_the_plan_else_the_offline_model(trained, tmp_path, tiny_bit):
    from app.pages.label_issues_panel import FALLBACK_MODEL, choose_search
    from bit_engine.config import TrainConfig

    folder, _moved, run = trained
    config, source = choose_search(str(folder), str(run), None)
    assert (config.model, config.resolution) == (
        "EfficientNet-Lite0",
        32,
    )  # the run's: its features are cached
    assert source == f"the features of EfficientNet-Lite0 kept from the run {run.name}"

    other = make_color_folder(tmp_path / "other", per_class=4)
    plan = TrainConfig(str(other), model=tiny_bit, device="cpu")
    config, source = choose_search(str(other), str(run), plan)  # the run is of another folder
    assert (config.model, config.device, source) == (tiny_bit, "cpu", f"{tiny_bit}, the model of your plan")

    missing = plan.replace(model="BiT-M-R50x1")  # weights not on this machine: not downloaded for a check
    config, source = choose_search(str(other), None, missing)
    assert config.model == FALLBACK_MODEL and "works offline" in source


def test_a_photo_corrected_to_the_wrong_class_is_listed_again_against_its_folder(qtbot, data_window, trained):
    from app import label_corrections
    from bit_engine.corrections import Correction, CorrectionStore

    folder, _moved, _run = trained
    panel = _panel(data_window)
    # A red photo in the blue folder, "corrected" to green by mistake: the search judges the green label.
    label_corrections.correct(str(folder), "blue/red_00.png", "blue", "green")
    data_window.state.corrections_changed(str(folder))
    report = _find(qtbot, panel)
    assert report.corrections == 1
    row = next(r for r in panel.issue_rows() if r.issue.path == "blue/red_00.png")
    assert row.detail.text().startswith("In the folder blue, corrected to green · looks like red")
    assert row.move_button.isVisible() and row.move_button.text() == "Move to red"
    row.move_button.click()
    # Made against the folder's label, replacing the earlier one (which Undo in the list takes back).
    assert CorrectionStore(folder).corrections() == (Correction("blue/red_00.png", "blue", "red"),)
    assert "Moved to red" in row.outcome.text()


def test_photos_of_another_evaluated_folder_offer_no_correction(qtbot, evaluate_page, trained, tmp_path):
    from gui_runs import make_confusing_folder

    _folder, _moved, run = trained
    page = evaluate_page
    with qtbot.waitSignal(page.evaluationShown, timeout=30_000):
        page.load_run(str(run))
    with qtbot.waitSignal(page.evaluationShown, timeout=60_000):
        page.evaluate_folder(str(make_confusing_folder(tmp_path / "test-set")))
    confusion = page.evaluation.report["confusion"]
    page.show_cell(*next((t, p) for t, row in enumerate(confusion) for p, n in enumerate(row) if n))
    page.gallery.itemChosen.emit(page.gallery.gallery_model.item(0))
    assert not page.detail.corrections.isVisible()  # a test set's photos are not the run's training data
