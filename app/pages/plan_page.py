"""The Plan step: which model, how to train it, on which device, with which settings, and how long it takes.

Everything heavy happens in Workers: the engine's model table, weights store and device list import torch
(seconds), so they load in the background the first time a folder has been scanned; estimates are timed
training steps on the chosen device. The page turns the user's choices into a `TrainConfig` and publishes
it on the AppState for the Train step.
"""

from __future__ import annotations

import contextlib
import html
import os
from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app import settings, timing
from app.state import AppState
from app.widgets.hyperrule_table import HyperRuleDelegate, HyperRuleModel
from app.widgets.naming import named as _named
from app.widgets.page_style import PAGE_MARGINS, height_showing_every_row, page_title
from app.workers import Worker, user_message

#: Below this many training photos, training only a new head is recommended (the small-dataset scenario:
#: the frozen pre-trained features already separate everyday photos; full fine-tuning gains little and can
#: overfit). From here on there is enough data to adapt the whole network, BiT's default.
HEAD_RECOMMENDED_BELOW = 2000

#: Models larger than this (parameters) are not timed on a CPU: a few timed steps would take minutes and
#: gigabytes, to say what is clear anyway (days of training).
CPU_TIMING_LIMIT = 100_000_000

STRATEGIES = (
    (
        "full",
        "Full fine-tuning",
        "Adapts the whole network: the most accurate with enough photos; slow without a GPU.",
    ),
    (
        "head",
        "Head only",
        "Trains a new last layer only: minutes on a CPU; best for small sets of everyday photos.",
    ),
    ("scratch", "From scratch", "No pre-training: only to compare, it shows what transfer learning buys."),
)

HOW_TEXT = (
    "BiT Studio follows the BiT-HyperRule of the Big Transfer paper, which picks the fine-tuning settings "
    "from two facts about your photos alone: how many there are and how large they typically are. "
    "The number of photos sets how long training runs (500 steps below 20,000 photos, 10,000 below "
    "500,000, 20,000 beyond) and whether mixup blends photos; their typical size sets the resolution "
    "(small photos are enlarged to 160 pixels and cropped to 128, larger ones to 448 and cropped to 384). "
    "Everything else is the same for every task: plain SGD with momentum 0.9, a learning rate of 0.003 for "
    "batches of 512 photos (scaled with the batch), a short warm-up, the rate divided by 10 three times, "
    "random crops and mirror images while training."
)


def suits(spec) -> str:
    """What a model of the engine's table is good for, in a phrase a newcomer understands."""
    from bit_engine.models import DEFAULT_MODEL

    if spec.family == "efficientnet":
        return "Small and fast, works offline: its weights come with BiT Studio."
    if spec.name == DEFAULT_MODEL:
        return "The paper's default: a good start for most tasks."
    if spec.name.endswith("-ILSVRC2012"):
        return "BiT-M R50x1 trained further on ImageNet-1k: good when your classes are everyday objects."
    by_arch = {
        "R50x1": "The standard size: a good start for most tasks.",
        "R101x1": "Deeper than R50x1: a little more accurate, about twice as slow.",
        "R50x3": "Three times wider: more accurate, needs a GPU.",
        "R101x3": "Large: more accurate still, needs a GPU with plenty of memory.",
        "R152x2": "Large: more accurate still, needs a GPU with plenty of memory.",
        "R152x4": "The largest, nearly a billion parameters: for big GPUs and big datasets.",
    }
    text = by_arch.get(spec.arch, f"Architecture {spec.arch}.")
    if spec.name.startswith("BiT-S-"):
        text = "Pre-trained on ImageNet-1k only (BiT-M versions usually transfer better). " + text
    return text


@dataclass(frozen=True)
class _Engine:
    """What the background load found: the model table, the devices, and the dataset's split sizes."""

    models: list  # weights.WeightsRow
    specs: dict  # name -> models.ModelSpec
    gpus: list  # devices.GpuInfo
    gpu_reason: str | None
    num_train: int
    num_val: int


@dataclass(frozen=True)
class _Corrections:
    """The folder's label corrections, read once per change and applied to the scan."""

    config: tuple  # for TrainConfig.corrections
    problem: str  # why none are applied: the store cannot be read ("" when it can)
    applied: object | None  # corrections.AppliedCorrections, None without corrections
    num_train: int  # the split sizes the run will have
    num_val: int


