"""Pixel-level and patch-level metrics from a streamed confusion matrix.

Whole slides are too large to keep every predicted pixel, so metrics are
accumulated as a C x C confusion matrix over batches and derived at the end.

Naming, because the paper's "micro" F1 is not what the literature calls micro:
- `macro_f1`: unweighted mean of class F1 over the classes that occur in the
  ground truth or the prediction (scikit-learn's `average="macro"` default).
- `paper_micro_f1`: class F1 weighted by ground-truth pixel share; the paper's
  "micro" (scikit-learn's `average="weighted"`).
- `micro_f1`: true micro F1 (global tp / fp / fn); equals pixel accuracy for
  single-label predictions, logged so nobody has to wonder.

`PixelScores` scores a predicted mask twice: over every pixel (the primary
metrics) and over tissue pixels only (the same names with `tissue_` in front);
`segclass.evaluation` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ConfusionMatrix:
    """Rows: ground truth class, columns: predicted class."""

    num_classes: int
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, target: np.ndarray, prediction: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add a batch of labels; `valid` (bool, same shape) excludes pixels from scoring."""
        target = np.asarray(target).ravel()
        prediction = np.asarray(prediction).ravel()
        if valid is not None:
            keep = np.asarray(valid).ravel()
            target, prediction = target[keep], prediction[keep]
        self.counts += pair_counts(target, prediction, self.num_classes, 1).reshape(self.counts.shape)

    # -- derived quantities -------------------------------------------------
    @property
    def true_positives(self) -> np.ndarray:
        return np.diag(self.counts)

    @property
    def support(self) -> np.ndarray:
        """Ground-truth count per class."""
        return self.counts.sum(axis=1)

    @property
    def predicted(self) -> np.ndarray:
        return self.counts.sum(axis=0)

    def present(self) -> np.ndarray:
        """Classes that occur in ground truth or prediction."""
        return (self.support + self.predicted) > 0

    def per_class_f1(self) -> np.ndarray:
        """F1 per class; 0 where the class is in neither ground truth nor prediction."""
        denominator = self.support + self.predicted
        return _safe_divide(2 * self.true_positives, denominator)

    def per_class_iou(self) -> np.ndarray:
        union = self.support + self.predicted - self.true_positives
        return _safe_divide(self.true_positives, union)

    def macro_f1(self) -> float:
        present = self.present()
        return float(self.per_class_f1()[present].mean()) if present.any() else 0.0

    def paper_micro_f1(self) -> float:
        total = self.support.sum()
        return float((self.per_class_f1() * self.support).sum() / total) if total else 0.0

    def micro_f1(self) -> float:
        # Single-label: every fp of one class is an fn of another, so micro F1 = accuracy.
        return self.accuracy()

    def accuracy(self) -> float:
        total = self.counts.sum()
        return float(self.true_positives.sum() / total) if total else 0.0

    def mean_iou(self) -> float:
        present = self.present()
        return float(self.per_class_iou()[present].mean()) if present.any() else 0.0

    def summary(self, class_names: list[str] | None = None, prefix: str = "") -> dict[str, Any]:
        """Flat dict of scalar metrics plus per-class entries and the matrix (as lists)."""
        names = class_names or [str(i) for i in range(self.num_classes)]
        result: dict[str, Any] = {
            f"{prefix}macro_f1": self.macro_f1(),
            f"{prefix}paper_micro_f1": self.paper_micro_f1(),
            f"{prefix}micro_f1": self.micro_f1(),
            f"{prefix}pixel_accuracy": self.accuracy(),
            f"{prefix}mean_iou": self.mean_iou(),
        }
        for name, f1, iou in zip(names, self.per_class_f1(), self.per_class_iou()):
            result[f"{prefix}f1_{name}"] = float(f1)
            result[f"{prefix}iou_{name}"] = float(iou)
        result[f"{prefix}confusion_matrix"] = self.counts.tolist()
        return result


#: Inserted after a metrics prefix for the scores over tissue pixels only (`val_tissue_macro_f1`).
TISSUE_PREFIX = "tissue_"


@dataclass
class PixelScores:
    """Confusion matrices of predicted masks over all pixels and over tissue pixels only."""

    num_classes: int
    all_pixels: ConfusionMatrix = field(init=False)
    tissue: ConfusionMatrix = field(init=False)

    def __post_init__(self) -> None:
        self.all_pixels, self.tissue = ConfusionMatrix(self.num_classes), ConfusionMatrix(self.num_classes)

    def update(self, target: np.ndarray, prediction: np.ndarray, tissue: np.ndarray) -> None:
        """Add one image (or a band of its rows): class ids (truth, prediction) and the bool tissue mask."""
        counts = pair_counts(target, prediction, self.num_classes, 2, np.asarray(tissue))
        counts = counts.reshape(2, self.num_classes, self.num_classes)
        self.all_pixels.counts += counts[0] + counts[1]
        self.tissue.counts += counts[1]

    def summary(self, class_names: list[str] | None = None, prefix: str = "") -> dict[str, Any]:
        return {**self.all_pixels.summary(class_names, prefix),
                **self.tissue.summary(class_names, prefix + TISSUE_PREFIX)}


def pair_counts(target: np.ndarray, prediction: np.ndarray, num_classes: int, groups: int,
                group: np.ndarray | None = None) -> np.ndarray:
    """Counts of (group, truth, prediction) triples, flat: one bincount over the smallest integer type that fits.

    A validation image is ~10 million pixels every epoch: building int64 pair
    indices and selecting the tissue pixels for a second matrix cost several
    times the counting itself.
    """
    target, prediction = np.asarray(target).ravel(), np.asarray(prediction).ravel()
    for labels in (target, prediction):
        if labels.size and (labels.max() >= num_classes or (labels.dtype.kind not in "ub" and labels.min() < 0)):
            raise ValueError(f"labels must be in [0, num_classes={num_classes})")
    size = groups * num_classes * num_classes
    dtype = np.uint8 if size <= 256 else np.uint16 if size <= 65536 else np.int64
    index = target.astype(dtype) * dtype(num_classes)
    index += prediction.astype(dtype, copy=False)
    if group is not None:
        index += group.ravel().astype(dtype) * dtype(num_classes * num_classes)
    return np.bincount(index, minlength=size)


def classification_summary(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int, prefix: str = "cls_"
) -> dict[str, Any]:
    """Patch-level accuracy and confusion matrix (the paper's Table 1)."""
    matrix = ConfusionMatrix(num_classes)
    matrix.update(labels, predictions)
    return {
        f"{prefix}accuracy": matrix.accuracy(),
        f"{prefix}macro_f1": matrix.macro_f1(),
        f"{prefix}confusion_matrix": matrix.counts.tolist(),
    }


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out
