"""Photos that are probably in the wrong class folder: confident learning on out-of-fold predictions.

API (the window's Data and Evaluate steps and ``bit-studio label-issues`` call exactly this)::

    find_label_issues(config, *, folds=5, seed=0, rank_by="self_confidence", on_progress=None, cancel=None)
        -> LabelIssueReport
        `config`: a `TrainConfig` (or a `preparation.Prepared`) naming the data folder, the model and, when
        wanted, label corrections already made (they are applied first: a corrected photo is judged by its
        corrected label). Raises BitStudioError (folder, model, weights, too few photos) and
        OperationCancelled.

    LabelIssueReport (frozen): data_dir, model, classes, issues (LabelIssue, most likely first), num_photos,
        folds, thresholds (class -> t_j), agreement (out-of-fold accuracy on the given labels), rank_by,
        computed (photos that needed a backbone pass; 0 when every feature was cached), seconds,
        corrections (how many corrections were applied first); .path_of(issue) -> Path (the photo file),
        .as_corrections() -> the suggestions as `corrections.Correction`s, .to_dict()
    LabelIssue (frozen): path (relative to the data folder, '/'-separated, as dataset.Sample.path), given,
        suggested, confidence (out-of-fold probability of `suggested`), given_probability; .margin
    out_of_fold_probabilities(features, labels, num_classes, folds=5, seed=0, ...) -> N x K numpy array
    confident_issues(probabilities, labels, rank_by="self_confidence") -> (indices, suggested labels)

    Progress phases: "scanning", "downloading" (missing weights only), "features" (images, cached ones
    included), "folds" (done/total), "done". A window runs it on a worker thread: the heavy parts
    (onnxruntime, the head's matrix products) run outside the GIL, and a second search takes seconds.

How it works, and why it is cheap. The frozen backbone's features of every training photo are computed once
(`features.FeatureExtractor`, on the fastest frozen path) and kept in the cache, so a search after a head run,
or a second search, runs no backbone pass at all. On those features a linear head (multinomial logistic
regression, L-BFGS, full batch, `L2` weight penalty) is trained `folds` times, each time on all photos but one
stratified fold, and predicts the held-out fold: every photo gets probabilities from a model that never saw
its label. Seconds, even for thousands of photos.

The rule is confident learning's (Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty
in Dataset Labels", JAIR 2021), written here in a few lines rather than taken from cleanlab (AGPL-3.0, which
does not suit an Apache-2.0 application): each class j gets a threshold t_j, the mean predicted probability
of j over the photos labelled j (how sure the model is about that class's own photos). A photo is confidently
of class j when p_j >= t_j; among several such classes the most probable counts. A photo labelled i that is
confidently of another class j sits off the diagonal of the confident joint: a likely label error, with j as
the suggestion. The issues are ranked by self-confidence (p_i, lowest first: the model finds the given label
least likely) or by margin (p_j - p_i, largest first). Per-class thresholds, rather than one cut-off, keep a
hard class (lower probabilities for all its photos) from flooding the list and an easy one from hiding its
errors.

Measured on scikit-learn's digits with 10% of the training photos moved to another digit's folder
(bench/label_issues.py, EfficientNet-Lite0 features, 5 folds, means of 3 seeds): precision 81% and recall
71% at 64 px, 76% and 67% at the head strategy's 224 px; the suggestion was the true digit for 96-100% of
the moved photos found. That script's docstring has the rest (what correcting them does to a run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from bit_engine import corrections as corrections_mod
from bit_engine.config import TrainConfig
from bit_engine.devices import resolve_device
from bit_engine.errors import BitStudioError
from bit_engine.features import FeatureExtractor
from bit_engine.models import create_model
from bit_engine.preparation import Prepared, prepare
from bit_engine.progress import CancelFlag, OperationCancelled, Progress, ProgressCallback
from bit_engine.trainers import one_cpu_thread
from bit_engine.transforms import loader_workers

RankBy = Literal["self_confidence", "margin"]
RANK_BY: tuple[str, ...] = ("self_confidence", "margin")

#: Weight penalty of the linear head (on standardized features, added to the mean cross-entropy as
#: L2 / 2 * ||W||^2). Chosen on the digits bench: see `bench/label_issues.py`.
L2 = 1e-1

#: L-BFGS iterations per fold: the loss has converged well before on a few thousand photos.
MAX_ITER = 200

#: Folds by default: 5 is the usual choice (80% of the photos train each fold's head).
DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class LabelIssue:
    """A photo whose label is probably wrong.

    Attributes:
        path: relative to the data folder, '/'-separated (as `dataset.Sample.path`).
        given: the label its folder (or a correction) gives it.
        suggested: the class the model is confident it belongs to.
        confidence: the out-of-fold probability of `suggested` (0 to 1).
        given_probability: the out-of-fold probability of `given` (its self-confidence).
    """

    path: str
    given: str
    suggested: str
    confidence: float
    given_probability: float

    @property
    def margin(self) -> float:
        return self.confidence - self.given_probability

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "given": self.given,
            "suggested": self.suggested,
            "confidence": round(self.confidence, 6),
            "given_probability": round(self.given_probability, 6),
        }


@dataclass(frozen=True)
class LabelIssueReport:
    """What `find_label_issues` found.

    Attributes:
        data_dir: the folder searched (absolute).
        model: the model whose frozen features were used.
        classes: the class names.
        issues: the likely label errors, most likely first.
        num_photos: training photos judged.
        folds: folds of the cross-validation.
        thresholds: class -> t_j, the mean out-of-fold probability of j over the photos labelled j.
        agreement: share of the photos whose most probable class (out of fold) is their given label.
        rank_by: "self_confidence" or "margin".
        computed: photos whose features needed a backbone pass (0 when all were cached).
        seconds: how long the search took.
        corrections: corrections applied to the labels before the search.
    """

    data_dir: str
    model: str
    classes: tuple[str, ...]
    issues: tuple[LabelIssue, ...]
    num_photos: int
    folds: int
    thresholds: dict[str, float]
    agreement: float
    rank_by: str
    computed: int
    seconds: float
    corrections: int = 0

    def path_of(self, issue: LabelIssue) -> Path:
        """The photo's file (for a thumbnail)."""
        return Path(self.data_dir, *issue.path.split("/"))

    def as_corrections(self) -> tuple[corrections_mod.Correction, ...]:
        """Each issue as the correction it suggests (the file `bit-studio train --corrections` takes)."""
        return tuple(corrections_mod.Correction(i.path, i.given, i.suggested) for i in self.issues)

    def to_dict(self) -> dict:
        return {
            "data_dir": self.data_dir,
            "model": self.model,
            "classes": list(self.classes),
            "num_photos": self.num_photos,
            "folds": self.folds,
            "rank_by": self.rank_by,
            "thresholds": {k: round(v, 6) for k, v in self.thresholds.items()},
            "agreement": round(self.agreement, 6),
            "computed": self.computed,
            "seconds": round(self.seconds, 3),
            "corrections": self.corrections,
            "issues": [i.to_dict() for i in self.issues],
        }


