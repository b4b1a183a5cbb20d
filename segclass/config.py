"""Configuration objects: frozen dataclasses passed in explicitly, never globals.

A `TrainConfig` fully determines a trial: together with the dataset it fixes the
patch subsets, the initial weights and every batch. It is stored in each
checkpoint (as a plain dict) so that a resumed run rebuilds exactly what it had.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from segclass.errors import ConfigError

#: Modes of the segmentation study (paper 3.3) and the classification study.
SEGMENTATION_MODES = ("S", "S+C", "S+C*")
CLASSIFICATION_MODES = ("S2+C2", "S2+C2*", "S2*+C2")
MODES = SEGMENTATION_MODES + CLASSIFICATION_MODES

#: The classification heads, by variant name: the one registry that `--variant`/`--variants` offer (with these
#: words as help), that a trial's identity and its MLflow `variant` param name, and that
#: `segclass.model.net.HEAD_BUILDERS` builds (a test keeps the two key sets equal). Torch-free, so the grid and
#: the CLIs' help read it without loading the model.
CLASSIFICATION_HEADS = {
    "paper": "the classification head of the paper's Table A.3 (pooled low-resolution logits, two 1x1 convs)",
    "released-code": "what the authors' released code does: class logits as the spatial max of the segmentation "
                     "logits, plus a pixel loss on classification patches",
    "mean-softmax": "ours: class probabilities = the mean pixel softmax of the segmentation logits (the patch's "
                    "predicted class shares), no parameters",
    "label-set": "ours, candidate: mean-softmax plus a partial-label pixel loss, -log(p_normal + p_k) on each pixel "
                 "of a class-k patch (its pixels are normal or k; class 0 is the dataset's normal class)",
    "pseudo-mask": "ours, candidate: mean-softmax plus a pixel loss toward pseudo-masks: on a class-k patch each "
                   "pixel is the likelier of normal (class 0) and k under the current segmentation, at least a "
                   "tenth of the patch k (PSEUDO_MASK_FLOOR)",
}
#: The least share of a class-k patch that variant `pseudo-mask` trains as k, fixed before any result was seen:
#: a patch is rarely labelled k for less than a tenth of k (the benchmark sets hold 10-100%).
PSEUDO_MASK_FLOOR = 0.1
VARIANTS = tuple(CLASSIFICATION_HEADS)


def variants_help() -> str:
    """What each `--variant` choice is, for a CLI's help."""
    return "; ".join(f"'{name}': {words}" for name, words in CLASSIFICATION_HEADS.items())

#: `auto`: bf16 autocast on CUDA, float32 elsewhere; `fp32`, `bf16`: that, on any device (segclass.compute).
PRECISIONS = ("auto", "fp32", "bf16")

#: `paper`: an epoch is one pass over the trial's own patches (as published).
#: `equal`: every trial of a dataset runs the same number of optimizer steps per epoch (an S+C step trains on a
#: segmentation and a classification batch, an S step on one: S+C sees twice the images).
#: `equal-images`: every trial of a dataset trains on the same number of images per epoch (S takes twice the
#: steps of S+C, each of one batch of the usual size), the control for S+C's extra images.
BUDGETS = ("paper", "equal", "equal-images")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network; everything else about it is fixed by the paper."""

    num_classes: int  # C: output channels of the segmentation head
    variant: str = "paper"  # which classification path, see VARIANTS
    cls_hidden: int = 8  # width of the classification head's bottleneck (Table A.3)
    seg_hidden: int = 64  # width of the segmentation head's 3x3 conv (Table A.2)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {self.num_classes}")
        _check_choice("variant", self.variant, VARIANTS)


@dataclass(frozen=True)
class TrainConfig:
    """One trial: a grid point plus the optimisation settings of paper 2.3."""

    dataset: str = "synthetic"  # dataset name (synthetic, folder, ...)
    mode: str = "S+C"  # which patch kinds and how many, see MODES
    seg_fraction: float = 0.05  # s as a fraction (0.05 = 5%); segmentation study
    cls_fraction: float = 0.0  # c as a fraction; classification study only
    seed: int = 1  # fixes subsets, initial weights, batches and augmentation
    variant: str = "paper"  # see VARIANTS
    budget: str = "paper"  # see BUDGETS
    epochs: int = 5  # the paper trains 100; the CPU default is small
    batch_size: int = 20  # per patch kind, per iteration (paper 2.3)
    lr: float = 1e-4  # Adam learning rate (paper 2.3)
    beta1: float = 0.9  # Adam beta1
    beta2: float = 0.999  # Adam beta2
    eval_stride: int = 64  # sliding-window stride for whole-image evaluation (patch 128)
    patch_size: int = 128  # training patch side in pixels (paper App. B)
    augment: bool = True  # random 90-degree rotations + mild colour jitter
    pretrained: str | None = None  # encoder init: 'imagenet', a resnet18 state dict file, or None/'none' (random)
    holdout_seed: int = 0  # fixes the classification-study held-out half, same for all trials
    validate_every: int = 1  # epochs between validations (the last epoch always); the best epoch is a validated one
    # arithmetic of training and evaluation: fp32, bf16 (autocast), or auto = bf16 on CUDA, fp32 elsewhere;
    # sweeps resolve it before a trial's identity is made, so it is part of every run's settings
    precision: str = "auto"

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, MODES)
        _check_choice("variant", self.variant, VARIANTS)
        _check_choice("budget", self.budget, BUDGETS)
        _check_choice("precision", self.precision, PRECISIONS)
        for name in ("seg_fraction", "cls_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a fraction in [0, 1], got {value}")
        if self.mode in CLASSIFICATION_MODES and self.cls_fraction > 0.5:
            raise ConfigError(
                f"cls_fraction is at most 0.5 in the classification study "
                f"(half the classification patches are held out), got {self.cls_fraction}"
            )
        if self.validate_every < 1:
            raise ConfigError(f"validate_every must be >= 1 (epochs between validations), got {self.validate_every}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("epochs must be >= 1 and batch_size >= 2 (BatchNorm needs 2)")

    @property
    def study(self) -> str:
        """`segmentation` or `classification`, from the mode."""
        return study_of(self.mode)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def study_of(mode: str) -> str:
    """`classification` for the modes of the classification study, else `segmentation`."""
    return "classification" if mode in CLASSIFICATION_MODES else "segmentation"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
