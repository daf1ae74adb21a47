"""The "How it works" step: why BiT trains well, in plain words, shown on the user's own photos.

Four sections, side by side two by two: Group Norm against Batch Norm (one photo of the folder normalized in
batches of 1, 8 and 32), Weight Standardization (a real kernel's weights before and after), mixup (two photos
of the folder blended, with a "Draw again" button) and the HyperRule (why the plan chose its schedule and
resolution for this folder). The numbers come from `bit_engine.explain`, run in a Worker the first time the
step is shown after the folder or the plan changed: it imports torch, which the window must not wait for.
"""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QImage, QPalette, QPixmap, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.state import AppState
from app.widgets.naming import named as _named
from app.widgets.page_style import PAGE_MARGINS, page_title
from app.workers import Worker, user_message

pg.setConfigOptions(useOpenGL=False, antialias=True)

#: Side in pixels of the normalized feature maps and of the photo beside them.
MAP_SIDE = 76

#: Side in pixels of the mixup pictures.
MIX_SIDE = 120

_BEFORE = QColor("#0072B2")  # Okabe-Ito blue and orange, as the training charts
_AFTER = QColor("#D55E00")

INTRO = (
    "Why BiT learns well from a folder like yours, in four ideas, each shown on your own photos. "
    "Nothing here changes your photos or your plan."
)

NORMALIZATION_TEXT = (
    "Between its layers a network rescales its numbers to keep them in a workable range. BatchNorm, used by "
    "most networks, takes the averages for that from the whole batch of photos trained together, so its "
    "result for your photo depends on the other photos in the batch. GroupNorm, which BiT uses, takes them "
    "from each photo alone: the same result in a batch of 1 or of 32. So BiT trains the same a few photos at "
    "a time on one small GPU as on many GPUs, with no averages to share."
)

STANDARDIZATION_TEXT = (
    "Weight Standardization does for a layer's weights what GroupNorm does for its inputs: before every use, "
    "each filter's weights are shifted and scaled to an average of 0 and a spread of 1. With it, GroupNorm "
    "trains as well as BatchNorm with large batches: on ImageNet the paper's ResNet-50 reached 76.0% with "
    "both, 75.6% with BatchNorm, 70.2% with GroupNorm alone."
)

MIXUP_TEXT = (
    "Mixup trains on blends of two photos, labelled with the same blend (“63% cat, 37% dog”), so the model "
    "learns to be less certain between classes. The first photo's weight λ is drawn from a Beta(α, α) "
    "distribution at every training step."
)

HYPERRULE_TEXT = (
    "BiT does not search for its settings: one rule, the BiT-HyperRule, picks them from two facts about your "
    "folder, how many photos it has and how large they are."
)


def _signed(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}".replace("-", "−")


def _pixmap(pixels: np.ndarray, side: int, smooth: bool = True) -> QPixmap:
    """A uint8 (H, W) grey or (H, W, 3) RGB array as a pixmap `side` pixels across."""
    array = np.ascontiguousarray(pixels)
    h, w = array.shape[:2]
    fmt = QImage.Format.Format_RGB888 if array.ndim == 3 else QImage.Format.Format_Grayscale8
    image = QImage(array.data, w, h, array.strides[0], fmt).copy()  # copy: the array may go away
    mode = Qt.TransformationMode.SmoothTransformation if smooth else Qt.TransformationMode.FastTransformation
    return QPixmap.fromImage(image).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio, mode)


def _grey(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255).astype(np.uint8)


