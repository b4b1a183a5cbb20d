"""Thin model class wiring encoder -> segmentation head -> classification head."""

from __future__ import annotations

import logging
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from segclass.config import ModelConfig
from segclass.model.encoder import ResNet18Encoder, load_pretrained_encoder, resolve_pretrained
from segclass.model.heads import (
    ClassificationHead,
    MaxPoolClassificationHead,
    MeanSoftmaxClassificationHead,
    SegmentationHead,
)

log = logging.getLogger(__name__)


class ModelOutput(NamedTuple):
    mask_logits: torch.Tensor  # N x C x H x W, nearest-upsampled to the input size
    lowres_logits: torch.Tensor  # N x C x H/8 x W/8
    class_logits: torch.Tensor  # N x C

    def float(self) -> "ModelOutput":
        """All outputs in float32 (after bf16 autocast), so losses are taken at full precision."""
        return ModelOutput(*(tensor.float() for tensor in self))


class SegClassNet(nn.Module):
    """The network of paper Fig. 1 with any classification head (`segclass.config.CLASSIFICATION_HEADS`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ResNet18Encoder()
        self.seg_head = SegmentationHead(self.encoder.out_channels, config.num_classes, config.seg_hidden)
        self.cls_head = classification_head(config)

    def forward_segmentation(self, images: torch.Tensor) -> torch.Tensor:
        """Low-resolution segmentation logits; the path shared by both training steps."""
        return self.seg_head(self.encoder(images))

    def forward_masks(self, images: torch.Tensor) -> torch.Tensor:
        """Mask logits at the input size, without touching the classification head.

        Step 1 of training and inference use this: the classification head's
        BatchNorm statistics should only ever see classification patches.
        """
        return upsample_to(self.forward_segmentation(images), images)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        lowres = self.forward_segmentation(images)
        return ModelOutput(upsample_to(lowres, images), lowres, self.cls_head(lowres))


class MaskModel(nn.Module):
    """A trained SegClassNet as others serve it (the MLflow model): images in, mask logits at the input size out.

    One tensor out, where `SegClassNet.forward` gives three: MLflow's
    signature, pyfunc serving and TorchScript-minded users expect that.
    """

    def __init__(self, net: SegClassNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.forward_masks(images)


#: How each head of `segclass.config.CLASSIFICATION_HEADS` is built, by the same names.
HEAD_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "paper": lambda config: ClassificationHead(config.num_classes, config.cls_hidden),
    "released-code": lambda config: MaxPoolClassificationHead(),
    "mean-softmax": lambda config: MeanSoftmaxClassificationHead(),
    "label-set": lambda config: MeanSoftmaxClassificationHead(),  # its pixel term is a loss (training_loop)
    "pseudo-mask": lambda config: MeanSoftmaxClassificationHead(),
}


def classification_head(config: ModelConfig) -> nn.Module:
    """The classification head of a variant (`segclass.config.CLASSIFICATION_HEADS` says what each is)."""
    return HEAD_BUILDERS[config.variant](config)


def upsample_to(lowres: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Nearest interpolation of low-resolution logits to the input size (Table A.2)."""
    return F.interpolate(lowres, size=images.shape[-2:], mode="nearest")


def build_model(config: ModelConfig, pretrained: str | dict | None = None) -> SegClassNet:
    """Build the network, its encoder from a `--pretrained` value (see `resolve_pretrained`) or a state dict.

    Random initialisation is said loudly rather than silently: the paper's
    encoder starts from ImageNet weights.
    """
    model = SegClassNet(config)
    state = resolve_pretrained(pretrained).state if isinstance(pretrained, str) else pretrained
    if state is not None:
        load_pretrained_encoder(model.encoder, state)
    else:
        log.warning(
            "the ResNet-18 encoder starts from RANDOM weights (the paper used ImageNet weights: pass "
            "--pretrained imagenet, or a local torchvision resnet18 state dict)"
        )
    return model
