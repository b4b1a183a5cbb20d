"""The tile rule for datasets that only have masks (paper 3.3, Fig. 4).

Gleason2019 and DigestPath2019 give masks but no patch labels. Their masks are
cut into 128 px tiles: a tile whose dominant class covers >= 90% becomes a
classification patch labelled with that class; a tile holding exactly two
classes becomes a segmentation patch; every other tile (three or more classes)
is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DOMINANT_SHARE = 0.90


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    kind: str  # "cls" or "seg"
    label: int  # class label ("cls") or the rarer of the two classes ("seg")


def classify_tile(mask_tile: np.ndarray, num_classes: int, dominant_share: float = DOMINANT_SHARE) -> tuple[str, int] | None:
    """("cls", label), ("seg", label) or None for one mask tile.

    For a segmentation tile the label is its rarer class (the structure the
    patch is about), which stratifies subsets the way centred patches are.
    """
    counts = np.bincount(mask_tile.ravel(), minlength=num_classes)
    present = np.flatnonzero(counts)
    dominant = int(np.argmax(counts))
    if counts[dominant] >= dominant_share * mask_tile.size:
        return "cls", dominant
    if len(present) == 2:
        return "seg", int(present[np.argmin(counts[present])])
    return None


def tile_mask(mask: np.ndarray, num_classes: int, size: int = 128,
              dominant_share: float = DOMINANT_SHARE) -> list[Tile]:
    """Non-overlapping size x size tiles of a mask with their kind and label."""
    tiles = []
    for top in range(0, mask.shape[0] - size + 1, size):
        for left in range(0, mask.shape[1] - size + 1, size):
            verdict = classify_tile(mask[top : top + size, left : left + size], num_classes, dominant_share)
            if verdict is not None:
                tiles.append(Tile(top, left, *verdict))
    return tiles
