"""Segmentation and classification heads (paper Tables A.2, A.3).

The classification head reads the *low-resolution segmentation logits*, not the
encoder features: class labels can only be explained through a segmentation,
which is how classification patches teach the segmentation path (paper 2.2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationHead(nn.Module):
    """256 x 8 x 8 features -> C x 16 x 16 low-resolution logits (Table A.2)."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.classifier = nn.Conv2d(hidden, num_classes, kernel_size=1, bias=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.upsample(self.relu(self.bn(self.conv(features)))))


class ClassificationHead(nn.Module):
    """C x 16 x 16 low-resolution logits -> C class logits (Table A.3, variant `paper`)."""

    def __init__(self, num_classes: int, hidden: int = 8) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(num_classes, hidden, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, num_classes, kernel_size=1, bias=False)

    def forward(self, lowres_logits: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.relu(self.bn(self.fc1(self.pool(lowres_logits)))))
        return x.flatten(1)


class MeanSoftmaxClassificationHead(nn.Module):
    """Class logits = log of the mean pixel softmax of the low-resolution logits (variant `mean-softmax`).

    softmax(class logits) is then the share of the patch the segmentation gives
    each class, so channel c of the segmentation *is* class c and the patch
    loss -log(share of the label) is met once the label's pixels win. A pixel
    confidently of another class (stroma beside a tumour) gets a gradient
    scaled by its own small probability of the label, so a dominant-class
    label does not force the whole patch to it. No parameters.
    """

    def forward(self, lowres_logits: torch.Tensor) -> torch.Tensor:
        pixels = lowres_logits.shape[2] * lowres_logits.shape[3]
        log_probs = F.log_softmax(lowres_logits, dim=1).flatten(2)
        return torch.logsumexp(log_probs, dim=2) - math.log(pixels)


class MaxPoolClassificationHead(nn.Module):
    """Class logits as the spatial maximum of the low-resolution logits.

    This is what the authors' released code computes (variant `released-code`):
    its classifier layers exist but are never called. No parameters.
    """

    def forward(self, lowres_logits: torch.Tensor) -> torch.Tensor:
        return lowres_logits.amax(dim=(2, 3))
