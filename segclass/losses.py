"""Losses of paper 2.3 (weighted pixelwise cross-entropy, patch cross-entropy) and the pixel terms our
candidate variants add on classification patches (`label_set_loss`, `pseudo_masks`)."""

from __future__ import annotations

import math

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


def label_set_loss(lowres_logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Partial-label pixel loss of classification patches (variant `label-set`): -log(p_0 + p_k) per pixel.

    A class-k patch holds normal tissue (class 0) and class k, in shares the
    label does not say, so each pixel's label is known only as a set, {0, k}:
    the loss is minus the log of the set's probability. It pushes every pixel
    away from the classes the patch cannot hold and leaves the split between
    normal and k to the masks and to the patch loss. A class-0 patch is all
    normal (-log p_0). Patches weigh as their class weighs in the pixel loss.
    """
    log_probs = F.log_softmax(lowres_logits, dim=1)
    label_log_prob = log_probs.gather(1, labels.view(-1, 1, 1, 1).expand(-1, 1, *log_probs.shape[2:])).squeeze(1)
    normal_log_prob = log_probs[:, 0]
    set_log_prob = torch.where(labels.view(-1, 1, 1) == 0, normal_log_prob,
                               torch.logaddexp(normal_log_prob, label_log_prob))
    patch_weights = weights[labels]
    per_patch = -set_log_prob.flatten(1).mean(dim=1)
    return (per_patch * patch_weights).sum() / patch_weights.sum().clamp_min(1e-12)


@torch.no_grad()
def pseudo_masks(lowres_logits: torch.Tensor, labels: torch.Tensor, floor: float) -> torch.Tensor:
    """Pixel targets of classification patches (variant `pseudo-mask`): on a class-k patch, each pixel is the
    likelier of normal (class 0) and k under the current segmentation, and at least `floor` of the patch is k.

    The label says the patch holds k; the segmentation, taught by the masks,
    says where. The floor keeps a patch whose k the network does not see yet
    from being trained as all normal (the label would then teach nothing),
    taking the pixels where k is likeliest against normal. Class-0 patches are
    all normal. No gradient flows through the targets.
    """
    log_probs = F.log_softmax(lowres_logits.float(), dim=1)
    batch, _, height, width = log_probs.shape
    label_map = labels.view(-1, 1, 1, 1).expand(-1, 1, height, width)
    margin = (log_probs.gather(1, label_map) - log_probs[:, :1]).flatten(1)  # log p_k - log p_0, N x HW
    least = max(1, math.ceil(floor * height * width))
    threshold = margin.topk(least, dim=1).values[:, -1:]
    is_label = (margin > 0) | (margin >= threshold)
    return torch.where(is_label, labels.view(-1, 1), torch.zeros_like(labels).view(-1, 1)).view(batch, height, width)
