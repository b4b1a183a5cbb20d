"""Centered extraction of segmentation patches (paper App. B.2, Fig. B.8).

Sliding a window over a slide yields mostly background; centring one patch on
each labelled connected component keeps the lesions whole and in view. A
component that does not fit in one patch is split by K-means on its pixel
coordinates into ceil(1 + area / patch^2) parts, one patch per part centre
(Fig. B.9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: K-means sees at most this many pixels of one component; plenty for stable centres.
_MAX_KMEANS_POINTS = 20_000


@dataclass(frozen=True)
class PatchCenter:
    row: int
    col: int
    label: int  # class of the component the patch is centred on


def component_centers(
    mask: np.ndarray, patch_size: int = 128, background: int = 0, seed: int = 0
) -> list[PatchCenter]:
    """Patch centres for every connected component of every non-background class."""
    from sklearn.cluster import KMeans

    centers: list[PatchCenter] = []
    for label in np.unique(mask):
        if label == background:
            continue
        components, count = ndimage.label(mask == label)
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            coords = np.argwhere(components[box] == index) + [box[0].start, box[1].start]
            height = box[0].stop - box[0].start
            width = box[1].stop - box[1].start
            if height <= patch_size and width <= patch_size:
                row, col = coords.mean(axis=0)
                centers.append(PatchCenter(int(round(row)), int(round(col)), int(label)))
                continue
            parts = math.ceil(1 + len(coords) / patch_size**2)
            rng = np.random.default_rng(seed)
            points = coords if len(coords) <= _MAX_KMEANS_POINTS else coords[
                rng.choice(len(coords), _MAX_KMEANS_POINTS, replace=False)
            ]
            parts = min(parts, len(points))
            kmeans = KMeans(n_clusters=parts, n_init=3, random_state=seed).fit(points.astype(np.float64))
            for row, col in kmeans.cluster_centers_:
                centers.append(PatchCenter(int(round(row)), int(round(col)), int(label)))
    return centers


def crop_origin(row: int, col: int, height: int, width: int, patch_size: int) -> tuple[int, int]:
    """(top, left) of the patch_size square centred at (row, col), shifted to lie inside a height x width image
    (0 along a side shorter than a patch, where the crop is padded)."""
    top = int(np.clip(row - patch_size // 2, 0, max(0, height - patch_size)))
    left = int(np.clip(col - patch_size // 2, 0, max(0, width - patch_size)))
    return top, left


def crop_centered(array: np.ndarray, row: int, col: int, patch_size: int, fill: int = 0) -> np.ndarray:
    """The patch_size square centred at (row, col), shifted to lie inside the image.

    Images smaller than a patch are padded with `fill` (white for RGB, background for masks).
    """
    height, width = array.shape[:2]
    if height < patch_size or width < patch_size:
        pad = [(0, max(0, patch_size - height)), (0, max(0, patch_size - width))] + [(0, 0)] * (array.ndim - 2)
        array = np.pad(array, pad, constant_values=fill)
        height, width = array.shape[:2]
    top, left = crop_origin(row, col, height, width, patch_size)
    return array[top : top + patch_size, left : left + patch_size]
