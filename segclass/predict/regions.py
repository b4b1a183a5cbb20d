"""Reading an image band by band at the model's magnification.

A whole slide at 1.25x fits in memory, but a slide read at a higher
magnification, or a slide of a tissue microarray, need not: the predictor
therefore asks for horizontal bands of rows only. A `SlideRegions` reads each
band from the pyramid level OpenSlide picks and resamples it with PIL's `box`
argument, so the band holds exactly the pixels that resampling the whole level
at once would give (away from the band ends, which a margin covers). Plain
images are decoded whole (PIL cannot decode a PNG partially) and sliced.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from segclass.slide import SlideError, check_readable, flatten_alpha, open_slide, read_image, slide_downsample

#: Level pixels read beyond a band on each side, to cover the LANCZOS filter's support.
MARGIN = 8


class Regions:
    """What the predictor needs of an image: its size, its resolution, bands and a thumbnail."""

    path: Path
    size: tuple[int, int]  # (width, height) at the working resolution
    downsample: float  # level-0 pixels per working pixel
    mpp: float | None  # microns per working pixel, when the file says
    is_slide: bool

    def read_rows(self, top: int, bottom: int) -> np.ndarray:
        """Rows [top, bottom) at full width, H x W x 3 uint8."""
        raise NotImplementedError

    def thumbnail(self, max_pixels: int) -> tuple[np.ndarray, float]:
        """The whole image shrunk to at most `max_pixels` pixels, and its scale (<= 1)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Regions":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def thumbnail_scale(self, max_pixels: int) -> float:
        width, height = self.size
        return min(1.0, math.sqrt(max_pixels / float(width * height)))


class SlideRegions(Regions):
    """Bands of an OpenSlide slide at a magnification chosen from its metadata (or `scale`)."""

    def __init__(self, path: Path, magnification: float, scale: float | None) -> None:
        self.path, self.is_slide = path, True
        self._slide = open_slide(path)
        try:
            self.downsample = slide_downsample(self._slide, path, magnification, scale)
        except SlideError:
            self._slide.close()
            raise
        width0, height0 = self._slide.dimensions
        self.size = (max(1, round(width0 / self.downsample)), max(1, round(height0 / self.downsample)))
        mpp = self._slide.properties.get("openslide.mpp-x")
        self.mpp = float(mpp) * self.downsample if mpp else None
        self._level = self._slide.get_best_level_for_downsample(self.downsample)

    def read_rows(self, top: int, bottom: int) -> np.ndarray:
        return self._read(self._level, self.size, top, bottom)

    def thumbnail(self, max_pixels: int) -> tuple[np.ndarray, float]:
        scale = self.thumbnail_scale(max_pixels)
        size = (max(1, round(self.size[0] * scale)), max(1, round(self.size[1] * scale)))
        level = self._slide.get_best_level_for_downsample(self.downsample / scale)
        return self._read(level, size, 0, size[1]), scale

    def _read(self, level: int, size: tuple[int, int], top: int, bottom: int) -> np.ndarray:
        """Rows [top, bottom) of the level resampled to `size`, the way a whole-level resize would."""
        import openslide

        level_width, level_height = self._slide.level_dimensions[level]
        per_row = level_height / size[1]  # level rows per output row
        if (level_width, level_height) == size:  # no resampling: read the rows as they are
            first, last = top, bottom
        else:
            first = max(0, math.floor(top * per_row) - MARGIN)
            last = min(level_height, math.ceil(bottom * per_row) + MARGIN)
        location = (0, round(first * self._slide.level_downsamples[level]))
        try:
            region = self._slide.read_region(location, level, (level_width, max(1, last - first)))
        except openslide.OpenSlideError as exc:
            raise SlideError(f"OpenSlide failed reading level {level} of {self.path}: {exc}") from exc
        band = flatten_alpha(region)
        if (level_width, level_height) != size:
            box = (0.0, top * per_row - first, float(level_width), bottom * per_row - first)
            band = band.resize((size[0], bottom - top), Image.LANCZOS, box=box)
        return np.asarray(band)

    def close(self) -> None:
        self._slide.close()


class ArrayRegions(Regions):
    """A plain image (PNG, JPEG, plain TIFF) decoded once, at native resolution or `scale`."""

    def __init__(self, path: Path, scale: float | None) -> None:
        loaded = read_image(path, scale=scale)
        self.path, self.is_slide = path, False
        self._rgb = loaded.rgb
        self.size = (loaded.rgb.shape[1], loaded.rgb.shape[0])
        self.downsample, self.mpp = loaded.downsample, loaded.mpp

    def read_rows(self, top: int, bottom: int) -> np.ndarray:
        return self._rgb[top:bottom]

    def thumbnail(self, max_pixels: int) -> tuple[np.ndarray, float]:
        scale = self.thumbnail_scale(max_pixels)
        if scale >= 1.0:
            return self._rgb, 1.0
        size = (max(1, round(self.size[0] * scale)), max(1, round(self.size[1] * scale)))
        return np.asarray(Image.fromarray(self._rgb).resize(size, Image.LANCZOS)), scale


def open_regions(path: str | Path, magnification: float, scale: float | None = None) -> Regions:
    """Slides through OpenSlide at `magnification` (or `scale`), other images through PIL."""
    path = Path(path)
    if check_readable(path):
        return SlideRegions(path, magnification, scale)
    return ArrayRegions(path, scale)
