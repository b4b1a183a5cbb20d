"""Reading a dataset's image files so that a bad file is one line naming it, never a traceback.

Public datasets arrive as large zips, and a partial download or an
interrupted unzip leaves files that open but stop part way (PIL: "image file
is truncated"). Decoding is forced here, inside the `try`, so such a file is
reported with its path and the fix (download it again) when it is read, not
deep inside a resize later. Label images are checked for what they must be:
one channel of class values (an RGB copy whose three channels are equal, as
some viewers save them, is read as its one channel).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from segclass.errors import DatasetError
from segclass.slide import allow_large_images

#: What PIL raises for a file that is not a complete image of its format.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError)
#: Modes whose pixels are colours (converted to RGB); anything else has one channel.
_COLOUR_MODES = {"RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA"}


def _open_decoded(path: Path, what: str) -> Image.Image:
    """The fully decoded image at `path`, or a DatasetError naming the file and the fix."""
    allow_large_images()
    if not path.is_file():
        raise DatasetError(f"{what} {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except _DECODE_ERRORS as exc:
        reason = "is truncated" if "truncated" in str(exc).lower() else "cannot be decoded"
        raise DatasetError(f"{what} {path} {reason} ({exc}); a partial download or unzip leaves such files: "
                           "download (or unzip) it again") from exc


def read_rgb(path: str | Path, what: str = "image") -> np.ndarray:
    """H x W x 3 uint8 of a colour image; a single-channel file is an error saying so."""
    path = Path(path)
    image = _open_decoded(path, what)
    if image.mode not in _COLOUR_MODES:
        bands = len(image.getbands())
        raise DatasetError(f"{what} {path} has {bands} channel{'s' if bands > 1 else ''} (mode {image.mode}) but "
                           "an H&E image has 3 (RGB); is it a mask or a greyscale export? Put the colour image there")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "PA"):
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
        image = flat
    return np.asarray(image.convert("RGB"))


def read_label_values(path: str | Path, what: str = "label map") -> np.ndarray:
    """H x W uint8 class values of a single-channel label image.

    A colour file whose channels are all equal (a grey map saved as RGB) is
    read as its one channel; a colour file whose channels differ is an error
    that says so, rather than a shape mismatch further on. A palette image's
    values are its indices.
    """
    path = Path(path)
    image = _open_decoded(path, what)
    if image.mode == "PA":
        image = image.convert("P")
    values = np.asarray(image)
    if values.ndim == 3:
        channels = values.shape[2]
        colour = values[..., :3] if channels >= 3 else values[..., :1]
        if not (colour == colour[..., :1]).all():
            raise DatasetError(f"{what} {path} has {channels} channels that differ (mode {image.mode}); a label map "
                               "has one channel of class values: use the map as distributed, or save it as "
                               "8-bit greyscale")
        values = colour[..., 0]
    if values.dtype != np.uint8:
        if values.size and (values.min() < 0 or values.max() > 255):
            raise DatasetError(f"{what} {path} holds values outside 0-255 (mode {image.mode}); save it as 8-bit "
                               "class values")
        values = values.astype(np.uint8)
    return values


def read_binary_mask(path: str | Path, threshold: int = 127, what: str = "mask") -> np.ndarray:
    """H x W uint8 0/1 of a lossy (JPEG) binary mask: grey level > `threshold` is 1.

    JPEG blurs 0/255 masks into intermediate values, and some are stored as
    RGB, so the mask is read as luminance and thresholded.
    """
    path = Path(path)
    image = _open_decoded(path, what)
    if image.mode == "P":
        image = image.convert("RGB")
    return (np.asarray(image.convert("L")) > threshold).astype(np.uint8)


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(width, height) from the file's header, or a DatasetError naming the file (an unrecognised format)."""
    path = Path(path)
    allow_large_images()
    try:
        with Image.open(path) as image:
            return image.size
    except _DECODE_ERRORS as exc:
        raise DatasetError(f"{what} {path} cannot be opened as an image ({exc}); download (or export) it "
                           "again") from exc
