"""The paper's network: ResNet-18 encoder, segmentation head, classification head.

    from segclass.config import ModelConfig
    from segclass.model import SegClassNet
    net = SegClassNet(ModelConfig(num_classes=4))
    out = net(torch.zeros(2, 3, 128, 128))   # out.mask_logits: 2x4x128x128
"""

from segclass.model.encoder import (IMAGENET, RANDOM, PretrainedWeights, ResNet18Encoder, load_pretrained_encoder,
                                    pretrained_name, read_pretrained_state, resolve_pretrained)
from segclass.model.heads import (
    ClassificationHead,
    MaxPoolClassificationHead,
    MeanSoftmaxClassificationHead,
    SegmentationHead,
)
from segclass.model.net import MaskModel, ModelOutput, SegClassNet, build_model

__all__ = [
    "IMAGENET",
    "RANDOM",
    "ClassificationHead",
    "MaskModel",
    "MaxPoolClassificationHead",
    "MeanSoftmaxClassificationHead",
    "ModelOutput",
    "PretrainedWeights",
    "ResNet18Encoder",
    "SegClassNet",
    "SegmentationHead",
    "build_model",
    "load_pretrained_encoder",
    "pretrained_name",
    "read_pretrained_state",
    "resolve_pretrained",
]
