"""A trained model as a file: everything needed to use it travels inside it.

Two files hold a trained model. A trial checkpoint (`checkpoint.pt`, written by
the trainer every N epochs) carries optimizer state for resuming, with the
best-epoch weights beside it (`best-<epoch>.pt`). The slim export (`model.pt`, logged to each trial's MLflow run)
carries one set of weights. Both carry the model config, the class names, the
trial config and the preprocessing of the data the model was trained on
(magnification, foreground thresholds, stain reference), so a user predicting
on a new slide never repeats a training flag by hand.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segclass.checkpoint import FORMAT_VERSION, load_best, load_checkpoint
from segclass.config import ModelConfig
from segclass.errors import CheckpointError, ConfigError
from segclass.model import SegClassNet
from segclass.preprocess.foreground import OPENING_RADIUS, SATURATION_THRESHOLD

WEIGHTS = ("last", "best")
#: Defaults for checkpoints written before the preprocessing was recorded (paper App. B: 1.25x, 128 px).
DEFAULT_PREPROCESSING = {"magnification": 1.25, "patch_size": 128, "saturation_threshold": SATURATION_THRESHOLD,
                         "opening_radius": OPENING_RADIUS, "stain_reference": None}


@dataclass(frozen=True)
class TrainedModel:
    """A model in eval mode plus what it needs to see images the way it was trained."""

    model: SegClassNet
    class_names: tuple[str, ...]
    config: dict[str, Any]  # the trial's TrainConfig as a dict
    preprocessing: dict[str, Any]
    source: str  # the file it came from
    weights: str  # "last" or "best"
    epoch: int
    segclass_version: str = ""  # the version that trained it

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def patch_size(self) -> int:
        return int(self.config.get("patch_size", self.preprocessing["patch_size"]))

    @property
    def eval_stride(self) -> int:
        return int(self.config.get("eval_stride", self.patch_size // 2))

    @property
    def magnification(self) -> float:
        return float(self.preprocessing["magnification"])


def _weights_of(state: dict[str, Any], which: str, path: Path) -> tuple[dict[str, torch.Tensor], int, str]:
    if which not in WEIGHTS:
        raise ConfigError(f"weights must be one of {', '.join(WEIGHTS)}, got {which!r}")
    if "optimizer" not in state:  # slim export: one set of weights
        return state["model"], int(state.get("epoch", 0)), state.get("weights", "last")
    best = state.get("best", {})
    if which == "best" and best.get("model") is not None:  # format 1: inline
        return best["model"], int(best["epoch"]), "best"
    if which == "best" and int(best.get("epoch", -1)) > 0:
        return load_best(path.parent, int(best["epoch"])), int(best["epoch"]), "best"
    return state["model"], int(state["epoch"]), "last"


def load_model(path: str | Path, which: str = "last") -> TrainedModel:
    """Rebuild a model from a trial checkpoint or a slim export, checking it is self-consistent."""
    return _from_state(load_checkpoint(path), Path(path), which)


def _from_state(state: dict[str, Any], path: Path, which: str) -> TrainedModel:
    for key in ("model_config", "class_names", "model"):
        if key not in state:
            raise CheckpointError(f"{path} lacks {key!r}: it is not a segclass model or trial checkpoint")
    try:
        model_config = ModelConfig(**state["model_config"])
    except (TypeError, ConfigError) as exc:
        raise CheckpointError(f"model config in {path} is invalid: {exc}") from exc
    class_names = tuple(state["class_names"])
    if len(class_names) != model_config.num_classes:
        raise CheckpointError(
            f"{path} names {len(class_names)} classes ({', '.join(class_names)}) but describes a model with "
            f"{model_config.num_classes} outputs; the file was edited or assembled from two trials; use the "
            "checkpoint the trial wrote"
        )
    weights, epoch, which_used = _weights_of(state, which, path)
    model = SegClassNet(model_config)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {path} do not fit the model its config describes: {exc}") from exc
    model.eval()
    preprocessing = {**DEFAULT_PREPROCESSING, **(state.get("preprocessing") or {})}
    return TrainedModel(model, class_names, dict(state.get("config", {})), preprocessing, str(path), which_used, epoch,
                        state.get("segclass_version", ""))


def load_trained_model(path: str | Path, which: str = "last") -> tuple[SegClassNet, dict[str, Any]]:
    """The model and the raw checkpoint dict (for callers that read its history)."""
    state = load_checkpoint(path)
    return _from_state(state, Path(path), which).model, state


def export_state(trained: TrainedModel) -> dict[str, Any]:
    """What a slim export holds: one set of weights (`model`) and what using them needs, no optimizer state."""
    return {
        "format_version": FORMAT_VERSION, "model_config": dataclasses.asdict(trained.model.config),
        "class_names": list(trained.class_names), "config": trained.config, "preprocessing": trained.preprocessing,
        "model": trained.model.state_dict(), "weights": trained.weights, "epoch": trained.epoch,
        "segclass_version": trained.segclass_version,
    }


def from_export_state(state: dict[str, Any], source: Path) -> TrainedModel:
    """The model an `export_state` dict describes (from a file, or an MLflow model's metadata and module)."""
    return _from_state(state, source, "last")


def export_model(trained: TrainedModel) -> bytes:
    """A slim `model.pt`: `export_state` as a file."""
    buffer = io.BytesIO()
    torch.save(export_state(trained), buffer)
    return buffer.getvalue()
