"""From a labelled folder and a config to what a run needs: the scan, the split, the HyperRule plan and the
pre-processing, computed once as a `Prepared` and accepted by `estimate` and `fit`.

A window's Plan page calls `prepare(config)` (seconds to minutes on a large folder), shows the plan and the
estimates from it, and hands the same `Prepared` to training when the user presses Start: the folder is not
scanned twice. A change of setting that leaves the scan as it was (steps, batch, strategy, model) is
`prepared.with_config(new_config)`, which only plans again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bit_engine import data, holdout, hyperrule
from bit_engine.config import TrainConfig
from bit_engine.corrections import AppliedCorrections, apply_corrections, from_config
from bit_engine.dataset import DatasetReport, ScanProgress
from bit_engine.errors import BitStudioError
from bit_engine.models import get_spec
from bit_engine.progress import CancelFlag, Progress, ProgressCallback
from bit_engine.transforms import Preprocessing


class TrainingError(BitStudioError):
    """Training cannot start or go on; the message says why and what to do.

    Attributes:
        report: the dataset report, when the folder cannot be trained on (its errors say why).
        run_dir: the run folder concerned, when there is one.
        remedy: as `BitStudioError.remedy` ("resume": `run_dir` already holds a run).
    """

    def __init__(
        self,
        message: str,
        report: DatasetReport | None = None,
        run_dir: str | Path | None = None,
        remedy: str | None = None,
    ):
        super().__init__(message, remedy=remedy)
        self.report = report
        self.run_dir = Path(run_dir) if run_dir is not None else None

    def __reduce__(self):
        # Crosses process boundaries (a training child reports it to the launcher): keep the fields.
        return (type(self), (str(self), self.report, self.run_dir, self.remedy))


def make_plan(config: TrainConfig, num_train: int, median_size) -> hyperrule.HyperRulePlan:
    """The HyperRule plan with the config's overrides.

    Raises:
        TrainingError: an override is out of range for this dataset.
    """
    try:
        return hyperrule.plan(
            num_train,
            tuple(median_size),
            config.model,
            batch=config.batch,
            steps=config.steps,
            crop=config.resolution,
            mixup=config.mixup,
            flip=config.flip,
            random_crop=config.random_crop,
            strategy=config.strategy,
        )
    except ValueError as exc:  # the rule's range checks speak to the user, but as ValueErrors
        raise TrainingError(str(exc)) from exc


@dataclass(frozen=True)
class Prepared:
    """A config with its scanned folder, split, plan and pre-processing: everything decided before training.

    Attributes:
        config: the run.
        report: the dataset report (classes, counts, skipped files, warnings), with the config's label
            corrections applied: what the run trains on.
        split: the train/validation split (the folder's own, or held out at random from the seed).
        plan: the HyperRule plan with the config's overrides and the reasons.
        preprocessing: resize, crop and normalization, as training, evaluation and export use them.
        corrections: which of the config's corrections were applied and which not (and why).
        scanned: the scan as found on disk, before the corrections (None when built by hand: `report`).
    """

    config: TrainConfig
    report: DatasetReport = field(repr=False)
    split: holdout.Split = field(repr=False)
    plan: hyperrule.HyperRulePlan
    preprocessing: Preprocessing
    corrections: AppliedCorrections = field(default_factory=AppliedCorrections, repr=False)
    scanned: DatasetReport | None = field(default=None, repr=False)

    @property
    def num_train(self) -> int:
        return len(self.split.train)

    @property
    def num_val(self) -> int:
        return len(self.split.val)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.split.classes)

    def with_config(self, config: TrainConfig) -> Prepared:
        """The same folder under another config: plans again, and scans again only if it must.

        A new data folder, validation fraction or seed changes what the scan or the split gave: those go
        through `prepare` again (without progress; call `prepare` for that).
        """
        same_data = (config.data_dir, config.val_fraction, config.seed) == (
            self.config.data_dir,
            self.config.val_fraction,
            self.config.seed,
        )
        if not same_data:
            return prepare(config)
        if config.corrections != self.config.corrections:
            # Other corrections: the same scan, corrected and split again (no second pass over the folder).
            return _corrected(config, self.scanned or self.report)
        return _planned(config, self.report, self.split, self.corrections, self.scanned)


def _planned(
    config: TrainConfig,
    report: DatasetReport,
    split: holdout.Split,
    corrections: AppliedCorrections | None = None,
    scanned: DatasetReport | None = None,
) -> Prepared:
    plan = make_plan(config, len(split.train), report.median_size)
    pre = Preprocessing.from_plan(plan, get_spec(config.model).normalization)
    return Prepared(config, report, split, plan, pre, corrections or AppliedCorrections(), scanned)


def _corrected(config: TrainConfig, scanned: DatasetReport) -> Prepared:
    """Apply the config's corrections to a scan, split and plan."""
    report, applied = apply_corrections(scanned, from_config(config.corrections))
    split = holdout.split(report, val_fraction=config.val_fraction, seed=config.seed)
    return _planned(config, report, split, applied, scanned)


def prepare(
    config: TrainConfig, on_progress: ProgressCallback | None = None, cancel: CancelFlag | None = None
) -> Prepared:
    """Scan `config.data_dir`, apply the config's label corrections, split, plan with the HyperRule, choose
    the pre-processing.

    Corrections that cannot be applied (a photo no longer there, a class that does not exist) are listed in
    `Prepared.corrections`, not raised.

    Args:
        on_progress: receives "scanning" `Progress` (files, with the stage in `message`).
        cancel: checked between files.

    Raises:
        TrainingError: the folder cannot be trained on (`.report` says why), or an override is out of range.
        UnknownModelError: the config names no known model.
        OperationCancelled: `cancel` was set.
    """
    get_spec(config.model)  # an unknown model fails before the (possibly long) scan

    def relay(p: ScanProgress) -> None:
        if on_progress is not None:
            on_progress(Progress("scanning", p.files_done, p.files_total or 0, message=p.stage))

    report = data.scan(config.data_dir, on_progress=relay, cancel=cancel)
    if not report.ok:
        raise TrainingError("This folder cannot be trained on yet: " + " ".join(report.errors), report)
    return _corrected(config, report)