def _rgb(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _text(text: str, name: str, accessible: str, rich: bool = False) -> QLabel:
    label = _named(QLabel(text), name, accessible)
    label.setWordWrap(True)
    # Plain text unless built here with escaped data: photo and class names are the user's data.
    label.setTextFormat(Qt.TextFormat.RichText if rich else Qt.TextFormat.PlainText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _picture(name: str, accessible: str, side: int) -> QLabel:
    label = _named(QLabel(), name, accessible)
    label.setFixedSize(side, side)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setFrameShape(QFrame.Shape.StyledPanel)
    return label


def _caption(text: str, name: str, accessible: str, wrap: bool = True) -> QLabel:
    label = _text(text, name, accessible)
    label.setWordWrap(wrap)
    label.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
    small = QFont(label.font())
    small.setPointSizeF(small.pointSizeF() * 0.9)
    label.setFont(small)
    return label


class HowItWorksPage(QWidget):
    """The "How it works" step: BatchNorm vs GroupNorm, Weight Standardization, mixup, the HyperRule."""

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.explanation = None  # bit_engine.explain.Explanation shown now
        self.mixup = None  # bit_engine.explain.MixupDemo shown now
        self._job: Worker | None = None
        self._redraw: Worker | None = None
        self._old_workers: list[Worker] = []  # cancelled, maybe still finishing: waited for at shutdown
        self._stale = True  # the folder or the plan changed since the numbers were computed
        self._build()
        state.datasetChanged.connect(self._on_inputs_changed)
        state.planChanged.connect(self._on_inputs_changed)

    # ------------------------------------------------------------------------------------------- layout

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(*PAGE_MARGINS)
        title = page_title("How it works")
        outer.addWidget(title)
        outer.addWidget(_text(INTRO, "howItWorksIntro", "What this step shows"))

        self.views = QStackedWidget()
        outer.addWidget(self.views, 1)

        waiting = QWidget()
        column = QVBoxLayout(waiting)
        column.addStretch(1)
        self.status_label = _text("", "howItWorksStatus", "What is being computed")
        self.status_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.progress_bar = _named(QProgressBar(), "howItWorksProgress", "Progress of the demonstrations")
        self.progress_bar.setMaximumWidth(420)
        self.progress_bar.setTextVisible(False)
        column.addWidget(self.status_label)
        column.addWidget(self.progress_bar, 0, Qt.AlignmentFlag.AlignHCenter)
        column.addStretch(2)
        self.views.addWidget(waiting)

        failed = QWidget()
        column = QVBoxLayout(failed)
        column.addStretch(1)
        self.error_label = _text("", "howItWorksError", "Why the demonstrations could not be made")
        self.error_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.retry_button = _named(QPushButton("Try again"), "howItWorksRetryButton", "Try again")
        self.retry_button.clicked.connect(self.refresh)
        column.addWidget(self.error_label)
        column.addWidget(self.retry_button, 0, Qt.AlignmentFlag.AlignHCenter)
        column.addStretch(2)
        self.views.addWidget(failed)

        content = QWidget()
        grid = QGridLayout(content)
        grid.setContentsMargins(0, 8, 0, 0)
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(10)
        grid.addWidget(self._normalization_section(), 0, 0)
        grid.addWidget(self._standardization_section(), 0, 1)
        grid.addWidget(self._mixup_section(), 1, 0)
        grid.addWidget(self._hyperrule_section(), 1, 1)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(2, 1)
        scroll = QScrollArea()
        scroll.setObjectName("howItWorksScroll")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(content)
        self.views.addWidget(scroll)
        self._content = scroll

    def _section(self, title: str, name: str, text: str) -> tuple[QGroupBox, QVBoxLayout]:
        box = _named(QGroupBox(title), name, title)
        font = box.font()
        font.setBold(True)
        box.setFont(font)
        body = QWidget()
        normal = QFont(self.font())
        normal.setBold(False)  # set explicitly, or the box's bold title font would reach its contents
        body.setFont(normal)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(_text(text, f"{name}Text", f"{title}: explanation"))
        wrapper = QVBoxLayout(box)
        wrapper.addWidget(body)
        return box, layout

    def _normalization_section(self) -> QGroupBox:
        box, layout = self._section(
            "1 · GroupNorm, not BatchNorm", "normalizationSection", NORMALIZATION_TEXT
        )
        self.norm_source = _text("", "normalizationSourceLabel", "Which photo and layer")
        layout.addWidget(self.norm_source)
        grid = QGridLayout()
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(2)
        self.norm_photo = _picture("normalizationPhoto", "The photo", MAP_SIDE)
        grid.addWidget(self.norm_photo, 1, 0)
        self.norm_photo_caption = _caption("", "normalizationPhotoCaption", "The photo's name")
        grid.addWidget(self.norm_photo_caption, 2, 0, 3, 1)
        self.norm_headers: list[QLabel] = []
        self.norm_maps: dict[str, list[QLabel]] = {"bn": [], "gn": []}
        self.norm_captions: dict[str, list[QLabel]] = {"bn": [], "gn": []}
        for col in range(3):
            header = _caption("", f"normalizationBatch{col}", "Photos in the batch")
            self.norm_headers.append(header)
            grid.addWidget(header, 0, col + 2)
        for row, (kind, name) in enumerate((("bn", "BatchNorm"), ("gn", "GroupNorm"))):
            label = QLabel(name)
            bold = label.font()
            bold.setBold(True)
            label.setFont(bold)
            grid.addWidget(label, 1 + 2 * row, 1, Qt.AlignmentFlag.AlignVCenter)
            for col in range(3):
                picture = _picture(f"{kind}Map{col}", f"{name} output, batch {col + 1}", MAP_SIDE)
                caption = _caption("", f"{kind}Caption{col}", f"{name} numbers, batch {col + 1}", wrap=False)
                self.norm_maps[kind].append(picture)
                self.norm_captions[kind].append(caption)
                grid.addWidget(picture, 1 + 2 * row, col + 2, Qt.AlignmentFlag.AlignHCenter)
                grid.addWidget(caption, 2 + 2 * row, col + 2)
        grid.setColumnStretch(5, 1)
        layout.addLayout(grid)
        self.norm_summary = _text("", "normalizationSummary", "What the numbers say", rich=True)
        layout.addWidget(self.norm_summary)
        layout.addStretch(1)
        return box

    def _histogram(self, name: str, accessible: str) -> pg.PlotWidget:
        palette = self.palette()
        plot = pg.PlotWidget(background=palette.color(QPalette.ColorRole.Base))
        plot.setObjectName(name)
        plot.setAccessibleName(accessible)
        text = palette.color(QPalette.ColorRole.Text)
        for side in ("left", "bottom"):
            axis = plot.getAxis(side)
            axis.setTextPen(text)
            axis.setPen(palette.color(QPalette.ColorRole.Mid))
        plot.setMenuEnabled(False)
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        plot.setMinimumSize(150, 150)
        plot.setMaximumHeight(190)
        plot.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        return plot

    def _standardization_section(self) -> QGroupBox:
        box, layout = self._section(
            "2 · Weight Standardization", "standardizationSection", STANDARDIZATION_TEXT
        )
        self.ws_source = _text("", "standardizationSourceLabel", "Which weights")
        layout.addWidget(self.ws_source)
        row = QHBoxLayout()
        self.ws_plots = {}
        self.ws_labels = {}
        for key, title in (("before", "Before"), ("after", "After standardization")):
            column = QVBoxLayout()
            self.ws_labels[key] = _caption("", f"ws{title.split()[0]}Label", f"{title}: mean and spread")
            self.ws_plots[key] = self._histogram(f"ws{title.split()[0]}Histogram", f"Weights {title.lower()}")
            column.addWidget(self.ws_plots[key])
            column.addWidget(self.ws_labels[key])
            row.addLayout(column, 1)
        layout.addLayout(row)
        self.ws_filters = _text("", "wsFiltersLabel", "Filter by filter")
        layout.addWidget(self.ws_filters)
        layout.addStretch(1)
        return box

    def _mixup_section(self) -> QGroupBox:
        box, layout = self._section("3 · Mixup", "mixupSection", MIXUP_TEXT)
        self.mixup_plan = _text("", "mixupPlanLabel", "Whether the plan uses mixup")
        layout.addWidget(self.mixup_plan)
        row = QGridLayout()
        row.setHorizontalSpacing(6)
        self.mix_pictures = []
        self.mix_captions = []
        names = (("mixupFirst", "First photo"), ("mixupSecond", "Second photo"), ("mixupMixed", "The blend"))
        for i, (name, accessible) in enumerate(names):
            picture = _picture(name, accessible, MIX_SIDE)
            caption = _caption("", f"{name}Caption", f"{accessible}: label")
            self.mix_pictures.append(picture)
            self.mix_captions.append(caption)
            row.addWidget(picture, 0, 2 * i)
            row.addWidget(caption, 1, 2 * i)
            if i < 2:
                sign = QLabel("+" if i == 0 else "=")
                big = sign.font()
                big.setPointSizeF(big.pointSizeF() * 1.6)
                sign.setFont(big)
                row.addWidget(sign, 0, 2 * i + 1, Qt.AlignmentFlag.AlignCenter)
        row.setColumnStretch(6, 1)
        layout.addLayout(row)
        self.mixup_label = _text("", "mixupLabel", "The blended label")
        bold = self.mixup_label.font()
        bold.setBold(True)
        self.mixup_label.setFont(bold)
        layout.addWidget(self.mixup_label)
        bottom = QHBoxLayout()
        self.lambda_label = _text("", "mixupLambdaLabel", "The drawn weight lambda")
        bottom.addWidget(self.lambda_label, 1)
        self.redraw_button = _named(QPushButton("Draw again"), "mixupRedrawButton", "Draw another lambda")
        self.redraw_button.setToolTip("Draw another λ from the same Beta(α, α)")
        self.redraw_button.clicked.connect(self._on_redraw_clicked)
        bottom.addWidget(self.redraw_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(bottom)
        layout.addStretch(1)
        return box

    def _hyperrule_section(self) -> QGroupBox:
        box, layout = self._section("4 · The HyperRule", "hyperRuleSection", HYPERRULE_TEXT)
        self.rule_source = _text("", "hyperRuleSourceLabel", "Which plan")
        layout.addWidget(self.rule_source)
        self.rule_story = _text("", "hyperRuleStory", "Why the plan chose its settings", rich=True)
        layout.addWidget(self.rule_story)
        layout.addStretch(1)
        return box

    # ------------------------------------------------------------------------------------------ running

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._stale:
            self.refresh()

    def _on_inputs_changed(self, *_args) -> None:
        self._stale = True
        self._stop()  # its numbers would be for the previous folder or plan
        if self.isVisible():
            self.refresh()

    def _stop(self) -> None:
        for old in (self._job, self._redraw):
            if old is not None:
                old.cancel()
                self._old_workers.append(old)
        self._job = self._redraw = None

    def is_busy(self) -> bool:
        """Whether demonstrations (or a new mixup draw) are being computed."""
        return self._job is not None or self._redraw is not None

    def refresh(self) -> None:
        """Compute the demonstrations for the current folder and plan (in the background)."""
        report, config = self.state.report, self.state.config
        if report is None or not report.ok:
            return  # the window shows why the step cannot be used
        self._stale = False
        self._stop()

        def run(on_progress, cancel):
            from bit_engine import explain

            return explain.explain(report, config, on_progress=on_progress, cancel=cancel)

        self.status_label.setText("Loading the model and reading your photos…")
        self.progress_bar.setRange(0, 0)
        self.views.setCurrentIndex(0)
        self.redraw_button.setEnabled(False)
        job = Worker(run, self, name="how it works")
        job.progress.connect(lambda progress: self._on_progress(progress) if job is self._job else None)
        # A job replaced by a newer one (the folder or plan changed meanwhile) reports to no one.
        job.succeeded.connect(lambda result: self._on_explained(result) if job is self._job else None)
        job.failed.connect(lambda exc: self._on_failed(exc) if job is self._job else None)
        job.done.connect(lambda: self._on_job_done(job))
        self._job = job
        job.start()

    def _on_progress(self, progress) -> None:
        if progress.message:
            self.status_label.setText(progress.message + "…")
        if progress.total:
            self.progress_bar.setRange(0, progress.total)
            self.progress_bar.setValue(progress.done)

    def _on_failed(self, exc: BaseException) -> None:
        self.error_label.setText(f"The demonstrations could not be made. {user_message(exc)}")
        self.views.setCurrentIndex(1)

    def _on_job_done(self, job: Worker) -> None:
        if self._job is job:
            self._job = None
        self._old_workers = [w for w in self._old_workers if w.is_running()]

    def _on_explained(self, explanation) -> None:
        self.explanation = explanation
        self._show_normalization(explanation.normalization)
        self._show_standardization(explanation.standardization)
        self._show_mixup(explanation.mixup)
        self._show_story(explanation)
        self.redraw_button.setEnabled(True)
        self.views.setCurrentWidget(self._content)

    def _on_redraw_clicked(self) -> None:
        if self.explanation is None or self._redraw is not None:
            return
        pair, current = self.explanation.pair, self.mixup
        seed = self.state.config.seed if self.state.config is not None else 0

        def draw(on_progress, cancel):
            from bit_engine import explain

            return explain.mixup_demo(pair, current.rule_alpha, draw=current.draw + 1, seed=seed)

        self.redraw_button.setEnabled(False)
        job = Worker(draw, self, name="mixup draw")
        job.succeeded.connect(lambda demo: self._show_mixup(demo) if job is self._redraw else None)
        job.failed.connect(lambda exc: self._on_failed(exc) if job is self._redraw else None)
        job.done.connect(lambda: self._on_redraw_done(job))
        self._redraw = job
        job.start()

    def _on_redraw_done(self, job: Worker) -> None:
        if self._redraw is job:
            self._redraw = None
            self.redraw_button.setEnabled(True)
        self._old_workers = [w for w in self._old_workers if w.is_running()]

    def shutdown(self) -> None:
        """Cancel the computations and wait for their threads."""
        workers = [w for w in (self._job, self._redraw, *self._old_workers) if w is not None]
        for w in workers:
            w.cancel()
        for w in workers:
            w.wait()

    # ---------------------------------------------------------------------------------------- rendering

    def _show_normalization(self, demo) -> None:
        lo, hi = demo.display_range
        photo_name = demo.photo.rsplit("/", 1)[-1]
        mates = max(demo.batch_sizes) - 1
        repeat = (
            f" Your folder has {demo.distinct_mates} other photos to train on, so some batch-mates appear "
            "twice in the batch of 32."
            if demo.distinct_mates < mates
            else ""
        )
        self.norm_source.setText(
            f"Your photo {photo_name} ({demo.label}) through {demo.layer}; batch-mates: other photos of your "
            f"folder. Shown: channel {demo.channel + 1} of {demo.channels}, where the batch matters most, all "
            f"six on one grey scale.{repeat}"
        )
        self.norm_photo.setPixmap(_pixmap(demo.image, MAP_SIDE))
        self.norm_photo_caption.setText(photo_name)
        for col, size in enumerate(demo.batch_sizes):
            self.norm_headers[col].setText("1 photo" if size == 1 else f"{size} photos")
        for kind, maps, changes, values in (
            ("bn", demo.batch_norm_maps, demo.batch_norm_change, demo.batch_norm_values),
            ("gn", demo.group_norm_maps, demo.group_norm_change, demo.group_norm_values),
        ):
            for col, (values_map, change, points) in enumerate(zip(maps, changes, values, strict=True)):
                self.norm_maps[kind][col].setPixmap(
                    _pixmap(_grey(values_map, lo, hi), MAP_SIDE, smooth=False)
                )
                numbers = "  ".join(_signed(v) for v in points)
                moved = "as is" if col == 0 else f"changed {change:.4f}"
                self.norm_captions[kind][col].setText(f"{numbers}\n{moved}")
        bn, gn = demo.batch_norm_change[-1], demo.group_norm_change[-1]
        self.norm_summary.setText(
            "Under each picture: the output at the centre, upper left and lower right, and how much the whole "
            "output changed from the photo alone, on average (outputs spread about ±1). In a batch of "
            f"{max(demo.batch_sizes)}, <b>BatchNorm changed your photo's output by {bn:.2f}</b>; "
            f"<b>GroupNorm's changed by {gn:.4f}</b>" + (": not at all." if gn < 5e-5 else ".")
        )

    def _show_standardization(self, demo) -> None:
        source = demo.source + f" The kernel is {demo.layer}, {np.prod(demo.shape):,} weights."
        if demo.uses_ws:
            source += " Every convolution of BiT standardizes its weights this way; the numbers come from BiT's own layer."
        else:
            source += (
                " EfficientNet-Lite0 uses BatchNorm and does not standardize its weights: this only shows "
                "what standardization does to a kernel, computed by BiT's own layer."
            )
        self.ws_source.setText(source)
        for key, hist, colour in (("before", demo.before, _BEFORE), ("after", demo.after, _AFTER)):
            plot = self.ws_plots[key]
            plot.clear()
            fill = QColor(colour)
            fill.setAlpha(140)
            plot.plot(hist.edges, hist.counts, stepMode="center", fillLevel=0, brush=fill, pen=colour)
            prefix = "Before" if key == "before" else "After"
            self.ws_labels[key].setText(f"{prefix}: mean {_signed(hist.mean, 4)}, spread {hist.std:.4f}")
        b, a = demo.before, demo.after
        self.ws_filters.setText(
            f"Filter by filter ({demo.shape[0]:,} filters), before: means from {_signed(b.channel_means.min(), 3)} "
            f"to {_signed(b.channel_means.max(), 3)}, spreads from {b.channel_stds.min():.3f} to "
            f"{b.channel_stds.max():.3f}. After: every mean is within {np.abs(a.channel_means).max():.0e} of 0 "
            f"and every spread within {np.abs(a.channel_stds - 1).max():.0e} of 1."
        )

    def _show_mixup(self, demo) -> None:
        self.mixup = demo
        pair = self.explanation.pair
        if demo.rule_alpha > 0:
            plan = f"Your plan uses mixup with α = {demo.rule_alpha:g}."
        elif any(o.setting == "mixup" for o in self.explanation.plan.overrides):
            plan = f"You turned mixup off in the Plan step. Shown anyway with α = {demo.alpha:g}."
        else:
            plan = (
                "Your plan has no mixup: under 20,000 photos it does not help. Shown anyway with "
                f"α = {demo.alpha:g}, BiT's value for larger folders."
            )
        if demo.alpha <= 0.5:
            plan += " So small an α puts most draws near 0 or 1: most blends are mostly one photo."
        self.mixup_plan.setText(plan)
        self.mix_pictures[0].setPixmap(_pixmap(_rgb(pair.first), MIX_SIDE))
        self.mix_pictures[1].setPixmap(_pixmap(_rgb(pair.second), MIX_SIDE))
        self.mix_pictures[2].setPixmap(_pixmap(_rgb(demo.mixed), MIX_SIDE))
        self.mix_captions[0].setText(f"{pair.labels[0]}\n{pair.paths[0].rsplit('/', 1)[-1]}")
        self.mix_captions[1].setText(f"{pair.labels[1]}\n{pair.paths[1].rsplit('/', 1)[-1]}")
        self.mix_captions[2].setText("the blend")
        self.mixup_label.setText(f"Label of the blend: {demo.caption}")
        self.lambda_label.setText(
            f"λ = {demo.lam:.4f}, draw {demo.draw} from Beta({demo.alpha:g}, {demo.alpha:g}): "
            f"the blend is λ × the first photo + (1 − λ) × the second."
        )

    def _show_story(self, explanation) -> None:
        plan = explanation.plan
        strategy = {"full": "the whole network", "head": "a new head only", "scratch": "from scratch"}
        if explanation.planned:
            source = (
                f"The plan from the Plan step: {plan.model}, {strategy.get(plan.strategy, plan.strategy)}."
            )
        else:
            source = (
                f"No plan yet (the Plan step makes one): this is the rule for {plan.model}, "
                "fine-tuning the whole network."
            )
        self.rule_source.setText(source)
        parts = [
            f"<p><b>{html.escape(item.title)}.</b> {html.escape(item.decision)}<br>{html.escape(item.why)}</p>"
            for item in explanation.story
        ]
        self.rule_story.setText("".join(parts))
