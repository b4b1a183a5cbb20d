"""Whole-image evaluation: the predictor's own sliding windows and tissue rule, then pixel metrics.

Validation images (every epoch) and test images (at the end of a trial) are
larger than a patch. Each is predicted by `segclass.inference.sliding.predict_mask`,
the function `python -m segclass.predict` streams slides through, with the
image in memory as its source and the tissue the data build recorded for it
(`EvalImage.tissue`, found by `segclass.inference.survey` on the image's file
with the thresholds the model's `preprocessing` carries); the build also
mapped the image's stains with the estimate predict makes. So a trial's test
metrics are the metrics `segclass.predict --mask` reports for the same model
on the test image's file (tests/test_evaluation.py checks they are equal).

Glass in the metrics: the primary metrics (`val_macro_f1`, `test_macro_f1`,
`test_paper_micro_f1`, ...) score every pixel of the image, with the pixels
off tissue predicted as class 0. The masks they are compared with give glass
class 0, as the paper's masks do (BACH: unlabelled is normal; Gleason2019:
background; DigestPath2019: benign; synthetic: normal), and that is the mask a
user gets from predict. Scoring tissue only instead would change what class 0
means from one dataset to the next (a tissue class in BACH and DigestPath,
nothing but glass in Gleason2019). Glass is easy class-0 pixels, though, and
lifts class 0's F1 and the pixel accuracy on images with much of it; so the
same prediction is also scored over tissue pixels only, under `tissue_` names
(`val_tissue_macro_f1`, `test_tissue_f1_<class>`, ...). The best epoch is
still chosen by `val_macro_f1`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from segclass.augment import normalize, to_input
from segclass.data.arrays import EvalImage
from segclass.metrics import PixelScores, classification_summary
from segclass.inference.regions import MemoryRegions
from segclass.inference.sliding import BATCH_SIZE, predict_mask
from segclass.preprocess.foreground import OPENING_RADIUS, SATURATION_THRESHOLD, Foreground


def image_tissue(item: EvalImage) -> Foreground:
    """The tissue the build recorded for `item`; for images made elsewhere, found on its own pixels."""
    if item.tissue is not None:
        return item.tissue
    from segclass.inference.survey import survey

    return survey(MemoryRegions(item.rgb), SATURATION_THRESHOLD, OPENING_RADIUS, stains=False).tissue


def predict_eval_image(
    model: torch.nn.Module, item: EvalImage, num_classes: int, patch_size: int = 128, stride: int = 64,
    batch_size: int = BATCH_SIZE, device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(H x W uint8 class mask, H x W bool tissue) of one evaluation image, as predict makes them."""
    tissue = image_tissue(item)
    height, width = item.rgb.shape[:2]
    mask, _ = predict_mask(model, MemoryRegions(item.rgb, Path(item.name)), tissue, num_classes, patch_size, stride,
                           batch_size, device)
    return mask, tissue.rows(0, height, width)


def evaluate_images(
    model: torch.nn.Module, images: Iterable[EvalImage], num_classes: int, class_names: Sequence[str],
    patch_size: int = 128, stride: int = 64, device: str | torch.device = "cpu", prefix: str = "",
    batch_size: int = BATCH_SIZE, on_prediction: Callable[[EvalImage, np.ndarray], None] | None = None,
) -> dict:
    """Pixel metrics over all `images` pooled into one confusion matrix (and one over tissue only).

    `on_prediction(image, predicted mask)` sees each prediction, so a caller that
    also wants the masks (a trial's sample artifacts) does not predict twice.
    """
    scores = PixelScores(num_classes)
    for item in images:
        mask, tissue = predict_eval_image(model, item, num_classes, patch_size, stride, batch_size, device)
        scores.update(item.mask, mask, tissue)
        if on_prediction is not None:
            on_prediction(item, mask)
    return scores.summary(list(class_names), prefix=prefix)


@torch.no_grad()
def evaluate_patches(
    model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, num_classes: int,
    batch_size: int = 64, device: str | torch.device = "cpu", prefix: str = "cls_",
) -> dict:
    """Accuracy and confusion matrix of the classification head on labelled patches."""
    model.eval()
    predictions = []
    for first in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[first : first + batch_size]))
        predictions.append(model(normalize(to_input(batch)).to(device)).class_logits.argmax(1).cpu().numpy())
    predicted = np.concatenate(predictions) if predictions else np.zeros(0, np.int64)
    return classification_summary(labels, predicted, num_classes, prefix=prefix)
