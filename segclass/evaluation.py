"""Whole-image evaluation by sliding windows (SPEC "Evaluation").

Validation and test images are larger than a patch. They are covered by
overlapping patch-sized windows whose mask logits are averaged where they
overlap and stitched, so the metrics compare a full-resolution prediction with
the full-resolution ground truth.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from segclass.augment import normalize, to_input
from segclass.data.arrays import EvalImage
from segclass.metrics import ConfusionMatrix, classification_summary


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with the last window flush to the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@torch.no_grad()
def window_logits(model: torch.nn.Module, windows: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """N x C x P x P float32 mask logits (on the CPU) of N x P x P x 3 uint8 windows.

    The uint8 windows go to the device first: a quarter of the bytes to copy,
    and the float conversion runs there.
    """
    return model.forward_masks(normalize(to_input(torch.from_numpy(windows).to(device)))).float().cpu()


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, rgb: np.ndarray, patch_size: int = 128, stride: int = 64,
    batch_size: int = 32, device: str | torch.device = "cpu",
) -> torch.Tensor:
    """C x H x W averaged mask logits of a whole RGB uint8 image."""
    height, width = rgb.shape[:2]
    pad_h, pad_w = max(0, patch_size - height), max(0, patch_size - width)
    if pad_h or pad_w:  # smaller than a patch: pad with white glass
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=255)
    full_h, full_w = rgb.shape[:2]
    corners = [(y, x) for y in window_starts(full_h, patch_size, stride) for x in window_starts(full_w, patch_size, stride)]
    logit_sum: torch.Tensor | None = None
    counts = torch.zeros(1, full_h, full_w)
    model.eval()
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        # np.stack copies, so read-only arrays (shared memory, object store) are fine
        logits = window_logits(model, np.stack([rgb[y : y + patch_size, x : x + patch_size] for y, x in chunk]), device)
        if logit_sum is None:
            logit_sum = torch.zeros(logits.shape[1], full_h, full_w)
        for (y, x), logits_of_window in zip(chunk, logits):
            logit_sum[:, y : y + patch_size, x : x + patch_size] += logits_of_window
            counts[:, y : y + patch_size, x : x + patch_size] += 1
    assert logit_sum is not None
    return (logit_sum / counts)[:, :height, :width]


def evaluate_images(
    model: torch.nn.Module, images: Iterable[EvalImage], num_classes: int, class_names: Sequence[str],
    patch_size: int = 128, stride: int = 64, device: str | torch.device = "cpu", prefix: str = "",
) -> dict:
    """Pixel metrics over all `images` pooled into one confusion matrix."""
    matrix = ConfusionMatrix(num_classes)
    for item in images:
        matrix.update(item.mask, predict_logits(model, item.rgb, patch_size, stride, device=device).argmax(0).numpy())
    return matrix.summary(list(class_names), prefix=prefix)


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
