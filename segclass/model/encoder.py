"""ResNet-18 trunk up to layer3 (paper 2.2, Fig. 1).

Contract: input N x 3 x H x W (H, W multiples of 16) -> features N x 256 x H/16 x W/16;
a 128 x 128 patch gives 256 x 8 x 8. layer4 and the fully connected layer of
torchvision's resnet18 are dropped because a 128 px patch is already down to 8 x 8
after layer3 (paper App. A).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from segclass.errors import PretrainedWeightsError
from segclass.schema import IMAGENET_INIT, RANDOM_INIT

log = logging.getLogger(__name__)

OUT_CHANNELS = 256
#: Prefixes of torchvision resnet18 state-dict keys that the trunk does not use.
_UNUSED_PREFIXES = ("layer4.", "fc.")
#: `--pretrained` values besides a file path: the paper's ImageNet weights, and random init.
IMAGENET = "imagenet"
RANDOM = "none"
#: The ImageNet weights the paper's encoder starts from, as torchvision publishes them.
IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1


class PretrainedWeights(NamedTuple):
    """An encoder init resolved from a `--pretrained` value."""

    state: dict[str, torch.Tensor] | None  # a torchvision resnet18 state dict; None: random init
    name: str  # readable, the same on every machine (MLflow param `pretrained`, reports, logs)
    sha256: str  # of the file the state came from ("" for random init): part of a trial's identity


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


def pretrained_name(value: str | None) -> str:
    """The readable name of a `--pretrained` value: a file by its name only, since its folder differs per machine."""
    if not value or value == RANDOM:
        return RANDOM_INIT
    return IMAGENET_INIT if value == IMAGENET else Path(value).name


def resolve_pretrained(value: str | None, progress: bool = True) -> PretrainedWeights:
    """Map a `--pretrained` value (`imagenet`, `none` or None, or a file path) to the weights it means.

    The one-trial CLI and the sweep driver both call this, so an init means the
    same thing everywhere and is hashed the same way.
    """
    if not value or value == RANDOM:
        return PretrainedWeights(None, RANDOM_INIT, "")
    if value == IMAGENET:
        state, path = _imagenet_state(progress)
    else:
        path = Path(value)
        state = read_pretrained_state(path)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    published = torch.hub.HASH_REGEX.search(path.name) if value == IMAGENET else None
    if published and not sha256.startswith(published.group(1)):  # a file put into the cache by hand
        log.warning("%s is not the file torchvision publishes (its SHA-256 does not start with %s); using it anyway, "
                    "identified by its own hash", path, published.group(1))
    return PretrainedWeights(state, pretrained_name(value), sha256)


def imagenet_cache_path() -> Path:
    """Where torchvision keeps (and looks for) the ImageNet ResNet-18 file: torch's hub cache, under TORCH_HOME."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name


def _imagenet_state(progress: bool) -> tuple[dict[str, torch.Tensor], Path]:
    """torchvision's ImageNet weights from torch's hub cache, downloaded there first if missing.

    Offline, the error says where the file goes, so a machine without internet
    can be given a copy fetched elsewhere.
    """
    path = imagenet_cache_path()
    present = path.is_file()
    try:
        # torch announces a download on stdout, which the one-trial CLI keeps for its JSON result
        with contextlib.redirect_stdout(sys.stderr):
            # check_hash verifies a download against the hash in the file name; weights_only: no code runs on load
            state = IMAGENET_WEIGHTS.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except Exception as exc:  # urllib, torch.load and the hash check raise many types
        if present:
            raise PretrainedWeightsError(
                f"cannot read the ImageNet weights file {path}: {exc}; delete it (it is downloaded again when "
                f"online), or pass --pretrained none for random initialisation"
            ) from exc
        raise PretrainedWeightsError(
            f"cannot download torchvision's ImageNet ResNet-18 weights ({IMAGENET_WEIGHTS}) from "
            f"{IMAGENET_WEIGHTS.url}: {exc}. Offline: fetch that URL on a machine with internet and put the file "
            f"at {path} (torch's hub cache; TORCH_HOME moves it), or pass --pretrained none for random "
            "initialisation (not the paper's)"
        ) from exc
    log.info("ImageNet weights (%s) from %s", IMAGENET_WEIGHTS, path)
    return state, path


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
            "path)), --pretrained imagenet for torchvision's ImageNet weights, or --pretrained none for random "
            "initialisation"
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
