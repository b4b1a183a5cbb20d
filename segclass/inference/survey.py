"""What is learnt about a whole image before any window runs: where its tissue is, and its stains.

Both come from one thumbnail of at most `THUMBNAIL_MAX_PIXELS` (reading a
whole slide at full size only to find its tissue would defeat streaming):
the training pipeline's foreground mask (its saturation threshold and
opening radius, the radius scaled to the thumbnail) and the image's Macenko
stain vectors, with which every band is mapped to the model's stain
reference. The data build surveys every validation and test image with this
function and the same file reader (`open_regions`), so the trainer's
evaluation sees exactly the tissue and the colours that `segclass.predict`
sees on that file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segclass.inference.regions import Regions
from segclass.preprocess.foreground import Foreground
from segclass.preprocess.stain import SourceStains, StainNormalizationError, estimate_stains

#: Longest thumbnail tissue detection and stain estimation run on, in pixels (1024 x 1024).
THUMBNAIL_MAX_PIXELS = 1 << 20


@dataclass(frozen=True)
class Survey:
    thumbnail: np.ndarray  # h x w x 3 uint8, at tissue.scale of the working resolution
    tissue: Foreground
    stains: SourceStains | None  # None: not asked for, or not estimable (then `stain_error` says why)
    stain_error: str = ""


def survey(regions: Regions, saturation_threshold: float, opening_radius: int,
           max_pixels: int = THUMBNAIL_MAX_PIXELS, stains: bool = True, name: str = "") -> Survey:
    """Tissue (and, with `stains`, stain vectors) of the image `regions` reads, found on its thumbnail."""
    thumbnail, scale = regions.thumbnail(max_pixels)
    tissue = Foreground.of_thumbnail(thumbnail, scale, float(saturation_threshold), int(opening_radius))
    if not stains:
        return Survey(thumbnail, tissue, None)
    try:
        return Survey(thumbnail, tissue, estimate_stains(thumbnail, name or str(regions.path)))
    except StainNormalizationError as exc:
        return Survey(thumbnail, tissue, None, str(exc))
