"""Reading an image band by band at the model's magnification.

A whole slide at 1.25x fits in memory, but a slide read at a higher
magnification, or a slide of a tissue microarray, need not: the predictor
therefore asks for horizontal bands of rows only. A `SlideRegions` reads each
band through `segclass.slide.SlideReader`, which gives exactly the pixels of a
whole-slide `read_image` at the same magnification. Plain images are decoded
whole (PIL cannot decode a PNG partially) and sliced, as are images already
in memory (`MemoryRegions`: how evaluation feeds its validation and test
images to the same predictor).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from segclass.slide import SlideReader, check_readable, read_image


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


class SlideRegions(SlideReader, Regions):
    """Bands of an OpenSlide slide at a magnification chosen from its metadata (or `scale`)."""

    is_slide = True

    def thumbnail(self, max_pixels: int) -> tuple[np.ndarray, float]:
        scale = self.thumbnail_scale(max_pixels)
        size = (max(1, round(self.size[0] * scale)), max(1, round(self.size[1] * scale)))
        return self.read_level(self.level_for(self.downsample / scale), size, 0, size[1]), scale


class MemoryRegions(Regions):
    """An image already in memory at the working resolution (evaluation's validation and test images)."""

    is_slide = False

    def __init__(self, rgb: np.ndarray, path: Path = Path("<memory>"), downsample: float = 1.0,
                 mpp: float | None = None) -> None:
        self.path, self._rgb = path, rgb
        self.size = (rgb.shape[1], rgb.shape[0])
        self.downsample, self.mpp = downsample, mpp

    def read_rows(self, top: int, bottom: int) -> np.ndarray:
        return self._rgb[top:bottom]

    def thumbnail(self, max_pixels: int) -> tuple[np.ndarray, float]:
        scale = self.thumbnail_scale(max_pixels)
        if scale >= 1.0:
            return self._rgb, 1.0
        size = (max(1, round(self.size[0] * scale)), max(1, round(self.size[1] * scale)))
        return np.asarray(Image.fromarray(self._rgb).resize(size, Image.LANCZOS)), scale


class ArrayRegions(MemoryRegions):
    """A plain image (PNG, JPEG, plain TIFF) decoded once, at native resolution or `scale`."""

    def __init__(self, path: Path, scale: float | None) -> None:
        loaded = read_image(path, scale=scale)
        super().__init__(loaded.rgb, path, loaded.downsample, loaded.mpp)


def open_regions(path: str | Path, magnification: float, scale: float | None = None) -> Regions:
    """Slides through OpenSlide at `magnification` (or `scale`), other images through PIL."""
    path = Path(path)
    if check_readable(path):
        return SlideRegions(path, magnification, scale)
    return ArrayRegions(path, scale)
