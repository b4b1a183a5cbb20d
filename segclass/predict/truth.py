"""Ground truth for a predicted image: a class-id mask image or an ImageScope XML.

Masks may be stored at any resolution with the image's aspect ratio (level 0,
the working magnification, a thumbnail); they are resized by nearest neighbour
to the prediction's size. Annotation XML (BACH's format) is rasterized with
BACH's label names, so it needs a model trained on BACH's four classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segclass.errors import DatasetError

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".xml")
#: A mask whose aspect ratio differs more than this from the image's is someone else's.
ASPECT_TOLERANCE = 0.02


def find_truth(image: Path, given: list[Path], index: int) -> Path | None:
    """The ground truth for the `index`-th input: one path per input, or a folder searched by file stem."""
    if not given:
        return None
    if len(given) == 1 and given[0].is_dir():
        for suffix in MASK_SUFFIXES:
            for name in (f"{image.stem}{suffix}", f"{image.stem}_mask{suffix}"):
                if (given[0] / name).is_file():
                    return given[0] / name
        return None
    return given[index]


def load_truth(path: Path, size: tuple[int, int], downsample: float, class_names: tuple[str, ...]) -> np.ndarray:
    """H x W uint8 class ids at `size` = (width, height) of the prediction."""
    from segclass.slide import read_mask

    if not path.is_file():
        raise DatasetError(f"ground-truth file {path} does not exist")
    if path.suffix.lower() == ".xml":
        mask = _from_xml(path, size, downsample, class_names)
    else:
        from PIL import Image

        with Image.open(path) as image:
            stored = image.size
        _check_aspect(path, stored, size)
        mask = read_mask(path, size)
    if mask.size and int(mask.max()) >= len(class_names):
        raise DatasetError(
            f"ground truth {path} holds class id {int(mask.max())} but the model has {len(class_names)} classes "
            f"({', '.join(class_names)}); masks must hold ids 0..{len(class_names) - 1} in the model's class order"
        )
    return mask


def _from_xml(path: Path, size: tuple[int, int], downsample: float, class_names: tuple[str, ...]) -> np.ndarray:
    from segclass.data.bach import CLASS_NAMES, parse_annotations, rasterize

    if tuple(class_names) != CLASS_NAMES:
        raise DatasetError(
            f"annotation {path} is read with BACH's labels ({', '.join(CLASS_NAMES)}) but the model's classes are "
            f"{', '.join(class_names)}; give a class-id mask image with --mask instead"
        )
    return rasterize(parse_annotations(path), (size[1], size[0]), downsample)


def _check_aspect(path: Path, stored: tuple[int, int], size: tuple[int, int]) -> None:
    ratio_mask, ratio_image = stored[0] / stored[1], size[0] / size[1]
    if abs(ratio_mask / ratio_image - 1) > ASPECT_TOLERANCE:
        raise DatasetError(
            f"ground truth {path} is {stored[0]}x{stored[1]} but the image is {size[0]}x{size[1]} at the working "
            "magnification (another aspect ratio): the mask belongs to another image or was cropped"
        )
