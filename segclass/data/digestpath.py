"""DigestPath2019 (colonoscopy tissue segmentation) in its distributed layout.

    root/tissue-train-pos-v1/<name>.jpg         malignant-containing images
    root/tissue-train-pos-v1/<name>_mask.jpg    JPEG masks: > 127 is malignant
    root/tissue-train-neg/<name>.jpg            benign images, no mask (all benign)

Names may contain spaces. Images (about 5000 px) are resized to
BuildParams.resize_long_side (1024 in the paper), masks by nearest, then split
50/25/25 by source image and tiled by the tile rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.tiled import resize_pair, tiled_dataset
from segclass.errors import DatasetError
from segclass.slide import allow_large_images

CLASS_NAMES = ("benign", "malignant")
POSITIVE, NEGATIVE = "tissue-train-pos-v1", "tissue-train-neg"


def load_digestpath(root: Path, params, report) -> DatasetArrays:
    positive, negative = root / POSITIVE, root / NEGATIVE
    if not positive.is_dir():
        raise DatasetError(f"{positive} is missing; point --root at the DigestPath2019 folder holding {POSITIVE}/")
    allow_large_images()  # 5000 px images are expected
    items = []
    pos_images = sorted(p for p in positive.glob("*.jpg") if not p.stem.endswith("_mask"))
    neg_images = sorted(negative.glob("*.jpg")) if negative.is_dir() else []
    for path in tqdm(pos_images + neg_images, desc="DigestPath images", unit="image", leave=False, disable=None):
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        if path.parent == positive:
            mask_path = path.with_name(f"{path.stem}_mask.jpg")
            if not mask_path.is_file():
                raise DatasetError(f"positive image {path} has no mask {mask_path}")
            with Image.open(mask_path) as mask_image:
                mask = (np.asarray(mask_image.convert("L")) > 127).astype(np.uint8)
            if mask.shape != rgb.shape[:2]:
                raise DatasetError(f"mask {mask_path} is {mask.shape[::-1]} but image {path} is {rgb.shape[1::-1]}")
        else:
            mask = np.zeros(rgb.shape[:2], np.uint8)
        rgb, mask = resize_pair(rgb, mask, params.resize_long_side)
        items.append(EvalImage(f"{path.parent.name}/{path.stem}", rgb, mask))
    if len(items) < 3:
        raise DatasetError(f"{root}: {len(items)} images; at least 3 are needed to split train/val/test")
    return tiled_dataset("digestpath2019", CLASS_NAMES, items, params, report)
