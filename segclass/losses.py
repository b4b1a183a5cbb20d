"""Losses of paper 2.3: weighted pixelwise cross-entropy and patch cross-entropy."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def class_weights(pixel_counts: np.ndarray) -> np.ndarray:
    """Inverse pixel frequency per class, scaled so the largest weight is 1.

    Classes with no pixels get weight 0: there is nothing to balance, and a
    finite weight for them would be arbitrary.
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    weights = np.zeros_like(counts)
    present = counts > 0
    if present.any():
        weights[present] = counts[present].sum() / counts[present]
        weights /= weights.max()
    return weights


def weighted_pixel_loss(mask_logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Pixelwise cross-entropy weighted per class, normalised by the total weight.

    Equal to `F.cross_entropy(..., weight=weights)` except that a batch whose
    pixels all carry weight 0 gives loss 0 instead of 0/0 = NaN.
    """
    per_pixel = F.cross_entropy(mask_logits, target, reduction="none")
    pixel_weights = weights[target]
    return (per_pixel * pixel_weights).sum() / pixel_weights.sum().clamp_min(1e-12)
