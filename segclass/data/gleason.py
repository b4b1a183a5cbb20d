"""Gleason2019 in its distributed layout.

    root/Train Imgs/slideNNN_coreNNN.jpg
    root/Maps1_T/slideNNN_coreNNN_classimg_nonconvex.png     (first annotator; Maps2_T ... others)
    root/Maps1_T/Maps1_T/...                                  (a nested unzip is tolerated)

Map values -> class ids (DEFAULT_CLASS_MAP, overridable with BuildParams.class_map):

    value 0  background (no tissue / not annotated)  -> 0 background
    value 1  benign tissue                            -> 1 benign
    value 6  normal tissue                            -> 1 benign (merged: both are non-cancer)
    value 3  Gleason grade 3                          -> 2 gleason3
    value 4  Gleason grade 4                          -> 3 gleason4
    value 5  Gleason grade 5                          -> 4 gleason5

Five classes, as in the paper's Table 1. Cores without a map for the chosen
annotator are reported and skipped. Images are resized to
BuildParams.resize_long_side (maps by nearest), then split 50/25/25 by core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.tiled import resize_pair, tiled_dataset
from segclass.errors import DatasetError

CLASS_NAMES = ("background", "benign", "gleason3", "gleason4", "gleason5")
DEFAULT_CLASS_MAP = ((0, 0), (1, 1), (6, 1), (3, 2), (4, 3), (5, 4))


def maps_folder(root: Path, annotator: int) -> Path:
    folder = root / f"Maps{annotator}_T"
    nested = folder / f"Maps{annotator}_T"
    if nested.is_dir():
        return nested
    if not folder.is_dir():
        raise DatasetError(f"{folder} is missing; unzip Maps{annotator}_T.zip into {root} or pick another annotator")
    return folder


def map_to_classes(values: np.ndarray, table: dict[int, int], path: Path) -> np.ndarray:
    lookup = np.full(256, 255, np.uint8)
    for value, class_id in table.items():
        lookup[value] = class_id
    mapped = lookup[values]
    if (mapped == 255).any():
        unknown = sorted(set(np.unique(values[mapped == 255]).tolist()))
        raise DatasetError(f"map {path} holds values {unknown} that the class table does not list "
                           f"({sorted(table)}); extend BuildParams.class_map")
    return mapped


def load_gleason(root: Path, params, report) -> DatasetArrays:
    images_dir = root / "Train Imgs"
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir} is missing; point --root at the Gleason2019 folder holding 'Train Imgs'")
    maps = maps_folder(root, params.annotator)
    table = dict(params.class_map or DEFAULT_CLASS_MAP)
    items, skipped = [], []
    for image_path in tqdm(sorted(images_dir.glob("*.jpg")), desc="Gleason cores", unit="core", leave=False, disable=None):
        map_path = maps / f"{image_path.stem}_classimg_nonconvex.png"
        if not map_path.is_file():
            skipped.append(image_path.name)
            continue
        with Image.open(image_path) as image, Image.open(map_path) as label_map:
            rgb = np.asarray(image.convert("RGB"))
            values = np.asarray(label_map)
        if values.shape != rgb.shape[:2]:
            raise DatasetError(f"map {map_path} is {values.shape[::-1]} but image {image_path} is "
                               f"{rgb.shape[1::-1]}; maps must match their core image")
        rgb, mask = resize_pair(rgb, map_to_classes(values, table, map_path), params.resize_long_side)
        items.append(EvalImage(image_path.stem, rgb, mask))
    if skipped:
        report.notes.append(f"{len(skipped)} cores have no Maps{params.annotator}_T map and were skipped: "
                            f"{', '.join(skipped[:10])}{'...' if len(skipped) > 10 else ''}")
    if len(items) < 3:
        raise DatasetError(f"{images_dir}: {len(items)} cores with maps; at least 3 are needed to split")
    return tiled_dataset("gleason2019", CLASS_NAMES, items, params, report)
