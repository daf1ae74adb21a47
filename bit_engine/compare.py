"""What transfer bought: runs of the same photos side by side, and the three benefits of pre-training in words.

Transfer learning is said to help in three ways: a pre-trained model starts higher, learns faster early on
(a higher slope) and ends higher (a higher asymptote) than the same network trained from random weights on
the same schedule. `TransferBenefits` measures each of the three on the user's own runs and its `findings`
say only what the numbers support: where training from scratch did as well or better, they say so.

Curves are put on one axis of *images seen* (steps x batch), not optimizer steps: two runs with different
batches have then seen the same photos at the same x. For a baseline with the same schedule the two are the
same thing.

Everything here reads runs through the torch-free readers of runs.py, so a window compares runs without
importing torch; the measurements are pure functions of the loaded values.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bit_engine import runs
from bit_engine.config import TrainConfig
from bit_engine.runs import MetricRecord, RunError, RunPlan

#: A strategy in a word or two, as tables and legends show it.
STRATEGY_NAMES = {"full": "Fine-tune", "head": "Head only", "scratch": "From scratch"}

#: Differences smaller than this (a fraction) are "level" when the validation set's size is unknown.
MIN_TOLERANCE = 0.01


@dataclass(frozen=True)
class ComparedRun:
    """One run as a comparison shows it.

    Attributes:
        path: the run folder; name: its name (the run id).
        data_dir: the labelled folder it trained on.
        model, strategy: from its config.
        state: see `runs.RunStatus.state`.
        step, total_steps: how far it got, of how many.
        batch, crop: images per step and input side (None when the run stopped before its plan was written).
        seconds: training time, summed over its sessions when it was resumed.
        final_accuracy: validation accuracy of the finished run (the last evaluation's before the end).
        best_accuracy: the best validation accuracy of any evaluation.
        curve: (images seen, validation accuracy) at each evaluation, in order.
        val_images: validation images (0: unknown).
        config, plan: the run's settings and HyperRule plan (None when missing).
    """

    path: Path
    name: str
    data_dir: str
    model: str
    strategy: str
    state: str
    step: int
    total_steps: int
    batch: int | None
    crop: int | None
    seconds: float
    final_accuracy: float | None
    best_accuracy: float | None
    curve: tuple[tuple[int, float], ...]
    val_images: int = 0
    config: TrainConfig | None = field(default=None, repr=False)
    plan: RunPlan | None = field(default=None, repr=False)

    @property
    def from_scratch(self) -> bool:
        return self.strategy == "scratch"

    @property
    def finished(self) -> bool:
        return self.state == "done"

    @property
    def label(self) -> str:
        """Model and strategy: "BiT-M-R50x1 · Fine-tune"."""
        return f"{self.model} · {STRATEGY_NAMES.get(self.strategy, self.strategy)}"


def training_seconds(metrics: Sequence[MetricRecord]) -> float:
    """Training time from a metrics history: each resumed session counts its `elapsed` from zero again."""
    total = last = 0.0
    for m in metrics:
        if m.elapsed < last:  # a new session began
            total += last
        last = m.elapsed
    return total + last


def accuracy_curve(metrics: Sequence[MetricRecord], batch: int) -> tuple[tuple[int, float], ...]:
    """(images seen, validation accuracy) at each evaluation, one point per step, in step order."""
    by_step = {}
    for m in metrics:
        if m.val_top1 is not None and math.isfinite(m.val_top1):
            by_step[m.step] = float(m.val_top1)
    return tuple((step * batch, top1) for step, top1 in sorted(by_step.items()))


def load_run(run_dir: str | Path) -> ComparedRun:
    """A run's figures and curve, read with the run readers (no torch).

    Raises:
        RunError: not a run folder, or a damaged one.
    """
    summary = runs.summarize_run(run_dir)
    try:
        plan = runs.read_plan(run_dir)
    except RunError:
        plan = None  # stopped before its plan was written: no curve, no schedule
    try:
        config = runs.read_config(run_dir)
    except RunError:
        config = None
    try:
        val_images = runs.read_report(run_dir).num_images
    except RunError:
        val_images = 0
    metrics = runs.read_metrics(run_dir)
    curve = accuracy_curve(metrics, plan.batch) if plan is not None else ()
    final = summary.accuracy if summary.status == "done" else None
    if final is None and summary.status == "done" and curve:
        final = curve[-1][1]
    scores = [a for _, a in curve] + ([final] if final is not None else [])
    return ComparedRun(
        path=summary.path,
        name=summary.name,
        data_dir=summary.data_dir,
        model=summary.model,
        strategy=summary.strategy,
        state=summary.status,
        # status.json moves at checkpoints; a running run's metrics say where it is now.
        step=max([summary.step] + [m.step for m in metrics[-1:]]),
        total_steps=summary.total_steps or (plan.total_steps if plan is not None else 0),
        batch=plan.batch if plan is not None else None,
        crop=plan.crop if plan is not None else None,
        seconds=training_seconds(metrics),
        final_accuracy=final,
        best_accuracy=max(scores) if scores else None,
        curve=curve,
        val_images=val_images,
        config=config,
        plan=plan,
    )


def _same_folder(a: str, b: str) -> bool:
    return os.path.normcase(os.path.normpath(a)) == os.path.normcase(os.path.normpath(b))


def comparison_problem(data_dirs: Sequence[str]) -> str | None:
    """Why runs of these data folders cannot be compared (None: they can, all are of one folder)."""
    distinct: list[str] = []
    for d in data_dirs:
        if not any(_same_folder(d, seen) for seen in distinct):
            distinct.append(d)
    if len(distinct) <= 1:
        return None
    names = [Path(d).name or d for d in distinct]
    if len(set(names)) < len(names):
        names = distinct  # two folders of the same name: only their paths tell them apart
    return (
        f"These runs trained on different folders ({', '.join(names)}): their accuracies are measured on "
        "different photos, so only runs of the same folder can be compared."
    )


def scratch_config(config: TrainConfig, plan: RunPlan) -> TrainConfig:
    """The from-scratch baseline of a run: the same data, architecture and schedule, from random weights.

    The schedule is pinned to what the run's plan used (steps, batch, resolution, mixup, augmentation), so
    the HyperRule cannot choose differently for the scratch strategy; the learning rate, its warm-up and
    its decay follow from the same steps, batch and number of images. The split, seed, label corrections and
    number of evaluations are the run's own, so both curves are measured on the same photos at the same steps.
    """
    return config.replace(
        strategy="scratch",
        steps=plan.total_steps,
        batch=plan.batch,
        resolution=plan.crop,
        mixup=plan.mixup_alpha,
        flip=plan.flip,
        random_crop=plan.random_crop,
    )


def same_schedule(a: ComparedRun, b: ComparedRun) -> bool:
    """Whether two runs trained the same architecture on the same folder with the same schedule."""
    if a.plan is None or b.plan is None or not _same_folder(a.data_dir, b.data_dir):
        return False
    p, q = a.plan, b.plan
    return (
        (p.model, p.total_steps, p.batch, p.crop, p.resize, p.warmup_steps, tuple(p.lr_boundaries))
        == (q.model, q.total_steps, q.batch, q.crop, q.resize, q.warmup_steps, tuple(q.lr_boundaries))
        and math.isclose(p.base_lr, q.base_lr, rel_tol=1e-6)
        and math.isclose(p.mixup_alpha, q.mixup_alpha)
        and (p.flip, p.random_crop) == (q.flip, q.random_crop)
    )


def baseline_of(transfer: ComparedRun, candidates: Sequence[ComparedRun]) -> ComparedRun | None:
    """The from-scratch run among `candidates` with `transfer`'s schedule (the first one), or None."""
    return next((c for c in candidates if c.from_scratch and same_schedule(c, transfer)), None)


# --------------------------------------------------------------------------------------------------------------
# The three benefits


def accuracy_at(curve: Sequence[tuple[int, float]], images: float) -> float:
    """The curve's accuracy after `images` (linear between evaluations, flat beyond the ends)."""
    if images <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if images <= x1:
            return y0 + (y1 - y0) * (images - x0) / (x1 - x0)
    return curve[-1][1]


def _verdict(difference: float, tolerance: float) -> int:
    """+1: the pre-trained run is ahead, -1: the scratch run, 0: level (within `tolerance`)."""
    if abs(difference) <= tolerance + 1e-9:
        return 0
    return 1 if difference > 0 else -1


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _points(x: float) -> str:
    n = round(100 * abs(x))
    return f"{n} point" if n == 1 else f"{n} points"


def _images(n: float) -> str:
    return f"{round(n):,} images"


@dataclass(frozen=True)
class Finding:
    """One sentence of a comparison.

    Attributes:
        aspect: "start", "slope", "end" (the three benefits) or "note".
        verdict: +1 the pre-trained run did better, 0 level, -1 the run from scratch did better.
        text: the sentence, with its numbers.
    """

    aspect: str
    verdict: int
    text: str


@dataclass(frozen=True)
class TransferBenefits:
    """Start, slope and asymptote of a pre-trained run against a run from scratch, measured on their curves.

    Attributes:
        transfer, scratch: the two runs (both with at least one evaluation).
        tolerance: differences up to this (one validation photo, at least `MIN_TOLERANCE`) count as level.
        start_images: where the start is measured: the later of the two first evaluations.
        start: (pre-trained, scratch) accuracy there.
        early: (from, to) images of the span the slope is measured over: the first evaluation to half of
            the shorter run (to its end when it has no evaluation before half way); None with one point.
        gain: (pre-trained, scratch) accuracy gained over `early`; None with `early`.
        end: (pre-trained, scratch) final accuracy (the last evaluation's for a run that has not finished).
        best: (pre-trained, scratch) best accuracy.
        caught_up_at: images after which the pre-trained run first reached the scratch run's final
            accuracy (None when it never did).
    """

    transfer: ComparedRun
    scratch: ComparedRun
    tolerance: float
    start_images: int
    start: tuple[float, float]
    early: tuple[int, int] | None
    gain: tuple[float, float] | None
    end: tuple[float, float]
    best: tuple[float, float]
    caught_up_at: int | None

    @classmethod
    def measure(cls, transfer: ComparedRun, scratch: ComparedRun) -> TransferBenefits:
        """Measure the three benefits on two runs' curves.

        Raises:
            ValueError: a run without any evaluation (nothing to measure).
        """
        if not transfer.curve or not scratch.curve:
            raise ValueError("Both runs need at least one evaluation.")
        sizes = [r.val_images for r in (transfer, scratch) if r.val_images]
        tolerance = max([MIN_TOLERANCE] + [1.0 / n for n in sizes])
        x0 = max(transfer.curve[0][0], scratch.curve[0][0])
        shorter = min(transfer.curve[-1][0], scratch.curve[-1][0])
        x1 = shorter / 2 if shorter / 2 > x0 else shorter
        early = (x0, int(x1)) if x1 > x0 else None
        start = (accuracy_at(transfer.curve, x0), accuracy_at(scratch.curve, x0))
        gain = None
        if early is not None:
            gain = (
                accuracy_at(transfer.curve, x1) - start[0],
                accuracy_at(scratch.curve, x1) - start[1],
            )

        def end_of(r: ComparedRun) -> float:
            return r.final_accuracy if r.final_accuracy is not None else r.curve[-1][1]

        def best_of(r: ComparedRun) -> float:
            return r.best_accuracy if r.best_accuracy is not None else max(a for _, a in r.curve)

        end = (end_of(transfer), end_of(scratch))
        caught = next((x for x, a in transfer.curve if a >= end[1] - 1e-9), None)
        return cls(
            transfer,
            scratch,
            tolerance,
            x0,
            start,
            early,
            gain,
            end,
            (best_of(transfer), best_of(scratch)),
            caught,
        )

    def verdicts(self) -> dict[str, int | None]:
        """+1 / 0 / -1 for "start", "slope" and "end" (see `Finding.verdict`); slope None when unmeasured."""
        return {
            "start": _verdict(self.start[0] - self.start[1], self.tolerance),
            "slope": None if self.gain is None else _verdict(self.gain[0] - self.gain[1], self.tolerance),
            "end": _verdict(self.end[0] - self.end[1], self.tolerance),
        }

    def findings(self) -> list[Finding]:
        """The three benefits in sentences, each only as strong as its numbers, then any caveats."""
        v = self.verdicts()
        t, s = self.start
        first = f"at the first evaluation (after {_images(self.start_images)})"
        if v["start"] > 0:
            start = (
                f"Higher start: starting from pre-trained weights, the model was at {_pct(t)} {first}, "
                f"where training from scratch was at {_pct(s)}."
            )
        elif v["start"] == 0:
            start = f"Start: no head start here; {first} both were level ({_pct(t)} pre-trained, {_pct(s)} from scratch)."
        else:
            start = (
                f"Start: training from scratch began higher, {_pct(s)} against {_pct(t)} pre-trained {first}."
            )
        found = [Finding("start", v["start"], start)]

        if self.gain is None or self.early is None:
            found.append(
                Finding(
                    "slope",
                    0,
                    "Slope: one evaluation is not enough to tell how fast each run learned.",
                )
            )
        else:
            gt, gs = self.gain
            a, b = self.early
            span = (
                f"from {_images(a)} to {_images(b)}"
                if b < min(self.transfer.curve[-1][0], self.scratch.curve[-1][0])
                else f"from {_images(a)} to the end"
            )

            def moved(g: float) -> str:
                return f"gained {_points(g)}" if g >= 0 else f"lost {_points(g)}"

            if v["slope"] > 0:
                slope = (
                    f"Higher slope: the pre-trained model {'also ' if v['start'] > 0 else ''}learned faster "
                    f"early on: {span} it {moved(gt)}, training from scratch {moved(gs)}."
                )
            elif v["slope"] == 0:
                slope = f"Slope: {span} both learned about as fast (pre-trained {moved(gt)}, from scratch {moved(gs)})."
            else:
                slope = f"Slope: training from scratch climbed faster {span} ({moved(gs)}, pre-trained {moved(gt)})"
                slope += ", but from a lower start." if v["start"] > 0 else "."
            found.append(Finding("slope", v["slope"], slope))

        te, se = self.end
        bt, bs = self.best
        ended = "ended" if self.transfer.finished and self.scratch.finished else "is so far"
        if v["end"] > 0:
            end = (
                f"Higher asymptote: the pre-trained model {ended} at {_pct(te)} (best {_pct(bt)}), training from scratch at "
                f"{_pct(se)} (best {_pct(bs)})."
            )
            total = self.scratch.curve[-1][0]
            if self.caught_up_at is not None and self.caught_up_at <= 0.9 * total:
                end += (
                    f" It reached the from-scratch run's final accuracy after {_images(self.caught_up_at)}, "
                    f"{self.caught_up_at / total:.0%} of the way through training."
                )
        elif v["end"] == 0:
            both = "ended" if ended == "ended" else "are so far"
            end = f"End: both {both} level: {_pct(te)} pre-trained, {_pct(se)} from scratch."
        else:
            end = f"End: training from scratch {ended} higher, at {_pct(se)} against {_pct(te)} pre-trained."
        found.append(Finding("end", v["end"], end))

        for r in (self.transfer, self.scratch):
            if not r.finished:
                found.append(
                    Finding(
                        "note",
                        0,
                        f"{r.label} has not finished (step {r.step} of {r.total_steps}): its last figures "
                        "are not its final ones.",
                    )
                )
        if self.transfer.model != self.scratch.model:
            found.append(
                Finding(
                    "note",
                    0,
                    f"The two are different models ({self.transfer.model}, {self.scratch.model}): part of "
                    "the difference is the model, not the pre-training.",
                )
            )
        elif (
            self.transfer.plan is not None
            and self.scratch.plan is not None
            and not same_schedule(self.transfer, self.scratch)
        ):
            found.append(
                Finding(
                    "note",
                    0,
                    "The two did not train on the same schedule (steps, batch or resolution differ): part of "
                    "the difference is the schedule, not the pre-training.",
                )
            )
        if self.tolerance > MIN_TOLERANCE:
            photos = round(1 / self.tolerance)
            found.append(
                Finding(
                    "note",
                    0,
                    f"With {photos} validation photos, one photo is {_pct(self.tolerance)}: differences "
                    "that small count as level.",
                )
            )
        return found


@dataclass(frozen=True)
class Paragraph:
    """A titled group of sentences under the comparison's chart."""

    title: str
    lines: tuple[str, ...]


def explain(compared: Sequence[ComparedRun]) -> list[Paragraph]:
    """What the compared runs show about transfer, in words: one paragraph per pre-trained run.

    Each pre-trained run is measured against its from-scratch baseline (same schedule) when there is one,
    else against a run from scratch of the same model, else against any run from scratch (and says so).
    """
    curved = [r for r in compared if r.curve]
    out: list[Paragraph] = []
    missing = [r for r in compared if not r.curve]
    transfer = [r for r in curved if not r.from_scratch]
    scratch = [r for r in curved if r.from_scratch]
    if not compared:
        return out
    if not transfer and not scratch:
        out.append(
            Paragraph(
                "Nothing to compare yet",
                (
                    "None of these runs has a validation accuracy yet (no evaluation, or no validation photos).",
                ),
            )
        )
    elif not scratch and any(r.from_scratch for r in compared):
        out.append(
            Paragraph(
                "What pre-training bought",
                (
                    "The run from scratch has no validation accuracy yet: the comparison appears once it has "
                    "been evaluated.",
                ),
            )
        )
    elif not scratch:
        best = max(transfer, key=lambda r: r.best_accuracy or 0.0)
        lines = [
            "None of these runs was trained from scratch. “Train from scratch for comparison” trains the "
            "same network from random weights on the same schedule, to show what pre-training bought here."
        ]
        if len(transfer) > 1:
            lines.append(f"Best here: {best.label}, {_pct(best.best_accuracy or 0.0)}.")
        out.append(Paragraph("What pre-training bought", tuple(lines)))
    elif not transfer:
        out.append(
            Paragraph(
                "What pre-training bought",
                (
                    "Every run here was trained from scratch: add a run that starts from pre-trained weights "
                    "(Fine-tune or Head only) to see what transfer buys.",
                ),
            )
        )
    else:
        said: set[str] = set()  # a caveat shared by several pairs (the validation set's size) is said once
        for t in transfer:
            s = (
                baseline_of(t, scratch)
                or next((c for c in scratch if c.model == t.model), None)
                or scratch[0]
            )
            benefits = TransferBenefits.measure(t, s)
            title = f"{t.label} against {s.label}"
            lines = [f.text for f in benefits.findings() if f.aspect != "note" or f.text not in said]
            said.update(f.text for f in benefits.findings() if f.aspect == "note")
            out.append(Paragraph(title, tuple(lines)))
    if missing:
        names = ", ".join(r.label for r in missing)
        out.append(
            Paragraph(
                "Without a curve",
                (f"{names}: no validation accuracy recorded, so not on the chart.",),
            )
        )
    return out
