"""DigestPath2019 (colonoscopy tissue segmentation) in its distributed layout (docs/data.md cites the sources).

    root/tissue-train-pos-v1/<name>.jpg         malignant-containing images (tissue-train-pos/ in the first release)
    root/tissue-train-pos-v1/<name>_mask.jpg    JPEG masks: grey level > 127 is malignant
    root/tissue-train-neg/<name>.jpg            benign images, no mask (all benign)

`root` is usually `Colonoscopy_tissue_segment_dataset/`; --root above it is
found. Names contain spaces (`2019-06-11 00_44_44-lv1-3309-...jpg`). An
archive unzipped into a folder of its own name is found; a missing
negatives folder is said, not silently dropped. Images (about 3000 px) are
resized to BuildParams.resize_long_side (1024 in the paper), masks by nearest,
then split 50/25/25 by source image and tiled by the tile rule.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.layout import files_with_suffix, find_folder, locate_dataset
from segclass.data.reading import read_binary_mask, read_rgb
from segclass.data.tiled import resize_pair, tiled_dataset
from segclass.errors import DatasetError

log = logging.getLogger(__name__)

CLASS_NAMES = ("benign", "malignant")
POSITIVE_FOLDERS = ("tissue-train-pos-v1", "tissue-train-pos")  # the corrected release first
NEGATIVE = "tissue-train-neg"
MASK_SUFFIX = "_mask"


def looks_like_digestpath(folder: Path) -> bool:
    return any((folder / name).is_dir() for name in POSITIVE_FOLDERS)


def locate(root: Path) -> Path:
    return locate_dataset(root, looks_like_digestpath, "DigestPath2019",
                          "the folder holding tissue-train-pos-v1/ and tissue-train-neg/ "
                          "(Colonoscopy_tissue_segment_dataset/)")


def image_files(folder: Path) -> list[Path]:
    """The images of a tissue folder (masks excluded); an empty folder is an error naming it."""
    images = [p for p in files_with_suffix(folder, (".jpg",)) if not p.stem.endswith(MASK_SUFFIX)]
    if not images:
        raise DatasetError(f"{folder} holds no .jpg images; unzip {folder.name}.zip into {folder.parent} again")
    return images


def load_digestpath(root: Path, params, report) -> DatasetArrays:
    root = locate(root)
    positive = find_folder(root, POSITIVE_FOLDERS, (".jpg",))
    negative = find_folder(root, (NEGATIVE,), (".jpg",))
    pos_images = image_files(positive)
    if negative is None:
        log.warning("DigestPath2019: no %s/ in %s", NEGATIVE, root)
        note = (f"DigestPath2019: no {NEGATIVE}/ beside {positive.name}/ in {root}: built without the negative "
                f"(all-benign) images the paper uses; unzip {NEGATIVE}.zip into {root} and build again")
        report.notes.append(note)
        neg_images = []
    else:
        neg_images = image_files(negative)
    log.info("DigestPath2019: %d positive images in %s, %d negative%s", len(pos_images), positive,
             len(neg_images), f" in {negative}" if negative else "")
    items = []
    for path in tqdm(pos_images + neg_images, desc="DigestPath images", unit="image", leave=False, disable=None):
        rgb = read_rgb(path, "DigestPath2019 image")
        if path.parent == positive:
            mask_path = path.with_name(f"{path.stem}{MASK_SUFFIX}.jpg")
            if not mask_path.is_file():
                raise DatasetError(f"positive image {path} has no mask {mask_path}; unzip {positive.name}.zip again")
            mask = read_binary_mask(mask_path, 127, "DigestPath2019 mask")
            if mask.shape != rgb.shape[:2]:
                raise DatasetError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {path} is "
                                   f"{rgb.shape[1]}x{rgb.shape[0]}; download both again")
        else:
            mask = np.zeros(rgb.shape[:2], np.uint8)
        rgb, mask = resize_pair(rgb, mask, params.resize_long_side)
        items.append(EvalImage(f"{path.parent.name}/{path.stem}", rgb, mask))
    if len(items) < 3:
        raise DatasetError(f"{root}: {len(items)} images; at least 3 are needed to split train/val/test")
    return tiled_dataset("digestpath2019", CLASS_NAMES, items, params, report)
