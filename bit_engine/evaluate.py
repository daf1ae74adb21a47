"""What the model gets right and wrong on a labelled set: accuracy, per-class scores, confusion, mistakes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bit_engine.progress import CancelFlag, OperationCancelled, Progress, ProgressCallback
from bit_engine.report import ClassScores, EvaluationReport, Mistake
from bit_engine.transforms import ImageDataset


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    dataset: ImageDataset,
    device: torch.device,
    memory_format=torch.contiguous_format,
    batch_size: int = 32,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
    cancel=None,
    backend: str = "eager",
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Logits (N x C, float32, CPU) and labels for every sample, in order; None when cancelled.

    Always in float32, whatever precision training used: the report then describes exactly what the
    exported (float32) model does. The forward passes take `frozen.freeze`'s path: `backend` "eager" (WS
    folded into a copy, cheap for weights that change between calls, as during training) or "auto" (on the
    CPU onnxruntime on a cached graph of the backbone: for a finished model, evaluated again and again).
    `memory_format` is kept for callers; the frozen path picks the layout for the device itself.
    """
    from bit_engine.frozen import freeze

    runner = freeze(model, device, dataset.pre.crop, backend=backend)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    logits, labels, done = [], [], 0
    try:
        for x, y, _ in loader:
            if cancel is not None and cancel.is_set():
                return None
            logits.append(runner.logits(x))
            labels.append(y)
            done += len(y)
            if on_batch is not None:
                on_batch(done)
    finally:
        model.train(was_training)
    if not logits:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def loss_and_top1(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float | None, float | None]:
    """Mean cross-entropy and top-1 accuracy; None for both on an empty set."""
    if len(labels) == 0:
        return None, None
    loss = F.cross_entropy(logits, labels).item()
    top1 = (logits.argmax(1) == labels).float().mean().item()
    return loss, top1


def build_report(
    logits: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    files: Sequence[str],
    **about,
) -> EvaluationReport:
    """The evaluation report of `logits` against `labels`.

    Args:
        logits, labels: from `predict_dataset`.
        classes: the model's classes, in label order.
        files: each sample's file, in the same order.
        about: the report's other fields (run_id, model, strategy, split, unknown_classes, skipped).

    Returns:
        accuracy and loss (None without images), per-class precision/recall/F1/support, the confusion matrix
        (rows: true class, columns: predicted, in `classes` order), and every mistake, most confident first.
    """
    k = len(classes)
    probs = logits.softmax(1) if len(labels) else logits
    pred = probs.argmax(1) if len(labels) else labels
    confusion = torch.zeros(k, k, dtype=torch.long)
    for t, p in zip(labels.tolist(), pred.tolist(), strict=True):
        confusion[t, p] += 1
    per_class = {}
    for i, name in enumerate(classes):
        tp = confusion[i, i].item()
        predicted = confusion[:, i].sum().item()
        support = confusion[i, :].sum().item()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = ClassScores(precision, recall, f1, support)
    mistakes = [
        Mistake(files[i], classes[labels[i]], classes[pred[i]], round(probs[i, pred[i]].item(), 6))
        for i in torch.nonzero(pred != labels).flatten().tolist()
    ]
    mistakes.sort(key=lambda m: -m.confidence)
    loss, top1 = loss_and_top1(logits, labels)
    return EvaluationReport(
        accuracy=top1,
        loss=loss,
        num_images=len(labels),
        classes=tuple(classes),
        per_class=per_class,
        confusion=tuple(tuple(row) for row in confusion.tolist()),
        misclassified=tuple(mistakes),
        **about,
    )


def evaluate_run(
    run_dir,
    data_dir=None,
    *,
    device: str | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelFlag | None = None,
) -> EvaluationReport:
    """Evaluate a finished run on its validation split, or on another labelled folder.

    With `data_dir`, every usable image of a class the model knows is used (classes are matched by
    name); images of other classes are left out and the report says how many. The run's own report.json
    is rewritten only for its validation split.

    Args:
        on_progress: receives `Progress` objects: "scanning" (another folder), then "evaluating" counting
            images.
        cancel: checked between batches (and during the scan).

    Raises:
        RunNotFinishedError: the run has no trained model yet.
        BitStudioError: the folder shares no class with the model, or is not a labelled folder.
        OperationCancelled: `cancel` was set.
    """
    from bit_engine import data, holdout
    from bit_engine.devices import prepare_for_device, resolve_device
    from bit_engine.errors import BitStudioError
    from bit_engine.runs import RunDir

    run = RunDir(run_dir)
    model, meta = run.load_model()
    classes = meta["classes"]
    pre = run.preprocessing()
    dev = resolve_device(device)
    model, memory_format = prepare_for_device(model, dev)
    extra: dict = {}
    if data_dir is None:
        split = holdout.Split.from_dict(run.read_json("split.json"))
        samples = [(str(split.path_of(s)), s.label, s.path) for s in split.val]
        extra["split"] = "validation"
    else:

        def relay_scan(p) -> None:
            if on_progress is not None:
                on_progress(Progress("scanning", p.files_done, p.files_total or 0, message=p.stage))

        report = data.scan(data_dir, on_progress=relay_scan, cancel=cancel)
        index = {name: i for i, name in enumerate(classes)}
        samples, unknown = [], {}
        for s in (*report.train, *report.val):
            name = report.classes[s.label]
            if name in index:
                samples.append((str(report.path_of(s)), index[name], s.path))
            else:
                unknown[name] = unknown.get(name, 0) + 1
        if not samples and report.num_images == 0:
            # An empty folder, or one without class sub-folders: the scan's own words say which.
            raise BitStudioError(report.errors[0] if report.errors else f"{data_dir} has no usable photos.")
        if not samples:
            raise BitStudioError(
                f"None of the classes in {data_dir} is one this model knows ({', '.join(classes)}). "
                "Class folders must have the same names as in training."
            )
        extra.update(split=str(data_dir), unknown_classes=unknown, skipped=len(report.skipped))
    dataset = ImageDataset([p for p, _, _ in samples], [y for _, y, _ in samples], pre, train=False)

    def relay(done: int) -> None:
        if on_progress is not None:
            on_progress(Progress("evaluating", done, len(dataset)))

    relay(0)
    result = predict_dataset(
        model, dataset, dev, memory_format, on_batch=relay, cancel=cancel, backend="auto"
    )
    if result is None:
        raise OperationCancelled("Evaluation cancelled.")
    report = build_report(
        *result,
        classes,
        [f for _, _, f in samples],
        run_id=run.run_id,
        model=meta["model"],
        strategy=meta.get("strategy"),
        **extra,
    )
    if data_dir is None:
        run.write_json("report.json", report.to_dict())
    return report
