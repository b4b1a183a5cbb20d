"""Foreground (tissue) mask by HSV saturation (paper App. B.1, Fig. B.7).

Glass and background are unsaturated whatever their brightness, tissue is
stained and so saturated: pixels below 10% of the maximum saturation are
background. Holes are filled because ducts surrounded by stroma can be the
regions of interest (DCIS lumens), then an opening removes salt-and-pepper
specks. Patches with less than 75% foreground are dropped.

`Foreground` is that mask found on a whole image's thumbnail and looked up
at full resolution: how prediction, and evaluation with it, decide which
pixels are tissue without holding a whole slide's mask at full size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SATURATION_THRESHOLD = 0.10  # fraction of the maximum possible saturation
MIN_FOREGROUND = 0.75  # patches with less foreground are dropped
OPENING_RADIUS = 3  # pixels at the working magnification


def foreground_mask(rgb: np.ndarray, threshold: float = SATURATION_THRESHOLD,
                    opening_radius: int = OPENING_RADIUS) -> np.ndarray:
    """Boolean tissue mask of an RGB uint8 image."""
    from skimage.color import rgb2hsv
    from skimage.morphology import disk

    saturation = rgb2hsv(rgb[..., :3])[..., 1]
    mask = ndimage.binary_fill_holes(saturation >= threshold)
    if opening_radius > 0:
        mask = ndimage.binary_opening(mask, structure=disk(opening_radius))
    return mask


def foreground_fraction(mask: np.ndarray, top: int, left: int, size: int) -> float:
    """Share of foreground pixels in the size x size window at (top, left)."""
    window = mask[top : top + size, left : left + size]
    return float(window.mean()) if window.size else 0.0


def window_fractions(mask: np.ndarray, size: int) -> np.ndarray:
    """Foreground share of every size x size window, indexed by its top-left corner.

    One summed-area table answers all windows, so filtering thousands of
    candidate patches costs one pass over the mask.
    """
    table = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    return sums / float(size * size)


@dataclass(frozen=True)
class Foreground:
    """A tissue mask computed on a thumbnail, looked up at full resolution by nearest neighbour."""

    mask: np.ndarray  # h x w bool, at `scale` of the working resolution
    scale: float

    @classmethod
    def of_thumbnail(cls, thumbnail: np.ndarray, scale: float, threshold: float = SATURATION_THRESHOLD,
                     opening_radius: int = OPENING_RADIUS) -> "Foreground":
        """The training pipeline's tissue mask on a thumbnail at `scale`; the opening radius shrinks with it."""
        radius = max(1, round(opening_radius * scale)) if opening_radius > 0 else 0
        return cls(foreground_mask(thumbnail, threshold, radius), scale)

    def columns_with_tissue(self, top: int, bottom: int, width: int) -> np.ndarray:
        """width bool: whether column x holds tissue anywhere in rows [top, bottom).

        The same as `rows(top, bottom, width).any(axis=0)`, read on the
        thumbnail's rows instead of expanding them: the sliding window asks it
        for every window row.
        """
        height_small, width_small = self.mask.shape
        row_index = np.unique(np.floor((np.arange(top, bottom) + 0.5) * self.scale).astype(np.int64))
        col_index = np.floor((np.arange(width) + 0.5) * self.scale).astype(np.int64)
        row_index = row_index[row_index < height_small]
        cols_in = int(np.sum(col_index < width_small))
        out = np.zeros(width, bool)
        out[:cols_in] = np.take(self.mask[row_index].any(axis=0), col_index[:cols_in])
        return out

    def rows(self, top: int, bottom: int, width: int) -> np.ndarray:
        """(bottom - top) x width bool; rows or columns past the thumbnail are background."""
        height_small, width_small = self.mask.shape
        row_index = np.floor((np.arange(top, bottom) + 0.5) * self.scale).astype(np.int64)
        col_index = np.floor((np.arange(width) + 0.5) * self.scale).astype(np.int64)
        # the indices never decrease, so those inside the thumbnail come first; two takes: ~10x an ix_ gather
        rows_in, cols_in = int(np.sum(row_index < height_small)), int(np.sum(col_index < width_small))
        out = np.zeros((bottom - top, width), bool)
        out[:rows_in, :cols_in] = np.take(np.take(self.mask, row_index[:rows_in], axis=0), col_index[:cols_in], axis=1)
        return out
