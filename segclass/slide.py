"""Reading whole-slide images and plain images at a chosen magnification.

Slides are read with OpenSlide at the level chosen from the slide's own
metadata (objective power, else microns per pixel with 10 um/px = 1x), never
from a hard-coded level index: scanners store different pyramids. Plain images
(PNG, JPEG, non-pyramidal TIFF) go through PIL at their native resolution or a
given scale factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segclass.errors import DatasetError

#: Microns per pixel times magnification: 40x ~ 0.25 um/px, so 1x ~ 10 um/px.
MICRONS_AT_1X = 10.0
PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
#: Formats only OpenSlide reads: if it does not recognise such a file, the file is damaged.
SLIDE_ONLY_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}


class SlideError(DatasetError):
    """A slide cannot be opened or lacks the metadata needed to pick a magnification."""


@dataclass(frozen=True)
class LoadedImage:
    """Pixels plus how they relate to the file's level 0."""

    rgb: np.ndarray  # H x W x 3 uint8
    downsample: float  # level-0 pixels per returned pixel
    level0_size: tuple[int, int]  # (width, height) of level 0
    mpp: float | None  # microns per returned pixel, when known


def is_slide(path: str | Path) -> bool:
    """True when OpenSlide recognises the file (pyramidal TIFF, SVS, NDPI, ...)."""
    path = Path(path)
    if path.suffix.lower() in PLAIN_SUFFIXES:
        return False
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(path)) is not None
    except openslide.OpenSlideError:
        return False


def slide_magnification(properties: dict[str, str], path: str | Path) -> float:
    """Level-0 magnification of a slide from its properties."""
    power = properties.get("openslide.objective-power")
    if power:
        try:
            return float(power)
        except ValueError:
            pass
    mpp = properties.get("openslide.mpp-x")
    if mpp:
        try:
            return MICRONS_AT_1X / float(mpp)
        except (ValueError, ZeroDivisionError):
            pass
    raise SlideError(
        f"{path} has neither an objective power nor microns per pixel in its metadata, so its "
        "magnification is unknown; give the scale by hand (--scale) or convert the slide with "
        "resolution tags"
    )


def read_image(path: str | Path, magnification: float = 1.25, scale: float | None = None) -> LoadedImage:
    """Read a whole slide at `magnification`, or a plain image at `scale` (default 1).

    For a slide, `scale` (output pixels per level-0 pixel) overrides the metadata,
    which is how slides without resolution tags can still be read.
    """
    path = Path(path)
    if check_readable(path):
        return _read_slide(path, magnification, scale)
    return _read_plain(path, scale or 1.0)


def check_readable(path: Path) -> bool:
    """True for a slide OpenSlide opens, False for a plain image; SlideError for neither."""
    if not path.is_file():
        raise SlideError(f"image file {path} does not exist")
    if is_slide(path):
        return True
    if path.suffix.lower() in SLIDE_ONLY_SUFFIXES:
        raise SlideError(
            f"OpenSlide cannot open {path}: it is not a recognised slide (truncated or corrupt copy?); "
            "copy the slide again or remove it from the dataset"
        )
    return False


