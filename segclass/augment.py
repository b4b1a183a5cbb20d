"""Training augmentation: random 90-degree rotations and mild colour jitter (paper 2.3).

Randomness comes from an explicit CPU torch.Generator, never the global RNG, so
a trial's batches depend only on its seed and epoch and a resumed run replays
exactly what an uninterrupted one would have seen. The images may live on any
device: the draws are made on the CPU and only their results move, so a batch
on a GPU is augmented exactly as the same batch on the CPU.
"""

from __future__ import annotations

import torch

#: ImageNet statistics: the encoder may start from ImageNet weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float in [0, 1]."""
    return images_uint8.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def rotate90(images: torch.Tensor, masks: torch.Tensor | None, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rotate each image (and its mask) by a random multiple of 90 degrees."""
    turns = torch.randint(0, 4, (images.shape[0],), generator=generator)  # drawn on the CPU, decided there
    out_images = torch.empty_like(images)
    out_masks = torch.empty_like(masks) if masks is not None else None
    for k in range(4):
        chosen = (turns == k).nonzero().flatten()
        if len(chosen):
            chosen = chosen.to(images.device)
            out_images[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
            if masks is not None:
                out_masks[chosen] = torch.rot90(masks[chosen], k, dims=(-2, -1))
    return out_images, out_masks


def colour_jitter(images: torch.Tensor, generator: torch.Generator, strength: float = 0.1) -> torch.Tensor:
    """Mild per-image brightness, contrast, saturation and per-channel gain changes.

    `images` is N x 3 x H x W in [0, 1]. Per-channel gains mimic small stain shifts.
    """
    n = images.shape[0]

    def factors(size: tuple[int, ...], spread: float) -> torch.Tensor:
        return (1.0 + (torch.rand(size, generator=generator) * 2 - 1) * spread).to(images.device)

    brightness = factors((n, 1, 1, 1), strength)
    contrast = factors((n, 1, 1, 1), strength)
    saturation = factors((n, 1, 1, 1), strength)
    gains = factors((n, 3, 1, 1), strength / 3)
    images = images * brightness
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast + mean
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * saturation + grey
    return (images * gains).clamp_(0.0, 1.0)


def augment(images: torch.Tensor, masks: torch.Tensor | None, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    images, masks = rotate90(images, masks, generator)
    return colour_jitter(images, generator), masks