# ----------------------------------------------------------------------------------------------------------
# The pieces: folds, the linear head, the rule


def stratified_folds(labels: Sequence[int], folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0 .. folds-1) of each photo: every class spread evenly over the folds, seeded.

    Each class's photos are shuffled with `numpy.random.default_rng(seed)` and dealt out in turn, starting
    where the previous class stopped, so the folds also come out within one photo of the same size.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold_of[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    return fold_of


def _fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int):
    """Multinomial logistic regression on standardized features; returns a function giving probabilities."""
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    xs = (x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(xs @ weight + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weight, bias = weight.detach(), bias.detach()
    return lambda z: torch.softmax(((z - mean) / std) @ weight + bias, dim=1)


def out_of_fold_probabilities(
    features: torch.Tensor | np.ndarray,
    labels: Sequence[int],
    num_classes: int,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    *,
    l2: float = L2,
    max_iter: int = MAX_ITER,
    on_fold: Callable[[int], None] | None = None,
    cancel: CancelFlag | None = None,
) -> np.ndarray:
    """Each photo's class probabilities from a linear head trained without its fold (N x K, float64).

    Args:
        features: N x D backbone features.
        labels: N class indices.
        num_classes: K.
        folds: at least 2 and at most N.
        seed: the folds' seed.
        l2: weight penalty of the head.
        max_iter: L-BFGS iterations per fold.
        on_fold: called with the number of folds done.
        cancel: checked between folds.

    Raises:
        OperationCancelled: `cancel` was set.
    """
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    fold_of = stratified_folds(y.numpy(), folds, seed)
    probs = np.zeros((len(y), num_classes))
    for k in range(folds):
        if cancel is not None and cancel.is_set():
            raise OperationCancelled("The search for label issues was cancelled.")
        held = torch.from_numpy(fold_of == k)
        if held.any():
            with one_cpu_thread(torch.device("cpu")):
                predict = _fit_linear(x[~held], y[~held], num_classes, l2, max_iter)
            with torch.no_grad():
                probs[held.numpy()] = predict(x[held]).numpy()
        if on_fold is not None:
            on_fold(k + 1)
    return probs


def class_thresholds(probabilities: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """t_j: the mean probability of class j over the photos labelled j (inf for a class without photos)."""
    labels = np.asarray(labels)
    k = probabilities.shape[1]
    return np.array(
        [probabilities[labels == j, j].mean() if (labels == j).any() else np.inf for j in range(k)]
    )


def confident_issues(
    probabilities: np.ndarray, labels: Sequence[int], rank_by: str = "self_confidence"
) -> tuple[np.ndarray, np.ndarray]:
    """The confident-learning rule: the photos off the diagonal of the confident joint, ranked.

    A photo's confident class is the most probable of the classes j with p_j >= t_j (`class_thresholds`);
    a photo is an issue when it has one and it is not its given label.

    Returns:
        (indices of the issues, most likely first; the suggested class of each).
    """
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {', '.join(RANK_BY)}, not {rank_by!r}.")
    labels = np.asarray(labels)
    p = np.asarray(probabilities, dtype=np.float64)
    above = p >= class_thresholds(p, labels)[None, :]
    confident = np.where(above, p, -1.0).argmax(axis=1)
    flagged = np.flatnonzero(above.any(axis=1) & (confident != labels))
    given = p[flagged, labels[flagged]]
    if rank_by == "self_confidence":
        order = np.argsort(given, kind="stable")
    else:
        order = np.argsort(-(p[flagged, confident[flagged]] - given), kind="stable")
    return flagged[order], confident[flagged[order]]


# ----------------------------------------------------------------------------------------------------------
# The whole search


def _emit(on_progress: ProgressCallback | None, progress: Progress) -> None:
    if on_progress is not None:
        on_progress(progress)


def find_label_issues(
    config: TrainConfig | Prepared,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    rank_by: RankBy = "self_confidence",
    on_progress: ProgressCallback | None = None,
    cancel: CancelFlag | None = None,
) -> LabelIssueReport:
    """Find the training photos whose label is probably wrong (see the module docstring for how).

    Every photo of the folder is judged, or, when the folder has its own split (train/ and val/), those of
    its training part.

    Args:
        config: the data folder, the model, the device and any label corrections to apply first. Its
            strategy is ignored: the features are those a head run of the same config computes (and caches).
        folds: folds of the cross-validation (2 or more).
        seed: the folds' seed (the same seed gives the same folds and the same list).
        rank_by: "self_confidence" (lowest probability of the given label first) or "margin" (largest
            lead of the suggested class first).
        on_progress: receives `Progress` for "scanning", "downloading" (missing weights), "features" and
            "folds" (done/total folds), then "done".
        cancel: checked between files, batches and folds.

    Raises:
        BitStudioError: the folder cannot be used, the model is unknown or its weights cannot be had, or
            there are too few photos for `folds`.
        OperationCancelled: `cancel` was set.
    """
    started = time.perf_counter()
    if not (isinstance(folds, int) and folds >= 2):
        raise BitStudioError(f"The search needs at least 2 folds, not {folds!r}.")
    if rank_by not in RANK_BY:
        raise BitStudioError(f"Rank the issues by {' or '.join(RANK_BY)}, not {rank_by!r}.")
    if isinstance(config, Prepared):
        prepared = config.with_config(config.config.replace(strategy="head"))
    else:
        prepared = prepare(config.replace(strategy="head"), on_progress, cancel)
    config, report = prepared.config, prepared.report
    samples = report.train
    classes = tuple(report.classes)
    if len(samples) < 2 * folds:
        raise BitStudioError(
            f"Finding label issues with {folds} folds needs at least {2 * folds} training photos; this folder "
            f"has {len(samples)}. Add photos, or use fewer folds."
        )
    device = resolve_device(config.device)
    model = _pretrained(config, len(classes), on_progress, cancel)
    extractor = FeatureExtractor(
        model,
        device,
        prepared.preprocessing,
        workers=config.workers if config.workers is not None else loader_workers(cached=False),
        on_progress=on_progress,
    )
    features = extractor.extract([str(report.path_of(s)) for s in samples], cancel)
    if features is None:
        raise OperationCancelled("The search for label issues was cancelled.")
    labels = np.array([s.label for s in samples])
    probs = out_of_fold_probabilities(
        features,
        labels,
        len(classes),
        folds,
        seed,
        on_fold=lambda k: _emit(on_progress, Progress("folds", k, folds, message="cross-validation")),
        cancel=cancel,
    )
    found, suggested = confident_issues(probs, labels, rank_by)
    thresholds = class_thresholds(probs, labels)
    issues = tuple(
        LabelIssue(
            path=samples[i].path,
            given=classes[labels[i]],
            suggested=classes[j],
            confidence=float(probs[i, j]),
            given_probability=float(probs[i, labels[i]]),
        )
        for i, j in zip(found.tolist(), suggested.tolist(), strict=True)
    )
    seconds = time.perf_counter() - started
    _emit(on_progress, Progress("done", folds, folds, elapsed=seconds))
    return LabelIssueReport(
        data_dir=report.root,
        model=config.model,
        classes=classes,
        issues=issues,
        num_photos=len(samples),
        folds=folds,
        thresholds={c: float(t) for c, t in zip(classes, thresholds, strict=True) if np.isfinite(t)},
        agreement=float((probs.argmax(axis=1) == labels).mean()),
        rank_by=rank_by,
        computed=extractor.computed,
        seconds=seconds,
        corrections=len(prepared.corrections.applied),
    )


def _pretrained(config: TrainConfig, num_classes: int, on_progress, cancel) -> torch.nn.Module:
    """The config's model with its pre-trained backbone (downloaded when missing, with progress)."""
    from bit_engine import weights

    model = create_model(config.model, num_classes=num_classes, zero_head=True)

    def relay(p) -> None:
        _emit(on_progress, Progress("downloading", p.done, p.total or 0, message=f"weights {config.model}"))

    weights.load_pretrained(model, config.model, download_if_missing=True, on_progress=relay, cancel=cancel)
    return model.eval()