class SlideReader:
    """An open slide read at one working resolution, whole or in bands of rows.

    The level is the one OpenSlide picks for the downsample; a band is read
    with a margin and resampled with PIL's `box`, so it holds exactly the
    pixels a resize of the whole level would give: `read_image` is the band
    of all rows, and streamed prediction reads the same pixels band by band.
    """

    #: Level pixels read beyond a band on each side, to cover the LANCZOS filter's support.
    MARGIN = 8

    def __init__(self, path: Path, magnification: float, scale: float | None) -> None:
        import openslide

        self.path = path
        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            raise SlideError(f"OpenSlide cannot read {path}: {exc}; the file may be truncated or corrupt") from exc
        try:
            properties = dict(self._slide.properties)
            self.downsample = 1.0 / scale if scale else slide_magnification(properties, path) / magnification
        except SlideError:
            self._slide.close()
            raise
        self.level0_size = self._slide.dimensions
        width0, height0 = self.level0_size
        self.size = (max(1, round(width0 / self.downsample)), max(1, round(height0 / self.downsample)))
        mpp = properties.get("openslide.mpp-x")
        self.mpp = float(mpp) * self.downsample if mpp else None
        self._level = self.level_for(self.downsample)

    def level_for(self, downsample: float) -> int:
        return self._slide.get_best_level_for_downsample(downsample)

    def read_rows(self, top: int, bottom: int) -> np.ndarray:
        """Rows [top, bottom) at the working resolution, full width, H x W x 3 uint8."""
        return self.read_level(self._level, self.size, top, bottom)

    def read_level(self, level: int, size: tuple[int, int], top: int, bottom: int) -> np.ndarray:
        """Rows [top, bottom) of `level` resampled to `size`, the way a whole-level resize would."""
        import openslide

        level_width, level_height = self._slide.level_dimensions[level]
        per_row = level_height / size[1]  # level rows per output row
        if (level_width, level_height) == size:  # no resampling: read the rows as they are
            first, last = top, bottom
        else:
            first = max(0, math.floor(top * per_row) - self.MARGIN)
            last = min(level_height, math.ceil(bottom * per_row) + self.MARGIN)
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

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_slide(path: Path, magnification: float, scale: float | None) -> LoadedImage:
    with SlideReader(path, magnification, scale) as reader:
        return LoadedImage(reader.read_rows(0, reader.size[1]), reader.downsample, reader.level0_size, reader.mpp)


def _read_plain(path: Path, scale: float) -> LoadedImage:
    allow_large_images()
    try:
        with Image.open(path) as image:
            image.load()
            rgb = flatten_alpha(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SlideError(f"cannot read image {path}: {exc}") from exc
    size0 = rgb.size
    if scale != 1.0:
        rgb = rgb.resize((max(1, round(size0[0] * scale)), max(1, round(size0[1] * scale))), Image.LANCZOS)
    return LoadedImage(np.asarray(rgb), 1.0 / scale, size0, None)


def allow_large_images() -> None:
    """Histology photos are legitimately huge; PIL's bomb guard is meant for web uploads."""
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 2_000_000_000)


def flatten_alpha(image: Image.Image) -> Image.Image:
    """RGBA (OpenSlide's transparent background) -> RGB on white."""
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[-1])
        return background
    return image.convert("RGB")


def read_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Read a class-id mask and resize it (nearest) to `size` = (width, height)."""
    path = Path(path)
    allow_large_images()
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16", "1"):
                raise SlideError(
                    f"mask {path} has mode {image.mode}; masks must be single-channel images of class ids"
                )
            mask = image if image.size == size else image.resize(size, Image.NEAREST)
            return np.asarray(mask).astype(np.uint8)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise SlideError(f"cannot read mask {path} ({exc}): truncated or not an image; download or export it "
                         "again") from exc


def write_pyramidal_tiff(path: Path, image: np.ndarray, mpp: float | None, tile: int = 256) -> None:
    """Write a tiled, pyramidal, deflate-compressed TIFF that OpenSlide (and QuPath) open.

    `image` is level 0: H x W x 3 RGB, or H x W class ids (then levels are
    downsampled by nearest neighbour so ids stay ids). Levels halve until the
    image fits in one tile. With `mpp`, resolution tags in pixels per centimetre
    become OpenSlide's openslide.mpp-x/y.
    """
    import tifffile

    labels = image.ndim == 2
    levels = [image]
    while max(levels[-1].shape[:2]) > tile:
        h, w = levels[-1].shape[:2]
        levels.append(np.asarray(Image.fromarray(levels[-1]).resize(
            (max(1, w // 2), max(1, h // 2)), Image.NEAREST if labels else Image.BILINEAR)))
    with tifffile.TiffWriter(path, bigtiff=image.nbytes > 2**31) as tif:
        for index, level in enumerate(levels):
            resolution = {}
            if mpp:
                pixels_per_cm = 1e4 / (mpp * 2**index)
                resolution = {"resolution": (pixels_per_cm, pixels_per_cm), "resolutionunit": "CENTIMETER"}
            tif.write(
                level,
                photometric="minisblack" if labels else "rgb",
                tile=(tile, tile),
                compression="zlib",
                compressionargs={"level": 1},
                subfiletype=1 if index else 0,
                description=("segclass class ids" if labels else "segclass synthetic H&E") if index == 0 else None,
                metadata=None,
                **resolution,
            )
