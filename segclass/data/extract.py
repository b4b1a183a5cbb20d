"""From whole images with masks to patch tables: the two ways the paper makes patches.

- Centred extraction (WSIs with annotated regions; BACH, `folder`, synthetic):
  one patch per labelled component, large components split by K-means.
- The tile rule (datasets that only have masks; Gleason2019, DigestPath2019).

Both drop patches with less than `min_foreground` tissue (paper App. B.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from tqdm import tqdm

from segclass.data.arrays import EvalImage
from segclass.preprocess.centered import component_centers, crop_centered, crop_origin
from segclass.preprocess.foreground import foreground_mask, window_fractions
from segclass.preprocess.tiles import tile_mask


@dataclass
class PatchTable:
    """Rows of patches of one kind, with provenance."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    labels: list[int]
    sources: list[str]
    coords: list[tuple[int, int]]

    @classmethod
    def empty(cls) -> "PatchTable":
        return cls([], [], [], [], [])

    def add(self, image: np.ndarray, mask: np.ndarray | None, label: int, source: str, top: int, left: int) -> None:
        self.images.append(image)
        if mask is not None:
            self.masks.append(mask)
        self.labels.append(label)
        self.sources.append(source)
        self.coords.append((top, left))

    def arrays(self, patch_size: int) -> dict[str, np.ndarray]:
        return {
            "images": np.stack(self.images) if self.images else np.zeros((0, patch_size, patch_size, 3), np.uint8),
            "masks": np.stack(self.masks) if self.masks else np.zeros((0, patch_size, patch_size), np.uint8),
            "labels": np.asarray(self.labels, dtype=np.int64),
            "sources": np.asarray(self.sources, dtype=object),
            "coords": np.asarray(self.coords, dtype=np.int32).reshape(-1, 2),
        }


def _tissue(item: EvalImage, params) -> np.ndarray:
    return foreground_mask(item.rgb, params.saturation_threshold, params.opening_radius)


def extract_centred(items: Iterable[EvalImage], params, report) -> PatchTable:
    """Centred segmentation patches of every labelled component of every image."""
    table = PatchTable.empty()
    size = params.patch_size
    items = list(items)
    for item in tqdm(items, desc="centred extraction", unit="image", leave=False, disable=None):
        fractions = window_fractions(_tissue(item, params), size) if params.min_foreground > 0 else None
        for center in component_centers(item.mask, size):
            patch = crop_centered(item.rgb, center.row, center.col, size, fill=255)
            top, left = crop_origin(center.row, center.col, *item.rgb.shape[:2], size)
            if fractions is not None and fractions.size and fractions[top, left] < params.min_foreground:
                report.dropped_background += 1
                continue
            table.add(patch, crop_centered(item.mask, center.row, center.col, size, fill=0), center.label,
                      item.name, top, left)
    return table


def extract_tiles(items: Iterable[EvalImage], num_classes: int, params, report) -> tuple[PatchTable, PatchTable]:
    """(segmentation tiles, classification tiles) of every image by the tile rule."""
    seg, cls = PatchTable.empty(), PatchTable.empty()
    size = params.patch_size
    items = list(items)
    for item in tqdm(items, desc="tiling", unit="image", leave=False, disable=None):
        fractions = window_fractions(_tissue(item, params), size) if params.min_foreground > 0 else None
        for tile in tile_mask(item.mask, num_classes, size, params.dominant_share):
            if fractions is not None and fractions[tile.top, tile.left] < params.min_foreground:
                report.dropped_background += 1
                continue
            rgb = item.rgb[tile.top : tile.top + size, tile.left : tile.left + size]
            if tile.kind == "seg":
                seg.add(rgb, item.mask[tile.top : tile.top + size, tile.left : tile.left + size], tile.label,
                        item.name, tile.top, tile.left)
            else:
                cls.add(rgb, None, tile.label, item.name, tile.top, tile.left)
    return seg, cls


def split_by_image(names: list[str], seed: int, shares: tuple[float, float] = (0.5, 0.25)) -> tuple[list[str], list[str], list[str]]:
    """Train / validation / test lists of source images (50/25/25 by default).

    Splitting images, never tiles, keeps every tile of an image in one split.
    """
    if len(names) < 3:
        raise ValueError(f"need at least 3 images to split into train/val/test, got {len(names)}")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n_train = max(1, int(round(shares[0] * len(names))))
    n_val = max(1, int(round(shares[1] * len(names))))
    n_train = min(n_train, len(names) - 2)
    n_val = min(n_val, len(names) - n_train - 1)
    return sorted(order[:n_train]), sorted(order[n_train : n_train + n_val]), sorted(order[n_train + n_val :])
