"""The evaluation report as a typed value: accuracy, per-class scores, confusion matrix, the mistakes.

`evaluate.build_report` computes it, training and `evaluate.evaluate_run` return it, `runs.read_report` reads
it back; report.json holds `EvaluationReport.to_dict()`. No torch here, so a window can read reports fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ClassScores:
    """One class's scores on the evaluated images.

    Attributes:
        precision: of the images predicted as this class, the share that are.
        recall: of the images of this class, the share predicted as it.
        f1: the harmonic mean of the two (0 when both are 0).
        support: images of this class in the evaluated set.
    """

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Mistake:
    """One misclassified image.

    Attributes:
        file: its path relative to the labelled folder.
        true: its class (folder name).
        predicted: the class the model chose.
        confidence: the model's probability for `predicted`.
    """

    file: str
    true: str
    predicted: str
    confidence: float


@dataclass(frozen=True)
class EvaluationReport:
    """What the model gets right and wrong on a labelled set.

    Attributes:
        accuracy: top-1 accuracy; None when there was no image to evaluate.
        loss: mean cross-entropy; None likewise.
        num_images: images evaluated.
        classes: the model's classes, in the order of `confusion`'s rows and columns.
        per_class: scores by class name.
        confusion: rows are the true class, columns the predicted one.
        misclassified: every mistake, most confident first (the ones worth looking at).
        run_id, model, strategy: the run evaluated.
        split: "validation" (the run's own split) or the folder evaluated.
        unknown_classes: images of classes the model does not know, left out, by class (another folder).
        skipped: unreadable files in that folder.
    """

    accuracy: float | None
    loss: float | None
    num_images: int
    classes: tuple[str, ...]
    per_class: dict[str, ClassScores]
    confusion: tuple[tuple[int, ...], ...]
    misclassified: tuple[Mistake, ...] = ()
    run_id: str = ""
    model: str = ""
    strategy: str | None = None
    split: str = "validation"
    unknown_classes: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    @property
    def has_images(self) -> bool:
        return self.num_images > 0

    def describe_accuracy(self) -> str:
        """The accuracy in words: "Validation accuracy 93.0%", or that there was nothing to measure."""
        if self.accuracy is None:
            return "No validation images: accuracy cannot be measured"
        what = "Validation accuracy" if self.split == "validation" else "Accuracy"
        return f"{what} {self.accuracy:.1%}"

    def to_dict(self) -> dict:
        """The JSON-ready form written to report.json."""
        out = {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "num_images": self.num_images,
            "classes": list(self.classes),
            "per_class": {
                name: {"precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.support}
                for name, s in self.per_class.items()
            },
            "confusion": [list(row) for row in self.confusion],
            "misclassified": [
                {"file": m.file, "true": m.true, "predicted": m.predicted, "confidence": m.confidence}
                for m in self.misclassified
            ],
            "run_id": self.run_id,
            "model": self.model,
            "strategy": self.strategy,
            "split": self.split,
        }
        if self.split != "validation":
            out.update(unknown_classes=dict(self.unknown_classes), skipped=self.skipped)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> EvaluationReport:
        return cls(
            accuracy=d.get("accuracy"),
            loss=d.get("loss"),
            num_images=int(d["num_images"]),
            classes=tuple(d["classes"]),
            per_class={
                name: ClassScores(
                    float(s["precision"]), float(s["recall"]), float(s["f1"]), int(s["support"])
                )
                for name, s in d["per_class"].items()
            },
            confusion=tuple(tuple(int(v) for v in row) for row in d["confusion"]),
            misclassified=tuple(
                Mistake(m["file"], m["true"], m["predicted"], float(m["confidence"]))
                for m in d["misclassified"]
            ),
            run_id=d.get("run_id", ""),
            model=d.get("model", ""),
            strategy=d.get("strategy"),
            split=d.get("split", "validation"),
            unknown_classes=dict(d.get("unknown_classes", {})),
            skipped=int(d.get("skipped", 0)),
        )
