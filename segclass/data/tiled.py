"""Shared steps of the mask-only datasets (Gleason2019, DigestPath2019)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.assemble import assemble
from segclass.data.extract import extract_tiles, split_by_image


def resize_pair(rgb: np.ndarray, mask: np.ndarray, long_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (Lanczos) and its mask (nearest) so the long side is `long_side`."""
    height, width = rgb.shape[:2]
    if long_side <= 0 or max(height, width) == long_side:
        return rgb, mask
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return (np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS)),
            np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST)))


def tiled_dataset(name: str, class_names: Sequence[str], images: Sequence[EvalImage], params, report) -> DatasetArrays:
    """50/25/25 split by image; tiles of training images; whole val/test images."""
    by_name = {item.name: item for item in images}
    train, val, test = split_by_image(sorted(by_name), params.split_seed)
    report.facts.append(f"{name} split by image: {len(train)} train, {len(val)} val, {len(test)} test")
    seg, cls = extract_tiles([by_name[n] for n in train], len(class_names), params, report)
    return assemble(name, class_names, seg, cls, [by_name[n] for n in val], [by_name[n] for n in test],
                    params.patch_size)
