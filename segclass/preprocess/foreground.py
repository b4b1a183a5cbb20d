"""Foreground (tissue) mask by HSV saturation (paper App. B.1, Fig. B.7).

Glass and background are unsaturated whatever their brightness, tissue is
stained and so saturated: pixels below 10% of the maximum saturation are
background. Holes are filled because ducts surrounded by stroma can be the
regions of interest (DCIS lumens), then an opening removes salt-and-pepper
specks. Patches with less than 75% foreground are dropped.
"""

from __future__ import annotations

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
