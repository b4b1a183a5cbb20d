"""Training augmentation: random 90-degree rotations and mild colour jitter (paper 2.3).

The random choices of a batch (`AugmentDraws`) are drawn on the host from an
explicit CPU torch.Generator, never the global RNG, so a trial's batches depend
only on its seed and epoch and a resumed run replays exactly what an
uninterrupted one saw. Applying them is a pure function of the images and the
draws on any device: a batch on a GPU is augmented exactly as the same batch on
the CPU, and a trainer can draw a whole epoch up front and move it to the GPU
in one copy instead of one small copy (and one stream synchronisation) per
batch. Rotation is one gather with precomputed index maps, not a group per
multiple of 90 degrees, so it needs no data-dependent shapes either.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

#: ImageNet statistics: the encoder may start from ImageNet weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Colour jitter's spread: brightness, contrast and saturation factors in 1 +- 0.1, channel gains in 1 +- 0.033.
JITTER_STRENGTH = 0.1


def to_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float in [0, 1]."""
    return images_uint8.permute(0, 3, 1, 2).float().div_(255.0)


@functools.lru_cache(maxsize=8)
def _imagenet_statistics(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as 1 x 3 x 1 x 1 tensors on `device`, made once: a copy from host memory makes the host wait.

    Made outside inference mode, so tensors first made under it can still serve training.
    """
    with torch.inference_mode(False):
        return (torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1).to(device),
                torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1).to(device))


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean, std = _imagenet_statistics(images.device, images.dtype)
    return (images - mean) / std


@dataclass(frozen=True)
class AugmentDraws:
    """The random choices of augmenting a batch (or, stacked, of an epoch's batches: leading dims first)."""

    turns: torch.Tensor  # (..., N) int64: multiples of 90 degrees
    factors: torch.Tensor  # (..., N, 6) float32: brightness, contrast, saturation, gains of R, G, B

    def to(self, device: torch.device | str) -> "AugmentDraws":
        return AugmentDraws(self.turns.to(device), self.factors.to(device))

    def __getitem__(self, index: int) -> "AugmentDraws":
        return AugmentDraws(self.turns[index], self.factors[index])

    @staticmethod
    def stack(draws: list["AugmentDraws"]) -> "AugmentDraws":
        return AugmentDraws(torch.stack([d.turns for d in draws]), torch.stack([d.factors for d in draws]))


def draw_augmentation(count: int, generator: torch.Generator, strength: float = JITTER_STRENGTH) -> AugmentDraws:
    """Rotation and colour-jitter choices for `count` images, drawn from `generator` on the host."""
    turns = torch.randint(0, 4, (count,), generator=generator)

    def factors(size: tuple[int, ...], spread: float) -> torch.Tensor:
        return 1.0 + (torch.rand(size, generator=generator) * 2 - 1) * spread

    # brightness, contrast, saturation, then the three channel gains: the order the generator is drawn in
    columns = [factors((count, 1), strength) for _ in range(3)] + [factors((count, 3), strength / 3)]
    return AugmentDraws(turns, torch.cat(columns, dim=1))


@functools.lru_cache(maxsize=8)
def _rotation_maps(size: int, device: torch.device) -> torch.Tensor:
    """4 x size^2: for k quarter turns, the source pixel (flat index) of each output pixel."""
    pixels = torch.arange(size * size).view(size, size)
    return torch.stack([torch.rot90(pixels, k, dims=(0, 1)).flatten() for k in range(4)]).to(device)


def rotate90(images: torch.Tensor, masks: torch.Tensor | None,
             turns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rotate N x P x P x 3 images (and N x P x P masks) by `turns` quarter turns each, as `torch.rot90` does."""
    count, height, width = images.shape[:3]
    if height != width:
        raise ValueError(f"rotations by 90 degrees need square patches, got {height} x {width}")
    source = _rotation_maps(height, images.device)[turns.to(images.device)]  # N x P^2
    channels = images.shape[3]
    rotated = images.reshape(count, height * width, channels).gather(1, source[:, :, None].expand(-1, -1, channels))
    if masks is not None:
        masks = masks.reshape(count, height * width).gather(1, source).view(masks.shape)
    return rotated.view(images.shape), masks


def colour_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and per-channel gain changes of N x 3 x H x W images in [0, 1].

    Per-channel gains mimic small stain shifts.
    """
    count = images.shape[0]
    factors = factors.to(images.device)
    brightness, contrast, saturation = (factors[:, i].view(count, 1, 1, 1) for i in range(3))
    gains = factors[:, 3:6].reshape(count, 3, 1, 1)
    images = images * brightness
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast + mean
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * saturation + grey
    return (images * gains).clamp_(0.0, 1.0)


def augment(images_uint8: torch.Tensor, masks: torch.Tensor | None,
            draws: AugmentDraws) -> tuple[torch.Tensor, torch.Tensor | None]:
    """N x P x P x 3 uint8 images (and masks) -> rotated, jittered N x 3 x P x P float images in [0, 1]."""
    images_uint8, masks = rotate90(images_uint8, masks, draws.turns)
    return colour_jitter(to_input(images_uint8), draws.factors), masks
