"""ResNet-18 trunk up to layer3 (paper 2.2, Fig. 1).

Contract: input N x 3 x H x W (H, W multiples of 16) -> features N x 256 x H/16 x W/16;
a 128 x 128 patch gives 256 x 8 x 8. layer4 and the fully connected layer of
torchvision's resnet18 are dropped because a 128 px patch is already down to 8 x 8
after layer3 (paper App. A).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18

from segclass.errors import PretrainedWeightsError

log = logging.getLogger(__name__)

OUT_CHANNELS = 256
#: Prefixes of torchvision resnet18 state-dict keys that the trunk does not use.
_UNUSED_PREFIXES = ("layer4.", "fc.")


class ResNet18Encoder(nn.Module):
    """torchvision resnet18 stem + layer1..layer3."""

    out_channels = OUT_CHANNELS

    def __init__(self) -> None:
        super().__init__()
        trunk = resnet18(weights=None)
        self.conv1 = trunk.conv1
        self.bn1 = trunk.bn1
        self.relu = trunk.relu
        self.maxpool = trunk.maxpool
        self.layer1 = trunk.layer1
        self.layer2 = trunk.layer2
        self.layer3 = trunk.layer3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def read_pretrained_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a torchvision resnet18 state dict from a local file, with errors that say what to pass.

    Only a file the user names is read; nothing is downloaded. `weights_only=True`
    because the file comes from outside and must not run code when unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"pretrained weights file {path} does not exist; pass the path of a torchvision "
            "resnet18 state dict (e.g. saved with torch.save(resnet18(weights=...).state_dict(), "
            "path)) or leave --pretrained out for random initialisation"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise PretrainedWeightsError(
            f"cannot read pretrained weights {path}: {exc}; the file must be a torchvision "
            "resnet18 state dict saved with torch.save"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def load_pretrained_encoder(encoder: ResNet18Encoder, source: str | Path | dict[str, torch.Tensor]) -> None:
    """Load torchvision resnet18 weights (a file, or a state dict already read) into `encoder`."""
    state = source if isinstance(source, dict) else read_pretrained_state(source)
    where = "the given state dict" if isinstance(source, dict) else str(source)
    trunk_state = {k: v for k, v in state.items() if not k.startswith(_UNUSED_PREFIXES)}
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(trunk_state))
    unexpected = sorted(set(trunk_state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(trunk_state) if tuple(expected[k].shape) != tuple(trunk_state[k].shape)
    )
    if missing or unexpected or wrong_shape:
        raise PretrainedWeightsError(
            f"{where} does not fit a resnet18 trunk: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}, wrong shapes {wrong_shape[:5]}; "
            "pass a torchvision resnet18 state dict"
        )
    encoder.load_state_dict(trunk_state, strict=True)
    log.info("loaded pretrained resnet18 trunk weights from %s", where)