def _load_engine(report):
    def load(on_progress, cancel):
        from bit_engine import devices, holdout, models, weights

        split_train, split_val = len(report.train), len(report.val)
        if not report.split_dirs:
            split = holdout.split(report)
            split_train, split_val = len(split.train), len(split.val)
        reason = devices.gpu_unavailable_reason()
        return _Engine(
            models=weights.list_models(),
            specs=dict(models.KNOWN_MODELS),
            gpus=devices.list_gpus() if reason is None else [],
            gpu_reason=reason,
            num_train=split_train,
            num_val=split_val,
        )

    return load


def _section(title: str, name: str) -> QGroupBox:
    box = QGroupBox(title)
    box.setObjectName(name)
    return box


class PlanPage(QWidget):
    """The Plan step.

    Signals:
        stepRequested(str): the user asked to go on to another step ("train").
    """

    stepRequested = Signal(str)

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self._report = None
        self._engine: _Engine | None = None
        self._corrected: _Corrections | None = None  # for the scan and the store as they are now
        self._loader: Worker | None = None
        self._weights_job: Worker | None = None
        self._estimator: Worker | None = None
        self._estimates: dict[str, object] = {}  # strategy -> Estimate (or an error text)
        self._estimate_key = None  # what the shown estimates were timed for
        self._estimate_cache: dict[tuple, dict] = {}  # settings -> estimates: going back costs no timing
        self._overrides: dict[str, object] = {}  # TrainConfig field -> the user's value
        self._plan = None
        self._building = False
        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(400)  # settle after a burst of edits before timing anything
        self._estimate_timer.timeout.connect(self._start_estimates)
        self._build()
        state.datasetChanged.connect(self._on_dataset_changed)
        state.correctionsChanged.connect(self._on_corrections_changed)

    # ------------------------------------------------------------------------------------------- layout

    def _build(self) -> None:
        content = QWidget()
        outer = QVBoxLayout(content)
        outer.setContentsMargins(*PAGE_MARGINS)
        title = page_title("Plan")
        outer.addWidget(title)
        self.subtitle = _named(QLabel("Loading the model table…"), "planDatasetLabel", "What the plan is for")
        self.subtitle.setWordWrap(True)
        outer.addWidget(self.subtitle)
        self.corrections_label = _named(QLabel(), "planCorrectionsLabel", "Label corrections the run applies")
        self.corrections_label.setWordWrap(True)
        self.corrections_label.setTextFormat(Qt.TextFormat.PlainText)
        self.corrections_label.setVisible(False)
        outer.addWidget(self.corrections_label)

        # The answer to "how long will this take?" first, next to the way on.
        top = QHBoxLayout()
        self.estimate_label = _named(QLabel(), "estimateLabel", "Training time estimate")
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setStyleSheet(
            "QLabel#estimateLabel { background: #eef6ee; border: 1px solid #c5e0c5; border-radius: 4px;"
            " padding: 6px; }"
        )
        top.addWidget(self.estimate_label, 1)
        self.continue_button = _named(
            QPushButton("Continue to Train  →"), "continueToTrainButton", "Continue to Train"
        )
        self.continue_button.setEnabled(False)
        self.continue_button.clicked.connect(lambda: self.stepRequested.emit("train"))
        top.addWidget(self.continue_button, 0, Qt.AlignmentFlag.AlignVCenter)
        outer.addLayout(top)

        grid = QGridLayout()
        grid.setHorizontalSpacing(16)
        # Top-aligned: the strategy box beside them is taller, and a stretched box reads as a gap inside it.
        grid.addWidget(self._build_model_box(), 0, 0, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(self._build_device_box(), 1, 0, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(self._build_strategy_box(), 0, 1, 2, 1)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        outer.addLayout(grid)
        outer.addWidget(self._build_rule_box())
        outer.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self.setEnabled(False)

    def _build_model_box(self) -> QGroupBox:
        box = _section("Model", "modelBox")
        layout = QVBoxLayout(box)
        self.model_picker = _named(QComboBox(), "modelPicker", "Model")
        self.model_picker.currentIndexChanged.connect(self._on_model_changed)
        layout.addWidget(self.model_picker)
        self.model_info = _named(QLabel(), "modelInfoLabel", "About this model")
        self.model_info.setWordWrap(True)
        layout.addWidget(self.model_info)
        row = QHBoxLayout()
        self.download_button = _named(QPushButton("Download"), "downloadButton", "Download the weights")
        self.download_button.clicked.connect(self._on_download_clicked)
        self.import_button = _named(QPushButton("Import .npz…"), "importButton", "Import a weights file")
        self.import_button.setToolTip(
            "For machines that cannot reach the weights' host: fetch the .npz file elsewhere, then import it."
        )
        self.import_button.clicked.connect(self._on_import_clicked)
        self.weights_cancel = _named(QPushButton("Cancel"), "cancelDownloadButton", "Cancel the download")
        self.weights_cancel.clicked.connect(self._on_cancel_download)
        self.weights_cancel.setVisible(False)
        for b in (self.download_button, self.import_button, self.weights_cancel):
            row.addWidget(b)
        row.addStretch(1)
        layout.addLayout(row)
        self.weights_bar = _named(QProgressBar(), "weightsProgressBar", "Download progress")
        self.weights_bar.setVisible(False)
        layout.addWidget(self.weights_bar)
        self.weights_status = _named(QLabel(), "weightsStatusLabel", "Weights status")
        self.weights_status.setWordWrap(True)
        self.weights_status.setVisible(False)
        layout.addWidget(self.weights_status)
        return box

    def _build_device_box(self) -> QGroupBox:
        box = _section("Device", "deviceBox")
        layout = QVBoxLayout(box)
        self.device_picker = _named(QComboBox(), "devicePicker", "Device")
        self.device_picker.currentIndexChanged.connect(self._on_device_changed)
        layout.addWidget(self.device_picker)
        self.device_note = _named(QLabel(), "deviceNoteLabel", "About the devices")
        self.device_note.setWordWrap(True)
        layout.addWidget(self.device_note)
        return box

    def _build_strategy_box(self) -> QGroupBox:
        box = _section("How to train", "strategyPicker")
        box.setAccessibleName("Training strategy")
        layout = QVBoxLayout(box)
        self.strategy_group = QButtonGroup(self)
        self.strategy_buttons: dict[str, QRadioButton] = {}
        self.strategy_times: dict[str, QLabel] = {}
        for key, title, text in STRATEGIES:
            row = QHBoxLayout()
            button = _named(QRadioButton(title), f"strategy_{key}", title)
            self.strategy_group.addButton(button)
            self.strategy_buttons[key] = button
            button.toggled.connect(self._on_strategy_toggled)
            row.addWidget(button)
            row.addStretch(1)
            timing = _named(QLabel(), f"estimate_{key}", f"{title}: time estimate")
            row.addWidget(timing)
            self.strategy_times[key] = timing
            layout.addLayout(row)
            about = QLabel(text)
            about.setWordWrap(True)
            about.setContentsMargins(24, 0, 0, 6)
            about.setEnabled(False)  # muted: the title and the time are what to compare
            layout.addWidget(about)
        self.recommendation = _named(QLabel(), "strategyRecommendationLabel", "Recommended strategy")
        self.recommendation.setWordWrap(True)
        layout.addWidget(self.recommendation)
        return box

    def _build_rule_box(self) -> QGroupBox:
        box = _section("Settings", "hyperRuleBox")
        layout = QVBoxLayout(box)
        top = QHBoxLayout()
        intro = QLabel(
            "Chosen by the BiT-HyperRule from your photos. Double-click a value to change it. "
            '<a href="#how">How BiT Studio chose these settings</a>'
        )
        intro.setObjectName("howLink")
        intro.setWordWrap(True)
        intro.linkActivated.connect(self._on_how_clicked)
        top.addWidget(intro, 1)
        self.reset_button = _named(
            QPushButton("Reset to the rule"), "resetHyperRuleButton", "Reset to the rule"
        )
        self.reset_button.setEnabled(False)
        self.reset_button.clicked.connect(self.reset_overrides)
        top.addWidget(self.reset_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(top)
        self.how_panel = _named(QLabel(HOW_TEXT), "howPanel", "How BiT Studio chose these settings")
        self.how_panel.setWordWrap(True)
        self.how_panel.setFrameShape(QFrame.Shape.StyledPanel)
        self.how_panel.setStyleSheet(
            "QLabel#howPanel { background: #eef4fb; border: 1px solid #c9dcf0; border-radius: 4px; padding: 8px; }"
        )
        self.how_panel.setVisible(False)
        layout.addWidget(self.how_panel)
        self.rule_model = HyperRuleModel(self._apply_override, self)
        self.rule_model.rejected.connect(self._on_override_rejected)
        self.rule_table = _named(QTableView(), "hyperRuleTable", "HyperRule settings")
        self.rule_table.setModel(self.rule_model)
        self.rule_table.setItemDelegate(HyperRuleDelegate(self.rule_table))
        self.rule_table.verticalHeader().setVisible(False)
        self.rule_table.setWordWrap(True)
        self.rule_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.rule_table.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.SelectedClicked
        )
        hh = self.rule_table.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.rule_table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # Every row in view (see `_fit_rule_table`), so no scroll bar of its own. A narrower page (its scroll bar
        # appearing) wraps the reasons onto more lines: fit the rows again once the resizing has settled.
        self.rule_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.rule_table.verticalHeader().sectionResized.connect(
            lambda *_: QTimer.singleShot(0, self, self._fit_rule_table)
        )
        layout.addWidget(self.rule_table)
        self.rule_error = _named(QLabel(), "planErrorLabel", "Why a value was refused")
        self.rule_error.setWordWrap(True)
        self.rule_error.setStyleSheet("QLabel#planErrorLabel { color: #a0281e; }")
        self.rule_error.setVisible(False)
        layout.addWidget(self.rule_error)
        return box

    # ----------------------------------------------------------------------------------- engine loading

    def _on_dataset_changed(self, report) -> None:
        self._report = report if report is not None and report.ok else None
        self._engine = None  # its split sizes belong to the previous scan
        self._corrected = None
        self._estimates = {}
        self._estimate_key = None
        self._estimate_timer.stop()
        if self._estimator is not None:
            self._estimator.cancel()  # timing the previous folder's plan
        if self._loader is not None:  # loading for the previous folder: its split sizes are not this one's
            self._loader.cancel()
            self._loader.blockSignals(True)
            self._loader.wait()
            self._loader = None
        if self._report is None:
            self.setEnabled(False)
            self.continue_button.setEnabled(False)
            return
        self.subtitle.setText("Reading the model table and the devices of this machine…")
        self._loader = Worker(_load_engine(self._report), self, name="plan: engine")
        self._loader.succeeded.connect(self._on_engine_loaded)
        self._loader.failed.connect(self._on_engine_failed)
        self._loader.start()

    def _on_engine_failed(self, exc: BaseException) -> None:
        self._loader = None
        self.subtitle.setText(user_message(exc))

    def _on_engine_loaded(self, engine: _Engine) -> None:
        self._loader = None
        self._engine = engine
        self._building = True
        try:
            self._fill_models()
            self._fill_devices()
            self._recommend()
        finally:
            self._building = False
        self.setEnabled(True)
        self._replan()

    def _fill_models(self) -> None:
        from bit_engine.models import DEFAULT_MODEL
        from bit_engine.units import format_bytes

        engine = self._engine
        wanted = self.current_model() or settings.load().last_model or DEFAULT_MODEL
        self.model_picker.blockSignals(True)
        self.model_picker.clear()
        for row in engine.models:
            where = "on this machine" if row.available else "not on this machine yet"
            self.model_picker.addItem(
                f"{row.name}   ·   {format_bytes(row.size_bytes)}   ·   {where}", row.name
            )
            i = self.model_picker.count() - 1
            self.model_picker.setItemData(i, suits(engine.specs[row.name]), Qt.ItemDataRole.ToolTipRole)
        index = self.model_picker.findData(wanted)
        self.model_picker.setCurrentIndex(index if index >= 0 else 0)
        self.model_picker.blockSignals(False)
        self._show_model_info()

    def _fill_devices(self) -> None:
        engine = self._engine
        wanted = self.current_device() or settings.load().default_device
        self.device_picker.blockSignals(True)
        self.device_picker.clear()
        self.device_picker.addItem(f"CPU ({os.cpu_count() or 1} cores)", "cpu")
        for gpu in engine.gpus:
            free = f"{gpu.free_memory / 1e9:.1f} GB free of " if gpu.free_memory is not None else ""
            self.device_picker.addItem(
                f"GPU {gpu.index}: {gpu.name}, {free}{gpu.total_memory / 1e9:.0f} GB", f"cuda:{gpu.index}"
            )
        if len(engine.gpus) > 1:
            self.device_picker.addItem(f"All GPUs ({len(engine.gpus)}), one process each", "all")
        default = "cuda:0" if engine.gpus else "cpu"
        index = self.device_picker.findData(wanted or default)
        self.device_picker.setCurrentIndex(index if index >= 0 else self.device_picker.findData(default))
        self.device_picker.blockSignals(False)
        if engine.gpu_reason:
            self.device_note.setText(f"No GPU can be used: {engine.gpu_reason}")
        elif len(engine.gpus) > 1:
            self.device_note.setText(
                "All GPUs trains one copy of the model on each and gives the same result as one GPU, faster."
            )
        else:
            self.device_note.setText("")
        self.device_note.setVisible(bool(self.device_note.text()))

    def _recommend(self) -> None:
        n = self._split_sizes()[0]
        if n < HEAD_RECOMMENDED_BELOW:
            key = "head"
            why = (
                f"Recommended: <b>head only</b>, because {n:,} training photos is a small set: the pre-trained "
                "network already tells everyday photos apart, and fine-tuning all of it gains little on so few "
                "and takes far longer. If your photos look unlike everyday photos (X-rays, microscopy, "
                "satellite images), full fine-tuning usually does better."
            )
        else:
            key = "full"
            why = (
                f"Recommended: <b>full fine-tuning</b>, because {n:,} training photos are enough to adjust the "
                "whole network to them: BiT's default, and the most accurate."
            )
        self.recommended = key
        for k, title, _text in STRATEGIES:
            self.strategy_buttons[k].setText(f"{title}  (recommended)" if k == key else title)
        self.recommendation.setText(why)
        if self.strategy_group.checkedButton() is None:
            self.strategy_buttons[key].setChecked(True)

    # ------------------------------------------------------------------------------------- the choices

    def current_model(self) -> str:
        return self.model_picker.currentData() or ""

    def current_device(self) -> str:
        return self.device_picker.currentData() or ""

    def current_strategy(self) -> str:
        for key, button in self.strategy_buttons.items():
            if button.isChecked():
                return key
        return "full"

    def config(self):
        """The TrainConfig of the current choices (None before a usable folder was scanned)."""
        if self._report is None or self._engine is None:
            return None
        from bit_engine.config import TrainConfig

        device = self.current_device()
        return TrainConfig(
            data_dir=self._report.root,
            model=self.current_model(),
            strategy=self.current_strategy(),
            device="cuda" if device == "all" else device or None,
            corrections=self._corrections().config,
            **self._overrides,
        )

    def _corrections(self) -> _Corrections:
        """The folder's label corrections (the Data and Evaluate steps record them) and the split they leave;
        none, and why, when the store cannot be read: a person who fixed labels expects the next run to use
        them. Read again after a change (`correctionsChanged`) or another scan."""
        if self._corrected is not None:
            return self._corrected
        from bit_engine import holdout
        from bit_engine.corrections import CorrectionStore, apply_corrections, from_config
        from bit_engine.errors import BitStudioError

        corrections, problem, applied = (), "", None
        sizes = self._engine.num_train, self._engine.num_val
        try:
            corrections = CorrectionStore(self._report.root).as_config()
        except BitStudioError as exc:
            problem = str(exc)
        if corrections:
            corrected, applied = apply_corrections(self._report, from_config(corrections))
            with contextlib.suppress(BitStudioError):  # the run will say why; the scan's figures meanwhile
                split = holdout.split(corrected)
                sizes = len(split.train), len(split.val)
        self._corrected = _Corrections(corrections, problem, applied, *sizes)
        return self._corrected

    def _split_sizes(self) -> tuple[int, int]:
        """Photos to train on and to check the model with, as the run will split them: after the folder's
        label corrections (a photo left out is not counted)."""
        corrected = self._corrections()
        return corrected.num_train, corrected.num_val

    def _show_corrections(self) -> None:
        corrected = self._corrections()
        problem, applied = corrected.problem, corrected.applied
        if problem:
            self.corrections_label.setText(f"No label corrections will be applied: {problem}")
        elif applied is not None:
            n = len(applied.applied)
            parts = [f"{applied.relabelled} moved to another class"] if applied.relabelled else []
            parts += [f"{applied.left_out} left out"] if applied.left_out else []
            text = f"{n} label correction{'' if n == 1 else 's'} will be applied"
            text += f" ({', '.join(parts)})" if parts else ""
            if applied.not_applied:
                m = len(applied.not_applied)
                text += f"; {m} cannot be ({applied.not_applied[0][1]}{', …' if m > 1 else ''})"
            self.corrections_label.setText(f"{text}. They are listed, and can be undone, in the Data step.")
        self.corrections_label.setVisible(bool(problem or corrected.config))

    def _on_corrections_changed(self, folder: str) -> None:
        self._corrected = None
        if self._report is not None and self._engine is not None:
            self._building = True
            try:
                self._recommend()  # photos left out may make the set small enough for head only
            finally:
                self._building = False
            self._replan()

    def _on_model_changed(self, _index: int) -> None:
        if self._building:
            return
        settings.update(last_model=self.current_model())
        self._show_model_info()
        self._replan()

    def _on_device_changed(self, _index: int) -> None:
        if self._building:
            return
        settings.update(default_device=self.current_device())
        self._replan()

    def _on_strategy_toggled(self, checked: bool) -> None:
        if checked and not self._building:
            self._replan()

    def _apply_override(self, field: str, value) -> str | None:
        """An edited table value: keep it unless the engine refuses it; equal to the rule means no override."""
        from bit_engine.errors import BitStudioError
        from bit_engine.train import make_plan

        overrides = dict(self._overrides)
        overrides[field] = value
        base = self.config()
        try:
            # The config's own checks, then the rule's: either may refuse a value, each says why.
            make_plan(base.replace(**overrides), self._split_sizes()[0], self._report.median_size)
        except (BitStudioError, ValueError) as exc:
            return str(exc)
        rule = make_plan(
            base.replace(
                **{f: None for f in ("steps", "batch", "resolution", "mixup")}, flip=True, random_crop=True
            ),
            self._split_sizes()[0],
            self._report.median_size,
        )
        rule_values = {
            "steps": rule.total_steps,
            "batch": rule.batch,
            "resolution": rule.crop,
            "mixup": rule.mixup_alpha,
            "flip": True,
            "random_crop": True,
        }
        if rule_values.get(field) == value:
            overrides.pop(field)
        self._overrides = overrides
        self.rule_error.setVisible(False)
        self._replan()
        return None

    def _on_override_rejected(self, message: str) -> None:
        self.rule_error.setText(f"That value was not used: {message}")
        self.rule_error.setVisible(True)

    def reset_overrides(self) -> None:
        """Back to the HyperRule's own values."""
        self._overrides.clear()
        self.rule_error.setVisible(False)
        self._replan()

    def _on_how_clicked(self, _link: str = "") -> None:
        self.how_panel.setVisible(not self.how_panel.isVisible())

    def _fit_rule_table(self) -> None:
        """Every row in view: the page scrolls as a whole, a second scroll bar inside it would hide settings."""
        self.rule_table.setFixedHeight(height_showing_every_row(self.rule_table))

    def _replan(self) -> None:
        """Recompute the plan for the current choices, publish the config, and re-time it."""
        config = self.config()
        if config is None:
            return
        from bit_engine.train import make_plan

        num_train, num_val = self._split_sizes()
        self._plan = make_plan(config, num_train, self._report.median_size)
        self.rule_model.set_plan(self._plan)
        self.rule_table.resizeRowsToContents()
        self._fit_rule_table()
        self.reset_button.setEnabled(bool(self._plan.overrides))
        n_classes = len(self._report.classes)
        w, h = self._report.median_size
        self.subtitle.setText(
            f"For <b>{html.escape(self._report.root, quote=False)}</b>: {num_train:,} photos to train on, "
            f"{num_val:,} to check the model, {n_classes} classes, typical size {w}×{h}."
        )
        self._show_corrections()
        self.state.devices = "all" if self.current_device() == "all" else None
        self.state.set_config(config)
        self.continue_button.setEnabled(True)
        self._schedule_estimates()

    # --------------------------------------------------------------------------------------- weights

    def _row(self, name: str):
        return next((r for r in self._engine.models if r.name == name), None) if self._engine else None

    def _show_model_info(self) -> None:
        from bit_engine.units import format_bytes

        name = self.current_model()
        row = self._row(name)
        if row is None:
            return
        spec = self._engine.specs[name]
        busy = self._weights_job is not None
        if row.available:
            where = (
                "Its weights are on this machine."
                if row.family == "bit"
                else "Its weights come with BiT Studio."
            )
        else:
            partial = f" ({format_bytes(row.partial_bytes)} already downloaded)" if row.partial_bytes else ""
            where = (
                f"Its weights ({format_bytes(row.size_bytes)}) are not on this machine yet{partial}: download "
                "them now, or training downloads them when it starts."
            )
        self.model_info.setText(
            f"<b>{html.escape(suits(spec), quote=False)}</b><br>Pre-trained on {html.escape(spec.upstream, quote=False)}. "
            f"{spec.params / 1e6:,.0f} million parameters. {where}"
        )
        missing = row.family == "bit" and not row.available
        self.download_button.setVisible(missing and not busy)
        self.import_button.setVisible(missing and not busy)
        self.weights_cancel.setVisible(busy)

    def _on_download_clicked(self) -> None:
        name = self.current_model()

        def download(on_progress, cancel):
            from bit_engine import weights_download

            return weights_download.download(name, on_progress=on_progress, cancel=cancel)

        self._start_weights_job(download, f"Downloading {name}…", f"download {name}")

    def _on_import_clicked(self) -> None:
        name = self.current_model()
        path, _ = QFileDialog.getOpenFileName(
            self, f"Import the weights of {name}", "", "BiT weights (*.npz)"
        )
        if not path:
            return

        def do_import(on_progress, cancel):
            from bit_engine import weights

            return weights.import_npz(path, name=name)

        self._start_weights_job(
            do_import, f"Checking and importing {os.path.basename(path)}…", f"import {name}"
        )

    def _start_weights_job(self, fn, status: str, name: str) -> None:
        job = Worker(fn, self, name=name)
        job.progress.connect(self._on_weights_progress)
        job.succeeded.connect(self._on_weights_ready)
        job.failed.connect(lambda exc: self._weights_message(user_message(exc)))
        job.cancelled.connect(
            lambda: self._weights_message("Download cancelled; what was downloaded is kept for next time.")
        )
        job.done.connect(self._on_weights_done)
        self._weights_job = job
        self.weights_bar.setRange(0, 0)
        self.weights_bar.setVisible(True)
        self._weights_message(status)
        self.model_picker.setEnabled(False)
        self._show_model_info()
        job.start()

    def _on_weights_progress(self, p) -> None:
        from bit_engine.units import format_bytes, format_duration

        total = getattr(p, "total", None)
        done = getattr(p, "done", 0)
        if total:
            self.weights_bar.setRange(0, 1000)
            self.weights_bar.setValue(int(1000 * min(done / total, 1.0)))
            eta = getattr(p, "eta", None)
            left = f", {format_duration(eta)} left" if eta else ""
            self._weights_message(f"{format_bytes(done)} of {format_bytes(total)}{left}")
        else:
            self._weights_message(f"{format_bytes(done)} downloaded")

    def _on_weights_ready(self, path) -> None:
        self._weights_message(f"The weights are ready: {path}")

    def _on_cancel_download(self) -> None:
        if self._weights_job is not None:
            self._weights_job.cancel()

    def _on_weights_done(self) -> None:
        self._weights_job = None
        self.weights_bar.setVisible(False)
        self.model_picker.setEnabled(True)
        # The cache changed (or kept a partial file): read the table again, cheaply, on this thread.
        from bit_engine import weights

        engine = self._engine
        if engine is None:  # a new folder is being loaded; it reads the store itself
            return
        self._engine = _Engine(
            weights.list_models(),
            engine.specs,
            engine.gpus,
            engine.gpu_reason,
            engine.num_train,
            engine.num_val,
        )
        self._building = True
        try:
            self._fill_models()
        finally:
            self._building = False

    def _weights_message(self, text: str) -> None:
        self.weights_status.setText(text)
        self.weights_status.setVisible(bool(text))

    # ------------------------------------------------------------------------------------- estimates

    def _schedule_estimates(self) -> None:
        config = self.config()
        key = (
            config.model,
            config.device,
            tuple(sorted(self._overrides.items())),
            config.data_dir,
            self._split_sizes()[0],
        )
        self._estimate_key = key
        cached = self._estimate_cache.get(key)
        if cached is not None and "head" in cached and "full" in cached:
            self._estimates = cached
            self._show_estimates()
            return
        self._estimates = dict(cached or {})
        self._estimate_timer.start()
        self._show_estimates()

    def _start_estimates(self) -> None:
        if self._estimator is not None:
            # Timing settings that are no longer chosen: stop it; its done() starts the newest round.
            self._estimator.cancel()
            return
        config = self.config()
        if config is None:
            return
        key = self._estimate_key
        spec = self._engine.specs[config.model]
        order = [config.strategy] + [s for s in ("full", "head") if s != config.strategy and s != "scratch"]
        if config.strategy == "scratch":
            order = ["full", "head"]  # scratch costs what full fine-tuning costs: timed once
        num_train, num_val, median = *self._split_sizes(), self._report.median_size
        cpu = (config.device or "cpu") == "cpu" or not self._engine.gpus
        too_big = cpu and spec.params > CPU_TIMING_LIMIT

        def measure(on_progress, cancel):
            results = {}

            def record(strategy, result):
                results[strategy] = result
                if strategy == "full":
                    results["scratch"] = result  # the same steps, from other starting weights
                on_progress(dict(results))  # cumulative: the newest report holds every result so far

            if too_big:
                for strategy in order:
                    record(
                        strategy,
                        f"Not timed: {config.model} is too large to train on a CPU (it would take days). "
                        "Choose a GPU or a smaller model.",
                    )
            else:
                configs = [config.replace(strategy=s) for s in order]
                timing.time_strategies(spec, configs, num_train, num_val, median, record, cancel)
            return results

        self._estimator = Worker(measure, self, name="plan: estimate")
        self._estimator.progress.connect(lambda results, key=key: self._on_estimated(key, results))
        self._estimator.succeeded.connect(lambda results, key=key: self._on_estimated(key, results))
        self._estimator.failed.connect(lambda exc, key=key: self._on_estimate_failed(key, exc))
        self._estimator.done.connect(self._on_estimator_done)
        self._estimator.start()
        self._show_estimates()

    def _on_estimated(self, key, results: dict) -> None:
        if not results:
            return
        self._estimate_cache[key] = dict(results)
        if key == self._estimate_key:
            self._estimates = dict(results)
            self._show_estimates()

    def _on_estimate_failed(self, key, exc: BaseException) -> None:
        message = f"Could not time it: {user_message(exc)}"
        self._on_estimated(key, {s: message for s, _title, _text in STRATEGIES})

    def _on_estimator_done(self) -> None:
        worker, self._estimator = self._estimator, None
        if worker is not None:
            worker.deleteLater()
        complete = "head" in self._estimates and "full" in self._estimates
        if not complete and self._report is not None and self._engine is not None:
            self._estimate_timer.start()  # settings changed while timing: time the new ones

    def _show_estimates(self) -> None:
        from bit_engine.units import describe_duration

        strategy = self.current_strategy()
        gpus = len(self._engine.gpus) if self._engine and self.current_device() == "all" else 1
        for key, label in self.strategy_times.items():
            value = self._estimates.get(key)
            if value is None:
                label.setText(
                    "Timing…" if self._estimator is not None or self._estimate_timer.isActive() else ""
                )
            elif isinstance(value, str):
                label.setText(value)
            else:
                label.setText(f"about {describe_duration(value.seconds / gpus)}")
        chosen = self._estimates.get(strategy)
        if chosen is None:
            self.estimate_label.setText(
                "Timing a few training steps on this device to estimate the training time…"
            )
        elif isinstance(chosen, str):
            self.estimate_label.setText(chosen)
        else:
            text = chosen.text
            if gpus > 1:
                text = f"About {describe_duration(chosen.seconds / gpus)} on {gpus} GPUs (timed on one: {chosen.text})"
            self.estimate_label.setText(
                f"<b>Training time:</b> {html.escape(text, quote=False)} Measured by timing training steps here."
            )

    # --------------------------------------------------------------------------------------- shutdown

    def shutdown(self) -> None:
        """Cancel and wait for the engine load, a download and the estimates."""
        self._estimate_timer.stop()
        workers = [w for w in (self._loader, self._weights_job, self._estimator) if w is not None]
        for w in workers:
            w.cancel()
        for w in workers:
            w.wait(60_000)
